"""History from a real Prometheus: range queries in chunks, traces equal to the files they were
recorded from, export-trace, backtests from history, and the presets read back exactly from
recorded vLLM series. The recorded data is described in conftest.PromHistory."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import AZURE_TRACE, PromHistory
from elastiscale.adapters.prometheus.history import fetch_trace, iso
from elastiscale.adapters.prometheus.http import PromQLError
from elastiscale.adapters.prometheus.source import PrometheusMetricSource
from elastiscale.cli import build_parser, main
from elastiscale.config import load_config
from elastiscale.errors import TraceError
from elastiscale.testing.prometheus import LocalPrometheus
from elastiscale.trace import Trace, load_trace

pytestmark = pytest.mark.integration

AZURE_QUERY = 'es_ingress_rps{trace="azure"}'
AZURE_COLUMNS = {
    "input_tokens": 'es_input_tokens_rps{trace="azure"}',
    "output_tokens": 'es_output_tokens_rps{trace="azure"}',
}


def assert_same_trace(got: Trace, expected: Trace) -> None:
    """Exactly equal: bins, counts and every column, to the last bit."""
    assert got.bin_s == expected.bin_s
    assert np.array_equal(got.t_s, expected.t_s)
    assert np.array_equal(got.requests, expected.requests)
    assert set(got.columns) == set(expected.columns)
    for name, values in expected.columns.items():
        assert np.array_equal(got.columns[name], values), name


def azure_range(history: PromHistory) -> tuple[float, float]:
    return history.azure_start_s, history.azure_start_s + history.azure.duration_s


def test_fetched_history_equals_the_trace_file_it_was_made_from(
    prometheus: LocalPrometheus, prom_history: PromHistory
) -> None:
    start_s, end_s = azure_range(prom_history)
    got = fetch_trace(prometheus.url, AZURE_QUERY, start_s, end_s, 1.0, columns=AZURE_COLUMNS)
    assert_same_trace(got, prom_history.azure)


@pytest.mark.parametrize("max_points", [11_000, 997])
def test_long_ranges_come_in_chunks_under_the_server_limit(
    prometheus: LocalPrometheus, prom_history: PromHistory, max_points: int
) -> None:
    start_s = prom_history.long_start_s
    end_s = start_s + prom_history.long.duration_s  # 17,280 points: more than one query holds
    got = fetch_trace(
        prometheus.url,
        'es_ingress_rps{trace="long"}',
        start_s,
        end_s,
        10.0,
        max_points_per_query=max_points,
    )
    assert_same_trace(got, load_trace(prom_history.long_path))


def test_the_server_limit_is_real(prometheus: LocalPrometheus, prom_history: PromHistory) -> None:
    start_s = prom_history.long_start_s
    with pytest.raises(PromQLError, match="11,000 points"):
        fetch_trace(
            prometheus.url,
            'es_ingress_rps{trace="long"}',
            start_s,
            start_s + prom_history.long.duration_s,
            10.0,
            max_points_per_query=20_000,
        )


def test_gaps_and_several_series_are_errors_not_zeros(
    prometheus: LocalPrometheus, prom_history: PromHistory
) -> None:
    start_s, end_s = azure_range(prom_history)
    late_end_s = end_s + 600.0  # 5 min of lookback, then 5 min with no data
    with pytest.raises(TraceError, match=r"no value at 300 of 4103 points, first at"):
        fetch_trace(prometheus.url, AZURE_QUERY, start_s, late_end_s, 1.0)
    filled = fetch_trace(prometheus.url, AZURE_QUERY, start_s, late_end_s, 1.0, fill_gaps=True)
    assert np.all(filled.requests[-300:] == 0.0)
    with pytest.raises(TraceError, match="returned 2 series"):
        fetch_trace(prometheus.url, '{__name__=~"es_.*_tokens_rps"}', start_s, end_s, 1.0)
    with pytest.raises(PromQLError, match="bad_data"):
        fetch_trace(prometheus.url, "es_ingress_rps{", start_s, end_s, 1.0)


def test_export_trace_writes_the_shared_format(
    prometheus: LocalPrometheus,
    prom_history: PromHistory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    start_s, end_s = azure_range(prom_history)
    out = tmp_path / "azure.csv.gz"
    argv = ["export-trace", "--prometheus", prometheus.url, "--query", AZURE_QUERY]
    argv += ["--start", iso(start_s), "--end", iso(end_s), "--step", "1s", "--out", str(out)]
    argv += [f"--column={name}={query}" for name, query in AZURE_COLUMNS.items()]
    assert main(argv) == 0
    assert f"{len(prom_history.azure)} bins of 1 s" in capsys.readouterr().out
    assert_same_trace(load_trace(out), prom_history.azure)
    header = load_trace(out)
    assert list(header.columns) == ["input_tokens", "output_tokens"]


@pytest.mark.parametrize(
    ("query", "code", "message"),
    [
        ('{__name__=~"es_.*_tokens_rps"}', 2, "returned 2 series"),
        ("es_ingress_rps{", 2, "bad_data"),
    ],
)
def test_export_trace_refusals(
    prometheus: LocalPrometheus,
    prom_history: PromHistory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    query: str,
    code: int,
    message: str,
) -> None:
    start_s, end_s = azure_range(prom_history)
    argv = ["export-trace", "--prometheus", prometheus.url, "--query", query, "--step", "1s"]
    argv += ["--start", iso(start_s), "--end", iso(end_s), "--out", str(tmp_path / "x.csv")]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------------------------
# A backtest from history equals the backtest from the trace file

PIPELINE = {
    "pipeline": {
        "name": "rag",
        "slo": {"latency_p95_s": 20},
        "components": {
            "router": {
                "ingress": True,
                "capacity_per_replica": 20,
                "service_time_s": 0.05,
                "startup_s": 5,
                "replicas": {"min": 1, "max": 10},
            },
            "llm": {
                "capacity_per_replica": 2.0,
                "service_time_s": 3.0,
                "startup_s": 120,
                "gpus_per_replica": 1,
                "replicas": {"min": 1, "max": 40},
                "cost_per_hour": 4.0,
            },
        },
        "edges": [{"from": "router", "to": "llm", "fanout": 2.0}],
    }
}


def _comparable(report: dict[str, Any]) -> dict[str, Any]:
    """report.json without what names the source or measures wall time."""
    policies = {
        name: {k: v for k, v in entry.items() if k != "elapsed_s"}
        for name, entry in report["policies"].items()
    }
    trace = {k: v for k, v in report["trace"].items() if k not in ("name", "path", "file")}
    return {"policies": policies, "trace": trace, "settings": report["settings"]}


def test_backtest_from_history_equals_backtest_from_the_trace_file(
    prometheus: LocalPrometheus, prom_history: PromHistory
) -> None:
    from elastiscale.backtest.api import backtest, buildable_builtins

    policies = [p for p in buildable_builtins() if p in ("static-peak", "hpa", "kpa")][:2]
    if not policies:
        pytest.fail("no built-in policy can be built: the backtest has nothing to compare")
    config = load_config(PIPELINE)
    start_s, end_s = azure_range(prom_history)
    recorded = fetch_trace(prometheus.url, AZURE_QUERY, start_s, end_s, 1.0, columns=AZURE_COLUMNS)
    from_file = backtest(config, AZURE_TRACE, policies)
    from_history = backtest(config, recorded, policies)
    assert set(from_file.runs) == set(policies)
    assert _comparable(from_history.to_dict()) == _comparable(from_file.to_dict())


def test_backtest_command_reads_prometheus_history(
    prometheus: LocalPrometheus, prom_history: PromHistory, tmp_path: Path
) -> None:
    """`elastiscale backtest --prometheus URL --ingress-query Q` against `--trace FILE`."""
    parser, _ = build_parser()
    backtest_parser = next(
        action.choices["backtest"]
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    flags = {flag for action in backtest_parser._actions for flag in action.option_strings}
    if "--prometheus" not in flags or "--ingress-query" not in flags:
        pytest.skip("elastiscale backtest has no --prometheus/--ingress-query flags yet")
    pipeline = tmp_path / "pipeline.json"
    pipeline.write_text(json.dumps(PIPELINE))
    start_s, end_s = azure_range(prom_history)
    common = [str(pipeline), "--policy", "static-peak", "--no-plots"]
    assert (
        main(["backtest", *common, "--trace", str(AZURE_TRACE), "--out", str(tmp_path / "a")]) == 0
    )
    history = ["--prometheus", prometheus.url, "--ingress-query", AZURE_QUERY]
    history += ["--start", iso(start_s), "--end", iso(end_s), "--step", "1s"]
    assert main(["backtest", *common, *history, "--out", str(tmp_path / "b")]) == 0
    got = json.loads((tmp_path / "b" / "report.json").read_text())
    expected = json.loads((tmp_path / "a" / "report.json").read_text())
    assert _comparable(got)["policies"] == _comparable(expected)["policies"]


# --------------------------------------------------------------------------------------------
# Presets against recorded server metrics


def hist_source(**metrics: Any) -> PrometheusMetricSource:
    config = load_config(
        {
            "pipeline": {
                "name": "h",
                "slo": {"latency_p95_s": 10},
                "components": {
                    "hist": {
                        "ingress": True,
                        "capacity_per_replica": 5,
                        "service_time_s": 1,
                        "replicas": {"max": 4},
                    }
                },
            },
        }
    )
    return PrometheusMetricSource(config, {"rate_window_s": 60, **metrics})


def test_vllm_preset_reads_recorded_vllm_metrics_exactly(
    prometheus: LocalPrometheus, prom_history: PromHistory
) -> None:
    source = hist_source(url=prometheus.url, preset="vllm")
    now_s = prom_history.hist_end_s
    obs = source.observe(["hist"], now_s)["hist"]
    # Two instances, each: 5 finished requests, 100 + 50 tokens per 10 s; 3 running, 1 waiting.
    assert obs.demand_rps == 1.0
    assert obs.tokens_per_s == 30.0
    assert (obs.in_flight, obs.queue_length, obs.ready_replicas) == (6.0, 2.0, 2)
    assert obs.utilization == 0.5
    # Per 10 s, 4 of 5 requests under 1 s: the 95th percentile is 3/4 into (1, 5] s.
    assert obs.latency_p95_s == pytest.approx(4.0, rel=1e-9)
    assert obs.at_s == now_s  # the newest samples are exactly at the end of the recording
    # the recording has no TTFT / ITL histograms (test_prometheus_live reads them)
    assert obs.missing == {
        "desired_replicas": "not configured",
        "ttft_p95_s": "no data",
        "itl_p95_s": "no data",
    }
    assert source.http.requests_sent == 9  # one request per signal


def test_values_are_dated_by_their_samples_not_the_query_time(
    prometheus: LocalPrometheus, prom_history: PromHistory
) -> None:
    source = hist_source(url=prometheus.url, preset="vllm")
    now_s = prom_history.hist_end_s + 45.0
    obs = source.observe(["hist"], now_s)["hist"]
    assert obs.in_flight == 6.0
    assert obs.at_s == prom_history.hist_end_s
    assert obs.age_s(now_s) == 45.0


@pytest.mark.parametrize("series", ["azure", "long"])
def test_elastiscale_from_history_equals_elastiscale_from_the_trace_file(
    prometheus: LocalPrometheus, prom_history: PromHistory, series: str
) -> None:
    """The learning policy too (forecasters, gates, burst reserve) gets the same result from
    the same data read back from Prometheus as from the file: on the 1 s Azure recording, and on
    six hours of the 10 s `long` recording (rates of count / 10, multiplied back)."""
    from elastiscale.backtest.api import backtest

    config = load_config(PIPELINE)
    if series == "azure":
        start_s, end_s = azure_range(prom_history)
        recorded = fetch_trace(prometheus.url, AZURE_QUERY, start_s, end_s, 1.0)
        from_file_trace = load_trace(AZURE_TRACE)
        from_file_trace = Trace(
            "file", from_file_trace.t_s, from_file_trace.requests, from_file_trace.bin_s
        )
    else:
        start_s = prom_history.long_start_s
        end_s = start_s + 6 * 3600.0
        recorded = fetch_trace(prometheus.url, 'es_ingress_rps{trace="long"}', start_s, end_s, 10.0)
        from_file_trace = load_trace(prom_history.long_path).window(None, 6 * 3600.0)
    assert np.array_equal(recorded.requests, from_file_trace.requests)
    kwargs = {"rate_scale": 3.0, "ceiling": False}
    from_file = backtest(config, from_file_trace, ["elastiscale", "hpa"], **kwargs)
    from_history = backtest(config, recorded, ["elastiscale", "hpa"], **kwargs)
    for name in ("elastiscale", "hpa"):
        assert from_history.runs[name].score == from_file.runs[name].score, name
