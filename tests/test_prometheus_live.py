"""The Prometheus source live: a real server scraping prometheus-client exporters on 127.0.0.1
that expose vLLM's metric names; escaping through the real PromQL parser; and
`elastiscale validate --check-sources`."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import Exporter, wait_for
from elastiscale.adapters.prometheus.http import ConnectionParams, PrometheusHTTP
from elastiscale.adapters.prometheus.promql import quote, regex_alternation
from elastiscale.adapters.prometheus.source import PrometheusMetricSource
from elastiscale.cli import main
from elastiscale.config import Config, load_config
from elastiscale.observations import Observation
from elastiscale.testing.prometheus import LocalPrometheus, free_port

pytestmark = pytest.mark.integration

NASTY = 'x"} or vector(1) #'


def serve_vllm(exporter: Exporter, models: Mapping[str, tuple[float, float]]) -> None:
    """vLLM's metrics for each model name: (running, waiting) requests; counters that do not
    move (a rate of exactly 0) and a latency histogram with no observations."""
    labels = ["model_name"]
    running = exporter.gauge("vllm:num_requests_running", labels)
    waiting = exporter.gauge("vllm:num_requests_waiting", labels)
    cache = exporter.gauge("vllm:gpu_cache_usage_perc", labels)
    names = ("vllm:request_success", "vllm:prompt_tokens", "vllm:generation_tokens")
    counters = [exporter.counter(n, labels) for n in names]
    latency = exporter.histogram("vllm:e2e_request_latency_seconds", labels, buckets=(1, 5))
    ttft = exporter.histogram("vllm:time_to_first_token_seconds", labels, buckets=(0.5, 2))
    itl = exporter.histogram("vllm:time_per_output_token_seconds", labels, buckets=(0.05, 0.1))
    for model, (busy, queued) in models.items():
        running.labels(model).set(busy)
        waiting.labels(model).set(queued)
        cache.labels(model).set(0.25)
        for counter in counters:
            counter.labels(model).inc(10)
        latency.labels(model)
        ttft.labels(model)
        itl.labels(model)


def pipeline_config(names: list[str]) -> Config:
    components = {
        name: {
            "ingress": i == 0,
            "capacity_per_replica": 2,
            "service_time_s": 1,
            "replicas": {"max": 20},
        }
        for i, name in enumerate(names)
    }
    pipeline = {"name": "live", "slo": {"latency_p95_s": 10}, "components": components}
    return load_config({"pipeline": pipeline})


def test_live_scrape_reads_every_signal_with_its_timestamp(
    prometheus: LocalPrometheus, exporters: list[Exporter]
) -> None:
    serve_vllm(exporters[0], {"a": (3, 2)})  # two replicas of "a"
    serve_vllm(exporters[1], {"a": (4, 3)})
    serve_vllm(exporters[2], {"b.*": (11, 0), "bx": (99, 0), NASTY: (5, 1)})
    names = ["a", "b.*", NASTY]
    source = PrometheusMetricSource(
        pipeline_config(names),
        {"url": prometheus.url, "preset": "vllm", "rate_window_s": 2, "staleness_s": 10},
    )
    wait_for(
        lambda: all(o.demand_rps is not None for o in source.observe(names, time.time()).values()),
        what="two scrapes of every exporter",
    )
    sent = source.http.requests_sent
    now_s = time.time()
    obs = source.observe(names, now_s)
    assert source.http.requests_sent - sent == 9  # one request per signal, for all components
    a = obs["a"]
    assert (a.in_flight, a.queue_length, a.ready_replicas) == (7.0, 5.0, 2)
    assert (a.demand_rps, a.tokens_per_s, a.utilization) == (0.0, 0.0, 0.25)  # real zeros
    assert a.missing["latency_p95_s"] == "nan"  # a quantile over no requests
    assert a.missing["ttft_p95_s"] == a.missing["itl_p95_s"] == "nan"
    assert now_s - 2.0 <= a.at_s <= now_s
    assert (obs["b.*"].in_flight, obs["b.*"].ready_replicas) == (11.0, 1)  # not bx's 99
    assert (obs[NASTY].in_flight, obs[NASTY].queue_length) == (5.0, 1.0)


def test_a_series_that_disappears_is_no_data(
    prometheus: LocalPrometheus, exporters: list[Exporter]
) -> None:
    serve_vllm(exporters[2], {"gone": (2, 0)})
    source = PrometheusMetricSource(
        pipeline_config(["gone"]), {"url": prometheus.url, "preset": "vllm", "rate_window_s": 2}
    )

    def observe() -> Observation:
        return source.observe(["gone"], time.time())["gone"]

    wait_for(lambda: observe().in_flight == 2.0, what="the exporter to be scraped")
    exporters[2].down = True  # the next scrape fails, and Prometheus marks its series stale
    # Gauges go at once; a rate keeps the samples of its window (2 s) until they age out.
    wait_for(
        lambda: not observe().to_dict().keys() - {"component", "at_s", "missing"},
        what="every signal to go",
    )
    missing = observe().missing
    assert missing["in_flight"] == "no data" and missing["demand_rps"] == "no data"
    assert missing["ready_replicas"] == "no data"


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@example(values=[""], other="$0")
@example(values=['a"} or vector(1) #', "b.*"], other="bx")
@given(st.lists(st.text(max_size=12), min_size=1, max_size=4), st.text(max_size=12))
def test_escaped_values_mean_themselves_to_the_real_parser(
    prometheus: LocalPrometheus, values: list[str], other: str
) -> None:
    """A quoted value comes back unchanged; an alternation matches exactly its values.

    The value is set as a label with label_replace, whose replacement expands `$1`-style
    references; `$$` is its literal dollar, so the test doubles them (escaping by `quote` is
    about the string literal, and queries never pass label values as replacements)."""
    http = PrometheusHTTP(ConnectionParams(url=prometheus.url))
    regex = regex_alternation(values)
    for value in [*values, other]:
        replacement = quote(value.replace("$", "$$"))
        query = (
            f'label_replace(label_replace(vector(1), "v", {replacement}, "", ""), '
            f'"m", "yes", "v", {regex})'
        )
        labels = http.instant(query).series[0][0]
        assert labels.get("v", "") == value
        assert (labels.get("m") == "yes") == (value in values)
    http.close()


# --------------------------------------------------------------------------------------------
# validate --check-sources


def write_config(path: Path, metrics: dict[str, object]) -> Path:
    config = {
        "pipeline": {
            "name": "p",
            "slo": {"latency_p95_s": 30},
            "components": {
                "router": {
                    "ingress": True,
                    "capacity_per_replica": 50,
                    "service_time_s": 0.05,
                    "replicas": {"max": 4},
                },
                "llm": {"capacity_per_replica": 1.5, "service_time_s": 4, "replicas": {"max": 8}},
            },
            "edges": [{"from": "router", "to": "llm", "fanout": 3}],
        },
        "metrics": {"type": "prometheus", **metrics},
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def test_check_sources_names_each_bad_query(
    prometheus: LocalPrometheus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = "histogram_quantile(0.95, sum by (le, $by) (rate(x{$selector}[$window]))"
    path = write_config(
        tmp_path / "p.yaml",
        {
            "url": prometheus.url,
            "preset": "vllm",
            "components": {
                "llm": {"queries": {"latency_p95_s": broken}},
                "router": {"queries": {"in_flight": "x{$selector}[$window]"}},
            },
        },
    )
    assert main(["validate", str(path), "--check-sources"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"{path}: metrics: component router, signal in_flight: matrix")
    assert lines[1].startswith(f"{path}: metrics: component llm, signal latency_p95_s: bad_data")


def test_check_sources_passes_good_queries_even_without_data(
    prometheus: LocalPrometheus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path / "p.yaml", {"url": prometheus.url, "preset": "triton"})
    assert main(["validate", str(path), "--check-sources"]) == 0
    assert ": ok" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        (
            {"components": {"router": {"preset": None}}},
            "metrics: component router, signal demand_rps: no query",
        ),
        ({"url": "unreachable"}, "cannot connect"),
    ],
)
def test_check_sources_reports_sources_that_cannot_work(
    prometheus: LocalPrometheus,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    metrics: dict[str, object],
    message: str,
) -> None:
    url = f"http://127.0.0.1:{free_port()}" if metrics.get("url") else prometheus.url
    path = write_config(tmp_path / "p.yaml", {"preset": "vllm", **metrics, "url": url})
    assert main(["validate", str(path), "--check-sources"]) == 2
    err = capsys.readouterr().err
    assert message in err


def test_vllm_time_to_first_token_and_inter_token_latency_from_its_histograms(
    prometheus: LocalPrometheus, exporters: list[Exporter]
) -> None:
    """TTFT and ITL p95 as histogram_quantile reads vLLM's histograms; the V1 engine's
    `vllm:inter_token_latency_seconds` is read as well as the older name."""
    labels = ["model_name"]
    ttft = exporters[0].histogram("vllm:time_to_first_token_seconds", labels, buckets=(0.5, 2))
    itl = exporters[1].histogram("vllm:inter_token_latency_seconds", labels, buckets=(0.05, 0.1))
    source = PrometheusMetricSource(
        pipeline_config(["ttft-model"]),
        {"url": prometheus.url, "preset": "vllm", "rate_window_s": 2, "staleness_s": 10},
    )

    def observe_more() -> bool:
        # every request in (0.5, 2] s to its first token, every token gap in (0.05, 0.1] s
        for _ in range(5):
            ttft.labels("ttft-model").observe(1.0)
            itl.labels("ttft-model").observe(0.07)
        obs = source.observe(["ttft-model"], time.time())["ttft-model"]
        return obs.ttft_p95_s is not None and obs.itl_p95_s is not None

    wait_for(observe_more, what="rates of both histograms")
    obs = source.observe(["ttft-model"], time.time())["ttft-model"]
    # linear interpolation inside the bucket holding the 95th percentile
    assert obs.ttft_p95_s is not None and 0.5 < obs.ttft_p95_s <= 2.0
    assert obs.itl_p95_s is not None and 0.05 < obs.itl_p95_s <= 0.1
