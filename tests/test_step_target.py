"""`step-scaling` and `target-tracking`: AWS Application Auto Scaling semantics on a fake clock.

The component `llm` carries 10 req/s per replica at a 0.7 target utilization, so the default
target is 7 req/s per replica. The engine ticks every 60 s unless a case says otherwise; the
alarm datapoint of the minute [t, t + 60) is the observation at t.
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
    Pipeline,
    RecordingActuator,
    ReplicaState,
    SeriesMetricSource,
    TickContext,
    load_config,
    registry,
)
from elastiscale.config import Config
from elastiscale.controllers.reactive import PeriodicMetric, period_datapoints
from elastiscale.controllers.step_scaling import (
    StepScalingParams,
    StepScalingPolicy,
    _percent_change,
)
from elastiscale.controllers.target_tracking import TargetTrackingPolicy
from elastiscale.decision import DecisionRecord
from elastiscale.history import MetricHistory

TARGET = 7.0


def make_config(initial: int) -> Config:
    return load_config(
        {
            "pipeline": {
                "name": "t",
                "slo": {"latency_p95_s": 10},
                "components": {
                    "llm": {
                        "ingress": True,
                        "capacity_per_replica": 10,
                        "service_time_s": 1.0,
                        "replicas": {"min": 1, "max": 100, "initial": initial},
                    }
                },
            }
        }
    )


def run(
    policy_name: str,
    params: dict[str, Any],
    initial: int,
    steps: list[tuple[float, float]],
    end_s: float,
    tick_s: float = 60.0,
    ready_replicas: int | None = None,
) -> dict[int, DecisionRecord]:
    """Step an engine with one policy over total demand given as (from time, req/s) steps."""
    config = make_config(initial)
    times = np.arange(0.0, end_s + tick_s, tick_s)
    demand = np.zeros_like(times)
    for start_s, value in steps:
        demand[times >= start_s] = value
    series: dict[str, Any] = {"demand_rps": (times, demand)}
    if ready_replicas is not None:  # the source reports replicas still starting
        series["ready_replicas"] = (times, np.full_like(times, ready_replicas))
    policy = registry.build("policy", policy_name, config, params)
    engine = Engine(
        config,
        metrics=SeriesMetricSource({"llm": series}),
        actuator=RecordingActuator.for_config(config),
        policies=[policy],
    )
    return {round(t): engine.step(float(t))[0] for t in times}


def counts(records: dict[int, DecisionRecord], at: dict[int, int]) -> dict[int, int]:
    return {t: records[t].desired_replicas for t in at}


# --------------------------------------------------------------------------------------------
# Step scaling

ABSOLUTE: dict[str, Any] = {
    "metric": "demand_rps",
    "per_replica": True,
    "relative_to_target": False,
    "scale_out": {
        "threshold": 10,
        "comparison": ">=",
        "steps": [
            {"lower": 0, "upper": 5, "adjustment": 1},
            {"lower": 5, "upper": 10, "adjustment": 2},
            {"lower": 10, "adjustment": 3},
        ],
    },
    "scale_in": {
        "threshold": 5,
        "comparison": "<=",
        "evaluation_periods": 2,
        "steps": [{"upper": 0, "adjustment": -1}],
    },
}

# (case, req/s per replica on 4 replicas, expected (time, count) of the first change or None)
STEPS = [
    ("just under the threshold: nothing", 9.9, None),
    ("at the threshold: lower bound inclusive, +1", 10.0, (60, 5)),
    ("inside the first step", 14.9, (60, 5)),
    ("upper bound exclusive: second step, +2", 15.0, (60, 6)),
    ("open-ended last step, +3", 25.0, (60, 7)),
    ("scale-in needs 2 of 2 datapoints, <= inclusive", 5.0, (120, 3)),
    ("just above the scale-in threshold: nothing", 5.1, None),
]


@pytest.mark.parametrize(
    ("per_replica", "expected"), [r[1:] for r in STEPS], ids=[r[0] for r in STEPS]
)
def test_step_thresholds_and_bounds(per_replica: float, expected: tuple[int, int] | None) -> None:
    records = run("step-scaling", ABSOLUTE, 4, [(0, 4 * per_replica)], end_s=180)
    changed = [(t, r.desired_replicas) for t, r in sorted(records.items()) if r.changed]
    assert (changed[0] if changed else None) == expected


def test_scale_out_cooldown_counts_the_capacity_already_added() -> None:
    """AWS's example: +2, then a +3 step during the cooldown adds only 1 more."""
    params = {
        "metric": "demand_rps",
        "per_replica": False,
        "relative_to_target": False,
        "scale_out": {
            "threshold": 40,
            "comparison": ">=",
            "steps": [{"lower": 0, "upper": 20, "adjustment": 2}, {"lower": 20, "adjustment": 3}],
        },
        "scale_in": None,
    }
    records = run("step-scaling", params, 4, [(0, 50.0), (60, 65.0)], end_s=420)
    # 60: 4 + 2; 120: 4 + 3 = 7, one more; 180..300: still 4 + 3; 360: cooldown over, 7 + 3.
    assert counts(records, {60: 6, 120: 7, 180: 7, 300: 7, 360: 10, 420: 10}) == {
        60: 6,
        120: 7,
        180: 7,
        300: 7,
        360: 10,
        420: 10,
    }


