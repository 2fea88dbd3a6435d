"""Measured start-up times of Ray Serve replicas, from the dashboard's replica details.

`GET /api/serve/applications/` lists each deployment's replicas with their `replica_id`,
`state` and `start_time_s` (Ray's `ReplicaDetails`, in the Ray this was written against,
2.60.0): the controller's wall time when it started the replica's actor, which is the moment
the scale-up was acted on. A replica's start-up is the time from then to its transition to
RUNNING (constructor done, health check passed). The API does not say when that transition
happened, only the state at each look, so the ready time is taken as the midpoint between the
last look that saw the replica not yet RUNNING and the first that saw it RUNNING:

- the start is exact (Serve's own clock);
- the ready time is within half the interval between looks (the control interval: 15 s
  looks give +-7.5 s), and a replica that was never seen starting (it started and became
  RUNNING between two looks) has its ready time between max(previous look, its start) and
  this look;
- a replica RUNNING at the first look is history without a ready time, and is not counted;
  nor is one that turns RUNNING from another state (UPDATING, RECOVERING: it was running).

The counts-only estimate (`learning.ReadinessTracker`) has the same half-interval uncertainty
on the ready side and as much again on the start side (the request is placed at the previous
look); here the start side is exact. The daemon's clock and the Ray head's are taken to agree
(NTP); a replica whose start is after the look that saw it RUNNING gives no sample.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def _start(replica: Mapping[str, Any]) -> float | None:
    value = replica.get("start_time_s")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value) if value > 0 else None


class ReplicaStartups:
    """Start-ups of one deployment's replicas, one `look` at a time (see the module docstring)."""

    def __init__(self) -> None:
        self._last_look_s: float | None = None
        self._starting_seen_s: dict[str, float] = {}  # replica id -> last look it was starting
        self._known: set[str] = set()  # replicas already counted, or history

    def look(self, now_s: float, replicas: Sequence[Mapping[str, Any]]) -> list[float]:
        """The replicas seen at `now_s`; returns the start-ups completed since the last look."""
        if not math.isfinite(now_s) or (
            self._last_look_s is not None and now_s <= self._last_look_s
        ):
            return []
        first = self._last_look_s is None
        out: list[float] = []
        present: set[str] = set()
        for replica in replicas:
            rid = replica.get("replica_id")
            if not isinstance(rid, str) or not rid:
                continue
            present.add(rid)
            if rid in self._known:
                continue
            state = replica.get("state")
            if state == "STARTING":
                self._starting_seen_s[rid] = now_s
                continue
            if state != "RUNNING":
                continue  # UPDATING, RECOVERING, STOPPING...: not a start-up
            self._known.add(rid)
            started = _start(replica)
            seen_starting = self._starting_seen_s.pop(rid, None)
            if first or started is None or started > now_s:
                continue  # history: running before the first look (or a clock apart)
            since = seen_starting
            if since is None:
                assert self._last_look_s is not None
                if started < self._last_look_s:
                    continue  # there at the last look and not starting: not a start-up
                since = started
            out.append(max(0.0, 0.5 * (since + now_s) - started))
        # Replicas gone (stopped before they ran, or stopped later) are forgotten.
        self._starting_seen_s = {r: t for r, t in self._starting_seen_s.items() if r in present}
        self._known &= present
        self._last_look_s = now_s
        return out
