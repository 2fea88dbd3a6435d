"""The two baselines that need the replayed trace: `static-peak` and `oracle`.

Both are ordinary policies (they propose through `Engine.step` like any other, and the engine's
constraints apply to them), but they are built from the trace being replayed, so they exist only
inside a backtest. `registry.build("policy", "oracle", config)` outside one fails with a one-line
`RegistryError`; the backtest builds them with `build_policy(..., trace=trace)`, which passes the
trace to any policy class whose `needs_trace` attribute is true (a user's own policy may use the
same hook).

Demand of a component
    The trace's per-bin arrivals, in the component's capacity unit (requests, or tokens when the
    component is sized in tokens), divided by the bin width, carried from every ingress component
    down the graph through the configured mean fan-outs (`Pipeline.propagate_series`).

static-peak: the prior static deployment
    replicas = ceil(peak / (capacity_per_replica x target_utilization)), clamped to the bounds,
    where `peak` is the highest mean of the component's demand over any full `peak_window_s`
    window (default 60 s: what `rate(x[1m])` shows) of the replayed trace, and the target
    utilization is the component's, else the pipeline's (default 0.7). Worked numbers: a
    30 req/s peak on an LLM of 1.5 req/s per replica at 0.7 needs 30 / 1.05 = 28.6, so 29
    replicas, all the time.

oracle: the construction the bound-seeking `oracle` (`backtest/oracle.py`) starts from
    It reads the true future demand (the trace, never the metrics) and computes, for every trace
    bin, the minimum replica count `need(t)` that meets the component's latency budget. The
    budget leaves a queueing slack = budget - service_time_s (at least 0), shared in two:
    `burst_share` (default 0.75) of it for the waiting that demand swings inside a rate window
    cause, the rest for random (Poisson) waiting.
    1. rate: the component's demand averaged over [t, t + rate_window_s) (default 20 s, at least
       one trace bin; near the trace's end, the last full window), in requests per second (a
       token-sized component's tokens/s divided by the trace's mean tokens per request).
       Capacity at least this mean over every window lets a fluid queue clear any backlog within
       one window: over any span of length L the work that arrives is at most
       capacity x (L + rate_window_s). 20 s is a third of the metrics' 60 s rate window, a
       measured choice (docs/results.md): windows of the per-call slack (3 s at the agent's
       planner) size for every few-second burst of a bursty trace, and 30 s windows lose more
       attainment than 20 s ones on the bundled traces.
    2. queueing model: n replicas are an M/M/c queue with c = max(n, round(n x k)) servers,
       where k = capacity_per_replica x service_time_s is one replica's concurrency (Little's
       law), each server serving n x capacity / c requests/s, so the total capacity is exact;
    3. random waiting: the `quantile` (default 0.95) of the Erlang-C queueing delay at that rate
       must be within the rest of the slack:
       P(wait > s) = C(c, a) x exp(-(c x mu - rate) x s) <= 1 - quantile,
       s = (1 - burst_share) x slack;
    4. need(t) = the smallest n in [min, max] meeting it (max when none does).
    Worked numbers (examples/pipelines/agent.yaml): the writer (8 s calls, 1.2 calls/s per
    replica) has a 29.8 s budget, so 21.8 s of slack, of which the p95 random wait may take
    5.4 s; 30 calls/s over a 20 s window then needs 26 replicas (96% busy).
    At a tick at `now_s` it proposes max(need(t)) over t in [now_s, now_s + lead], where
    lead = startup_s + interval_s + actuation_delay_s. Scale-ups are ready `startup_s` after they
    are asked for and the next tick comes `interval_s` later, so replicas needed at T are asked
    for exactly one lead time ahead, at the last tick that can still have them ready; scale-downs
    act at once, so the window also starts at `now_s`. Keeping a replica through a dip shorter
    than the lead costs no more than releasing it and starting it again (a starting replica is
    billed), which is why the window is a maximum rather than two points.
    Latency budgets and the Erlang-C sizing are `elastiscale.pipeline_model`'s (shared with the
    `elastiscale` policy), and so is sizing against a component's own TTFT and ITL objectives
    (`pipeline_model.objectives`, at the trace's mean tokens per request): need(t) is then the
    largest any objective needs.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat

from elastiscale import overrides, registry
from elastiscale.config import Config
from elastiscale.controllers.base import Policy, TickContext
from elastiscale.decision import Proposal
from elastiscale.errors import RegistryError
from elastiscale.pipeline import Pipeline
from elastiscale.pipeline_model import (
    OracleParams,
    latency_budgets,
    max_rate_within_budget,
    objectives,
)
from elastiscale.trace import Trace

Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
_P = TypeVar("_P", bound=BaseModel)

#: How far into the trace the starting replica counts look, seconds (see `initial_replicas`).
INITIAL_WINDOW_S = 300.0


# --------------------------------------------------------------------------------------------
# Demand and sizing shared by the baselines and the backtest's starting point


def component_demand(config: Config, trace: Trace) -> dict[str, Array]:
    """Per-bin demand of every component in its capacity unit per second (requests/s or
    tokens/s), carried from the ingress components through the configured mean fan-outs."""
    pipeline = Pipeline(config.pipeline)
    by_unit: dict[str, dict[str, Array]] = {}
    out: dict[str, Array] = {}
    for name in pipeline.order:
        unit = pipeline.components[name].capacity_unit
        if unit not in by_unit:
            rate = trace.work(unit) / trace.bin_s
            by_unit[unit] = pipeline.propagate_series({n: rate for n in pipeline.ingress})
        out[name] = by_unit[unit][name]
    return out


def window_means(values: Array, bins: int) -> Array:
    """Means of every full window of `bins` consecutive values (one value when there are fewer:
    the mean of them all). Only full windows count, so a spike in the trace's first or last
    second is averaged like any other instead of standing alone in a shortened window."""
    if values.size <= bins:
        return np.array([float(values.mean())]) if values.size else np.zeros(1)
    sums = np.concatenate([[0.0], np.cumsum(values)])
    means: Array = (sums[bins:] - sums[:-bins]) / bins
    return means


def leading_mean(values: Array, bins: int) -> Array:
    """At each index i, the mean of values[i : i + bins]; where that window would run past the
    end, the mean of the last full window."""
    full = window_means(values, bins)
    index = np.minimum(np.arange(values.size), full.size - 1)
    out: Array = full[index]
    return out


def replicas_at_utilization(
    demand_per_s: float, capacity_per_replica: float, utilization: float
) -> int:
    """ceil(demand / (capacity x utilization)); e.g. 30 req/s at 1.5 x 0.7 -> 29 replicas."""
    exact = demand_per_s / (capacity_per_replica * utilization)
    return max(0, math.ceil(exact - 1e-9))


def _clamp(replicas: int, low: int, high: int) -> int:
    return min(max(replicas, low), high)


def initial_replicas(
    config: Config, trace: Trace, window_s: float = INITIAL_WINDOW_S
) -> dict[str, int]:
    """The replica counts every policy of one backtest starts from (the fair-comparison rule).

    A component's `replicas.initial` when set; else what the mean demand of the trace's first
    `window_s` seconds (default 300) needs at the component's target utilization, within bounds.
    """
    demand = component_demand(config, trace)
    bins = max(1, round(window_s / trace.bin_s))
    out: dict[str, int] = {}
    for name, comp in config.pipeline.components.items():
        if comp.replicas.initial is not None:
            out[name] = comp.replicas.initial
            continue
        mean = float(np.mean(demand[name][:bins]))
        wanted = replicas_at_utilization(
            mean, comp.capacity_per_replica, config.pipeline.utilization_target(name)
        )
        out[name] = _clamp(wanted, comp.replicas.min, comp.replicas.max)
    return out


# --------------------------------------------------------------------------------------------
# Policies


def _needs_backtest(name: str) -> RegistryError:
    return RegistryError(
        f"policy {name!r} is built from the replayed trace and runs only in a backtest "
        "(elastiscale backtest, or elastiscale.backtest())"
    )


class StaticPeakParams(BaseModel):
    """Parameters of `static-peak`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    peak_window_s: PositiveFloat = Field(60.0, description="demand is averaged over this window")
    target_utilization: float | None = Field(
        None, gt=0.0, le=1.0, description="overrides the pipeline's target utilization"
    )


