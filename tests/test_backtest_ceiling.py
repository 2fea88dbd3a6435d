"""The ceiling of a backtest (every component at its max replicas, ready from the start) and the
avoidable misses it defines: in report.json, report.md and the printed table; a structural miss
the ceiling keeps; no policy above it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import elastiscale
from elastiscale.backtest.ceiling import avoidable_misses, ceiling_score, max_replicas
from elastiscale.cli import main
from test_backtest_api import CASES, small_config, synthetic

ROOT = Path(__file__).resolve().parents[1]
AGENT = str(ROOT / "examples" / "pipelines" / "agent.yaml")
AZURE = ROOT / "examples" / "traces" / "azure_llm_2023_conv_1s.csv"


def _with_llm(**llm: Any) -> elastiscale.Config:
    raw = small_config().model_dump(by_alias=True, exclude_unset=True)
    raw["pipeline"]["components"]["llm"].update(llm)
    return elastiscale.load_config(raw)


@pytest.mark.parametrize("case", list(CASES))
def test_no_policy_attains_more_than_the_ceiling(case: str) -> None:
    rates, _ = CASES[case]
    report = elastiscale.backtest(small_config(), synthetic(rates), ["static-peak", "hpa", "kpa"])
    ceiling = report.ceiling_attainment
    assert ceiling is not None
    data = report.to_dict()
    assert data["ceiling_attainment"] == pytest.approx(ceiling)
    for name, got in report.policies.items():
        assert got.slo_attainment is not None
        assert got.slo_attainment <= ceiling + 1e-9, name
        entry = data["policies"][name]
        assert entry["avoidable_misses"] == pytest.approx(ceiling - got.slo_attainment)


@pytest.mark.parametrize(
    ("llm", "rate", "expected"),
    [
        ({}, 5.0, 1.0),  # 10 calls/s on 40 replicas of 2/s: nothing is late
        ({"service_time_s": 12.0, "capacity_per_replica": 0.5}, 1.0, 0.0),  # 2 x 12 s > 20 s
        ({"replicas": {"min": 1, "max": 2}}, 5.0, None),  # 10 calls/s on 4/s: overloaded
    ],
    ids=["room-to-spare", "service-alone-misses", "bound-too-low"],
)
def test_the_ceiling_keeps_only_structural_misses(
    llm: dict[str, Any], rate: float, expected: float | None
) -> None:
    config = _with_llm(**llm)
    trace = synthetic(np.full(300, rate))
    got = ceiling_score(config, trace, start_s=trace.start_s, end_s=trace.end_s).slo_attainment
    assert got is not None
    if expected is None:
        assert got < 0.5
    else:
        assert got == pytest.approx(expected, abs=1e-6)


def test_max_replicas_is_every_components_upper_bound() -> None:
    assert max_replicas(small_config()) == {"router": 4, "llm": 40}


@pytest.mark.parametrize(
    ("ceiling", "attainment", "expected"),
    [(0.98, 0.95, pytest.approx(0.03)), (None, 0.95, None), (0.98, None, None)],
)
def test_avoidable_misses_is_the_gap_to_the_ceiling(
    ceiling: float | None, attainment: float | None, expected: Any
) -> None:
    assert avoidable_misses(ceiling, attainment) == expected


def test_without_the_ceiling_the_fields_are_null() -> None:
    report = elastiscale.backtest(small_config(), synthetic(np.full(150, 5.0)), ["hpa"],
                                  ceiling=False)  # fmt: skip
    data = json.loads(report.to_json())
    assert data["ceiling_attainment"] is None
    assert data["policies"]["hpa"]["avoidable_misses"] is None
    assert "not computed" in report.markdown()


def test_report_md_and_the_printed_table_show_the_ceiling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["backtest", AGENT, "--trace", str(AZURE), "--end", "300", "--rate-scale", "4",
                 "--policy", "hpa", "--no-plots", "--out", str(tmp_path)])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads((tmp_path / "report.json").read_text())
    ceiling = data["ceiling_attainment"]
    assert 0.0 < ceiling <= 1.0
    md = (tmp_path / "report.md").read_text()
    for text in (md, out):
        assert f"Ceiling attainment: {ceiling:.2%}" in text
        assert "avoidable misses" in text.splitlines()[text.splitlines().index("") + 3]
