"""Scoring a simulated run: SLO attainment with drops as misses, exact weighted quantiles, the
warm-up left out by arrival time, GPU-hours and cost from billed replicas, scaling actions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale import load_config
from elastiscale.backtest.model import ComponentSeries, SimulationResult
from elastiscale.backtest.scoring import score
from elastiscale.config import Config


def make_config() -> Config:
    return load_config(
        {
            "pipeline": {
                "name": "t",
                "slo": {"latency_p95_s": 10},
                "components": {
                    "router": {
                        "ingress": True,
                        "capacity_per_replica": 50,
                        "service_time_s": 0.05,
                        "replicas": {"min": 1, "max": 5},
                        "cost_per_hour": 0.5,
                    },
                    "llm": {
                        "capacity_per_replica": 2.0,
                        "service_time_s": 2.0,
                        "gpus_per_replica": 2,
                        "replicas": {"min": 1, "max": 10},
                        "cost_per_hour": 4.0,
                    },
                },
                "edges": [{"from": "router", "to": "llm"}],
            }
        }
    )


def series(steps: int, step_s: float = 10.0, **values: Any) -> ComponentSeries:
    t_s = np.arange(1, steps + 1) * step_s
    base = {
        name: np.zeros(steps)
        for name in (
            "arrivals",
            "work_arrivals",
            "completions",
            "dropped",
            "queue",
            "in_flight",
            "ready",
            "starting",
            "desired",
            "utilization",
            "latency_p95_s",
        )
    }
    for name, value in values.items():
        base[name] = np.broadcast_to(np.asarray(value, dtype=float), (steps,)).copy()
    return ComponentSeries(t_s=t_s, **base)


def result(
    latency_s: list[float],
    weight: list[float],
    completed_at_s: list[float],
    dropped: float = 0.0,
    **components: ComponentSeries,
) -> SimulationResult:
    return SimulationResult(
        step_s=10.0,
        latency_s=np.asarray(latency_s, dtype=float),
        weight=np.asarray(weight, dtype=float),
        completed_at_s=np.asarray(completed_at_s, dtype=float),
        dropped_requests=dropped,
        components=components,
    )


def idle_components(steps: int = 36) -> dict[str, ComponentSeries]:
    return {"router": series(steps, ready=1, desired=1), "llm": series(steps, ready=1, desired=1)}


@pytest.mark.parametrize(
    ("latency_s", "weight", "dropped", "attainment"),
    [
        ([1.0, 12.0], [950.0, 40.0], 10.0, 0.95),  # 950 within, 40 late, 10 dropped
        ([1.0, 10.0], [50.0, 50.0], 0.0, 1.0),  # exactly at the SLO counts as within
        ([11.0], [10.0], 0.0, 0.0),
        ([1.0], [90.0], 10.0, 0.9),
    ],
)
def test_slo_attainment_counts_drops_as_misses(
    latency_s: list[float], weight: list[float], dropped: float, attainment: float
) -> None:
    got = score(
        result(latency_s, weight, [100.0] * len(latency_s), dropped, **idle_components()),
        make_config(),
    )
    assert got.slo_attainment == pytest.approx(attainment)
    assert got.dropped_requests == dropped
    assert got.scored_requests == pytest.approx(sum(weight) + dropped)


def test_quantiles_are_exact_weighted_quantiles() -> None:
    # Latencies [1, 2, 10] weighing [90, 5, 5]: p50 = 1, p95 = 2, p99 = 10.
    got = score(
        result([10.0, 1.0, 2.0], [5.0, 90.0, 5.0], [50.0, 60.0, 70.0], **idle_components()),
        make_config(),
    )
    assert (got.p50_latency_s, got.p95_latency_s, got.p99_latency_s) == (1.0, 2.0, 10.0)


def test_nothing_scored_gives_none_not_zero() -> None:
    got = score(result([], [], [], **idle_components()), make_config())
    assert got.slo_attainment is None
    assert got.p95_latency_s is None
    assert got.scored_requests == 0


def test_warmup_leaves_out_requests_by_arrival_time() -> None:
    # Completed at 130 s after 40 s: arrived at 90 s, inside a 100 s warm-up, so not scored.
    got = score(
        result([40.0, 1.0], [10.0, 30.0], [130.0, 130.0], **idle_components()),
        make_config(),
        start_s=100.0,
    )
    assert got.slo_attainment == 1.0
    assert got.scored_requests == 30.0


def test_gpu_hours_and_cost_from_billed_replicas() -> None:
    # llm: 3 ready + 1 starting for 360 s (36 steps of 10 s) = 0.4 replica-hours;
    # 2 GPUs each -> 0.8 GPU-hours; at $4/h -> $1.60. router: 1 replica, 0.1 h at $0.5/h.
    components = {
        "router": series(36, ready=1, desired=1),
        "llm": series(36, ready=3, starting=1, desired=4),
    }
    got = score(result([1.0], [1.0], [5.0], **components), make_config())
    assert got.per_component["llm"].replica_hours == pytest.approx(0.4)
    assert got.gpu_hours == pytest.approx(0.8)
    assert got.cost == pytest.approx(1.6 + 0.05)
    assert got.per_component["llm"].peak_replicas == 4


def test_gpu_hours_only_over_the_scored_steps() -> None:
    components = {
        "router": series(36, ready=1, desired=1),
        "llm": series(36, ready=[10] * 18 + [1] * 18, desired=1),
    }
    # Scored from 180 s: the last 18 steps at 1 replica = 0.05 replica-hours x 2 GPUs.
    got = score(result([1.0], [1.0], [200.0], **components), make_config(), start_s=180.0)
    assert got.gpu_hours == pytest.approx(0.1)


def test_scaling_actions_count_changes_of_the_desired_count() -> None:
    desired = [1, 1, 3, 3, 3, 2, 2, 5, 5, 5]
    components = {
        "router": series(10, ready=1, desired=1),
        "llm": series(10, ready=1, desired=desired),
    }
    got = score(result([1.0], [1.0], [5.0], **components), make_config(), start_s=0.0)
    assert got.per_component["llm"].scaling_actions == 3
    assert got.scaling_actions == 3


def test_runner_counted_scaling_actions_are_used_over_the_whole_run() -> None:
    run = result([1.0], [1.0], [5.0], **idle_components())
    run.scaling_actions_by_component = {"router": 2, "llm": 5}
    assert score(run, make_config()).scaling_actions == 7


def test_drops_are_apportioned_to_the_scored_window() -> None:
    # 20 drops in all; the components dropped 3 calls in the warm-up and 1 after it, so 1/4 of
    # the ingress drops are scored.
    components = {
        "router": series(10, ready=1, desired=1, dropped=[3] + [0] * 9),
        "llm": series(10, ready=1, desired=1, dropped=[0] * 9 + [1]),
    }
    got = score(result([1.0], [1.0], [95.0], 20.0, **components), make_config(), start_s=50.0)
    assert got.dropped_requests == pytest.approx(5.0)


def test_mean_utilization_weighted_by_ready_replicas_and_none_without_capacity() -> None:
    components = {
        "router": series(2, ready=0, desired=0, utilization=np.nan),
        "llm": series(2, ready=[1, 3], desired=3, utilization=[1.0, 0.2]),
    }
    got = score(result([1.0], [1.0], [5.0], **components), make_config())
    assert got.per_component["router"].mean_utilization is None
    assert got.per_component["llm"].mean_utilization == pytest.approx((1.0 + 0.6) / 4)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0.0, 100.0), st.floats(0.0, 50.0)), min_size=1, max_size=50),
    st.floats(0.0, 100.0),
)
def test_attainment_is_a_fraction_and_quantiles_are_ordered(
    samples: list[tuple[float, float]], dropped: float
) -> None:
    latency = [s[0] for s in samples]
    weight = [s[1] for s in samples]
    got = score(
        result(latency, weight, [200.0] * len(samples), dropped, **idle_components()), make_config()
    )
    if got.slo_attainment is not None:
        assert 0.0 <= got.slo_attainment <= 1.0
    if got.p50_latency_s is not None:
        assert got.p95_latency_s is not None and got.p99_latency_s is not None
        assert got.p50_latency_s <= got.p95_latency_s <= got.p99_latency_s
