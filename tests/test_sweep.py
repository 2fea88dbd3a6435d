"""`elastiscale sweep`: the sweep file, resuming, failed cells, the frontiers, pool vs Ray.

Cells replay short slices of the bundled one-hour traces, so a cell takes a fraction of a
second. The Ray test starts a real local Ray (token authentication on, as the Ray Serve tests
run it) in a child process, so this pytest process never imports Ray; it skips without Ray
unless ELASTISCALE_REQUIRE_INTEGRATION is set, then it fails.
"""

from __future__ import annotations

import csv
import importlib.util
import itertools
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

import elastiscale
from elastiscale.cli import main
from elastiscale.sweep import frontier, runner
from elastiscale.sweep.results import COLUMNS, read_rows, run_cell
from elastiscale.sweep.spec import cells, load_spec

REPO = Path(__file__).resolve().parent.parent
AZURE = str(REPO / "examples" / "traces" / "azure_llm_2023_conv_1s.csv")
MOONCAKE = str(REPO / "examples" / "traces" / "mooncake_fast25_conversation_1s.csv")
AGENT = str(REPO / "examples" / "pipelines" / "agent.yaml")
REQUIRE_INTEGRATION = bool(os.environ.get("ELASTISCALE_REQUIRE_INTEGRATION"))


def small_spec(**changes: Any) -> dict[str, Any]:
    """2 traces x 2 policies x 2 knob values = 8 cells of 10-minute slices."""
    spec: dict[str, Any] = {
        "traces": [
            {"path": AZURE, "rate_scale": 4, "end_s": 600, "warmup_s": 60},
            {"path": MOONCAKE, "rate_scale": 2, "end_s": 600},
        ],
        "pipelines": [AGENT],
        "policies": {
            "hpa": {"target_utilization": [0.6, 0.8]},
            "static-peak": {"target_utilization": [0.5, 0.7]},
        },
        "seeds": [0],
    }
    spec.update(changes)
    return spec


def write_spec(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


def rows_without_time(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in csv.DictReader(f)]


# ---------------------------------------------------------------------------------------------
# The sweep file


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"traces": []}, "traces: List should have at least 1 item"),
        ({"policies": {"hpa": {"target_utilization": 0.7}}},
         "policies.hpa.target_utilization: Input should be a valid list"),
        ({"policies": {"hpa": {"target_utilisation": [0.7]}}},
         "policies.hpa.params.target_utilisation: unknown key"),
        ({"policies": {"hpa": {"target_utilization": [0.7, 1.5]}}},
         "policies.hpa.params.target_utilization: Input should be less than or equal to 1"),
        ({"policies": {"hpa": {"target_utilization": []}}},
         "policies.hpa.target_utilization: list at least one value"),
        ({"policies": {"no-such-policy": {}}}, "policies.no-such-policy: unknown policy"),
        ({"traces": [{"path": "/nonexistent/trace.csv"}]}, "traces.0.path: "),
        ({"traces": [{"path": AZURE, "rate_scale": 0}]},
         "traces.0.rate_scale: Input should be greater than 0"),
        ({"pipelines": ["/nonexistent/pipeline.yaml"]}, "pipelines.0: "),
        ({"seed": [1]}, "seed: unknown key"),
        ({"traces": [{"path": AZURE}, {"path": AZURE}]},
         "traces: two entries are both labelled 'azure_llm_2023_conv_1s'"),
    ],
)  # fmt: skip
def test_a_malformed_spec_is_refused_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, Any], named: str
) -> None:
    spec = write_spec(tmp_path / "spec.yaml", small_spec(**change))
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{spec}: {named}" in err, err
    assert not (tmp_path / "out").exists()  # refused whole: nothing ran


def test_cells_expand_every_combination_in_a_fixed_order(tmp_path: Path) -> None:
    spec = small_spec(
        seeds=[0, 1],
        policies={"hpa": {"target_utilization": [0.6, 0.8], "tolerance": [0.1, 0.2]}, "oracle": {}},
    )
    got = cells(load_spec(write_spec(tmp_path / "spec.yaml", spec)))
    # 2 traces x 1 pipeline x (2 x 2 hpa knobs + 1 oracle) x 2 seeds
    assert len(got) == 2 * (4 + 1) * 2
    assert [c.key[2:] for c in got[:5]] == [
        ("hpa", '{"target_utilization": 0.6, "tolerance": 0.1}', "0"),
        ("hpa", '{"target_utilization": 0.6, "tolerance": 0.1}', "1"),
        ("hpa", '{"target_utilization": 0.6, "tolerance": 0.2}', "0"),
        ("hpa", '{"target_utilization": 0.6, "tolerance": 0.2}', "1"),
        ("hpa", '{"target_utilization": 0.8, "tolerance": 0.1}', "0"),
    ]  # fmt: skip
    assert len({c.key for c in got}) == len(got)


