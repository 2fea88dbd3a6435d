"""Constraints: what a component may have, applied after the policies have proposed.

Each constraint is a small object with `apply` (change a count, say why) and `commit` (learn what
was finally applied). They run in a fixed order for each component:

    missing data -> stabilization -> rate limits -> cooldown -> scheduled bounds -> bounds

so that hard bounds are always the last word (as in the HPA, where min/max clamp after the
behavior rules). Every constraint takes time only from `now_s` and keeps its own history, so
one chain belongs to one component of one engine.

The rules follow the Kubernetes HPA's `behavior` semantics where there is one:
- stabilization keeps every recommendation of the last `stabilization_s`; a scale-down goes
  only as low as the highest of them, a scale-up only as high as the lowest of them;
- a rate limit is computed from the count at the start of its period (the current count minus
  the changes made within the period), `select` picks the limit allowing the most (`max`) or
  least (`min`) change, or forbids the direction (`disabled`).
Cooldowns (no second change in a direction for `cooldown_s`) and cron-scheduled bounds are
additions of our own.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Literal, NamedTuple, Protocol

from elastiscale.config import (
    ComponentConfig,
    ConstraintsConfig,
    MissingDataRules,
    RateLimit,
    ScalingRules,
    ScheduledBounds,
)
from elastiscale.controllers.schedules import Schedule
from elastiscale.decision import Clamp
from elastiscale.observations import Observation

Direction = Literal["up", "down"]


class ConstraintInput(NamedTuple):
    """What a constraint knows about one component in one tick (a named tuple: the engine
    builds one per component and tick, and a tuple is the cheapest immutable record)."""

    component: str
    now_s: float
    current: int  # desired replicas before this tick
    ready: int
    observation: Observation
    data_ok: bool  # the component's load signal is present and fresh


class Constraint(Protocol):
    name: str

    def apply(self, inp: ConstraintInput, replicas: int) -> tuple[int, str]:
        """Return the constrained count and, when it differs from `replicas`, the reason."""
        ...

    def commit(self, component: str, now_s: float, before: int, after: int) -> None:
        """Record that the count changed from `before` to `after` at `now_s` (or stayed)."""
        ...


# --------------------------------------------------------------------------------------------
# Bounds


class Bounds:
    """The component's hard replica bounds (`replicas.min`, `replicas.max`)."""

    name = "bounds"
    records_commits = False  # its `commit` does nothing

    def __init__(self, min_replicas: int, max_replicas: int) -> None:
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas

    def apply(self, inp: ConstraintInput, replicas: int) -> tuple[int, str]:
        if replicas > self.max_replicas:
            return self.max_replicas, f"max = {self.max_replicas}"
        if replicas < self.min_replicas:
            return self.min_replicas, f"min = {self.min_replicas}"
        return replicas, ""

    def commit(self, component: str, now_s: float, before: int, after: int) -> None:
        return None


# --------------------------------------------------------------------------------------------
# Missing data


class MissingData:
    """Missing or stale metrics never cause a scale-down.

    While the load signal is missing (or older than `staleness_s`) the count is held at least at
    the current one. After `fallback_after` consecutive ticks without usable data the configured
    fallback applies, as KEDA's fallback does:
    - `hold`: keep holding (policies may still scale up);
    - `current-if-higher`: max(current, fallback_replicas), whatever the policies proposed;
    - `static`: exactly `fallback_replicas`. This is the one way missing data can lower a count,
      and only because the operator wrote that number down for this case.
    """

    name = "missing_data"
    records_commits = False  # its `commit` does nothing

    def __init__(self, rules: MissingDataRules, signal: str = "demand_rps") -> None:
        self.rules = rules
        self.signal = signal
        self._failures = 0

    def _why(self, inp: ConstraintInput) -> str:
        if inp.observation.value(self.signal) is None:
            return f"{self.signal}: {inp.observation.why_missing(self.signal)}"
        age_s = inp.observation.age_s(inp.now_s)
        return f"{self.signal}: stale, {age_s:g} s old > staleness {self.rules.staleness_s:g} s"

    def apply(self, inp: ConstraintInput, replicas: int) -> tuple[int, str]:
        if inp.data_ok:
            self._failures = 0
            return replicas, ""
        self._failures += 1
        if self._failures >= self.rules.fallback_after and self.rules.fallback != "hold":
            # validated: a non-hold fallback always has fallback_replicas
            fallback = self.rules.fallback_replicas or 0
            target = fallback if self.rules.fallback == "static" else max(inp.current, fallback)
            return target, (
                f"fallback {self.rules.fallback} {target} after {self._failures} ticks "
                f"without data ({self._why(inp)})"
            )
        if replicas < inp.current:
            return inp.current, f"no scale-down on missing data ({self._why(inp)})"
        return replicas, ""

    def commit(self, component: str, now_s: float, before: int, after: int) -> None:
        return None


