"""The in-memory adapters that ship for users' tests."""

from __future__ import annotations

import numpy as np
import pytest

from elastiscale import DryRunActuator, Pipeline, RecordingActuator, SeriesMetricSource, load_config
from elastiscale.trace import parse_trace

CONFIG = {
    "pipeline": {
        "name": "p",
        "slo": {"latency_p95_s": 5},
        "components": {
            "a": {
                "ingress": True,
                "capacity_per_replica": 10,
                "service_time_s": 0.1,
                "replicas": {"max": 5, "initial": 2},
            },
            "b": {"capacity_per_replica": 1, "service_time_s": 1, "replicas": {"min": 3, "max": 9}},
        },
        "edges": [{"from": "a", "to": "b", "fanout": 3}],
    }
}


def test_series_source_reads_latest_point_before_delay() -> None:
    t = np.array([10.0, 20.0, 30.0])
    source = SeriesMetricSource(
        {"a": {"demand_rps": (t, np.array([1.0, np.nan, 3.0])), "ready_replicas": (t, t / 10)}},
        delay_s=5.0,
    )
    assert source.observe(["a"], 9.0)["a"].why_missing("demand_rps") == "no data"
    got = source.observe(["a"], 16.0)["a"]
    assert (got.demand_rps, got.ready_replicas, got.at_s) == (1.0, 1, 10.0)
    assert source.observe(["a"], 26.0)["a"].why_missing("demand_rps") == "nan"
    assert source.observe(["a"], 99.0)["a"].demand_rps == 3.0
    assert source.observe(["zz"], 99.0)["zz"].demand_rps is None


def test_series_source_rejects_unknown_signal() -> None:
    with pytest.raises(ValueError, match="unknown signal 'qps'"):
        SeriesMetricSource({"a": {"qps": (np.array([0.0]), np.array([1.0]))}})


def test_from_trace_propagates_through_fanout_with_a_rate_window() -> None:
    config = load_config(CONFIG)
    trace = parse_trace("t_seconds,requests\n0,10\n10,30\n20,20\n")
    source = SeriesMetricSource.from_trace(trace, Pipeline(config.pipeline), window_s=20)
    obs = source.observe(["a", "b"], 30.0)  # bins ending at 20 and 30: mean of 3/s and 2/s
    assert obs["a"].demand_rps == pytest.approx(2.5)
    assert obs["b"].demand_rps == pytest.approx(7.5)


def test_recording_and_dry_run_actuators() -> None:
    config = load_config(CONFIG)
    recording = RecordingActuator.for_config(config)
    assert recording.replicas == {"a": 2, "b": 3}
    assert recording.scale("b", 5).ok and recording.read(["b"])["b"].desired == 5
    dry = DryRunActuator(inner=recording)
    assert dry.scale("b", 9).ok
    assert recording.replicas["b"] == 5 and dry.would_scale[0].replicas == 9


def test_trace_source_options_are_validated() -> None:
    from elastiscale import registry

    assert registry.check("metric_source", "trace", {"window_s": 30}, path="metrics") == [
        "metrics.path: Field required"
    ]
    assert registry.check("metric_source", "trace", {"path": "x", "windw_s": 1}, path="metrics")
