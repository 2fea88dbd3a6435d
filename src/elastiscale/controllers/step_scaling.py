"""`step-scaling`: AWS Application Auto Scaling step scaling, driven by CloudWatch-style alarms.

Sources (AWS documentation):
- "How step scaling for Application Auto Scaling works" (application/userguide/
  step-scaling-policy-overview.html): an alarm on a metric, threshold and evaluation periods;
  while it is in ALARM, the policy applies the step whose interval holds the breach size, at
  every evaluation, until the alarm returns to OK.
- API reference `StepScalingPolicyConfiguration`: AdjustmentType (ChangeInCapacity,
  PercentChangeInCapacity, ExactCapacity), MinAdjustmentMagnitude, MetricAggregationType
  (Average by default), and Cooldown: for a scale-out policy the capacity added by the
  scale-out that started the cooldown counts as part of the next scale-out (a +2 then a +3
  during the cooldown adds only 1 more); for a scale-in policy no further scale-in until the
  cooldown ends, and a scale-out during it ends it. Default cooldown 300 s (the value AWS
  gives ECS services, SageMaker endpoint variants and custom resources).
- API reference `StepAdjustment`: MetricIntervalLowerBound/UpperBound are relative to the
  alarm threshold; above the threshold the lower bound is inclusive and the upper exclusive,
  below it the other way round; a missing bound is infinite; intervals may neither overlap
  nor leave gaps.
- EC2 Auto Scaling user guide, step adjustments: a percent change is rounded toward zero, but
  to at least one replica (12.7 -> 12, 0.4 -> 1, -0.4 -> -1, -6.67 -> -6).

Alarms evaluate complete 60 s periods (standard-resolution CloudWatch metrics), so the policy
decides once a minute and `interval_s` is 60 s; ticks within an already evaluated minute repeat
that minute's proposal. The metric is any observation signal (or `concurrency`, `load`), total
or per ready replica. AWS requires thresholds and steps and has no defaults for them; the
defaults here are our own, expressed relative to the component's target (load per replica over
`capacity_per_replica x target utilization`, so 1.0 means "at target"), and fit every component
of a pipeline with one policy entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from elastiscale.controllers.aws_alarms import (
    AlarmMetricParams,
    AlarmPolicy,
    missing_target_problem,
    scale_in_cooldown,
)
from elastiscale.controllers.base import ParamsModel, TickContext
from elastiscale.controllers.reactive import (
    AlarmEvaluation,
    Comparison,
    ReplicaChanges,
    evaluate_alarm,
    floor_count,
    metric_target,
)
from elastiscale.decision import Detail, Proposal

if TYPE_CHECKING:
    from elastiscale.config import Config

AdjustmentType = Literal["change_in_capacity", "percent_change_in_capacity", "exact_capacity"]


class StepAdjustment(ParamsModel):
    """One step: applies when threshold + lower <= metric < threshold + upper (above the
    threshold; below it, lower < delta <= upper). None is an infinite bound."""

    lower: float | None = None
    upper: float | None = None
    adjustment: float

    @model_validator(mode="after")
    def _bounds(self) -> StepAdjustment:
        if self.lower is None and self.upper is None:
            raise ValueError("set lower, upper or both")
        if self.lower is not None and self.upper is not None and self.lower >= self.upper:
            raise ValueError(f"lower = {self.lower:g} must be below upper = {self.upper:g}")
        return self


class StepAlarmPolicy(ParamsModel):
    """An alarm and the step scaling policy it triggers."""

    threshold: float
    comparison: Comparison
    evaluation_periods: int = Field(1, ge=1, le=60)
    datapoints_to_alarm: int | None = Field(None, ge=1)
    adjustment_type: AdjustmentType = "change_in_capacity"
    steps: tuple[StepAdjustment, ...] = Field(..., min_length=1)
    min_adjustment_magnitude: int | None = Field(None, ge=1)
    cooldown_s: float = Field(300.0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> StepAlarmPolicy:
        if self.datapoints_to_alarm is not None and (
            self.datapoints_to_alarm > self.evaluation_periods
        ):
            raise ValueError(
                f"datapoints_to_alarm = {self.datapoints_to_alarm} is more than "
                f"evaluation_periods = {self.evaluation_periods}"
            )
        if self.min_adjustment_magnitude is not None and (
            self.adjustment_type != "percent_change_in_capacity"
        ):
            raise ValueError("min_adjustment_magnitude applies to percent_change_in_capacity only")
        if self.adjustment_type != "percent_change_in_capacity":
            fractional = [s.adjustment for s in self.steps if s.adjustment != int(s.adjustment)]
            if fractional:
                raise ValueError(
                    f"adjustment {fractional[0]:g} must be a whole number of replicas "
                    f"for {self.adjustment_type}"
                )
        if self.adjustment_type == "exact_capacity":
            negative = [s.adjustment for s in self.steps if s.adjustment < 0]
            if negative:
                raise ValueError(f"exact_capacity adjustment {negative[0]:g} is negative")
        _check_intervals(self.steps)
        return self

    @property
    def required_datapoints(self) -> int:
        return self.datapoints_to_alarm or self.evaluation_periods

    @property
    def raises(self) -> bool:
        """Whether the alarm fires above its threshold (a scale-out style alarm)."""
        return self.comparison in (">", ">=")


def _check_intervals(steps: tuple[StepAdjustment, ...]) -> None:
    """AWS's rules: no overlap, no gap, at most one open end on each side."""
    ordered = sorted(steps, key=lambda s: float("-inf") if s.lower is None else s.lower)
    if sum(1 for s in steps if s.lower is None) > 1:
        raise ValueError("at most one step may leave lower unset")
    if sum(1 for s in steps if s.upper is None) > 1:
        raise ValueError("at most one step may leave upper unset")
    for before, after in pairwise(ordered):
        if before.upper is None or after.lower is None or before.upper != after.lower:
            raise ValueError(
                f"steps must neither overlap nor leave gaps: upper = {before.upper} is "
                f"followed by lower = {after.lower}"
            )