class StaticPeakPolicy:
    """Fixed replicas per component, sized for the replayed trace's peak demand."""

    name = "static-peak"
    needs_trace: ClassVar[bool] = True
    Params = StaticPeakParams

    def __init__(
        self,
        config: Config,
        params: StaticPeakParams | Mapping[str, Any] | None = None,
        trace: Trace | None = None,
    ) -> None:
        if trace is None:
            raise _needs_backtest(self.name)
        self.params = _params(StaticPeakParams, params)
        demand = component_demand(config, trace)
        bins = max(1, round(self.params.peak_window_s / trace.bin_s))
        self.peak_per_s: dict[str, float] = {}
        self.replicas: dict[str, int] = {}
        for name, comp in config.pipeline.components.items():
            peak = float(np.max(window_means(demand[name], bins)))
            target = self.params.target_utilization or config.pipeline.utilization_target(name)
            wanted = replicas_at_utilization(peak, comp.capacity_per_replica, target)
            self.peak_per_s[name] = peak
            self.replicas[name] = _clamp(wanted, comp.replicas.min, comp.replicas.max)

    def propose(self, ctx: TickContext) -> dict[str, Proposal]:
        return {
            name: Proposal(
                policy=self.name,
                replicas=count,
                reason=f"sized for the trace's peak of {self.peak_per_s[name]:.3g}/s",
                details={"peak_per_s": self.peak_per_s[name]},
            )
            for name, count in self.replicas.items()
        }


