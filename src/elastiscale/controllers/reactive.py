"""What the reactive policies (`hpa`, `kpa`, `step-scaling`, `target-tracking`) share.

- metric samples: any signal of an `Observation`, plus two derived ones: `concurrency`
  (in_flight + queue_length, what Knative's queue-proxy counts) and `load` (demand in the
  component's capacity unit, requests/s or tokens/s);
- the value one replica should carry at the component's target utilization;
- trailing time windows over the engine's `MetricHistory`;
- fixed-period datapoints and M-of-N alarm evaluation, the way CloudWatch alarms drive AWS
  scaling policies;
- a log of replica-count changes seen between ticks, for rate limits and cooldowns.

Nothing here reads a clock: every function takes `now_s` from the tick.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from elastiscale.history import MetricHistory
from elastiscale.observations import SIGNALS, Observation

if TYPE_CHECKING:
    from elastiscale.controllers.base import TickContext

#: Metric names a reactive policy accepts: the observation signals and the derived ones.
METRICS: Final[tuple[str, ...]] = (*SIGNALS, "concurrency", "load")

#: Metrics whose value grows with the load the component carries, so that their value per
#: replica has a natural target (what one replica carries at the target utilization).
LOAD_METRICS: Final[frozenset[str]] = frozenset({"load", "demand_rps", "tokens_per_s"})

Statistic = Literal["average", "minimum", "maximum"]

#: Float slack for rounding replica counts: 11.2 / (0.7 x 2) is 8.000000000000002 in binary
#: floating point, and a plain ceil would ask for 9 replicas where 8 carry the load exactly.
_ROUNDING_SLACK: Final = 1e-9


def ceil_count(value: float) -> int:
    """Smallest whole count >= `value`, immune to float noise (8.000000000000002 -> 8)."""
    return math.ceil(value - _ROUNDING_SLACK)


def floor_count(value: float) -> int:
    """Largest whole count <= `value`, immune to float noise (8.999999999999998 -> 9)."""
    return math.floor(value + _ROUNDING_SLACK)


def check_metric(name: str) -> str:
    """Validate a metric name (for pydantic validators); raise ValueError naming the known ones."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return name


def resolve_metric(metric: str, ctx: TickContext, component: str) -> str:
    """`load` becomes the component's own load signal (demand_rps or tokens_per_s)."""
    return ctx.load_signal(component) if metric == "load" else metric


def sample(obs: Observation, metric: str) -> float | None:
    """The value of a resolved metric in one observation, or None when it is missing.

    `concurrency` needs both of its parts: a missing queue is not an empty queue.
    """
    if metric == "concurrency":
        in_flight, queue = obs.in_flight, obs.queue_length
        if in_flight is None or queue is None:
            return None
        return float(in_flight) + float(queue)
    return obs.value(metric)


def why_missing(obs: Observation, metric: str) -> str:
    """A short reason why `metric` is missing in `obs`, naming the signal."""
    parts = ("in_flight", "queue_length") if metric == "concurrency" else (metric,)
    for part in parts:
        if getattr(obs, part) is None:
            return f"{part} missing ({obs.why_missing(part)})"
    return f"{metric} missing"


# --------------------------------------------------------------------------------------------
# Targets per replica


def requests_capacity_rps(ctx: TickContext, component: str) -> float | None:
    """Requests per second one replica sustains.

    For a token-bound component it is derived from the observed tokens per request, e.g.
    3000 tokens/s per replica with 2 req/s bringing 1000 tokens/s (500 tokens a request) gives
    6 req/s per replica; None when that ratio cannot be observed.
    """
    comp = ctx.pipeline.components[component]
    if comp.capacity_unit == "requests":
        return comp.capacity_per_replica
    obs = ctx.observations[component]
    rps, work = obs.demand_rps, ctx.load(component)
    if rps is None or work is None or work <= 0:
        return None
    return comp.capacity_per_replica * rps / work


def concurrency_at_capacity(ctx: TickContext, component: str) -> float | None:
    """Requests in flight on one replica running at capacity (Little's law: rate x time).

    E.g. 1.5 req/s per replica at 4 s each keeps 6 requests in flight.
    """
    rps = requests_capacity_rps(ctx, component)
    if rps is None:
        return None
    return rps * ctx.pipeline.components[component].service_time_s


