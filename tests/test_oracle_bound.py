"""The `oracle` as a bound: on the test cases, the bundled traces and the shared traces (short
slices), no other built-in policy reaches its attainment with fewer GPU-hours, and it reaches
`static-peak`'s attainment (within 0.1 points)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import elastiscale
from elastiscale import RegistryError
from elastiscale.backtest.report import BacktestReport
from test_backtest_api import CASES, small_config, synthetic

ROOT = Path(__file__).resolve().parents[1]
AGENT = ROOT / "examples" / "pipelines" / "agent.yaml"
RAG = ROOT / "examples" / "pipelines" / "rag.yaml"
BUNDLED = ROOT / "examples" / "traces"
SHARED = ROOT.parent / "shared" / "traces"  # beside the checkout, as CI lays it out


def assert_is_a_bound(report: BacktestReport, where: str) -> None:
    oracle = report.policies["oracle"]
    peak = report.policies["static-peak"]
    assert oracle.slo_attainment is not None and peak.slo_attainment is not None
    assert oracle.slo_attainment >= peak.slo_attainment - 0.001, where
    for name, got in report.policies.items():
        if name == "oracle" or got.slo_attainment is None:
            continue
        dominates = got.slo_attainment >= oracle.slo_attainment and (
            got.gpu_hours < oracle.gpu_hours - 1e-9
        )
        assert not dominates, (
            f"{where}: {name} attains {got.slo_attainment:.5f} with {got.gpu_hours:.2f} "
            f"GPU-hours; the oracle {oracle.slo_attainment:.5f} with {oracle.gpu_hours:.2f}"
        )


@pytest.mark.parametrize("case", list(CASES))
def test_the_oracle_is_a_bound_on_the_test_cases(case: str) -> None:
    rates, options = CASES[case]
    config = small_config()
    if "initial" in options:
        raw = config.model_dump(by_alias=True, exclude_unset=True)
        raw["pipeline"]["components"]["llm"]["replicas"]["initial"] = options["initial"]
        config = elastiscale.load_config(raw)
    assert_is_a_bound(elastiscale.backtest(config, synthetic(rates), ceiling=False), case)


def _traces() -> list[Any]:
    out = [
        pytest.param(AGENT, BUNDLED / "azure_llm_2023_conv_1s.csv", {"rate_scale": 4.0},
                     id="agent-azure"),
        pytest.param(AGENT, BUNDLED / "mooncake_fast25_conversation_1s.csv",
                     {"rate_scale": 6.0}, id="agent-mooncake"),
        pytest.param(RAG, BUNDLED / "azure_llm_2023_conv_1s.csv", {"rate_scale": 4.0},
                     id="rag-azure"),
    ]  # fmt: skip
    shared = {
        "mooncake_fast25_synthetic_1s.csv": {"rate_scale": 5.4},
        "nasa_http_1995_07_10s.csv.gz": {"rate_scale": 9.5, "start_s": 43200.0},
        "alibaba_gentd26_lora_requests_10s_days00-13.csv.gz": {
            "rate_scale": 280.0,
            "start_s": 10 * 86400.0,
        },
    }
    for name, options in shared.items():
        out.append(
            pytest.param(
                AGENT,
                SHARED / name,
                options,
                id=f"agent-{name.split('_')[0]}",
                marks=pytest.mark.skipif(
                    not (SHARED / name).exists(), reason=f"{SHARED / name} not present"
                ),
            )
        )
    return out


@pytest.mark.parametrize(("pipeline", "trace", "options"), _traces())
def test_the_oracle_is_a_bound_on_the_bundled_and_shared_traces(
    pipeline: Path, trace: Path, options: dict[str, Any]
) -> None:
    # A 20-minute slice of each (2 hours of the 10 s-binned multi-day traces), every built-in.
    span_s = 7200.0 if "10s" in trace.name else 1200.0
    start_s = options.pop("start_s", 0.0)
    report = elastiscale.backtest(
        pipeline, trace, start_s=start_s, end_s=start_s + span_s, ceiling=False, **options
    )
    assert_is_a_bound(report, trace.name)


def test_without_search_it_is_the_construction_and_needs_no_backtest() -> None:
    from elastiscale.backtest.baselines import OraclePolicy
    from elastiscale.backtest.oracle import BoundOraclePolicy

    trace = synthetic(CASES["burst"][0])
    plain = BoundOraclePolicy(small_config(), {"search": False}, trace=trace)
    construction = OraclePolicy(small_config(), {}, trace=trace)
    assert plain.evaluations == 0
    for name, need in construction.need.items():
        assert (plain.need[name] == need).all()


@pytest.mark.parametrize(
    ("params", "message"),
    [({"target": "oracle"}, "is itself"), ({"target": "no-such-policy"}, "no-such-policy")],
)
def test_bad_targets_are_refused_naming_them(params: dict[str, Any], message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        elastiscale.backtest(small_config(), synthetic(CASES["steady"][0]),
                             [{"name": "oracle", "params": params}], ceiling=False)  # fmt: skip
