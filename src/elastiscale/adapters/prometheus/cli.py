"""`elastiscale export-trace`: write Prometheus history as a trace file in the shared format.

    elastiscale export-trace --prometheus http://prometheus:9090 \\
        --query 'sum(rate(vllm:request_success_total[1m]))' \\
        --start 2024-05-01T00:00:00Z --end 2024-05-08T00:00:00Z --step 10s --out week.csv.gz

Times are ISO 8601 with a zone (`Z`, `+02:00`), Unix seconds, `now` or `now-7d`; steps and
durations are `10s`, `1m`, `1h30m` or seconds. `--column input_tokens=PROMQL` adds per-bin
sums from other rate queries.

The flag helpers (`add_connection_arguments`, `add_range_arguments`, `trace_from_args`) are
shared with `elastiscale backtest --prometheus URL --ingress-query PROMQL`, so both commands
read history the same way.

Exit codes: 0 written; 1 the server could not be reached; 2 bad arguments, a refused query,
or data that cannot be a trace (several series, gaps).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from elastiscale.adapters.prometheus.history import (
    MAX_POINTS_PER_QUERY,
    fetch_trace,
    iso,
    write_trace,
)
from elastiscale.adapters.prometheus.http import (
    AuthParams,
    ConnectionParams,
    PromQLError,
    TLSParams,
)
from elastiscale.adapters.prometheus.promql import parse_duration_s
from elastiscale.errors import MetricSourceError, TraceError, one_line
from elastiscale.trace import Trace


def parse_time_s(text: str, now_s: float) -> float:
    """Unix seconds from ISO 8601 with a zone, Unix seconds, `now` or `now-<duration>`."""
    raw = text.strip()
    if raw == "now":
        return now_s
    if raw.startswith("now-"):
        return now_s - parse_duration_s(raw[4:])
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        when = _dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time (ISO 8601 such as 2024-05-01T00:00:00Z, Unix seconds, "
            "now, now-7d)"
        ) from None
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone; add Z (UTC) or an offset such as +02:00")
    return when.timestamp()


def add_connection_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """`--prometheus URL` and its auth, TLS and timeout flags."""
    group = parser.add_argument_group("Prometheus server")
    group.add_argument("--prometheus", metavar="URL", required=required, help="server URL")
    group.add_argument("--bearer-token-file", type=Path, help="file holding a bearer token")
    group.add_argument("--username", help="HTTP basic auth user")
    group.add_argument("--password-file", type=Path, help="file holding the basic auth password")
    group.add_argument("--ca-file", type=Path, help="CA bundle to verify the server with")
    group.add_argument(
        "--insecure-skip-verify", action="store_true", help="do not verify the server's TLS"
    )
    group.add_argument("--timeout", default="30s", help="per-request timeout (default 30s)")


def add_range_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """`--start`, `--end`, `--step`, `--max-points`, `--fill-gaps`, `--no-progress`."""
    group = parser.add_argument_group("time range")
    group.add_argument("--start", required=required, help="first bin's start (ISO 8601, now-7d)")
    group.add_argument("--end", required=required, help="last bin's end (ISO 8601, now)")
    group.add_argument("--step", default="10s", help="bin width (default 10s)")
    group.add_argument(
        "--max-points",
        type=int,
        default=MAX_POINTS_PER_QUERY,
        help=f"points per range query (default {MAX_POINTS_PER_QUERY}, the server's limit)",
    )
    group.add_argument(
        "--fill-gaps", action="store_true", help="count bins without data as zero requests"
    )
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def connection_from_args(args: argparse.Namespace) -> ConnectionParams:
    """`ConnectionParams` from the flags of `add_connection_arguments`; ValueError when bad."""
    auth = None
    if args.bearer_token_file or args.username or args.password_file:
        auth = AuthParams(
            bearer_token_file=args.bearer_token_file,
            username=args.username,
            password_file=args.password_file,
        )
    tls = TLSParams(ca_file=args.ca_file, insecure_skip_verify=args.insecure_skip_verify)
    return ConnectionParams(
        url=args.prometheus,
        timeout_s=parse_duration_s(args.timeout),
        retries=2,
        auth=auth,
        tls=tls,
    )


def trace_from_args(
    args: argparse.Namespace,
    query: str,
    columns: Mapping[str, str] | None = None,
    now_s: float | None = None,
) -> Trace:
    """Fetch the trace the flags describe. Raises ValueError or ValidationError (bad flags),
    `TraceError`, `PromQLError` or `MetricSourceError` (see `fetch_trace`)."""
    now = time.time() if now_s is None else now_s
    start_s = parse_time_s(args.start, now)
    end_s = parse_time_s(args.end, now)
    return fetch_trace(
        connection_from_args(args),
        query,
        start_s,
        end_s,
        parse_duration_s(args.step),
        columns=columns,
        name=f"prometheus {query} {iso(start_s)}..{iso(end_s)}",
        max_points_per_query=args.max_points,
        progress=False if args.no_progress else None,
        fill_gaps=args.fill_gaps,
    )


def _column(text: str) -> tuple[str, str]:
    name, sep, query = text.partition("=")
    if not sep or not name.strip() or not query.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=PROMQL")
    if name.strip() in ("t_seconds", "requests"):
        raise argparse.ArgumentTypeError(f"{text!r}: {name.strip()} is a reserved column")
    return name.strip(), query.strip()


def configure(parser: argparse.ArgumentParser) -> None:
    add_connection_arguments(parser)
    parser.add_argument("--query", required=True, help="PromQL giving requests per second")
    add_range_arguments(parser)
    parser.add_argument(
        "--column",
        action="append",
        type=_column,
        default=[],
        metavar="NAME=PROMQL",
        help="an extra per-bin column from a rate query (e.g. input_tokens=...)",
    )
    parser.add_argument("--out", required=True, type=Path, help="trace file (.csv or .csv.gz)")


def run(args: argparse.Namespace) -> int:
    try:
        trace = trace_from_args(args, args.query, dict(args.column))
    except (ValueError, ValidationError) as exc:
        print(f"export-trace: {one_line(exc)}", file=sys.stderr)
        return 2
    except (TraceError, PromQLError) as exc:
        print(f"export-trace: {exc}", file=sys.stderr)
        return 2
    except MetricSourceError as exc:
        print(f"export-trace: {exc}", file=sys.stderr)
        return 1
    try:
        write_trace(trace, args.out)
    except OSError as exc:
        print(f"export-trace: {args.out}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(
        f"{args.out}: {len(trace)} bins of {trace.bin_s:g} s, "
        f"{float(trace.requests.sum()):.6g} requests"
    )
    return 0
