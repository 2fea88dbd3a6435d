"""`hpa`: Kubernetes HPA v2 behaviour reproduced on a fake clock (plain `now_s` values).

The component `llm` carries 10 req/s per replica at a 0.7 target utilization, so the
demand_rps target is 7 req/s per replica and the concurrency target 7 in flight (1 s each).
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
from elastiscale.controllers.hpa import HPAParams, HPAPolicy
from elastiscale.history import MetricHistory
from elastiscale.pipeline import Pipeline

TARGET_RPS = 7.0  # 10 req/s per replica x 0.7


def make_config(initial: int | None = None, **component: Any) -> Config:
    llm: dict[str, Any] = {
        "ingress": True,
        "capacity_per_replica": 10,
        "service_time_s": 1.0,
        "replicas": {"min": 1, "max": 100, **({"initial": initial} if initial else {})},
    }
    llm.update(component)
    return load_config(
        {
            "pipeline": {"name": "t", "slo": {"latency_p95_s": 10}, "components": {"llm": llm}},
            "policies": ["hpa"],
        }
    )


def tick(
    policy: HPAPolicy,
    config: Config,
    now_s: float,
    current: int,
    ready: int | None = None,
    **signals: float,
) -> Any:
    """One `propose` call with a hand-built context; returns the proposal for `llm`."""
    obs = Observation(component="llm", at_s=now_s, **signals)
    history = MetricHistory(3600)
    history.record([obs], now_s)
    ctx = TickContext(
        now_s=now_s,
        config=config,
        pipeline=Pipeline(config.pipeline),
        observations={"llm": obs},
        replicas={"llm": ReplicaState(desired=current, ready=current if ready is None else ready)},
        history=history,
        interval_s=15.0,
    )
    return policy.propose(ctx)["llm"]


# One tick of a fresh HPA: (case, metrics, current, ready, signals, expected replicas or None).
SINGLE_TICK = [
    ("4 replicas at 2x target -> 8", ["demand_rps"], 4, 4, {"demand_rps": 56.0}, 8),
    ("1.05x is within tolerance", ["demand_rps"], 4, 4, {"demand_rps": 29.4}, 4),
    ("1.09x is within tolerance", ["demand_rps"], 4, 4, {"demand_rps": 30.52}, 4),
    ("1.15x scales up", ["demand_rps"], 4, 4, {"demand_rps": 32.2}, 5),
    ("0.5x held by the initial recommendation", ["demand_rps"], 4, 4, {"demand_rps": 14.0}, 4),
    ("utilization 2x over ready replicas", ["utilization"], 4, 4, {"utilization": 1.4}, 8),
    # 4 ready at 2.14x would ask for ceil(8.57) = 9; counting the 4 starting ones as idle
    # gives 1.5 x 4 / (0.7 x 8) = 1.07 over all 8, within tolerance: stay at 8.
    ("starting replicas count as idle on a scale-up", ["utilization"], 8, 4,
     {"utilization": 1.5}, 8),
    ("starting replicas damp but do not stop", ["utilization"], 6, 4, {"utilization": 2.1}, 12),
    ("concurrency per ready replica", ["concurrency"], 4, 4,
     {"in_flight": 40.0, "queue_length": 16.0}, 8),
    ("max of valid metrics", ["demand_rps", "utilization"], 4, 4,
     {"demand_rps": 28.0, "utilization": 1.05}, 6),
    ("a missing metric does not stop a scale-up", ["demand_rps", "utilization"], 4, 4,
     {"demand_rps": 56.0}, 8),
    ("a missing metric stops a scale-down", ["demand_rps", "utilization"], 4, 4,
     {"demand_rps": 7.0}, None),
    ("the only metric missing", ["demand_rps"], 4, 4, {}, None),
    ("queue missing: concurrency is missing, not zero", ["concurrency"], 4, 4,
     {"in_flight": 40.0}, None),
    ("no ready replica reports utilization", ["utilization"], 3, 0, {"utilization": 0.9}, None),
    ("zero replicas with min 1: scaling disabled", ["demand_rps"], 0, 0, {"demand_rps": 50.0},
     None),
    ("above max: back to max", ["demand_rps"], 120, 120, {"demand_rps": 7.0}, 100),
]  # fmt: skip


@pytest.mark.parametrize(
    ("metrics", "current", "ready", "signals", "expected"),
    [row[1:] for row in SINGLE_TICK],
    ids=[row[0] for row in SINGLE_TICK],
)
def test_single_tick(
    metrics: list[str], current: int, ready: int, signals: dict[str, float], expected: int | None
) -> None:
    config = make_config()
    policy = HPAPolicy(config, HPAParams(metrics=tuple(metrics)))
    proposal = tick(policy, config, 0.0, current, ready, **signals)
    assert proposal.replicas == expected, proposal.reason
    assert proposal.policy == "hpa"
    assert proposal.reason


def test_missing_metric_reason_names_the_metric() -> None:
    config = make_config()
    policy = HPAPolicy(config, HPAParams(metrics=("demand_rps", "utilization")))
    proposal = tick(policy, config, 0.0, 4, demand_rps=7.0)
    assert proposal.replicas is None
    assert "no scale-down" in proposal.reason and "utilization" in proposal.reason


# Sequences through the real Engine: (case, engine tick s, initial, demand steps, expected
# desired counts at the listed times).
SEQUENCES = [
    # max(100 %, 4 pods) per 15 s from 2: max(4, 6) = 6, then max(12, 10) = 12, then 20.
    ("scale-up limited per 15 s period", 15.0, 2, [(0, 140.0)],
     {0: 6, 15: 12, 30: 20, 45: 20}),
    # Ticking every 5 s, the change made at 0 still counts within (now - 15, now].
    ("the period counts changes, not ticks", 5.0, 2, [(0, 140.0)],
     {0: 6, 5: 6, 10: 6, 15: 12, 25: 12, 30: 20}),
    # From 10, 100 % is the larger step: 10 -> 20 -> 40.
    ("percent dominates large counts", 15.0, 10, [(0, 400.0)], {0: 20, 15: 40, 30: 58}),
    # Last high recommendation at 135 s: scale-down at 135 + 300 = 435 s, not earlier.
    ("a load drop scales down only after 300 s", 15.0, 8, [(0, 56.0), (150, 14.0)],
     {135: 8, 150: 8, 420: 8, 435: 2}),
    # A short dip inside the window never scales down.
    ("a dip shorter than the window is ignored", 15.0, 8,
     [(0, 56.0), (150, 14.0), (240, 56.0)], {150: 8, 300: 8, 600: 8}),
]  # fmt: skip


def demand_series(steps: list[tuple[float, float]], end_s: float, tick_s: float) -> Any:
    times = np.arange(0.0, end_s + tick_s, tick_s)
    values = np.zeros_like(times)
    for start_s, value in steps:
        values[times >= start_s] = value
    return {"llm": {"demand_rps": (times, values)}}


@pytest.mark.parametrize(
    ("tick_s", "initial", "steps", "expected"),
    [row[1:] for row in SEQUENCES],
    ids=[row[0] for row in SEQUENCES],
)
def test_sequence_through_engine(
    tick_s: float, initial: int, steps: list[tuple[float, float]], expected: dict[int, int]
) -> None:
    config = make_config(initial=initial)
    end_s = max(expected)
    source = SeriesMetricSource(demand_series(steps, end_s, tick_s))
    actuator = RecordingActuator.for_config(config)
    engine = Engine(config, metrics=source, actuator=actuator)
    seen: dict[int, int] = {}
    for now_s in np.arange(0.0, end_s + tick_s, tick_s):
        record = engine.step(float(now_s))[0]
        seen[round(now_s)] = record.desired_replicas
    assert {t: seen[t] for t in expected} == expected


def test_every_tick_before_the_window_holds() -> None:
    """No scale-down at any tick inside the 300 s window, not just at the sampled ones."""
    config = make_config(initial=8)
    source = SeriesMetricSource(demand_series([(0, 56.0), (150, 14.0)], 450, 15.0))
    engine = Engine(config, metrics=source, actuator=RecordingActuator.for_config(config))
    counts = [engine.step(float(t))[0].desired_replicas for t in range(0, 450, 15)]
    assert counts[: 435 // 15] == [8] * (435 // 15)
    assert counts[435 // 15] == 2


def test_missing_metric_through_engine_never_scales_down() -> None:
    config = make_config(initial=8)
    times = np.arange(0.0, 900.0, 15.0)
    values = np.where(times < 60, 56.0, np.nan)  # the metric disappears at 60 s
    source = SeriesMetricSource({"llm": {"demand_rps": (times, values)}})
    engine = Engine(config, metrics=source, actuator=RecordingActuator.for_config(config))
    for now_s in times:
        record = engine.step(float(now_s))[0]
        assert record.desired_replicas == 8
        if now_s >= 60:
            assert record.proposals[0].replicas is None
            assert "demand_rps" in record.proposals[0].reason


def test_custom_behavior_is_the_hpa_shape() -> None:
    """A behavior section like HPA's: scale up 1 pod per 60 s, no scale-down stabilization."""
    params = HPAParams.model_validate(
        {
            "behavior": {
                "scale_up": {"policies": [{"type": "pods", "value": 1, "period_s": 60}]},
                "scale_down": {"stabilization_window_s": 0},
            }
        }
    )
    config = make_config()
    policy = HPAPolicy(config, params)
    assert tick(policy, config, 0.0, 4, demand_rps=56.0).replicas == 5
    assert tick(policy, config, 15.0, 5, demand_rps=56.0).replicas == 5  # 1 per 60 s
    assert tick(policy, config, 60.0, 5, demand_rps=56.0).replicas == 6
    # No scale-down stabilization, default 100 % per 15 s: straight down.
    assert tick(policy, config, 75.0, 6, demand_rps=7.0).replicas == 1


