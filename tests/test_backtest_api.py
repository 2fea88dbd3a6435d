"""`elastiscale.backtest()`: the fair-comparison rules (same start, same window, warm-up scored
for none), which policies run by default, and bad arguments (the oracle as the lower bound:
test_oracle_bound.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import elastiscale
from elastiscale import RegistryError, load_config, registry
from elastiscale.backtest.api import BacktestError, policy_specs
from elastiscale.backtest.baselines import initial_replicas
from elastiscale.config import Config
from elastiscale.controllers.base import TickContext
from elastiscale.decision import Proposal
from elastiscale.observations import ReplicaState
from elastiscale.trace import Trace

ROOT = Path(__file__).resolve().parents[1]
AZURE = ROOT / "examples" / "traces" / "azure_llm_2023_conv_1s.csv"


def small_config(**extra: Any) -> Config:
    raw: dict[str, Any] = {
        "pipeline": {
            "name": "small",
            "slo": {"latency_p95_s": 20},
            "components": {
                "router": {
                    "ingress": True,
                    "capacity_per_replica": 100,
                    "service_time_s": 0.01,
                    "startup_s": 5,
                    "replicas": {"min": 1, "max": 4},
                    "cost_per_hour": 0.1,
                },
                "llm": {
                    "capacity_per_replica": 2.0,
                    "service_time_s": 2.0,
                    "startup_s": 60,
                    "gpus_per_replica": 1,
                    "replicas": {"min": 1, "max": 40},
                    "cost_per_hour": 2.0,
                },
            },
            "edges": [{"from": "router", "to": "llm", "fanout": 2.0}],
        },
        "control": {"interval_s": 15},
    }
    raw.update(extra)
    return load_config(raw)


def synthetic(rates: np.ndarray, bin_s: float = 2.0) -> Trace:
    return Trace(
        name="synthetic", t_s=np.arange(rates.size) * bin_s, requests=rates * bin_s, bin_s=bin_s
    )


def _steps(minutes: float, bin_s: float = 2.0) -> int:
    return round(minutes * 60 / bin_s)


#: Small cases of the cross-check family: steady, ramp, burst, overload, cold start.
CASES: dict[str, tuple[np.ndarray, dict[str, Any]]] = {
    "steady": (np.full(_steps(20), 5.0), {}),
    "ramp": (np.linspace(2.0, 12.0, _steps(20)), {}),
    "burst": (
        np.concatenate([np.full(_steps(8), 4.0), np.full(_steps(3), 12.0), np.full(_steps(9), 4)]),
        {},
    ),
    "overload": (np.full(_steps(15), 45.0), {}),  # 90 calls/s > 40 replicas x 2
    "cold-start": (np.full(_steps(15), 6.0), {"initial": 1}),
}


class SpyPolicy:
    """Proposes nothing; remembers the replica counts it saw at its first tick."""

    name = "spy"
    first_seen: dict[str, ReplicaState] | None = None

    def __init__(self, config: Config, params: Mapping[str, Any]) -> None:
        del config, params

    def propose(self, ctx: TickContext) -> dict[str, Proposal]:
        if SpyPolicy.first_seen is None:
            SpyPolicy.first_seen = dict(ctx.replicas)
        return {}


@pytest.fixture(autouse=True)
def _spy() -> None:
    registry.register("policy", "spy", SpyPolicy)
    SpyPolicy.first_seen = None


def test_every_policy_starts_from_the_same_counts_sized_from_the_first_minutes() -> None:
    trace = synthetic(np.full(_steps(10), 5.0))
    report = elastiscale.backtest(small_config(), trace, ["spy"])
    # 5 req/s x fan-out 2 = 10 calls/s; 10 / (2 x 0.7) = 7.1 -> 8 replicas.
    expected = {"router": 1, "llm": 8}
    assert (
        report.settings["initial_replicas"] == expected == initial_replicas(small_config(), trace)
    )
    assert SpyPolicy.first_seen is not None
    assert {n: s.desired for n, s in SpyPolicy.first_seen.items()} == expected


def test_warmup_is_simulated_for_all_and_scored_for_none() -> None:
    trace = synthetic(np.full(_steps(10), 5.0))
    whole = elastiscale.backtest(small_config(), trace, ["static-peak"])
    warmed = elastiscale.backtest(small_config(), trace, ["static-peak"], warmup_s=300.0)
    assert warmed.warmup_s == 300.0
    assert warmed.to_dict()["warmup_s"] == 300.0
    assert warmed.settings["scored_from_s"] == 300.0
    whole_n = whole.policies["static-peak"].scored_requests
    warmed_n = warmed.policies["static-peak"].scored_requests
    # 10 minutes at 5 req/s = 3000 requests; the last 5 minutes hold 1500.
    assert whole_n == pytest.approx(3000, rel=0.01)
    assert warmed_n == pytest.approx(1500, rel=0.01)
    assert warmed.policies["static-peak"].gpu_hours < whole.policies["static-peak"].gpu_hours


def test_rate_and_time_scale_are_applied_and_recorded() -> None:
    report = elastiscale.backtest(
        small_config(), AZURE, ["spy"], rate_scale=2.0, time_scale=0.5, end_s=600.0
    )
    assert report.trace["rate_scale"] == 2.0
    assert report.trace["time_scale"] == 0.5
    assert report.trace["duration_s"] == pytest.approx(300.0)
    original = elastiscale.load_trace(AZURE).window(None, 600.0)
    assert report.trace["requests"] == pytest.approx(2.0 * original.requests.sum())


def test_default_policies_are_the_buildable_builtins_plus_the_files_own() -> None:
    config = small_config(policies=[{"name": "spy"}])
    names = [s.name for s in policy_specs(config, None)]
    assert names[:2] == ["static-peak", "oracle"]
    assert {"hpa", "kpa"} <= set(names)
    assert names[-1] == "spy"
    assert len(names) == len(set(names))
    # A file without a policies section adds nothing (its default is not run twice).
    assert "spy" not in [s.name for s in policy_specs(small_config(), None)]


def test_repeated_policy_names_get_numbered_labels() -> None:
    trace = synthetic(np.full(_steps(3), 5.0))
    report = elastiscale.backtest(
        small_config(), trace, ["static-peak", {"name": "static-peak", "params": {}}]
    )
    assert list(report.policies) == ["static-peak", "static-peak#2"]


@pytest.mark.parametrize(
    ("policies", "message"),
    [
        (["no-such-policy"], "unknown policy 'no-such-policy'"),
        (["nowhere.module:Policy"], "policy 'nowhere.module:Policy' cannot be loaded"),
    ],
)
def test_named_policies_that_cannot_be_built_are_errors(policies: list[str], message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        elastiscale.backtest(small_config(), synthetic(np.full(30, 1.0)), policies)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"warmup_s": 600.0}, "warmup_s = 600 must be >= 0 and shorter than the replayed 60 s"),
        ({"time_scale": 0.0}, "time_scale = 0, must be > 0"),
        ({"rate_scale": -1.0}, "rate_scale = -1, must be > 0"),
        ({"start_s": 50.0, "end_s": 10.0}, "start_s = 50 must be before end_s = 10"),
        ({"metrics_delay_s": -1.0}, "metrics_delay_s = -1, must be >= 0"),
        ({"interval_s": 0.0}, "interval_s = 0, must be > 0"),
    ],
)
def test_inconsistent_arguments_are_refused_naming_the_value(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(BacktestError) as info:
        elastiscale.backtest(small_config(), synthetic(np.full(30, 1.0)), ["spy"], **options)
    assert str(info.value) == message


def test_elastiscale_backtest_is_the_function_and_still_reaches_the_package() -> None:
    import elastiscale.backtest.runner as runner_module

    assert {"backtest", "BacktestReport"} <= set(elastiscale.__all__)
    assert runner_module.__name__ == "elastiscale.backtest.runner"
    assert elastiscale.backtest.scoring.__name__ == "elastiscale.backtest.scoring"
    with pytest.raises(AttributeError, match="no attribute 'nowhere'"):
        _ = elastiscale.backtest.nowhere
    report = elastiscale.backtest(small_config(), synthetic(np.full(30, 1.0)), ["spy"])
    assert isinstance(report, elastiscale.BacktestReport)
