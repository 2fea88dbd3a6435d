"""`elastiscale backtest`: the files it writes, the table it prints, and exit 2 with one line on
stderr for every kind of bad input (trace, pipeline file, policy, options)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from elastiscale.cli import main

ROOT = Path(__file__).resolve().parents[1]
AGENT = str(ROOT / "examples" / "pipelines" / "agent.yaml")
AZURE = ROOT / "examples" / "traces" / "azure_llm_2023_conv_1s.csv"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["backtest", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_writes_report_files_and_prints_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "out"
    code, out, err = run(
        [AGENT, "--trace", str(AZURE), "--end", "300", "--rate-scale", "4", "--out", str(out_dir)],
        capsys,
    )
    assert code == 0, err
    report = json.loads((out_dir / "report.json").read_text())
    assert {"static-peak", "oracle", "hpa", "kpa"} <= set(report["policies"])
    assert {"trace", "pipeline", "elapsed_s", "warmup_s"} <= set(report)
    assert report["trace"]["rate_scale"] == 4.0
    pngs = sorted(p.name for p in out_dir.glob("*.png"))
    assert "latency.png" in pngs and "slo_vs_gpu_hours.png" in pngs
    assert "replicas_writer.png" in pngs
    table = (out_dir / "report.md").read_text()
    for name in report["policies"]:
        assert f"| {name} " in out
        assert f"| {name} " in table
    assert "SLO attainment" in out and "GPU-hours" in out


def test_named_policies_only_and_no_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        [AGENT, "--trace", str(AZURE), "--end", "120", "--policy", "oracle", "--policy", "hpa",
         "--no-plots", "--out", str(tmp_path)],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert list(json.loads((tmp_path / "report.json").read_text())["policies"]) == [
        "oracle",
        "hpa",
    ]
    assert not list(tmp_path.glob("*.png"))


def test_gzipped_trace_is_read_transparently(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gz = tmp_path / "trace.csv.gz"
    gz.write_bytes(gzip.compress(AZURE.read_bytes()))
    code, _, err = run(
        [AGENT, "--trace", str(gz), "--end", "60", "--policy", "static-peak", "--no-plots",
         "--out", str(tmp_path / "out")],
        capsys,
    )  # fmt: skip
    assert code == 0, err


# The "Bad input" section, one case each: file, row and column named on one line.
BAD_TRACES = {
    "missing column": ("t_seconds,count\n0,1\n1,2\n", "row 1: missing column requests"),
    "non-numeric count": ("t_seconds,requests\n0,1\n1,lots\n", "row 3, column requests: not a"),
    "negative count": ("t_seconds,requests\n0,1\n1,-2\n", "row 3, column requests: negative"),
    "NaN": ("t_seconds,requests\n0,1\n1,nan\n2,1\n", "row 3, column requests: nan is not finite"),
    "unsorted timestamps": (
        "t_seconds,requests\n0,1\n2,1\n1,1\n",
        "row 4, column t_seconds: timestamp 1 is out of order",
    ),
    "duplicated timestamps": (
        "t_seconds,requests\n0,1\n1,1\n1,1\n",
        "row 4, column t_seconds: timestamp 1 is duplicated",
    ),
    "empty body": ("t_seconds,requests\n", "no data rows after the header"),
    "empty file": ("", "empty file"),
}


@pytest.mark.parametrize("case", list(BAD_TRACES))
def test_bad_trace_exits_2_with_one_line_naming_file_row_and_column(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, message = BAD_TRACES[case]
    path = tmp_path / "bad.csv"
    path.write_text(text)
    code, out, err = run([AGENT, "--trace", str(path), "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(str(path)), lines[0]
    assert message in lines[0]
    assert out == ""
    assert not (tmp_path / "o").exists()


def test_bad_gzip_trace_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.csv.gz"
    path.write_bytes(b"\x1f\x8b not really gzip")
    code, _, err = run([AGENT, "--trace", str(path)], capsys)
    assert code == 2
    assert err.strip() == f"{path}: not a valid gzip file: " + err.strip().split(": ", 2)[2]


def test_missing_trace_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run([AGENT, "--trace", str(tmp_path / "absent.csv")], capsys)
    assert code == 2
    assert err.startswith(f"{tmp_path / 'absent.csv'}: cannot read")


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ("predictive-someday", "unknown policy 'predictive-someday'"),
        ("somewhere.else:Policy", "policy 'somewhere.else:Policy' cannot be loaded"),
    ],
)
def test_policy_that_cannot_be_built_exits_2(
    policy: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run([AGENT, "--trace", str(AZURE), "--policy", policy], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert message in err


def test_bad_pipeline_file_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "pipeline:\n  name: x\n  slo: {latency_p95_s: 10}\n  components:\n"
        "    a: {ingress: true, capacity_per_replica: -1, service_time_s: 1,"
        " replicas: {max: 2}}\n"
    )
    code, _, err = run([str(path), "--trace", str(AZURE)], capsys)
    assert code == 2
    assert err.strip() == (
        f"{path}: pipeline.components.a.capacity_per_replica: "
        "Input should be greater than 0 (got -1)"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--time-scale", "0"], "elastiscale backtest: time_scale = 0, must be > 0"),
        (["--start", "500", "--end", "100"], "start_s = 500 must be before end_s = 100"),
        (["--start", "99999"], "no trace bin starts in [99999, inf) s: "),
        (["--warmup", "99999"], "warmup_s = 99999 must be >= 0 and shorter than"),
    ],
)
def test_inconsistent_options_exit_2_with_one_line(
    options: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run([AGENT, "--trace", str(AZURE), *options], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert message in err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ([], "give the ingress history as --trace FILE or --prometheus URL"),
        (
            ["--trace", str(AZURE), "--prometheus", "http://127.0.0.1:9"],
            "give the ingress history as --trace FILE or --prometheus URL",
        ),
        (["--prometheus", "http://127.0.0.1:9"], "--prometheus needs --ingress-query PROMQL"),
        (
            ["--prometheus", "http://127.0.0.1:9", "--ingress-query", "up", "--start", "now-1h"],
            "--prometheus needs --start and --end",
        ),
        (
            ["--prometheus", "http://127.0.0.1:9", "--ingress-query", "up", "--start",
             "yesterday", "--end", "now"],
            "'yesterday' is not a time",
        ),
        (
            ["--trace", str(AZURE), "--start", "now-7d"],
            "--start = 'now-7d': with --trace, a number of seconds",
        ),
    ],
)  # fmt: skip
def test_history_source_options_are_checked(
    options: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run([AGENT, *options], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("elastiscale backtest: ")
    assert message in lines[0]


def test_unreachable_prometheus_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    # Port 9 (discard) has no server here: the connection is refused at once.
    code, _, err = run(
        [AGENT, "--prometheus", "http://127.0.0.1:9", "--ingress-query", "up",
         "--start", "now-1h", "--end", "now", "--timeout", "2s"],
        capsys,
    )  # fmt: skip
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("elastiscale backtest: http://127.0.0.1:9")


def test_scenario_file_drifts_the_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = ROOT / "examples" / "scenarios" / "writer-rollout.yaml"
    base = [AGENT, "--trace", str(AZURE), "--end", "1200", "--rate-scale", "4", "--policy", "hpa",
            "--no-plots", "--no-ceiling"]  # fmt: skip
    code, _, err = run([*base, "--scenario", str(scenario), "--out", str(tmp_path / "d")], capsys)
    assert code == 0, err
    drifted = json.loads((tmp_path / "d" / "report.json").read_text())
    assert drifted["settings"]["scenario"]["name"] == "writer-rollout"
    code, _, err = run([*base, "--out", str(tmp_path / "p")], capsys)
    plain = json.loads((tmp_path / "p" / "report.json").read_text())
    assert "scenario" not in plain["settings"]
    hpa = "hpa"
    assert drifted["policies"][hpa]["slo_attainment"] < plain["policies"][hpa]["slo_attainment"]


def test_canary_example_backtests_each_variant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline = ROOT / "examples" / "pipelines" / "rag-canary.yaml"
    scenario = ROOT / "examples" / "scenarios" / "canary-rollout.yaml"
    code, _, err = run(
        [str(pipeline), "--trace", str(AZURE), "--end", "1800", "--policy", "hpa", "--no-plots",
         "--no-ceiling", "--scenario", str(scenario), "--out", str(tmp_path)],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["settings"]["scenario"]["name"] == "canary-rollout"
    assert {"llm-stable", "llm-canary"} <= set(report["policies"]["hpa"]["per_component"])


def test_bad_scenario_file_is_one_line_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("scenario:\n  drift:\n    - {at_s: 10, component: writr, startup_s: 300}\n")
    code, _, err = run([AGENT, "--trace", str(AZURE), "--scenario", str(bad)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert "scenario.drift[0].component: unknown component 'writr'" in lines[0]