# --------------------------------------------------------------------------------------------
# Stabilization


class WindowExtreme:
    """The lowest (or highest) value pushed within the last `window_s`, in O(1) amortized time.

    A monotonic deque: every entry is kept only while no later entry is at least as extreme,
    so the front is always the answer. Entries must be pushed in time order.
    """

    def __init__(self, window_s: float, lowest: bool) -> None:
        self.window_s = window_s
        self.lowest = lowest
        self._entries: deque[tuple[float, int]] = deque()

    def clear(self) -> None:
        self._entries.clear()

    def push(self, now_s: float, value: int) -> int:
        """Add `value` at `now_s`; return the extreme over (now_s - window_s, now_s]."""
        entries = self._entries
        cutoff_s = now_s - self.window_s
        while entries and entries[0][0] <= cutoff_s:
            entries.popleft()
        if self.lowest:
            while entries and entries[-1][1] >= value:
                entries.pop()
        else:
            while entries and entries[-1][1] <= value:
                entries.pop()
        entries.append((now_s, value))
        return entries[0][1]


class Stabilization:
    """A change must be wanted for the whole window (the HPA's stabilization windows).

    Every recommendation this constraint sees is remembered with its time. A scale-down goes no
    lower than the highest recommendation of the last `down_window_s`; a scale-up no higher than
    the lowest of the last `up_window_s`. Worked example, down window 300 s, current 10:
    recommendations 8 at t=0, 4 at t=120, 3 at t=240 give 10 -> 8 at t=0 (8 is the highest so
    far), 8 at t=120 and t=240 (8 is still in the window), and 4 at t=300 (8 has left it: a
    window of 300 s at t=300 holds what came after t=0).
    """

    name = "stabilization"
    records_commits = False  # its `commit` does nothing

    def __init__(self, up_window_s: float, down_window_s: float) -> None:
        self.up_window_s = up_window_s
        self.down_window_s = down_window_s
        self._lowest = WindowExtreme(up_window_s, lowest=True)
        self._highest = WindowExtreme(down_window_s, lowest=False)
        self._last_s = -math.inf

    def apply(self, inp: ConstraintInput, replicas: int) -> tuple[int, str]:
        if inp.now_s < self._last_s:  # time went backwards: a new run, forget the old one
            self._lowest.clear()
            self._highest.clear()
        self._last_s = inp.now_s
        lowest = self._lowest.push(inp.now_s, replicas)
        highest = self._highest.push(inp.now_s, replicas)
        # lowest <= replicas <= highest, so the result lies between current and replicas.
        stabilized = min(max(inp.current, lowest), highest)
        if stabilized < replicas:
            return stabilized, (
                f"scale-up stabilization {self.up_window_s:g} s: lowest recommendation {lowest}"
            )
        if stabilized > replicas:
            return stabilized, (
                f"scale-down stabilization {self.down_window_s:g} s: "
                f"highest recommendation {highest}"
            )
        return replicas, ""

    def commit(self, component: str, now_s: float, before: int, after: int) -> None:
        return None


# --------------------------------------------------------------------------------------------
# Rate limits


def _describe(limit: RateLimit) -> str:
    unit = "%" if limit.type == "percent" else (" pod" if limit.value == 1 else " pods")
    return f"{limit.value:g}{unit} per {limit.period_s:g} s"


def _up_limit(limit: RateLimit, start: int) -> int:
    """Highest count `limit` allows from `start` replicas at the start of its period.

    Percent limits round up, as the HPA does, so that any positive percent allows at least one
    more replica; from zero they count one replica (as Knative counts at least one ready pod),
    otherwise a component scaled to zero could never start: 100% from 0 allows 2.
    """
    if limit.type == "pods":
        return math.floor(start + limit.value)
    return math.ceil(max(start, 1) * (1.0 + limit.value / 100.0))


