"""The backtest report: report.json's contract fields, missing values as null, the comparison
table, and the files written (JSON, Markdown, PNG plots)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from elastiscale.backtest.report import BacktestReport, PolicyRun
from elastiscale.backtest.scoring import score
from test_backtest_scoring import make_config, result, series

POLICY_FIELDS = {
    "slo_attainment",
    "p50_latency_s",
    "p95_latency_s",
    "p99_latency_s",
    "gpu_hours",
    "cost",
    "dropped_requests",
    "scaling_actions",
    "per_component",
}


def make_report() -> BacktestReport:
    config = make_config()
    components = {
        "router": series(36, ready=1, desired=1, utilization=0.3),
        "llm": series(36, ready=[2] * 18 + [4] * 18, starting=[0] * 17 + [2] + [0] * 18),
    }
    good = result([1.0, 2.0, 30.0], [90.0, 8.0, 2.0], [50.0, 150.0, 300.0], **components)
    empty = result([], [], [], **components)
    t_s = np.arange(1.0, 361.0)
    report = BacktestReport(
        pipeline={
            "name": "t",
            "slo_latency_s": 10.0,
            "ingress": ["router"],
            "components": {
                "router": {"capacity_per_replica": 50.0, "target_utilization": 0.7},
                "llm": {"capacity_per_replica": 2.0, "target_utilization": 0.7},
            },
        },
        trace={
            "name": "t.csv",
            "bin_s": 1.0,
            "start_s": 0.0,
            "end_s": 360.0,
            "duration_s": 360.0,
            "requests": 100.0,
            "time_scale": 1.0,
            "rate_scale": 1.0,
        },
        settings={"fidelity": "fast", "interval_s": 15.0, "metrics_delay_s": 15.0},
        warmup_s=60.0,
        elapsed_s=1.5,
    )
    report.runs["good"] = PolicyRun("good", score(good, config), good, 0.5)
    report.runs["idle"] = PolicyRun("idle", score(empty, config), empty, 0.25)
    report.demand = {"router": (t_s, np.full(360, 5.0)), "llm": (t_s, np.full(360, 5.0))}
    return report


def test_report_json_has_the_contract_fields() -> None:
    data = json.loads(make_report().to_json())
    assert {"trace", "pipeline", "elapsed_s", "warmup_s", "policies"} <= set(data)
    assert data["warmup_s"] == 60.0
    assert list(data["policies"]) == ["good", "idle"]
    for entry in data["policies"].values():
        assert set(entry) >= POLICY_FIELDS
        assert set(entry["per_component"]) == {"router", "llm"}
    good = data["policies"]["good"]
    assert good["slo_attainment"] == pytest.approx(0.98)
    assert good["p95_latency_s"] == 2.0
    assert isinstance(good["scaling_actions"], int)


def test_missing_values_are_null_not_zero() -> None:
    idle = make_report().to_dict()["policies"]["idle"]
    assert idle["slo_attainment"] is None
    assert idle["p50_latency_s"] is None
    assert idle["gpu_hours"] > 0  # replicas were billed even though nothing was scored


def test_table_has_one_row_per_policy_and_marks_missing_values() -> None:
    table = make_report().table()
    lines = table.splitlines()
    assert lines[0].startswith("| policy") and "SLO attainment" in lines[0]
    assert len(lines) == 4
    assert lines[2].startswith("| good") and "98.00%" in lines[2]
    assert lines[3].startswith("| idle") and "n/a" in lines[3]
    assert len({len(line) for line in lines}) == 1  # aligned columns


def test_write_produces_json_markdown_and_plots(tmp_path: Path) -> None:
    report = make_report()
    written = report.write(tmp_path / "out")
    names = {p.name for p in written}
    assert {"report.json", "report.md", "latency.png", "slo_vs_gpu_hours.png"} <= names
    assert {"replicas_router.png", "replicas_llm.png"} <= names
    for path in written:
        assert path.stat().st_size > 0
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert report.table() in markdown
    assert "![latency.png](latency.png)" in markdown
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == report.to_dict()


def test_write_without_plots(tmp_path: Path) -> None:
    written = make_report().write(tmp_path, plots=False)
    assert sorted(p.name for p in written) == ["report.json", "report.md"]
