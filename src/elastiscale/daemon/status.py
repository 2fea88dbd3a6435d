"""What the run loop knows and the HTTP threads serve: readiness, liveness, recent decisions.

The loop publishes one immutable `TickSnapshot` per tick (a reference swap, so readers never see
half a tick) and a few flags under a lock; `/healthz`, `/readyz`, `/decisions` and the metrics
collector read them from their own threads.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from elastiscale.daemon.journal import InFlight
from elastiscale.decision import DecisionRecord


@dataclass(frozen=True, slots=True)
class TickSnapshot:
    """One finished tick: its records, the ready counts the actuator read, the pipeline's
    edges (for measured fan-out) and each component's capacity unit."""

    tick: int
    at_s: float
    duration_s: float
    ok: bool
    leader: bool
    records: tuple[DecisionRecord, ...]
    ready: Mapping[str, int] = field(default_factory=dict)
    edges: tuple[tuple[str, str], ...] = ()
    incoming: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reasons: tuple[str, ...]


class DaemonStatus:
    """Shared state between the run loop (writer) and the HTTP threads (readers)."""

    def __init__(
        self, pipeline: str, identity: str, stall_after_s: float, decisions_kept: int = 1000
    ) -> None:
        self.pipeline = pipeline
        self.identity = identity
        self.stall_after_s = stall_after_s
        self._lock = threading.Lock()
        self.snapshot: TickSnapshot | None = None
        self._recent: deque[DecisionRecord] = deque(maxlen=decisions_kept)
        self._heartbeat_mono_s: float | None = None
        self.runtime_error: str | None = None
        self.tick_error: str | None = None
        self.source_reachable: bool | None = None
        self.source_error: str | None = None
        self.leader: bool | None = None  # None: no election, this process always acts
        self.dry_run = False
        self.in_flight_at_start: tuple[InFlight, ...] = ()

    # --- written by the loop ------------------------------------------------------------------

    def heartbeat(self, mono_s: float) -> None:
        with self._lock:
            self._heartbeat_mono_s = mono_s

    def publish(
        self,
        snapshot: TickSnapshot,
        source_reachable: bool | None,
        source_error: str | None,
        tick_error: str | None,
    ) -> None:
        with self._lock:
            self.snapshot = snapshot
            self.source_reachable = source_reachable
            self.source_error = source_error
            self.tick_error = tick_error
            self._recent.extend(r for r in snapshot.records if r.outcome != "unchanged")

    def set_decisions_kept(self, kept: int) -> None:
        with self._lock:
            if kept != self._recent.maxlen:
                self._recent = deque(self._recent, maxlen=kept)

    # --- read by the HTTP threads ---------------------------------------------------------------

    def liveness(self, mono_s: float) -> Readiness:
        """Alive unless the loop has not beaten for `stall_after_s` (a hung tick)."""
        with self._lock:
            beat = self._heartbeat_mono_s
        if beat is not None and mono_s - beat > self.stall_after_s:
            return Readiness(False, (f"run loop stalled for {mono_s - beat:.0f} s",))
        return Readiness(True, ())

    def readiness(self) -> Readiness:
        """Ready when the pipeline's adapters were built, the metric source answered at the
        last attempt, and the last tick finished."""
        reasons: list[str] = []
        with self._lock:
            if self.runtime_error is not None:
                reasons.append(f"not running: {self.runtime_error}")
            elif self.snapshot is None:
                reasons.append("no tick has run yet")
            if self.source_reachable is False:
                reasons.append(f"metric source unreachable: {self.source_error}")
            if self.tick_error is not None:
                reasons.append(f"last tick failed: {self.tick_error}")
        return Readiness(not reasons, tuple(reasons))

    def decisions(self, component: str | None = None, limit: int = 100) -> dict[str, object]:
        """The last tick's record of each component and the most recent changes, newest
        first, optionally for one component."""
        with self._lock:
            snapshot = self.snapshot
            recent = list(self._recent)
            in_flight = self.in_flight_at_start
            leader = self.leader
        latest = [
            r.to_dict()
            for r in (snapshot.records if snapshot is not None else ())
            if component is None or r.component == component
        ]
        changes = [r for r in reversed(recent) if component is None or r.component == component]
        return {
            "pipeline": self.pipeline,
            "identity": self.identity,
            "leader": leader,
            "dry_run": self.dry_run,
            "tick": snapshot.tick if snapshot is not None else None,
            "at_s": snapshot.at_s if snapshot is not None else None,
            "latest": latest,
            "recent": [r.to_dict() for r in changes[: max(0, limit)]],
            "in_flight_at_start": [f.to_dict() for f in in_flight],
        }