def test_disabled_scale_down() -> None:
    params = HPAParams.model_validate({"behavior": {"scale_down": {"select_policy": "disabled"}}})
    config = make_config()
    policy = HPAPolicy(config, params)
    for now_s in (0.0, 400.0, 800.0):
        assert tick(policy, config, now_s, 6, demand_rps=7.0).replicas == 6


BAD_PARAMS = [
    ({"metrics": ["cpu"]}, "policies[0].params.metrics.0"),
    ({"metrics": []}, "policies[0].params.metrics"),
    ({"metrics": ["demand_rps", "demand_rps"]}, "listed twice"),
    ({"tolerance": 1.5}, "policies[0].params.tolerance"),
    ({"behavior": {"scale_up": {"policies": [{"type": "pods", "value": 4, "period_s": 3600}]}}},
     "period_s"),
    ({"behavior": {"scale_down": {"stabilization_window_s": -1}}}, "stabilization_window_s"),
    ({"tolerence": 0.2}, "unknown key"),
]  # fmt: skip


@pytest.mark.parametrize(("params", "expected"), BAD_PARAMS)
def test_bad_params_are_named(params: dict[str, Any], expected: str) -> None:
    problems = registry.check("policy", "hpa", params, path="policies[0]")
    assert problems, params
    assert any(expected in line for line in problems), problems
    assert all("\n" not in line for line in problems)


