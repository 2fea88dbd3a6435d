"""Backtesting a fleet unit: each request is held to the SLO of the pipeline it entered, each
pipeline's attainment is reported, and a shared component is sized once against the sum."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from elastiscale.backtest.model import ComponentSeries, SimulationResult
from elastiscale.backtest.scoring import score
from elastiscale.cli import main
from elastiscale.config import Config
from elastiscale.config.fleet import load_fleet
from elastiscale.pipeline import Pipeline

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fleet" / "fleet.yaml"


def chain(name: str, slo_s: float, names: list[str]) -> dict[str, Any]:
    comps = {
        c: {"ingress": i == 0, "capacity_per_replica": 10, "service_time_s": 0.5,
            "replicas": {"min": 1, "max": 20}}
        for i, c in enumerate(names)
    }  # fmt: skip
    edges = [{"from": a, "to": b} for a, b in itertools.pairwise(names)]
    return {"pipeline": {"name": name, "slo": {"latency_p95_s": slo_s}, "components": comps,
                         "edges": edges}}  # fmt: skip


def unit(tmp_path: Path) -> Config:
    for file, raw in (("a.yaml", chain("fast", 10, ["in", "llm"])),
                      ("b.yaml", chain("slow", 60, ["in", "llm"]))):  # fmt: skip
        (tmp_path / file).write_text(yaml.safe_dump(raw))
    fleet = {"fleet": {"name": "f", "pipelines": ["a.yaml", "b.yaml"], "shared": ["llm"]}}
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    return load_fleet(tmp_path / "fleet.yaml").units[0].config


def idle(config: Config) -> dict[str, ComponentSeries]:
    steps = 6
    zeros = np.zeros(steps)
    fields = ("arrivals", "work_arrivals", "completions", "dropped", "queue", "in_flight",
              "ready", "starting", "desired", "utilization", "latency_p95_s")  # fmt: skip
    return {
        name: ComponentSeries(t_s=np.arange(1, steps + 1) * 10.0, **dict.fromkeys(fields, zeros))
        for name in config.pipeline.components
    }


# (case, latency of each entry, the pipeline it entered, drops per pipeline, attainment overall,
#  per pipeline)
CASES = [
    ("30 s is late for fast, within for slow", [30.0, 30.0], ["fast", "slow"], (0, 0), 0.5,
     {"fast": 0.0, "slow": 1.0}),
    ("both within their own", [5.0, 50.0], ["fast", "slow"], (0, 0), 1.0,
     {"fast": 1.0, "slow": 1.0}),
    ("a drop counts against its own pipeline", [5.0, 5.0, 5.0], ["fast", "slow", "slow"], (1, 0),
     0.75, {"fast": 0.5, "slow": 1.0}),
]  # fmt: skip


@pytest.mark.parametrize(("latency", "entered", "drops", "overall", "per_pipeline"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])  # fmt: skip
def test_each_request_is_held_to_its_own_pipelines_slo(
    tmp_path: Path,
    latency: list[float],
    entered: list[str],
    drops: tuple[int, int],
    overall: float,
    per_pipeline: dict[str, float],
) -> None:
    config = unit(tmp_path)
    ingress = Pipeline(config.pipeline).ingress  # the simulators' order
    index = {name.split("/")[0]: i for i, name in enumerate(ingress)}
    by_origin = np.zeros(len(ingress))
    for name, count in zip(("fast", "slow"), drops, strict=True):
        by_origin[index[name]] = count
    result = SimulationResult(
        step_s=10.0,
        latency_s=np.asarray(latency),
        weight=np.ones(len(latency)),
        completed_at_s=np.asarray(latency) + 1.0,
        dropped_requests=float(sum(drops)),
        components=idle(config),
        origin=np.asarray([index[e] for e in entered], dtype=np.int64),
        dropped_by_origin=by_origin,
    )
    got = score(result, config)
    assert got.slo_attainment == pytest.approx(overall)
    assert {n: p.slo_attainment for n, p in got.per_pipeline.items()} == pytest.approx(per_pipeline)
    assert sum(p.scored_requests for p in got.per_pipeline.values()) == pytest.approx(
        got.scored_requests
    )


@pytest.mark.parametrize("fidelity", ["fast", "discrete-event"])
def test_a_fleet_backtest_sizes_the_shared_component_once_and_reports_each_pipeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fidelity: str
) -> None:
    trace = tmp_path / "trace.csv"
    rows = "".join(
        f"{t},{2 + t % 3},{1000 * (2 + t % 3)},{200 * (2 + t % 3)}\n" for t in range(900)
    )
    trace.write_text("t_seconds,requests,input_tokens,output_tokens\n" + rows)
    out = tmp_path / "out"
    args = ["backtest", str(EXAMPLE), "--trace", str(trace), "--no-plots", "--policy", "hpa",
            "--fidelity", fidelity, "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    assert "end-to-end SLOs rag-qa 20 s, support-agent 60 s" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    components = report["pipeline"]["components"]
    assert [n for n in components if n.endswith("embedder")] == ["embedder"]
    # the trace at both ingresses: rag-qa makes 1 embedder call a request, support-agent 2
    assert components["embedder"]["demand_share"] == pytest.approx(
        {"rag-qa": 1 / 3, "support-agent": 2 / 3}
    )
    hpa = report["policies"]["hpa"]
    assert set(hpa["per_pipeline"]) == {"rag-qa", "support-agent"}
    arrivals = hpa["per_component"]
    # the shared embedder served both pipelines' calls: 1 + 2 per trace request
    assert arrivals["embedder"]["arrivals"] == pytest.approx(
        arrivals["rag-qa/router"]["arrivals"] * 3, rel=0.05
    )
    assert "## Per pipeline" in (out / "report.md").read_text()
