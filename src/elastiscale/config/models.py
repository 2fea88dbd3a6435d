"""The configuration file's pydantic models: the pipeline, its policies, control and constraints.

Unknown keys are refused (a typo must not pass silently). Durations are seconds, rates are per
second, money is per hour. Loading a file and reporting every problem with it is
`elastiscale.config.loading`; the `daemon:` section is `elastiscale.config.daemon`.
"""

from __future__ import annotations

import datetime as _dt
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    field_validator,
    model_validator,
)

from elastiscale import formula as formulas
from elastiscale import spellings
from elastiscale.config import variants
from elastiscale.config.daemon import DaemonConfig
from elastiscale.config.scenario import Scenario

Fraction = Annotated[float, Field(gt=0.0, le=1.0)]


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --------------------------------------------------------------------------------------------
# Components and edges


class ReplicaBounds(StrictModel):
    """Replica bounds; `initial` is where a backtest starts (else it is sized from the data)."""

    min: int = Field(1, ge=0)
    max: int = Field(..., ge=1)
    initial: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> ReplicaBounds:
        if self.min > self.max:
            raise ValueError(f"min = {self.min} is greater than max = {self.max}")
        if self.initial is not None and not self.min <= self.initial <= self.max:
            raise ValueError(
                f"initial = {self.initial} is outside [min, max] = [{self.min}, {self.max}]"
            )
        return self


class RateLimit(StrictModel):
    """At most `value` pods, or `value` percent of the current count, per `period_s` (HPA style;
    HPA's `Pods`/`Percent` and `periodSeconds` are accepted)."""

    type: Annotated[Literal["pods", "percent"], BeforeValidator(spellings.lower)]
    value: PositiveFloat
    period_s: PositiveFloat = Field(..., validation_alias=spellings.PERIOD)


class ScalingRules(StrictModel):
    """Rules for one direction of change (an HPA `behavior.scaleUp`/`scaleDown` block pasted
    here is read with its own spellings; see `elastiscale.spellings`).

    stabilization_window_s: a change in this direction must be wanted for the whole window (for
    scale down, the highest recommendation over the window is used, as the HPA does).
    rate_limits / select_policy: how far one change may go; `max` picks the limit allowing the
    most change, `min` the least, `disabled` forbids changes in this direction.
    cooldown_s: after a change in this direction, no further change in it for this long.
    """

    stabilization_s: NonNegativeFloat = Field(0.0, validation_alias=spellings.STABILIZATION)
    rate_limits: tuple[RateLimit, ...] = Field((), validation_alias=spellings.RATE_LIMITS)
    select: Annotated[Literal["max", "min", "disabled"], BeforeValidator(spellings.lower)] = Field(
        "max", validation_alias=spellings.SELECT_POLICY
    )
    cooldown_s: NonNegativeFloat = 0.0


