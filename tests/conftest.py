"""Shared fixtures.

Prometheus: `prometheus` is one real server for the whole session (127.0.0.1, a free port, a
temporary data directory), started on first use with recorded history already loaded (see
`PromHistory`) and scraping `exporters` every 0.25 s. `prometheus_factory` starts extra servers
for tests that stop them.

The exporters (prometheus-client registries served on 127.0.0.1) exist before the server starts
and stay for the session, because Prometheus publishes changes of its targets only every 5 s:
a target added later would cost each test that wait. Tests create their own series in them
(`Exporter.gauge`, `.counter`, `.histogram` return the existing metric when asked again) with
label values of their own, and can take an exporter down (it answers 503) to see its series go.

Tests that need the server skip when the `prometheus` binary is absent, unless
ELASTISCALE_REQUIRE_PROMETHEUS is set (as in CI), where a missing binary fails them.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import Counter, Gauge, Histogram

from elastiscale.testing.prometheus import (
    Family,
    LocalPrometheus,
    MetricsEndpoint,
    Series,
    write_openmetrics,
)
from elastiscale.trace import Trace, load_trace

REPO = Path(__file__).resolve().parent.parent
AZURE_TRACE = REPO / "examples" / "traces" / "azure_llm_2023_conv_1s.csv"

#: Scrape interval of the session server: short, so live tests wait little.
SCRAPE_INTERVAL_S = 0.25


def require_prometheus() -> None:
    """Skip without the binaries (or fail, when ELASTISCALE_REQUIRE_PROMETHEUS or
    ELASTISCALE_REQUIRE_INTEGRATION is set)."""
    missing = [b for b in ("prometheus", "promtool") if shutil.which(b) is None]
    if missing:
        message = f"{' and '.join(missing)} not installed (apt-get install -y prometheus)"
        if os.environ.get("ELASTISCALE_REQUIRE_INTEGRATION") or os.environ.get(
            "ELASTISCALE_REQUIRE_PROMETHEUS"
        ):
            pytest.fail(message + "; integration servers are required here")
        pytest.skip(message)


# --------------------------------------------------------------------------------------------
# Recorded history loaded into the session server


@dataclass(frozen=True)
class PromHistory:
    """What the session server holds from before it started, and what it should answer.

    - `es_ingress_rps{trace="azure"}` (+ `es_input_tokens_rps`, `es_output_tokens_rps`): the
      bundled Azure trace as per-second rates, bin i's value stamped at the bin's end,
      azure_start_s + i + 1; so `fetch_trace` over [azure_start_s, azure_start_s + 3480) must
      give back `azure` exactly.
    - `es_ingress_rps{trace="long"}`: `long`, two days of 10 s bins (the Azure counts tiled),
      more points than one range query may return.
    - vLLM series for model_name="hist" on two instances, 10 min every 10 s, ending at
      hist_end_s: each instance runs 3 and queues 1 request, finishes 5 requests, 100 prompt
      and 50 generation tokens per 10 s; per 10 s, latencies: 4 under 1 s, 1 in (1, 5] s.
    - `es_nan{component="hist"}`: NaN.
    """

    azure: Trace
    azure_start_s: float
    long: Trace
    long_path: Path
    long_start_s: float
    hist_end_s: float


HISTORY_BASE_S = 1_600_000_000.0  # 2020-09-13T12:26:40Z


def _build_history(workdir: Path) -> tuple[PromHistory, Path]:
    azure = load_trace(AZURE_TRACE)
    azure_start_s = HISTORY_BASE_S
    end_times = azure_start_s + azure.t_s + azure.bin_s
    families = [
        Family(
            "es_ingress_rps",
            "gauge",
            [Series({"trace": "azure"}, end_times, azure.rate_rps())],
        ),
        *(
            Family(
                f"es_{column}_rps",
                "gauge",
                [Series({"trace": "azure"}, end_times, azure.columns[column] / azure.bin_s)],
            )
            for column in ("input_tokens", "output_tokens")
        ),
    ]
    long_start_s = HISTORY_BASE_S + 4 * 3600
    bins = 2 * 8640
    long_counts = np.resize(azure.requests, bins)
    long = Trace("long", np.arange(bins) * 10.0, long_counts, 10.0)
    long_path = workdir / "long.csv"
    long_path.write_text(
        "t_seconds,requests\n"
        + "".join(f"{int(t)},{int(c)}\n" for t, c in zip(long.t_s, long.requests, strict=True))
    )
    families[0] = Family(
        "es_ingress_rps",
        "gauge",
        [
            *families[0].series,
            Series({"trace": "long"}, long_start_s + long.t_s + 10.0, long_counts / 10.0),
        ],
    )
    hist_end_s = long_start_s + bins * 10.0 + 3600
    times = hist_end_s - np.arange(60, -1, -1) * 10.0
    steps = np.arange(times.size, dtype=float)
    instances = ("i1", "i2")

    def per_instance(values: np.ndarray, **extra: str) -> list[Series]:
        return [
            Series({"model_name": "hist", "instance": i, **extra}, times, values) for i in instances
        ]

    families += [
        Family("vllm:num_requests_running", "gauge", per_instance(np.full(times.size, 3.0))),
        Family("vllm:num_requests_waiting", "gauge", per_instance(np.full(times.size, 1.0))),
        Family("vllm:gpu_cache_usage_perc", "gauge", per_instance(np.full(times.size, 0.5))),
        Family("vllm:request_success", "counter", per_instance(5 * steps)),
        Family("vllm:prompt_tokens", "counter", per_instance(100 * steps)),
        Family("vllm:generation_tokens", "counter", per_instance(50 * steps)),
        Family(
            "vllm:e2e_request_latency_seconds_bucket",
            "gauge",
            [
                *per_instance(4 * steps, le="1"),
                *per_instance(5 * steps, le="5"),
                *per_instance(5 * steps, le="+Inf"),
            ],
        ),
        Family("vllm:e2e_request_latency_seconds_count", "gauge", per_instance(5 * steps)),
        Family(
            "es_nan", "gauge", [Series({"component": "hist"}, times, np.full(times.size, np.nan))]
        ),
    ]
    path = write_openmetrics(workdir / "history.om", families)
    history = PromHistory(
        azure=azure,
        azure_start_s=azure_start_s,
        long=long,
        long_path=long_path,
        long_start_s=long_start_s,
        hist_end_s=hist_end_s,
    )
    return history, path


@pytest.fixture(autouse=True)
def _no_stale_log_handlers() -> Iterator[None]:
    """Take off the root logger the stream handlers a test's code put there (the daemon's
    `setup_logging`, run in-process, writes to that test's captured stderr, which is closed
    afterwards), so a later test's log records never go to a closed stream."""
    root = logging.getLogger()
    before = {id(h) for h in root.handlers}
    yield
    for handler in list(root.handlers):
        if id(handler) not in before and type(handler) is logging.StreamHandler:
            root.removeHandler(handler)


