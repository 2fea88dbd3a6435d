"""Wrappers the run loop puts around the configured metric source and actuator.

`GuardedSource`: a source that is down is left alone for a while (one control interval after
the first failure, doubling up to `max_backoff_s`) instead of being asked at every tick; an
exception that is not a `MetricSourceError` (a bug in a plugin) is logged with its traceback
and treated as one. Either way the engine sees `MetricSourceError` and holds every component.
`reachable` says whether the last attempt got an answer, for `/readyz`.

Worked example, 15 s interval, 60 s cap: the source fails at t = 0; attempts follow at 15, 45
(15 + 30), 105 (45 + 60), 165...; between them each tick holds without a network call.

`JournaledActuator`: every `scale` call is announced in the journal (forced to disk) before it
is sent and its outcome written after, so a crash in between leaves an intent without an
outcome for the next start to report. An exception from the platform adapter becomes a failed
`ActuationResult` for that component only, so the other components of the tick still act.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from elastiscale.adapters.base import ActuationResult, Actuator, Failure, MetricSource
from elastiscale.daemon.journal import Journal
from elastiscale.errors import ActuatorError, MetricSourceError
from elastiscale.observations import Observation, ReplicaState

log = logging.getLogger("elastiscale.daemon")

#: Called with an error kind ("metric_source", "actuator_read", "actuation", "journal").
ErrorSink = Callable[[str], None]


def _ignore(kind: str) -> None:
    """The default error sink."""


class GuardedSource:
    """A `MetricSource` with backoff after failures and exceptions contained (see module)."""

    def __init__(
        self,
        inner: MetricSource,
        interval_s: float,
        max_backoff_s: float,
        on_error: ErrorSink = _ignore,
    ) -> None:
        if interval_s <= 0 or max_backoff_s <= 0:
            raise ValueError(f"interval_s = {interval_s}, max_backoff_s = {max_backoff_s}: > 0")
        self.inner = inner
        self.interval_s = interval_s
        self.max_backoff_s = max_backoff_s
        self.on_error = on_error
        self.failures = 0
        self.next_attempt_s = float("-inf")
        self.last_error: str | None = None
        #: Whether the last attempt got an answer (None before the first).
        self.reachable: bool | None = None

    def observe(self, components: Sequence[str], now_s: float) -> Mapping[str, Observation]:
        # A tick within half an interval of the retry time tries: tick times jitter by a few
        # milliseconds, and a retry due at 15.000 s must not wait for the tick after 14.998 s.
        if now_s + self.interval_s / 2 < self.next_attempt_s:
            wait_s = self.next_attempt_s - now_s
            raise MetricSourceError(f"{self.last_error}; next attempt in {wait_s:.1f} s")
        try:
            got = self.inner.observe(components, now_s)
        except MetricSourceError as exc:
            self._failed(now_s, str(exc))
            raise
        except Exception as exc:
            log.exception("metric source raised an unexpected error")
            message = f"unexpected error: {type(exc).__name__}: {exc}"
            self._failed(now_s, message)
            raise MetricSourceError(message) from exc
        if self.failures:
            log.info("metric source answers again after %d failed attempts", self.failures)
        self.failures = 0
        self.next_attempt_s = float("-inf")
        self.last_error = None
        self.reachable = True
        return got

    def _failed(self, now_s: float, message: str) -> None:
        self.failures += 1
        self.reachable = False
        self.last_error = message
        delay_s = min(self.max_backoff_s, self.interval_s * 2 ** (self.failures - 1))
        self.next_attempt_s = now_s + delay_s
        self.on_error("metric_source")
        # No line here: the engine says "metric source unavailable" once per outage.

    def close(self) -> None:
        close_adapter(self.inner)


class JournaledActuator:
    """An `Actuator` that journals each change before making it (see module)."""

    def __init__(
        self, inner: Actuator, journal: Journal | None, on_error: ErrorSink = _ignore
    ) -> None:
        self.inner = inner
        self.journal = journal
        self.on_error = on_error
        self.tick = 0
        self.now_s = 0.0
        #: The last state read of each component (for the ready count on /metrics).
        self.last_read: dict[str, ReplicaState] = {}

    def begin_tick(self, tick: int, now_s: float) -> None:
        """The tick the next calls belong to (journal entries carry it)."""
        self.tick = tick
        self.now_s = now_s

    def read(self, components: Sequence[str]) -> Mapping[str, ReplicaState]:
        try:
            got = self.inner.read(components)
        except ActuatorError:
            self.on_error("actuator_read")
            raise
        except Exception as exc:
            log.exception("actuator read raised an unexpected error")
            self.on_error("actuator_read")
            raise ActuatorError(f"unexpected error: {type(exc).__name__}: {exc}") from exc
        self.last_read.update(got)
        return got

    def scale(self, component: str, replicas: int) -> ActuationResult:
        known = self.last_read.get(component)
        entry_id = self._write_intent(component, known.desired if known else None, replicas)
        try:
            result = self.inner.scale(component, replicas)
        except Exception as exc:
            log.exception("scaling %s to %d raised an unexpected error", component, replicas)
            message = f"unexpected error: {type(exc).__name__}: {exc}"
            result = ActuationResult.failed(component, replicas, Failure.UNAVAILABLE, message)
        self._write_outcome(entry_id, result)
        if result.ok:
            log.info("scaled %s %s -> %d", component, known.desired if known else "?", replicas)
        else:
            self.on_error("actuation")
        return result

    def _write_intent(self, component: str, current: int | None, replicas: int) -> str | None:
        if self.journal is None:
            return None
        entry_id = self.journal.next_id()
        try:
            self.journal.write(
                "intent",
                self.now_s,
                sync=True,
                id=entry_id,
                tick=self.tick,
                component=component,
                from_replicas=current,
                to_replicas=replicas,
            )
        except OSError as exc:
            # Scaling matters more than its record: go on, and say so loudly.
            log.error("journal write failed before scaling %s: %s", component, exc)
            self.on_error("journal")
        return entry_id

    def _write_outcome(self, entry_id: str | None, result: ActuationResult) -> None:
        if self.journal is None or entry_id is None:
            return
        try:
            self.journal.write(
                "outcome",
                self.now_s,
                id=entry_id,
                component=result.component,
                replicas=result.replicas,
                ok=result.ok,
                failure=result.failure.value if result.failure else None,
                message=result.message,
            )
        except OSError as exc:
            log.error("journal write failed after scaling %s: %s", result.component, exc)
            self.on_error("journal")

    def close(self) -> None:
        close_adapter(self.inner)


def close_adapter(adapter: object) -> None:
    """Call the adapter's `close()` when it has one; a failure there is only logged."""
    close = getattr(adapter, "close", None)
    if callable(close):
        try:
            close()
        except Exception:
            log.exception("closing %s failed", type(adapter).__name__)