class ScheduledBounds(StrictModel):
    """Bounds in force for `duration_s` after each time a cron expression fires, in `timezone`."""

    cron: str
    duration_s: PositiveFloat
    timezone: str = "UTC"
    min: int | None = Field(None, ge=0)
    max: int | None = Field(None, ge=0)

    @field_validator("cron")
    @classmethod
    def _cron_parses(cls, value: str) -> str:
        from croniter import CroniterBadDateError, croniter

        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a valid cron expression")
        try:  # "0 0 30 2 *" parses but never fires: its bounds would never be in force
            croniter(value, 0.0).get_next(float)
        except CroniterBadDateError:
            raise ValueError(f"{value!r} never fires") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _zone_known(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _some_bound(self) -> ScheduledBounds:
        if self.min is None and self.max is None:
            raise ValueError("set min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min = {self.min} is greater than max = {self.max}")
        return self

    def zone(self) -> _dt.tzinfo:
        return ZoneInfo(self.timezone)


class MissingDataRules(StrictModel):
    """What to do when a component's metrics are missing or older than `staleness_s`.

    Missing data never causes a scale-down. After `fallback_after` consecutive ticks without
    usable data, `fallback` applies: `hold` keeps the current count, `static` sets
    `fallback_replicas`, `current-if-higher` keeps max(current, fallback_replicas).
    """

    staleness_s: PositiveFloat = 120.0
    fallback_after: int = Field(3, ge=1)
    fallback: Literal["hold", "static", "current-if-higher"] = "hold"
    fallback_replicas: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _replicas_when_needed(self) -> MissingDataRules:
        if self.fallback != "hold" and self.fallback_replicas is None:
            raise ValueError(f"fallback = {self.fallback!r} needs fallback_replicas")
        return self


class ConstraintsConfig(StrictModel):
    """Constraints applied after policies propose. A component's own section replaces the
    pipeline-level section of the same name (scale_up, scale_down, schedules, missing_data)."""

    scale_up: ScalingRules = Field(ScalingRules(), validation_alias=spellings.SCALE_UP)
    scale_down: ScalingRules = Field(ScalingRules(), validation_alias=spellings.SCALE_DOWN)
    schedules: tuple[ScheduledBounds, ...] = ()
    missing_data: MissingDataRules = MissingDataRules()


CapacityUnit = Literal["requests", "tokens", "input_tokens", "output_tokens"]


class TokenSLO(StrictModel):
    """An LLM component's own objectives (docs/simulator.md, "Time to first token and
    inter-token latency"): `ttft_p95_s`, time from a request's arrival at the component to its
    first output token; `itl_p95_s`, the mean time between its output tokens. The inter-token
    latency needs the component sized in `output_tokens` (a decode server): the per-token time
    is known only then."""

    ttft_p95_s: PositiveFloat | None = None
    itl_p95_s: PositiveFloat | None = None

    @model_validator(mode="after")
    def _some(self) -> TokenSLO:
        if self.ttft_p95_s is None and self.itl_p95_s is None:
            raise ValueError("set ttft_p95_s, itl_p95_s or both")
        return self


class VariantOf(StrictModel):
    """Which component's variant this one is and its configured share of that component's
    traffic (set from the component's `variants:`, `config.variants`)."""

    of: str = Field(..., min_length=1)
    name: str = Field(..., min_length=1)
    percent: float = Field(..., ge=0, le=100)


class ComponentConfig(StrictModel):
    """One stage of the pipeline: a model, retriever, tool or router."""

    ingress: bool = False
    capacity_per_replica: PositiveFloat = Field(
        ..., description="work one replica sustains per second, in `capacity_unit`"
    )
    capacity_unit: CapacityUnit = "requests"
    service_time_s: PositiveFloat = Field(..., description="time one request holds a slot")
    startup_s: NonNegativeFloat = Field(0.0, description="scale-up request to ready")
    gpus_per_replica: NonNegativeFloat = 0.0
    replicas: ReplicaBounds
    cost_per_hour: NonNegativeFloat = Field(0.0, description="cost of one replica per hour")
    target_utilization: Fraction | None = Field(
        None, description="overrides the pipeline's target utilization"
    )
    queue_timeout_s: PositiveFloat | None = Field(
        None, description="a request waiting longer is dropped (default: the pipeline's)"
    )
    latency_budget_s: PositiveFloat | None = Field(
        None, description="this component's share of the end-to-end SLO (default: split)"
    )
    constraints: ConstraintsConfig | None = None
    slo: TokenSLO | None = Field(None, description="time to first token / inter-token latency")
    variant: VariantOf | None = Field(
        None, description="set from `variants:`: this component is one variant of another"
    )

    @model_validator(mode="after")
    def _itl_needs_output_tokens(self) -> ComponentConfig:
        itl = self.slo is not None and self.slo.itl_p95_s is not None
        if itl and self.capacity_unit != "output_tokens":
            raise ValueError(
                "slo.itl_p95_s needs capacity_unit: output_tokens (got "
                f"{self.capacity_unit!r}): the per-token time is known only for a "
                "component sized in output tokens"
            )
        return self

    @property
    def is_gpu(self) -> bool:
        return self.gpus_per_replica > 0


class EdgeConfig(StrictModel):
    """A call from one component to another: each upstream request makes `fanout` calls.

    `fanout_distribution` says how the count varies per request around its mean: `fixed` (the
    mean, fractional parts drawn as one extra call with that probability), `poisson` or
    `geometric`. `mode` says how the call's latency adds to the request's: `sequential` calls
    add up, `parallel` ones overlap (the slowest of a request's parallel calls counts).

    `mode` is about latency only: who waits while the calls run is said by `caller_waits`. With
    it, the caller's request stays in flight at the caller until these calls return, as a Ray
    Serve deployment awaiting a `DeploymentHandle` call keeps its request ongoing (and so does
    Knative's queue-proxy); without it (the default) the calls are made by an orchestrator
    and the caller's request ends with its own service. `via` hands the calls over: they are
    made by the request's last call to `via` (a component this edge's caller calls on an
    earlier sequential edge), after that call's own calls, which then waits for them too; only
    when the request made no call to `via` does the caller make them. Latency is the same
    either way; what moves is whose in-flight count the wait is in.
    """

    source: str = Field(..., alias="from")
    target: str = Field(..., alias="to")
    fanout: NonNegativeFloat = 1.0
    fanout_distribution: Literal["fixed", "poisson", "geometric"] = "fixed"
    mode: Literal["sequential", "parallel"] = "sequential"
    caller_waits: bool = Field(
        False, description="the caller's request stays in flight until these calls return"
    )
    via: str | None = Field(
        None, description="the calls are made by the request's last call to this component"
    )


class SLOConfig(StrictModel):
    """The end-to-end latency objective: `latency_p95_s` is the latency one ingress request
    must complete within; `attainment_target` the share of requests that must (0.99: at most
    one request in a hundred late or dropped). Policies aim at the target, and
    `elastiscale capacity` finds the highest load at which it still holds."""

    latency_p95_s: PositiveFloat
    attainment_target: Fraction = Field(
        0.99, description="share of ingress requests that must meet latency_p95_s"
    )


class MemberSpec(StrictModel):
    """One pipeline merged into a fleet unit (`elastiscale.config.fleet`): its own end-to-end
    objective and the components it calls, by their names in the merged pipeline (its local
    ones as `<pipeline>/<component>`, the shared ones as they are). Requests entering at its
    ingress components are held to its `slo`; a component that several members call meets
    the tightest of their budgets (`pipeline_model.latency_budgets`)."""

    slo: SLOConfig
    components: tuple[str, ...] = Field(..., min_length=1)


class PipelineSpec(StrictModel):
    name: str = Field(..., min_length=1)
    slo: SLOConfig
    target_utilization: Fraction = Field(
        0.7, description="default utilization target (Knative's default; a common HPA target)"
    )
    queue_timeout_s: PositiveFloat | None = Field(
        None, description="default queue timeout of every component (default: 2 x the SLO)"
    )
    max_gpus: PositiveFloat | None = Field(None, description="GPU budget shared by all components")
    components: dict[str, ComponentConfig] = Field(..., min_length=1)
    edges: tuple[EdgeConfig, ...] = ()
    members: dict[str, MemberSpec] = Field(
        default_factory=dict,
        description="the pipelines a fleet unit merges, by name (empty for one pipeline)",
    )

    @model_validator(mode="before")
    @classmethod
    def _expand_variants(cls, value: Any) -> Any:
        """Components' `variants:` made components of their own (`config.variants`); loading
        a file has done it already, with every problem named."""
        if not isinstance(value, dict):
            return value
        expansion = variants.expand(value)
        if expansion.problems:
            raise ValueError(expansion.problems[0])
        return expansion.pipeline

    def utilization_target(self, component: str) -> float:
        own = self.components[component].target_utilization
        return self.target_utilization if own is None else own

    def queue_timeout(self, component: str) -> float:
        own = self.components[component].queue_timeout_s
        if own is not None:
            return own
        if self.queue_timeout_s is not None:
            return self.queue_timeout_s
        return 2.0 * self.slo.latency_p95_s


# --------------------------------------------------------------------------------------------
# Policies, control loop, plugins


class PolicySpec(StrictModel):
    """A policy by registry name (or `package.module:attr`) and its parameters."""

    name: str = Field(..., min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class CombineFormula(StrictModel):
    """`control.combine` as a formula over the policies' proposals, with a fallback value per
    term (KEDA's scalingModifiers; see `elastiscale.formula`)."""

    formula: str = Field(..., min_length=1)
    fallback: dict[str, NonNegativeFloat] = Field(default_factory=dict)

    @field_validator("formula")
    @classmethod
    def _parses(cls, value: str) -> str:
        formulas.parse(value)
        return value

    @model_validator(mode="after")
    def _fallbacks_are_terms(self) -> CombineFormula:
        names = formulas.parse(self.formula).names
        extra = sorted(set(self.fallback) - names)
        if extra:
            raise ValueError(
                f"fallback.{extra[0]}: not a term of the formula "
                f"(terms: {', '.join(sorted(names))})"
            )
        return self

    def parsed(self) -> formulas.Formula:
        return formulas.parse(self.formula)


class ControlConfig(StrictModel):
    """The control loop. `interval_s` is the tick period; `actuation_delay_s` the time from a
    decision to the platform acting on it (part of every component's lead time)."""

    interval_s: PositiveFloat = 15.0
    actuation_delay_s: NonNegativeFloat = 0.0
    history_s: PositiveFloat = Field(3600.0, description="how much observation history to keep")
    combine: Literal["max"] | CombineFormula = Field(
        "max", description="max of the valid proposals, or a formula with fallbacks"
    )
    seed: int = 0


class PluginSpec(BaseModel):
    """A metric source or actuator: `type` names it in the registry, other keys are its own."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str = Field(..., min_length=1)

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def _policy_list(value: Any) -> Any:
    """Accept `policies: [hpa, {name: kpa}]` as shorthand for `[{name: hpa}, {name: kpa}]`."""
    if isinstance(value, list | tuple):
        return [{"name": v} if isinstance(v, str) else v for v in value]
    if isinstance(value, str):
        return [{"name": value}]
    return value


class Config(StrictModel):
    """A whole elastiscale file: the pipeline and how to control it."""

    pipeline: PipelineSpec
    policies: tuple[PolicySpec, ...] = (PolicySpec(name="elastiscale"),)
    control: ControlConfig = ControlConfig()
    constraints: ConstraintsConfig = ConstraintsConfig()
    metrics: PluginSpec | None = None
    actuator: PluginSpec | None = None
    daemon: DaemonConfig = DaemonConfig()
    #: Backtests only: drift of the simulated truth (`config.scenario`).
    scenario: Scenario | None = None

    @field_validator("policies", mode="before")
    @classmethod
    def _normalize_policies(cls, value: Any) -> Any:
        return _policy_list(value)

    @model_validator(mode="after")
    def _formula_names_policies(self) -> Config:
        combine = self.control.combine
        if isinstance(combine, CombineFormula):
            terms = [formulas.term_name(p.name) for p in self.policies]
            repeated = sorted({t for t in terms if terms.count(t) > 1})
            unknown = sorted(combine.parsed().names - set(terms))
            if unknown:
                raise ValueError(
                    f"control.combine.formula: {unknown[0]!r} is not a policy of this file "
                    f"(policies: {', '.join(terms)})"
                )
            used = sorted(combine.parsed().names & set(repeated))
            if used:
                raise ValueError(f"control.combine.formula: {used[0]!r} names more than one policy")
        return self

    @model_validator(mode="after")
    def _gpu_pools_fit(self) -> Config:
        # A store across daemons: every pool named must make a ConfigMap name, and grants must
        # outlive a few ticks (a member applies its fallback at its next tick after a lapse).
        pools = self.daemon.gpu_pools
        if pools.store != "kubernetes":
            return self
        if pools.expiry_s < 4 * self.control.interval_s:
            raise ValueError(
                f"daemon.gpu_pools.expiry_s = {pools.expiry_s:g} must be at least four "
                f"control intervals (4 x {self.control.interval_s:g} s)"
            )
        for i, policy in enumerate(self.policies):
            pool = policy.params.get("gpu_pool")
            if isinstance(pool, str):
                problem = pools.check_pool(pool)
                if problem is not None:
                    raise ValueError(f"policies.{i}.params.gpu_pool: {problem}")
        return self

    def constraints_for(self, component: str) -> ConstraintsConfig:
        """The pipeline-level constraints with the component's own sections laid over them."""
        own = self.pipeline.components[component].constraints
        if own is None:
            return self.constraints
        update = {name: getattr(own, name) for name in own.model_fields_set}
        return self.constraints.model_copy(update=update)
