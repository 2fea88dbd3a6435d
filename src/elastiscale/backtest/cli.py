"""`elastiscale backtest PIPELINE.yaml --trace FILE [--policy NAME ...] [--out DIR] ...`

Replays the trace through each policy, writes `DIR/report.json`, `DIR/report.md` and PNG plots,
and prints the comparison table. Exit codes: 0 done, 2 bad input (the pipeline file, the trace,
a policy that cannot be built, inconsistent options), each reported on stderr as one line per
problem naming the file, field, row or value.
"""

from __future__ import annotations

import argparse
import sys

from elastiscale.backtest.api import (
    DEFAULT_METRICS_DELAY_S,
    DEFAULT_RATE_WINDOW_S,
    BacktestError,
    backtest,
)
from elastiscale.errors import ConfigError, RegistryError, TraceError

DEFAULT_OUT = "out/backtest"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", help="pipeline YAML file")
    parser.add_argument(
        "--trace", required=True, metavar="FILE", help="arrival trace, CSV or gzipped CSV"
    )
    parser.add_argument(
        "--policy",
        action="append",
        dest="policies",
        metavar="NAME",
        help="policy to run (repeatable; default: every built-in policy available, plus the "
        "pipeline file's own)",
    )
    parser.add_argument(
        "--out", default=DEFAULT_OUT, metavar="DIR", help=f"output directory ({DEFAULT_OUT})"
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        metavar="X",
        help="multiply trace times by X (below 1 compresses)",
    )
    parser.add_argument(
        "--rate-scale", type=float, default=1.0, metavar="Y", help="multiply arrivals by Y"
    )
    parser.add_argument(
        "--start", type=float, default=None, metavar="S", help="first trace second replayed"
    )
    parser.add_argument(
        "--end", type=float, default=None, metavar="S", help="trace second the replay stops at"
    )
    parser.add_argument(
        "--fidelity",
        choices=("fast", "discrete-event"),
        default="fast",
        help="fast (fluid, default) or discrete-event (per request, the reference)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds at the start simulated for every policy and scored for none (0)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        metavar="S",
        help="control interval (default: the file's control.interval_s)",
    )
    parser.add_argument(
        "--metrics-delay",
        type=float,
        default=DEFAULT_METRICS_DELAY_S,
        metavar="S",
        help=f"reporting delay of the simulated metrics ({DEFAULT_METRICS_DELAY_S:g})",
    )
    parser.add_argument(
        "--rate-window",
        type=float,
        default=DEFAULT_RATE_WINDOW_S,
        metavar="S",
        help=f"window of the simulated rates ({DEFAULT_RATE_WINDOW_S:g})",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the simulation (0)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when stderr is a terminal)",
    )


def _fail(message: str) -> int:
    print(" ".join(message.split("\n")), file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        report = backtest(
            args.pipeline,
            args.trace,
            args.policies,
            fidelity=args.fidelity,
            time_scale=args.time_scale,
            rate_scale=args.rate_scale,
            start_s=args.start,
            end_s=args.end,
            warmup_s=args.warmup,
            interval_s=args.interval,
            metrics_delay_s=args.metrics_delay,
            rate_window_s=args.rate_window,
            seed=args.seed,
            progress=progress,
        )
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{args.pipeline}: {problem}", file=sys.stderr)
        return 2
    except (TraceError, RegistryError) as exc:
        return _fail(str(exc))
    except BacktestError as exc:
        return _fail(f"elastiscale backtest: {exc}")
    written = report.write(args.out, plots=not args.no_plots)
    print(report.summary())
    print()
    print(report.table())
    print()
    print(f"wrote {len(written)} files to {args.out}/ in {report.elapsed_s:.1f} s")
    return 0
