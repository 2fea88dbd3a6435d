"""Helpers shared by the simulator tests (pipelines, traces, scripted policies), and the tests of
the scoring helpers in `backtest.model` that both fidelities and the report rely on."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale.backtest.model import (
    SimulationResult,
    draw_fanout,
    fanout_variance,
    first_call_probability,
    latency_quantile,
    service_models,
    slo_attainment,
    weighted_quantile,
)
from elastiscale.config import Config, validate_mapping
from elastiscale.controllers.base import TickContext
from elastiscale.decision import Proposal
from elastiscale.trace import Trace

# --------------------------------------------------------------------------------------------
# Builders


def pipeline_config(
    *,
    llm_max: int = 64,
    llm_startup_s: float = 90.0,
    llm_unit: str = "requests",
    llm_capacity: float = 1.5,
    retriever_mode: str = "parallel",
    retriever_fanout: float = 2.0,
    retriever_distribution: str = "poisson",
    llm_mode: str = "sequential",
    llm_fanout: float = 1.5,
    llm_distribution: str = "fixed",
    queue_timeout_s: float | None = None,
    mins: Mapping[str, int] | None = None,
) -> Config:
    """router -> retriever (parallel fan-out) -> llm (sequential fan-out, a GPU that starts in
    `llm_startup_s`): the shape the cross-check and mechanism tests share."""
    mins = mins or {}
    pipeline: dict[str, Any] = {
        "name": "sim-test",
        "slo": {"latency_p95_s": 20},
        "components": {
            "router": {
                "ingress": True,
                "capacity_per_replica": 40,
                "service_time_s": 0.05,
                "startup_s": 5,
                "replicas": {"min": mins.get("router", 1), "max": 20},
                "cost_per_hour": 0.1,
            },
            "retriever": {
                "capacity_per_replica": 20,
                "service_time_s": 0.2,
                "startup_s": 10,
                "replicas": {"min": mins.get("retriever", 1), "max": 20},
                "cost_per_hour": 0.2,
            },
            "llm": {
                "capacity_per_replica": llm_capacity,
                "capacity_unit": llm_unit,
                "service_time_s": 4,
                "startup_s": llm_startup_s,
                "gpus_per_replica": 1,
                "replicas": {"min": mins.get("llm", 1), "max": llm_max},
                "cost_per_hour": 4.0,
            },
        },
        "edges": [
            {
                "from": "router",
                "to": "retriever",
                "fanout": retriever_fanout,
                "fanout_distribution": retriever_distribution,
                "mode": retriever_mode,
            },
            {
                "from": "retriever",
                "to": "llm",
                "fanout": llm_fanout,
                "fanout_distribution": llm_distribution,
                "mode": llm_mode,
            },
        ],
    }
    if queue_timeout_s is not None:
        pipeline["queue_timeout_s"] = queue_timeout_s
    return validate_mapping({"pipeline": pipeline, "control": {"interval_s": 15}})


def single_config(
    *,
    capacity: float = 2.0,
    service_time_s: float = 1.0,
    startup_s: float = 60.0,
    replicas_min: int = 0,
    unit: str = "requests",
    queue_timeout_s: float = 30.0,
) -> Config:
    """One ingress component: the smallest pipeline, for mechanism tests."""
    return validate_mapping(
        {
            "pipeline": {
                "name": "single",
                "slo": {"latency_p95_s": 10},
                "queue_timeout_s": queue_timeout_s,
                "components": {
                    "svc": {
                        "ingress": True,
                        "capacity_per_replica": capacity,
                        "capacity_unit": unit,
                        "service_time_s": service_time_s,
                        "startup_s": startup_s,
                        "gpus_per_replica": 1,
                        "replicas": {"min": replicas_min, "max": 50},
                        "cost_per_hour": 3.6,
                    }
                },
            }
        }
    )


def poisson_trace(
    rates_rps: Sequence[float] | np.ndarray, bin_s: float = 1.0, seed: int = 7
) -> Trace:
    """A trace whose bin counts are Poisson draws around `rates_rps` (a real trace holds realized
    counts, not smooth rates)."""
    rates = np.asarray(rates_rps, dtype=float)
    counts = np.random.default_rng(seed).poisson(rates * bin_s).astype(float)
    return Trace(name="poisson", t_s=np.arange(rates.size) * bin_s, requests=counts, bin_s=bin_s)


def flat_trace(rate_rps: float, duration_s: float, bin_s: float = 1.0, **columns: float) -> Trace:
    """A trace of exactly `rate_rps` in every bin; `columns` are per-request token counts."""
    n = round(duration_s / bin_s)
    requests = np.full(n, rate_rps * bin_s)
    extra = {name: requests * per_request for name, per_request in columns.items()}
    return Trace(
        name="flat", t_s=np.arange(n) * bin_s, requests=requests, bin_s=bin_s, columns=extra
    )


# --------------------------------------------------------------------------------------------
# Policies


class TargetPolicy:
    """Size each component for its observed load at a target utilization, holding within a
    10% tolerance (the HPA's rule), so that noise alone does not move it."""

    name = "target"

    def __init__(self, utilization: float = 0.7, tolerance: float = 0.1) -> None:
        self.utilization = utilization
        self.tolerance = tolerance

    def propose(self, ctx: TickContext) -> dict[str, Proposal]:
        out: dict[str, Proposal] = {}
        for name in ctx.pipeline.order:
            load = ctx.load(name)
            if load is None:
                out[name] = Proposal.none(self.name, "no data")
                continue
            per_replica = ctx.pipeline.components[name].capacity_per_replica * self.utilization
            current = ctx.replicas[name].desired
            if current > 0 and abs(load / (current * per_replica) - 1) <= self.tolerance:
                out[name] = Proposal(self.name, current, "within tolerance")
                continue
            out[name] = Proposal(self.name, max(1, math.ceil(load / per_replica)), "target")
        return out


class SchedulePolicy:
    """Replica counts from a script: from each (time, counts) on, those counts."""

    name = "schedule"

    def __init__(self, plan: Sequence[tuple[float, Mapping[str, int]]]) -> None:
        self.plan = list(plan)

    def propose(self, ctx: TickContext) -> dict[str, Proposal]:
        now: dict[str, int] = {}
        for at_s, counts in self.plan:
            if ctx.now_s >= at_s:
                now.update(counts)
        return {name: Proposal(self.name, n, "scheduled") for name, n in now.items()}


def pooled(results: Sequence[SimulationResult]) -> SimulationResult:
    """Several runs as one sample (their requests together)."""
    return SimulationResult(
        step_s=results[0].step_s,
        latency_s=np.concatenate([r.latency_s for r in results]),
        weight=np.concatenate([r.weight for r in results]),
        completed_at_s=np.concatenate([r.completed_at_s for r in results]),
        dropped_requests=sum(r.dropped_requests for r in results),
    )


def result_of(latency: list[float], weight: list[float], dropped: float) -> SimulationResult:
    return SimulationResult(
        step_s=1.0,
        latency_s=np.asarray(latency, dtype=float),
        weight=np.asarray(weight, dtype=float),
        completed_at_s=np.asarray(latency, dtype=float),
        dropped_requests=dropped,
    )


# --------------------------------------------------------------------------------------------
# Tests of the scoring helpers


@pytest.mark.parametrize(
    ("values", "weights", "q", "expected"),
    [
        ([1, 2, 10], [50, 45, 5], 0.95, 2.0),
        ([1, 2, 10], [50, 45, 5], 0.96, 10.0),
        ([1, 2, 10], [50, 45, 5], 0.5, 1.0),
        ([1, 2, 10], [50, 45, 5], 0.51, 2.0),
        ([10, 2, 1], [5, 45, 50], 0.95, 2.0),  # order does not matter
        ([3.0], [0.25], 0.99, 3.0),
        ([1, 2, 3], [0, 1, 0], 0.1, 2.0),  # zero weights are ignored
        ([1, 2, 3, 4], [1, 1, 1, 1], 0.0, 1.0),
        ([1, 2, 3, 4], [1, 1, 1, 1], 1.0, 4.0),
    ],
)
def test_weighted_quantile_table(
    values: list[float], weights: list[float], q: float, expected: float
) -> None:
    assert weighted_quantile(np.array(values), np.array(weights), q) == expected


def test_weighted_quantile_without_weight_is_none_and_bad_input_is_named() -> None:
    assert weighted_quantile(np.zeros(0), np.zeros(0), 0.5) is None
    assert weighted_quantile(np.array([1.0]), np.array([0.0]), 0.5) is None
    with pytest.raises(ValueError, match=r"q = 1\.5"):
        weighted_quantile(np.array([1.0]), np.array([1.0]), 1.5)
    with pytest.raises(ValueError, match="shape"):
        weighted_quantile(np.array([1.0, 2.0]), np.array([1.0]), 0.5)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0, 1000, allow_nan=False), min_size=1, max_size=40),
    st.floats(0.0, 1.0),
)
def test_weighted_quantile_with_unit_weights_is_numpys_inverted_cdf(
    values: list[float], q: float
) -> None:
    got = weighted_quantile(np.array(values), np.ones(len(values)), q)
    assert got == pytest.approx(float(np.quantile(values, q, method="inverted_cdf")))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 100), st.integers(1, 5)), min_size=1, max_size=20),
    st.floats(0.01, 1.0),
)
def test_a_weight_is_the_same_as_repeating_the_value(
    pairs: list[tuple[float, int]], q: float
) -> None:
    values = np.array([v for v, _ in pairs])
    weights = np.array([float(w) for _, w in pairs])
    repeated = np.repeat(values, [w for _, w in pairs])
    assert weighted_quantile(values, weights, q) == weighted_quantile(
        repeated, np.ones(repeated.size), q
    )


