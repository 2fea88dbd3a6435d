"""The configuration file: pydantic models, YAML loading, and validation with clear messages.

A file is accepted whole or refused whole. Refusal raises `ConfigError` whose `problems` are
lines of the form `path.to.field: message`, one per problem, e.g.

    pipeline.components.llm.replicas: min = 5 is greater than max = 3
    pipeline.edges[1].to: unknown component 'retriver' (components: router, retriever, llm)
    pipeline.edges: cycle planner -> tools -> planner

Unknown keys are refused (a typo must not pass silently). Durations are seconds, rates are per
second, money is per hour.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    ValidationError,
    field_validator,
    model_validator,
)

from elastiscale.daemon.settings import DaemonConfig
from elastiscale.errors import ConfigError

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
    """At most `value` pods, or `value` percent of the current count, per `period_s` (HPA style)."""

    type: Literal["pods", "percent"]
    value: PositiveFloat
    period_s: PositiveFloat


class ScalingRules(StrictModel):
    """Rules for one direction of change.

    stabilization_s: a change in this direction must be wanted for the whole window (for scale
    down, the highest recommendation over the window is used, as the HPA does).
    rate_limits / select: how far one change may go; `max` picks the limit allowing the most
    change, `min` the least, `disabled` forbids changes in this direction.
    cooldown_s: after a change in this direction, no further change in it for this long.
    """

    stabilization_s: NonNegativeFloat = 0.0
    rate_limits: tuple[RateLimit, ...] = ()
    select: Literal["max", "min", "disabled"] = "max"
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

    scale_up: ScalingRules = ScalingRules()
    scale_down: ScalingRules = ScalingRules()
    schedules: tuple[ScheduledBounds, ...] = ()
    missing_data: MissingDataRules = MissingDataRules()


CapacityUnit = Literal["requests", "tokens", "input_tokens", "output_tokens"]


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

    @property
    def is_gpu(self) -> bool:
        return self.gpus_per_replica > 0


class EdgeConfig(StrictModel):
    """A call from one component to another: each upstream request makes `fanout` calls.

    `fanout_distribution` says how the count varies per request around its mean: `fixed` (the
    mean, fractional parts drawn as one extra call with that probability), `poisson` or
    `geometric`. `mode` says how the call's latency adds to the request's: `sequential` calls
    add up, `parallel` ones overlap (the slowest of a request's parallel calls counts).
    """

    source: str = Field(..., alias="from")
    target: str = Field(..., alias="to")
    fanout: NonNegativeFloat = 1.0
    fanout_distribution: Literal["fixed", "poisson", "geometric"] = "fixed"
    mode: Literal["sequential", "parallel"] = "sequential"


class SLOConfig(StrictModel):
    """The end-to-end latency objective: `latency_p95_s` is the latency one ingress request
    must complete within; `attainment_target` the share of requests that must (0.99: at most
    one request in a hundred late or dropped). Policies aim at the target, and
    `elastiscale capacity` finds the highest load at which it still holds."""

    latency_p95_s: PositiveFloat
    attainment_target: Fraction = Field(
        0.99, description="share of ingress requests that must meet latency_p95_s"
    )


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


class ControlConfig(StrictModel):
    """The control loop. `interval_s` is the tick period; `actuation_delay_s` the time from a
    decision to the platform acting on it (part of every component's lead time)."""

    interval_s: PositiveFloat = 15.0
    actuation_delay_s: NonNegativeFloat = 0.0
    history_s: PositiveFloat = Field(3600.0, description="how much observation history to keep")
    combine: Literal["max"] = "max"
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

    @field_validator("policies", mode="before")
    @classmethod
    def _normalize_policies(cls, value: Any) -> Any:
        return _policy_list(value)

    def constraints_for(self, component: str) -> ConstraintsConfig:
        """The pipeline-level constraints with the component's own sections laid over them."""
        own = self.pipeline.components[component].constraints
        if own is None:
            return self.constraints
        update = {name: getattr(own, name) for name in own.model_fields_set}
        return self.constraints.model_copy(update=update)


# --------------------------------------------------------------------------------------------
# Loading and validation


def load_config(source: str | Path | Mapping[str, Any]) -> Config:
    """Load and validate a config from a YAML file path or an already-parsed mapping.

    Raises `ConfigError` listing every problem found; nothing is half-loaded.
    """
    label = ""
    if isinstance(source, str | Path):
        label = str(source)
        raw = _read_yaml(Path(source))
    else:
        raw = dict(source)
    return validate_mapping(raw, label=label)


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing a key given twice in one mapping (last-wins hides typos)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read file: {exc.strerror or exc}"], source=str(path)) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        # The problem is often found a line after the mistake (a key missing its colon is
        # noticed on the next line), so say where the construct being read began.
        context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and start is not None and (mark is None or start.line != mark.line):
            problem = f"{problem} ({context} at line {start.line + 1})"
        raise ConfigError([f"{where}invalid YAML: {problem}"], source=str(path)) from None


def validate_mapping(raw: Any, label: str = "") -> Config:
    """Validate parsed YAML; raise `ConfigError` with every problem, or return the `Config`."""
    if not isinstance(raw, Mapping):
        raise ConfigError(["(top level): expected a mapping with a 'pipeline' key"], source=label)
    problems: list[str] = []
    config: Config | None = None
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc))
    pipeline_raw = raw.get("pipeline")
    if isinstance(pipeline_raw, Mapping):
        problems.extend(graph_problems(pipeline_raw))
    problems.extend(_plugin_problems(raw))
    if problems:
        raise ConfigError(_dedupe(problems), source=label)
    assert config is not None
    return config


