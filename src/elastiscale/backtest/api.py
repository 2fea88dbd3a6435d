"""`elastiscale.backtest(config, trace, policies=[...]) -> BacktestReport`: the Python entry to
the backtest, which the `elastiscale backtest` command wraps.

One backtest replays one trace into one pipeline once per policy, under the same conditions
(DESIGN.md, "fair comparison"):
- every policy starts from the same replica counts (`baselines.initial_replicas`);
- every policy sees the same metrics, with the same reporting delay and rate window;
- every policy is scored over the same window: the trace after the warm-up.

Policies are named as in a pipeline file: a registry name, `package.module:Class`, a
`PolicySpec`, or a mapping `{name: ..., params: {...}}`. By default the backtest runs every
built-in policy that can be built here (the baselines first), plus the policies the pipeline file
lists. A named policy that cannot be built is an error (`RegistryError`), never silently skipped.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np

from elastiscale import registry
from elastiscale.backtest.report import BacktestReport
from elastiscale.config import Config, PolicySpec, load_config
from elastiscale.errors import ElastiscaleError, RegistryError
from elastiscale.trace import Trace, load_trace

log = logging.getLogger("elastiscale.backtest")

Fidelity = Literal["fast", "discrete-event"]
PolicyRef = str | PolicySpec | Mapping[str, Any]

#: The order of the comparison: these first, then any other built-in policy.
BUILTIN_ORDER = (
    "static-peak",
    "oracle",
    "hpa",
    "kpa",
    "predictive",
    "elastiscale",
    "static-budget",
)
#: Reporting delay of the simulated metrics: one common Prometheus scrape interval.
DEFAULT_METRICS_DELAY_S = 15.0
#: Window of the simulated rates, like `rate(x[1m])`.
DEFAULT_RATE_WINDOW_S = 60.0


class BacktestError(ElastiscaleError):
    """The backtest's own arguments are inconsistent (a window outside the trace, ...)."""


def backtest(
    config: Config | str | Path | Mapping[str, Any],
    trace: Trace | str | Path,
    policies: Sequence[PolicyRef] | None = None,
    *,
    fidelity: Fidelity = "fast",
    time_scale: float = 1.0,
    rate_scale: float = 1.0,
    start_s: float | None = None,
    end_s: float | None = None,
    warmup_s: float = 0.0,
    interval_s: float | None = None,
    metrics_delay_s: float = DEFAULT_METRICS_DELAY_S,
    rate_window_s: float = DEFAULT_RATE_WINDOW_S,
    seed: int = 0,
    progress: bool = False,
    ceiling: bool = True,
) -> BacktestReport:
    """Replay `trace` into the pipeline of `config` under each policy and score them.

    `start_s`/`end_s` select trace bins in the file's own seconds; then `time_scale` stretches
    (above 1) or compresses time and `rate_scale` multiplies arrivals. The first `warmup_s`
    seconds of the (scaled) replay are simulated for every policy and scored for none.
    `ceiling` (default on) also simulates every component at its max replicas, ready from the
    start, for the report's `ceiling_attainment` (`backtest.ceiling`): one more simulation.
    Raises `ConfigError`, `TraceError`, `RegistryError` or `BacktestError` on bad input.
    """
    began = time.perf_counter()
    cfg = config if isinstance(config, Config) else load_config(config)
    replay = prepare_trace(trace, time_scale, rate_scale, start_s, end_s)
    if not 0.0 <= warmup_s < replay.duration_s:
        raise BacktestError(
            f"warmup_s = {warmup_s:g} must be >= 0 and shorter than the replayed "
            f"{replay.duration_s:g} s"
        )
    if metrics_delay_s < 0:
        raise BacktestError(f"metrics_delay_s = {metrics_delay_s:g}, must be >= 0")
    if rate_window_s <= 0:
        raise BacktestError(f"rate_window_s = {rate_window_s:g}, must be > 0")
    if interval_s is not None and interval_s <= 0:
        raise BacktestError(f"interval_s = {interval_s:g}, must be > 0")
    specs = policy_specs(cfg, policies)

    from elastiscale.backtest import baselines

    initial = baselines.initial_replicas(cfg, replay)
    scored_from_s = replay.start_s + warmup_s
    report = BacktestReport(
        pipeline=describe_pipeline(cfg, initial),
        trace=describe_trace(replay, time_scale, rate_scale),
        settings={
            "fidelity": fidelity,
            "interval_s": interval_s if interval_s is not None else cfg.control.interval_s,
            "metrics_delay_s": metrics_delay_s,
            "rate_window_s": rate_window_s,
            "seed": seed,
            "initial_replicas": initial,
            "scored_from_s": scored_from_s,
            "scored_to_s": replay.end_s,
            **(
                {"scenario": cfg.scenario.model_dump(exclude_none=True)}
                if cfg.scenario is not None
                else {}
            ),
        },
        warmup_s=warmup_s,
        elapsed_s=0.0,
    )
    end_of_bins = replay.t_s + replay.bin_s
    report.demand = {
        name: (end_of_bins, rate) for name, rate in baselines.component_demand(cfg, replay).items()
    }
    from elastiscale.backtest.context import RunContext

    context = RunContext(
        config=cfg,
        trace=replay,
        initial_replicas=initial,
        fidelity=fidelity,
        interval_s=interval_s,
        metrics_delay_s=metrics_delay_s,
        rate_window_s=rate_window_s,
        seed=seed,
        scored_from_s=scored_from_s,
        specs=specs,
        progress=progress,
    )
    for label, spec in _labelled(specs):
        log.info("backtest: running %s", label)
        report.runs[label] = dataclasses.replace(context.run_of(spec), name=label)
    if ceiling:
        from elastiscale.backtest.ceiling import ceiling_score

        at_max = ceiling_score(
            cfg, replay, fidelity=fidelity, seed=seed, start_s=scored_from_s, end_s=replay.end_s
        )
        report.ceiling_attainment = at_max.slo_attainment
        by_objective = at_max.attainment_by_objective()
        if len(by_objective) > 1:  # a component names a TTFT or ITL objective
            report.ceiling_by_objective = by_objective
    report.elapsed_s = time.perf_counter() - began
    return report