class OraclePolicy:
    """Knows the future demand; keeps each component at the minimum replicas meeting its latency
    budget, asked for one lead time ahead (see the module docstring for the exact computation)."""

    name = "oracle"
    needs_trace: ClassVar[bool] = True
    Params = OracleParams

    def __init__(
        self,
        config: Config,
        params: OracleParams | Mapping[str, Any] | None = None,
        trace: Trace | None = None,
    ) -> None:
        if trace is None:
            raise _needs_backtest(self.name)
        self.params = _params(OracleParams, params)
        self.budget_s = latency_budgets(config)
        self._start_s = trace.start_s
        self._bin_s = trace.bin_s
        demand = component_demand(config, trace)
        self.need: dict[str, IntArray] = {}
        self.short: dict[str, npt.NDArray[np.bool_]] = {}
        self.window_s: dict[str, float] = {}
        for name, comp in config.pipeline.components.items():
            bins = max(1, round(self.params.rate_window_s / trace.bin_s))
            self.window_s[name] = bins * trace.bin_s
            need = raw_need(config, trace, demand[name], name, bins, self.params, self.budget_s)
            self.short[name] = need > comp.replicas.max
            self.need[name] = np.clip(need, comp.replicas.min, comp.replicas.max).astype(np.int64)

    def with_need(
        self, need: Mapping[str, IntArray], short: Mapping[str, npt.NDArray[np.bool_]]
    ) -> OraclePolicy:
        """A copy proposing from other need series (the candidates of `backtest.oracle`)."""
        out = copy.copy(self)
        out.need, out.short = dict(need), dict(short)
        return out

    def _bin(self, t_s: float, size: int) -> int:
        return min(max(math.floor((t_s - self._start_s) / self._bin_s), 0), size - 1)

    def propose(self, ctx: TickContext) -> dict[str, Proposal]:
        out: dict[str, Proposal] = {}
        for name, need in self.need.items():
            lead_s = ctx.lead_time_s(name)
            first = self._bin(ctx.now_s, need.size)
            last = self._bin(ctx.now_s + lead_s, need.size)
            count = int(need[first : last + 1].max())
            short = bool(self.short[name][first : last + 1].any())
            reason = f"future need over the next {lead_s:g} s" + (
                " (more than max replicas)" if short else ""
            )
            out[name] = Proposal(
                policy=self.name,
                replicas=count,
                reason=reason,
                details={"lead_time_s": lead_s, "latency_budget_s": self.budget_s[name]},
            )
        return out


