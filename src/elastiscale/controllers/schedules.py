"""Cron schedules in a time zone: when a `ScheduledBounds` entry was last fired, and whether its
bounds are in force. Used by the scheduled-bounds constraint."""

from __future__ import annotations

import datetime as _dt
import math

from croniter import CroniterError, croniter

from elastiscale.config import ScheduledBounds

#: Firing windows shared by every schedule with the same (cron, time zone): with one schedule
#: on 200 components, the croniter search runs once per firing instead of 200 times. Values are
#: (latest firing, next firing); the first is -inf when there is none.
_WINDOWS: dict[tuple[str, str], tuple[float, float]] = {}


def _firing_window(
    cron: str, zone: _dt.tzinfo, zone_name: str, now_s: float
) -> tuple[float, float]:
    """(latest firing <= now_s, next firing > now_s) of `cron` in `zone`, in Unix seconds."""
    key = (cron, zone_name)
    cached = _WINDOWS.get(key)
    if cached is not None and cached[0] <= now_s < cached[1]:
        return cached
    # +1 µs: croniter's get_prev is strictly before its start, and a firing at exactly `now_s`
    # counts.
    start = _dt.datetime.fromtimestamp(now_s, zone) + _dt.timedelta(microseconds=1)
    try:
        fired_s = float(croniter(cron, start).get_prev(float))
    except CroniterError:  # no firing before now (e.g. a year field in the future)
        fired_s = -math.inf
    try:
        next_s = float(croniter(cron, start).get_next(float))
    except CroniterError:  # no firing after now
        next_s = math.inf
    _WINDOWS[key] = (fired_s, next_s)
    return fired_s, next_s


class Schedule:
    """One `ScheduledBounds` entry, with its latest firing cached.

    Finding the latest firing at or before `now_s` costs a croniter search (about 100 µs), so
    it is cached with the next firing: until then the answer cannot change.
    """

    def __init__(self, spec: ScheduledBounds) -> None:
        self.spec = spec
        self.zone = spec.zone()
        # The latest firing (-inf: none) for every now in [_fired_s, _next_s); empty at first.
        self._fired_s = math.inf
        self._next_s = -math.inf

    def last_firing_s(self, now_s: float) -> float | None:
        """Unix time of the latest firing at or before `now_s`, or None if there is none."""
        if not self._fired_s <= now_s < self._next_s:
            self._fired_s, self._next_s = _firing_window(
                self.spec.cron, self.zone, self.spec.timezone, now_s
            )
        return None if self._fired_s == -math.inf else self._fired_s

    def active(self, now_s: float) -> bool:
        """Whether this schedule's bounds are in force at `now_s`.

        The latest firing has the latest end, so when windows overlap it decides alone.
        """
        fired_s = self.last_firing_s(now_s)
        return fired_s is not None and now_s < fired_s + self.spec.duration_s

    def describe(self, now_s: float) -> str:
        fired_s = self.last_firing_s(now_s) or now_s
        fired = _dt.datetime.fromtimestamp(fired_s, self.zone).isoformat(timespec="minutes")
        return (
            f"schedule '{self.spec.cron}' {self.spec.timezone} "
            f"fired {fired}, in force {self.spec.duration_s:g} s"
        )
