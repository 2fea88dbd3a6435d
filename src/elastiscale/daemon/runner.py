"""The run loop of `elastiscale run`: the one place that reads the system clock and sleeps.

At each tick (every `control.interval_s`, on the monotonic clock so a wall-clock jump neither
stalls nor rushes it) the loop passes the wall-clock time to `Engine.step(now_s)`, journals
the decisions that changed something, and publishes the tick to the HTTP endpoints.

- Leader election (when on): a follower runs the engine with `dry_run`, so its policies and
  forecasts see every tick and are warm when it takes over; only the leader acts.
- Faults: a tick that raises is logged with its traceback and the next tick runs on schedule;
  adapters that cannot be built yet (an API server down at start) are retried with backoff.
- Signals: SIGTERM and SIGINT end the loop after the current tick (a tick is never cut in
  half); SIGHUP reloads the config file, and a file that does not validate or build is refused
  with its problems logged while the previous config keeps running.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from elastiscale.clock import Clock, SystemClock
from elastiscale.config import Config, load_config
from elastiscale.config.daemon import parse_listen
from elastiscale.daemon.faults import MissingLoadLog, load_signal
from elastiscale.daemon.http import StatusServer
from elastiscale.daemon.journal import Journal
from elastiscale.daemon.leader import LeaderLoop, resolve_settings, wants_election
from elastiscale.daemon.logs import register_secrets_in, setup_logging
from elastiscale.daemon.runtime import TRANSIENT, Runtime, build_runtime
from elastiscale.daemon.status import DaemonStatus, TickSnapshot
from elastiscale.daemon.telemetry import DaemonMetrics
from elastiscale.decision import DecisionRecord
from elastiscale.errors import ConfigError
from elastiscale.keda.board import DesiredReplicas
from elastiscale.keda.server import KedaServer

log = logging.getLogger("elastiscale.daemon")

#: /healthz reports a stall when no tick has finished for this many intervals (at least 60 s).
STALL_INTERVALS = 10
#: A backward step of the wall clock up to this long holds tick times at the last tick's until
#: the clock passes it again; a longer one is followed (see `Daemon.tick_time`).
CLOCK_HOLD_MAX_S = 300.0
#: Steps smaller than this are scheduling jitter, not steps.
CLOCK_STEP_MIN_S = 1.0
#: Sections of `daemon:` that a reload cannot change in a running process.
_RESTART_ONLY = (
    "listen",
    "journal_path",
    "journal_max_bytes",
    "journal_keep",
    "leader_election",
    "sharding",
)


def open_journal(journal: Journal, status: DaemonStatus, configs: Sequence[Config]) -> None:
    """Register the adapters' secrets for redaction, open the journal and report (log and
    status) the changes the previous run left in flight."""
    for config in configs:
        for spec in (config.metrics, config.actuator):
            if spec is not None:
                register_secrets_in(spec.options())
    journal.open()
    in_flight = journal.in_flight()
    for change in in_flight:
        log.warning(
            "in flight when the previous run stopped, outcome unknown (the platform shows "
            "whether it happened): %s",
            change.describe(),
        )
    status.in_flight_at_start = tuple(in_flight)


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Command-line choices; `listen`, `journal_path`, `identity` and `log_format` override
    the config file's `daemon:` section when given."""

    config_path: Path
    once: bool = False
    dry_run: bool = False
    listen: str | None = None
    journal_path: str | None = None
    identity: str | None = None
    log_format: str | None = None
    log_level: int = logging.INFO
    #: KEDA mode: serve KEDA's external scaler on this host:port; KEDA acts (see elastiscale.keda)
    keda_listen: str | None = None


