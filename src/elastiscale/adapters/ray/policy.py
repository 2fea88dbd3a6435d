"""elastiscale inside Ray Serve: an application-level custom autoscaling policy.

Ray Serve lets an application name one policy that decides the replica counts of all its
deployments at once, from one `AutoscalingContext` per deployment. Checked in the installed
Ray 2.60.0: the application config's `autoscaling_policy` (`policy_function`, and
`policy_kwargs` for a class) is wired to `ApplicationAutoscalingState` in
`ray/serve/_private/autoscaling_state.py`, which instantiates a class policy once and calls it
with `{DeploymentID: AutoscalingContext}`; the schema's field description still calls it
"under development". The tests run this policy inside a real local Serve controller.

One policy for all deployments is the shape of a pipeline, so this policy runs elastiscale's
own `Engine` on those contexts: the dependency graph, the configured policies (feed-forward by
default) and every constraint, with no sidecar. In the Serve config:

    applications:
      - name: rag
        import_path: ray_serve_app:app
        autoscaling_policy:
          policy_function: elastiscale.adapters.ray.policy:ElastiscaleApplicationPolicy
          policy_kwargs:
            config: /etc/elastiscale/pipeline.yaml     # or the same content inline
            deployments: {llm: vllm}                   # component -> deployment, if they differ
        deployments:
          - name: llm
            autoscaling_config: {min_replicas: 1, max_replicas: 8,
                                 upscale_delay_s: 0, downscale_delay_s: 0}

Every deployment the policy decides needs an `autoscaling_config` (Serve requires one). Serve
applies its bounds, its `upscaling_factor`/`downscaling_factor` and its delays on top of the
decisions, so set the delays to 0 (and leave the factors unset) to let elastiscale's own
stabilization and rate limits be the only ones.

What the policy observes of each deployment (signals it cannot get stay missing, never zero):
- `demand_rps`: the sum over replicas of the custom metric `demand_metric` that the deployment
  reports from `record_autoscaling_stats()`; without it, Little's law on the requests in flight
  (in flight / `service_time_s`, which overestimates when requests queue: a safe error);
- `tokens_per_s`: the sum of the custom metric `tokens_metric`, when reported;
- `in_flight`, `queue_length`: Serve's ongoing and queued requests;
- `ready_replicas` / `desired_replicas`: Serve's running and target replica counts.

Time comes from the contexts (`current_time`, the controller's clock); the engine runs once per
`control.interval_s` of the config, and between runs the policy repeats its last decisions.
Until every deployment has first reached its target replica count (the application's deploy),
the policy decides nothing and Serve keeps its targets: a fresh application has no traffic yet,
and its cold start would otherwise read as idleness and scale it down before the first request.
The policy never raises into the Serve controller: a failing tick is logged and changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from elastiscale.adapters.base import ActuationResult
from elastiscale.config import ComponentConfig, Config, load_config
from elastiscale.decision import DecisionRecord
from elastiscale.engine import Engine
from elastiscale.errors import ConfigError
from elastiscale.observations import SIGNALS, Observation, ReplicaState

log = logging.getLogger("elastiscale.adapters.ray_policy")

#: Serve's `AutoscalingContext` and `DeploymentID`, typed loosely so that Ray stays optional.
Context = Any
DeploymentKey = Any


def observe_context(
    component: str,
    ctx: Context,
    spec: ComponentConfig,
    now_s: float,
    demand_metric: str = "demand_rps",
    tokens_metric: str = "tokens_per_s",
) -> Observation:
    """One component's `Observation` from the `AutoscalingContext` of its deployment, stamped
    with the context's `current_time` (else `now_s`)."""
    values: dict[str, Any] = {
        "ready_replicas": int(ctx.current_num_replicas),
        "desired_replicas": int(ctx.target_num_replicas),
    }
    missing: dict[str, str] = {}
    in_flight = _number(ctx.total_num_requests)
    if in_flight is not None:
        values["in_flight"] = in_flight
    queued = _number(ctx.total_queued_requests)
    if queued is not None:
        values["queue_length"] = queued
    metrics = ctx.aggregated_metrics or {}
    demand = _replica_sum(metrics.get(demand_metric))
    if demand is None and in_flight is not None:
        # Little's law, L = lambda x W: 3 requests in flight at 0.5 s each -> 6 requests/s.
        demand = in_flight / spec.service_time_s
    if demand is not None:
        values["demand_rps"] = demand
    tokens = _replica_sum(metrics.get(tokens_metric))
    if tokens is not None:
        values["tokens_per_s"] = tokens
    for signal in SIGNALS:
        if signal not in values:
            missing[signal] = "not reported by ray serve"
    at_s = now_s if ctx.current_time is None else float(ctx.current_time)
    return Observation(component=component, at_s=at_s, missing=missing, **values)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        got = float(value)
    except (TypeError, ValueError):
        return None
    return got if got == got else None  # NaN is missing


def _replica_sum(per_replica: Mapping[Any, Any] | None) -> float | None:
    """The sum of a per-replica metric, or None when no replica reported a number."""
    if not per_replica:
        return None
    numbers = [v for v in (_number(x) for x in per_replica.values()) if v is not None]
    return sum(numbers) if numbers else None