def _down_limit(limit: RateLimit, start: int) -> int:
    """Lowest count `limit` allows from `start` replicas at the start of its period.

    Percent limits round down, as the HPA does: 50% per period from 5 allows 2.
    """
    if limit.type == "pods":
        return max(0, math.ceil(start - limit.value))
    return max(0, math.floor(start * (1.0 - limit.value / 100.0)))


class RateLimits:
    """How far the count may move per period, in each direction (the HPA's scaling policies).

    Each limit is computed from the count at the start of its period: the current count minus
    the changes applied within the last `period_s`. Worked example, scale-up limit 4 pods per
    60 s: from 10, a change to 12 at t=0 leaves 12 - 2 = 10 at the period's start at t=30, so at
    most 14 then; at t=61 (no change since) the change at t=0 has left the period, and the
    limit is 12 + 4 = 16.
    With no limits in a direction (and `select` not `disabled`) that direction is free.
    """

    name = "rate_limits"

    def __init__(self, up: ScalingRules, down: ScalingRules) -> None:
        self.up = up
        self.down = down
        periods = [r.period_s for r in (*up.rate_limits, *down.rate_limits)]
        self.horizon_s = max(periods, default=0.0)
        self._changes: deque[tuple[float, int]] = deque()  # (at_s, applied change)

    @staticmethod
    def needed(up: ScalingRules, down: ScalingRules) -> bool:
        """Whether these rules can limit anything at all."""
        return any(r.rate_limits or r.select == "disabled" for r in (up, down))

    def _period_start(self, now_s: float, current: int, period_s: float) -> int:
        cutoff_s = now_s - period_s
        change = sum(delta for at_s, delta in self._changes if at_s > cutoff_s)
        return current - change

    def _limit(self, direction: Direction, now_s: float, current: int) -> tuple[int, str] | None:
        """The farthest count allowed in `direction` and how it was found, or None if free."""
        rules = self.up if direction == "up" else self.down
        if rules.select == "disabled":
            return current, f"scale-{direction} disabled (select: disabled)"
        if not rules.rate_limits:
            return None
        candidates: list[tuple[int, str]] = []
        for limit in rules.rate_limits:
            start = self._period_start(now_s, current, limit.period_s)
            allowed = _up_limit(limit, start) if direction == "up" else _down_limit(limit, start)
            candidates.append((allowed, f"{_describe(limit)} from {start} at the period's start"))
        # `max` picks the limit allowing the most change: the highest count going up, the
        # lowest going down; `min` the other way round.
        most_change = (direction == "up") == (rules.select == "max")
        best = max(candidates) if most_change else min(candidates)
        allowed, why = best
        select = f" (select {rules.select})" if len(rules.rate_limits) > 1 else ""
        return allowed, f"scale-{direction} rate limit {why}{select}"

    def apply(self, inp: ConstraintInput, replicas: int) -> tuple[int, str]:
        current = inp.current
        if replicas > current:
            found = self._limit("up", inp.now_s, current)
            # never below current: a limit already used up means "no further scale-up"
            if found is not None and replicas > max(found[0], current):
                return max(found[0], current), found[1]
        elif replicas < current:
            found = self._limit("down", inp.now_s, current)
            if found is not None and replicas < min(found[0], current):
                return min(found[0], current), found[1]
        return replicas, ""

    def commit(self, component: str, now_s: float, before: int, after: int) -> None:
        changes = self._changes
        cutoff_s = now_s - self.horizon_s
        while changes and changes[0][0] <= cutoff_s:
            changes.popleft()
        if after != before:
            changes.append((now_s, after - before))


# --------------------------------------------------------------------------------------------
# Cooldown


class Cooldown:
    """After a change in one direction, no further change in that direction for `cooldown_s`.

    The other direction is not affected. Note that a cooldown makes the count depend on when
    earlier changes happened, not only on how large they were: a component that scaled up a
    moment ago waits, one that did not scales at once.
    """

    name = "cooldown"

    def __init__(self, up_cooldown_s: float, down_cooldown_s: float) -> None:
        self.up_cooldown_s = up_cooldown_s
        self.down_cooldown_s = down_cooldown_s
        self._last_up_s: float | None = None
        self._last_down_s: float | None = None

    def apply(self, inp: ConstraintInput, replicas: int) -> tuple[int, str]:
        if replicas > inp.current:
            direction, last_s, cooldown_s = "up", self._last_up_s, self.up_cooldown_s
        elif replicas < inp.current:
            direction, last_s, cooldown_s = "down", self._last_down_s, self.down_cooldown_s
        else:
            return replicas, ""
        if last_s is not None and inp.now_s - last_s < cooldown_s:
            return inp.current, (
                f"scale-{direction} cooldown {cooldown_s:g} s: "
                f"last scale-{direction} {inp.now_s - last_s:g} s ago"
            )
        return replicas, ""

    def commit(self, component: str, now_s: float, before: int, after: int) -> None:
        if after > before:
            self._last_up_s = now_s
        elif after < before:
            self._last_down_s = now_s


