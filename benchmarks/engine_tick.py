"""Cost of one `Engine.step` for a large pipeline with reactive policies.

    .venv/bin/python benchmarks/engine_tick.py [--components 200] [--ticks 1000]
        [--policy hpa --policy kpa]

Builds a pipeline of N components (one ingress, the rest in a fan-out tree), feeds it a noisy
diurnal demand through `SeriesMetricSource`, and times `Engine.step` over the ticks.
Target: median <= 20 ms at 200 components. Times are CPU seconds of this process
(`time.process_time`), so other work on a shared machine does not inflate them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from elastiscale import (
    Config,
    Engine,
    Pipeline,
    RecordingActuator,
    SeriesMetricSource,
    load_config,
)


def pipeline_config(components: int, policies: Sequence[str] = ()) -> dict[str, Any]:
    """A pipeline of `components`: one CPU ingress, the rest GPU stages in a tree of fan-out 4
    (the other engine benchmarks build theirs with this too)."""
    comps: dict[str, Any] = {
        "c0": {
            "ingress": True,
            "capacity_per_replica": 50,
            "service_time_s": 0.05,
            "replicas": {"min": 1, "max": 200},
        }
    }
    edges = []
    for i in range(1, components):
        comps[f"c{i}"] = {
            "capacity_per_replica": 2.0,
            "service_time_s": 2.0,
            "startup_s": 120,
            "gpus_per_replica": 1,
            "replicas": {"min": 1, "max": 500},
        }
        edges.append({"from": f"c{(i - 1) // 4}", "to": f"c{i}", "fanout": 1.2})
    config: dict[str, Any] = {
        "pipeline": {
            "name": "bench",
            "slo": {"latency_p95_s": 30},
            "components": comps,
            "edges": edges,
        }
    }
    if policies:
        config["policies"] = list(policies)
    return config


def diurnal_source(
    config: Config, times_s: np.ndarray, in_flight_per_rps: float
) -> SeriesMetricSource:
    """A noisy diurnal ingress demand at `times_s` (seconds), propagated down the graph of
    `config`, with `in_flight_per_rps` requests in flight per request/s, an empty queue and
    utilization 0.6 everywhere."""
    pipeline = Pipeline(config.pipeline)
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 2, times_s.size).clip(-10, 10)
    demand = pipeline.propagate_series({"c0": 20 + 15 * np.sin(times_s / 3600) + noise})
    return SeriesMetricSource(
        {
            name: {
                "demand_rps": (times_s, demand[name]),
                "in_flight": (times_s, demand[name] * in_flight_per_rps),
                "queue_length": (times_s, np.zeros(times_s.size)),
                "utilization": (times_s, np.full(times_s.size, 0.6)),
            }
            for name in pipeline.order
        }
    )


def diurnal_engine(config: Config, ticks: int) -> tuple[Engine, np.ndarray]:
    """An `Engine` on `config` fed `diurnal_source`, and the `ticks + 1` tick times (seconds)
    it has data for."""
    times = np.arange(ticks + 1) * config.control.interval_s
    metrics = diurnal_source(config, times, in_flight_per_rps=0.5)
    engine = Engine(config, metrics=metrics, actuator=RecordingActuator.for_config(config))
    return engine, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--components", type=int, default=200)
    parser.add_argument("--ticks", type=int, default=1000)
    parser.add_argument("--policy", action="append", default=None)
    args = parser.parse_args()
    policies = args.policy or ["hpa"]
    config = load_config(pipeline_config(args.components, policies))
    engine, times = diurnal_engine(config, args.ticks)
    durations_ms = []
    for t in times[1:]:
        start = time.process_time()
        engine.step(float(t))
        durations_ms.append((time.process_time() - start) * 1000)
    durations_ms.sort()
    p99 = durations_ms[int(0.99 * (len(durations_ms) - 1))]
    print(
        f"engine tick: {args.components} components, policies {', '.join(policies)}, "
        f"{args.ticks} ticks: median {statistics.median(durations_ms):.2f} ms, "
        f"p99 {p99:.2f} ms"
    )


if __name__ == "__main__":
    main()
