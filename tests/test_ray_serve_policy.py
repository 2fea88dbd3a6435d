"""`ray-serve`: Ray Serve's default autoscaling policy reproduced on a fake clock (plain `now_s`
values, 15 s ticks unless a case says otherwise).

The component `llm` serves 5 req/s per replica at 2 s each, so a replica at capacity holds 10
requests and the default `target_ongoing_requests` at 70 % is 7 per replica.
"""

from __future__ import annotations

import weakref
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import elastiscale
from elastiscale import (
    Engine,
    Observation,
    RecordingActuator,
    ReplicaState,
    SeriesMetricSource,
    TickContext,
    load_config,
    registry,
)
from elastiscale.backtest import baselines
from elastiscale.backtest.api import buildable_builtins, prepare_trace
from elastiscale.backtest.runner import simulate
from elastiscale.config import Config
from elastiscale.controllers.ray_serve_policy import (
    RayServeParams,
    RayServePolicy,
    apply_scaling_factors,
    window_total,
)
from elastiscale.decision import Proposal
from elastiscale.history import MetricHistory
from elastiscale.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]
AGENT = ROOT / "examples" / "pipelines" / "agent.yaml"
AZURE = ROOT / "examples" / "traces" / "azure_llm_2023_conv_1s.csv"
TARGET = 7.0  # 5 req/s x 2 s x 0.7
TICK_S = 15.0


def make_config(
    initial: int | None = None, min_replicas: int = 1, max_replicas: int = 100, **component: Any
) -> Config:
    bounds: dict[str, Any] = {"min": min_replicas, "max": max_replicas}
    if initial is not None:
        bounds["initial"] = initial
    llm: dict[str, Any] = {
        "ingress": True,
        "capacity_per_replica": 5,
        "service_time_s": 2.0,
        "replicas": bounds,
        **component,
    }
    return load_config(
        {
            "pipeline": {"name": "t", "slo": {"latency_p95_s": 30}, "components": {"llm": llm}},
            "policies": ["ray-serve"],
        }
    )


def tick(
    policy: RayServePolicy,
    config: Config,
    now_s: float,
    ready: int,
    *,
    desired: int | None = None,
    at_s: float | None = None,
    **signals: float,
) -> Proposal:
    """One `propose` at `now_s` with a hand-built context, the observation recorded first in
    the policy's history as the engine records it. `signals` default to an empty queue and the
    demand that keeps `in_flight` busy at 2 s each."""
    values: dict[str, float] = {"queue_length": 0.0, **signals}
    if "in_flight" in values and "demand_rps" not in values:
        values["demand_rps"] = values["in_flight"] / 2.0
    obs = Observation("llm", now_s if at_s is None else at_s, **values)  # type: ignore[arg-type]
    history = _HISTORIES.setdefault(policy, MetricHistory(3600))
    history.record([obs], now_s)
    ctx = TickContext(
        now_s=now_s,
        config=config,
        pipeline=Pipeline(config.pipeline),
        observations={"llm": obs},
        replicas={"llm": ReplicaState(desired=ready if desired is None else desired, ready=ready)},
        history=history,
        interval_s=TICK_S,
    )
    return policy.propose(ctx)["llm"]


#: The engine's history of each policy under test (one per policy, as one per engine).
_HISTORIES: weakref.WeakKeyDictionary[RayServePolicy, MetricHistory] = weakref.WeakKeyDictionary()


# --------------------------------------------------------------------------------------------
# The two pieces of arithmetic


def samples(*points: tuple[float, float]) -> deque[tuple[float, float]]:
    return deque(points)


