"""What the two AWS Application Auto Scaling policies share: alarms over periods of one metric.

`step-scaling` and `target-tracking` both watch one metric through CloudWatch-style alarms that
evaluate complete periods (60 s by default), so both decide once a period and repeat that
decision on the ticks within it; both size scale-outs over the capacity before a running
scale-out cooldown, and both hold scale-ins through a scale-in cooldown that a later scale-out
ends (the cooldown rules of the `StepScalingPolicyConfiguration` and
`TargetTrackingScalingPolicyConfiguration` API references). This module holds that machinery
once: the metric's parameters (`AlarmMetricParams`) and the per-component state and period
logic (`AlarmPolicy`); the two policies add their alarms and how they size a change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, ValidationInfo, field_validator

from elastiscale.controllers.base import ParamsModel, PerComponentPolicy, TickContext
from elastiscale.controllers.reactive import (
    PeriodicMetric,
    ReplicaChanges,
    ScaleOutCooldown,
    Statistic,
    check_metric,
    default_per_replica,
    history_problem,
    last_period_end_s,
    natural_target_problem,
    resolve_metric,
)
from elastiscale.decision import Detail, Proposal

if TYPE_CHECKING:
    from elastiscale.config import Config


class AlarmMetricParams(ParamsModel):
    """The metric an AWS policy's alarms watch, and the periods they evaluate."""

    metric: str = "load"
    per_replica: bool | None = Field(None, description="default: yes for totals (load, queue)")
    statistic: Statistic = "average"
    period_s: float = Field(60.0, gt=0)

    @field_validator("metric")
    @classmethod
    def _known(cls, value: str) -> str:
        return check_metric(value)

    @property
    def divides_by_replicas(self) -> bool:
        return default_per_replica(self.metric) if self.per_replica is None else self.per_replica


def missing_target_problem(info: ValidationInfo) -> str:
    """Why no default target exists for the metric being validated ('' when one does), for a
    `target_value` left unset; `metric` and `per_replica` are read from the fields already
    validated."""
    metric = info.data.get("metric")
    if not isinstance(metric, str) or "per_replica" not in info.data:
        return ""
    per_replica = info.data["per_replica"]
    divides = default_per_replica(metric) if per_replica is None else per_replica
    return natural_target_problem(metric, divides) or ""


def scale_in_cooldown(now_s: float, changes: ReplicaChanges, cooldown_s: float) -> str:
    """Why a scale-in must wait ('' when it may go): the scale-in cooldown after the last
    scale-in, unless a scale-out has happened since."""
    down, up = changes.last("down"), changes.last("up")
    if down is None or now_s - down.at_s >= cooldown_s:
        return ""
    if up is not None and up.at_s > down.at_s:
        return ""
    left_s = cooldown_s - (now_s - down.at_s)
    return f"scale-in cooldown, {left_s:g} s left"


class AlarmPolicy(PerComponentPolicy):
    """Per component: the replica changes seen, the scale-out cooldown, and one decision per
    alarm period. Subclasses call `_start` from `__init__` and implement `_evaluate`."""

    interval_s: float = 60.0
    params: AlarmMetricParams

    def _start(
        self, config: Config, periods: int, cooldown_s: float, scale_out_cooldown_s: float
    ) -> None:
        """Set up for alarms looking at most `periods` periods back, cooldowns of at most
        `cooldown_s`; refuse a config whose history is too short for them."""
        p = self.params
        longest_s = periods * p.period_s + p.period_s
        problem = history_problem(self.name, config.control.history_s, longest_s)
        if problem:
            raise ValueError(problem)
        self._metric = PeriodicMetric(
            p.metric, p.divides_by_replicas, p.period_s, p.statistic, keep_s=longest_s
        )
        self._keep_s = max(cooldown_s, p.period_s)
        self._out_cooldown_s = scale_out_cooldown_s
        self._changes: dict[str, ReplicaChanges] = {}
        self._cooldowns: dict[str, ScaleOutCooldown] = {}
        self._last: dict[str, tuple[float, Proposal]] = {}

    def propose_component(self, ctx: TickContext, component: str) -> Proposal:
        state = ctx.replicas[component]
        changes = self._changes.setdefault(component, ReplicaChanges(self._keep_s))
        cooldown = self._cooldowns.setdefault(component, ScaleOutCooldown(self._out_cooldown_s))
        cooldown.observe(changes.observe(ctx.now_s, state.desired))
        self._metric.record(component, ctx.now_s, state.ready)
        period_end_s = last_period_end_s(ctx.now_s, self.params.period_s)
        last = self._last.get(component)
        if last is not None and last[0] == period_end_s:
            return last[1]
        proposal = self._evaluate(ctx, component, state.desired, changes)
        self._last[component] = (period_end_s, proposal)
        return proposal

    def _evaluate(
        self, ctx: TickContext, component: str, current: int, changes: ReplicaChanges
    ) -> Proposal:
        """The decision of the period that ended last."""
        raise NotImplementedError

    def _cooldown_base(self, component: str, now_s: float) -> int | None:
        """The capacity before the scale-out that opened a running scale-out cooldown, or None."""
        cooldown = self._cooldowns.get(component)
        return None if cooldown is None else cooldown.base(now_s)

    def _insufficient(
        self, ctx: TickContext, component: str, details: dict[str, Detail]
    ) -> Proposal:
        """No alarm has a datapoint to evaluate: nothing scales (INSUFFICIENT_DATA)."""
        signal = resolve_metric(self.params.metric, ctx, component)
        return Proposal.none(self.name, f"insufficient data: no {signal} datapoint", **details)
