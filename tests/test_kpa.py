"""`kpa`: Knative's decider reproduced on a fake clock (plain `now_s` values, 2 s ticks).

The component `llm` serves 5 req/s per replica at 2 s each, so a replica at capacity holds
10 requests in flight and the concurrency target at 70 % is 7 per replica.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from elastiscale.config import Config
from elastiscale.controllers.kpa import KPAParams, KPAPolicy
from elastiscale.decision import DecisionRecord
from elastiscale.history import MetricHistory
from elastiscale.pipeline import Pipeline

TARGET = 7.0
TICK_S = 2.0


def make_config(initial: int, min_replicas: int = 1) -> Config:
    return load_config(
        {
            "pipeline": {
                "name": "t",
                "slo": {"latency_p95_s": 30},
                "components": {
                    "llm": {
                        "ingress": True,
                        "capacity_per_replica": 5,
                        "service_time_s": 2.0,
                        "replicas": {"min": min_replicas, "max": 1000, "initial": initial},
                    }
                },
            },
            "policies": ["kpa"],
        }
    )


def concurrency_series(steps: list[tuple[float, float]], end_s: float) -> Any:
    """In-flight requests as a step function, the queue empty (present, zero), and the demand
    that keeps that many in flight at 2 s each (the engine's missing-data rule reads it)."""
    times = np.arange(0.0, end_s + TICK_S, TICK_S)
    values = np.zeros_like(times)
    for start_s, value in steps:
        values[times >= start_s] = value
    return {
        "llm": {
            "in_flight": (times, values),
            "queue_length": (times, np.zeros_like(times)),
            "demand_rps": (times, values / 2.0),
        }
    }


def decide(
    policy: KPAPolicy, config: Config, samples: list[tuple[float, float]], ready: int
) -> Any:
    """One `propose` at the last sample's time over a history of (time, in flight) samples."""
    history = MetricHistory(3600)
    obs = None
    for at_s, in_flight in samples:
        obs = Observation(
            "llm", at_s, demand_rps=in_flight / 2, in_flight=in_flight, queue_length=0.0
        )
        history.record([obs], at_s)
    assert obs is not None
    ctx = TickContext(
        now_s=obs.at_s,
        config=config,
        pipeline=Pipeline(config.pipeline),
        observations={"llm": obs},
        replicas={"llm": ReplicaState(desired=ready, ready=ready)},
        history=history,
        interval_s=TICK_S,
    )
    return policy.propose(ctx)["llm"]


class Run:
    """An engine with one KPA policy, stepped every 2 s."""

    def __init__(
        self,
        steps: list[tuple[float, float]],
        initial: int,
        end_s: float,
        min_replicas: int = 1,
        **params: Any,
    ) -> None:
        self.config = make_config(initial, min_replicas)
        self.policy = KPAPolicy(self.config, KPAParams(**params))
        self.actuator = RecordingActuator.for_config(self.config)
        self.engine = Engine(
            self.config,
            metrics=SeriesMetricSource(concurrency_series(steps, end_s)),
            actuator=self.actuator,
            policies=[self.policy],
        )
        self.records: dict[float, DecisionRecord] = {}
        self.panic: dict[float, bool] = {}
        for now_s in np.arange(0.0, end_s + TICK_S, TICK_S):
            self.records[float(now_s)] = self.engine.step(float(now_s))[0]
            self.panic[float(now_s)] = self.policy.panicking("llm")

    def desired(self, now_s: float) -> int:
        return self.records[now_s].desired_replicas


# Panic entry with 4 ready replicas: 60 s at target (28 in flight), then the last 6 s (the
# panic window) at a higher level. (case, panic-window level, panicking).
# Panic needs ceil(level / 7) >= 2 x 4 = 8.
PANIC_ENTRY = [
    ("1.75x: the panic window wants 7 < 8", 49.0, False),
    ("just over 1.75x: it wants 8 = 2 x 4", 49.5, True),
    ("2x target enters panic", 56.0, True),
    ("at target, no panic", 28.0, False),
]


@pytest.mark.parametrize(
    ("level", "panics"), [r[1:] for r in PANIC_ENTRY], ids=[r[0] for r in PANIC_ENTRY]
)
def test_panic_entered_at_twice_the_ready_replicas(level: float, panics: bool) -> None:
    config = make_config(initial=4)
    policy = KPAPolicy(config, KPAParams(start_in_panic=False))
    samples = [(t, 28.0) for t in np.arange(0.0, 64.0, TICK_S)]
    samples += [(t, level) for t in (64.0, 66.0, 68.0, 70.0)]
    proposal = decide(policy, config, samples, ready=4)
    assert policy.panicking("llm") is panics
    assert proposal.details["panic"] is panics
    if panics:  # the panic count wins over the stable one
        assert proposal.replicas == np.ceil(level / TARGET)


def test_no_scale_down_while_panicking_and_exit_after_a_calm_stable_window() -> None:
    # A burst of 140 in flight (5x for 4 replicas) from 60 s to 80 s, then back to 28.
    run = Run([(0, 28.0), (60, 140.0), (80, 28.0)], initial=4, end_s=240, start_in_panic=False)
    times = sorted(run.records)
    panic_times = [t for t in times if run.panic[t]]
    assert panic_times, "the burst must cause a panic"
    # While panicking the count never goes down, even as the burst is over.
    for before, after in pairwise(panic_times):
        assert run.desired(after) >= run.desired(before)

    # The last tick at which the panic condition held (panic-window count >= 2 x ready).
    def over(t: float) -> bool:
        details = run.records[t].proposals[0].details
        return int(details["panic_pods"] or 0) / max(1, int(details["ready"] or 0)) >= 2

    last_over = max(t for t in times if over(t))
    assert run.panic[last_over + 60.0], "a whole stable window must pass first"
    assert not run.panic[last_over + 62.0], "out at the first tick after the stable window"
    assert run.desired(last_over + 60.0) == max(run.desired(t) for t in panic_times)
    assert run.desired(240.0) == 4  # back to what 28 in flight needs


def test_scale_down_at_most_halves_per_tick() -> None:
    # 16 replicas at target, then the load falls to 1 replica's worth. A 6 s stable window
    # makes the stable count fall at once, so the max scale-down rate (2) is what binds.
    run = Run([(0, 112.0), (60, 7.0)], initial=16, end_s=90, stable_window_s=6.0)
    previous = 16
    hit_the_bound = False
    for now_s in sorted(run.records):
        got = run.desired(now_s)
        ready = run.records[now_s].current_replicas
        assert got >= ready // 2
        hit_the_bound |= got == ready // 2 and got < ready
        previous = got
    assert hit_the_bound
    assert previous == 1
    # 60 s: stable mean (112 + 112 + 7) / 3 = 77 -> 11 (bound 8); 62 s: 42 -> 6 (bound 5);
    # 64 s: wants 1, bound floor(6 / 2) = 3; 66 s: bound floor(3 / 2) = 1.
    assert [run.desired(t) for t in (60.0, 62.0, 64.0, 66.0)] == [11, 6, 3, 1]


def test_starts_in_panic_over_one_replica() -> None:
    """Knative keeps the current scale after a restart until a stable window has passed."""
    run = Run([(0, 7.0)], initial=6, end_s=80)
    assert all(run.desired(t) == 6 for t in np.arange(0.0, 60.0 + TICK_S, TICK_S))
    assert run.panic[60.0] and not run.panic[62.0]
    assert run.desired(62.0) == 3  # then halves: max scale-down rate 2


# Scale to zero: (case, replicas.min, enable_scale_to_zero, expected counts at times).
TO_ZERO = [
    # No load at all: the stable average is 0 from the start, the grace period runs from 0 s.
    ("scales to zero after the 30 s grace period", 0, True, {0: 1, 28: 1, 30: 0, 60: 0}),
    ("replicas.min 1 keeps one", 1, True, {30: 1, 90: 1}),
    ("scale to zero disabled keeps one", 0, False, {30: 1, 90: 1}),
]


@pytest.mark.parametrize(
    ("min_replicas", "enabled", "expected"), [r[1:] for r in TO_ZERO], ids=[r[0] for r in TO_ZERO]
)
def test_scale_to_zero(min_replicas: int, enabled: bool, expected: dict[int, int]) -> None:
    run = Run(
        [(0, 0.0)],
        initial=1,
        end_s=90,
        min_replicas=min_replicas,
        enable_scale_to_zero=enabled,
    )
    assert {t: run.desired(float(t)) for t in expected} == expected


def test_wakes_from_zero_when_load_returns() -> None:
    run = Run([(0, 0.0), (100, 21.0)], initial=1, end_s=110, min_replicas=0)
    assert run.desired(98.0) == 0
    assert run.desired(100.0) >= 1
    assert run.desired(110.0) == 3  # 21 in flight / 7


def test_no_data_in_the_stable_window_gives_no_proposal() -> None:
    config = make_config(initial=3)
    source = SeriesMetricSource({"llm": {"demand_rps": (np.array([0.0]), np.array([5.0]))}})
    engine = Engine(config, metrics=source, actuator=RecordingActuator.for_config(config))
    record = engine.step(10.0)[0]
    assert record.proposals[0].replicas is None
    assert "in_flight" in record.proposals[0].reason
    assert record.desired_replicas == 3


def test_rps_mode_targets_capacity_times_utilization() -> None:
    config = make_config(initial=1)
    times = np.arange(0.0, 80.0, TICK_S)
    source = SeriesMetricSource({"llm": {"demand_rps": (times, np.full_like(times, 35.0))}})
    policy = KPAPolicy(config, KPAParams(metric="rps"))
    engine = Engine(
        config, metrics=source, actuator=RecordingActuator.for_config(config), policies=[policy]
    )
    record = engine.step(0.0)[0]
    assert record.proposals[0].details["target"] == pytest.approx(3.5)
    assert record.desired_replicas == 10  # 35 req/s / (5 x 0.7)


def test_scale_down_delay_keeps_the_highest_count_of_its_window() -> None:
    run = Run([(0, 56.0), (40, 7.0)], initial=8, end_s=200, scale_down_delay_s=60.0)
    run_plain = Run([(0, 56.0), (40, 7.0)], initial=8, end_s=200)
    first_down = min(t for t in sorted(run.records) if run.desired(t) < 8)
    first_down_plain = min(t for t in sorted(run_plain.records) if run_plain.desired(t) < 8)
    assert first_down >= first_down_plain + 60.0 - TICK_S


BAD_PARAMS = [
    ({"max_scale_down_rate": 1.0}, "max_scale_down_rate"),
    ({"max_scale_up_rate": 0.5}, "max_scale_up_rate"),
    ({"stable_window_s": 3}, "stable_window_s"),
    ({"panic_window_percentage": 0}, "panic_window_percentage"),
    ({"panic_threshold_percentage": 100}, "panic_threshold_percentage"),
    ({"metric": "cpu"}, "metric"),
    ({"stable_window": 60}, "unknown key"),
]


@pytest.mark.parametrize(("params", "field"), BAD_PARAMS)
def test_bad_params_are_named(params: dict[str, Any], field: str) -> None:
    problems = registry.check("policy", "kpa", params, path="policies[0]")
    assert any(field in line for line in problems), problems


def test_registry_builds_the_policy_with_its_tick() -> None:
    policy = registry.build("policy", "kpa", make_config(initial=1), {})
    assert isinstance(policy, KPAPolicy)
    assert policy.interval_s == 2.0
    assert policy.panic_window_s == pytest.approx(6.0)


@settings(max_examples=30, deadline=None)
@given(
    loads=st.lists(st.floats(0.0, 400.0), min_size=3, max_size=12),
    initial=st.integers(1, 30),
)
def test_panic_never_lowers_and_bounds_hold(loads: list[float], initial: int) -> None:
    """While panicking the count never falls; every count respects the rate bounds."""
    steps = [(20.0 * i, v) for i, v in enumerate(loads)]
    run = Run(steps, initial=initial, end_s=20.0 * len(loads), start_in_panic=False)
    times = sorted(run.records)
    for before, after in pairwise(times):
        ready = max(1, run.records[after].current_replicas)
        got = run.desired(after)
        assert got <= 1000 * ready
        assert got >= max(1, ready // 2)  # at most halved, never below replicas.min = 1
        if run.panic[before] and run.panic[after]:
            assert got >= run.desired(before)