def test_registry_builds_the_policy_with_its_interval() -> None:
    policy = registry.build("policy", "hpa", make_config(), {"tolerance": 0.2})
    assert isinstance(policy, HPAPolicy)
    assert policy.interval_s == 15.0
    assert policy.params.tolerance == 0.2


def test_tokens_component_uses_tokens_per_second() -> None:
    config = make_config(capacity_per_replica=1000, capacity_unit="tokens")
    policy = HPAPolicy(config)
    # 700 tokens/s per replica at target; 5600 tokens/s over 4 replicas is 2x.
    proposal = tick(policy, config, 0.0, 4, tokens_per_s=5600.0, demand_rps=1.0)
    assert proposal.replicas == 8


# --------------------------------------------------------------------------------------------
# Invariants


@settings(max_examples=60, deadline=None)
@given(
    current=st.integers(1, 60),
    low=st.floats(0.0, 2000.0),
    extra=st.floats(0.0, 2000.0),
)
def test_more_demand_never_fewer_replicas(current: int, low: float, extra: float) -> None:
    config = make_config()
    a = tick(HPAPolicy(config), config, 0.0, current, demand_rps=low).replicas
    b = tick(HPAPolicy(config), config, 0.0, current, demand_rps=low + extra).replicas
    assert a is not None and b is not None
    assert a <= b
    assert 1 <= a <= 100 and 1 <= b <= 100


@settings(max_examples=60, deadline=None)
@given(
    current=st.integers(1, 60),
    ready=st.integers(0, 60),
    demand=st.floats(0.0, 2000.0),
    elapsed=st.integers(0, 40),
)
def test_missing_metric_never_scales_down(
    current: int, ready: int, demand: float, elapsed: int
) -> None:
    """With `utilization` missing, the HPA proposes nothing or at least the current count."""
    config = make_config()
    policy = HPAPolicy(config, HPAParams(metrics=("demand_rps", "utilization")))
    for i in range(elapsed):
        tick(policy, config, 15.0 * i, current, demand_rps=TARGET_RPS * current)
    got = tick(policy, config, 15.0 * elapsed, current, min(ready, current), demand_rps=demand)
    assert got.replicas is None or got.replicas >= current


@settings(max_examples=25, deadline=None)
@given(initial=st.integers(1, 40), demand=st.floats(1.0, 600.0))
def test_constant_load_settles_without_oscillation(initial: int, demand: float) -> None:
    config = make_config(initial=initial)
    times = np.arange(0.0, 900.0, 15.0)
    source = SeriesMetricSource({"llm": {"demand_rps": (times, np.full_like(times, demand))}})
    engine = Engine(config, metrics=source, actuator=RecordingActuator.for_config(config))
    counts = [engine.step(float(t))[0].desired_replicas for t in times]
    changes = [b - a for a, b in pairwise(counts) if b != a]
    assert all(c > 0 for c in changes) or all(c < 0 for c in changes)
    # Settled at a count whose load is within tolerance of the target (or at a bound).
    final = counts[-1]
    ratio = demand / (TARGET_RPS * final)
    assert final in (1, 100) or 0.9 <= ratio <= 1.1 or final == int(np.ceil(demand / TARGET_RPS))
