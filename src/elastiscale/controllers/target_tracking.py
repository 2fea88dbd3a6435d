"""`target-tracking`: AWS Application Auto Scaling target tracking.

Sources (AWS documentation and what AWS creates for such a policy):
- "Target tracking scaling policies for Application Auto Scaling" (application/userguide/
  application-auto-scaling-target-tracking.html): keep a metric at the target value, scaling
  out proportionally to the metric as fast as it can and scaling in more gradually; with
  missing datapoints the alarm has INSUFFICIENT_DATA and nothing scales.
- The two CloudWatch alarms Application Auto Scaling manages for the policy: AlarmHigh, metric
  above the target for 3 of 3 one-minute datapoints, and AlarmLow, below it for 15 of 15
  (as users report for Aurora and ECS; the counts are not configurable there). On ECS the low
  alarm sits at 90 % of the target (45 for a target of 50): `scale_in_threshold_ratio`, 0.9;
  this ratio is observed, not a documented constant, so it is a parameter.
- API reference `TargetTrackingScalingPolicyConfiguration`: ScaleOutCooldown (while it runs,
  the capacity added by the scale-out that started it counts as part of the next one, so the
  policy adds more only for a larger scale-out), ScaleInCooldown (no scale-in until it ends; a
  scale-out during it ends it), both 300 s by default for ECS services, SageMaker endpoint
  variants and custom resources; DisableScaleIn, false by default.

New capacity is proportional: ceil(capacity x metric / target), over the current capacity, or
during a scale-out cooldown over the capacity before that scale-out. E.g. 4 replicas at 150
req/s per replica against a target of 100: ceil(4 x 1.5) = 6. The metric is any observation
signal (or `concurrency`, `load`), per ready replica for totals; the target defaults to what one
replica carries at the component's target utilization. Alarms evaluate complete 60 s periods,
so the policy decides once a minute (`interval_s` = 60 s) and repeats that decision on ticks
within the same minute. Like AWS, a per-replica metric cannot scale out from zero replicas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field, ValidationInfo, field_validator

from elastiscale.controllers.aws_alarms import (
    AlarmMetricParams,
    AlarmPolicy,
    missing_target_problem,
    scale_in_cooldown,
)
from elastiscale.controllers.base import TickContext
from elastiscale.controllers.reactive import (
    ReplicaChanges,
    ceil_count,
    evaluate_alarm,
    metric_target,
)
from elastiscale.decision import Detail, Proposal

if TYPE_CHECKING:
    from elastiscale.config import Config


class TargetTrackingParams(AlarmMetricParams):
    """Parameters of `target-tracking` (defaults: AWS's)."""

    target_value: float | None = Field(
        None, gt=0, validate_default=True, description="default: from the component"
    )
    target_utilization: float | None = Field(None, gt=0, le=1)
    scale_out_datapoints: int = Field(3, ge=1, le=60)
    scale_in_datapoints: int = Field(15, ge=1, le=60)
    scale_in_threshold_ratio: float = Field(0.9, gt=0, le=1)
    scale_out_cooldown_s: float = Field(300.0, ge=0)
    scale_in_cooldown_s: float = Field(300.0, ge=0)
    disable_scale_in: bool = False

    @field_validator("target_value")
    @classmethod
    def _target_known(cls, value: float | None, info: ValidationInfo) -> float | None:
        problem = missing_target_problem(info) if value is None else ""
        if problem:
            raise ValueError(problem)
        return value


class TargetTrackingPolicy(AlarmPolicy):
    """AWS target tracking per component."""

    name = "target-tracking"
    Params: ClassVar[type[TargetTrackingParams]] = TargetTrackingParams
    params: TargetTrackingParams

    def __init__(self, config: Config, params: TargetTrackingParams | None = None) -> None:
        self.config = config
        self.params = p = params if params is not None else TargetTrackingParams()
        periods = max(p.scale_out_datapoints, p.scale_in_datapoints)
        cooldown_s = max(p.scale_out_cooldown_s, p.scale_in_cooldown_s)
        self._start(config, periods, cooldown_s, p.scale_out_cooldown_s)

    # ----------------------------------------------------------------------------------------

    def _evaluate(
        self, ctx: TickContext, component: str, current: int, changes: ReplicaChanges
    ) -> Proposal:
        p = self.params
        target = self._target(ctx, component)
        if target is None:
            return Proposal.none(self.name, "no target to track")
        count = max(p.scale_out_datapoints, p.scale_in_datapoints)
        points = self._metric.datapoints(ctx, component, count)
        high = evaluate_alarm(
            points[-p.scale_out_datapoints :], ">", target, p.scale_out_datapoints
        )
        low_threshold = target * p.scale_in_threshold_ratio
        low = evaluate_alarm(
            points[-p.scale_in_datapoints :], "<", low_threshold, p.scale_in_datapoints
        )
        details: dict[str, Detail] = {
            "current": current,
            "target": target,
            "alarm_high": high.state,
            "alarm_high_breaching": high.breaching,
            "alarm_low": low.state,
            "alarm_low_breaching": low.breaching,
            "metric_value": high.latest,
        }
        if high.state == "INSUFFICIENT_DATA" and low.state == "INSUFFICIENT_DATA":
            return self._insufficient(ctx, component, details)
        if high.state == "ALARM" and high.latest is not None:
            return self._scale_out(component, ctx.now_s, current, high.latest, target, details)
        if low.state == "ALARM" and low.latest is not None:
            return self._scale_in(ctx.now_s, current, low.latest, target, changes, details)
        return Proposal(
            self.name,
            current,
            f"within target: high alarm {high.breaching}/{p.scale_out_datapoints} above "
            f"{target:.4g}, low alarm {low.breaching}/{p.scale_in_datapoints} below "
            f"{low_threshold:.4g}",
            details,
        )

    def _target(self, ctx: TickContext, component: str) -> float | None:
        p = self.params
        return metric_target(ctx, component, p.metric, p.target_value, p.target_utilization)

    def _scale_out(
        self,
        component: str,
        now_s: float,
        current: int,
        value: float,
        target: float,
        details: dict[str, Detail],
    ) -> Proposal:
        base, note = current, ""
        cooldown_base = self._cooldown_base(component, now_s)
        if cooldown_base is not None:
            base = cooldown_base
            note = f" (in scale-out cooldown: sized over the {base} before it)"
        wanted = ceil_count(base * value / target)
        details["proposed"] = wanted
        head = f"high alarm: {value:.4g} > {target:.4g} -> ceil({base} x {value / target:.3f})"
        if wanted > current:
            return Proposal(self.name, wanted, f"{head} = {wanted}{note}", details)
        return Proposal(self.name, current, f"{head} = {wanted}: hold{note}", details)

    def _scale_in(
        self,
        now_s: float,
        current: int,
        value: float,
        target: float,
        changes: ReplicaChanges,
        details: dict[str, Detail],
    ) -> Proposal:
        p = self.params
        wanted = ceil_count(current * value / target)
        details["proposed"] = wanted
        head = f"low alarm: {value:.4g} < {target * p.scale_in_threshold_ratio:.4g}"
        if p.disable_scale_in:
            return Proposal(self.name, current, f"{head}: scale-in disabled", details)
        if wanted >= current:
            return Proposal(self.name, current, f"{head} -> {wanted}: hold", details)
        blocked = scale_in_cooldown(now_s, changes, p.scale_in_cooldown_s)
        if blocked:
            return Proposal(self.name, current, f"{head} -> {wanted}: {blocked}", details)
        return Proposal(
            self.name,
            wanted,
            f"{head} -> ceil({current} x {value / target:.3f}) = {wanted}",
            details,
        )
