"""`elastiscale capacity PIPELINE --trace T --gpus N [--policy P ...] --out DIR`

For each policy, the highest `--rate-scale` at which it still meets `slo.attainment_target`
with at most N GPUs in use at any time (`backtest.capacity`); writes `DIR/capacity.json`

    {"gpus": N, "policies": {"NAME": {"max_rate_scale": X, "slo_attainment": A,
                                      "gpu_hours": G}}}

(`null` where not even the smallest scale held) and `DIR/capacity.md`, and prints the table.
Exit codes: 0 done; 2 bad input, one line naming the file, field or value.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import ValidationError

from elastiscale.backtest.api import BacktestError
from elastiscale.config import load_config
from elastiscale.config.fleet import is_fleet_file, load_unit
from elastiscale.errors import ConfigError, RegistryError, TraceError

DEFAULT_OUT = "out/capacity"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", help="pipeline YAML file, or a fleet file (one unit)")
    parser.add_argument(
        "--unit",
        metavar="NAME",
        help="with a fleet file: the unit to size, by its name or one of its pipelines'",
    )
    parser.add_argument("--trace", required=True, metavar="FILE", help="arrival trace (CSV)")
    parser.add_argument("--gpus", required=True, type=float, metavar="N", help="GPU budget")
    parser.add_argument(
        "--policy",
        action="append",
        dest="policies",
        metavar="NAME",
        help="policy to size (repeatable; default: static-peak, hpa, elastiscale)",
    )
    parser.add_argument(
        "--out", default=DEFAULT_OUT, metavar="DIR", help=f"output directory ({DEFAULT_OUT})"
    )
    parser.add_argument("--start", type=float, default=None, metavar="S", help="first second")
    parser.add_argument("--end", type=float, default=None, metavar="S", help="last second")
    parser.add_argument(
        "--warmup", type=float, default=0.0, metavar="S", help="simulated, not scored (0)"
    )
    parser.add_argument(
        "--precision", type=float, default=0.02, metavar="F", help="bisection stops within F"
    )
    parser.add_argument(
        "--fidelity", choices=("fast", "discrete-event"), default="fast", help="simulator"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the simulation (0)")


def run(args: argparse.Namespace) -> int:
    from elastiscale.backtest.capacity import capacity, markdown, to_json_dict

    try:
        if is_fleet_file(args.pipeline):
            config = load_unit(args.pipeline, args.unit)
        elif args.unit is not None:
            raise ConfigError([f"--unit: {args.pipeline} is not a fleet file"])
        else:
            config = load_config(args.pipeline)
        results = capacity(
            config,
            args.trace,
            args.gpus,
            args.policies,
            precision=args.precision,
            fidelity=args.fidelity,
            start_s=args.start,
            end_s=args.end,
            warmup_s=args.warmup,
            seed=args.seed,
        )
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{args.pipeline}: {problem}", file=sys.stderr)
        return 2
    except (TraceError, RegistryError) as exc:
        print(" ".join(str(exc).split("\n")), file=sys.stderr)
        return 2
    except (BacktestError, ValueError, ValidationError) as exc:
        print(f"elastiscale capacity: {' '.join(str(exc).splitlines()[:1])}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = to_json_dict(args.gpus, results)
    (out / "capacity.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    text = markdown(config, Path(args.trace).name, args.gpus, results)
    (out / "capacity.md").write_text(text, encoding="utf-8")
    print(text.split("\n## Runs")[0].rstrip())
    print(f"\nwrote capacity.json and capacity.md to {out}/")
    return 0