def per_replica_target(
    ctx: TickContext, component: str, metric: str, utilization: float
) -> float | None:
    """What one replica should carry of a resolved `metric` at `utilization` of its capacity,
    or None when the metric has no natural target (latency, replica counts, ...)."""
    comp = ctx.pipeline.components[component]
    if metric == "utilization":
        return utilization
    if metric in LOAD_METRICS:
        return comp.capacity_per_replica * utilization
    if metric in ("concurrency", "in_flight"):
        at_capacity = concurrency_at_capacity(ctx, component)
        return None if at_capacity is None else at_capacity * utilization
    return None


def metric_target(
    ctx: TickContext,
    component: str,
    metric: str,
    target_value: float | None,
    target_utilization: float | None,
) -> float | None:
    """The target a policy holds `metric` to: its explicit `target_value`, else the natural
    per-replica target at `target_utilization` (default: the component's, 0.7 unless set)."""
    if target_value is not None:
        return target_value
    utilization = target_utilization or ctx.config.pipeline.utilization_target(component)
    return per_replica_target(ctx, component, resolve_metric(metric, ctx, component), utilization)


# --------------------------------------------------------------------------------------------
# Windows over the engine's history


def window_samples(
    history: MetricHistory,
    component: str,
    value_of: Callable[[Observation], float | None],
    now_s: float,
    window_s: float,
) -> list[tuple[float, float]]:
    """(time, value) of observations stamped in (now - window, now], oldest first; missing
    values skipped."""
    since_s = now_s - window_s
    out: list[tuple[float, float]] = []
    for obs in history.observations(component, since_s=since_s):
        if since_s < obs.at_s <= now_s:
            got = value_of(obs)
            if got is not None:
                out.append((obs.at_s, got))
    return out


def aggregate(values: Sequence[float], statistic: Statistic) -> float:
    """Average, minimum or maximum of a non-empty sequence."""
    if statistic == "minimum":
        return min(values)
    if statistic == "maximum":
        return max(values)
    return math.fsum(values) / len(values)


