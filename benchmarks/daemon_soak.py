"""Soak of the daemon's tick: 1,000 components, 10,000 ticks, in-memory source and actuator.

Each tick goes through `Daemon.tick` as the run loop calls it (engine step with the `hpa`
policy, journal, status, metrics), on a fake clock 15 s apart (41.7 h of simulated time, so
the engine's one-hour history fills and then rolls). Every 100 ticks `/metrics` and
`/decisions` are rendered as a scrape would. Demand per component is a sine with its own
period and phase plus noise, so components scale up and down all along.

Prints resident memory (start, after the first 1,000 ticks, end) and tick times (median, p99,
max). The figures go into docs/performance.md, section "Daemon soak".

    .venv/bin/python benchmarks/daemon_soak.py                # about 10 minutes on 2 cores
    .venv/bin/python benchmarks/daemon_soak.py --components 200 --ticks 2000   # quicker
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import generate_latest
from tqdm import tqdm

from elastiscale import registry
from elastiscale.adapters.base import ActuationResult
from elastiscale.clock import FakeClock
from elastiscale.config import load_config
from elastiscale.daemon.runner import Daemon, RunOptions
from elastiscale.observations import Observation, ReplicaState

INTERVAL_S = 15.0


class CountingActuator:
    """Replica counts in memory, scale-ups ready at once; counts calls instead of keeping them
    (the shipped `RecordingActuator` keeps every call, which a soak would see as growth)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.replicas = dict.fromkeys(names, 1)
        self.calls = 0

    def read(self, components: Sequence[str]) -> dict[str, ReplicaState]:
        return {n: ReplicaState(self.replicas[n], self.replicas[n]) for n in components}

    def scale(self, component: str, replicas: int) -> ActuationResult:
        self.calls += 1
        self.replicas[component] = replicas
        return ActuationResult.success(component, replicas)


class SineSource:
    """demand_rps of component i: base_i x (1 + 0.6 sin(2 pi t / period_i + phase_i)) + noise."""

    def __init__(self, names: Sequence[str], seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.base = dict(zip(names, rng.uniform(5, 200, len(names)), strict=True))
        self.period_s = dict(zip(names, rng.uniform(1800, 14400, len(names)), strict=True))
        self.phase = dict(zip(names, rng.uniform(0, 2 * math.pi, len(names)), strict=True))
        self.rng = rng

    def observe(self, components: Sequence[str], now_s: float) -> Mapping[str, Observation]:
        noise = self.rng.normal(1.0, 0.05, len(components))
        out = {}
        for name, factor in zip(components, noise, strict=True):
            wave = 1 + 0.6 * math.sin(2 * math.pi * now_s / self.period_s[name] + self.phase[name])
            out[name] = Observation(
                component=name, at_s=now_s, demand_rps=float(self.base[name] * wave * factor)
            )
        return out


def config_for(components: int, workdir: Path, fsync: bool) -> dict[str, Any]:
    names = [f"c{i:04d}" for i in range(components)]
    spec = {
        name: {
            "ingress": i == 0,
            "capacity_per_replica": 10,
            "service_time_s": 0.1,
            "startup_s": 60,
            "replicas": {"min": 1, "max": 100},
        }
        for i, name in enumerate(names)
    }
    return {
        "pipeline": {
            "name": "soak",
            "slo": {"latency_p95_s": 5},
            "components": spec,
            "edges": [{"from": names[0], "to": name, "fanout": 1.0} for name in names[1:]],
        },
        "policies": ["hpa"],
        "control": {"interval_s": INTERVAL_S, "history_s": 3600},
        "metrics": {"type": "soak-source"},
        "actuator": {"type": "soak-actuator"},
        "daemon": {
            "journal_path": str(workdir / "journal.jsonl"),
            "journal_fsync": fsync,
            "leader_election": {"enabled": False},
        },
    }


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--components", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=10_000)
    parser.add_argument("--no-fsync", action="store_true", help="journal without fsync")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        raw = config_for(args.components, workdir, fsync=not args.no_fsync)
        names = list(raw["pipeline"]["components"])
        source = SineSource(names)
        actuator = CountingActuator(names)
        registry.register("metric_source", "soak-source", lambda config, options: source)
        registry.register("actuator", "soak-actuator", lambda config, options: actuator)
        path = workdir / "soak.yaml"
        path.write_text(json.dumps(raw))  # JSON is YAML
        clock = FakeClock(1_700_000_000.0)
        daemon = Daemon(load_config(path), RunOptions(config_path=path), clock=clock)
        daemon.start(serve_http=False)

        rss_start = rss_mib()
        rss_warm = float("nan")
        durations = np.empty(args.ticks)
        scrape_bytes = 0
        for i in tqdm(range(args.ticks), unit="tick", mininterval=5):
            started = time.perf_counter()
            daemon.tick(clock.now_s())
            durations[i] = time.perf_counter() - started
            clock.advance(INTERVAL_S)
            if i % 100 == 99:
                scrape_bytes = len(generate_latest(daemon.metrics.registry))
                json.dumps(daemon.status.decisions(limit=100), default=str)
            if i == min(999, args.ticks - 1):
                rss_warm = rss_mib()
        rss_end = rss_mib()
        changes = actuator.calls
        journal_mib = sum(p.stat().st_size for p in daemon.journal.files()) / 2**20
        daemon.shutdown()

    ms = durations * 1000
    print(f"components: {args.components}, ticks: {args.ticks}, fsync: {not args.no_fsync}")
    print(f"scaling actions: {changes} ({changes / args.ticks:.1f} per tick)")
    warm = min(1000, args.ticks)
    print(f"RSS start: {rss_start:.1f} MiB, after {warm:,} ticks: {rss_warm:.1f} MiB, ", end="")
    print(f"end: {rss_end:.1f} MiB")
    print(
        f"tick: median {np.median(ms):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, "
        f"max {ms.max():.1f} ms"
    )
    print(f"last /metrics scrape: {scrape_bytes / 1024:.0f} KiB", end="; ")
    print(f"journal on disk: {journal_mib:.1f} MiB")


if __name__ == "__main__":
    main()
