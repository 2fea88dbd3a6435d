"""`static-budget`: a static deployment spending at most the matched policy's GPU-hours (or cost
without GPUs), split across components for the highest attainment."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

import elastiscale
from elastiscale import RegistryError, registry
from elastiscale.backtest import baselines
from elastiscale.backtest.context import RunContext
from elastiscale.backtest.static_budget import (
    FixedPolicy,
    _fit,
    best_static_split,
    budget_weights,
    objective,
)
from test_backtest_api import CASES, small_config, synthetic


def _two_gpu_config() -> elastiscale.Config:
    """router -> embedder (1 GPU) -> llm (2 GPUs): a split between two GPU components."""
    raw = small_config().model_dump(by_alias=True, exclude_unset=True)
    comps = raw["pipeline"]["components"]
    comps["embedder"] = {
        "capacity_per_replica": 20.0,
        "service_time_s": 0.2,
        "startup_s": 30,
        "gpus_per_replica": 1,
        "replicas": {"min": 1, "max": 20},
        "cost_per_hour": 1.0,
    }
    comps["llm"]["gpus_per_replica"] = 2
    raw["pipeline"]["edges"] = [
        {"from": "router", "to": "embedder", "fanout": 1.0},
        {"from": "embedder", "to": "llm", "fanout": 2.0},
    ]
    return elastiscale.load_config(raw)


@pytest.mark.parametrize("case", ["steady", "ramp", "burst"])
@pytest.mark.parametrize("match", ["hpa", "static-peak"])
def test_spends_at_most_the_matched_gpu_hours_and_stays_static(case: str, match: str) -> None:
    rates, _ = CASES[case]
    config = _two_gpu_config()
    report = elastiscale.backtest(
        config, synthetic(rates), [match, {"name": "static-budget", "params": {"match": match}}]
    )
    got, matched = report.policies["static-budget"], report.policies[match]
    hours = report.trace["duration_s"] / 3600.0
    assert got.gpu_hours <= matched.gpu_hours + 1e-6
    # the largest replica (2 GPUs) is all that can be left unspent, plus the start's drain
    assert got.gpu_hours >= matched.gpu_hours - 2 * hours - 0.05
    for comp in ("embedder", "llm"):
        assert got.per_component[comp].scaling_actions <= 1


def test_the_split_is_at_least_as_good_as_the_scaled_down_peak_deployment() -> None:
    rates, _ = CASES["burst"]
    config = _two_gpu_config()
    trace = synthetic(rates)
    context = RunContext(config, trace, baselines.initial_replicas(config, trace))
    weight, unit = budget_weights(config)
    assert unit == "gpu_hours"
    peak = baselines.StaticPeakPolicy(config, trace=trace).replicas
    budget = 0.6 * sum(peak[n] * weight[n] for n in peak)
    counts, got, used = best_static_split(context, budget)
    assert sum(counts[n] * weight[n] for n in counts) <= budget + 1e-9
    bounds = {n: (c.replicas.min, c.replicas.max) for n, c in config.pipeline.components.items()}
    fixed = {"router": peak["router"]}
    start = _fit({"embedder": peak["embedder"], "llm": peak["llm"]}, budget, weight, bounds, fixed)
    alternative = context.evaluate(FixedPolicy("alt", start, "scaled peak"))
    assert objective(got) >= objective(alternative)
    assert 2 <= used <= 40


@pytest.mark.parametrize(
    ("shares", "budget", "expected"),
    [
        ({"embedder": 10.0, "llm": 10.0}, 30.0, {"embedder": 10, "llm": 10}),  # fits exactly
        ({"embedder": 10.0, "llm": 10.0}, 15.0, {"embedder": 5, "llm": 5}),  # halved
        ({"embedder": 10.0, "llm": 10.0}, 16.0, {"embedder": 6, "llm": 5}),  # 1 GPU left: filled
        ({"embedder": 1.0, "llm": 100.0}, 500.0, {"embedder": 20, "llm": 40}),  # at the bounds
    ],
)
def test_fit_scales_shares_into_the_budget(
    shares: dict[str, float], budget: float, expected: dict[str, int]
) -> None:
    config = _two_gpu_config()
    weight, _ = budget_weights(config)
    bounds = {n: (c.replicas.min, c.replicas.max) for n, c in config.pipeline.components.items()}
    got = _fit(shares, budget, weight, bounds, {"router": 2})
    assert {n: got[n] for n in expected} == expected
    assert got["router"] == 2


def test_without_gpus_the_budget_is_cost() -> None:
    raw = small_config().model_dump(by_alias=True, exclude_unset=True)
    raw["pipeline"]["components"]["llm"]["gpus_per_replica"] = 0
    config = elastiscale.load_config(raw)
    weight, unit = budget_weights(config)
    assert unit == "cost" and weight == {"router": 0.1, "llm": 2.0}
    rates, _ = CASES["ramp"]
    report = elastiscale.backtest(config, synthetic(rates), ["hpa", {"name": "static-budget",
                                  "params": {"match": "hpa"}}], ceiling=False)  # fmt: skip
    assert report.policies["static-budget"].cost <= report.policies["hpa"].cost + 1e-6


def test_a_match_outside_the_run_is_simulated_and_not_reported() -> None:
    rates, _ = CASES["steady"]
    config = small_config()
    alone = elastiscale.backtest(
        config, synthetic(rates), [{"name": "static-budget", "params": {"match": "hpa"}}]
    )
    both = elastiscale.backtest(
        config, synthetic(rates), ["hpa", {"name": "static-budget", "params": {"match": "hpa"}}]
    )
    assert list(alone.policies) == ["static-budget"]
    assert alone.policies["static-budget"] == both.policies["static-budget"]


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ({"match": "static-budget"}, RegistryError, "matches itself"),
        ({"match": "no-such-policy"}, RegistryError, "no-such-policy"),
        ({"max_evaluations": 1}, ValidationError, "max_evaluations"),
    ],
)
def test_bad_parameters_are_refused_naming_them(
    params: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        elastiscale.backtest(small_config(), synthetic(np.full(150, 5.0)),
                             [{"name": "static-budget", "params": params}])  # fmt: skip


def test_outside_a_backtest_it_cannot_be_built() -> None:
    with pytest.raises(RegistryError, match="only in a backtest"):
        registry.build("policy", "static-budget", small_config())


def test_is_a_builtin_run_by_default_after_elastiscale() -> None:
    from elastiscale.backtest.api import buildable_builtins

    names = buildable_builtins()
    assert names.index("static-budget") == names.index("elastiscale") + 1
