"""The parameters a policy plans with, learned online from the pipeline's own metrics.

`LearnedParameters` keeps, per component, a start-up estimator fed from the start-ups the
platform measured (`TickContext.startups_s`, e.g. pods' Ready transitions) or else from the
replica counts of every tick (desired vs ready, `learning.ReadinessTracker`), and a capacity
and service-time estimator fed from its observation (`learning.ServiceEstimator`).
`effective(name)` gives what to plan with: the measured start-up quantile (the configured
`startup_s` is its prior), and the measured capacity and service time once their confidence
reaches `min_confidence` (until then the configured values). Its `details` are what decision
records show: prior, measured, in use and the confidence of each.

A policy with learning switched off never builds one, so its results are those of the priors.

Variants of one model (stable and canary, two versions, two GPU types; a component's
`variants:`, `config.variants`) are components of their own behind edges whose fan-outs carry
the traffic split: the split is read from the per-variant rates (`controllers.fanout`), and each
variant has its own estimates here and is sized for its own share of the demand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from elastiscale.controllers.base import TickContext
from elastiscale.decision import Detail
from elastiscale.learning import ReadinessTracker, ServiceEstimator, ServiceSample, StartupEstimator


class LearningParams(BaseModel):
    """How the estimates are made and when they are used."""

    model_config = ConfigDict(extra="forbid")

    startup_quantile: float = Field(
        0.9, gt=0, lt=1, description="quantile of measured start-ups a lead time covers"
    )
    startup_prior_weight: float = Field(
        2.0, gt=0, description="the configured startup_s counts as this many measured starts"
    )
    min_confidence: float = Field(
        0.9, ge=0, le=1, description="capacity and service time are used from this confidence"
    )
    noise_cv: float = Field(0.1, gt=0, description="relative noise of one metric sample")
    drift_per_sqrt_s: float = Field(
        0.003, ge=0, description="relative random-walk step of capacity per sqrt(second)"
    )
    min_utilization: float = Field(
        0.2, ge=0, le=1, description="samples below this utilization say too little"
    )
    min_change: float = Field(
        0.05, ge=0, description="relative change of an estimate that rebuilds the plan"
    )


@dataclass(frozen=True, slots=True)
class Effective:
    """What to plan one component with, and where each number came from."""

    startup_s: float
    capacity_per_replica: float
    service_time_s: float
    details: Mapping[str, Detail]

    def differs(self, other: Effective, tolerance: float) -> bool:
        """True when any number moved by more than `tolerance` (relative) from `other`'s."""
        pairs = (
            (self.startup_s, other.startup_s),
            (self.capacity_per_replica, other.capacity_per_replica),
            (self.service_time_s, other.service_time_s),
        )
        return any(abs(a - b) > tolerance * max(abs(b), 1e-9) for a, b in pairs)


class _Component:
    __slots__ = ("readiness", "service", "startup")

    def __init__(self, startup: StartupEstimator, service: ServiceEstimator) -> None:
        self.startup = startup
        self.readiness = ReadinessTracker()
        self.service = service


class LearnedParameters:
    """Online estimates of start-up, capacity and service time per component."""

    def __init__(self, params: LearningParams | None = None) -> None:
        self.params = params if params is not None else LearningParams()
        self._components: dict[str, _Component] = {}
        self._priors: dict[str, tuple[float, float, float]] = {}
        self._updated_s: float | None = None

    def _state(self, ctx: TickContext, name: str) -> _Component:
        known = self._components.get(name)
        if known is None:
            comp = ctx.pipeline.components[name]
            p = self.params
            known = _Component(
                StartupEstimator(
                    comp.startup_s,
                    quantile=p.startup_quantile,
                    prior_weight=p.startup_prior_weight,
                ),
                ServiceEstimator(
                    capacity_prior=comp.capacity_per_replica,
                    service_time_prior_s=comp.service_time_s,
                    noise_cv=p.noise_cv,
                    drift_per_sqrt_s=p.drift_per_sqrt_s,
                    min_utilization=p.min_utilization,
                    timeout_s=ctx.pipeline.spec.queue_timeout(name),
                ),
            )
            self._components[name] = known
            self._priors[name] = (comp.startup_s, comp.capacity_per_replica, comp.service_time_s)
        return known

    def update(self, ctx: TickContext) -> None:
        """Fold in one tick's replica counts and observations (once per `now_s`)."""
        if self._updated_s is not None and ctx.now_s <= self._updated_s:
            return
        self._updated_s = ctx.now_s
        for name in ctx.pipeline.order:
            state = self._state(ctx, name)
            counts = ctx.replicas.get(name)
            measured = ctx.startups_s.get(name)
            if measured is not None:  # the platform's exact times replace the counts' guess
                for duration_s in measured:
                    state.startup.add(duration_s)
            elif counts is not None:
                for duration_s in state.readiness.look(ctx.now_s, counts.desired, counts.ready):
                    state.startup.add(duration_s)
            obs = ctx.observations.get(name)
            if obs is None:
                continue
            staleness_s = ctx.config.constraints_for(name).missing_data.staleness_s
            if obs.age_s(ctx.now_s) > staleness_s:
                continue
            state.service.update(
                ServiceSample(
                    at_s=obs.at_s,
                    load=ctx.load(name),
                    demand_rps=obs.demand_rps,
                    utilization=obs.utilization,
                    ready_replicas=obs.ready_replicas,
                    in_flight=obs.in_flight,
                    queue_length=obs.queue_length,
                )
            )

    def add_startup(self, name: str, duration_s: float) -> bool:
        """A start-up measured exactly by a platform (e.g. a pod's Ready transition)."""
        known = self._components.get(name)
        return known.startup.add(duration_s) if known is not None else False

    def effective(self, ctx: TickContext, name: str) -> Effective:
        """What to plan `name` with now (see the module docstring)."""
        state = self._state(ctx, name)
        prior_startup_s, prior_capacity, prior_service_s = self._priors[name]
        gate = self.params.min_confidence
        startup_s = state.startup.value_s
        cap, svc = state.service.capacity, state.service.service_time
        capacity = cap.theta if cap.confidence >= gate else prior_capacity
        service_s = svc.theta if svc.confidence >= gate else prior_service_s
        measured_startup = state.startup.measured_s
        details: dict[str, Detail] = {
            "startup_prior_s": prior_startup_s,
            "startup_measured_s": _round(measured_startup),
            "startup_in_use_s": _round(startup_s),
            "startup_samples": len(state.startup.samples_s),
            "capacity_prior": prior_capacity,
            "capacity_measured": _round(cap.theta if cap.samples else None),
            "capacity_confidence": round(cap.confidence, 3),
            "capacity_in_use": _round(capacity),
            "service_time_prior_s": prior_service_s,
            "service_time_measured_s": _round(svc.theta if svc.samples else None),
            "service_time_confidence": round(svc.confidence, 3),
            "service_time_in_use_s": _round(service_s),
        }
        return Effective(startup_s, capacity, service_s, details)


def _round(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, 4)