@pytest.fixture(scope="session")
def _prometheus_with_history(
    tmp_path_factory: pytest.TempPathFactory, _exporters: list[Exporter]
) -> Iterator[tuple[LocalPrometheus, PromHistory]]:
    require_prometheus()
    workdir = tmp_path_factory.mktemp("prometheus")
    history, path = _build_history(workdir)
    server = LocalPrometheus(workdir, history=[path], scrape_interval_s=SCRAPE_INTERVAL_S)
    server.set_targets({e.address: {} for e in _exporters})
    server.start()
    try:
        yield server, history
    finally:
        server.stop()


@pytest.fixture
def prometheus(_prometheus_with_history: tuple[LocalPrometheus, PromHistory]) -> LocalPrometheus:
    """The session's Prometheus (running; a test that pauses it must resume it)."""
    server = _prometheus_with_history[0]
    server.resume()
    return server


@pytest.fixture
def prom_history(_prometheus_with_history: tuple[LocalPrometheus, PromHistory]) -> PromHistory:
    return _prometheus_with_history[1]


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[..., LocalPrometheus]]:
    """Start extra servers (stopped after the test), for tests that stop or freeze one."""
    require_prometheus()
    started: list[LocalPrometheus] = []

    def start(**kwargs: object) -> LocalPrometheus:
        server = LocalPrometheus(
            tmp_path / f"prom{len(started)}", scrape_interval_s=SCRAPE_INTERVAL_S, **kwargs
        )  # type: ignore[arg-type]
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


# --------------------------------------------------------------------------------------------
# Exporters


class Exporter(MetricsEndpoint):
    """A `MetricsEndpoint` whose metrics tests create by name: asking again for a name gives
    the metric already made, so tests sharing the session's exporters do not collide."""

    def __init__(self) -> None:
        super().__init__()
        self._metrics: dict[str, Any] = {}

    def _get(self, kind: type, name: str, labels: Iterable[str], **kwargs: Any) -> Any:
        if name not in self._metrics:
            self._metrics[name] = kind(name, name, list(labels), registry=self.registry, **kwargs)
        return self._metrics[name]

    def gauge(self, name: str, labels: Iterable[str]) -> Gauge:
        got: Gauge = self._get(Gauge, name, labels)
        return got

    def counter(self, name: str, labels: Iterable[str]) -> Counter:
        got: Counter = self._get(Counter, name, labels)
        return got

    def histogram(self, name: str, labels: Iterable[str], buckets: tuple[float, ...]) -> Histogram:
        got: Histogram = self._get(Histogram, name, labels, buckets=buckets)
        return got


EXPORTERS = 3


@pytest.fixture(scope="session")
def _exporters() -> Iterator[list[Exporter]]:
    started = [Exporter() for _ in range(EXPORTERS)]
    yield started
    for made in started:
        made.stop()


@pytest.fixture
def exporters(
    _exporters: list[Exporter], _prometheus_with_history: tuple[LocalPrometheus, PromHistory]
) -> Iterator[list[Exporter]]:
    """The session's exporters, scraped by `prometheus`; any taken down is back up after."""
    yield _exporters
    for made in _exporters:
        made.down = False


#: Waits are upper bounds for something that should happen; on a loaded 2-core machine real
#: processes (Prometheus, the daemon) run several times slower, so every bound is stretched.
WAIT_SLACK = 3.0


def wait_for(predicate: Callable[[], bool], timeout_s: float = 15.0, what: str = "") -> None:
    """Poll `predicate` every 0.1 s until it holds; fail the test after `timeout_s` (stretched
    by `WAIT_SLACK`)."""
    timeout_s *= WAIT_SLACK
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout_s:g} s waiting for {what or predicate}")
