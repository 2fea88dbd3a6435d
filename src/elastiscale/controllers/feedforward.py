"""`elastiscale`: the dependency-aware predictive policy, scaling the whole pipeline ahead of
demand.

Reactive autoscalers let each component notice its own load, so a burst at the router reaches
the LLM minutes before the LLM's new replicas are ready. This policy forecasts demand where it
enters the pipeline and carries it down the graph, so every component starts early by its own
lead time. One tick, for every component c (in topological order):

1. Lead time: H_c = startup_s + control interval + actuation delay + upstream path latency (the
   service times along the slowest path from an ingress to c). Writer of the agent example:
   240 + 15 + 0 + 2.07 = 257 s.
2. Feed-forward demand: each ingress's gated upper-quantile forecast (demand.py) over the bins
   from now to now + H_c, its peak carried to c through the fan-outs measured online
   (fanout.py). A token-sized component takes the ingress's token forecast the same way, times
   a measured factor (its tokens per propagated ingress token, prior 1).
3. Reactive floors, always kept (the max of the valid proposals): c's own load plus its queue
   drained within its slack, and what its direct upstreams' current demand (and their queues,
   drained within their slack) will send it. The second is the ordering rule: a downstream
   component shrinks only after the upstream demand feeding it has fallen, and never while an
   upstream backlog is still on its way.
4. Sizing: a queueing model against c's share of the end-to-end SLO (queueing.py; shares as
   the oracle computes them, `pipeline_model.latency_budgets`).
5. Scale-down waits for `startup_s + interval` (the count proposed is the highest need of that
   window): a replica released and needed again within its start-up time costs as much as
   keeping it, and the requests that wait for it are late. A CPU router (10 s start) follows
   demand within 25 s; an LLM (240 s start) holds for 255 s.
6. Scale to zero (components with `min: 0`): zero when no request is likely within the lead
   time, i.e. P(no arrival in H_c) = exp(-demand x H_c) >= `quantile`; a forecast of demand
   within the lead time starts the first replica ahead of it (pre-warming).
7. A shared GPU budget (`pipeline.max_gpus`, or a named pool shared by several pipelines) is
   divided by effect on end-to-end SLO attainment (budget.py).

Forecaster refits (statsmodels fits, up to about a second each) run off the tick on a
background worker by default (`refit: background`); backtests build the policy with `refit:
inline` (`backtest_params`), so their results stay reproducible (forecasting/refits.py). The
daemon stops the worker through `close()`.

Every part can be switched off (`feedforward`, `measured_fanout`, `gating`, `queueing`) for
the ablation that measures what each contributes. Decision records carry, per component, the
forecast and its quality, the demand through each incoming edge, measured fan-out vs prior, the
budget share, each proposal and the clamp the policy applied.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from elastiscale.controllers.base import TickContext
from elastiscale.controllers.budget import Allocation, Claim, allocate, shared_pool
from elastiscale.controllers.constraints import WindowExtreme
from elastiscale.controllers.demand import DemandForecast, DemandOutlook, ForecastParams
from elastiscale.controllers.fanout import FanoutEstimator, RatioEstimator
from elastiscale.controllers.queueing import (
    QueueingSizer,
    Sizer,
    TokenSizerCache,
    UtilizationSizer,
)
from elastiscale.decision import Detail, Proposal
from elastiscale.forecasting.refits import RefitScheduler
from elastiscale.observations import Observation
from elastiscale.pipeline import Pipeline
from elastiscale.pipeline_model import OracleParams, latency_budgets

if TYPE_CHECKING:
    from elastiscale.config import Config


class ElastiscaleParams(ForecastParams):
    """Parameters of `elastiscale`. Defaults follow from principles, not from any one trace."""

    burst_share: float = Field(
        OracleParams.model_fields["burst_share"].default,
        ge=0.0,
        lt=1.0,
        description="share of each component's queueing slack left to swings inside a window",
    )
    scale_down_delay_s: float | None = Field(
        None, ge=0, description="scale-down window; default: each component's startup + interval"
    )
    fanout_half_life_s: float = Field(120.0, gt=0, description="memory of the fan-out estimate")
    fanout_prior_requests: float = Field(
        100.0, gt=0, description="the configured fan-out counts as this many upstream requests"
    )
    gpu_pool: str | None = Field(
        None, description="name of a GPU pool shared with other pipelines (size: max_gpus)"
    )
    feedforward: bool = Field(True, description="forecast ingress and propagate down the graph")
    measured_fanout: bool = Field(True, description="measure fan-out online (else: the priors)")
    gating: bool = Field(True, description="blend towards reactive where the forecast is poor")
    queueing: bool = Field(True, description="Erlang-C sizing (else: target utilization)")


@dataclass(slots=True)
class _Component:
    """What the policy keeps about one component."""

    name: str
    lead_s: float
    drain_s: float  # a backlog is cleared over this long: startup + queueing slack
    sizer: Sizer | None  # None for token-sized components (sized per call size)
    token_sizers: TokenSizerCache | None
    down: WindowExtreme
    tokens_per_request: RatioEstimator | None = None
    token_factor: RatioEstimator | None = None
    seeded: bool = False
    details: dict[str, Detail] = field(default_factory=dict)


class ElastiscalePolicy:
    """Dependency-aware predictive scaling (see the module docstring)."""

    name = "elastiscale"
    Params: ClassVar[type[ElastiscaleParams]] = ElastiscaleParams
    #: What a backtest sets whatever the config says (`backtest.baselines.build_policy`).
    backtest_params: ClassVar[Mapping[str, Any]] = {"refit": "inline"}

    def __init__(self, config: Config, params: ElastiscaleParams | None = None) -> None:
        self.config = config
        self.params = params if params is not None else ElastiscaleParams()
        self.pipeline = Pipeline(config.pipeline)
        p = self.params
        self.fanout = FanoutEstimator(
            self.pipeline,
            half_life_s=p.fanout_half_life_s,
            prior_requests=p.fanout_prior_requests,
            enabled=p.measured_fanout,
        )
        self.budgets_s = latency_budgets(config)
        self.refits = RefitScheduler(p.refit)
        self._forecasts: dict[tuple[str, str], DemandForecast] = {}
        self._components: dict[str, _Component] = {}
        self._token_units = any(
            c.capacity_unit != "requests" for c in config.pipeline.components.values()
        )

    # ----------------------------------------------------------------------------------------
    # Set-up

    def _component(self, ctx: TickContext, name: str) -> _Component:
        known = self._components.get(name)
        if known is not None:
            return known
        comp = ctx.pipeline.components[name]
        p = self.params
        budget_s = self.budgets_s[name]
        slack_s = max(budget_s - comp.service_time_s, comp.service_time_s)
        path_s = max(
            sum(ctx.pipeline.components[u].service_time_s for u in path[:-1])
            for path in ctx.pipeline.paths_from_ingress(name)
        )
        lead_s = ctx.lead_time_s(name) + path_s
        delay_s = p.scale_down_delay_s
        if delay_s is None:
            delay_s = comp.startup_s + ctx.interval_s
        utilization = ctx.config.pipeline.utilization_target(name)
        sizer: Sizer | None = None
        tokens: TokenSizerCache | None = None
        if comp.capacity_unit == "requests":
            if p.queueing:
                sizer = QueueingSizer(
                    capacity_rps=comp.capacity_per_replica,
                    service_time_s=comp.service_time_s,
                    budget_s=budget_s,
                    max_replicas=comp.replicas.max,
                    burst_share=p.burst_share,
                )
            else:
                sizer = UtilizationSizer(
                    capacity_rps=comp.capacity_per_replica,
                    utilization=utilization,
                    max_replicas=comp.replicas.max,
                )
        else:
            tokens = TokenSizerCache(
                capacity_tokens_per_s=comp.capacity_per_replica,
                service_time_s=comp.service_time_s,
                budget_s=budget_s,
                max_replicas=comp.replicas.max,
                burst_share=p.burst_share,
                queueing=p.queueing,
                utilization=utilization,
            )
        made = _Component(
            name=name,
            lead_s=lead_s,
            drain_s=comp.startup_s + slack_s,
            sizer=sizer,
            token_sizers=tokens,
            down=WindowExtreme(delay_s, lowest=False),
        )
        if tokens is not None:
            half_life_s = p.fanout_half_life_s
            made.tokens_per_request = RatioEstimator(None, 0.0, half_life_s)
            made.token_factor = RatioEstimator(1.0, p.fanout_prior_requests, half_life_s)
        self._components[name] = made
        return made

    def _forecast(self, ingress: str, signal: str) -> DemandForecast:
        key = (ingress, signal)
        known = self._forecasts.get(key)
        if known is None:
            known = DemandForecast.from_params(
                self.params, gating=self.params.gating, refits=self.refits
            )
            self._forecasts[key] = known
        return known

    def close(self) -> None:
        """Stop the refit worker (queued refits are dropped; the models in use stay)."""
        self.refits.close()

    # ----------------------------------------------------------------------------------------
    # One tick

    def propose(self, ctx: TickContext) -> dict[str, Proposal]:
        now_s = ctx.now_s
        pipeline = ctx.pipeline
        fresh = {n: self._fresh(ctx, n) for n in pipeline.order}
        rates = {n: (o.demand_rps if o is not None else None) for n, o in fresh.items()}
        self.fanout.update(now_s, rates)
        fanouts = self.fanout.fanouts()
        gains = {i: pipeline.propagate({i: 1.0}, fanouts) for i in pipeline.ingress}

        outlooks: dict[tuple[str, str], DemandOutlook] = {}
        if self.params.feedforward:
            outlooks = self._outlooks(ctx, fresh)

        wanted: dict[str, int] = {}
        demand_rps: dict[str, float] = {}
        sizers: dict[str, Sizer] = {}
        notes: dict[str, dict[str, Detail]] = {}
        for name in pipeline.order:
            state = self._component(ctx, name)
            got = self._size(ctx, state, fresh, rates, fanouts, gains, outlooks)
            if got is None:
                continue
            wanted[name], demand_rps[name], sizers[name], notes[name] = got

        allocation = self._apply_budget(ctx, wanted, demand_rps, sizers, gains, rates)
        out: dict[str, Proposal] = {}
        for name in pipeline.order:
            if name not in wanted:
                reason = "no usable data: load, upstream and forecast all missing"
                out[name] = Proposal.none(self.name, reason)
                continue
            count = wanted[name]
            details = notes[name]
            reason = str(details.pop("reason"))
            if allocation is not None and name in allocation.granted:
                granted = allocation.granted[name]
                details["budget_wanted"] = count
                details["budget_granted"] = granted
                if granted != count:
                    reason += f"; GPU budget grants {granted} of {count}"
                    details["clamp"] = "gpu_budget"
                count = granted
            out[name] = Proposal(self.name, count, reason, details)
        return out

    def _fresh(self, ctx: TickContext, name: str) -> Observation | None:
        """The component's observation when its load is present and fresh, else None."""
        obs = ctx.observations.get(name)
        if obs is None or obs.demand_rps is None:
            return None
        staleness_s = ctx.config.constraints_for(name).missing_data.staleness_s
        return obs if obs.age_s(ctx.now_s) <= staleness_s else None

    def _outlooks(
        self, ctx: TickContext, fresh: Mapping[str, Observation | None]
    ) -> dict[tuple[str, str], DemandOutlook]:
        """Feed every ingress forecast with this tick's data and take its outlook."""
        longest_s = max(self._component(ctx, n).lead_s for n in ctx.pipeline.order)
        out: dict[tuple[str, str], DemandOutlook] = {}
        for ingress in ctx.pipeline.ingress:
            obs = fresh.get(ingress)
            signals = ["demand_rps"]
            if self._token_units and (obs is None or obs.tokens_per_s is not None):
                signals.append("tokens_per_s")
            for signal in signals:
                forecast = self._forecast(ingress, signal)
                if obs is not None:
                    forecast.observe(obs.at_s, obs.value(signal))
                latest = forecast.latest
                if latest is None:
                    continue
                bins = math.ceil((ctx.now_s + longest_s - latest[0]) / forecast.step_s) + 1
                outlook = forecast.outlook(bins)
                if outlook is not None:
                    out[(ingress, signal)] = outlook
        return out

    # ----------------------------------------------------------------------------------------
    # Sizing one component

    def _size(
        self,
        ctx: TickContext,
        state: _Component,
        fresh: Mapping[str, Observation | None],
        rates: Mapping[str, float | None],
        fanouts: Mapping[tuple[str, str], float],
        gains: Mapping[str, Mapping[str, float]],
        outlooks: Mapping[tuple[str, str], DemandOutlook],
    ) -> tuple[int, float, Sizer, dict[str, Detail]] | None:
        name = state.name
        comp = ctx.pipeline.components[name]
        now_s = ctx.now_s
        obs = fresh[name]
        details: dict[str, Detail] = {"lead_time_s": round(state.lead_s, 3)}
        sizer = self._sizer(ctx, state, obs, fresh, gains, details)
        if sizer is None:
            return None
        per_request = 1.0 if comp.capacity_unit == "requests" else self._tokens_per_request(state)

        # Feed-forward: the peak gated forecast over the lead time, carried down the graph.
        ff_rps: float | None = None
        if outlooks:
            ff_rps = self._feedforward_rps(ctx, state, gains, fanouts, outlooks, details)
        # Reactive floor: own load and backlog drained within the slack.
        own_rps: float | None = None
        if obs is not None and obs.demand_rps is not None:
            load = ctx.load(name)
            queue = obs.queue_length or 0.0
            if load is not None and per_request is not None:
                own_rps = load / per_request + queue / state.drain_s
        # Ordering floor: what the direct upstreams' demand and backlog will send.
        up_rps: float | None = None
        incoming = ctx.pipeline.incoming(name)
        if incoming:
            up_rps = 0.0
            for edge in incoming:
                up_obs = fresh[edge.source]
                if up_obs is None or up_obs.demand_rps is None:
                    up_rps = None
                    break
                backlog = (up_obs.queue_length or 0.0) / state.drain_s
                sent = (up_obs.demand_rps + backlog) * fanouts[(edge.source, edge.target)]
                details[f"upstream_{edge.source}_rps"] = round(sent, 6)
                up_rps += sent
        candidates = {"feedforward": ff_rps, "reactive": own_rps, "upstream": up_rps}
        valid = {k: v for k, v in candidates.items() if v is not None}
        if not valid:
            return None
        proposals: dict[str, int] = {}
        for label, rate in valid.items():
            proposals[label] = self._replicas(state, sizer, rate, comp.replicas.min)
            details[f"{label}_rps"] = round(rate, 6)
            details[f"{label}_replicas"] = proposals[label]
        driver = max(proposals, key=lambda k: (proposals[k], k == "feedforward"))
        need = proposals[driver]
        demand = valid[driver]
        short = need > comp.replicas.max
        need = min(need, comp.replicas.max)
        if not state.seeded:
            # As a new HPA does, start from the current count: a policy without history must
            # not shrink the service before a whole window has shown that it can.
            state.down.push(now_s, ctx.replicas[name].desired)
            state.seeded = True
        held = state.down.push(now_s, need)
        details["need"] = need
        details["stabilized"] = held
        if short:
            details["clamp"] = "max_replicas"
        reason = f"{driver}: {demand:.4g} req/s at {name} needs {need}"
        if short:
            reason += f" (more than max {comp.replicas.max})"
        if held > need:
            reason += f"; held at {held}, the highest need of the last {state.down.window_s:g} s"
        details["reason"] = reason
        return held, demand, sizer, details

    def _replicas(self, state: _Component, sizer: Sizer, rate_rps: float, minimum: int) -> int:
        """Replicas for `rate_rps`; zero only when no request is likely within the lead time."""
        count = sizer.replicas_for(rate_rps)
        if count == 0 and rate_rps > 0.0:
            count = 1
        if count == 1 and minimum == 0:
            arrivals = rate_rps * state.lead_s
            if math.exp(-arrivals) >= self.params.quantile:
                return 0
        return count

    def _tokens_per_request(self, state: _Component) -> float | None:
        assert state.tokens_per_request is not None
        return state.tokens_per_request.value

    def _sizer(
        self,
        ctx: TickContext,
        state: _Component,
        obs: Observation | None,
        fresh: Mapping[str, Observation | None],
        gains: Mapping[str, Mapping[str, float]],
        details: dict[str, Detail],
    ) -> Sizer | None:
        """The component's sizer; for a token-sized one, learn its call size and token factor
        from this tick's data first (None until its call size has been seen once)."""
        if state.sizer is not None:
            return state.sizer
        assert state.tokens_per_request is not None and state.token_factor is not None
        assert state.token_sizers is not None
        load = ctx.load(state.name) if obs is not None else None
        rps = obs.demand_rps if obs is not None else None
        if load is not None and rps is not None:
            state.tokens_per_request.update(ctx.now_s, load, rps)
            carried = 0.0
            for ingress, gain in ((i, g[state.name]) for i, g in gains.items()):
                ingress_obs = fresh.get(ingress)
                if ingress_obs is None or ingress_obs.tokens_per_s is None:
                    carried = math.nan
                    break
                carried += ingress_obs.tokens_per_s * gain
            if not math.isnan(carried):
                state.token_factor.update(ctx.now_s, load, carried)
        size = state.tokens_per_request.value
        if size is None:
            return None
        details["tokens_per_request"] = round(size, 3)
        details["token_factor"] = round(state.token_factor.value or 1.0, 4)
        return state.token_sizers.sizer(size)

    def _feedforward_rps(
        self,
        ctx: TickContext,
        state: _Component,
        gains: Mapping[str, Mapping[str, float]],
        fanouts: Mapping[tuple[str, str], float],
        outlooks: Mapping[tuple[str, str], DemandOutlook],
        details: dict[str, Detail],
    ) -> float | None:
        """Peak forecast demand at the component over its lead time, in requests/s of its
        current call size; per-edge shares and the forecast behind it go into `details`."""
        name = state.name
        comp = ctx.pipeline.components[name]
        tokens = comp.capacity_unit != "requests"
        end_s = ctx.now_s + state.lead_s
        total = 0.0
        by_source: dict[str, float] = {}
        for ingress, gain in gains.items():
            if gain[name] <= 0.0:
                continue
            signal = "tokens_per_s" if tokens and (ingress, "tokens_per_s") in outlooks else None
            outlook = outlooks.get((ingress, signal or "demand_rps"))
            if outlook is None:
                return None
            peak, index = outlook.peak(ctx.now_s, end_s)
            forecast = self._forecasts[(ingress, signal or "demand_rps")]
            details.update(forecast.details(outlook, index, f"forecast_{ingress}"))
            if tokens:
                size = self._tokens_per_request(state)
                if size is None or size <= 0:
                    return None
                if signal is not None:
                    assert state.token_factor is not None
                    peak = peak * (state.token_factor.value or 1.0) / size
            ingress_rps = peak  # in requests/s at the ingress (tokens converted above)
            total += ingress_rps * gain[name]
            by_source[ingress] = ingress_rps
        # The demand through each incoming edge: upstream demand x measured fan-out.
        for edge in ctx.pipeline.incoming(name):
            through = sum(
                rps * gains[i][edge.source] * fanouts[(edge.source, edge.target)]
                for i, rps in by_source.items()
            )
            details[f"edge_{edge.source}_rps"] = round(through, 6)
        details.update(self.fanout.details(name))
        return total

    # ----------------------------------------------------------------------------------------
    # The GPU budget

    def _apply_budget(
        self,
        ctx: TickContext,
        wanted: Mapping[str, int],
        demand_rps: Mapping[str, float],
        sizers: Mapping[str, Sizer],
        gains: Mapping[str, Mapping[str, float]],
        rates: Mapping[str, float | None],
    ) -> Allocation | None:
        max_gpus = ctx.config.pipeline.max_gpus
        if max_gpus is None:
            return None
        ingress_rps = sum(rates.get(i) or 0.0 for i in ctx.pipeline.ingress)
        claims = []
        for name, count in wanted.items():
            comp = ctx.pipeline.components[name]
            if not comp.is_gpu:
                continue
            calls = sum(g[name] for g in gains.values())
            claims.append(
                Claim(
                    key=name,
                    gpus_per_replica=comp.gpus_per_replica,
                    min_replicas=comp.replicas.min,
                    wanted=count,
                    demand_rps=demand_rps[name],
                    served_rps=sizers[name].served_rps,
                    calls_per_request=calls,
                    ingress_rps=max(ingress_rps, demand_rps[name] / max(calls, 1e-9)),
                )
            )
        if not claims:
            return None
        if self.params.gpu_pool is not None:
            pool = shared_pool(self.params.gpu_pool, max_gpus)
            return pool.request(ctx.config.pipeline.name, claims)
        return allocate(claims, max_gpus)
