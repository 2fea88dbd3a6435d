"""Speed and memory of the backtest simulators.

    .venv/bin/python benchmarks/backtest_speed.py [--trace FILE] [--days 31] [--profile]
        [--policies hpa elastiscale predictive] [--memory-trace FILE_1s] [--des-hours 2]

1. Rates, fast fidelity: a trace in 10 s bins (default: the NASA July 1995 trace of the shared
   folder, 31 days, x 0.25 (about 2 to 14 requests/s); without it a synthetic 30-day trace of
   daily and weekly seasonality, Poisson counts around 2 to 14 requests/s) through a
   6-component pipeline (router -> embedder -> retriever -> reranker -> llm -> guard), each
   policy of `--policies` in a fresh process of its own. Prints the component-steps per second
   (steps x components / CPU time; targets on one core: hpa >= 100,000, elastiscale >= 25,000,
   predictive within 3x of elastiscale) and the process's peak RSS. Times are CPU seconds of
   the child (`time.process_time`), so other work on a shared machine does not count.
2. Memory: `hpa` on `--memory-days` (default 31) of `--memory-trace` (default: the NASA trace
   at 1 s bins; its 27.6 days are tiled end to end up to 31 days, 2.68 million bins), same
   pipeline, in a fresh process: peak RSS (target <= 2 GiB) and the rate.
3. Where the time goes for hpa (`--breakdown`): the simulator's steps, `Engine.step` (with the
   metric source and actuator it calls), the end-to-end latency sampling in `result()`.
4. Discrete-event fidelity: the first `--des-hours` of the synthetic trace, same pipeline and
   policy: ingress requests and simulated calls per second.

`--profile` adds the top functions of a cProfile run of hpa on the first 3 days.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import math
import multiprocessing
import pstats
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from elastiscale import Engine, registry
from elastiscale.backtest import baselines, runner
from elastiscale.backtest.des import DiscreteEventSimulator
from elastiscale.backtest.fluid import FluidSimulator
from elastiscale.backtest.simmetrics import SimulatedMetricSource, SimulatorActuator
from elastiscale.config import Config, validate_mapping
from elastiscale.trace import Trace, load_trace

BIN_S = 10.0
SHARED = Path(__file__).resolve().parents[2] / "shared" / "traces"  # beside the checkout
NASA_10S = SHARED / "nasa_http_1995_07_10s.csv.gz"
NASA_1S = SHARED / "nasa_http_1995_07_1s.csv.gz"
#: NASA's July 1995 HTTP requests average 0.8/s; x 8 gives 6.4/s (p95 of 10 s bins: 16/s).
NASA_RATE_SCALE = 8.0
TARGETS = {
    "hpa": ">= 100,000",
    "elastiscale": ">= 25,000",
    "predictive": "within 3x of elastiscale",
}


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
        short = synthetic_trace(min(days, 3.0))
        profiler.enable()
        runner.simulate(config, short, policy, initial_replicas=initial_counts(config, short))
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


def tiled(trace: Trace, days: float) -> Trace:
    """`trace` repeated end to end until it covers `days`, then cut there (the memory case's
    31 days at 1 s from the 27.6 days of the NASA recording)."""
    span_s = days * 86400.0
    repeats = max(1, math.ceil(span_s / trace.duration_s - 1e-9))
    if repeats == 1:
        return trace.window(trace.start_s, trace.start_s + span_s)
    n = len(trace)
    t_s = trace.start_s + trace.bin_s * np.arange(n * repeats, dtype=float)
    requests = np.tile(trace.requests, repeats)
    columns = {k: np.tile(v, repeats) for k, v in trace.columns.items()}
    whole = Trace(name=f"{trace.name} x{repeats}", t_s=t_s, requests=requests,
                  bin_s=trace.bin_s, columns=columns)  # fmt: skip
    return whole.window(whole.start_s, whole.start_s + span_s)


def load_case_trace(path: str | None, days: float, tile: bool = False) -> Trace:
    """The rate cases' trace: `path` (x NASA_RATE_SCALE) cut to `days` (with `tile`,
    repeated up to `days` when shorter), else synthetic."""
    if path is None:
        return synthetic_trace(days)
    trace = load_trace(path).scaled(rate_scale=NASA_RATE_SCALE)
    if tile:
        return tiled(trace, days)
    return trace.window(trace.start_s, trace.start_s + days * 86400.0)


def rate_case(
    policy_name: str, path: str | None, days: float, tile: bool = False
) -> dict[str, float]:
    """One policy on the trace, in this (fresh) process: CPU seconds, steps, peak RSS."""
    config = pipeline()
    trace = load_case_trace(path, days, tile)
    policy = baselines.build_policy(policy_name, config, {}, trace=trace)
    start = time.process_time()
    runner.simulate(config, trace, policy, initial_replicas=initial_counts(config, trace))
    cpu_s = time.process_time() - start
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"cpu_s": cpu_s, "steps": float(len(trace)), "days": trace.duration_s / 86400.0,
            "bin_s": trace.bin_s, "rss_mib": rss_mib}  # fmt: skip


def in_child(*args: Any) -> dict[str, float]:
    """`rate_case(*args)` in a fresh process, so that each figure (and peak RSS) is its own."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        got: dict[str, float] = pool.submit(rate_case, *args).result()
    return got


