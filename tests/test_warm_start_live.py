"""The daemon's warm start against the test Prometheus: at start it reads `control.history_s`
of its metric source's history back (chunked range queries) and hands it to `elastiscale`,
which then decides as a policy that watched that history live, not as one that saw nothing.
The recorded data is described in conftest.PromHistory (`es_ingress_rps{trace="long"}`: two
days of 10 s bins)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from conftest import PromHistory
from elastiscale.adapters.prometheus.source import PrometheusMetricSource
from elastiscale.config import Config, load_config
from elastiscale.controllers.feedforward import ElastiscalePolicy
from elastiscale.daemon.runtime import build_runtime
from elastiscale.testing.prometheus import LocalPrometheus

pytestmark = pytest.mark.integration

LONG_QUERY = 'es_ingress_rps{trace="long"}'
PARAMS = {"self_calibration": False, "refit": "inline", "forecaster": "holt"}


def config(url: str, **control: Any) -> Config:
    return load_config(
        {
            "pipeline": {
                "name": "warm",
                "slo": {"latency_p95_s": 30},
                "components": {
                    "router": {
                        "ingress": True,
                        "capacity_per_replica": 20,
                        "service_time_s": 0.05,
                        "startup_s": 10,
                        "replicas": {"min": 1, "max": 20},
                    },
                    "llm": {
                        "capacity_per_replica": 1.5,
                        "service_time_s": 4.0,
                        "startup_s": 240,
                        "gpus_per_replica": 1,
                        "replicas": {"min": 1, "max": 64},
                    },
                },
                "edges": [{"from": "router", "to": "llm", "fanout": 2.0}],
            },
            "policies": [{"name": "elastiscale", "params": PARAMS}],
            "control": {"interval_s": 15, **control},
            "metrics": {
                "type": "prometheus",
                "url": url,
                "rate_window_s": 60,
                "components": {"router": {"queries": {"demand_rps": LONG_QUERY}}},
            },
        }
    )


def test_source_history_reads_every_step_chunked(
    prometheus: LocalPrometheus, prom_history: PromHistory
) -> None:
    cfg = config(prometheus.url)
    assert cfg.metrics is not None
    source = PrometheusMetricSource(cfg, cfg.metrics.options())
    end_s = prom_history.long_start_s + 86400.0
    steps = source.history(["router", "llm"], end_s - 3 * 3600.0, end_s, 15.0)
    assert len(steps) == 720
    router = [s["router"] for s in steps]
    assert router[-1].at_s == end_s
    # The recorded rate of the 10 s bin that holds each step (bin values are stamped at their
    # end, and Prometheus answers with the newest sample at or before the step).
    t = np.array([o.at_s for o in router]) - prom_history.long_start_s - 10.0
    want = prom_history.long.requests[np.floor(t / 10.0 + 1e-9).astype(int)] / 10.0
    got = np.array([o.demand_rps for o in router])
    assert np.array_equal(got, want)
    # No query for the LLM's load: missing, never zero.
    assert all(s["llm"].demand_rps is None for s in steps)
    assert steps[0]["llm"].missing["demand_rps"] == "no query"
    assert source.http.requests_sent >= 1


def test_the_daemon_warm_starts_elastiscale_from_prometheus(
    prometheus: LocalPrometheus, prom_history: PromHistory
) -> None:
    end_s = prom_history.long_start_s + 86400.0
    cfg = config(prometheus.url, history_s=4 * 3600.0)
    runtime = build_runtime(cfg, dry_run=True, journal=None, on_error=lambda _: None)
    try:
        assert runtime.warm_start(end_s) == 4 * 3600 // 15
        (warm,) = runtime.engine.policies
        assert isinstance(warm, ElastiscalePolicy)
        # The same history fed by hand, and a policy that saw nothing.
        assert cfg.metrics is not None
        source = PrometheusMetricSource(cfg, cfg.metrics.options())
        steps = source.history(["router", "llm"], end_s - 4 * 3600.0, end_s, 15.0)
        by_hand = ElastiscalePolicy(cfg, ElastiscalePolicy.Params(**PARAMS))
        by_hand.warm_start(steps)
        cold = ElastiscalePolicy(cfg, ElastiscalePolicy.Params(**PARAMS))
        for policy in (warm, by_hand, cold):
            assert isinstance(policy, ElastiscalePolicy)
        forecast = warm._forecasts[("router", "demand_rps")]
        t, y = forecast.forecaster.history()
        assert y.size >= 4 * 3600 // 30 - 2  # 30 s bins of four hours
        t2, y2 = by_hand._forecasts[("router", "demand_rps")].forecaster.history()
        assert np.array_equal(t, t2) and np.array_equal(y, y2, equal_nan=True)
        assert ("router", "demand_rps") not in cold._forecasts
    finally:
        runtime.close()


def test_a_history_that_cannot_be_read_does_not_stop_the_start(
    prom_history: PromHistory,
) -> None:
    cfg = config("http://127.0.0.1:9", history_s=600.0)  # nothing listens there
    runtime = build_runtime(cfg, dry_run=True, journal=None, on_error=lambda _: None)
    try:
        assert runtime.warm_start(prom_history.long_start_s + 3600.0) == 0
    finally:
        runtime.close()
