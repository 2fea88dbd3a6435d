"""Prometheus costs, against a local server started here (127.0.0.1, temporary data):

1. history: time to fetch 7 days at 10 s (60,480 points, 6 range queries of at most 11,000
   points each) for 6 series with `fetch_trace`, the series loaded with promtool first;
2. live: the cost of one tick of `PrometheusMetricSource.observe` for 50 vLLM components
   (2 replicas each, scraped from prometheus-client endpoints every second), batched (one query
   per signal) against unbatched (one query per component and signal).

    .venv/bin/python benchmarks/prometheus_fetch.py [--days 7] [--series 6] [--components 50]

Prints the figures; needs the `prometheus` and `promtool` binaries.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from elastiscale.adapters.prometheus.history import fetch_trace
from elastiscale.adapters.prometheus.source import PrometheusMetricSource
from elastiscale.config import Config, load_config
from elastiscale.observations import Observation
from elastiscale.testing.prometheus import (
    Family,
    LocalPrometheus,
    MetricsEndpoint,
    Series,
    write_openmetrics,
)

HISTORY_START_S = 1_700_000_000.0
STEP_S = 10.0


def history_figures(workdir: Path, days: float, series: int) -> None:
    points = int(days * 86400 / STEP_S)
    times = HISTORY_START_S + STEP_S * np.arange(1, points + 1)
    rng = np.random.default_rng(0)
    families = [
        Family(
            "bench_rps",
            "gauge",
            [
                Series({"series": f"s{i}"}, times, rng.poisson(50, points) / STEP_S)
                for i in range(series)
            ],
        )
    ]
    path = write_openmetrics(workdir / "history.om", families)
    began = time.perf_counter()
    server = LocalPrometheus(workdir / "history-server", history=[path])
    server.load_history()
    loaded_s = time.perf_counter() - began
    with server:
        end_s = HISTORY_START_S + points * STEP_S
        runs = []
        for _ in range(3):
            began = time.perf_counter()
            for i in range(series):
                trace = fetch_trace(
                    server.url,
                    f'bench_rps{{series="s{i}"}}',
                    HISTORY_START_S,
                    end_s,
                    STEP_S,
                    progress=False,
                )
                assert len(trace) == points
            runs.append(time.perf_counter() - began)
    chunks = -(-points // 11_000)
    print(f"history: {series} series x {days:g} days at {STEP_S:g} s = {series * points:,} points")
    print(f"  promtool load (not part of the fetch): {loaded_s:.1f} s")
    print(
        f"  fetch_trace, {series * chunks} range queries: median {statistics.median(runs):.2f} s "
        f"(runs: {', '.join(f'{r:.2f}' for r in runs)}), "
        f"{series * points / statistics.median(runs):,.0f} points/s"
    )


def vllm_endpoint(models: list[str], running: float) -> MetricsEndpoint:
    from prometheus_client import Counter, Gauge, Histogram

    endpoint = MetricsEndpoint()
    reg, labels = endpoint.registry, ["model_name"]
    gauges = [
        Gauge(n, n, labels, registry=reg)
        for n in (
            "vllm:num_requests_running",
            "vllm:num_requests_waiting",
            "vllm:gpu_cache_usage_perc",
        )
    ]
    counters = [
        Counter(n, n, labels, registry=reg)
        for n in ("vllm:request_success", "vllm:prompt_tokens", "vllm:generation_tokens")
    ]
    latency = Histogram(
        "vllm:e2e_request_latency_seconds", "e2e", labels, registry=reg, buckets=(0.5, 1, 5, 10)
    )
    for model in models:
        for gauge in gauges:
            gauge.labels(model).set(running)
        for counter in counters:
            counter.labels(model).inc(100)
        latency.labels(model).observe(2.0)
    return endpoint


def pipeline(names: list[str]) -> Config:
    components = {
        n: {
            "ingress": i == 0,
            "capacity_per_replica": 2,
            "service_time_s": 1,
            "replicas": {"max": 50},
        }
        for i, n in enumerate(names)
    }
    return load_config(
        {"pipeline": {"name": "bench", "slo": {"latency_p95_s": 10}, "components": components}}
    )


def live_figures(workdir: Path, components: int, ticks: int = 20) -> None:
    names = [f"model-{i:02d}" for i in range(components)]
    endpoints = [vllm_endpoint(names, 3.0), vllm_endpoint(names, 4.0)]
    server = LocalPrometheus(workdir / "live-server", scrape_interval_s=1.0)
    server.workdir.mkdir(parents=True, exist_ok=True)
    server.set_targets({e.address: {} for e in endpoints})
    config = pipeline(names)
    try:
        with server:
            for batch in (True, False):
                source = PrometheusMetricSource(
                    config,
                    {"url": server.url, "preset": "vllm", "batch": batch, "rate_window_s": 30},
                )
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    got = source.observe(names, time.time())
                    if all(o.demand_rps is not None for o in got.values()):
                        break
                    time.sleep(0.5)
                else:
                    raise SystemExit("no data scraped within 60 s")
                tick_s: list[float] = []
                sent = source.http.requests_sent
                for _ in range(ticks):
                    began = time.perf_counter()
                    got = source.observe(names, time.time())
                    tick_s.append(time.perf_counter() - began)
                per_tick = (source.http.requests_sent - sent) / ticks
                _check(got)
                label = "batched  " if batch else "unbatched"
                tick_s.sort()
                print(
                    f"live, {components} components x 2 replicas, {label}: "
                    f"{per_tick:.0f} requests/tick, "
                    f"median {1000 * statistics.median(tick_s):.1f} ms, "
                    f"p95 {1000 * tick_s[int(0.95 * (len(tick_s) - 1))]:.1f} ms per tick"
                )
                source.close()
    finally:
        for endpoint in endpoints:
            endpoint.stop()


def _check(observations: dict[str, Observation]) -> None:
    for obs in observations.values():
        if obs.in_flight != 7.0 or obs.ready_replicas != 2:
            raise SystemExit(f"unexpected observation: {obs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--series", type=int, default=6)
    parser.add_argument("--components", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        history_figures(Path(tmp), args.days, args.series)
        live_figures(Path(tmp), args.components)


if __name__ == "__main__":
    main()