def test_slo_attainment_counts_drops_as_misses() -> None:
    # 900 within the SLO, 80 slower, 20 dropped: 900 / 1000.
    result = result_of([5.0, 25.0], [900.0, 80.0], dropped=20.0)
    assert slo_attainment(result, 20.0) == pytest.approx(0.9)
    assert slo_attainment(result_of([], [], 0.0), 20.0) is None
    assert slo_attainment(result_of([], [], 3.0), 20.0) == 0.0


def test_latency_quantile_may_count_drops_as_infinitely_slow() -> None:
    result = result_of([1.0, 2.0], [90.0, 5.0], dropped=5.0)
    assert latency_quantile(result, 0.95) == 2.0
    assert latency_quantile(result, 0.95, count_dropped=True) == 2.0
    assert latency_quantile(result, 0.96, count_dropped=True) == math.inf


@pytest.mark.parametrize("distribution", ["fixed", "poisson", "geometric"])
@pytest.mark.parametrize("mean", [0.4, 1.0, 2.5])
def test_fanout_draws_have_the_documented_mean_variance_and_first_call_probability(
    distribution: str, mean: float
) -> None:
    draws = draw_fanout(np.random.default_rng(3), mean, distribution, 200_000)
    assert draws.min() >= 0
    assert draws.mean() == pytest.approx(mean, rel=0.02)
    assert draws.var() == pytest.approx(fanout_variance(mean, distribution), rel=0.05, abs=0.01)
    assert (draws >= 1).mean() == pytest.approx(
        first_call_probability(mean, distribution), abs=0.01
    )