def _dedupe(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(lines))


def _loc_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "union[", "list[", "tuple[")):
            continue
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def _pydantic_problems(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors(include_url=False):
        path = _loc_path(tuple(err["loc"]))
        if err["type"] == "extra_forbidden":
            message = "unknown key (check the spelling)"
        elif err["type"] == "missing":
            message = "required field is missing"
        else:
            message = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
            given = err.get("input")
            if isinstance(given, int | float | str) and err["type"] not in ("value_error",):
                message = f"{message} (got {given!r})"
        lines.append(f"{path}: {message}")
    return lines


def graph_problems(pipeline: Mapping[str, Any]) -> list[str]:
    """Problems of the dependency graph, checked on the raw mapping so that they are reported
    together with field errors: unknown endpoints, self-edges, duplicates, cycles, no ingress."""
    components = pipeline.get("components")
    if not isinstance(components, Mapping) or not components:
        return []
    names = [str(n) for n in components]
    problems: list[str] = []
    ingress = [n for n, c in components.items() if isinstance(c, Mapping) and c.get("ingress")]
    if not ingress:
        problems.append("pipeline.components: no component has ingress: true")
    edges = pipeline.get("edges") or []
    if not isinstance(edges, list | tuple):
        return problems
    adjacency: dict[str, list[str]] = {n: [] for n in names}
    seen: set[tuple[str, str]] = set()
    for i, edge in enumerate(edges):
        if not isinstance(edge, Mapping):
            continue
        src, dst = edge.get("from"), edge.get("to")
        ok = True
        for key, end in (("from", src), ("to", dst)):
            if isinstance(end, str) and end not in components:
                problems.append(
                    f"pipeline.edges[{i}].{key}: unknown component {end!r} "
                    f"(components: {', '.join(names)})"
                )
                ok = False
        if not (isinstance(src, str) and isinstance(dst, str)) or not ok:
            continue
        if src == dst:
            problems.append(f"pipeline.edges[{i}]: self-edge {src} -> {dst}")
            continue
        if (src, dst) in seen:
            problems.append(f"pipeline.edges[{i}]: duplicate edge {src} -> {dst}")
            continue
        seen.add((src, dst))
        adjacency[src].append(dst)
    cycle = find_cycle(adjacency)
    if cycle:
        problems.append("pipeline.edges: cycle " + " -> ".join(cycle))
    return problems


def find_cycle(adjacency: Mapping[str, list[str]]) -> list[str]:
    """A cycle as a list of names whose first and last are equal, or [] when there is none."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(adjacency, white)
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        color[node] = grey
        stack.append(node)
        for nxt in adjacency.get(node, []):
            if color.get(nxt, white) == grey:
                return [*stack[stack.index(nxt) :], nxt]
            if color.get(nxt, white) == white:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        color[node] = black
        return []

    for start in adjacency:
        if color[start] == white:
            found = visit(start)
            if found:
                return found
    return []


def _plugin_problems(raw: Mapping[str, Any]) -> list[str]:
    """Policy, metric-source and actuator names that do not resolve, and their bad parameters."""
    from elastiscale import registry

    problems: list[str] = []
    policies = _policy_list(raw.get("policies", []))
    if isinstance(policies, list):
        for i, spec in enumerate(policies):
            if isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
                params = spec.get("params") or {}
                problems.extend(
                    registry.check("policy", spec["name"], params, path=f"policies[{i}]")
                )
    pipeline = raw.get("pipeline")
    components = pipeline.get("components") if isinstance(pipeline, Mapping) else None
    names = [str(n) for n in components] if isinstance(components, Mapping) else None
    context = {"components": names} if names is not None else {}
    for section, kind in (("metrics", "metric_source"), ("actuator", "actuator")):
        spec = raw.get(section)
        if isinstance(spec, Mapping) and isinstance(spec.get("type"), str):
            options = {k: v for k, v in spec.items() if k != "type"}
            problems.extend(registry.check(kind, spec["type"], options, section, context))
    return problems