# --------------------------------------------------------------------------------------------
# Scheduled bounds


class ScheduledBoundsConstraint:
    """Bounds in force for `duration_s` after each firing of a cron expression in a time zone.

    `now_s` is Unix time here. Cron hours are wall-clock hours of the schedule's zone, so
    "0 9 * * 1-5" in America/New_York fires at 14:00 UTC in winter and 13:00 UTC in summer.
    When several schedules are in force, the highest min and the lowest max hold; if they
    cross, the min wins (running too many replicas is the safer mistake). The hard bounds
    still come after this.
    """

    name = "scheduled_bounds"
    records_commits = False  # its `commit` does nothing

    def __init__(self, schedules: Sequence[ScheduledBounds]) -> None:
        self.schedules = [Schedule(s) for s in schedules]

    def apply(self, inp: ConstraintInput, replicas: int) -> tuple[int, str]:
        floor: tuple[int, Schedule] | None = None
        ceiling: tuple[int, Schedule] | None = None
        for schedule in self.schedules:
            if not schedule.active(inp.now_s):
                continue
            low, high = schedule.spec.min, schedule.spec.max
            if low is not None and (floor is None or low > floor[0]):
                floor = (low, schedule)
            if high is not None and (ceiling is None or high < ceiling[0]):
                ceiling = (high, schedule)
        if floor is not None and replicas < floor[0]:
            return floor[0], f"min = {floor[0]} by {floor[1].describe(inp.now_s)}"
        if ceiling is not None and replicas > ceiling[0]:
            if floor is not None and floor[0] > ceiling[0]:
                return floor[0], f"min = {floor[0]} by {floor[1].describe(inp.now_s)}"
            return ceiling[0], f"max = {ceiling[0]} by {ceiling[1].describe(inp.now_s)}"
        return replicas, ""

    def commit(self, component: str, now_s: float, before: int, after: int) -> None:
        return None


# --------------------------------------------------------------------------------------------
# The chain


class ComponentConstraints:
    """The ordered chain of constraints of one component."""

    def __init__(self, chain: list[Constraint]) -> None:
        self.chain = chain
        # The constraints whose `commit` records something (rate limits, cooldowns); one that
        # says `records_commits = False` is not called, as it would be once per component and
        # tick for nothing.
        self._recording = [c for c in chain if getattr(c, "records_commits", True)]

    def apply(self, inp: ConstraintInput, proposed: int) -> tuple[int, list[Clamp]]:
        clamps: list[Clamp] = []
        replicas = proposed
        for constraint in self.chain:
            after, reason = constraint.apply(inp, replicas)
            if after != replicas:
                clamps.append(Clamp(constraint.name, replicas, after, reason))
                replicas = after
        return replicas, clamps

    def commit(self, component: str, now_s: float, before: int, after: int) -> None:
        for constraint in self._recording:
            constraint.commit(component, now_s, before, after)


def build_constraints(component: ComponentConfig, rules: ConstraintsConfig) -> ComponentConstraints:
    """The constraint chain for one component from its config and its effective constraints.

    Constraints whose rules cannot change anything are left out of the chain (they cost time at
    every tick and would never clamp), so an unconfigured component runs only missing data and
    bounds.
    """
    signal = "demand_rps" if component.capacity_unit == "requests" else "tokens_per_s"
    up, down = rules.scale_up, rules.scale_down
    chain: list[Constraint] = [MissingData(rules.missing_data, signal)]
    if up.stabilization_s > 0 or down.stabilization_s > 0:
        chain.append(Stabilization(up.stabilization_s, down.stabilization_s))
    if RateLimits.needed(up, down):
        chain.append(RateLimits(up, down))
    if up.cooldown_s > 0 or down.cooldown_s > 0:
        chain.append(Cooldown(up.cooldown_s, down.cooldown_s))
    if rules.schedules:
        chain.append(ScheduledBoundsConstraint(rules.schedules))
    chain.append(Bounds(component.replicas.min, component.replicas.max))
    return ComponentConstraints(chain)
