"""`hpa`: the Kubernetes HorizontalPodAutoscaler (autoscaling/v2) algorithm and default behavior.

Sources, all in kubernetes/kubernetes:
- pkg/controller/podautoscaler/replica_calculator.go: the desired count of one metric,
  `ceil(current x metric / target)`, nothing while the ratio is within the tolerance, and the
  not-ready-pod rule (`calcPlainMetricReplicas`, `GetExternalPerPodMetricReplicas`);
- pkg/controller/podautoscaler/horizontal.go: several metrics (`computeReplicasForMetrics`:
  the max of the valid proposals, and no scaling at all when a metric is invalid and the others
  would scale down), stabilization (`stabilizeRecommendationWithBehaviors`) and rate limits
  (`convertDesiredReplicasWithBehaviorRate`, `calculateScaleUpLimitWithScalingRules`,
  `calculateScaleDownLimitWithBehaviors`);
- pkg/apis/autoscaling/v2/defaults.go: the default behavior (scale up: no stabilization,
  max(100 %, 4 pods) per 15 s; scale down: 300 s stabilization, 100 % per 15 s);
- kube-controller-manager flags: `--horizontal-pod-autoscaler-sync-period` 15 s,
  `--horizontal-pod-autoscaler-tolerance` 0.1.

Our signals as HPA metrics:
- `demand_rps`: an External metric with an AverageValue target. The component's load (requests
  or tokens per second) against `capacity_per_replica x target utilization` per replica; the
  ratio is taken over the replicas the platform counts (desired), as HPA does with
  `status.replicas`.
- `utilization`: a Resource (CPU-like) Utilization target, the busy fraction averaged over ready
  replicas against the component's target utilization (0.7 by default).
- `concurrency`: a Pods metric, (in_flight + queue_length) per ready replica against
  `capacity_per_replica x service_time_s x target utilization`.
For the last two, replicas that are starting (desired - ready) are HPA's unready pods: ignored,
and counted as using nothing when the metric asks for a scale-up, which damps scale-ups while
capacity is on its way.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal, NamedTuple, get_args

from pydantic import BeforeValidator, Field, field_validator

from elastiscale import spellings
from elastiscale.controllers.base import ParamsModel, PerComponentPolicy, TickContext
from elastiscale.controllers.reactive import (
    ReplicaChanges,
    ceil_count,
    concurrency_at_capacity,
    floor_count,
    why_missing,
)
from elastiscale.decision import Detail, Proposal

if TYPE_CHECKING:
    from elastiscale.config import Config
    from elastiscale.config.models import ReplicaBounds

HPAMetric = Literal["demand_rps", "utilization", "concurrency"]
_new_tuple = tuple.__new__  # builds a named tuple from its fields' tuple
_TEXTS_KEPT = 65536  # reasons kept for reuse (`HPAPolicy._average_texts`), then started over
#: The details a reading of each metric gives its proposal (names built once, not per tick).
_DETAIL_KEYS = {
    metric: (f"{metric}_value", f"{metric}_target", f"{metric}_ratio", f"{metric}_replicas")
    for metric in get_args(HPAMetric)
}


class HPAScalingPolicy(ParamsModel):
    """At most `value` pods, or `value` percent of the count at the start of the period, per
    `period_s` (HPAScalingPolicy: periodSeconds is in (0, 1800])."""

    type: Annotated[Literal["pods", "percent"], BeforeValidator(spellings.lower)]
    value: int = Field(..., gt=0)
    period_s: float = Field(..., gt=0, le=1800, validation_alias=spellings.PERIOD)


class HPAScalingRules(ParamsModel):
    """One direction of HPA behavior (HPAScalingRules), in elastiscale's names or HPA's
    (`stabilizationWindowSeconds`, `selectPolicy: Max`, `policies`, `periodSeconds`: a pasted
    HPA `behavior` block works as it stands; see `elastiscale.spellings`).

    stabilization_window_s: recommendations considered (0..3600 s, as the API allows).
    select_policy: `max` takes the policy allowing the most change, `min` the least,
    `disabled` forbids this direction.
    tolerance: this direction's tolerance (Kubernetes 1.33 `behavior.*.tolerance`); None
    uses the policy-wide `tolerance`.
    """

    stabilization_window_s: float = Field(
        0.0, ge=0, le=3600, validation_alias=spellings.STABILIZATION
    )
    select_policy: Annotated[
        Literal["max", "min", "disabled"], BeforeValidator(spellings.lower)
    ] = Field("max", validation_alias=spellings.SELECT_POLICY)
    policies: tuple[HPAScalingPolicy, ...] = Field(
        ..., min_length=1, validation_alias=spellings.RATE_LIMITS
    )
    tolerance: float | None = Field(None, ge=0)


class HPAScaleUpRules(HPAScalingRules):
    """Scale-up defaults of pkg/apis/autoscaling/v2/defaults.go."""

    stabilization_window_s: float = Field(
        0.0, ge=0, le=3600, validation_alias=spellings.STABILIZATION
    )
    policies: tuple[HPAScalingPolicy, ...] = Field(
        default=(
            HPAScalingPolicy(type="percent", value=100, period_s=15),
            HPAScalingPolicy(type="pods", value=4, period_s=15),
        ),
        min_length=1,
        validation_alias=spellings.RATE_LIMITS,
    )


class HPAScaleDownRules(HPAScalingRules):
    """Scale-down defaults: 300 s stabilization (the controller's
    --horizontal-pod-autoscaler-downscale-stabilization), 100 % per 15 s."""

    stabilization_window_s: float = Field(
        300.0, ge=0, le=3600, validation_alias=spellings.STABILIZATION
    )
    policies: tuple[HPAScalingPolicy, ...] = Field(
        default=(HPAScalingPolicy(type="percent", value=100, period_s=15),),
        min_length=1,
        validation_alias=spellings.RATE_LIMITS,
    )


class HPABehavior(ParamsModel):
    """The `behavior` section of an HPA; a direction left out keeps its defaults."""

    scale_up: HPAScaleUpRules = Field(HPAScaleUpRules(), validation_alias=spellings.SCALE_UP)
    scale_down: HPAScaleDownRules = Field(
        HPAScaleDownRules(), validation_alias=spellings.SCALE_DOWN
    )


class HPAParams(ParamsModel):
    """Parameters of `hpa` (defaults: Kubernetes' own)."""

    metrics: tuple[HPAMetric, ...] = ("demand_rps",)
    tolerance: float = Field(0.1, ge=0, lt=1)
    target_utilization: float | None = Field(
        None, gt=0, le=1, description="default: the component's target utilization"
    )
    behavior: HPABehavior = HPABehavior()

    @field_validator("metrics")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("list at least one metric")
        repeated = sorted({m for m in value if value.count(m) > 1})
        if repeated:
            raise ValueError(f"metric {repeated[0]!r} is listed twice")
        return value


class _Reading(NamedTuple):
    """One metric's outcome: a desired count, or None and why not (a named tuple: one is
    built per component, metric and tick, and a tuple is the cheapest immutable record)."""

    metric: str
    replicas: int | None
    reason: str
    value: float | None = None
    target: float | None = None
    ratio: float | None = None


@dataclass(frozen=True, slots=True)
class _Tolerance:
    """No change while low <= ratio <= high: 1 - down and 1 + up (Tolerances.isWithin),
    computed once (`of`) rather than at every reading."""

    low: float
    high: float

    @classmethod
    def of(cls, up: float, down: float) -> _Tolerance:
        return cls(1.0 - down, 1.0 + up)

    def within(self, ratio: float) -> bool:
        return self.low <= ratio <= self.high


class _Target(NamedTuple):
    """A component's target, from the configuration only (looked up once per pipeline)."""

    pipeline: object  # the pipeline it was looked up in
    utilization: float
    per_replica: float  # demand per replica at the target utilization
    per_replica_text: str  # formatted as the reason shows it ("{:.4g}")
    requests: bool  # the component's load is in requests (else tokens) per second
    bounds: ReplicaBounds  # the component's replicas.min and max


class _Recommendations:
    """One component's recommendations over the stabilization windows, as two monotonic queues:
    `lows` (values rising from the front) gives the lowest recommendation after a cutoff, `highs`
    (values falling) the highest. A recommendation beaten by a newer one can never be the
    extreme of a later window, so it is dropped when the newer one comes: each tick costs O(1)
    amortized instead of a scan of the window (20 recommendations of the default 300 s at 15 s
    ticks). Cutoffs only move forward, as time does."""

    __slots__ = ("highs", "lows")

    def __init__(
        self,
        now_s: float | None = None,
        value: int = 0,
        *,
        lows: bool = True,
        highs: bool = True,
    ) -> None:
        """`lows`, `highs`: whether to keep that queue. A window of 0 s needs none (the
        default scale-up window): at the next tick every earlier recommendation is at or
        before its cutoff, `now - 0`, so the limit is the tick's own value."""
        self.lows: deque[tuple[float, int]] | None = deque() if lows else None
        self.highs: deque[tuple[float, int]] | None = deque() if highs else None
        if now_s is not None:
            self.add(now_s, value)

    def limits(self, up_cutoff_s: float, down_cutoff_s: float, value: int) -> tuple[int, int]:
        """(lowest of `value` and the recommendations after `up_cutoff_s`, highest of `value`
        and those after `down_cutoff_s`)."""
        lows, highs = self.lows, self.highs
        low = high = value
        if lows is not None:
            while lows and lows[0][0] <= up_cutoff_s:
                lows.popleft()
            if lows and lows[0][1] < value:
                low = lows[0][1]
        if highs is not None:
            while highs and highs[0][0] <= down_cutoff_s:
                highs.popleft()
            if highs and highs[0][1] > value:
                high = highs[0][1]
        return low, high

    def add(self, now_s: float, value: int) -> None:
        lows, highs = self.lows, self.highs
        if lows is not None:
            while lows and lows[-1][1] >= value:
                lows.pop()
            lows.append((now_s, value))
        if highs is not None:
            while highs and highs[-1][1] <= value:
                highs.pop()
            highs.append((now_s, value))


class HPAPolicy(PerComponentPolicy):
    """Kubernetes HPA v2, one HPA per component, ticked every 15 s (the default sync period)."""

    name = "hpa"
    interval_s: float = 15.0
    Params: ClassVar[type[HPAParams]] = HPAParams

    def __init__(self, config: Config, params: HPAParams | None = None) -> None:
        self.config = config
        self.params = params if params is not None else HPAParams()
        behavior = self.params.behavior
        self._tolerance = _Tolerance.of(
            up=_pick(behavior.scale_up.tolerance, self.params.tolerance),
            down=_pick(behavior.scale_down.tolerance, self.params.tolerance),
        )
        self._up_window_s = behavior.scale_up.stabilization_window_s
        self._down_window_s = behavior.scale_down.stabilization_window_s
        self._up_window_text = f"{self._up_window_s:g}"  # as the reasons show them
        self._down_window_text = f"{self._down_window_s:g}"
        longest_period_s = max(
            p.period_s for p in (*behavior.scale_up.policies, *behavior.scale_down.policies)
        )
        self._keep_s = longest_period_s
        self._recommendations: dict[str, _Recommendations] = {}
        self._changes: dict[str, ReplicaChanges] = {}
        self._targets: dict[str, _Target] = {}
        # The reasons of AverageValue readings by (total, demand per replica, count): a load
        # measured over a rate window takes few distinct values (about 4,000 a component in 8
        # days of the benchmark's NASA month), and formatting two floats for every reading
        # was the costliest part of a tick's proposal.
        self._average_texts: dict[tuple[float, float, int], str] = {}

    # ----------------------------------------------------------------------------------------

    def propose_component(self, ctx: TickContext, component: str) -> Proposal:
        target = self._target(ctx, component)
        bounds = target.bounds
        state = ctx.replicas[component]
        current = state.desired
        changes = self._changes.get(component)
        if changes is None:
            changes = self._changes[component] = ReplicaChanges(self._keep_s)
        changes.observe(ctx.now_s, current)
        history = self._recommendations.get(component)
        if history is None:
            # recordInitialRecommendation: a new HPA remembers the current count, so it does
            # not scale down before a whole stabilization window has passed.
            history = self._recommendations[component] = self._new_recommendations(
                ctx.now_s, current
            )
        if current == 0 and bounds.min != 0:
            return Proposal.none(
                self.name, "scaling is disabled: the component has 0 replicas and min > 0"
            )
        if current > bounds.max:
            return Proposal(self.name, bounds.max, f"current {current} above max {bounds.max}")
        if current < bounds.min:
            return Proposal(self.name, bounds.min, f"current {current} below min {bounds.min}")

        metrics = self.params.metrics
        details: dict[str, Detail] | None = None  # one metric's: built at the end, at once
        if len(metrics) == 1:  # the usual case: the one reading recommends, or nothing does
            best = self._reading(ctx, component, metrics[0], current, target)
            if best.replicas is None:
                return Proposal.none(
                    self.name,
                    f"no valid metric ({best.metric}: {best.reason})",
                    **self._reading_details(current, state.ready, best),
                )
        else:
            got = self._best_of(ctx, component, metrics, current, state.ready, target)
            if isinstance(got, Proposal):
                return got
            best, details = got
        recommended = best.replicas or 0
        stabilized, why_stable = self._stabilize(history, ctx.now_s, current, recommended)
        if stabilized == current:  # nothing to rate-limit
            desired, why_limited = stabilized, ""
        else:
            desired, why_limited = self._rate_limit(
                changes, ctx.now_s, current, stabilized, bounds.min, bounds.max
            )
        if details is None:
            value_key, target_key, ratio_key, replicas_key = _DETAIL_KEYS[best.metric]
            details = {
                "current": current, "ready": state.ready, value_key: best.value,
                target_key: best.target, ratio_key: best.ratio, replicas_key: best.replicas,
                "recommended": recommended, "stabilized": stabilized, "limited": desired,
            }  # fmt: skip
        else:
            details["recommended"] = recommended
            details["stabilized"] = stabilized
            details["limited"] = desired
        reason = f"{best.metric}: {best.reason}"
        if why_stable:
            reason += f"; {why_stable}"
        if why_limited:
            reason += f"; {why_limited}"
        return Proposal(self.name, desired, reason, details)

    @staticmethod
    def _reading_details(current: int, ready: int, reading: _Reading) -> dict[str, Detail]:
        """The details of one reading, after the counts (the keys in the order a proposal
        lists them)."""
        value_key, target_key, ratio_key, replicas_key = _DETAIL_KEYS[reading.metric]
        return {
            "current": current, "ready": ready, value_key: reading.value,
            target_key: reading.target, ratio_key: reading.ratio, replicas_key: reading.replicas,
        }  # fmt: skip

    def _best_of(
        self,
        ctx: TickContext,
        component: str,
        metrics: tuple[str, ...],
        current: int,
        ready: int,
        target: _Target,
    ) -> tuple[_Reading, dict[str, Detail]] | Proposal:
        """Several metrics: the reading that recommends the most replicas and the details of
        all, or the proposal of nothing when none is valid or an invalid one would be ignored
        for a scale-down (computeReplicasForMetrics)."""
        readings = [self._reading(ctx, component, m, current, target) for m in metrics]
        details: dict[str, Detail] = {}
        for r in readings:
            details.update(self._reading_details(current, ready, r))  # the counts once, first
        valid = [r for r in readings if r.replicas is not None]
        invalid = [r for r in readings if r.replicas is None]
        if not valid:
            reasons = "; ".join(f"{r.metric}: {r.reason}" for r in invalid)
            return Proposal.none(self.name, f"no valid metric ({reasons})", **details)
        best = valid[0] if len(valid) == 1 else max(valid, key=lambda r: r.replicas or 0)
        if invalid and (best.replicas or 0) < current:
            return Proposal.none(
                self.name,
                f"no scale-down while {invalid[0].metric} is invalid ({invalid[0].reason})",
                **details,
            )
        return best, details

    # ----------------------------------------------------------------------------------------
    # One metric (replica_calculator.go)

    def _target(self, ctx: TickContext, component: str) -> _Target:
        """`component`'s target utilization, demand per replica at it, load unit and
        replica bounds."""
        got = self._targets.get(component)
        if got is None or got.pipeline is not ctx.pipeline:
            utilization = self.params.target_utilization or ctx.config.pipeline.utilization_target(
                component
            )
            spec = ctx.pipeline.components[component]
            per_replica = spec.capacity_per_replica * utilization
            got = self._targets[component] = _Target(
                ctx.pipeline, utilization, per_replica, f"{per_replica:.4g}",
                spec.capacity_unit == "requests", spec.replicas,
            )  # fmt: skip
        return got

    def _reading(
        self, ctx: TickContext, component: str, metric: str, current: int, target: _Target
    ) -> _Reading:
        """One metric's reading; `target` is the component's (`_target`)."""
        utilization = target.utilization
        obs = ctx.observations[component]
        if metric == "demand_rps":
            # `ctx.load(component)`, with the unit looked up once
            load = obs.demand_rps if target.requests else obs.tokens_per_s
            if load is None:
                return _Reading(metric, None, why_missing(obs, ctx.load_signal(component)))
            return self._external_average(metric, load, target, current)
        ready = ctx.replicas[component].ready
        if metric == "utilization":
            busy = obs.utilization
            if busy is None:
                return _Reading(metric, None, why_missing(obs, "utilization"))
            return self._per_pod(metric, busy, utilization, ready, current)
        in_flight, queue = obs.in_flight, obs.queue_length
        if in_flight is None or queue is None:
            return _Reading(metric, None, why_missing(obs, "concurrency"))
        at_capacity = concurrency_at_capacity(ctx, component)
        if at_capacity is None:
            return _Reading(metric, None, "no requests-per-second capacity to size concurrency")
        if ready <= 0:
            return _Reading(metric, None, "no ready replica reports concurrency")
        per_pod = (in_flight + queue) / ready
        return self._per_pod(metric, per_pod, at_capacity * utilization, ready, current)

    def _external_average(
        self, metric: str, total: float, target: _Target, current: int
    ) -> _Reading:
        """AverageValue target on a total: ratio over the counted replicas, then
        ceil(total / per_replica). E.g. 120 req/s, 35 per replica, 4 replicas: ratio 0.86,
        outside the tolerance, so ceil(120 / 35) = 4 (no change after all)."""
        per_replica = target.per_replica
        if current == 0:
            ratio = math.inf if total > 0 else 1.0
        else:
            ratio = total / (per_replica * current)
        tolerance = self._tolerance
        if tolerance.low <= ratio <= tolerance.high:  # within the tolerance
            replicas = current
        else:
            replicas = ceil_count(total / per_replica)
        key = (total, per_replica, current)  # the text is a function of these three
        text = self._average_texts.get(key) if total != 0 else None  # 0.0 == -0.0: not a key
        if text is None:
            text = (
                f"{total:.4g} vs {target.per_replica_text}/replica x {current}: "
                f"ratio {ratio:.3f} -> {replicas}"
            )
            if total != 0:
                if len(self._average_texts) >= _TEXTS_KEPT:
                    self._average_texts.clear()
                self._average_texts[key] = text
        # all six fields, as _Reading's own __new__ would pass them (without its Python-level
        # call: once per component and tick)
        return _new_tuple(_Reading, (metric, replicas, text, total, per_replica, ratio))

    def _per_pod(
        self, metric: str, per_pod: float, target: float, ready: int, current: int
    ) -> _Reading:
        """A per-ready-pod average against a target (calcPlainMetricReplicas).

        Replicas that are starting (current - ready) count as using nothing when the ratio
        asks for a scale-up: 4 ready at 2x target with 4 more starting gives a ratio of
        2 x 4 / 8 = 1.0 over all 8, within tolerance, so no further scale-up.
        """
        if ready <= 0:
            return _Reading(metric, None, f"no ready replica reports {metric}")
        unready = max(0, current - ready)
        ratio = per_pod / target
        text = f"{per_pod:.4g}/replica vs target {target:.4g}: ratio {ratio:.3f}"

        def reading(replicas: int, note: str = "") -> _Reading:
            return _Reading(metric, replicas, f"{text}{note} -> {replicas}", per_pod, target, ratio)

        if not (unready > 0 and ratio > 1.0):
            if self._tolerance.within(ratio):
                return reading(current)
            return reading(ceil_count(ratio * ready))
        counted = ready + unready
        new_ratio = per_pod * ready / (target * counted)
        note = f", {new_ratio:.3f} counting {unready} starting replicas as idle"
        if self._tolerance.within(new_ratio) or new_ratio < 1.0:
            return reading(current, note)
        replicas = ceil_count(new_ratio * counted)
        return reading(current if replicas < current else replicas, note)

    # ----------------------------------------------------------------------------------------
    # Behavior (horizontal.go)

    def _stabilize(
        self, history: _Recommendations, now_s: float, current: int, recommended: int
    ) -> tuple[int, str]:
        """Scale up only to the lowest recommendation of the scale-up window, down only to the
        highest of the scale-down window (of the component's `history`); then remember this
        tick's recommendation."""
        up_limit, down_limit = history.limits(
            now_s - self._up_window_s, now_s - self._down_window_s, recommended
        )
        # min(max(current, up_limit), down_limit), without the calls
        stabilized = current if current >= up_limit else up_limit
        if stabilized > down_limit:
            stabilized = down_limit
        history.add(now_s, recommended)
        if stabilized == recommended:
            return stabilized, ""
        if stabilized > recommended:
            window = self._down_window_text
            return stabilized, f"scale-down stabilized at {stabilized} (highest in {window} s)"
        window = self._up_window_text
        return stabilized, f"scale-up stabilized at {stabilized} (lowest in {window} s)"

    def _new_recommendations(self, now_s: float, value: int) -> _Recommendations:
        """A component's recommendations, without the queue of a window of 0 s."""
        return _Recommendations(
            now_s, value, lows=self._up_window_s > 0, highs=self._down_window_s > 0
        )

    def _rate_limit(
        self,
        changes: ReplicaChanges,
        now_s: float,
        current: int,
        desired: int,
        min_replicas: int,
        max_replicas: int,
    ) -> tuple[int, str]:
        """Clamp to the behavior's rate limits and to [min, max]."""
        behavior = self.params.behavior
        if desired > current:
            limit = max(
                current, self._policies_limit(changes, now_s, current, behavior.scale_up, up=True)
            )
            allowed = min(max_replicas, limit)
            if desired > allowed:
                why = "scale-up rate limit" if allowed < max_replicas else "max"
                return allowed, f"{why}: {allowed}"
        elif desired < current:
            limit = min(
                current,
                self._policies_limit(changes, now_s, current, behavior.scale_down, up=False),
            )
            allowed = max(min_replicas, limit)
            if desired < allowed:
                why = "scale-down rate limit" if allowed > min_replicas else "min"
                return allowed, f"{why}: {allowed}"
        return desired, ""

    @staticmethod
    def _policies_limit(
        changes: ReplicaChanges, now_s: float, current: int, rules: HPAScalingRules, up: bool
    ) -> int:
        """The count the scaling policies of one direction allow, from the count at the start
        of each policy's period: the most change among them with `select_policy: max`, the
        least with `min`. Up, default rules at 3 replicas: max(ceil(3 x 2), 3 + 4) = 7; down,
        100 % per 15 s lets any count go at once."""
        if rules.select_policy == "disabled":
            return current
        sign = 1 if up else -1
        limits = []
        for policy in rules.policies:
            start = changes.count_before(now_s, policy.period_s, current)
            if policy.type == "pods":
                limits.append(start + sign * policy.value)
            else:
                scaled = start * (1 + sign * policy.value / 100)
                limits.append(ceil_count(scaled) if up else floor_count(scaled))
        most, least = (max(limits), min(limits)) if up else (min(limits), max(limits))
        return most if rules.select_policy == "max" else least


def _pick(own: float | None, default: float) -> float:
    return default if own is None else own
