"""Cost of the constraint chains in one tick, alone and inside `Engine.step`.

    .venv/bin/python benchmarks/constraints_tick.py [--components 200] [--ticks 1000]

Every component gets every rule: scale-up and scale-down stabilization windows, two rate limits
per direction, cooldowns, two cron schedules in a named time zone, missing-data rules (one tick
in ten has no data) and bounds. Demand is noisy, so the rules clamp often. Prints the median and
p99 of (a) applying and committing all chains for one tick, and (b) one whole `Engine.step` with
a trivial demand/capacity policy, against the engine target of a median <= 20 ms at 200
components.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Any

import numpy as np

from elastiscale import (
    Engine,
    Observation,
    Pipeline,
    Proposal,
    RecordingActuator,
    SeriesMetricSource,
    TickContext,
    load_config,
)
from elastiscale.controllers.constraints import ConstraintInput
from engine_tick import pipeline_config

#: Unix time of the first tick (Monday 2024-03-04 08:00 UTC): schedules fire during the run.
START_S = 1709539200.0

RULES: dict[str, Any] = {
    "scale_up": {
        "stabilization_s": 60,
        "rate_limits": [
            {"type": "pods", "value": 4, "period_s": 15},
            {"type": "percent", "value": 100, "period_s": 15},
        ],
        "cooldown_s": 30,
    },
    "scale_down": {
        "stabilization_s": 300,
        "rate_limits": [
            {"type": "percent", "value": 50, "period_s": 60},
            {"type": "pods", "value": 2, "period_s": 30},
        ],
        "select": "min",
        "cooldown_s": 60,
    },
    "schedules": [
        {"cron": "0 9 * * 1-5", "timezone": "Europe/Berlin", "duration_s": 3600, "min": 3},
        {"cron": "*/20 * * * *", "timezone": "America/New_York", "duration_s": 300, "max": 400},
    ],
    "missing_data": {"fallback_after": 3, "fallback": "current-if-higher", "fallback_replicas": 2},
}


class DemandPolicy:
    """ceil(demand / capacity) per component: as cheap as a policy gets, so the engine's own
    cost and the constraints' dominate the measurement."""

    name = "demand"

    def propose(self, ctx: TickContext) -> dict[str, Proposal]:
        out = {}
        for name in ctx.pipeline.order:
            load = ctx.load(name)
            capacity = ctx.pipeline.components[name].capacity_per_replica
            out[name] = (
                Proposal(self.name, math.ceil(load / capacity), "demand")
                if load is not None
                else Proposal.none(self.name, "no demand")
            )
        return out


def percentiles(durations_ms: list[float]) -> str:
    ordered = sorted(durations_ms)
    p99 = ordered[int(0.99 * (len(ordered) - 1))]
    return f"median {statistics.median(ordered):.2f} ms, p99 {p99:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--components", type=int, default=200)
    parser.add_argument("--ticks", type=int, default=1000)
    args = parser.parse_args()
    config = load_config({**pipeline_config(args.components), "constraints": RULES})
    pipeline = Pipeline(config.pipeline)
    interval_s = config.control.interval_s
    rng = np.random.default_rng(0)
    times = START_S + np.arange(args.ticks + 1) * interval_s
    ingress = 20 + 15 * np.sin((times - START_S) / 3600) + rng.normal(0, 4, times.size)
    demand = pipeline.propagate_series({"c0": ingress.clip(0, None)})
    gaps = rng.random((len(pipeline.order), times.size)) < 0.1  # one tick in ten: no data
    for row, name in enumerate(pipeline.order):
        demand[name] = np.where(gaps[row], np.nan, demand[name])

    # (a) the chains alone, driven as the engine drives them
    engine = Engine(
        config,
        metrics=SeriesMetricSource({}),
        actuator=RecordingActuator.for_config(config),
        policies=[],
    )
    current = {name: 1 for name in pipeline.order}
    chain_ms = []
    for i, now_s in enumerate(times[1:], start=1):
        inputs = []
        for name in pipeline.order:
            value = float(demand[name][i])
            ok = not math.isnan(value)
            obs = Observation(name, float(now_s), demand_rps=value if ok else None)
            wanted = math.ceil(value / 2.0) if ok else current[name]
            inputs.append((ConstraintInput(name, float(now_s), current[name], 0, obs, ok), wanted))
        start = time.perf_counter()
        for inp, wanted in inputs:
            chain = engine.constraints[inp.component]
            desired, _ = chain.apply(inp, wanted)
            chain.commit(inp.component, inp.now_s, inp.current, desired)
            current[inp.component] = desired
        chain_ms.append((time.perf_counter() - start) * 1000)

    # (b) whole engine ticks with the same rules
    series = {name: {"demand_rps": (times, demand[name])} for name in pipeline.order}
    engine = Engine(
        config,
        metrics=SeriesMetricSource(series),
        actuator=RecordingActuator.for_config(config),
        policies=[DemandPolicy()],
    )
    step_ms = []
    for now_s in times[1:]:
        start = time.perf_counter()
        engine.step(float(now_s))
        step_ms.append((time.perf_counter() - start) * 1000)

    print(
        f"constraint chains, {args.components} components, every rule, {args.ticks} ticks: "
        f"{percentiles(chain_ms)}"
    )
    print(
        f"engine tick with those chains, {args.components} components, {args.ticks} ticks: "
        f"{percentiles(step_ms)}"
    )


if __name__ == "__main__":
    main()
