"""Cost of fleet units: loading and merging a fleet file, and one tick of a merged unit.

    .venv/bin/python benchmarks/fleet_units.py [--pipelines 100] [--ticks 10]

Writes `--pipelines` pipeline files of 8 components each (a chain router -> c1 -> c2 ->
embedder -> c4 -> c5 -> c6 -> llm, fan-out 1.5 per edge, SLOs of 10 s upward) into a
temporary directory, and a fleet file naming the directory, twice: once with `embedder` and
`llm` shared (all pipelines are one unit of 6 x N + 2 components), once with nothing shared
(N units of 8). Prints, as CPU seconds of this process (`time.process_time`, so other work on
a shared machine does not count):

1. `load_fleet`: reading, validating and merging every file;
2. the per-path latency budgets and the demand-share gains of every unit;
3. `Engine.step` of the largest unit with the default `elastiscale` policy, a metric source
   answering 5 requests/s everywhere and the recording actuator: the mean of `--ticks` ticks
   after a first one.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from elastiscale.adapters.memory import RecordingActuator
from elastiscale.config.fleet import Fleet, load_fleet
from elastiscale.demand_shares import DemandShares
from elastiscale.engine import Engine
from elastiscale.observations import Observation
from elastiscale.pipeline_model import latency_budgets

CHAIN = ("router", "c1", "c2", "embedder", "c4", "c5", "c6", "llm")


def write_fleet(folder: Path, pipelines: int, shared: Sequence[str]) -> Path:
    for i in range(pipelines):
        comps = {
            c: {"ingress": j == 0, "capacity_per_replica": 10, "service_time_s": 0.1,
                "replicas": {"min": 1, "max": 20}}
            for j, c in enumerate(CHAIN)
        }  # fmt: skip
        edges = [{"from": a, "to": b, "fanout": 1.5} for a, b in itertools.pairwise(CHAIN)]
        raw = {"pipeline": {"name": f"p{i:03d}", "slo": {"latency_p95_s": 10 + i},
                            "components": comps, "edges": edges}}  # fmt: skip
        (folder / f"p{i:03d}.yaml").write_text(yaml.safe_dump(raw))
    path = folder / "fleet.yaml"
    fleet = {"fleet": {"name": "bench", "pipelines_dir": ".", "shared": list(shared)}}
    path.write_text(yaml.safe_dump(fleet))
    return path


class Everywhere:
    """A metric source answering the same demand for every component."""

    def observe(self, names: Sequence[str], now_s: float) -> Mapping[str, Observation]:
        return {n: Observation(n, now_s, demand_rps=5.0) for n in names}


def tick_cpu_s(fleet: Fleet, ticks: int) -> tuple[int, float]:
    config = max(fleet.units, key=lambda u: len(u.config.pipeline.components)).config
    engine = Engine(config, metrics=Everywhere(), actuator=RecordingActuator.for_config(config))
    engine.step(0.0)
    start = time.process_time()
    for k in range(1, ticks + 1):
        engine.step(config.control.interval_s * k)
    return len(config.pipeline.components), (time.process_time() - start) / ticks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", type=int, default=100)
    parser.add_argument("--ticks", type=int, default=10)
    args = parser.parse_args()
    for shared in (("embedder", "llm"), ()):
        with tempfile.TemporaryDirectory() as tmp:
            path = write_fleet(Path(tmp), args.pipelines, shared)
            start = time.process_time()
            fleet = load_fleet(path)
            loaded = time.process_time()
            for unit in fleet.units:
                latency_budgets(unit.config)
                DemandShares(unit.config)
            modelled = time.process_time()
            components, tick_s = tick_cpu_s(fleet, args.ticks)
        what = f"shared {', '.join(shared)}" if shared else "nothing shared"
        print(
            f"{args.pipelines} pipelines x {len(CHAIN)} components, {what}: "
            f"{len(fleet.units)} unit(s); load_fleet {loaded - start:.2f} s CPU; budgets and "
            f"shares {modelled - loaded:.2f} s CPU; Engine.step of a {components}-component "
            f"unit {tick_s * 1000:.1f} ms CPU"
        )


if __name__ == "__main__":
    main()
