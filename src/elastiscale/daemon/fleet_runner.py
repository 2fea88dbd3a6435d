"""The run loop of a fleet: several units (pipelines, or pipelines merged because they share a
component) in one daemon process, each with its own `Engine` and adapters, on one tick loop.

With `daemon.sharding.enabled`, the process is one replica of many: a `ShardLoop` keeps its
member and unit Leases (see `elastiscale.daemon.shards`), and at each unit's tick the unit is
stepped only while this replica holds the unit's Lease, checked just before that unit's step.
A unit's adapters are built the first time the replica holds it (a warm start from the metric
history then fills the learning policies), and kept while it comes and goes. Without sharding
every unit is acted on.

Journal entries name their unit (`"unit": "<name>"`); each loop pass also writes one `tick`
entry with its wall and CPU seconds, the names of the units stepped and how many were due
(`scheduled`: 0 for a pass that only steps units just taken over, at once rather than at their
next tick); the fleet benchmark and tests read them.
`/healthz`, `/readyz`, `/metrics` and `/decisions` are served as for one pipeline, components
named `<unit>/<component>`; `/metrics` adds `elastiscale_units` and `elastiscale_units_acting`.

Signals: SIGTERM and SIGINT end the loop after the current pass and release every Lease held;
SIGHUP is logged and ignored (a fleet's units change at the next start).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from prometheus_client import Gauge

from elastiscale.config import Config
from elastiscale.config.daemon import parse_listen
from elastiscale.daemon.http import StatusServer
from elastiscale.daemon.journal import Journal
from elastiscale.daemon.runner import STALL_INTERVALS, RunOptions, open_journal
from elastiscale.daemon.runtime import TRANSIENT, Runtime, build_runtime, declare_gpu_pools
from elastiscale.daemon.shards import ShardLoop, resolve_shard_settings
from elastiscale.daemon.status import DaemonStatus, TickSnapshot
from elastiscale.daemon.telemetry import DaemonMetrics
from elastiscale.decision import DecisionRecord

log = logging.getLogger("elastiscale.daemon.fleet")


class UnitJournal(Journal):
    """The daemon's journal seen by one unit: every entry names the unit."""

    def __init__(self, parent: Journal, unit: str) -> None:  # shares the parent's file
        self.parent = parent
        self.unit = unit
        self.path = parent.path
        self.run_id = parent.run_id

    def next_id(self) -> str:
        return self.parent.next_id()

    def write(
        self,
        kind: str,
        at_s: float,
        fields: Mapping[str, Any] | None = None,
        *,
        sync: bool = False,
        **more: Any,
    ) -> None:
        self.parent.write(kind, at_s, fields, sync=sync, unit=self.unit, **more)

    def flush(self) -> None:
        self.parent.flush()

    def open(self) -> None:
        self.parent.open()

    def close(self) -> None:
        """The parent's file stays open: the daemon closes it."""


@dataclass
class _Unit:
    name: str
    config: Config
    due_mono_s: float = 0.0
    runtime: Runtime | None = None
    ticks: int = 0
    acting: bool = False
    build_failures: int = 0
    next_build_s: float = float("-inf")


@dataclass(frozen=True, slots=True)
class PassStats:
    """One pass of the loop: the units stepped and what it cost."""

    units: tuple[str, ...]
    wall_s: float
    cpu_s: float


