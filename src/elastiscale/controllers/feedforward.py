"""`elastiscale`: the dependency-aware predictive policy, scaling the whole pipeline ahead of
demand.

Reactive autoscalers let each component notice its own load, so a burst at the router reaches
the LLM minutes before the LLM's new replicas are ready. This policy forecasts demand where it
enters the pipeline and carries it down the graph, so every component starts early by its own
lead time. One tick, for every component c (in topological order):

1. Lead time: H_c = startup_s + control interval + actuation delay + the service times on the
   slowest path from an ingress to c. Agent example's writer: 240 + 15 + 0 + 2.07 = 257 s.
2. Feed-forward demand: each ingress's gated upper-quantile forecast (demand.py) over the bins
   from now to now + H_c, its peak carried to c through the fan-outs measured online
   (fanout.py). Where the model has not beaten persistence, the forecast is persistence: the
   latest rate plus the burst reserve (bursts.py), the headroom for the rise demand can make
   within the lead time, sized to `slo.attainment_target` from the history's own rises at
   a similar level and time of day (the cost guard: such a forecast never buys more, and with
   `burst_reserve_cap: reactive` the reserve adds at most reactive headroom, cost_guard.py). A
   token-sized component takes the ingress's token forecast the same way, times a measured
   factor (its tokens per propagated ingress token, prior 1).
3. Reactive floors, always kept (the max of the valid proposals): c's own load plus its queue
   drained within its slack, and what its direct upstreams' current demand (and their queues,
   drained within their slack) will send it. The second is the ordering rule: a downstream
   component shrinks only after the upstream demand feeding it has fallen, and never while an
   upstream backlog is still on its way. While a queue grows, both floors read the arrivals
   from its growth instead of the windowed demand, and the own floor adds the backlog due by
   the time new replicas are ready (`surge_floor`, surge.py): a flash surge is ordered at the
   first tick it shows, and the stages below hear of it from the first stage it queues at.
   The scale-down window keeps the arrivals a surge showed, not the capacity bought to drain
   its backlog (`surge_hold`), so that capacity goes once the queue stops growing.
4. Sizing: a queueing model against c's share of the end-to-end SLO (queueing.py; shares as
   the oracle computes them, `pipeline_model.latency_budgets`), and against its own TTFT and
   ITL objectives where it has them, the record naming the one that binds (slo_sizing.py).
5. Scale-down looks ahead (the need over the lead time) and back (`scale_down_lookback`): for
   `startup_s + interval` it keeps the highest need (`need`, the default), the highest need
   without the burst reserve (`forecast`), or what observed load needed (`observed`): a
   replica released and needed again within its start-up time costs as much as keeping it.
   Every window is at least 300 s, the HPA's default stabilization (`cpu_scale_down_floor_s`,
   `gpu_scale_down_floor_s`): bursts recur within minutes, and a replica released between
   them is back only after detection and start-up, its requests late meanwhile (a component
   without GPUs also queues the chain below). Measured against start-up + interval alone for
   GPU components: docs/results.md, "Holding GPU replicas 300 s after a burst". With
   `surge_hold_s`, what the window held during a surge is kept at least that long after it.
6. Scale to zero (`min: 0`): zero when P(no arrival in H_c) = exp(-demand x H_c) >=
   `quantile`; a forecast of demand within the lead time pre-warms the first replica.
7. A shared GPU budget (`pipeline.max_gpus`, or a pool shared by several pipelines) is divided
   by effect on end-to-end SLO attainment (budget.py).
8. `learn: true` plans with measured start-up, capacity and service time, the file's values
   their priors (controllers/learned.py; `feedforward_state.replan`).

Forecaster refits run off the tick on a background worker (`refit: background`); backtests
refit inline (`backtest_params`), so they reproduce (forecasting/refits.py; `close()` stops it).

Every part can be switched off (`feedforward`, `measured_fanout`, `gating`, `queueing`,
`burst_reserve`) for the ablation. Decision records carry, per component, the forecast and its
quality (with the burst reserve), the demand through each incoming edge, measured fan-out vs
prior, the budget share, each proposal and the clamp the policy applied.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from elastiscale.controllers.arrivals import ArrivalVariability, TypicalDispersion, wait_factor
from elastiscale.controllers.base import TickContext
from elastiscale.controllers.budget import pipeline_allocation
from elastiscale.controllers.calibrating import Calibrator
from elastiscale.controllers.cost_guard import apply_guard
from elastiscale.controllers.demand import MAX_BINS_AHEAD, DemandForecast, DemandOutlook
from elastiscale.controllers.fanout import FanoutEstimator
from elastiscale.controllers.feedforward_state import (
    ComponentState,
    ElastiscaleParams,
    build_component,
    replan,
)
from elastiscale.controllers.learned import Effective, LearnedParameters
from elastiscale.controllers.queueing import Sizer
from elastiscale.controllers.slo_sizing import note_binding
from elastiscale.controllers.surge import floor_rps, surge_arrivals_rps
from elastiscale.decision import Detail, Proposal
from elastiscale.forecasting.refits import RefitScheduler
from elastiscale.observations import Observation
from elastiscale.pipeline import Pipeline
from elastiscale.pipeline_model import latency_budgets

if TYPE_CHECKING:
    from elastiscale.config import Config

#: Each candidate driver's detail names: its rate and the replicas that rate needs.
_DRIVER_KEYS = {
    label: (f"{label}_rps", f"{label}_replicas")
    for label in ("feedforward", "reactive", "upstream")
}


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
        self._components: dict[str, ComponentState] = {}
        #: Each component's measured arrival variability (`arrival_variability: measured`).
        self.arrivals: dict[str, ArrivalVariability] = {}
        if p.arrival_variability == "measured" and p.queueing:
            self.arrivals = {
                n: ArrivalVariability(p.rate_window_s, p.arrival_half_life_s)
                for n in self.pipeline.order
            }
        #: Each component's typical arrival dispersion, the noise a surge must exceed.
        self.surge_noise: dict[str, TypicalDispersion] = {}
        if p.surge_floor and p.surge_noise == "measured":
            self.surge_noise = {n: TypicalDispersion(p.rate_window_s) for n in self.pipeline.order}
        self._token_units = any(
            c.capacity_unit != "requests" for c in config.pipeline.components.values()
        )
        self.learned = LearnedParameters(p.learning) if p.learn else None
        self._effective: dict[str, Effective] = {}
        self.calibrator: Calibrator | None = None
        if p.self_calibration and p.feedforward:
            self.calibrator = Calibrator(config, p, self.refits)
        #: The calibrated settings `_size` reads, looked up once per tick (`propose`).
        self._reserve_cap: Any = self.setting("burst_reserve_cap")
        self._lookback: Any = self.setting("scale_down_lookback")
        #: Per component: (lead time, its rounding for the details), formatted once.
        self._lead_detail: dict[str, tuple[float, float]] = {}
        #: Per component: (its incoming edges, each with its two detail keys), formatted once.
        self._edge_keys: dict[str, tuple[object, list[tuple[Any, str, str]]]] = {}

    def _keys_of(self, name: str, incoming: Sequence[Any]) -> list[tuple[Any, str, str]]:
        """`name`'s incoming edges, each with its detail keys (what it sends, what flows
        through it), formatted once per pipeline rather than at every tick."""
        keyed = self._edge_keys.get(name)
        if keyed is None or keyed[0] is not incoming:
            keys = [(e, f"upstream_{e.source}_rps", f"edge_{e.source}_rps") for e in incoming]
            keyed = self._edge_keys[name] = (incoming, keys)
        return keyed[1]

    def setting(self, key: str) -> Any:
        """A calibrated parameter's value in force (`burst_reserve`, `scale_down_lookback`)."""
        if self.calibrator is not None:
            return self.calibrator.value(key)
        return getattr(self.params, key)

    def _reserve_target(self) -> float | None:
        if not self.setting("burst_reserve"):
            return None
        return self.config.pipeline.slo.attainment_target

    def _component(self, ctx: TickContext, name: str) -> ComponentState:
        known = self._components.get(name)
        if self.learned is not None:
            effective = self.learned.effective(ctx, name)
            known = replan(ctx, name, self.params, self.budgets_s[name], known, self._effective,
                           effective)  # fmt: skip
            known.details = dict(effective.details)
            self._components[name] = known
        elif known is None:
            known = build_component(ctx, name, self.params, self.budgets_s[name])
            self._components[name] = known
        return known

    def _forecast(self, ingress: str, signal: str) -> DemandForecast:
        key = (ingress, signal)
        known = self._forecasts.get(key)
        if known is None:
            known = DemandForecast.from_params(
                self.params,
                gating=self.params.gating,
                refits=self.refits,
                attainment_target=self._reserve_target(),
                time_of_day=self.params.burst_reserve_time_of_day,
            )
            self._forecasts[key] = known
        return known

    def warm_start(self, history: Iterable[Mapping[str, Observation]]) -> None:
        """Learn from metric history that exists already, oldest first: one mapping per past
        tick (component -> observation), as a tick at that time would have seen it.

        The fan-out estimates and the ingress forecasts (their models, gates and burst
        statistics) are fed exactly as live ticks would have fed them, and a calibration due
        at the end of the history runs then, so a policy started on a day of history decides
        as one that watched that day. Replica-count windows are not replayed: they start from
        the current counts at the first tick, as without history."""
        last_s: float | None = None
        for snapshot in history:
            if not snapshot:
                continue
            at_s = max(o.at_s for o in snapshot.values())
            rates = {
                n: snapshot[n].demand_rps if n in snapshot else None for n in self.pipeline.order
            }
            self.fanout.update(at_s, rates)
            self._observe_arrivals(snapshot)
            if not self.params.feedforward:
                continue
            for ingress in self.pipeline.ingress:
                obs = snapshot.get(ingress)
                if obs is None:
                    continue
                signals = ["demand_rps"]
                if self._token_units and obs.tokens_per_s is not None:
                    signals.append("tokens_per_s")
                for signal in signals:
                    forecast = self._forecast(ingress, signal)
                    forecast.observe(obs.at_s, obs.value(signal))
                    forecast.outlook(MAX_BINS_AHEAD)  # as a tick would: same refresh times
            last_s = at_s
        if last_s is not None:
            self._calibrate(last_s)

    def _observe_arrivals(self, snapshot: Mapping[str, Observation | None]) -> None:
        """Feed each component's arrival variability and surge noise its rate reading (missing
        breaks a pair)."""
        for estimators in (self.arrivals, self.surge_noise):
            for name, estimator in estimators.items():
                obs = snapshot.get(name)
                if obs is None:
                    estimator.update(0.0, None)
                else:
                    estimator.update(obs.at_s, obs.demand_rps)

    def _calibrate(self, now_s: float) -> None:
        """Run the self-calibration's tick; a changed setting reaches the forecasts at once."""
        if self.calibrator is not None and self.calibrator.tick(now_s, self._forecasts):
            for forecast in self._forecasts.values():
                forecast.set_attainment_target(self._reserve_target())

    def close(self) -> None:
        """Stop the refit worker (queued refits are dropped; the models in use stay)."""
        self.refits.close()

    def propose(self, ctx: TickContext) -> dict[str, Proposal]:
        now_s = ctx.now_s
        pipeline = ctx.pipeline
        fresh = {n: self._fresh(ctx, n) for n in pipeline.order}
        rates = {n: (o.demand_rps if o is not None else None) for n, o in fresh.items()}
        if self.learned is not None:
            self.learned.update(ctx)
        self.fanout.update(now_s, rates)
        self._observe_arrivals(fresh)
        fanouts = self.fanout.fanouts()
        gains = {i: pipeline.propagate({i: 1.0}, fanouts) for i in pipeline.ingress}

        outlooks: dict[tuple[str, str], DemandOutlook] = {}
        if self.params.feedforward:
            outlooks = self._outlooks(ctx, fresh)
            setting = self.calibrator.state.setting if self.calibrator is not None else None
            self._calibrate(now_s)
            if self.calibrator is not None and self.calibrator.state.setting != setting:
                outlooks = self._outlooks(ctx, fresh)

        wanted: dict[str, int] = {}
        demand_rps: dict[str, float] = {}
        sizers: dict[str, Sizer] = {}
        notes: dict[str, dict[str, Detail]] = {}
        self._reserve_cap = self.setting("burst_reserve_cap")
        self._lookback = self.setting("scale_down_lookback")
        for name in pipeline.order:
            state = self._component(ctx, name)
            got = self._size(ctx, state, fresh, rates, fanouts, gains, outlooks)
            if got is None:
                continue
            wanted[name], demand_rps[name], sizers[name], notes[name] = got

        allocation = pipeline_allocation(
            ctx, wanted, demand_rps, sizers, gains, rates, self.params.gpu_pool
        )
        calibration = self.calibrator.details() if self.calibrator is not None else {}
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
                if allocation.note is not None:
                    details["budget_note"] = allocation.note
                    reason += f"; {allocation.note}"
                count = granted
            details.update(calibration)
            if self.learned is not None:
                details.update(self._components[name].details)
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
        state: ComponentState,
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
        state.surge_rps = None
        lead = self._lead_detail.get(name)
        if lead is None or lead[0] != state.lead_s:
            lead = self._lead_detail[name] = (state.lead_s, round(state.lead_s, 3))
        details: dict[str, Detail] = {"lead_time_s": lead[1]}
        sizer = self._sizer(ctx, state, obs, fresh, gains, details)
        if sizer is None:
            return None
        per_request = 1.0 if comp.capacity_unit == "requests" else self._tokens_per_request(state)

        # Feed-forward: the peak gated forecast over the lead time, carried down the graph.
        ff_rps: float | None = None
        ff_base_rps: float | None = None  # the same without the burst reserve
        if outlooks:
            got = self._feedforward_rps(ctx, state, gains, fanouts, outlooks, details)
            if got is not None:
                ff_rps, ff_base_rps = got
        # Reactive floor: own load and backlog drained within the slack.
        own_rps: float | None = None
        plain_own_rps: float | None = None  # the same without the surge floor
        if obs is not None and obs.demand_rps is not None:
            load = ctx.load(name)
            queue = obs.queue_length or 0.0
            if load is not None and per_request is not None:
                plain_own_rps = load / per_request + queue / state.drain_s
                if self.params.surge_floor and obs.queue_length is not None:
                    noise = self.surge_noise.get(name)
                    dispersion = None if noise is None else noise.dispersion
                    own_rps = self._surge_rps(
                        ctx, state, obs, load / per_request, per_request, dispersion
                    )
                    if state.surge_rps is not None and self._holds_arrivals(state):
                        plain_own_rps = state.surge_rps + queue / state.drain_s
                    details["queue_growth_rps"] = round(state.queue_trend.growth_rps, 6)
                    if dispersion is not None:
                        details["typical_dispersion"] = round(dispersion, 4)
                    if state.surge_rps is not None:
                        details["surge_arrivals_rps"] = round(state.surge_rps, 6)
                else:
                    own_rps = plain_own_rps
        carried_rps: float | None = None  # what a surge above will send here
        # Ordering floor: what the direct upstreams' demand and backlog will send.
        up_rps: float | None = None
        plain_up_rps: float | None = None  # the same without the surges carried
        incoming = ctx.pipeline.incoming(name)
        if incoming:
            up_rps = plain_up_rps = 0.0
            for edge, sent_key, _ in self._keys_of(name, incoming):
                up_obs = fresh[edge.source]
                if up_obs is None or up_obs.demand_rps is None:
                    up_rps = plain_up_rps = None
                    break
                backlog = (up_obs.queue_length or 0.0) / state.drain_s
                fanout = fanouts[(edge.source, edge.target)]
                above = self._components.get(edge.source)
                surge_rps = above.surge_rps if above is not None else None
                base_rps = up_obs.demand_rps
                if surge_rps is not None and surge_rps > base_rps:
                    base_rps = surge_rps
                    carried_rps = (carried_rps or 0.0) + surge_rps * fanout
                sent = (base_rps + backlog) * fanout
                held_above = above is not None and self._holds_arrivals(above)
                kept = base_rps if held_above else up_obs.demand_rps
                plain_up_rps += (kept + backlog) * fanout
                details[sent_key] = round(sent, 6)
                up_rps += sent
        if carried_rps is not None:
            details["surge_carried_rps"] = round(carried_rps, 6)
            if state.surge_rps is None or carried_rps > state.surge_rps:
                state.surge_rps = carried_rps
        valid: dict[str, float] = {}  # the candidate drivers with a rate, in this order
        if ff_rps is not None:
            valid["feedforward"] = ff_rps
        if own_rps is not None:
            valid["reactive"] = own_rps
        if up_rps is not None:
            valid["upstream"] = up_rps
        if not valid:
            return None
        proposals: dict[str, int] = {}
        minimum = comp.replicas.min
        for label, rate in valid.items():
            count = proposals[label] = self._replicas(state, sizer, rate, minimum)
            rate_key, replicas_key = _DRIVER_KEYS[label]
            details[rate_key] = round(rate, 6)
            details[replicas_key] = count
        if ff_base_rps is not None:  # the feed-forward need without the burst reserve
            base = self._replicas(state, sizer, ff_base_rps, 0)
            details["feedforward_base_replicas"] = base
            if self._reserve_cap == "reactive" and per_request:
                u = ctx.config.pipeline.utilization_target(name)
                capacity_rps = comp.capacity_per_replica / per_request
                apply_guard(proposals, base, ff_base_rps, capacity_rps, u, details)
        driver = _driver(proposals)
        need = proposals[driver]
        demand = valid[driver]
        short = need > comp.replicas.max
        need = min(need, comp.replicas.max)
        if not state.seeded:
            # As a new HPA does, start from the current count: a policy without history must
            # not shrink the service before a whole window has shown that it can.
            state.down.push(now_s, ctx.replicas[name].desired)
            state.seeded = True
        # Scale-down looks ahead through `need` itself (forecast and burst reserve over the
        # lead time) and back over the window at what `scale_down_lookback` holds (`_hold`).
        remembered = proposals
        if self.params.surge_hold != "all" and state.surge_rps is not None:
            remembered = dict(proposals)  # the window keeps the floors without the surge
            for label, plain in (("reactive", plain_own_rps), ("upstream", plain_up_rps)):
                if label in remembered and plain is not None:
                    remembered[label] = self._replicas(state, sizer, plain, comp.replicas.min)
        hold = self._hold(state, sizer, remembered, ff_base_rps)
        looked_back = state.down.push(now_s, hold)
        if state.surge_down is not None:  # a surge's hold outlasts the window (surge_hold_s)
            kept = state.surge_down.push(now_s, hold if state.surge_rps is not None else 0)
            looked_back = max(looked_back, kept)
        held = max(need, looked_back)
        details.update(need=need, stabilized=held)
        reason = f"{driver}: {demand:.4g} req/s at {name} needs {need}"
        reason += note_binding(sizer, demand, details)
        if short:
            details["clamp"] = "max_replicas"
            reason += f" (more than max {comp.replicas.max})"
        if held > need:
            reason += f"; held at {held}, the highest need of the last {state.down.window_s:g} s"
        details["reason"] = reason
        return held, demand, sizer, details

    def _holds_arrivals(self, state: ComponentState) -> bool:
        """Whether the scale-down window keeps the arrivals of `state`'s surge this tick
        (`surge_hold`: always, or once two readings in a row showed it)."""
        hold = self.params.surge_hold
        return hold == "arrivals" or (hold == "confirmed" and state.surge_streak >= 2)

    def _surge_rps(
        self,
        ctx: TickContext,
        state: ComponentState,
        obs: Observation,
        demand_rps: float,
        per_request: float,
        dispersion: float | None,
    ) -> float:
        """The reactive floor with the queue's growth (surge.py), against arrivals of the
        typical `dispersion` (None: Poisson)."""
        queue = float(obs.queue_length or 0.0)
        growth_rps = state.queue_trend.observe(obs.at_s, queue)
        comp = ctx.pipeline.components[state.name]
        capacity_rps = comp.capacity_per_replica / per_request
        counts = ctx.replicas[state.name]
        ready = obs.ready_replicas if obs.ready_replicas is not None else counts.ready
        busy = obs.utilization if obs.utilization is not None else 1.0
        served_rps = min(busy, 1.0) * ready * capacity_rps
        state.surge_rps = surge_arrivals_rps(
            demand_rps, queue, growth_rps, served_rps, state.slack_s, state.queue_trend.span_s,
            dispersion,
        )  # fmt: skip
        state.surge_streak = 0 if state.surge_rps is None else state.surge_streak + 1
        starting_rps = max(0, counts.desired - counts.ready) * capacity_rps
        surge_drain_s = state.drain_s * self.params.surge_drain_share
        return floor_rps(
            state.surge_rps,
            demand_rps,
            queue,
            growth_rps,
            starting_rps,
            state.startup_s,
            state.drain_s,
            surge_drain_s,
        )

    def _hold(
        self,
        state: ComponentState,
        sizer: Sizer,
        proposals: Mapping[str, int],
        ff_base_rps: float | None,
    ) -> int:
        """What the scale-down window remembers of this tick (see `scale_down_lookback`, as
        `propose` read it for this tick)."""
        mode = self._lookback
        if mode == "need":
            return max(proposals.values())
        seen = [proposals[k] for k in ("reactive", "upstream") if k in proposals]
        if mode == "forecast" and ff_base_rps is not None:
            seen.append(self._replicas(state, sizer, ff_base_rps, 0))
        return max(seen, default=max(proposals.values()))

    def _replicas(self, state: ComponentState, sizer: Sizer, rate_rps: float, minimum: int) -> int:
        """Replicas for `rate_rps`; zero only when no request is likely within the lead time."""
        count = sizer.replicas_for(rate_rps)
        if count == 0 and rate_rps > 0.0:
            count = 1
        if count == 1 and minimum == 0:
            arrivals = rate_rps * state.lead_s
            if math.exp(-arrivals) >= self.params.quantile:
                return 0
        return count

    def _tokens_per_request(self, state: ComponentState) -> float | None:
        assert state.tokens_per_request is not None
        return state.tokens_per_request.value

    def _sizer(
        self,
        ctx: TickContext,
        state: ComponentState,
        obs: Observation | None,
        fresh: Mapping[str, Observation | None],
        gains: Mapping[str, Mapping[str, float]],
        details: dict[str, Detail],
    ) -> Sizer | None:
        """The component's sizer; for a token-sized one, learn its call size and token factor
        from this tick's data first (None until its call size has been seen once)."""
        variability = 1.0
        estimator = self.arrivals.get(state.name)
        if estimator is not None:
            dispersion = estimator.dispersion
            variability = wait_factor(dispersion)
            if dispersion is not None:
                details["arrival_dispersion"] = round(dispersion, 4)
            details["wait_factor"] = round(variability, 4)
        if state.by_variability is not None:
            return state.by_variability.sizer_for(variability)
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
        return state.token_sizers.sizer(size, variability)

    def _feedforward_rps(
        self,
        ctx: TickContext,
        state: ComponentState,
        gains: Mapping[str, Mapping[str, float]],
        fanouts: Mapping[tuple[str, str], float],
        outlooks: Mapping[tuple[str, str], DemandOutlook],
        details: dict[str, Detail],
    ) -> tuple[float, float] | None:
        """Peak forecast demand at the component over its lead time, in requests/s of its
        current call size, with and without the burst reserve; per-edge shares and the
        forecast behind it go into `details`."""
        name = state.name
        comp = ctx.pipeline.components[name]
        tokens = comp.capacity_unit != "requests"
        end_s = ctx.now_s + state.lead_s
        total = 0.0
        base = 0.0
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
            reserve = forecast.reserve(outlook, index) or 0.0
            share = 1.0 - float(outlook.trust[index]) if index >= 0 else 0.0
            unreserved = max(peak - share * reserve, outlook.latest)
            if tokens:
                size = self._tokens_per_request(state)
                if size is None or size <= 0:
                    return None
                if signal is not None:
                    assert state.token_factor is not None
                    factor = (state.token_factor.value or 1.0) / size
                    peak *= factor
                    unreserved *= factor
            ingress_rps = peak  # in requests/s at the ingress (tokens converted above)
            total += ingress_rps * gain[name]
            base += unreserved * gain[name]
            by_source[ingress] = ingress_rps
        # The demand through each incoming edge: upstream demand x measured fan-out.
        for edge, _, through_key in self._keys_of(name, ctx.pipeline.incoming(name)):
            through = sum(
                rps * gains[i][edge.source] * fanouts[(edge.source, edge.target)]
                for i, rps in by_source.items()
            )
            details[through_key] = round(through, 6)
        details.update(self.fanout.details(name))
        return total, base


def _driver(proposals: Mapping[str, int]) -> str:
    """The label of the most replicas, feed-forward first among equals, else the first: what
    `max(proposals, key=lambda k: (proposals[k], k == "feedforward"))` returns, without a
    key call per label (it runs for every component at every tick)."""
    driver = ""
    best: tuple[int, bool] | None = None
    for label, count in proposals.items():
        key = (count, label == "feedforward")
        if best is None or key > best:
            driver, best = label, key
    return driver