# ---------------------------------------------------------------------------------------------
# Cells and results.csv


def test_a_cell_scores_as_the_same_policy_does_in_a_backtest_of_several(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path / "spec.yaml", small_spec()))
    cell = next(c for c in cells(spec) if c.policy == "hpa")
    row = run_cell(cell)
    report = elastiscale.backtest(
        AGENT, AZURE, ["static-peak", {"name": "hpa", "params": cell.params}, "kpa"],
        rate_scale=4, end_s=600, warmup_s=60,
    )  # fmt: skip
    score = report.runs["hpa"].score
    assert row["error"] == ""
    assert row["slo_attainment"] == repr(score.slo_attainment)
    assert row["gpu_hours"] == repr(score.gpu_hours)
    assert row["p95_s"] == repr(score.p95_latency_s)


def test_a_failed_cell_is_reported_in_its_row_and_the_others_run(tmp_path: Path) -> None:
    traces = [
        {"path": AZURE, "rate_scale": 4, "end_s": 600},
        {"path": MOONCAKE, "end_s": 600, "warmup_s": 5000},  # warm-up longer than the replay
    ]
    spec = write_spec(tmp_path / "spec.yaml", small_spec(traces=traces))
    out = tmp_path / "out"
    assert main(["sweep", str(spec), "--out", str(out), "--workers", "1"]) == 0
    rows = read_rows(out / "results.csv")
    assert len(rows) == 8
    failed = [r for r in rows if r["error"]]
    assert {r["trace"] for r in failed} == {"mooncake_fast25_conversation_1s"}
    assert len(failed) == 4
    assert all("warmup_s = 5000" in r["error"] and r["gpu_hours"] == "" for r in failed)
    assert all(r["slo_attainment"] and r["gpu_hours"] for r in rows if not r["error"])
    summary = (out / "summary.md").read_text()
    assert "8 cells in results.csv, 4 failed" in summary
    assert (out / "frontier_azure_llm_2023_conv_1s_agent.png").stat().st_size > 0


def _run_cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "elastiscale.cli", "sweep", *args, "--no-progress"],
        env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_resuming_after_a_killed_sweep_redoes_no_finished_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec_path = write_spec(tmp_path / "spec.yaml", small_spec())
    out = tmp_path / "out"
    results = out / "results.csv"
    with _run_cli([str(spec_path), "--out", str(out), "--workers", "1"]) as child:  # pipes closed
        try:
            # Kill it (SIGKILL: no clean-up) once some but not all cells are written.
            while child.poll() is None and len(read_rows(results)) < 3:
                time.sleep(0.01)
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
    finished = {tuple(r[c] for c in COLUMNS[:5]) for r in read_rows(results)}
    assert 3 <= len(finished) < 8, "the sweep ended before it could be killed"
    with results.open("a") as f:
        f.write("azure_llm_2023_conv_1s,agent,hpa")  # a row cut short by the kill

    ran: list[tuple[str, ...]] = []

    def counting(cell: Any) -> dict[str, str]:
        ran.append(cell.key)
        return run_cell(cell)

    monkeypatch.setattr(runner, "run_cell", counting)
    outcome = runner.run_sweep(load_spec(spec_path), out, workers=1, progress=False)
    assert not set(ran) & finished
    assert outcome.ran == len(ran) == 8 - len(finished)
    assert outcome.skipped == len(finished)
    rows = read_rows(results)
    assert [tuple(r[c] for c in COLUMNS[:5]) for r in rows] == [
        c.key for c in cells(load_spec(spec_path))
    ]
    # Running it once more runs nothing.
    ran.clear()
    assert runner.run_sweep(load_spec(spec_path), out, workers=1, progress=False).ran == 0
    assert ran == []


