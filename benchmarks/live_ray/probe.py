"""How much of the live benchmark this host carries: run.py with its scale changed.

    python benchmarks/live_ray/probe.py [--rate F] [--capacity F] [--service F]
        [--unscaled-serve-intervals] -- RUN.PY FLAGS

- `--rate F`: every slice's rate scale times F (fewer requests, the same trace shape);
- `--capacity F`: the chain's planner, tools and writer serve F times as many calls per
  second a replica (`capacity_per_replica`; with F = 0.25 a quarter of the calls needs the
  replica counts of the full rate);
- `--service F`: their service times and the SLO times F (with `--capacity 1/F` the slots
  per replica stay as they are);
- `--unscaled-serve-intervals`: Serve's metric push intervals and retry backoffs left at their
  real-time values instead of divided by the time scale (Serve then reacts time-scale times
  slower than it does for real: a measure of what those intervals cost, not a comparison).

Everything after `--` goes to run.py (e.g. `--runs ray-serve --slices smooth --seeds 1
--host-check record`). The changed pipeline file is written beside pipeline_chain.yaml for the
run and removed after it. docs/results.md ("On a quiet host") has the figures of these probes.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import scenario  # noqa: E402

#: The chain's components whose capacity and service time a probe changes (not the router).
SCALED = ("planner", "tools", "writer")


def scaled_chain(capacity: float, service: float) -> dict[str, Any]:
    """The chain's pipeline file with the probe's capacity and service-time factors."""
    doc: dict[str, Any] = yaml.safe_load(scenario.PIPELINES["chain"].read_text(encoding="utf-8"))
    pipeline = doc["pipeline"]
    pipeline["slo"]["latency_p95_s"] *= service
    for name in SCALED:
        comp = pipeline["components"][name]
        comp["capacity_per_replica"] *= capacity
        comp["service_time_s"] *= service
    return doc


def main(argv: list[str]) -> int:
    split = argv.index("--") if "--" in argv else len(argv)
    own, rest = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--capacity", type=float, default=1.0)
    parser.add_argument("--service", type=float, default=1.0)
    parser.add_argument("--unscaled-serve-intervals", action="store_true")
    args = parser.parse_args(own)
    for name, sl in list(scenario.SLICES.items()):
        scenario.SLICES[name] = dataclasses.replace(sl, rate_scale=sl.rate_scale * args.rate)
    probe_file: Path | None = None
    if args.capacity != 1.0 or args.service != 1.0:
        probe_file = HERE / "pipeline_chain_probe.yaml"
        doc = scaled_chain(args.capacity, args.service)
        probe_file.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        scenario.PIPELINES["chain"] = probe_file
    if args.unscaled_serve_intervals:
        time_scale = scenario.Scenario.time_scale
        if "--time-scale" in rest:
            time_scale = float(rest[rest.index("--time-scale") + 1])
        for key in scenario.RAY_SERVE_ENV_S:
            scenario.RAY_SERVE_ENV_S[key] *= time_scale
    import run  # after the scenario is changed: run.py reads it

    try:
        return run.main(rest)
    finally:
        if probe_file is not None:
            probe_file.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