# (case, samples, now_s, aggregation, expected ongoing requests)
WINDOWS = [
    ("time-weighted: each sample holds until the next, the last until now",
     samples((0, 4), (10, 8), (20, 12)), 25.0, "mean", 7.2),
    ("a sample stamped now weighs next to nothing", samples((0, 4), (10, 8)), 10.0, "mean",
     (4 * 10 + 8 * 1e-3) / (10 + 1e-3)),
    ("one sample is the value", samples((5, 9)), 5.0, "mean", 9.0),
    ("max takes the peak", samples((0, 4), (10, 8), (20, 2)), 25.0, "max", 8.0),
    ("min takes the trough", samples((0, 4), (10, 8), (20, 2)), 25.0, "min", 2.0),
    ("no sample: missing, not zero", samples(), 25.0, "mean", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("points", "now_s", "aggregation", "expected"),
    [row[1:] for row in WINDOWS],
    ids=[row[0] for row in WINDOWS],
)
def test_window_total(
    points: deque[tuple[float, float]], now_s: float, aggregation: Any, expected: float | None
) -> None:
    got = window_total(points, now_s, aggregation)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


# (case, desired, running, upscaling, downscaling, expected)
FACTORS = [
    ("factor 1 gives the desired count", 12.0, 4, 1.0, 1.0, 12),
    ("upscaling 0.5 takes half the step", 12.0, 4, 0.5, 1.0, 8),
    ("upscaling 2 doubles the step", 6.0, 4, 2.0, 1.0, 8),
    ("downscaling 0.5 takes half the step", 2.0, 10, 1.0, 0.5, 6),
    ("downscaling 0.1 would be stuck at 10: one replica goes", 2.0, 10, 1.0, 0.1, 9),
    ("a fraction above the running count rounds up", 4.2, 4, 1.0, 1.0, 5),
    ("within one replica below: no change", 3.5, 4, 1.0, 1.0, 4),
    ("from 0 running the factor is ignored", 3.2, 0, 0.5, 1.0, 4),
]


@pytest.mark.parametrize(
    ("desired", "running", "up", "down", "expected"),
    [row[1:] for row in FACTORS],
    ids=[row[0] for row in FACTORS],
)
def test_apply_scaling_factors(
    desired: float, running: int, up: float, down: float, expected: int
) -> None:
    assert apply_scaling_factors(desired, running, up, down) == expected


# --------------------------------------------------------------------------------------------
# Sequences through the real Engine (replicas ready at once), ticked every 15 s


def ongoing_series(
    steps: list[tuple[float, float]],
    end_s: float,
    queue_missing: tuple[float, float] | None = None,
) -> Any:
    """Ongoing requests as a step function (all in flight; the queue present and empty, or NaN
    over `queue_missing` = [from, to)), with the demand that keeps them busy at 2 s each."""
    times = np.arange(0.0, end_s + TICK_S, TICK_S)
    values = np.zeros_like(times)
    for start_s, value in steps:
        values[times >= start_s] = value
    queue = np.zeros_like(times)
    if queue_missing is not None:
        queue[(times >= queue_missing[0]) & (times < queue_missing[1])] = np.nan
    return {
        "llm": {
            "in_flight": (times, values),
            "queue_length": (times, queue),
            "demand_rps": (times, values / 2.0),
        }
    }


def run_engine(
    config: Config, series: Any, end_s: float, params: dict[str, Any]
) -> dict[float, Any]:
    policy = registry.build("policy", "ray-serve", config, params)
    engine = Engine(
        config,
        metrics=SeriesMetricSource(series),
        actuator=RecordingActuator.for_config(config),
        policies=[policy],
    )
    return {float(t): engine.step(float(t))[0] for t in np.arange(0.0, end_s + TICK_S, TICK_S)}


# (case, config kwargs, params, ongoing steps, expected desired counts at times)
SEQUENCES = [
    # 56 ongoing = 8 x 7: wanted from 0 s, acted on once 30 s have passed.
    ("2x target gives 2x replicas after upscale_delay_s", {"initial": 4}, {}, [(0, 56.0)],
     {0: 4, 15: 4, 30: 8, 45: 8}),
    # One 56 sample at 60 s: the mean still sees it at 75 s (wanted for 15 s of 30), gone at 90.
    ("a spike shorter than the delay changes nothing", {"initial": 4}, {},
     [(0, 28.0), (60, 56.0), (75, 28.0)], {60: 4, 75: 4, 90: 4, 150: 4}),
    # Two samples: at 90 s the look-back still holds the 75 s one, wanted for 30 s: acted on.
    ("a spike seen for the whole delay scales up", {"initial": 4}, {},
     [(0, 28.0), (60, 56.0), (90, 28.0)], {75: 4, 90: 8}),
    # The mean at 150 s is still ~56 (the 150 s sample holds ~0 s); wanted down from 165 s.
    ("scale-down only after downscale_delay_s", {"initial": 8}, {}, [(0, 56.0), (150, 14.0)],
     {150: 8, 165: 8, 750: 8, 765: 2}),
    ("a dip shorter than downscale_delay_s is ignored", {"initial": 8}, {},
     [(0, 56.0), (150, 14.0), (450, 56.0)], {450: 8, 765: 8, 900: 8}),
    ("upscale_delay_s 0 acts at once", {"initial": 4}, {"upscale_delay_s": 0}, [(0, 56.0)],
     {0: 8}),
    # 84 ongoing wants 12: 4 -> ceil(4 + 4) = 8 -> ceil(8 + 2) = 10 -> 11 -> 12.
    ("upscaling_factor 0.5 closes half the gap per decision", {"initial": 4},
     {"upscale_delay_s": 0, "upscaling_factor": 0.5}, [(0, 84.0)],
     {0: 8, 15: 10, 30: 11, 45: 12, 60: 12}),
    # 14 ongoing wants 2: 10 -> 6 -> 4 -> 3 -> ceil(2.5) = 3 is stuck, so 2.
    ("downscaling_factor 0.5, and the nudge when stuck", {"initial": 10},
     {"downscale_delay_s": 0, "downscaling_factor": 0.5}, [(0, 14.0)],
     {0: 6, 15: 4, 30: 3, 45: 2, 60: 2}),
    # The look-back is shorter than a tick: each decision sees only its own sample. Wanted up
    # at 0 s, down at 15 s, up again from 30 s: the run restarts, 60 s and not 30 s.
    ("a change of direction restarts the delay", {"initial": 4}, {"look_back_period_s": 1},
     [(0, 56.0), (15, 14.0), (30, 56.0)], {30: 4, 45: 4, 60: 8}),
    # From 0 running with requests waiting: ceil(1 x upscaling_factor) at once, no delay.
    ("from zero: one replica at once", {"initial": 0, "min_replicas": 0}, {},
     [(0, 0.0), (60, 5.0)], {45: 0, 60: 1, 75: 1}),
    ("from zero: ceil(upscaling_factor) replicas", {"initial": 0, "min_replicas": 0},
     {"upscaling_factor": 2.5}, [(0, 0.0), (60, 5.0)], {45: 0, 60: 3}),
    ("1 -> 0 after downscale_to_zero_delay_s", {"initial": 1, "min_replicas": 0},
     {"downscale_to_zero_delay_s": 60}, [(0, 0.0)], {45: 1, 60: 0, 90: 0}),
    ("1 -> 0 defaults to downscale_delay_s", {"initial": 1, "min_replicas": 0}, {},
     [(0, 0.0)], {585: 1, 600: 0}),
    # Wanted 0 from 3: first to 1 (other scale-downs stop at 1), then 1 -> 0 on its own delay.
    ("3 -> 1 -> 0, each after its own delay", {"initial": 3, "min_replicas": 0},
     {"downscale_delay_s": 60, "downscale_to_zero_delay_s": 30}, [(0, 0.0)],
     {45: 3, 60: 1, 90: 1, 105: 0}),
    ("max bounds the count", {"initial": 4, "max_replicas": 10}, {}, [(0, 140.0)], {30: 10}),
    ("min bounds the count", {"initial": 4, "min_replicas": 3}, {"downscale_delay_s": 0},
     [(0, 0.0)], {0: 3, 15: 3}),
    ("an explicit target_ongoing_requests", {"initial": 4}, {"target_ongoing_requests": 2},
     [(0, 16.0)], {15: 4, 30: 8}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("component", "params", "steps", "expected"),
    [row[1:] for row in SEQUENCES],
    ids=[row[0] for row in SEQUENCES],
)
def test_sequence_through_engine(
    component: dict[str, Any],
    params: dict[str, Any],
    steps: list[tuple[float, float]],
    expected: dict[int, int],
) -> None:
    end_s = float(max(expected))
    records = run_engine(make_config(**component), ongoing_series(steps, end_s), end_s, params)
    assert {t: records[float(t)].desired_replicas for t in expected} == expected


def test_every_tick_inside_the_downscale_delay_holds() -> None:
    records = run_engine(
        make_config(initial=8), ongoing_series([(0, 56.0), (150, 14.0)], 780), 780, {}
    )
    counts = [records[t].desired_replicas for t in sorted(records)]
    first_down = sorted(records).index(765.0)
    assert counts[:first_down] == [8] * first_down
    assert counts[first_down:] == [2, 2]


def test_missing_queue_gives_no_proposal_and_restarts_the_delay() -> None:
    """A look-back with no sample proposes nothing (the engine holds) and breaks the run of
    decisions: wanted up at 0 s, nothing known at 15 and 30 s, wanted again from 45 s."""
    series = ongoing_series([(0, 56.0)], 90, queue_missing=(15.0, 45.0))
    records = run_engine(make_config(initial=4), series, 90, {"look_back_period_s": 1})
    for t in (15.0, 30.0):
        proposal = records[t].proposals[0]
        assert proposal.replicas is None
        assert "queue_length missing" in proposal.reason
        assert records[t].desired_replicas == 4
    assert {t: records[t].desired_replicas for t in (45.0, 60.0, 75.0)} == {
        45.0: 4,
        60.0: 4,
        75.0: 8,
    }


# --------------------------------------------------------------------------------------------
# One tick, by hand


def test_look_back_average_and_its_window() -> None:
    """The samples seen at each tick, by their own time; a delayed observation holds until now."""
    config = make_config()
    policy = RayServePolicy(config)
    for now_s, in_flight in ((0.0, 4.0), (10.0, 8.0), (20.0, 12.0)):
        tick(policy, config, now_s, 1, in_flight=in_flight)
    # At 25 s the source still reports the 20 s sample: (4 x 10 + 8 x 10 + 12 x 5) / 25.
    got = tick(policy, config, 25.0, 1, at_s=20.0, in_flight=12.0)
    assert got.details["ongoing"] == pytest.approx(7.2)
    assert got.details["samples"] == 3
    # At 35 s the look-back is (5, 35]: (8 x 10 + 12 x 15) / 25 = 10.4.
    got = tick(policy, config, 35.0, 1, at_s=20.0, in_flight=12.0)
    assert got.details["ongoing"] == pytest.approx(10.4)
    assert got.details["samples"] == 2


def test_queued_requests_count() -> None:
    config = make_config()
    got = tick(RayServePolicy(config), config, 0.0, 4, in_flight=28.0, queue_length=28.0)
    assert got.details["ongoing"] == 56.0
    assert got.details["wanted"] == pytest.approx(8.0)


def test_starting_replicas_do_not_count_as_running() -> None:
    """Ray takes the gain from the running replicas and times the delays against the target
    count: 4 running of 8 asked for, 56 ongoing wants 8, the target count already."""
    config = make_config()
    got = tick(RayServePolicy(config), config, 0.0, ready=4, desired=8, in_flight=56.0)
    assert (got.replicas, got.details["direction"]) == (8, None)
    # With upscaling_factor 0.5 the same 56 gives ceil(4 + 0.5 x 4) = 6 < 8: a scale-down run
    # starts while replicas are starting (held at 8 by the delay); 84 ongoing (wants 12) gives
    # ceil(4 + 0.5 x 8) = 8, the target count, which ends the run (a 1 s look-back: each
    # tick sees its own sample only).
    policy = RayServePolicy(config, RayServeParams(upscaling_factor=0.5, look_back_period_s=1))
    got = tick(policy, config, 0.0, ready=4, desired=8, in_flight=56.0)
    assert (got.replicas, got.details["direction"]) == (8, "down")
    got = tick(policy, config, 15.0, ready=4, desired=8, in_flight=84.0)
    assert (got.replicas, got.details["direction"]) == (8, None)


# (case, params, component kwargs, signals, expected target per replica or None)
TARGETS = [
    ("default: concurrency at capacity x 0.7", {}, {}, {"in_flight": 7.0}, 7.0),
    ("target_utilization", {"target_utilization": 0.5}, {}, {"in_flight": 7.0}, 5.0),
    ("explicit target_ongoing_requests", {"target_ongoing_requests": 2.0}, {},
     {"in_flight": 7.0}, 2.0),
    # 1000 tokens/s per replica; 2 req/s bring 1000 tokens/s: 2 req/s x 2 s x 0.7 = 2.8.
    ("tokens: requests capacity from tokens per request", {},
     {"capacity_per_replica": 1000, "capacity_unit": "tokens"},
     {"in_flight": 7.0, "demand_rps": 2.0, "tokens_per_s": 1000.0}, 2.8),
    ("tokens without a request rate: no target", {},
     {"capacity_per_replica": 1000, "capacity_unit": "tokens"},
     {"in_flight": 7.0, "demand_rps": 2.0}, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("params", "component", "signals", "expected"),
    [row[1:] for row in TARGETS],
    ids=[row[0] for row in TARGETS],
)
def test_target_ongoing_requests(
    params: dict[str, Any],
    component: dict[str, Any],
    signals: dict[str, float],
    expected: float | None,
) -> None:
    config = make_config(**component)
    policy = RayServePolicy(config, RayServeParams(**params))
    got = tick(policy, config, 0.0, 1, desired=None, at_s=None, **signals)
    if expected is None:
        assert got.replicas is None
        assert "target_ongoing_requests" in got.reason
    else:
        assert got.details["target_ongoing_requests"] == pytest.approx(expected)


def test_missing_in_flight_is_missing_not_zero() -> None:
    config = make_config()
    got = tick(RayServePolicy(config), config, 0.0, 4, demand_rps=10.0)
    assert got.replicas is None
    assert "in_flight missing" in got.reason


# --------------------------------------------------------------------------------------------
# Parameters and the registry


BAD_PARAMS = [
    ({"upscale_delay_s": -1}, "policies[0].params.upscale_delay_s"),
    ({"downscale_delay_s": -5}, "policies[0].params.downscale_delay_s"),
    ({"downscale_to_zero_delay_s": -1}, "policies[0].params.downscale_to_zero_delay_s"),
    ({"look_back_period_s": 0}, "policies[0].params.look_back_period_s"),
    ({"upscaling_factor": 0}, "policies[0].params.upscaling_factor"),
    ({"downscaling_factor": -0.5}, "policies[0].params.downscaling_factor"),
    ({"target_ongoing_requests": 0}, "policies[0].params.target_ongoing_requests"),
    ({"target_utilization": 1.5}, "policies[0].params.target_utilization"),
    ({"aggregation_function": "median"}, "policies[0].params.aggregation_function"),
    ({"interval_s": 0}, "policies[0].params.interval_s"),
    ({"upscale_delay": 10}, "unknown key"),
]


@pytest.mark.parametrize(("params", "expected"), BAD_PARAMS)
def test_bad_params_are_named(params: dict[str, Any], expected: str) -> None:
    problems = registry.check("policy", "ray-serve", params, path="policies[0]")
    assert problems, params
    assert any(expected in line for line in problems), problems
    assert all("\n" not in line for line in problems)


def test_registry_builds_the_policy_with_ray_defaults() -> None:
    policy = registry.build("policy", "ray-serve", make_config(), {})
    assert isinstance(policy, RayServePolicy)
    p = policy.params
    assert (p.upscale_delay_s, p.downscale_delay_s, p.look_back_period_s) == (30.0, 600.0, 30.0)
    assert p.downscale_to_zero_delay_s is None
    assert (p.upscaling_factor, p.downscaling_factor, p.aggregation_function) == (1, 1, "mean")
    assert policy.interval_s is None  # ticks at the pipeline's control.interval_s
    assert registry.build("policy", "ray-serve", make_config(), {"interval_s": 5}).interval_s == 5
    assert "ray-serve" in buildable_builtins()


# --------------------------------------------------------------------------------------------
# Invariants

LOADS = st.lists(st.floats(0.0, 500.0), min_size=1, max_size=8)
DELAYS = st.sampled_from([0.0, 15.0, 30.0, 600.0])


@settings(max_examples=60, deadline=None)
@given(
    loads=LOADS,
    counts=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=8, max_size=8),
    low=st.integers(0, 10),
    span=st.integers(0, 30),
    up_s=DELAYS,
    down_s=DELAYS,
)
def test_bounds_hold(
    loads: list[float],
    counts: list[tuple[int, int]],
    low: int,
    span: int,
    up_s: float,
    down_s: float,
) -> None:
    config = make_config(min_replicas=low, max_replicas=max(1, low + span))
    bounds = config.pipeline.components["llm"].replicas
    policy = RayServePolicy(config, RayServeParams(upscale_delay_s=up_s, downscale_delay_s=down_s))
    for i, (load, (ready, desired)) in enumerate(zip(loads, counts, strict=False)):
        got = tick(policy, config, TICK_S * i, ready, desired=desired, in_flight=load)
        assert got.replicas is not None
        assert bounds.min <= got.replicas <= bounds.max


@settings(max_examples=80, deadline=None)
@given(
    history=LOADS,
    ready=st.integers(0, 40),
    desired=st.integers(0, 40),
    load=st.floats(0.0, 500.0),
    extra=st.floats(0.0, 500.0),
    up_s=DELAYS,
    down_s=DELAYS,
    factor=st.sampled_from([0.3, 1.0, 2.0]),
)
def test_more_load_never_fewer_replicas(
    history: list[float],
    ready: int,
    desired: int,
    load: float,
    extra: float,
    up_s: float,
    down_s: float,
    factor: float,
) -> None:
    """Two policies with the same history and counts; at the last tick one sees more load."""
    config = make_config(min_replicas=0)
    params = RayServeParams(
        upscale_delay_s=up_s,
        downscale_delay_s=down_s,
        upscaling_factor=factor,
        downscaling_factor=factor,
    )
    proposals = []
    for last in (load, load + extra):
        policy = RayServePolicy(config, params)
        for i, value in enumerate(history):
            tick(policy, config, TICK_S * i, ready, desired=desired, in_flight=value)
        now_s = TICK_S * len(history)
        got = tick(policy, config, now_s, ready, desired=desired, in_flight=last)
        proposals.append(got.replicas)
    fewer, more = proposals
    assert fewer is not None and more is not None
    assert fewer <= more


# --------------------------------------------------------------------------------------------
# End to end


def test_backtest_on_a_bundled_trace_slice() -> None:
    """The demo pipeline on 30 minutes of the Azure trace x 4 through `simulate`: the policy
    scales up (never within upscale_delay_s of the start), never down within the 600 s delay by
    default, and a 60 s downscale delay lets it follow the load down as well."""
    config = load_config(AGENT)
    trace = prepare_trace(AZURE, rate_scale=4.0, end_s=1800.0)
    initial = baselines.initial_replicas(config, trace)
    changes: dict[float, list[tuple[float, int, int]]] = {}
    for delay_s in (600.0, 60.0):
        policy = RayServePolicy(config, RayServeParams(downscale_delay_s=delay_s))
        result = simulate(config, trace, policy, initial_replicas=initial, metrics_delay_s=15.0)
        assert result.scaling_actions > 0
        found = []
        for name, series in result.components.items():
            desired = np.asarray(series.desired)
            bounds = config.pipeline.components[name].replicas
            assert desired.min() >= bounds.min and desired.max() <= bounds.max
            for i in np.flatnonzero(np.diff(desired)) + 1:
                found.append((float(i * result.step_s), int(desired[i - 1]), int(desired[i])))
        changes[delay_s] = found
        assert all(t >= 30.0 and t % 15.0 == 0 for t, _, _ in found)
    assert not any(after < before and t < 600.0 for t, before, after in changes[600.0])
    assert any(after < before for _, before, after in changes[60.0])


def test_backtest_command_runs_the_policy_by_name(tmp_path: Path) -> None:
    report = elastiscale.backtest(AGENT, AZURE, ["ray-serve"], rate_scale=4.0, end_s=300.0)
    assert list(report.policies) == ["ray-serve"]
    assert report.policies["ray-serve"].slo_attainment is not None