class Daemon:
    """One pipeline's control loop with its endpoints, journal and leader election."""

    def __init__(self, config: Config, options: RunOptions, clock: Clock | None = None) -> None:
        self.config = config
        self.options = options
        self.clock: Clock = clock or SystemClock()
        daemon = config.daemon
        lease = resolve_settings(config, options.identity)
        self.identity = lease.identity
        stall_after_s = max(60.0, STALL_INTERVALS * config.control.interval_s)
        self.status = DaemonStatus(
            config.pipeline.name, self.identity, stall_after_s, daemon.decisions_kept
        )
        self.status.dry_run = options.dry_run
        self.metrics = DaemonMetrics(self.status)
        self.journal = Journal(
            options.journal_path or daemon.journal_path,
            max_bytes=daemon.journal_max_bytes,
            keep=daemon.journal_keep,
            fsync=daemon.journal_fsync,
        )
        self.leader_loop: LeaderLoop | None = None
        if wants_election(config, options.dry_run):
            self.leader_loop = LeaderLoop(lease, on_error=self.metrics.error)
            self.status.leader = False
        self.runtime: Runtime | None = None
        self.http: StatusServer | None = None
        self.keda_board: DesiredReplicas | None = None
        self.keda_server: KedaServer | None = None
        if options.keda_listen is not None:
            self.keda_board = DesiredReplicas(config.pipeline.components)
        self.ticks = 0
        self._build_failures = 0
        self._next_build_s = float("-inf")
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._wake = threading.Event()
        self.stop_reason = "finished"
        self._last_tick_time: tuple[float, float] | None = None  # (tick time, monotonic)
        self._clock_held = False
        self._missing_load = MissingLoadLog()
        self._previous_handlers: dict[int, Any] = {}

    # --- start and stop -----------------------------------------------------------------------

    def start(self, serve_http: bool = True) -> None:
        """Open the journal (reporting changes left in flight by the previous run), bind the
        HTTP server, build the adapters and, with election on, try for the Lease once.

        Raises OSError (journal, address) and the build's non-transient errors."""
        open_journal(self.journal, self.status, [self.config])
        self.journal.write(
            "start",
            self.clock.now_s(),
            sync=True,
            pid=os.getpid(),
            identity=self.identity,
            config=str(self.options.config_path),
            dry_run=self.options.dry_run,
            in_flight=[c.to_dict() for c in self.status.in_flight_at_start],
        )
        if serve_http:
            host, port = parse_listen(self.options.listen or self.config.daemon.listen)
            self.http = StatusServer(host, port, self.status, self.metrics)
            self.http.start()
            log.info("serving /healthz /readyz /metrics /decisions on %s", self.http.url)
        if self.keda_board is not None and self.options.keda_listen and not self.options.once:
            self.keda_server = KedaServer(
                self.options.keda_listen, self.keda_board, self.config.pipeline.name
            )
            self.keda_server.start()
        self._ensure_runtime(self.clock.now_s())
        if self.leader_loop is not None:
            self.leader_loop.attempt_now()
            if not self.options.once:
                self.leader_loop.start()

    def shutdown(self) -> None:
        """Release the Lease, close the adapters and the journal, stop serving."""
        if self.leader_loop is not None:
            self.leader_loop.stop(release=True)
        if self.runtime is not None:
            self.runtime.close()
        try:
            self.journal.write("stop", self.clock.now_s(), sync=True, reason=self.stop_reason)
        except OSError as exc:
            log.error("journal: %s", exc)
        self.journal.close()
        if self.keda_server is not None:
            self.keda_server.stop()
        if self.http is not None:
            self.http.stop()
        log.info("stopped (%s)", self.stop_reason)

    def request_stop(self, reason: str) -> None:
        """End the loop after the current tick (safe from a signal handler)."""
        self.stop_reason = reason
        self._stop.set()
        self._wake.set()

    def request_reload(self) -> None:
        """Reload the config file before the next tick (safe from a signal handler)."""
        self._reload.set()
        self._wake.set()

    # --- the loop -----------------------------------------------------------------------------

    def run(self) -> int:
        """Start, tick until stopped (or once), shut down; the exit code."""
        self._install_signals()
        try:
            try:
                self.start(serve_http=not self.options.once)
            except BaseException as exc:
                self.stop_reason = f"start failed: {type(exc).__name__}"
                raise
            if self.options.once:
                snapshot = self.tick(self.clock.now_s())
                return 0 if snapshot is not None and snapshot.ok else 1
            self._loop()
        finally:
            self.shutdown()
            self._restore_signals()
        return 0

    def _loop(self) -> None:
        due_s = time.monotonic()
        while not self._stop.is_set():
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            if time.monotonic() >= due_s:
                try:
                    self.tick(self.tick_time())
                except Exception:  # tick() contains its own failures; this is the last net
                    log.exception("tick %d failed; the next tick runs as scheduled", self.ticks)
                    self.metrics.error("tick")
                interval_s = self.config.control.interval_s
                due_s += interval_s
                late_s = time.monotonic() - due_s
                if late_s >= 0:
                    skipped = math.floor(late_s / interval_s) + 1
                    due_s += skipped * interval_s
                    log.warning("tick overran its interval; skipping %d tick(s)", skipped)
            self._wake.wait(max(0.0, due_s - time.monotonic()))
            self._wake.clear()

    def tick_time(self) -> float:
        """The time of the next tick: the wall clock, made safe against steps.

        The loop is scheduled on the monotonic clock, so a step never bursts or stalls ticks;
        this keeps the times the engine sees from misleading it. A forward step is followed
        (logged once). After a backward step of up to `CLOCK_HOLD_MAX_S` the tick time stays
        at the last tick's until the wall clock passes it, so windows never run backward and a
        stabilization window is not cut short; a longer backward step is followed (logged),
        and the policies' windows restart as after a new run.
        """
        wall_s = self.clock.now_s()
        mono_s = time.monotonic()
        last = self._last_tick_time
        now_s = wall_s
        if last is not None:
            last_s, last_mono_s = last
            step_s = wall_s - (last_s + (mono_s - last_mono_s))
            if wall_s >= last_s:
                if step_s >= CLOCK_STEP_MIN_S:
                    log.warning(
                        "wall clock stepped forward by %.1f s; ticks stay on schedule", step_s
                    )
                elif self._clock_held:
                    log.info("wall clock has passed the held tick time again")
                self._clock_held = False
            elif last_s - wall_s <= CLOCK_HOLD_MAX_S:
                if not self._clock_held:
                    log.warning(
                        "wall clock stepped back by %.1f s; tick time held at the last tick's "
                        "until the clock passes it",
                        last_s - wall_s,
                    )
                self._clock_held = True
                now_s = last_s
            else:
                log.warning(
                    "wall clock stepped back by %.1f s (more than %g s): following it; "
                    "policy windows restart",
                    last_s - wall_s,
                    CLOCK_HOLD_MAX_S,
                )
                self._clock_held = False
        self._last_tick_time = (now_s, mono_s)
        return now_s

    def tick(self, now_s: float) -> TickSnapshot | None:
        """One tick at `now_s`; None when the adapters could not be built yet."""
        self.status.heartbeat(time.monotonic())
        runtime = self._ensure_runtime(now_s)
        if runtime is None:
            return None
        self.ticks += 1
        leader = self._leading()
        runtime.engine.dry_run = self.options.dry_run or not leader
        runtime.actuator.begin_tick(self.ticks, now_s)
        started = time.perf_counter()
        error: str | None = None
        records: list[DecisionRecord] = []
        try:
            records = runtime.engine.step(now_s)
        except Exception as exc:
            log.exception("tick %d failed; the next tick runs as scheduled", self.ticks)
            error = f"{type(exc).__name__}: {exc}"
            self.metrics.error("tick")
        duration_s = time.perf_counter() - started
        components = runtime.config.pipeline.components
        self._missing_load.observe(
            records, {name: load_signal(c.capacity_unit) for name, c in components.items()}
        )
        self._journal_decisions(records, now_s, leader)
        if self.keda_board is not None and not runtime.engine.dry_run:
            # every count, changed or not: KEDA reads the current decision of each component
            self.keda_board.publish({r.component: r.desired_replicas for r in records})
        pipeline = runtime.engine.pipeline
        snapshot = TickSnapshot(
            tick=self.ticks,
            at_s=now_s,
            duration_s=duration_s,
            ok=error is None,
            leader=leader,
            records=tuple(records),
            ready={name: state.ready for name, state in runtime.actuator.last_read.items()},
            edges=tuple((e.source, e.target) for e in pipeline.edges),
            incoming={name: len(pipeline.incoming(name)) for name in pipeline.order},
        )
        if self.leader_loop is not None:
            self.status.leader = leader
        self.status.publish(snapshot, runtime.source.reachable, runtime.source.last_error, error)
        self.metrics.record_tick(snapshot)
        self.status.heartbeat(time.monotonic())
        return snapshot

    def _leading(self) -> bool:
        return self.leader_loop is None or self.leader_loop.is_leader()

    def _journal_decisions(self, records: list[DecisionRecord], now_s: float, leader: bool) -> None:
        try:
            for record in records:
                if record.outcome != "unchanged":
                    self.journal.write(
                        "decision", now_s, record.to_dict(), tick=self.ticks, leader=leader
                    )
            self.journal.flush()
        except OSError as exc:
            log.error("journal write failed: %s", exc)
            self.metrics.error("journal")

    def _ensure_runtime(self, now_s: float) -> Runtime | None:
        """The runtime, building it when there is none and the backoff allows; transient
        failures are retried (interval, doubling, up to `metrics_backoff_max_s`)."""
        if self.runtime is not None:
            return self.runtime
        if now_s < self._next_build_s:
            return None
        try:
            self.runtime = self._build(self.config)
        except TRANSIENT as exc:
            self._build_failures += 1
            interval_s = self.config.control.interval_s
            delay_s = min(
                self.config.daemon.metrics_backoff_max_s,
                interval_s * 2 ** (self._build_failures - 1),
            )
            self._next_build_s = now_s + delay_s - interval_s / 2
            self.status.runtime_error = str(exc)
            self.metrics.error("build")
            log.warning("cannot start the pipeline yet (retry in %.0f s): %s", delay_s, exc)
            return None
        self._build_failures = 0
        self.status.runtime_error = None
        self._describe(self.runtime)
        self.runtime.warm_start(now_s)
        return self.runtime

    def _build(self, config: Config) -> Runtime:
        return build_runtime(
            config,
            dry_run=self.options.dry_run,
            journal=self.journal,
            on_error=self.metrics.error,
            keda_board=self.keda_board,
        )

    def _describe(self, runtime: Runtime) -> None:
        config = runtime.config
        log.info(
            "pipeline %s: %s; policies %s; metrics %s; actuator %s%s; every %g s",
            config.pipeline.name,
            ", ".join(runtime.engine.pipeline.order),
            ", ".join(p.name for p in config.policies),
            config.metrics.type if config.metrics else "-",
            config.actuator.type if config.actuator else "-",
            " (dry run: acting on nothing)" if self.options.dry_run else "",
            config.control.interval_s,
        )

    # --- reload -------------------------------------------------------------------------------

    def reload(self) -> bool:
        """Load and build the config file again; on any problem keep running the old one."""
        path = self.options.config_path
        log.info("reloading %s", path)
        problems: list[str] = []
        try:
            new = load_config(path)
            runtime = self._build(new)
        except ConfigError as exc:
            problems = exc.problems
        except Exception as exc:  # a build failure of any kind refuses the new config
            problems = [f"{type(exc).__name__}: {exc}"]
        if problems:
            log.error(
                "reload of %s refused (%d problem(s)); the previous config keeps running",
                path,
                len(problems),
            )
            for problem in problems:
                log.error("%s: %s", path, problem)
            self._journal_reload(ok=False, problems=problems)
            self.metrics.reloads.labels("refused").inc()
            self.metrics.error("config_reload")
            return False
        old = self.runtime
        if (
            old is not None
            and set(old.config.pipeline.components) == set(new.pipeline.components)
            and old.config.control.history_s == new.control.history_s
        ):
            runtime.engine.history = old.engine.history  # forecasts stay warm
        for spec in (new.metrics, new.actuator):
            if spec is not None:
                register_secrets_in(spec.options())
        self._apply_daemon_changes(self.config, new)
        if self.keda_board is not None:
            self.keda_board.set_components(new.pipeline.components)
        self.runtime, self.config = runtime, new
        self.status.runtime_error = None
        if old is not None:
            old.close()
        self._journal_reload(ok=True, problems=[])
        self.metrics.reloads.labels("ok").inc()
        self._describe(runtime)
        return True

    def _apply_daemon_changes(self, old: Config, new: Config) -> None:
        for name in _RESTART_ONLY:
            if getattr(old.daemon, name) != getattr(new.daemon, name):
                log.warning("daemon.%s changed: it takes effect at the next start", name)
        if self.options.log_format is None and old.daemon.log_format != new.daemon.log_format:
            setup_logging(new.daemon.log_format, self.options.log_level)
        self.status.set_decisions_kept(new.daemon.decisions_kept)

    def _journal_reload(self, ok: bool, problems: list[str]) -> None:
        try:
            self.journal.write("reload", self.clock.now_s(), sync=True, ok=ok, problems=problems)
        except OSError as exc:
            log.error("journal: %s", exc)
            self.metrics.error("journal")

    # --- signals ------------------------------------------------------------------------------

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals can only be handled on the main thread (embedded in a test)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _restore_signals(self) -> None:
        """Give the signals back to whoever had them (an embedding program, a test runner)."""
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            self.request_reload()
        else:
            self.request_stop(name)