def period_datapoints(
    history: MetricHistory,
    component: str,
    value_of: Callable[[Observation], float | None],
    now_s: float,
    period_s: float,
    count: int,
    statistic: Statistic = "average",
) -> list[float | None]:
    """The last `count` complete periods' datapoints, oldest first; None where a period holds
    no value. Periods are aligned to multiples of `period_s`, as CloudWatch aligns minutes:
    at now = 130 s with 60 s periods the complete ones are [0, 60) and [60, 120)."""
    end_s = floor_count(now_s / period_s) * period_s
    start_s = end_s - count * period_s
    buckets: list[list[float]] = [[] for _ in range(count)]
    for obs in history.observations(component, since_s=start_s):
        if not start_s <= obs.at_s < end_s:
            continue
        got = value_of(obs)
        if got is not None:
            index = min(count - 1, int((obs.at_s - start_s) // period_s))
            buckets[index].append(got)
    return [aggregate(b, statistic) if b else None for b in buckets]


def last_period_end_s(now_s: float, period_s: float) -> float:
    """End of the last complete period at `now_s` (periods aligned to multiples of period_s)."""
    return floor_count(now_s / period_s) * period_s


Comparison = Literal[">", ">=", "<", "<="]


def compare(value: float, comparison: Comparison, threshold: float) -> bool:
    if comparison == ">":
        return value > threshold
    if comparison == ">=":
        return value >= threshold
    if comparison == "<":
        return value < threshold
    return value <= threshold


@dataclass(frozen=True, slots=True)
class AlarmEvaluation:
    """An M-of-N alarm over datapoints: `ALARM`, `OK` or `INSUFFICIENT_DATA` (no datapoint)."""

    state: Literal["ALARM", "OK", "INSUFFICIENT_DATA"]
    breaching: int
    present: int
    latest: float | None  # the newest datapoint present


def evaluate_alarm(
    datapoints: Sequence[float | None],
    comparison: Comparison,
    threshold: float,
    datapoints_to_alarm: int,
) -> AlarmEvaluation:
    """ALARM when at least `datapoints_to_alarm` of the datapoints breach the threshold.

    A missing datapoint neither breaches nor clears (CloudWatch's default treatment of missing
    data); with no datapoint at all the state is INSUFFICIENT_DATA and no scaling happens.
    """
    present = [d for d in datapoints if d is not None]
    if not present:
        return AlarmEvaluation("INSUFFICIENT_DATA", 0, 0, None)
    breaching = sum(1 for d in present if compare(d, comparison, threshold))
    state: Literal["ALARM", "OK"] = "ALARM" if breaching >= datapoints_to_alarm else "OK"
    return AlarmEvaluation(state, breaching, len(present), present[-1])


# --------------------------------------------------------------------------------------------
# Replica-count changes


@dataclass(frozen=True, slots=True)
class ScaleEvent:
    """The replica count went from `before` to `after`, decided at the tick at `at_s`."""

    at_s: float
    before: int
    after: int

    @property
    def change(self) -> int:
        return self.after - self.before


class ReplicaChanges:
    """Changes of one component's replica count, seen by comparing counts between ticks.

    A change first seen at a tick is stamped with the previous tick, when it was decided (the
    engine acts in the same tick it decides), so that a 15 s rate-limit period ticked every 15 s
    lets one full step through per tick, as in the HPA. Events older than `keep_s` are dropped.
    """

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self.events: deque[ScaleEvent] = deque()
        self._last: tuple[float, int] | None = None

    def observe(self, now_s: float, current: int) -> ScaleEvent | None:
        """Record the count at this tick; return the change since the previous tick, if any."""
        event = None
        if self._last is not None and current != self._last[1]:
            event = ScaleEvent(self._last[0], self._last[1], current)
            self.events.append(event)
        self._last = (now_s, current)
        while self.events and self.events[0].at_s < now_s - self.keep_s:
            self.events.popleft()
        return event

    def added_within(self, now_s: float, period_s: float) -> int:
        """Replicas added by events in (now - period, now]."""
        return sum(e.change for e in self.events if e.change > 0 and e.at_s > now_s - period_s)

    def removed_within(self, now_s: float, period_s: float) -> int:
        """Replicas removed by events in (now - period, now], as a positive number."""
        return -sum(e.change for e in self.events if e.change < 0 and e.at_s > now_s - period_s)

    def count_before(self, now_s: float, period_s: float, current: int) -> int:
        """The count at the start of (now - period, now]: `current` without what events in it
        added and with what they removed."""
        return current - self.added_within(now_s, period_s) + self.removed_within(now_s, period_s)

    def last(self, direction: Literal["up", "down"]) -> ScaleEvent | None:
        """The newest event in `direction`, if one is still kept."""
        for event in reversed(self.events):
            if (event.change > 0) == (direction == "up"):
                return event
        return None


class ReadyLog:
    """Ready replica counts as seen at each tick, to turn a total into a per-replica value for
    observations that do not carry `ready_replicas` themselves."""

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self._stamps: list[float] = []
        self._counts: list[int] = []

    def record(self, now_s: float, ready: int) -> None:
        self._stamps.append(now_s)
        self._counts.append(ready)
        # Drop entries no longer needed (keeping the last one older than the horizon), in
        # batches so that recording stays O(1) amortized.
        stale = bisect.bisect_left(self._stamps, now_s - self.keep_s) - 1
        if stale > 64:
            del self._stamps[:stale]
            del self._counts[:stale]

    def at(self, t_s: float) -> int | None:
        """The count seen at the last tick at or before `t_s` (else the oldest one kept)."""
        if not self._stamps:
            return None
        index = bisect.bisect_right(self._stamps, t_s) - 1
        return self._counts[max(index, 0)]


# --------------------------------------------------------------------------------------------
# Metrics as CloudWatch alarms see them (step-scaling, target-tracking)

#: Metrics that are totals over the component, so that a per-replica value divides them.
_TOTAL_METRICS: Final[frozenset[str]] = LOAD_METRICS | {"concurrency", "in_flight", "queue_length"}


def default_per_replica(metric: str) -> bool:
    """Totals (load, concurrency, queue) are divided by ready replicas, like AWS's
    RequestCountPerTarget; averages and gauges (utilization, latency) are not."""
    return metric in _TOTAL_METRICS


def natural_target_problem(metric: str, per_replica: bool) -> str | None:
    """Why `metric` has no target derivable from the component, or None when it has one."""
    if metric == "utilization" and not per_replica:
        return None
    if metric in (LOAD_METRICS | {"concurrency", "in_flight"}) and per_replica:
        return None
    how = "per replica" if per_replica else "as a total"
    return f"metric {metric!r} {how} has no target derived from the component; set target_value"


class PeriodicMetric:
    """One metric of each component as a CloudWatch alarm sees it: one datapoint per period
    (the average, minimum or maximum of the engine's samples in it), optionally divided by the
    replicas that were ready when the sample was taken.

    A sample's ready count is its own `ready_replicas` when the source reports it, else the
    count seen at the last tick before it. With no ready replica a per-replica value is missing
    (as AWS cannot scale out from zero on a per-target metric).

    Datapoints of periods older than the last two complete ones are kept once computed (a
    15-datapoint alarm then reads two periods of samples per evaluation, not fifteen); the
    last two are recomputed, so a sample that a delayed source reports late still counts.
    """

    #: Complete periods recomputed at every evaluation, for samples that arrive late.
    RECOMPUTED_PERIODS: Final = 2

    def __init__(
        self,
        metric: str,
        per_replica: bool,
        period_s: float,
        statistic: Statistic,
        keep_s: float,
    ) -> None:
        self.metric = metric
        self.per_replica = per_replica
        self.period_s = period_s
        self.statistic: Statistic = statistic
        self.keep_s = keep_s
        self._ready: dict[str, ReadyLog] = {}
        self._settled: dict[str, dict[int, float | None]] = {}  # by period index

    def record(self, component: str, now_s: float, ready: int) -> None:
        """Remember the ready count of this tick (call once per tick and component)."""
        self._ready.setdefault(component, ReadyLog(self.keep_s)).record(now_s, ready)

    def datapoints(self, ctx: TickContext, component: str, count: int) -> list[float | None]:
        """The last `count` complete periods, oldest first (None: no sample in the period)."""
        signal = resolve_metric(self.metric, ctx, component)
        log = self._ready.setdefault(component, ReadyLog(self.keep_s))

        def value_of(obs: Observation) -> float | None:
            got = sample(obs, signal)
            if got is None or not self.per_replica:
                return got
            ready = obs.ready_replicas if obs.ready_replicas is not None else log.at(obs.at_s)
            return None if not ready else got / ready

        # Period i covers [i x period, (i + 1) x period); `last` is the newest complete one.
        last = round(last_period_end_s(ctx.now_s, self.period_s) / self.period_s) - 1
        wanted = range(last - count + 1, last + 1)
        settled = self._settled.setdefault(component, {})
        fresh_from = last - self.RECOMPUTED_PERIODS + 1
        first_unknown = next((i for i in wanted if i not in settled or i >= fresh_from), None)
        if first_unknown is not None:
            computed = period_datapoints(
                ctx.history,
                component,
                value_of,
                ctx.now_s,
                self.period_s,
                last - first_unknown + 1,
                self.statistic,
            )
            for index, value in zip(range(first_unknown, last + 1), computed, strict=True):
                if index < fresh_from:
                    settled[index] = value
                else:
                    settled.pop(index, None)
            known = {**settled, **dict(zip(range(first_unknown, last + 1), computed, strict=True))}
        else:
            known = settled
        oldest_kept = last - round(self.keep_s / self.period_s) - 1
        for index in [i for i in settled if i < oldest_kept]:
            del settled[index]
        return [known.get(i) for i in wanted]


def history_problem(policy: str, history_s: float, needed_s: float) -> str | None:
    """A one-line complaint when the engine keeps less history than a policy's longest alarm."""
    if history_s >= needed_s:
        return None
    return (
        f"{policy}: control.history_s = {history_s:g} s, needs at least {needed_s:g} s "
        "for its longest alarm"
    )


class ScaleOutCooldown:
    """AWS's scale-out cooldown of one component.

    A scale-out seen while no cooldown runs opens one for `cooldown_s`, remembering the
    capacity before it; scale-outs inside a running cooldown do not open another. While it
    runs, new capacity is sized over that remembered base, so that what the opening scale-out
    added counts toward the next: +2 from 4 to 6, then a +3 step during the cooldown gives
    4 + 3 = 7, one more replica, and a further +3 step gives 7 again, nothing more. A scale-in
    ends the cooldown.
    """

    def __init__(self, cooldown_s: float) -> None:
        self.cooldown_s = cooldown_s
        self.opened_s: float | None = None
        self._base = 0

    def observe(self, event: ScaleEvent | None) -> None:
        """Learn of a change seen at this tick (from `ReplicaChanges.observe`)."""
        if event is None:
            return
        if event.change < 0:
            self.opened_s = None
        elif self.opened_s is None or event.at_s - self.opened_s >= self.cooldown_s:
            self.opened_s = event.at_s
            self._base = event.before

    def base(self, now_s: float) -> int | None:
        """The capacity before the scale-out that opened the running cooldown, or None."""
        if self.opened_s is None or now_s - self.opened_s >= self.cooldown_s:
            return None
        return self._base