class FleetDaemon:
    """Several units' control loops in one process (see the module docstring).

    `units` are (name, config) pairs with unique names (the sharding keys); the `daemon:`
    section of the first config is the process's (listen address, journal, sharding).
    `fleet_name` names the fleet in Lease names when `daemon.sharding.name` does not."""

    def __init__(
        self,
        units: Sequence[tuple[str, Config]],
        options: RunOptions,
        fleet_name: str | None = None,
    ) -> None:
        if not units:
            raise ValueError("a fleet needs at least one unit")
        names = [name for name, _ in units]
        if len(set(names)) != len(names):
            raise ValueError(f"unit names must be unique: {names}")
        self.options = options
        self.config = units[0][1]
        daemon = self.config.daemon
        self.units = [_Unit(name, config) for name, config in units]
        declare_gpu_pools(config for _, config in units)  # their minimums reserved up front
        self.shards: ShardLoop | None = None
        identity = options.identity
        interval_s = min(config.control.interval_s for _, config in units)
        if daemon.sharding.enabled and not options.dry_run:
            settings = resolve_shard_settings(
                self.config, fleet_name, options.identity, tick_s=interval_s
            )
            if settings.lease.renew_s < daemon.sharding.retry_period_s:
                log.info(
                    "daemon.sharding.retry_period_s = %g s runs as one tick, %g s (a dead "
                    "replica's units are taken over within lease duration + one tick)",
                    daemon.sharding.retry_period_s,
                    settings.lease.renew_s,
                )
            identity = settings.lease.identity
            self.shards = ShardLoop(
                settings, names, on_error=self._error, on_round=self._taken_over
            )
        self.identity = identity or f"pid-{os.getpid()}"
        stall_after_s = max(60.0, STALL_INTERVALS * interval_s)
        label = fleet_name or daemon.sharding.name or "fleet"
        self.status = DaemonStatus(label, self.identity, stall_after_s, daemon.decisions_kept)
        self.status.dry_run = options.dry_run
        if self.shards is not None:
            self.status.leader = False
        self.metrics = DaemonMetrics(self.status)
        self.units_gauge = Gauge(
            "elastiscale_units", "Units this daemon runs", registry=self.metrics.registry
        )
        self.units_gauge.set(len(self.units))
        self.acting_gauge = Gauge(
            "elastiscale_units_acting",
            "Units this replica holds the Lease of and steps (all of them without sharding)",
            registry=self.metrics.registry,
        )
        self.journal = Journal(
            options.journal_path or daemon.journal_path,
            max_bytes=daemon.journal_max_bytes,
            keep=daemon.journal_keep,
            fsync=daemon.journal_fsync,
        )
        self.http: StatusServer | None = None
        self.passes = 0
        self.stop_reason = "finished"
        self._stop = threading.Event()
        #: Set after each shard round: a unit just taken over is stepped without waiting for
        #: its next tick.
        self._wake = threading.Event()
        self._previous_handlers: dict[int, Any] = {}

    # --- start and stop -----------------------------------------------------------------------

    def start(self, serve_http: bool = True) -> None:
        open_journal(self.journal, self.status, [unit.config for unit in self.units])
        self.journal.write(
            "start",
            time.time(),
            sync=True,
            pid=os.getpid(),
            identity=self.identity,
            config=str(self.options.config_path),
            dry_run=self.options.dry_run,
            units=[unit.name for unit in self.units],
            in_flight=[c.to_dict() for c in self.status.in_flight_at_start],
        )
        if serve_http:
            host, port = parse_listen(self.options.listen or self.config.daemon.listen)
            self.http = StatusServer(host, port, self.status, self.metrics)
            self.http.start()
            log.info("serving /healthz /readyz /metrics /decisions on %s", self.http.url)
        if self.shards is not None:
            self.shards.round_now()
            if not self.options.once:
                self.shards.start()
        now = time.monotonic()
        for unit in self.units:
            unit.due_mono_s = now

    def shutdown(self) -> None:
        """Release the Leases, close the adapters and the journal, stop serving."""
        if self.shards is not None:
            self.shards.stop(release=True)
        for unit in self.units:
            if unit.runtime is not None:
                unit.runtime.close()
        try:
            self.journal.write("stop", time.time(), sync=True, reason=self.stop_reason)
        except OSError as exc:
            log.error("journal: %s", exc)
        self.journal.close()
        if self.http is not None:
            self.http.stop()
        log.info("stopped (%s)", self.stop_reason)

    def request_stop(self, reason: str) -> None:
        self.stop_reason = reason
        self._stop.set()
        self._wake.set()

    def run(self) -> int:
        self._install_signals()
        try:
            try:
                self.start(serve_http=not self.options.once)
            except BaseException as exc:
                self.stop_reason = f"start failed: {type(exc).__name__}"
                raise
            if self.options.once:
                self.run_pass(force=True)
                return 0 if self.status.tick_error is None else 1
            while not self._stop.is_set():
                self.run_pass()
                due_s = min(unit.due_mono_s for unit in self.units)
                self._wake.wait(max(0.0, due_s - time.monotonic()))
                self._wake.clear()
        finally:
            self.shutdown()
            self._restore_signals()
        return 0

    # --- one pass -----------------------------------------------------------------------------

    def run_pass(self, force: bool = False) -> PassStats:
        """Step every unit whose tick is due (all with `force`) and this replica holds, and
        every unit it has just taken over (its next tick stays on schedule)."""
        self.status.heartbeat(time.monotonic())
        started_wall, started_cpu = time.perf_counter(), time.process_time()
        now_s = time.time()
        records: list[DecisionRecord] = []
        ready: dict[str, int] = {}
        edges: list[tuple[str, str]] = []
        errors: list[str] = []
        stepped: list[str] = []
        due = 0
        for unit in self.units:
            mono_s = time.monotonic()
            if force or mono_s >= unit.due_mono_s:
                interval_s = unit.config.control.interval_s
                unit.due_mono_s += interval_s
                if unit.due_mono_s <= mono_s:  # overran: skip the missed ticks, keeping phase
                    missed = math.floor((mono_s - unit.due_mono_s) / interval_s) + 1
                    unit.due_mono_s += missed * interval_s
                due += 1
            elif unit.acting or self.shards is None or not self.shards.acting(unit.name):
                continue  # not due, and not just taken over
            if not self._may_act(unit):
                continue
            error = self._step(unit, now_s, records, ready, edges)
            if unit.runtime is not None:
                stepped.append(unit.name)
            if error is not None:
                errors.append(f"{unit.name}: {error}")
        self.passes += 1
        stats = PassStats(
            tuple(stepped), time.perf_counter() - started_wall, time.process_time() - started_cpu
        )
        acting = sum(unit.acting for unit in self.units)
        if due or stepped:  # a replica holding nothing still shows a finished tick
            self._publish(now_s, stats, records, ready, edges, errors, acting, due)
        return stats

    def _may_act(self, unit: _Unit) -> bool:
        acting = self.shards is None or self.shards.acting(unit.name)
        if acting != unit.acting:
            log.info("unit %s: %s", unit.name, "acting" if acting else "not held: not acting")
            unit.acting = acting
        return acting

    def _step(
        self,
        unit: _Unit,
        now_s: float,
        records: list[DecisionRecord],
        ready: dict[str, int],
        edges: list[tuple[str, str]],
    ) -> str | None:
        runtime = self._ensure_runtime(unit, now_s)
        if runtime is None:
            return "not running"
        unit.ticks += 1
        runtime.engine.dry_run = self.options.dry_run
        runtime.actuator.begin_tick(unit.ticks, now_s)
        error: str | None = None
        got: list[DecisionRecord] = []
        try:
            got = runtime.engine.step(now_s)
        except Exception as exc:
            log.exception("unit %s: tick %d failed", unit.name, unit.ticks)
            error = f"{type(exc).__name__}: {exc}"
            self.metrics.error("tick")
        try:
            for record in got:
                if record.outcome != "unchanged":
                    self.journal.write(
                        "decision", now_s, record.to_dict(), tick=unit.ticks, unit=unit.name
                    )
        except OSError as exc:
            log.error("journal write failed: %s", exc)
            self.metrics.error("journal")
        prefix = f"{unit.name}/"
        records.extend(dataclasses.replace(r, component=prefix + r.component) for r in got)
        for name, state in runtime.actuator.last_read.items():
            ready[prefix + name] = state.ready
        edges.extend((prefix + e.source, prefix + e.target) for e in runtime.engine.pipeline.edges)
        return error

    def _publish(
        self,
        now_s: float,
        stats: PassStats,
        records: list[DecisionRecord],
        ready: dict[str, int],
        edges: list[tuple[str, str]],
        errors: list[str],
        acting: int,
        scheduled: int,
    ) -> None:
        try:
            if stats.units:
                self.journal.write(
                    "tick",
                    now_s,
                    units=list(stats.units),
                    scheduled=scheduled,
                    acting=acting,
                    wall_s=round(stats.wall_s, 6),
                    cpu_s=round(stats.cpu_s, 6),
                )
            self.journal.flush()
        except OSError as exc:
            log.error("journal write failed: %s", exc)
            self.metrics.error("journal")
        snapshot = TickSnapshot(
            tick=self.passes,
            at_s=now_s,
            duration_s=stats.wall_s,
            ok=not errors,
            leader=acting > 0,
            records=tuple(records),
            ready=ready,
            edges=tuple(edges),
        )
        if self.shards is not None:
            self.status.leader = acting > 0
        self.acting_gauge.set(acting)
        error = "; ".join(errors) if errors else None
        self.status.publish(snapshot, None, None, error)
        self.metrics.record_tick(snapshot)
        self.status.heartbeat(time.monotonic())

    def _ensure_runtime(self, unit: _Unit, now_s: float) -> Runtime | None:
        if unit.runtime is not None:
            return unit.runtime
        if now_s < unit.next_build_s:
            return None
        try:
            unit.runtime = build_runtime(
                unit.config,
                dry_run=self.options.dry_run,
                journal=UnitJournal(self.journal, unit.name),
                on_error=self.metrics.error,
            )
        except TRANSIENT as exc:
            unit.build_failures += 1
            delay_s = min(
                unit.config.daemon.metrics_backoff_max_s,
                unit.config.control.interval_s * 2 ** (unit.build_failures - 1),
            )
            unit.next_build_s = now_s + delay_s
            self.metrics.error("build")
            log.warning("unit %s cannot start yet (retry in %.0f s): %s", unit.name, delay_s, exc)
            return None
        unit.build_failures = 0
        log.info("unit %s: %s", unit.name, ", ".join(unit.runtime.engine.pipeline.order))
        unit.runtime.warm_start(now_s)
        return unit.runtime

    def _taken_over(self) -> None:
        """After a shard round (on its thread): wake the loop when a unit became held."""
        shards = self.shards
        if shards is not None and any(
            not unit.acting and shards.acting(unit.name) for unit in self.units
        ):
            self._wake.set()

    def _error(self, kind: str) -> None:
        self.metrics.error(kind)

    # --- signals ------------------------------------------------------------------------------

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _restore_signals(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            log.warning("SIGHUP: a fleet's units change at the next start; ignored")
        else:
            self.request_stop(signal.Signals(signum).name)
