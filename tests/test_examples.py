"""The examples run as shipped: the embedded loop, the custom policy (as a script and loaded from
a pipeline file by the backtest command), and the example pipelines' realism."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from elastiscale import load_config, load_trace
from elastiscale.backtest.baselines import StaticPeakPolicy
from elastiscale.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
AZURE = EXAMPLES / "traces" / "azure_llm_2023_conv_1s.csv"


def run_script(name: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=str(ROOT),
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_embedded_loop_scales_the_agent_pipeline() -> None:
    lines = run_script("embedded.py")
    change = re.compile(r"^\s*\d+s (router|planner|tools|retriever|writer): (\d+) -> (\d+) \(")
    changes = [m for m in map(change.match, lines[:-1]) if m]
    assert len(changes) == len(lines) - 1
    assert {m.group(1) for m in changes} >= {"planner", "writer"}
    assert all(m.group(2) != m.group(3) for m in changes)
    summary = re.match(r"^(\d+) changes; final replicas: \{.*'writer': (\d+)", lines[-1])
    assert summary is not None, lines[-1]
    assert int(summary.group(1)) == len(changes)
    assert int(summary.group(2)) >= 10  # tens of writer replicas at 4x the trace


def test_custom_policy_script_compares_itself_with_builtins() -> None:
    lines = run_script("custom_policy.py")
    assert lines[0].startswith("| policy")
    rows = {line.split("|")[1].strip(): line for line in lines[2:]}
    assert set(rows) == {"custom_policy:HalfCapacityPolicy", "hpa", "oracle"}
    assert re.search(r"\d+\.\d\d%", rows["custom_policy:HalfCapacityPolicy"])


def test_backtest_loads_the_custom_policy_named_in_the_pipeline_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    code = main(
        ["backtest", str(EXAMPLES / "pipelines" / "custom.yaml"), "--trace", str(AZURE),
         "--end", "300", "--no-plots", "--out", str(tmp_path)]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    policies = json.loads((tmp_path / "report.json").read_text())["policies"]
    assert "custom_policy:HalfCapacityPolicy" in policies
    assert {"static-peak", "oracle", "hpa", "kpa"} <= set(policies)
    assert "| custom_policy:HalfCapacityPolicy " in out


def test_custom_pipeline_without_the_examples_on_the_path_names_the_policy(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = EXAMPLES / "pipelines" / "custom.yaml"
    sys.modules.pop("custom_policy", None)
    code = main(["backtest", str(path), "--trace", str(AZURE)])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith(f"{path}: policies[0].name: policy 'custom_policy:HalfCapacityPolicy'")


@pytest.mark.parametrize("name", ["agent", "rag", "custom"])
def test_example_pipelines_are_typical_of_gpu_serving(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    config = load_config(EXAMPLES / "pipelines" / f"{name}.yaml")
    components = config.pipeline.components
    gpu = [c for c in components.values() if c.gpus_per_replica > 0]
    assert gpu, "a GPU model in every example"
    llms = [c for c in gpu if c.startup_s >= 120]
    assert llms and all(120 <= c.startup_s <= 300 for c in llms)  # 2 to 5 minutes to start
    assert all(c.cost_per_hour > 0 for c in components.values())


def test_agent_pipeline_fans_out_and_runs_tens_of_llm_replicas_at_the_demo_scale() -> None:
    config = load_config(EXAMPLES / "pipelines" / "agent.yaml")
    planner_edge = next(e for e in config.pipeline.edges if e.target == "planner")
    assert 3.0 <= planner_edge.fanout <= 5.0
    order = [e.source for e in config.pipeline.edges] + [config.pipeline.edges[-1].target]
    assert order == ["router", "planner", "tools", "retriever", "writer"]
    trace = load_trace(AZURE).scaled(rate_scale=4)
    peak = StaticPeakPolicy(config, {}, trace=trace).replicas
    assert peak["planner"] >= 10 and peak["writer"] >= 10


def test_rag_pipeline_is_the_five_stage_chain() -> None:
    config = load_config(EXAMPLES / "pipelines" / "rag.yaml")
    chain = [(e.source, e.target) for e in config.pipeline.edges]
    assert chain == [
        ("router", "embedder"),
        ("embedder", "retriever"),
        ("retriever", "reranker"),
        ("reranker", "llm"),
    ]
