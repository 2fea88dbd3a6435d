"""`elastiscale run CONFIG.yaml [--once] [--dry-run]`: the sidecar daemon.

Exit codes: 0 stopped by SIGTERM/SIGINT (or `--once` ran its tick), 1 a failure while running
(the journal or the address cannot be opened, `--once` whose tick failed), 2 the config is
invalid or cannot run (one line per problem, naming the field).

`--listen`, `--journal` and `--log-format` override the config's `daemon:` section, and so do
the environment variables ELASTISCALE_LISTEN, ELASTISCALE_JOURNAL and ELASTISCALE_LOG_FORMAT
(the flags win); they let one config file serve a laptop and a pod.

ELASTISCALE_CLOCK_OFFSET_FILE names a file holding an offset in seconds added to the wall clock
the daemon reads (`elastiscale.clock.OffsetFileClock`): a drill of clock steps without touching
the host's clock (see docs/reliability.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from elastiscale.clock import Clock, OffsetFileClock, SystemClock
from elastiscale.config import Config, load_config
from elastiscale.config import fleet as fleet_config
from elastiscale.config.daemon import parse_listen
from elastiscale.config.fleet_pools import pool_problems
from elastiscale.daemon.logs import setup_logging
from elastiscale.daemon.runner import Daemon, RunOptions
from elastiscale.daemon.runtime import check_runnable
from elastiscale.daemon.status import TickSnapshot
from elastiscale.daemon.telemetry import decision_reason
from elastiscale.errors import ConfigError, ElastiscaleError

if TYPE_CHECKING:
    from elastiscale.daemon.fleet_runner import FleetDaemon

log = logging.getLogger("elastiscale.daemon")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config",
        type=Path,
        nargs="+",
        metavar="CONFIG.yaml",
        help="pipeline config file; or a fleet file (`fleet:`), or several pipeline files, "
        "each a unit of one fleet daemon (sharded over replicas with daemon.sharding)",
    )
    parser.add_argument("--once", action="store_true", help="run one tick, print it, and exit")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="decide and record, act on nothing (read-only: the forecast-only mode)",
    )
    parser.add_argument(
        "--listen",
        default=os.environ.get("ELASTISCALE_LISTEN"),
        metavar="HOST:PORT",
        help="address of the HTTP endpoints (default: daemon.listen, 127.0.0.1:9464)",
    )
    parser.add_argument(
        "--journal",
        default=os.environ.get("ELASTISCALE_JOURNAL"),
        metavar="PATH",
        help="decision journal file (default: daemon.journal_path)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=os.environ.get("ELASTISCALE_LOG_FORMAT") or None,
        help="log line format (default: daemon.log_format)",
    )
    parser.add_argument(
        "--keda-listen",
        default=os.environ.get("ELASTISCALE_KEDA_LISTEN"),
        metavar="HOST:PORT",
        help="serve KEDA's external scaler gRPC here; KEDA then acts and `actuator:` is "
        "optional and only read (needs the `keda` extra)",
    )
    parser.add_argument(
        "--identity",
        default=None,
        help="name in the leader-election Lease (default: daemon.leader_election.identity, "
        "$POD_NAME, host-pid)",
    )


def _problems(path: Path, lines: list[str]) -> int:
    for line in lines:
        print(f"{path}: {line}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    paths: list[Path] = args.config if isinstance(args.config, list) else [args.config]
    if len(paths) > 1 or is_fleet_file(paths[0]):
        return run_fleet(args, paths)
    path = paths[0]
    try:
        config = load_config(path)
    except ConfigError as exc:
        return _problems(path, exc.problems)
    keda_listen = getattr(args, "keda_listen", None)
    problems = check_runnable(config, args.dry_run, keda=keda_listen is not None)
    problems += pool_problems([config])
    problems += _address_problems("--keda-listen", keda_listen)
    problems += _address_problems("--listen", args.listen)
    if args.log_format not in (None, "text", "json"):  # from the environment, unchecked
        problems.append(f"ELASTISCALE_LOG_FORMAT: {args.log_format!r} is not text or json")
    if problems:
        return _problems(path, problems)
    options = _run_options(args, path, config.daemon.log_format, keda_listen)
    offset_file = os.environ.get("ELASTISCALE_CLOCK_OFFSET_FILE")
    clock: Clock = OffsetFileClock(offset_file) if offset_file else SystemClock()
    return _run_daemon(path, lambda: Daemon(config, options, clock=clock), args.once)


def _address_problems(flag: str, address: str | None) -> list[str]:
    """The problem of an address flag that does not parse as HOST:PORT (none when unset)."""
    if address is None:
        return []
    try:
        parse_listen(address)
    except ValueError as exc:
        return [f"{flag}: {exc}"]
    return []


def _run_options(
    args: argparse.Namespace,
    config_path: Path,
    log_format: Literal["text", "json"],
    keda_listen: str | None = None,
) -> RunOptions:
    """Logging set up (the flag's format, else the config's `log_format`; DEBUG with -v), and
    the run's options from the flags."""
    verbose = int(getattr(args, "verbose", 0) or 0)
    level = logging.DEBUG if verbose > 0 else logging.INFO
    setup_logging(args.log_format or log_format, level)
    return RunOptions(
        config_path=config_path,
        once=args.once,
        dry_run=args.dry_run,
        listen=args.listen,
        journal_path=args.journal,
        identity=args.identity,
        log_format=args.log_format,
        log_level=level,
        keda_listen=keda_listen,
    )


