"""`PrometheusMetricSource`: observations of pipeline components read from Prometheus.

Configured in the `metrics:` section of a config file:

    metrics:
      type: prometheus
      url: https://prometheus.monitoring:9090
      preset: vllm                 # vllm, ray-serve or triton: query templates by server
      rate_window_s: 60            # the window of rate() and histogram_quantile()
      timeout_s: 5
      auth: {bearer_token_file: /var/run/secrets/kubernetes.io/serviceaccount/token}
      tls: {ca_file: /etc/prometheus/ca.crt}
      selector: {namespace: prod}  # matchers every query gets
      components:
        llm: {label_value: meta-llama/Llama-3.1-8B-Instruct}
        router:
          preset: null
          label: job
          queries:
            demand_rps: sum by ($by) (rate(http_requests_total{$selector}[$window]))
            in_flight:
              expr: sum by ($by) (http_in_flight{$selector})
              series: http_in_flight{$selector}

A component is found by one label (`label`, by default the preset's: `model_name` for vLLM,
`deployment` for Ray Serve, `model` for Triton) equal to `label_value` (by default the
component's name), plus the `selector` matchers. Queries are templates (see `promql.py`);
`queries` at the top level or per component replace or add to the preset's, and `null` turns
one off.

Each tick costs one instant query per signal and distinct template: components that share a
template are read together, `sum by (model_name) (...{model_name=~"a|b|c"})`, and the answer
is split by label value. Each value is dated by its newest raw sample (the oldest of those
across the component's series), so `Observation.at_s` is the oldest sample used.

Outcomes per signal, never zero for missing data (`Observation.missing`):
  "no data"             the query returned nothing for the component
  "nan"                 the value is NaN (a quantile over no requests, a 0/0)
  "not finite: +inf"    an infinite value (a quantile in the +Inf bucket)
  "ambiguous: N series" N series where one was expected (a template that does not aggregate)
  "stale"               the newest sample is older than the staleness limit
  "not configured"      no query for the signal
  "query error: ..."    the server refused the query (the others still count)
A server that is down, slow past `timeout_s` or refusing credentials raises
`MetricSourceError`, and the engine holds every component for the tick.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    ValidationInfo,
    field_validator,
    model_validator,
)

from elastiscale.adapters.contract import context_components, unknown_component
from elastiscale.adapters.prometheus.http import (
    AuthParams,
    ConnectionParams,
    PrometheusHTTP,
    PromQLError,
    TLSParams,
)
from elastiscale.adapters.prometheus.presets import PRESETS
from elastiscale.adapters.prometheus.promql import (
    SAMPLE_TIME_LABEL,
    ComponentQueries,
    PlannedQuery,
    SignalQuery,
    check_label_name,
    plan_queries,
    template_problem,
)
from elastiscale.errors import ConfigError
from elastiscale.observations import SIGNALS, Observation

if TYPE_CHECKING:
    from elastiscale.config import Config

log = logging.getLogger("elastiscale.adapters.prometheus")

_INT_SIGNALS: Final = ("ready_replicas", "desired_replicas")


# --------------------------------------------------------------------------------------------
# Options


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QuerySpec(_Strict):
    """A signal's query written out: `expr` gives the value, `series` (optional) the raw
    selector whose newest samples date it. A plain string is shorthand for `{expr: ...}`."""

    expr: str = Field(..., min_length=1)
    series: str | None = None

    @field_validator("expr", "series")
    @classmethod
    def _template_ok(cls, value: str | None) -> str | None:
        if value is not None:
            problem = template_problem(value)
            if problem:
                raise ValueError(problem)
        return value

    def as_query(self) -> SignalQuery:
        return SignalQuery(self.expr, self.series)


Queries = dict[str, QuerySpec | None]


def _normalize_queries(value: Any) -> Any:
    """Accept `signal: "promql"` as shorthand for `signal: {expr: "promql"}`."""
    if isinstance(value, Mapping):
        return {k: {"expr": v} if isinstance(v, str) else v for k, v in value.items()}
    return value


def _check_signals(value: Queries) -> Queries:
    for name in value:
        if name not in SIGNALS:
            raise ValueError(f"unknown signal {name!r} (signals: {', '.join(SIGNALS)})")
    return value


def _check_preset(value: str | None) -> str | None:
    if value is not None and value not in PRESETS:
        raise ValueError(f"unknown preset {value!r} (presets: {', '.join(PRESETS)})")
    return value


def _check_selector(value: dict[str, str]) -> dict[str, str]:
    for name in value:
        check_label_name(name)
    return value


class _Matching(_Strict):
    """How a component's series are found and queried: set for the whole source, and again
    per component."""

    preset: str | None = None
    label: str | None = None
    selector: dict[str, str] = Field(default_factory=dict)
    queries: Queries = Field(default_factory=dict)

    _queries = field_validator("queries", mode="before")(_normalize_queries)
    _signals = field_validator("queries")(_check_signals)
    _preset = field_validator("preset")(_check_preset)
    _selector = field_validator("selector")(_check_selector)

    @field_validator("label")
    @classmethod
    def _label_ok(cls, value: str | None) -> str | None:
        return None if value is None else check_label_name(value)


class ComponentParams(_Matching):
    """Per-component overrides; every field left out is inherited from the source level."""

    label_value: str | None = None


class PrometheusParams(ConnectionParams, _Matching):
    """The `metrics:` section for `type: prometheus` (its keys other than `type`).

    staleness_s: a value whose newest sample is older than this is missing ("stale"); by
    default each component's `constraints.missing_data.staleness_s`.
    batch: read components that share a template in one query (off only to compare costs).
    """

    rate_window_s: PositiveFloat = 60.0
    staleness_s: PositiveFloat | None = None
    batch: bool = True
    components: dict[str, ComponentParams] = Field(default_factory=dict)

    @field_validator("components")
    @classmethod
    def _known_components(
        cls, value: dict[str, ComponentParams], info: ValidationInfo
    ) -> dict[str, ComponentParams]:
        known = context_components(info)
        unknown = [] if known is None else [n for n in value if n not in known]
        if known is not None and unknown:
            raise ValueError(unknown_component(unknown[0], known))
        return value

    @model_validator(mode="after")
    def _rate_window(self) -> PrometheusParams:
        if self.rate_window_s < 0.001:
            raise ValueError(f"rate_window_s = {self.rate_window_s} is below 1 ms")
        return self

    def component_queries(self, component: str) -> ComponentQueries:
        """The label, matchers and templates of `component`, with inheritance resolved."""
        own = self.components.get(component, ComponentParams())
        preset_name = own.preset if "preset" in own.model_fields_set else self.preset
        preset = PRESETS[preset_name] if preset_name is not None else None
        label = own.label or self.label or (preset.label if preset else "component")
        queries: dict[str, SignalQuery] = dict(preset.queries) if preset else {}
        for layer in (self.queries, own.queries):
            for signal, spec in layer.items():
                if spec is None:
                    queries.pop(signal, None)
                else:
                    queries[signal] = spec.as_query()
        return ComponentQueries(
            component=component,
            label=label,
            value=own.label_value if own.label_value is not None else component,
            selector={**self.selector, **own.selector},
            queries={s: queries[s] for s in SIGNALS if s in queries},
        )


# --------------------------------------------------------------------------------------------
# Readings


@dataclass(frozen=True, slots=True)
class Reading:
    """One signal of one component: a value dated `at_s`, or why there is none."""

    value: float | None
    at_s: float
    missing: str | None = None


@dataclass(frozen=True, slots=True)
class QueryProblem:
    """A query the server refused, or whose answer cannot be a signal, as `check` reports."""

    component: str
    signal: str
    promql: str
    message: str

    def line(self) -> str:
        return f"metrics: component {self.component}, signal {self.signal}: {self.message}"


def readings_from_answer(
    planned: PlannedQuery,
    series: Sequence[tuple[Mapping[str, str], float, float]],
    now_s: float,
    staleness_s: Mapping[str, float],
) -> dict[str, Reading]:
    """Split one answer into a `Reading` per component of `planned`.

    Series labelled `elastiscale_part="sample_time"` carry the time of the oldest newest
    sample per group; the others are values. A value without a sample time is dated at its
    evaluation time (the query named no raw series to date it by).
    """
    values: dict[str, list[tuple[float, float]]] = {c: [] for c in planned.components}
    stamps: dict[str, float] = {}
    for labels, eval_s, value in series:
        owners = (
            planned.by_value.get(labels.get(planned.label, ""), ())
            if planned.batched
            else planned.components
        )
        for owner in owners:
            if labels.get(SAMPLE_TIME_LABEL) is not None:
                stamps[owner] = min(value, stamps.get(owner, math.inf))
            else:
                values[owner].append((eval_s, value))
    out: dict[str, Reading] = {}
    for component, found in values.items():
        if not found:
            out[component] = Reading(None, now_s, "no data")
            continue
        if len(found) > 1:
            out[component] = Reading(None, now_s, f"ambiguous: {len(found)} series")
            continue
        eval_s, value = found[0]
        at_s = stamps.get(component, eval_s)
        if math.isnan(value):
            out[component] = Reading(None, at_s, "nan")
        elif math.isinf(value):
            out[component] = Reading(None, at_s, f"not finite: {value:+}")
        elif now_s - at_s > staleness_s[component]:
            out[component] = Reading(None, at_s, "stale")
        else:
            out[component] = Reading(value, at_s)
    return out


def observation_from_readings(
    component: str, readings: Mapping[str, Reading], now_s: float
) -> Observation:
    """An `Observation`: values where readings have them, reasons where not, dated by the
    oldest sample used (now_s when no value was read)."""
    values: dict[str, Any] = {}
    missing: dict[str, str] = {}
    used_at_s: list[float] = []
    for signal in SIGNALS:
        reading = readings.get(signal)
        if reading is None:
            missing[signal] = "not configured"
        elif reading.value is None:
            missing[signal] = reading.missing or "no data"
        else:
            values[signal] = round(reading.value) if signal in _INT_SIGNALS else reading.value
            used_at_s.append(reading.at_s)
    at_s = min(used_at_s) if used_at_s else now_s
    return Observation(component=component, at_s=at_s, missing=missing, **values)


# --------------------------------------------------------------------------------------------
# The source


class PrometheusMetricSource:
    """A `MetricSource` over Prometheus instant queries; built from a config as
    `PrometheusMetricSource(config, params)` (the registry's `prometheus`)."""

    Params = PrometheusParams

    def __init__(self, config: Config | None, params: PrometheusParams | Mapping[str, Any]) -> None:
        if not isinstance(params, PrometheusParams):
            params = PrometheusParams.model_validate(dict(params))
        self.params = params
        names = list(config.pipeline.components) if config is not None else list(params.components)
        unknown = [n for n in params.components if n not in names]
        if unknown:
            raise ConfigError([f"metrics.components: {unknown_component(unknown[0], names)}"])
        self._specs = {name: params.component_queries(name) for name in names}
        self._staleness_s = {
            name: (
                params.staleness_s
                if params.staleness_s is not None
                else config.constraints_for(name).missing_data.staleness_s
                if config is not None
                else 120.0
            )
            for name in names
        }
        self.http = PrometheusHTTP(params)

    def close(self) -> None:
        self.http.close()

    def component_queries(self, component: str) -> ComponentQueries:
        return self._specs[component]

    def plan(self, components: Sequence[str]) -> list[PlannedQuery]:
        """The requests one `observe(components, ...)` sends."""
        specs = [self._spec(name) for name in components]
        return plan_queries(specs, self.params.rate_window_s, batch=self.params.batch)

    def _spec(self, name: str) -> ComponentQueries:
        spec = self._specs.get(name)
        if spec is None:  # a component the config did not name: read it with the defaults
            spec = self.params.component_queries(name)
            self._specs[name] = spec
            self._staleness_s.setdefault(name, self.params.staleness_s or 120.0)
        return spec

    # ----------------------------------------------------------------------------------------

    def observe(self, components: Sequence[str], now_s: float) -> dict[str, Observation]:
        """One `Observation` per component, as of `now_s` (Unix seconds).

        Raises `MetricSourceError` when the server cannot answer (nothing half-read is used).
        """
        readings: dict[str, dict[str, Reading]] = {name: {} for name in components}
        for planned in self.plan(components):
            try:
                answer = self.http.instant(planned.promql, now_s)
            except PromQLError as exc:
                log.warning("query for %s failed: %s: %s", planned.signal, exc, planned.promql)
                for name in planned.components:
                    readings[name][planned.signal] = Reading(None, now_s, f"query error: {exc}")
                continue
            if answer.result_type not in ("vector", "scalar"):
                reason = f"query error: {answer.result_type} result, expected an instant vector"
                for name in planned.components:
                    readings[name][planned.signal] = Reading(None, now_s, reason)
                continue
            got = readings_from_answer(planned, answer.series, now_s, self._staleness_s)
            for name, reading in got.items():
                readings[name][planned.signal] = reading
        return {name: observation_from_readings(name, readings[name], now_s) for name in components}

    def history(
        self, components: Sequence[str], start_s: float, end_s: float, step_s: float
    ) -> list[dict[str, Observation]]:
        """What `observe` would have read of the load signals at every `step_s` of
        (start_s, end_s], for a policy's warm start (backfill.py)."""
        from elastiscale.adapters.prometheus.backfill import observed_history

        specs = [self._spec(name) for name in components]
        return observed_history(self.http, specs, self.params.rate_window_s, start_s, end_s, step_s)

    def check(self, components: Sequence[str] | None = None) -> list[QueryProblem]:
        """Run every (component, signal) query once, alone, at the server's current time, and
        return the ones that fail; `MetricSourceError` when the server cannot be reached.

        Each query runs alone (not batched) so that a problem names one component. A query
        with no data is not a problem here (the workload may not have started); a component
        without a query for its load signal is.
        """
        names = list(components) if components is not None else list(self._specs)
        problems: list[QueryProblem] = []
        for name in names:
            spec = self._spec(name)
            for planned in plan_queries([spec], self.params.rate_window_s, batch=False):
                try:
                    answer = self.http.instant(planned.promql)
                except PromQLError as exc:
                    problems.append(QueryProblem(name, planned.signal, planned.promql, str(exc)))
                    continue
                if answer.result_type not in ("vector", "scalar"):
                    message = f"{answer.result_type} result, expected an instant vector"
                    problems.append(QueryProblem(name, planned.signal, planned.promql, message))
        return problems

    def missing_load_queries(self, config: Config) -> list[QueryProblem]:
        """Components with no query for the signal their capacity is measured in."""
        problems = []
        for name, component in config.pipeline.components.items():
            signal = "demand_rps" if component.capacity_unit == "requests" else "tokens_per_s"
            if signal not in self._spec(name).queries:
                problems.append(
                    QueryProblem(
                        name,
                        signal,
                        "",
                        f"no query (set metrics.preset or metrics.components.{name}.queries."
                        f"{signal})",
                    )
                )
        return problems


__all__ = [
    "AuthParams",
    "ComponentParams",
    "ConnectionParams",
    "PrometheusMetricSource",
    "PrometheusParams",
    "QueryProblem",
    "QuerySpec",
    "Reading",
    "TLSParams",
]