def test_without_ray_the_error_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    spec = write_spec(tmp_path / "spec.yaml", small_spec())
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--ray", "auto"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "elastiscale sweep --ray needs the optional extra 'ray' (module 'ray' is not "
        "installed): pip install 'elastiscale[ray]'"
    ]


@pytest.mark.integration
def test_the_local_pool_and_a_local_ray_give_the_same_results(tmp_path: Path) -> None:
    if importlib.util.find_spec("ray") is None:
        reason = "ray is not installed (pip install 'elastiscale[ray]')"
        if REQUIRE_INTEGRATION:
            pytest.fail(reason + "; ELASTISCALE_REQUIRE_INTEGRATION is set")
        pytest.skip(reason)
    spec = str(write_spec(tmp_path / "spec.yaml", small_spec()))
    token = tmp_path / "ray_auth_token"
    token.write_text(secrets.token_hex(16))
    ray_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
               "RAY_ADDRESS": ""}  # fmt: skip
    pool = _run_cli([spec, "--out", str(tmp_path / "pool"), "--workers", "2"])
    _pool_out, pool_err = pool.communicate(timeout=300)
    assert pool.returncode == 0, pool_err
    on_ray = _run_cli([spec, "--out", str(tmp_path / "ray"), "--workers", "2", "--ray", "auto"],
                      env=ray_env)  # fmt: skip
    _ray_out, ray_err = on_ray.communicate(timeout=600)
    assert on_ray.returncode == 0, ray_err
    pool_rows = rows_without_time(tmp_path / "pool" / "results.csv")
    assert len(pool_rows) == 8 and all(r["error"] == "" for r in pool_rows)
    assert rows_without_time(tmp_path / "ray" / "results.csv") == pool_rows
    assert (tmp_path / "ray" / "summary.md").read_text() == (
        tmp_path / "pool" / "summary.md"
    ).read_text()


# ---------------------------------------------------------------------------------------------
# Frontiers


@pytest.mark.parametrize(
    ("points", "front"),
    [
        ([(10, 0.9), (8, 0.95), (12, 0.99)], [(8, 0.95), (12, 0.99)]),
        ([(5, 0.5), (5, 0.7), (6, 0.6)], [(5, 0.7)]),
        ([(1, 0.1)], [(1, 0.1)]),
    ],
)
def test_pareto_keeps_the_points_nothing_beats(
    points: list[tuple[float, float]], front: list[tuple[float, float]]
) -> None:
    assert frontier.pareto(points) == front


@given(st.lists(st.tuples(st.floats(0, 1e4), st.floats(0, 1)), min_size=1, max_size=30))
def test_pareto_points_are_undominated_and_cover_every_point(
    points: list[tuple[float, float]],
) -> None:
    front = frontier.pareto(points)
    assert all(g0 < g1 and a0 < a1 for (g0, a0), (g1, a1) in itertools.pairwise(front))
    for gpu, att in points:  # every point is matched or beaten by a frontier point
        assert any(g <= gpu and a >= att - 1e-9 for g, a in front)


@pytest.mark.parametrize(
    ("a", "b", "dominated"),
    [
        ([(10, 0.9), (20, 0.99)], [(12, 0.9), (20, 0.95)], True),
        ([(10, 0.9), (20, 0.99)], [(15, 0.96)], False),  # a is at 0.945 there
        ([(10, 0.9), (20, 0.99)], [(5, 0.5)], False),  # cheaper than a ever gets
        ([(10, 0.9), (20, 0.99)], [(40, 0.99)], True),  # a stays level beyond its last point
    ],
)
def test_dominance(a: list[Any], b: list[Any], dominated: bool) -> None:
    assert frontier.dominates(a, b)[0] is dominated


@pytest.mark.parametrize(
    ("front", "target", "gpu_hours"),
    [
        ([(10, 0.9), (20, 0.99)], 0.945, 15.0),
        ([(10, 0.96), (20, 0.99)], 0.95, 10.0),
        ([(10, 0.9), (20, 0.94)], 0.95, None),
    ],
)
def test_gpu_hours_to_reach_the_target(front: list[Any], target: float, gpu_hours: float) -> None:
    got = frontier.gpu_hours_to_reach(front, target)
    assert got == pytest.approx(gpu_hours) if gpu_hours is not None else got is None
