"""Faults, with a real Prometheus: the server stopped mid-run (the engine holds, retries, never
scales down, and recovers), a frozen server (timeout), queries returning NaN or nothing, series
gone stale. Ticks run at plain `now_s` values inside recorded history, so no test waits for
scrapes."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import PromHistory
from elastiscale import Engine, MetricSourceError, Proposal, RecordingActuator, TickContext
from elastiscale.adapters.prometheus.source import PrometheusMetricSource
from elastiscale.config import Config, load_config
from elastiscale.testing.prometheus import Family, LocalPrometheus, Series, write_openmetrics

pytestmark = pytest.mark.integration

RECORD_START_S = 1_650_000_000.0
#: One series, and the same with an extra label: two series for one component.
TWO_SERIES = 'es_nan{$selector} or label_replace(es_nan{$selector}, "x", "y", "", "")'


def config_for(*names: str, staleness_s: float = 120.0) -> Config:
    components: dict[str, Any] = {
        name: {
            "ingress": i == 0,
            "capacity_per_replica": 2,
            "service_time_s": 1,
            "replicas": {"min": 1, "max": 20},
        }
        for i, name in enumerate(names)
    }
    return load_config(
        {
            "pipeline": {"name": "f", "slo": {"latency_p95_s": 10}, "components": components},
            "constraints": {"missing_data": {"staleness_s": staleness_s}},
        }
    )


class Naive:
    """Sizes for in-flight + queued requests, 2 per replica; without data it proposes the
    minimum, as a policy that reads missing as zero would. The engine must not follow it."""

    name = "naive"

    def propose(self, ctx: TickContext) -> dict[str, Proposal]:
        out = {}
        for name, obs in ctx.observations.items():
            if obs.in_flight is None or obs.queue_length is None:
                out[name] = Proposal(self.name, 1, "no data: minimum")
            else:
                busy = obs.in_flight + obs.queue_length
                out[name] = Proposal(self.name, max(1, math.ceil(busy / 2)), "busy / 2")
        return out


def busy_then_idle_history(path: Path) -> Path:
    """vLLM series for `llm`, every 10 s for 10 min: 8 running and 4 waiting for the first
    5 min, idle after; finished requests count up by 5 per 10 s throughout."""
    times = RECORD_START_S + np.arange(61) * 10.0
    busy = times < RECORD_START_S + 300
    labels = {"model_name": "llm"}
    return write_openmetrics(
        path,
        [
            Family("vllm:num_requests_running", "gauge", [Series(labels, times, 8.0 * busy)]),
            Family("vllm:num_requests_waiting", "gauge", [Series(labels, times, 4.0 * busy)]),
            Family("vllm:request_success", "counter", [Series(labels, times, 5 * np.arange(61))]),
        ],
    )


def test_engine_holds_while_prometheus_is_down_and_recovers(
    prometheus_factory: Callable[..., LocalPrometheus], tmp_path: Path
) -> None:
    server = prometheus_factory(history=[busy_then_idle_history(tmp_path / "h.om")])
    config = config_for("llm")
    source = PrometheusMetricSource(config, {"url": server.url, "preset": "vllm", "timeout_s": 2})
    actuator = RecordingActuator({"llm": 2})
    engine = Engine(config, metrics=source, actuator=actuator, policies=[Naive()])

    busy = engine.step(RECORD_START_S + 200)[0]
    assert (busy.outcome, busy.desired_replicas) == ("scaled", 6)  # (8 + 4) / 2

    server.stop()
    down = engine.step(RECORD_START_S + 400)[0]  # the data would say idle; nobody can see it
    assert down.outcome == "unchanged" and down.desired_replicas == 6
    assert down.observation.why_missing("demand_rps").startswith("source error: ")
    assert "cannot connect" in down.observation.why_missing("in_flight")
    assert [c.constraint for c in down.clamps] == ["missing_data"]
    assert actuator.replicas["llm"] == 6 and len(actuator.calls) == 1

    server.start()  # same port, same data
    recovered = engine.step(RECORD_START_S + 410)[0]
    assert (recovered.outcome, recovered.desired_replicas) == ("scaled", 1)
    assert recovered.observation.at_s == RECORD_START_S + 410


def test_a_frozen_server_times_out_and_the_engine_holds(
    prometheus: LocalPrometheus, prom_history: PromHistory
) -> None:
    config = config_for("hist")
    source = PrometheusMetricSource(
        config, {"url": prometheus.url, "preset": "vllm", "timeout_s": 0.5}
    )
    actuator = RecordingActuator({"hist": 5})
    engine = Engine(config, metrics=source, actuator=actuator, policies=[Naive()])
    now_s = prom_history.hist_end_s
    prometheus.pause()  # connections are accepted, answers never come
    try:
        began = time.monotonic()
        with pytest.raises(MetricSourceError, match=r"no answer within 0\.5 s"):
            source.observe(["hist"], now_s)
        assert time.monotonic() - began < 2.0
        held = engine.step(now_s)[0]
    finally:
        prometheus.resume()
    assert held.outcome == "unchanged" and actuator.replicas["hist"] == 5
    assert "no answer within 0.5 s" in held.observation.why_missing("in_flight")
    after = engine.step(now_s + 1)[0]
    assert after.observation.in_flight == 6.0 and after.desired_replicas == 4


def test_nan_nothing_ambiguous_and_refused_queries_are_typed_missing_values(
    prometheus: LocalPrometheus, prom_history: PromHistory
) -> None:
    source = PrometheusMetricSource(
        config_for("hist"),
        {
            "url": prometheus.url,
            "label": "component",
            "queries": {
                "demand_rps": "count by ($by) (es_nan{$selector})",
                "utilization": "max by ($by) (es_nan{$selector})",
                "queue_length": "sum by ($by) (does_not_exist{$selector})",
                "in_flight": TWO_SERIES,
                "latency_p95_s": "sum by ($by) (rate(es_nan{$selector}))",
            },
        },
    )
    obs = source.observe(["hist"], prom_history.hist_end_s)["hist"]
    assert obs.demand_rps == 1.0  # the one good query still counts
    assert obs.missing["utilization"] == "nan"
    assert obs.missing["queue_length"] == "no data"
    assert obs.missing["in_flight"] == "ambiguous: 2 series"
    assert obs.missing["latency_p95_s"].startswith("query error: bad_data")
    assert obs.missing["ready_replicas"] == "not configured"


def test_a_stale_series_is_missing_and_never_scales_down(
    prometheus: LocalPrometheus, prom_history: PromHistory
) -> None:
    config = config_for("hist", staleness_s=120.0)
    source = PrometheusMetricSource(config, {"url": prometheus.url, "preset": "vllm"})
    fresh = source.observe(["hist"], prom_history.hist_end_s + 100)["hist"]
    assert fresh.in_flight == 6.0  # 100 s old: within the limit
    now_s = prom_history.hist_end_s + 200  # still within Prometheus's 5 min lookback
    stale = source.observe(["hist"], now_s)["hist"]
    assert stale.in_flight is None and stale.missing["in_flight"] == "stale"
    assert stale.missing["ready_replicas"] == "stale"
    assert stale.missing["demand_rps"] == "no data"  # no sample inside the 60 s rate window
    actuator = RecordingActuator({"hist": 8})
    engine = Engine(config, metrics=source, actuator=actuator, policies=[Naive()])
    record = engine.step(now_s)[0]
    assert record.proposals[0].replicas == 1  # the policy would drop to the minimum
    assert (record.desired_replicas, actuator.replicas["hist"]) == (8, 8)