def _run_daemon(label: Path, build: Callable[[], Daemon | FleetDaemon], once: bool) -> int:
    """Build the daemon and run it: its exit code, or a problem of the config or the start
    as one line (2), or a start that cannot open the journal or the address (1). With
    `once`, its tick is printed."""
    try:
        daemon = build()
        code = daemon.run()
    except ConfigError as exc:
        return _problems(label, exc.problems)
    except ElastiscaleError as exc:  # a bad trace file, an unknown plugin...
        return _problems(label, [str(exc)])
    except OSError as exc:  # the journal or the listen address
        log.error("cannot start: %s", exc)
        return 1
    if once:  # one line per component (named <unit>/<component> in a fleet)
        _print_tick(daemon.status.snapshot, daemon.status.readiness().reasons)
    return code


def is_fleet_file(path: Path) -> bool:
    """Whether `path` is a fleet file (a mapping with a top-level `fleet:` key); a file that
    cannot be read is left to the single-pipeline path, which reports it."""
    try:
        return fleet_config.is_fleet_file(path)
    except ConfigError:
        return False


def load_units(paths: list[Path]) -> tuple[list[tuple[str, Config]], str | None]:
    """The units of a fleet file (`elastiscale.config.fleet`), or one unit per pipeline file
    named by its `pipeline.name`; and the fleet's name (None for pipeline files). Raises
    ConfigError naming the file."""
    if len(paths) == 1:
        fleet = fleet_config.load_fleet(paths[0])
        return [(unit.name, unit.config) for unit in fleet.units], fleet.name
    units = []
    seen: dict[str, Path] = {}
    for path in paths:
        config = load_config(path)
        name = config.pipeline.name
        if name in seen:
            raise ConfigError(
                [f"pipeline.name: {name!r} is also the name in {seen[name]} (units need "
                 "unique names)"],
                source=str(path),
            )  # fmt: skip
        seen[name] = path
        units.append((name, config))
    problems = pool_problems(config for _, config in units)  # as `load_fleet` checks
    if problems:
        others = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
        raise ConfigError(problems, source=f"{paths[0]}{others}")
    return units, None


def run_fleet(args: argparse.Namespace, paths: list[Path]) -> int:
    """`elastiscale run` over several units (see `elastiscale.daemon.fleet_runner`)."""
    from elastiscale.daemon.fleet_runner import FleetDaemon

    label = paths[0] if len(paths) == 1 else Path(", ".join(str(p) for p in paths))
    try:
        units, fleet_name = load_units(paths)
    except ConfigError as exc:
        return _problems(Path(exc.source) if exc.source else label, exc.problems)
    problems: list[str] = []
    for name, config in units:
        problems += [f"unit {name}: {p}" for p in check_runnable(config, args.dry_run)]
    problems += _address_problems("--listen", args.listen)
    if getattr(args, "keda_listen", None) is not None:
        problems.append("--keda-listen: not supported with several units")
    first = units[0][1]
    if (
        first.daemon.sharding.enabled
        and not args.dry_run
        and not (first.daemon.sharding.name or fleet_name)
    ):
        problems.append("daemon.sharding.name: required when the units are pipeline files")
    if problems:
        return _problems(label, problems)
    options = _run_options(args, paths[0], first.daemon.log_format)
    return _run_daemon(label, lambda: FleetDaemon(units, options, fleet_name=fleet_name), args.once)


def _print_tick(snapshot: TickSnapshot | None, reasons: tuple[str, ...]) -> None:
    """One line per component: `llm: 3 -> 5 replicas (dry-run; policy:hpa)`."""
    if snapshot is None:
        print("no tick ran: " + "; ".join(reasons))
        return
    for record in snapshot.records:
        print(
            f"{record.component}: {record.current_replicas} -> {record.desired_replicas} "
            f"replicas ({record.outcome}; {decision_reason(record)})"
        )
    if reasons:
        print("not ready: " + "; ".join(reasons))
