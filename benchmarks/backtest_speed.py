"""Speed of the backtest simulators.

    .venv/bin/python benchmarks/backtest_speed.py [--days 30] [--des-hours 2] [--profile]

1. Fast fidelity: a synthetic 30-day trace in 10 s bins (daily and weekly seasonality, Poisson
   counts around 2 to 14 requests/s) through a 6-component pipeline (router -> embedder ->
   retriever -> reranker -> llm -> guard), one policy (hpa, ticking every 15 s). Prints the
   component-steps per second (steps x components / wall time; target >= 100,000 on one core)
   and where the time goes: the simulator's steps, `Engine.step` (with the metric source and
   actuator it calls), and the end-to-end latency sampling in `result()`. Times are CPU seconds
   of this process (`time.process_time`), so that other work on a shared machine does not
   count; wall time is printed too.
2. Discrete-event fidelity: the first `--des-hours` of the same trace, same pipeline and policy.
   Prints ingress requests and simulated calls per second of wall time.

`--profile` adds the top functions of a cProfile run of the fast case.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import pstats
import time
from typing import Any

import numpy as np

from elastiscale import Engine, registry
from elastiscale.backtest import runner
from elastiscale.backtest.des import DiscreteEventSimulator
from elastiscale.backtest.fluid import FluidSimulator
from elastiscale.backtest.simmetrics import SimulatedMetricSource, SimulatorActuator
from elastiscale.config import Config, validate_mapping
from elastiscale.trace import Trace

BIN_S = 10.0


def pipeline() -> Config:
    def comp(capacity: float, service_s: float, startup_s: float, gpus: float, **extra: Any):
        return {
            "capacity_per_replica": capacity,
            "service_time_s": service_s,
            "startup_s": startup_s,
            "gpus_per_replica": gpus,
            "replicas": {"min": 1, "max": 200},
            "cost_per_hour": 0.1 + 2.5 * gpus,
            **extra,
        }

    names = ["router", "embedder", "retriever", "reranker", "llm", "guard"]
    return validate_mapping(
        {
            "pipeline": {
                "name": "bench-rag",
                "slo": {"latency_p95_s": 20},
                "components": {
                    "router": comp(200, 0.005, 10, 0, ingress=True),
                    "embedder": comp(150, 0.03, 60, 1),
                    "retriever": comp(100, 0.02, 90, 0),
                    "reranker": comp(25, 0.15, 90, 1),
                    "llm": comp(1.5, 4.0, 180, 2),
                    "guard": comp(40, 0.05, 60, 1),
                },
                "edges": [
                    {"from": a, "to": b, "fanout": 1.0} for a, b in itertools.pairwise(names)
                ],
            }
        }
    )


def synthetic_trace(days: float, seed: int = 1) -> Trace:
    """Poisson counts per 10 s bin around a daily and weekly cycle: 2 to 14 requests/s."""
    t_s = np.arange(0.0, days * 86400.0, BIN_S)
    daily = 0.5 - 0.5 * np.cos(2 * np.pi * t_s / 86400.0)
    weekly = 1.0 - 0.3 * (((t_s // 86400.0) % 7) >= 5)
    rate = (2.0 + 12.0 * daily) * weekly
    counts = np.random.default_rng(seed).poisson(rate * BIN_S).astype(float)
    return Trace(name=f"synthetic-{days:g}d", t_s=t_s, requests=counts, bin_s=BIN_S)


class Timers:
    """Wall time spent in the simulator's steps, the engine, and the result."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {
            "simulator steps": 0.0,
            "Engine.step": 0.0,
            "  policy (hpa)": 0.0,
            "  metric source": 0.0,
            "  actuator": 0.0,
            "result": 0.0,
        }

    def wrap(self, owner: Any, method: str, label: str) -> None:
        original = getattr(owner, method)
        totals = self.totals

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                totals[label] += time.process_time() - start

        setattr(owner, method, timed)


def initial_counts(config: Config, trace: Trace) -> dict[str, int]:
    first = float(np.mean(trace.requests[:30])) / trace.bin_s
    return {
        name: max(1, int(np.ceil(first / (c.capacity_per_replica * 0.7))))
        for name, c in config.pipeline.components.items()
    }


def fast_case(days: float, profile: bool) -> None:
    config = pipeline()
    trace = synthetic_trace(days)
    policy = registry.build("policy", "hpa", config)
    timers = Timers()
    timers.wrap(FluidSimulator, "advance_to", "simulator steps")
    timers.wrap(Engine, "step", "Engine.step")
    timers.wrap(FluidSimulator, "result", "result")
    timers.wrap(policy, "propose", "  policy (hpa)")
    timers.wrap(SimulatedMetricSource, "observe", "  metric source")
    timers.wrap(SimulatorActuator, "read", "  actuator")
    timers.wrap(SimulatorActuator, "scale", "  actuator")
    wall = time.perf_counter()
    start = time.process_time()
    result = runner.simulate(
        config, trace, policy, initial_replicas=initial_counts(config, trace), progress=True
    )
    elapsed = time.process_time() - start
    wall = time.perf_counter() - wall
    steps = len(trace)
    components = len(config.pipeline.components)
    ticks = int(np.ceil(trace.duration_s / 15.0))
    print(f"fast fidelity: {days:g} days at {BIN_S:g} s steps x {components} components, hpa")
    print(f"  CPU time                {elapsed:8.2f} s  (wall {wall:.2f} s)")
    print(f"  component-steps/s       {steps * components / elapsed:10,.0f}  (target >= 100,000)")
    print(f"  engine ticks            {ticks:10,d}  ({ticks / elapsed:,.0f}/s)")
    own = timers.totals["Engine.step"] - sum(
        v for k, v in timers.totals.items() if k.startswith("  ")
    )
    timers.totals["  the engine's own code"] = own
    for label, spent in timers.totals.items():
        share = 100 * spent / elapsed
        print(f"  {label:<24s}{spent:8.2f} s  ({share:4.1f}%)")
    print(f"  scaling actions         {result.scaling_actions:10,d}")
    if profile:
        profiler = cProfile.Profile()
        policy = registry.build("policy", "hpa", config)
        profiler.enable()
        runner.simulate(config, trace, policy, initial_replicas=initial_counts(config, trace))
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def des_case(hours: float) -> None:
    config = pipeline()
    trace = synthetic_trace(hours / 24.0)
    policy = registry.build("policy", "hpa", config)
    events = {"n": 0}
    original = DiscreteEventSimulator.result

    def counting_result(self: DiscreteEventSimulator) -> Any:
        got = original(self)
        events["n"] = self.events
        return got

    DiscreteEventSimulator.result = counting_result  # type: ignore[method-assign]
    start = time.process_time()
    result = runner.simulate(
        config,
        trace,
        policy,
        fidelity="discrete-event",
        initial_replicas=initial_counts(config, trace),
    )
    elapsed = time.process_time() - start
    DiscreteEventSimulator.result = original  # type: ignore[method-assign]
    requests = result.ingress_requests
    print(f"discrete-event fidelity: {hours:g} h, same pipeline and policy")
    print(f"  CPU time                {elapsed:8.2f} s")
    print(f"  ingress requests        {requests:10,.0f}  ({requests / elapsed:,.0f}/s)")
    print(f"  events                  {events['n']:10,d}  ({events['n'] / elapsed:,.0f}/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--des-hours", type=float, default=2.0)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    fast_case(args.days, args.profile)
    des_case(args.des_hours)


if __name__ == "__main__":
    main()