def raw_need(
    config: Config,
    trace: Trace,
    demand: Array,
    name: str,
    window_bins: int,
    params: OracleParams,
    budgets: Mapping[str, float],
) -> IntArray:
    """need(t) of component `name` for every trace bin, before the replica bounds: the fewest
    replicas meeting its latency budget at its demand averaged over `window_bins` bins ahead
    (steps 1 to 4 of the module docstring; more than max replicas where none suffices)."""
    comp = config.pipeline.components[name]
    slack_s = max(budgets[name] - comp.service_time_s, 0.0)
    size = _work_per_request(trace, comp)
    rate_rps = leading_mean(demand, window_bins) / size
    capacity_rps = comp.capacity_per_replica / size
    # The budget's wait, or with TTFT/ITL objectives each one's (the largest need wins).
    wait_budgets_s = [budgets[name] - params.burst_share * slack_s]
    if comp.slo is not None:
        wait_budgets_s = [
            comp.service_time_s + (1.0 - params.burst_share) * max(o.wait_s, 0.0)
            for o in objectives(comp, budgets[name], size)
        ]
    need: IntArray = np.zeros(rate_rps.shape, dtype=np.int64)
    for wait_budget_s in wait_budgets_s:
        limits = max_rate_within_budget(
            comp.replicas.max, capacity_rps, comp.service_time_s, wait_budget_s, params.quantile
        )
        needed = np.searchsorted(limits, rate_rps * (1 - 1e-9), side="left").astype(np.int64)
        need = np.maximum(need, needed)
    return need


def _work_per_request(trace: Trace, comp: Any) -> float:
    """Mean work of one request in the component's capacity unit (1 for requests)."""
    unit: str = comp.capacity_unit
    if unit == "requests":
        return 1.0
    total_requests = float(trace.requests.sum())
    if total_requests <= 0:
        return 1.0
    return float(trace.work(unit).sum()) / total_requests


def _params(model: type[_P], given: _P | Mapping[str, Any] | None) -> _P:
    if isinstance(given, model):
        return given
    return model.model_validate(dict(given or {}))


# --------------------------------------------------------------------------------------------
# Building any policy for a backtest


def build_policy(
    name: str,
    config: Config,
    params: Mapping[str, Any] | None = None,
    *,
    trace: Trace,
    backtest: Any = None,
) -> Policy:
    """Build policy `name` like `registry.build`, handing the replayed trace to policies that
    declare `needs_trace = True` (the baselines above, or a user's own), and applying the params
    a policy declares in `backtest_params` over the given ones (`predictive` and `elastiscale`
    declare `refit: inline`: a fit finished off the simulated clock would land at a tick that
    depends on the machine's speed). A policy whose `needs_backtest` is true is also given
    the backtest's `RunContext` (`backtest.context`) as `backtest=`."""
    factory = registry.resolve("policy", name)
    raw = {**dict(params or {}), **getattr(factory, "backtest_params", {})}
    model = registry.params_model(factory)
    if model is not None and overrides.supports_overrides(factory, model):
        built: Policy = overrides.build(
            factory, model, raw, lambda p: _make(factory, config, p, trace, backtest)
        )
        return built
    validated: Any = model.model_validate(raw) if model is not None else raw
    return _make(factory, config, validated, trace, backtest)


def _make(
    factory: Any,
    config: Config,
    validated: Any,
    trace: Trace | None = None,
    backtest: Any = None,
) -> Policy:
    if getattr(factory, "needs_backtest", False):
        if backtest is None:
            raise _needs_backtest(getattr(factory, "name", str(factory)))
        policy: Policy = factory(config, validated, trace=trace, backtest=backtest)
    elif getattr(factory, "needs_trace", False):
        policy = factory(config, validated, trace=trace)
    else:
        policy = factory(config, validated)
    return policy
