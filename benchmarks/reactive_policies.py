"""Cost of the reactive policies' `propose` for a large pipeline, each ticked at its own interval.

    .venv/bin/python benchmarks/reactive_policies.py [--components 200] [--minutes 30]
        [--policy hpa --policy kpa --policy step-scaling --policy target-tracking]

Builds a pipeline of N components (one ingress, the rest in a fan-out tree), feeds it a noisy
demand with concurrency and utilization through `SeriesMetricSource`, steps an `Engine` every
`interval_s` of the policy (HPA 15 s, KPA 2 s, AWS policies 60 s) for the given simulated time
with the engine's default hour of history, and times the policy's `propose` alone (all
components of one tick) apart from the rest of the engine's work.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from elastiscale import (
    Engine,
    RecordingActuator,
    load_config,
    registry,
)
from elastiscale.controllers.base import TickContext
from elastiscale.decision import Proposal
from engine_tick import diurnal_source, pipeline_config

POLICIES = ("hpa", "kpa", "step-scaling", "target-tracking")


class Timed:
    """Wraps a policy and records how long each `propose` takes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.durations_ms: list[float] = []

    def propose(self, ctx: TickContext) -> Mapping[str, Proposal]:
        start = time.perf_counter()
        got: Mapping[str, Proposal] = self.inner.propose(ctx)
        self.durations_ms.append((time.perf_counter() - start) * 1000)
        return got


def measure(name: str, components: int, minutes: float) -> tuple[float, int, list[float]]:
    config = load_config(pipeline_config(components))
    policy = Timed(registry.build("policy", name, config, {}))
    interval_s = float(policy.inner.interval_s)
    times = np.arange(0.0, minutes * 60 + interval_s, interval_s)
    engine = Engine(
        config,
        metrics=diurnal_source(config, times, in_flight_per_rps=2.0),
        actuator=RecordingActuator.for_config(config),
        policies=[policy],
    )
    for t in times:
        engine.step(float(t))
    return interval_s, len(times), sorted(policy.durations_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--components", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--policy", action="append", default=None, choices=POLICIES)
    args = parser.parse_args()
    for name in args.policy or POLICIES:
        interval_s, ticks, durations_ms = measure(name, args.components, args.minutes)
        median = statistics.median(durations_ms)
        p99 = durations_ms[int(0.99 * (len(durations_ms) - 1))]
        print(
            f"{name:16s} tick {interval_s:4g} s, {ticks:5d} ticks, {args.components} components: "
            f"propose median {median:6.2f} ms ({1000 * median / args.components:5.1f} us per "
            f"component), p99 {p99:6.2f} ms"
        )


if __name__ == "__main__":
    main()