@pytest.mark.parametrize(
    ("capacity", "service_time_s", "slots", "hold_s"),
    [
        (1.5, 4.0, 6, 4.0),  # LLM: 6 slots, each request held 4 s
        (50.0, 0.05, 3, 0.06),  # 2.5 slots round to 3; hold 3 / 50 keeps 50 req/s exact
        (0.2, 2.0, 1, 5.0),  # less than a slot: one slot held 1 / capacity
    ],
)
def test_slots_follow_littles_law_and_keep_capacity_exact(
    capacity: float, service_time_s: float, slots: int, hold_s: float
) -> None:
    config = single_config(capacity=capacity, service_time_s=service_time_s)
    model = service_models(config, flat_trace(1.0, 10))["svc"]
    assert model.slots == slots
    assert model.mean_hold_s == pytest.approx(hold_s)
    assert model.slots / model.mean_hold_s == pytest.approx(capacity)


def test_token_slots_use_the_traces_mean_tokens_per_request() -> None:
    # 3000 tokens/s, 4 s, 1000 tokens a request: 12 slots; a request holds 12 x 1000 / 3000.
    config = single_config(capacity=3000, service_time_s=4, unit="tokens")
    trace = flat_trace(2.0, 10, input_tokens=800, output_tokens=200)
    model = service_models(config, trace)["svc"]
    assert (model.slots, model.mean_work_per_request) == (12, 1000.0)
    assert model.mean_hold_s == pytest.approx(4.0)


def test_a_token_unit_without_token_columns_is_named() -> None:
    config = single_config(capacity=3000, service_time_s=4, unit="tokens")
    with pytest.raises(ValueError, match=r"components\.svc\.capacity_unit: 'tokens'"):
        service_models(config, flat_trace(2.0, 10))