class CallablePackage:
    """What `elastiscale.backtest` is: the `backtest` function, called the same way, that also
    reaches the modules of the `elastiscale.backtest` package whose name it takes in the
    `elastiscale` namespace, so `elastiscale.backtest.runner`, `import
    elastiscale.backtest.fluid as fluid` and dotted paths given to patching tools keep working."""

    __call__ = staticmethod(backtest)
    __signature__ = inspect.signature(backtest)

    def __getattr__(self, name: str) -> ModuleType:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{name}":
                raise
            raise AttributeError(f"elastiscale.backtest has no attribute {name!r}") from None

    def __repr__(self) -> str:
        return "<function elastiscale.backtest (and the elastiscale.backtest package)>"


#: Exported as `elastiscale.backtest`.
backtest_entry = CallablePackage()


def prepare_trace(
    trace: Trace | str | Path,
    time_scale: float = 1.0,
    rate_scale: float = 1.0,
    start_s: float | None = None,
    end_s: float | None = None,
) -> Trace:
    """Load (if given a path), cut to [start_s, end_s) in the file's seconds, then scale."""
    loaded = trace if isinstance(trace, Trace) else load_trace(trace)
    for label, value in (("time_scale", time_scale), ("rate_scale", rate_scale)):
        if not value > 0:
            raise BacktestError(f"{label} = {value:g}, must be > 0")
    if start_s is not None and end_s is not None and start_s >= end_s:
        raise BacktestError(f"start_s = {start_s:g} must be before end_s = {end_s:g}")
    if start_s is not None or end_s is not None:
        lo = -np.inf if start_s is None else start_s
        hi = np.inf if end_s is None else end_s
        if not np.any((loaded.t_s >= lo) & (loaded.t_s < hi)):
            raise BacktestError(
                f"no trace bin starts in [{lo:g}, {hi:g}) s: {loaded.name} covers "
                f"{loaded.start_s:g} to {loaded.end_s:g} s"
            )
        loaded = loaded.window(start_s, end_s)
    return loaded.scaled(time_scale=time_scale, rate_scale=rate_scale)


def _spec(ref: PolicyRef) -> PolicySpec:
    if isinstance(ref, PolicySpec):
        return ref
    if isinstance(ref, str):
        return PolicySpec(name=ref)
    return PolicySpec.model_validate(dict(ref))


def _from_file(config: Config, ref: PolicyRef) -> PolicySpec:
    """A bare name the pipeline file configures (`policies: [{name: hpa, params: ...}]`) runs
    with the file's parameters, e.g. the autoscaler `elastiscale import` carried over; any
    other reference as given."""
    if isinstance(ref, str) and "policies" in config.model_fields_set:
        for spec in config.policies:
            if spec.name == ref:
                return spec
    return _spec(ref)


