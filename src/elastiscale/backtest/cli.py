"""`elastiscale backtest PIPELINE.yaml --trace FILE [--policy NAME ...] [--out DIR] ...`

Replays the trace through each policy, writes `DIR/report.json`, `DIR/report.md` and PNG plots,
and prints the comparison table. Instead of a file, the ingress history can come from Prometheus:

    elastiscale backtest agent.yaml --prometheus http://prometheus:9090 \\
        --ingress-query 'sum(rate(router_requests_total[1m]))' \\
        --start now-7d --end now --step 10s

With `--trace`, `--start`/`--end` are seconds of the file's own time; with `--prometheus` they
are times (ISO 8601 with a zone, Unix seconds, `now`, `now-7d`), read the same way as by
`elastiscale export-trace`.

Exit codes: 0 done; 1 the Prometheus server could not be reached; 2 bad input (the pipeline
file, the trace, a policy that cannot be built, inconsistent options), each reported on stderr
as one line per problem naming the file, field, row or value.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from elastiscale.backtest.api import (
    DEFAULT_METRICS_DELAY_S,
    DEFAULT_RATE_WINDOW_S,
    BacktestError,
    backtest,
)
from elastiscale.config import Config
from elastiscale.config.fleet import is_fleet_file
from elastiscale.config.loading import load_with_scenario
from elastiscale.errors import (
    ConfigError,
    MetricSourceError,
    RegistryError,
    TraceError,
    one_line,
)
from elastiscale.extras import MissingExtraError, require
from elastiscale.trace import Trace

DEFAULT_OUT = "out/backtest"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", help="pipeline YAML file, or a fleet file (one unit)")
    parser.add_argument(
        "--unit",
        metavar="NAME",
        help="with a fleet file: the unit to replay, by its name or one of its pipelines' "
        "(needed when the fleet has several); the trace arrives at every pipeline's ingress",
    )
    source = parser.add_argument_group("ingress history (a trace file or Prometheus)")
    source.add_argument("--trace", metavar="FILE", help="arrival trace, CSV or gzipped CSV")
    source.add_argument(
        "--ingress-query",
        metavar="PROMQL",
        help="with --prometheus: the ingress requests per second",
    )
    source.add_argument(
        "--start",
        default=None,
        metavar="S",
        help="first second replayed (--trace: seconds of the file; --prometheus: a time such "
        "as 2024-05-01T00:00:00Z or now-7d)",
    )
    source.add_argument(
        "--end", default=None, metavar="S", help="where the replay stops (as --start)"
    )
    source.add_argument("--step", default="10s", help="with --prometheus: bin width (10s)")
    source.add_argument(
        "--fill-gaps",
        action="store_true",
        help="with --prometheus: count bins without data as zero requests",
    )
    parser.add_argument(
        "--policy",
        action="append",
        dest="policies",
        metavar="NAME",
        help="policy to run (repeatable; default: every built-in policy available, plus the "
        "pipeline file's own); a name the file's `policies:` configures runs with its params",
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
        help="control interval (default: the policy's own, else the file's control.interval_s)",
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
        "--scenario",
        metavar="FILE",
        help="YAML file with a scenario: section drifting the simulated truth (capacity, "
        "service time, start-up of a component at a time); the policies see only metrics",
    )
    parser.add_argument(
        "--no-ceiling",
        action="store_true",
        help="skip the ceiling run (every component at max replicas): no avoidable misses",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (it shows only when stderr is a terminal)",
    )
    from elastiscale.adapters.prometheus.cli import add_connection_arguments

    add_connection_arguments(parser, required=False)


def _fail(message: str, code: int = 2) -> int:
    print(" ".join(message.split("\n")), file=sys.stderr)
    return code


def _seconds(flag: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise BacktestError(
            f"{flag} = {text!r}: with --trace, a number of seconds of the trace's own time"
        ) from None


def _history(args: argparse.Namespace) -> Trace:
    """The ingress trace from Prometheus, read as `elastiscale export-trace` reads it.

    Bad flags and refused queries raise `BacktestError`; an unreachable server raises
    `MetricSourceError`.
    """
    from elastiscale.adapters.prometheus.cli import trace_from_args
    from elastiscale.adapters.prometheus.history import MAX_POINTS_PER_QUERY
    from elastiscale.adapters.prometheus.http import PromQLError

    if not args.ingress_query:
        raise BacktestError("--prometheus needs --ingress-query PROMQL (ingress requests/s)")
    if args.start is None or args.end is None:
        raise BacktestError("--prometheus needs --start and --end (e.g. now-7d and now)")
    fetch = argparse.Namespace(**vars(args), max_points=MAX_POINTS_PER_QUERY)
    try:
        trace: Trace = trace_from_args(fetch, args.ingress_query)
    except (ValueError, ValidationError, PromQLError) as exc:  # ValidationError: bad flags
        raise BacktestError(one_line(exc)) from None
    return trace


def _fleet_unit(args: argparse.Namespace) -> Config:
    """The merged config of the fleet unit `--unit` names (the only unit when there is one).

    A unit's config is an ordinary pipeline whose ingress components are those of all its
    pipelines: the trace arrives at each, as at every ingress of any pipeline."""
    from elastiscale.config.fleet import load_unit

    if args.scenario is not None:
        raise BacktestError("--scenario: not supported with a fleet file")
    return load_unit(args.pipeline, args.unit)


def run(args: argparse.Namespace) -> int:
    progress = sys.stderr.isatty() and not args.no_progress
    try:
        if not args.no_plots:  # before the run, not after it: say which extra draws them
            require("matplotlib", "plots", "backtest plots (or pass --no-plots)")
        if (args.trace is None) == (args.prometheus is None):
            raise BacktestError("give the ingress history as --trace FILE or --prometheus URL")
        if args.trace is not None:
            trace: str | Trace = args.trace
            start_s, end_s = _seconds("--start", args.start), _seconds("--end", args.end)
        else:
            trace, start_s, end_s = _history(args), None, None
        pipeline: str | Config = args.pipeline
        if is_fleet_file(args.pipeline):
            pipeline = _fleet_unit(args)
        elif args.unit is not None:
            raise BacktestError(f"--unit: {args.pipeline} is not a fleet file")
        elif args.scenario is not None:
            pipeline = load_with_scenario(args.pipeline, args.scenario)
        report = backtest(
            pipeline,
            trace,
            args.policies,
            fidelity=args.fidelity,
            time_scale=args.time_scale,
            rate_scale=args.rate_scale,
            start_s=start_s,
            end_s=end_s,
            warmup_s=args.warmup,
            interval_s=args.interval,
            metrics_delay_s=args.metrics_delay,
            rate_window_s=args.rate_window,
            seed=args.seed,
            progress=progress,
            ceiling=not args.no_ceiling,
        )
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{args.pipeline}: {problem}", file=sys.stderr)
        return 2
    except (TraceError, RegistryError) as exc:
        return _fail(str(exc))
    except BacktestError as exc:
        return _fail(f"elastiscale backtest: {exc}")
    except MissingExtraError as exc:
        return _fail(f"elastiscale backtest: {exc}")
    except MetricSourceError as exc:
        return _fail(f"elastiscale backtest: {exc}", code=1)
    written = report.write(args.out, plots=not args.no_plots)
    print(report.summary())
    print()
    print(report.ceiling_line())
    print()
    print(report.table())
    print()
    print(f"wrote {len(written)} files to {args.out}/ in {report.elapsed_s:.1f} s")
    return 0