class _ContextSource:
    """A `MetricSource` over the contexts of the current tick."""

    def __init__(self, policy: ElastiscaleApplicationPolicy) -> None:
        self.policy = policy

    def observe(self, components: Sequence[str], now_s: float) -> dict[str, Observation]:
        out: dict[str, Observation] = {}
        for name in components:
            ctx = self.policy.context_of(name)
            if ctx is not None:
                out[name] = observe_context(
                    name,
                    ctx,
                    self.policy.config.pipeline.components[name],
                    now_s,
                    self.policy.demand_metric,
                    self.policy.tokens_metric,
                )
        return out


class _DecisionSink:
    """An `Actuator` that reads replica counts from the contexts and records decisions."""

    def __init__(self, policy: ElastiscaleApplicationPolicy) -> None:
        self.policy = policy
        self.decisions: dict[str, int] = {}

    def read(self, components: Sequence[str]) -> dict[str, ReplicaState]:
        out: dict[str, ReplicaState] = {}
        for name in components:
            ctx = self.policy.context_of(name)
            if ctx is not None:
                out[name] = ReplicaState(
                    desired=int(ctx.target_num_replicas), ready=int(ctx.current_num_replicas)
                )
        return out

    def scale(self, component: str, replicas: int) -> ActuationResult:
        self.decisions[component] = replicas
        return ActuationResult.success(component, replicas)


class ElastiscaleApplicationPolicy:
    """A Ray Serve application-level autoscaling policy that runs an elastiscale `Engine`.

    Serve builds it once per application with the config's `policy_kwargs` and calls it with
    `{DeploymentID: AutoscalingContext}` on every control-loop iteration; it returns the
    decisions `{DeploymentID: replicas}` and the (empty) per-deployment policy state.
    """

    def __init__(
        self,
        config: str | Mapping[str, Any],
        deployments: Mapping[str, str] | None = None,
        demand_metric: str = "demand_rps",
        tokens_metric: str = "tokens_per_s",
    ) -> None:
        self.config: Config = load_config(config if isinstance(config, str) else dict(config))
        components = list(self.config.pipeline.components)
        mapping = dict(deployments or {})
        unknown = [c for c in mapping if c not in components]
        if unknown:
            raise ConfigError(
                [f"policy_kwargs.deployments.{c}: unknown component" for c in unknown]
            )
        #: deployment name -> component name
        self.component_of: dict[str, str] = {mapping.get(c, c): c for c in components}
        self.demand_metric = demand_metric
        self.tokens_metric = tokens_metric
        self._sink = _DecisionSink(self)
        self.engine = Engine(self.config, metrics=_ContextSource(self), actuator=self._sink)
        self.interval_s = self.config.control.interval_s
        self.last_step_s: float | None = None
        #: False until every deployment has first run its target count (see the module doc).
        self.started = False
        self.last_records: list[DecisionRecord] = []
        self._contexts: dict[str, Context] = {}

    def context_of(self, component: str) -> Context | None:
        return self._contexts.get(component)

    def __call__(
        self, contexts: Mapping[DeploymentKey, Context]
    ) -> tuple[dict[DeploymentKey, int], dict[DeploymentKey, dict[str, Any]]]:
        keys: dict[str, DeploymentKey] = {}
        self._contexts = {}
        for key, ctx in contexts.items():
            component = self.component_of.get(ctx.deployment_name)
            if component is not None:
                keys[component] = key
                self._contexts[component] = ctx
        times = [c.current_time for c in self._contexts.values() if c.current_time is not None]
        state: dict[DeploymentKey, dict[str, Any]] = {key: {} for key in contexts}
        if not times:
            return {}, state  # no time, no decision: Serve keeps its targets
        now_s = float(max(times))
        if not self.started:
            if any(
                int(c.current_num_replicas) < int(c.target_num_replicas)
                for c in self._contexts.values()
            ):
                return {}, state  # Serve is still starting the application's replicas
            self.started = True
        if self.last_step_s is None or now_s - self.last_step_s >= self.interval_s:
            self.step(now_s)
        decisions = {
            keys[name]: replicas for name, replicas in self._sink.decisions.items() if name in keys
        }
        return decisions, state

    def step(self, now_s: float) -> None:
        """Run the engine once at `now_s` on the current contexts; never raises."""
        self.last_step_s = now_s
        self._sink.decisions = {}
        try:
            records = self.engine.step(now_s)
        except Exception:  # the Serve controller must keep running whatever happens here
            log.exception("elastiscale tick at %.3f failed; replica targets unchanged", now_s)
            return
        self.last_records = records
        for record in records:
            if record.component not in self._contexts:
                continue
            # Repeat the decision (changed or not) until the next tick, so that Serve's own
            # delay logic sees one steady wish.
            self._sink.decisions.setdefault(record.component, record.desired_replicas)
            if record.changed:
                log.info(
                    "%s: %d -> %d replicas (%s)",
                    record.component,
                    record.current_replicas,
                    record.desired_replicas,
                    record.outcome,
                )