def buildable_builtins() -> list[str]:
    """Built-in policy names whose code is present in this installation, baselines first."""
    builtins = registry.builtin_names("policy")
    ordered = [n for n in BUILTIN_ORDER if n in builtins]
    ordered += [n for n in builtins if n not in ordered]
    out: list[str] = []
    for name in ordered:
        try:
            registry.resolve("policy", name)
        except RegistryError:
            log.debug("policy %s is not available in this build", name)
            continue
        out.append(name)
    return out


def policy_specs(config: Config, policies: Sequence[PolicyRef] | None) -> list[PolicySpec]:
    """The policies to run: the given ones, else the buildable built-ins plus the file's own.

    Every given name must resolve; a name that does not raises `RegistryError` naming it.
    """
    if policies is not None:
        specs = [_from_file(config, p) for p in policies]
        if not specs:
            raise BacktestError("no policy to run")
        for spec in specs:
            registry.resolve("policy", spec.name)  # raises RegistryError naming the policy
        return specs
    specs = [PolicySpec(name=name) for name in buildable_builtins()]
    if "policies" in config.model_fields_set:
        for spec in config.policies:
            if spec not in specs:
                specs.append(spec)
    return specs


def _labelled(specs: list[PolicySpec]) -> list[tuple[str, PolicySpec]]:
    """Labels for the report: the policy name, with #2, #3... when a name repeats."""
    seen: dict[str, int] = {}
    out = []
    for spec in specs:
        seen[spec.name] = seen.get(spec.name, 0) + 1
        count = seen[spec.name]
        out.append((spec.name if count == 1 else f"{spec.name}#{count}", spec))
    return out


def describe_pipeline(config: Config, initial: Mapping[str, int]) -> dict[str, Any]:
    """The `pipeline` section of report.json."""
    from elastiscale.pipeline_model import latency_budgets

    spec = config.pipeline
    budgets = latency_budgets(config)
    components: dict[str, Any] = {}
    for name, comp in spec.components.items():
        components[name] = {
            "ingress": comp.ingress,
            "capacity_per_replica": comp.capacity_per_replica,
            "capacity_unit": comp.capacity_unit,
            "service_time_s": comp.service_time_s,
            "startup_s": comp.startup_s,
            "gpus_per_replica": comp.gpus_per_replica,
            "cost_per_hour": comp.cost_per_hour,
            "target_utilization": spec.utilization_target(name),
            "latency_budget_s": budgets[name],
            "replicas": {
                "min": comp.replicas.min,
                "max": comp.replicas.max,
                "initial": initial[name],
            },
        }
        if comp.slo is not None:  # the component's own TTFT / ITL objectives
            components[name]["slo"] = comp.slo.model_dump(exclude_none=True)
    out: dict[str, Any] = {
        "name": spec.name,
        "slo_latency_s": spec.slo.latency_p95_s,
        "ingress": [n for n, c in spec.components.items() if c.ingress],
        "components": components,
        "edges": [
            {"from": e.source, "to": e.target, "fanout": e.fanout, "mode": e.mode}
            for e in spec.edges
        ],
    }
    if spec.members:  # a fleet unit: its pipelines, and their shares of the shared components
        out["members"] = {
            name: {"slo_latency_s": m.slo.latency_p95_s, "components": list(m.components)}
            for name, m in spec.members.items()
        }
        for name, share in _trace_shares(config).items():
            components[name]["demand_share"] = share
    return out


def _trace_shares(config: Config) -> dict[str, dict[str, float]]:
    """Each pipeline's share of a shared component's calls when the trace arrives at every
    ingress (as a backtest replays it): the calls per request of each, over their sum."""
    from elastiscale.decision import fractions
    from elastiscale.demand_shares import DemandShares
    from elastiscale.observations import Observation

    shares = DemandShares(config)
    ingress = [n for n, c in config.pipeline.components.items() if c.ingress]
    unit = shares.of({n: Observation(n, 0.0, demand_rps=1.0) for n in ingress})
    return {name: f for name, by in unit.items() if (f := fractions(by)) is not None}


def describe_trace(trace: Trace, time_scale: float, rate_scale: float) -> dict[str, Any]:
    """The `trace` section of report.json (times after scaling)."""
    return {
        "name": trace.name,
        "bin_s": trace.bin_s,
        "start_s": trace.start_s,
        "end_s": trace.end_s,
        "duration_s": trace.duration_s,
        "requests": float(np.sum(trace.requests)),
        "time_scale": time_scale,
        "rate_scale": rate_scale,
    }