SCALE_IN_ONLY: dict[str, Any] = {
    "metric": "demand_rps",
    "relative_to_target": False,
    "scale_out": {
        "threshold": 10,
        "comparison": ">=",
        "steps": [{"lower": 0, "adjustment": 1}],
    },
    "scale_in": {"threshold": 5, "comparison": "<=", "steps": [{"upper": 0, "adjustment": -1}]},
}

COOLDOWNS = [
    # 2 req/s per replica on 8: one replica less, then nothing for 300 s.
    ("scale-in waits for its cooldown", [(0, 16.0)], {60: 7, 120: 7, 300: 7, 360: 6}),
    # A scale-out at 180 ends the scale-in cooldown started at 60: scale in again at 240.
    ("a scale-out ends the scale-in cooldown", [(0, 16.0), (120, 80.0), (180, 16.0)],
     {60: 7, 120: 7, 180: 8, 240: 7}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("steps", "expected"), [r[1:] for r in COOLDOWNS], ids=[r[0] for r in COOLDOWNS]
)
def test_scale_in_cooldown(steps: list[tuple[float, float]], expected: dict[int, int]) -> None:
    records = run("step-scaling", SCALE_IN_ONLY, 8, steps, end_s=max(expected))
    assert counts(records, expected) == expected


def test_exact_capacity() -> None:
    params = {
        "metric": "demand_rps",
        "relative_to_target": False,
        "scale_out": {
            "threshold": 10,
            "comparison": ">",
            "adjustment_type": "exact_capacity",
            "steps": [{"lower": 0, "adjustment": 12}],
        },
        "scale_in": None,
    }
    records = run("step-scaling", params, 4, [(0, 60.0)], end_s=120)
    assert counts(records, {0: 4, 60: 12, 120: 12}) == {0: 4, 60: 12, 120: 12}


# (base, percent, min magnitude, change): toward zero, at least one replica, then the magnitude.
PERCENT = [
    (4, 20, None, 1),  # 0.8 -> 1
    (10, 127, None, 12),  # 12.7 -> 12
    (7, -30, None, -2),  # -2.1 -> -2
    (3, -10, None, -1),  # -0.3 -> -1
    (30, -22.2, None, -6),  # -6.66 -> -6
    (10, 10, 3, 3),  # 1 -> raised to 3
    (0, 50, None, 0),
]


@pytest.mark.parametrize(("base", "percent", "magnitude", "change"), PERCENT)
def test_percent_change_rounding(
    base: int, percent: float, magnitude: int | None, change: int
) -> None:
    assert _percent_change(base, percent, magnitude) == change


def test_default_step_policy_doubles_far_above_target() -> None:
    # 2x the target per replica is a breach of +1.0 over the threshold 1.0: the +100 % step.
    records = run("step-scaling", {}, 4, [(0, 4 * 2 * TARGET)], end_s=60)
    assert records[0].proposals[0].replicas is None  # no complete minute yet
    assert "insufficient data" in records[0].proposals[0].reason
    assert records[60].desired_replicas == 8


def test_step_evaluates_once_per_period() -> None:
    """With a 0 s cooldown and 15 s engine ticks, +1 happens once a minute, not every tick."""
    params = {
        "metric": "demand_rps",
        "per_replica": False,
        "relative_to_target": False,
        "scale_out": {
            "threshold": 10,
            "comparison": ">",
            "cooldown_s": 0,
            "steps": [{"lower": 0, "adjustment": 1}],
        },
        "scale_in": None,
    }
    records = run("step-scaling", params, 2, [(0, 100.0)], end_s=180, tick_s=15.0)
    assert counts(records, {45: 2, 60: 3, 105: 3, 120: 4, 180: 5}) == {
        45: 2,
        60: 3,
        105: 3,
        120: 4,
        180: 5,
    }


BAD_STEP_PARAMS = [
    ({"scale_out": {"threshold": 1, "comparison": ">", "steps": [
        {"lower": 0, "upper": 1, "adjustment": 1}, {"lower": 2, "adjustment": 2}]}}, "gaps"),
    ({"scale_out": {"threshold": 1, "comparison": ">", "steps": [
        {"lower": 0, "upper": 2, "adjustment": 1}, {"lower": 1, "adjustment": 2}]}}, "overlap"),
    ({"scale_out": {"threshold": 1, "comparison": ">", "steps": [{"adjustment": 1}]}},
     "lower, upper or both"),
    ({"scale_out": {"threshold": 1, "comparison": ">", "evaluation_periods": 2,
                    "datapoints_to_alarm": 3, "steps": [{"lower": 0, "adjustment": 1}]}},
     "datapoints_to_alarm"),
    ({"scale_out": {"threshold": 1, "comparison": ">", "min_adjustment_magnitude": 2,
                    "steps": [{"lower": 0, "adjustment": 1}]}}, "min_adjustment_magnitude"),
    ({"scale_out": {"threshold": 1, "comparison": ">",
                    "steps": [{"lower": 0, "adjustment": 1.5}]}}, "whole number"),
    ({"scale_out": {"threshold": 1, "comparison": "=>",
                    "steps": [{"lower": 0, "adjustment": 1}]}}, "comparison"),
    ({"metric": "latency_p95_s"}, "target_value"),
    ({"metric": "gpu"}, "unknown metric"),
    ({"scale_out": None, "scale_in": None}, "scale_out, scale_in or both"),
]  # fmt: skip


@pytest.mark.parametrize(("params", "expected"), BAD_STEP_PARAMS)
def test_bad_step_params_are_named(params: dict[str, Any], expected: str) -> None:
    problems = registry.check("policy", "step-scaling", params, path="policies[0]")
    assert any(expected in line for line in problems), problems
    assert all(line.startswith("policies[0].params") for line in problems)


def test_short_history_is_refused_at_build() -> None:
    config = load_config(
        {
            "pipeline": make_config(1).pipeline.model_dump(by_alias=True),
            "control": {"history_s": 120},
        }
    )
    with pytest.raises(ValueError, match="history_s"):
        StepScalingPolicy(config, StepScalingParams())


# --------------------------------------------------------------------------------------------
# Target tracking

TRACKING = [
    # 2x target on 4 replicas: the high alarm needs 3 of 3 minutes above, then ceil(4 x 2).
    ("scale-out after 3 datapoints above", 4, [(0, 56.0)], {120: 4, 180: 8, 240: 8}),
    ("2 of 3 above is not enough", 4, [(0, 56.0), (120, 28.0)], {180: 4, 240: 4, 600: 4}),
    # Exactly at target is not above it.
    ("at target: nothing", 4, [(0, 28.0)], {180: 4, 1200: 4}),
    # 0.5x on 8: the low alarm needs 15 of 15 minutes below 90 % of the target.
    ("scale-in after 15 datapoints below", 8, [(0, 28.0)], {840: 8, 900: 4, 1500: 4}),
    # 0.92x on 20 would give ceil(18.4) = 19, but the low alarm sits at 90 % of the target.
    ("0.92x target never scales in", 20, [(0, 128.8)], {900: 20, 1800: 20}),
    # After a scale-in at 900, a further one waits for the 300 s cooldown.
    ("scale-in waits for its cooldown", 16, [(0, 28.0), (900, 7.0)],
     {900: 4, 960: 4, 1140: 4, 1200: 1}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("initial", "steps", "expected"), [r[1:] for r in TRACKING], ids=[r[0] for r in TRACKING]
)
def test_target_tracking(
    initial: int, steps: list[tuple[float, float]], expected: dict[int, int]
) -> None:
    records = run("target-tracking", {}, initial, steps, end_s=max(expected))
    assert counts(records, expected) == expected


def test_exactly_at_target_is_not_above_it() -> None:
    records = run("target-tracking", {}, 4, [(0, 28.0)], end_s=300)
    assert records[300].proposals[0].details["alarm_high"] == "OK"
    assert records[300].proposals[0].details["alarm_high_breaching"] == 0


def test_scale_out_cooldown_sizes_over_the_capacity_before_it() -> None:
    """New replicas still starting (the source reports 4 ready): within the 300 s cooldown the
    policy sizes over the 4 it had, so it does not double again; after it, over 8."""
    records = run("target-tracking", {}, 4, [(0, 56.0)], end_s=480, ready_replicas=4)
    assert counts(records, {180: 8, 240: 8, 420: 8, 480: 16}) == {
        180: 8,
        240: 8,
        420: 8,
        480: 16,
    }
    assert "cooldown" in records[240].proposals[0].reason


def test_same_decisions_when_the_engine_ticks_faster() -> None:
    """Alarms see whole minutes: ticking every 15 s changes nothing but the tick times."""
    slow = run("target-tracking", {}, 4, [(0, 56.0)], end_s=300)
    fast = run("target-tracking", {}, 4, [(0, 56.0)], end_s=300, tick_s=15.0)
    assert counts(slow, {120: 4, 180: 8, 300: 8}) == {120: 4, 180: 8, 300: 8}
    assert counts(fast, {165: 4, 180: 8, 300: 8}) == {165: 4, 180: 8, 300: 8}


def test_disable_scale_in() -> None:
    records = run("target-tracking", {"disable_scale_in": True}, 8, [(0, 7.0)], end_s=1800)
    assert {r.desired_replicas for r in records.values()} == {8}
    assert "disabled" in records[900].proposals[0].reason


def test_insufficient_data_gives_no_proposal() -> None:
    records = run("target-tracking", {}, 4, [(0, np.nan)], end_s=240)
    proposal = records[240].proposals[0]
    assert proposal.replicas is None
    assert "insufficient data" in proposal.reason


def test_explicit_target_on_utilization() -> None:
    policy = registry.build(
        "policy", "target-tracking", make_config(2), {"metric": "utilization", "target_value": 0.5}
    )
    assert isinstance(policy, TargetTrackingPolicy)
    assert policy.params.divides_by_replicas is False
    assert policy.interval_s == 60.0


BAD_TRACKING_PARAMS = [
    ({"metric": "latency_p95_s"}, "target_value"),
    ({"metric": "utilization", "per_replica": True}, "target_value"),
    ({"scale_in_threshold_ratio": 1.5}, "scale_in_threshold_ratio"),
    ({"scale_out_cooldown": 60}, "unknown key"),
]


@pytest.mark.parametrize(("params", "expected"), BAD_TRACKING_PARAMS)
def test_bad_tracking_params_are_named(params: dict[str, Any], expected: str) -> None:
    problems = registry.check("policy", "target-tracking", params, path="policies[0]")
    assert any(expected in line for line in problems), problems


# --------------------------------------------------------------------------------------------
# Invariants


def _directions(values: list[int]) -> set[int]:
    return {1 if b > a else -1 for a, b in pairwise(values) if b != a}


@settings(max_examples=25, deadline=None)
@given(initial=st.integers(1, 30), total=st.floats(1.0, 300.0))
def test_tracking_converges_without_oscillation(initial: int, total: float) -> None:
    records = run("target-tracking", {}, initial, [(0, total)], end_s=2400)
    series = [records[t].desired_replicas for t in sorted(records)]
    assert len(_directions(series)) <= 1
    needed = int(np.ceil(total / TARGET - 1e-9))
    final = series[-1]
    per_replica = total / initial
    assert final == needed or (final == initial and 0.9 * TARGET <= per_replica <= TARGET)


@settings(max_examples=25, deadline=None)
@given(initial=st.integers(1, 30), total=st.floats(1.0, 300.0))
def test_default_steps_never_oscillate_under_constant_load(initial: int, total: float) -> None:
    records = run("step-scaling", {}, initial, [(0, total)], end_s=3600)
    series = [records[t].desired_replicas for t in sorted(records)]
    assert len(_directions(series)) <= 1


@settings(max_examples=40, deadline=None)
@given(
    gaps=st.lists(st.floats(1.0, 50.0), min_size=5, max_size=80),
    values=st.lists(st.one_of(st.none(), st.floats(0.0, 100.0)), min_size=80, max_size=80),
    every=st.integers(1, 5),
    delay_s=st.floats(0.0, 110.0),
)
def test_kept_datapoints_equal_recomputed_ones(
    gaps: list[float], values: list[float | None], every: int, delay_s: float
) -> None:
    """The datapoints an alarm keeps between evaluations are the ones it would recompute, also
    when the source reports each sample up to 110 s late (less than two periods)."""
    config = make_config(1)
    pipeline = Pipeline(config.pipeline)
    history = MetricHistory(3600)
    metric = PeriodicMetric("demand_rps", False, 60.0, "average", keep_s=960.0)
    now_s = 0.0
    for i, gap in enumerate(gaps):
        now_s += gap
        value = values[i]
        obs = Observation("llm", now_s - delay_s, demand_rps=value)
        history.record([obs], now_s)
        ctx = TickContext(
            now_s, config, pipeline, {"llm": obs}, {"llm": ReplicaState(1, 1)}, history, 60.0
        )
        if i % every == 0:
            kept = metric.datapoints(ctx, "llm", 15)
            direct = period_datapoints(history, "llm", lambda o: o.demand_rps, now_s, 60.0, 15)
            assert kept == pytest.approx(direct, nan_ok=True)