def _default_scale_out() -> StepAlarmPolicy:
    # Above target for one minute: +20 % up to 20 % over, +50 % up to 50 % over, else +100 %.
    return StepAlarmPolicy(
        threshold=1.0,
        comparison=">",
        evaluation_periods=1,
        adjustment_type="percent_change_in_capacity",
        steps=(
            StepAdjustment(lower=0.0, upper=0.2, adjustment=20),
            StepAdjustment(lower=0.2, upper=0.5, adjustment=50),
            StepAdjustment(lower=0.5, adjustment=100),
        ),
        min_adjustment_magnitude=1,
    )


def _default_scale_in() -> StepAlarmPolicy:
    # Below half the target for five minutes: -10 %, or -30 % below a quarter of it. Half, so
    # that the one replica a scale-out adds to a single one (halving the load per replica)
    # can never trigger a scale-in, nor a scale-in from n to n - 1 a scale-out.
    return StepAlarmPolicy(
        threshold=0.5,
        comparison="<",
        evaluation_periods=5,
        adjustment_type="percent_change_in_capacity",
        steps=(
            StepAdjustment(lower=-0.25, upper=0.0, adjustment=-10),
            StepAdjustment(upper=-0.25, adjustment=-30),
        ),
        min_adjustment_magnitude=1,
    )


class StepScalingParams(AlarmMetricParams):
    """Parameters of `step-scaling`."""

    relative_to_target: bool = Field(
        True, description="thresholds and step bounds in units of the per-replica target"
    )
    target_value: float | None = Field(
        None, gt=0, validate_default=True, description="default: from the component"
    )
    target_utilization: float | None = Field(None, gt=0, le=1)
    scale_out: StepAlarmPolicy | None = Field(default_factory=_default_scale_out)
    scale_in: StepAlarmPolicy | None = Field(
        default_factory=_default_scale_in, validate_default=True
    )

    @field_validator("target_value")
    @classmethod
    def _target_known(cls, value: float | None, info: ValidationInfo) -> float | None:
        needs_target = value is None and info.data.get("relative_to_target") is True
        problem = missing_target_problem(info) if needs_target else ""
        if problem:
            raise ValueError(f"{problem} (or relative_to_target: false)")
        return value

    @field_validator("scale_in")
    @classmethod
    def _some_alarm(
        cls, value: StepAlarmPolicy | None, info: ValidationInfo
    ) -> StepAlarmPolicy | None:
        if value is None and "scale_out" in info.data and info.data["scale_out"] is None:
            raise ValueError("set scale_out, scale_in or both")
        return value


@dataclass(frozen=True, slots=True)
class _Outcome:
    replicas: int
    note: str


