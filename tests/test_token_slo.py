"""Time to first token and inter-token latency: the per-step arithmetic, the config rules, and
the disaggregated example's backtest carrying both into report.json and report.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from elastiscale.backtest.api import backtest
from elastiscale.backtest.model import ComponentSeries
from elastiscale.backtest.token_slo import token_latency
from elastiscale.config import ComponentConfig, load_config
from elastiscale.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def series(queue: list[float], completions: list[float], tokens_per_request: float) -> Any:
    n = len(queue)
    arrivals = np.array(completions, dtype=float)
    zeros = np.zeros(n)
    return ComponentSeries(
        t_s=np.arange(1, n + 1, dtype=float) * 10.0,
        arrivals=arrivals,
        work_arrivals=arrivals * tokens_per_request,
        completions=np.array(completions, dtype=float),
        dropped=zeros.copy(),
        queue=np.array(queue, dtype=float),
        in_flight=zeros.copy(),
        ready=np.ones(n),
        starting=zeros.copy(),
        desired=np.ones(n),
        utilization=np.full(n, 0.5),
        latency_p95_s=np.full(n, np.nan),
    )


DECODE = ComponentConfig.model_validate(
    {
        "capacity_per_replica": 2000,
        "capacity_unit": "output_tokens",
        "service_time_s": 4.0,  # 2000 / 200 x 4 = 40 slots -> 40 / 2000 = 0.02 s per token
        "replicas": {"max": 10},
        "slo": {"ttft_p95_s": 1.0, "itl_p95_s": 0.025},
    }
)
PREFILL = ComponentConfig.model_validate(
    {
        "capacity_per_replica": 10000,
        "capacity_unit": "input_tokens",
        "service_time_s": 0.5,  # 10000 / 1000 x 0.5 = 5 slots -> 0.0005 s per token, 0.5 s
        "replicas": {"max": 10},
        "slo": {"ttft_p95_s": 1.0},
    }
)


@pytest.mark.parametrize(
    ("comp", "tokens", "queue", "completions", "expected"),
    [
        # the docstring's worked example: 10 waiting, 50 done in a 10 s step -> W = 2 s
        (DECODE, 200, [10.0], [50.0], {"p95_itl_s": 0.02 + 2 / 200, "itl_slo_attainment": 0.0}),
        # no queue: ITL is the slot's per-token time, TTFT one token
        (DECODE, 200, [0.0], [50.0], {"p95_itl_s": 0.02, "p95_ttft_s": 0.02}),
        # prefill: the first token comes when the whole prompt is read, 0.5 s, plus the wait
        (PREFILL, 1000, [0.0, 25.0], [50.0, 50.0], {"p95_ttft_s": 5.5}),
        (PREFILL, 1000, [0.0, 25.0], [50.0, 50.0], {"ttft_slo_attainment": 0.5}),
        # a queue that completes nothing in a step: an unbounded wait, a miss
        (PREFILL, 1000, [0.0, 5.0, 0.0], [30.0, 0.0, 10.0], {"ttft_slo_attainment": 1.0}),
    ],
)
def test_per_step_arithmetic(
    comp: ComponentConfig,
    tokens: float,
    queue: list[float],
    completions: list[float],
    expected: dict[str, float],
) -> None:
    s = series(queue, completions, tokens)
    got = token_latency(comp, s, np.ones(len(queue), dtype=bool), 10.0)
    for key, value in expected.items():
        assert getattr(got, key) == pytest.approx(value), key


def test_dropped_requests_are_misses() -> None:
    s = series([0.0], [30.0], 1000)
    s.dropped[:] = 10.0
    got = token_latency(PREFILL, s, np.ones(1, dtype=bool), 10.0)
    assert got.ttft_slo_attainment == pytest.approx(30 / 40)


def test_no_slo_no_figures() -> None:
    plain = ComponentConfig.model_validate(
        {"capacity_per_replica": 1, "service_time_s": 1, "replicas": {"max": 2}}
    )
    got = token_latency(plain, series([0.0], [1.0], 1), np.ones(1, dtype=bool), 10.0)
    assert got.p95_ttft_s is None and got.itl_slo_attainment is None


@pytest.mark.parametrize(
    ("slo", "unit", "message"),
    [
        ({"itl_p95_s": 0.05}, "tokens", "slo.itl_p95_s needs capacity_unit: output_tokens"),
        ({}, "output_tokens", "set ttft_p95_s, itl_p95_s or both"),
        ({"ttft_p95_s": 0}, "input_tokens", "greater than 0"),
    ],
)
def test_bad_token_slos_are_refused_naming_the_field(
    slo: dict[str, float], unit: str, message: str
) -> None:
    raw = load_config(REPO / "examples/pipelines/disaggregated.yaml").model_dump(by_alias=True)
    raw["pipeline"]["components"]["decode"].update(slo=slo, capacity_unit=unit)
    with pytest.raises(ConfigError) as caught:
        load_config(raw)
    assert any(
        p.startswith("pipeline.components.decode") and message in p for p in caught.value.problems
    ), caught.value.problems


def test_the_disaggregated_example_reports_ttft_and_itl_per_part(tmp_path: Path) -> None:
    report = backtest(
        REPO / "examples/pipelines/disaggregated.yaml",
        REPO / "examples/traces/azure_llm_2023_conv_1s.csv",
        ["hpa", "elastiscale"],
        rate_scale=4.0,
        end_s=1200,
    )
    report.write(tmp_path, plots=False)
    data = json.loads((tmp_path / "report.json").read_text())
    for policy in ("hpa", "elastiscale"):
        parts = data["policies"][policy]["per_component"]
        assert set(parts["prefill"]) >= {"p95_ttft_s", "ttft_slo_attainment"}
        assert set(parts["decode"]) >= {"p95_itl_s", "itl_slo_attainment"}
        assert "p95_ttft_s" not in parts["router"]  # only where an SLO asks
        assert 0.0 <= parts["prefill"]["ttft_slo_attainment"] <= 1.0
        assert 0.02 < parts["decode"]["p95_itl_s"] < 0.05  # about the slot time per token
        assert parts["prefill"]["gpu_hours"] > 0 and parts["decode"]["gpu_hours"] > 0
        objectives = data["policies"][policy]["attainment_by_objective"]
        assert objectives == {
            "end_to_end": data["policies"][policy]["slo_attainment"],
            "prefill.ttft_p95_s": parts["prefill"]["ttft_slo_attainment"],
            "decode.itl_p95_s": parts["decode"]["itl_slo_attainment"],
        }
    ceilings = data["ceiling_by_objective"]
    assert set(ceilings) == {"end_to_end", "prefill.ttft_p95_s", "decode.itl_p95_s"}
    assert ceilings["end_to_end"] == data["ceiling_attainment"]
    for policy in ("hpa", "elastiscale"):
        entry = data["policies"][policy]
        avoidable = entry["avoidable_misses_by_objective"]
        for key, ceiling in ceilings.items():
            assert avoidable[key] == pytest.approx(ceiling - entry["attainment_by_objective"][key])
    assert data["pipeline"]["components"]["prefill"]["slo"] == {"ttft_p95_s": 2.0}
    assert "slo" not in data["pipeline"]["components"]["router"]
    markdown = (tmp_path / "report.md").read_text()
    assert "## Time to first token and inter-token latency" in markdown
    assert "Ceiling per SLO (every component at its max replicas): end_to_end" in markdown
    assert "| hpa | prefill |" in markdown and "| elastiscale | decode |" in markdown