def rates(policies: list[str], path: str | None, days: float) -> None:
    components = len(pipeline().pipeline.components)
    where = Path(path).name if path else "synthetic"
    print(f"fast fidelity, {where}, {components} components, one process per policy:")
    got: dict[str, float] = {}
    for name in policies:
        r = in_child(name, path, days)
        rate = r["steps"] * components / r["cpu_s"]
        got[name] = rate
        print(f"  {name:<12s} {r['days']:5.1f} days at {r['bin_s']:g} s: {r['cpu_s']:8.1f} s CPU, "
              f"{rate:10,.0f} component-steps/s (target {TARGETS.get(name, '-')}), "
              f"peak RSS {r['rss_mib']:,.0f} MiB")  # fmt: skip
    if "predictive" in got and "elastiscale" in got:
        print(f"  predictive / elastiscale time: {got['elastiscale'] / got['predictive']:.2f}x")


def memory(path: str, days: float) -> None:
    r = in_child("hpa", str(path), days, True)
    components = len(pipeline().pipeline.components)
    print(f"memory: hpa, {Path(path).name}, {r['days']:.1f} days at {r['bin_s']:g} s bins "
          f"({r['steps']:,.0f} steps x {components} components)")  # fmt: skip
    print(
        f"  peak RSS {r['rss_mib']:,.0f} MiB (target <= 2,048), {r['cpu_s']:.1f} s CPU, "
        f"{r['steps'] * components / r['cpu_s']:,.0f} component-steps/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--trace",
        default=str(NASA_10S) if NASA_10S.exists() else None,
        help="trace of the rate cases (default: NASA 10 s, else synthetic)",
    )
    parser.add_argument("--days", type=float, default=31.0, help="days of it (31: all)")
    parser.add_argument("--policies", nargs="*", default=["hpa", "elastiscale", "predictive"])
    parser.add_argument("--memory-trace", default=str(NASA_1S) if NASA_1S.exists() else None)
    parser.add_argument("--memory-days", type=float, default=31.0)
    parser.add_argument("--breakdown", action="store_true", help="where hpa's time goes")
    parser.add_argument("--des-hours", type=float, default=2.0)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()  # fmt: skip
    if args.policies:
        rates(args.policies, args.trace, args.days)
    if args.memory_trace and args.memory_days > 0:
        memory(args.memory_trace, args.memory_days)
    if args.breakdown or args.profile:
        fast_case(min(args.days, 30.0), args.profile)
    if args.des_hours > 0:
        des_case(args.des_hours)


if __name__ == "__main__":
    main()