class StepScalingPolicy(AlarmPolicy):
    """AWS step scaling per component: one scale-out and one scale-in alarm."""

    name = "step-scaling"
    Params: ClassVar[type[StepScalingParams]] = StepScalingParams
    params: StepScalingParams

    def __init__(self, config: Config, params: StepScalingParams | None = None) -> None:
        self.config = config
        self.params = p = params if params is not None else StepScalingParams()
        alarms = [a for a in (p.scale_out, p.scale_in) if a is not None]
        out_cooldown_s = p.scale_out.cooldown_s if p.scale_out is not None else 0.0
        self._start(
            config,
            max(a.evaluation_periods for a in alarms),
            max(a.cooldown_s for a in alarms),
            out_cooldown_s,
        )

    # ----------------------------------------------------------------------------------------

    def _evaluate(
        self, ctx: TickContext, component: str, current: int, changes: ReplicaChanges
    ) -> Proposal:
        p = self.params
        scale = 1.0
        if p.relative_to_target:
            target = self._target(ctx, component)
            if target is None:
                return Proposal.none(self.name, "no target to compare the metric with")
            scale = target
        details: dict[str, Detail] = {"current": current, "target_unit": scale}
        evaluations: list[tuple[str, StepAlarmPolicy, AlarmEvaluation]] = []
        count = max(a.evaluation_periods for a in (p.scale_out, p.scale_in) if a is not None)
        points = self._metric.datapoints(ctx, component, count)
        for label, alarm in (("scale_out", p.scale_out), ("scale_in", p.scale_in)):
            if alarm is None:
                continue
            own = points[-alarm.evaluation_periods :]
            relative = [None if v is None else v / scale for v in own]
            evaluation = evaluate_alarm(
                relative, alarm.comparison, alarm.threshold, alarm.required_datapoints
            )
            details[f"{label}_alarm"] = evaluation.state
            details[f"{label}_breaching"] = evaluation.breaching
            details[f"{label}_value"] = evaluation.latest
            evaluations.append((label, alarm, evaluation))
        if all(e.state == "INSUFFICIENT_DATA" for _, _, e in evaluations):
            return self._insufficient(ctx, component, details)
        for label, alarm, evaluation in evaluations:
            if evaluation.state != "ALARM" or evaluation.latest is None:
                continue
            outcome = self._apply(component, ctx.now_s, current, alarm, evaluation.latest, changes)
            reason = (
                f"{label} alarm: {evaluation.latest:.4g} {alarm.comparison} "
                f"{alarm.threshold:g} in {evaluation.breaching} of {evaluation.present} "
                f"datapoints; {outcome.note}"
            )
            return Proposal(self.name, outcome.replicas, reason, details)
        return Proposal(self.name, current, "alarms OK: hold", details)

    def _target(self, ctx: TickContext, component: str) -> float | None:
        p = self.params
        return metric_target(ctx, component, p.metric, p.target_value, p.target_utilization)

    def _apply(
        self,
        component: str,
        now_s: float,
        current: int,
        alarm: StepAlarmPolicy,
        value: float,
        changes: ReplicaChanges,
    ) -> _Outcome:
        """The step for this breach, then the cooldown rules of its direction."""
        delta = value - alarm.threshold
        step = _find_step(alarm.steps, delta, above=alarm.raises)
        if step is None:
            return _Outcome(current, f"no step for breach {delta:+.4g}: hold")
        relative = alarm.adjustment_type != "exact_capacity"
        # A positive step never removes replicas and a negative one never adds any; only a
        # positive step sees the scale-out cooldown's base.
        may_add = not relative or step.adjustment > 0
        may_remove = not relative or step.adjustment < 0
        base, in_cooldown = (
            self._base(component, now_s, current) if relative and may_add else (current, False)
        )
        if alarm.adjustment_type == "exact_capacity":
            wanted = int(step.adjustment)
        elif alarm.adjustment_type == "change_in_capacity":
            wanted = base + int(step.adjustment)
        else:
            change = _percent_change(base, step.adjustment, alarm.min_adjustment_magnitude)
            wanted = base + change
        wanted = max(0, wanted)
        step_text = f"step {step.adjustment:+g} on {base} -> {wanted}"
        if not relative:
            step_text = f"step: exactly {wanted}"
        if wanted > current and may_add:
            return _Outcome(wanted, step_text + (" (in scale-out cooldown)" if in_cooldown else ""))
        if wanted < current and may_remove:
            in_cooldown_s = self.params.scale_in.cooldown_s if self.params.scale_in else 0.0
            blocked = scale_in_cooldown(now_s, changes, in_cooldown_s)
            if blocked:
                return _Outcome(current, f"{step_text} blocked: {blocked}")
            return _Outcome(wanted, step_text)
        if in_cooldown:
            return _Outcome(current, f"{step_text}: covered by the scale-out in cooldown, hold")
        return _Outcome(current, f"{step_text}: hold")

    def _base(self, component: str, now_s: float, current: int) -> tuple[int, bool]:
        """The capacity a positive step applies to: during a scale-out cooldown the capacity
        before the scale-out that opened it; otherwise the current one."""
        base = self._cooldown_base(component, now_s)
        return (current, False) if base is None else (base, True)


def _find_step(
    steps: tuple[StepAdjustment, ...], delta: float, above: bool
) -> StepAdjustment | None:
    """The step whose interval holds `delta` (bounds inclusive on the threshold's side)."""
    for step in steps:
        lower = float("-inf") if step.lower is None else step.lower
        upper = float("inf") if step.upper is None else step.upper
        inside = lower <= delta < upper if above else lower < delta <= upper
        if inside:
            return step
    return None


def _percent_change(base: int, percent: float, min_magnitude: int | None) -> int:
    """A percent of `base`, rounded toward zero but to at least one replica, then raised to
    `min_magnitude`: 20 % of 4 is 0.8 -> 1; -30 % of 7 is -2.1 -> -2."""
    raw = base * percent / 100
    if raw == 0:
        return 0
    sign = 1 if raw > 0 else -1
    change = sign * max(1, floor_count(abs(raw)))  # toward zero, at least one
    if min_magnitude is not None and abs(change) < min_magnitude:
        change = min_magnitude if change > 0 else -min_magnitude
    return change
