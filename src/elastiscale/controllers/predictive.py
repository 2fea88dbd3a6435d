"""`predictive`: each component forecasts its own demand and sizes for it at its own lead time.

The baseline that shows what forecasting alone buys, without the graph: no fan-out, no
propagation, no queueing model. For each component:

- its own load (requests/s, or tokens/s when its capacity is in tokens) is forecast (by default
  with automatic model selection), and the upper `quantile` (p90) of the forecast over the
  component's lead time (startup + control interval + actuation delay) is the demand to size
  for; the current load is a floor, so a forecast never undercuts what is already there;
- replicas = ceil(demand / (capacity_per_replica x target utilization)), the HPA's arithmetic;
- a scale-down waits for `startup_s + interval` (the highest count of that window is kept), the
  time beyond which releasing a replica saves more than starting it again costs.

Like `elastiscale`, it blends the forecast towards persistence (reactive control with the
headroom the history's own changes ask for) where the forecast's recent error is no better than
persistence's (`gating`, demand.py): a forecaster fitted on a few minutes of a cascading start
can be wildly off, and a baseline that trusted it blindly would measure that, not forecasting.

Refits (one forecaster per component) run on a background worker by default (`refit`), inline
in backtests; see forecasting/refits.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from elastiscale.controllers.base import PerComponentPolicy, TickContext
from elastiscale.controllers.constraints import WindowExtreme
from elastiscale.controllers.demand import DemandForecast, ForecastParams
from elastiscale.controllers.reactive import ceil_count
from elastiscale.decision import Detail, Proposal
from elastiscale.forecasting.refits import RefitScheduler

if TYPE_CHECKING:
    from elastiscale.config import Config


class PredictiveParams(ForecastParams):
    """Parameters of `predictive`."""

    target_utilization: float | None = Field(
        None, gt=0, le=1, description="default: the component's target utilization (0.7)"
    )
    scale_down_delay_s: float | None = Field(
        None, ge=0, description="scale-down window; default: each component's startup + interval"
    )
    gating: bool = Field(True, description="blend towards persistence where the forecast is poor")


class PredictivePolicy(PerComponentPolicy):
    """Per-component forecast sizing (see the module docstring)."""

    name = "predictive"
    Params: ClassVar[type[PredictiveParams]] = PredictiveParams
    #: What a backtest sets whatever the config says (`backtest.baselines.build_policy`).
    backtest_params: ClassVar[Mapping[str, Any]] = {"refit": "inline"}

    def __init__(self, config: Config, params: PredictiveParams | None = None) -> None:
        self.config = config
        self.params = params if params is not None else PredictiveParams()
        self.refits = RefitScheduler(self.params.refit)
        self._forecasts: dict[str, DemandForecast] = {}
        self._down: dict[str, WindowExtreme] = {}

    def _forecast(self, component: str) -> DemandForecast:
        known = self._forecasts.get(component)
        if known is None:
            known = DemandForecast.from_params(
                self.params, gating=self.params.gating, refits=self.refits
            )
            self._forecasts[component] = known
        return known

    def close(self) -> None:
        """Stop the refit worker (queued refits are dropped; the models in use stay)."""
        self.refits.close()

    def propose_component(self, ctx: TickContext, component: str) -> Proposal:
        comp = ctx.pipeline.components[component]
        obs = ctx.observations[component]
        forecast = self._forecast(component)
        load = ctx.load(component)
        staleness_s = ctx.config.constraints_for(component).missing_data.staleness_s
        if load is not None and obs.age_s(ctx.now_s) <= staleness_s:
            forecast.observe(obs.at_s, load)
        latest = forecast.latest
        if latest is None:
            return Proposal.none(self.name, f"{ctx.load_signal(component)}: no data yet")
        lead_s = ctx.lead_time_s(component)
        bins = math.ceil((ctx.now_s + lead_s - latest[0]) / forecast.step_s) + 1
        outlook = forecast.outlook(bins)
        assert outlook is not None  # there is a latest value
        demand, index = outlook.peak(ctx.now_s, ctx.now_s + lead_s)
        utilization = self.params.target_utilization or ctx.config.pipeline.utilization_target(
            component
        )
        per_replica = comp.capacity_per_replica * utilization
        need = ceil_count(demand / per_replica) if demand > 0 else 0
        if need == 0 and comp.replicas.min > 0:
            need = comp.replicas.min
        need = min(need, comp.replicas.max)
        window = self._down.get(component)
        if window is None:
            delay_s = self.params.scale_down_delay_s
            if delay_s is None:
                delay_s = comp.startup_s + ctx.interval_s
            window = self._down[component] = WindowExtreme(delay_s, lowest=False)
            # Start from the current count, as a new HPA does (no history, no shrinking).
            window.push(ctx.now_s, ctx.replicas[component].desired)
        held = window.push(ctx.now_s, need)
        details: dict[str, Detail] = {
            "lead_time_s": lead_s,
            "demand": round(demand, 6),
            "per_replica": per_replica,
            "need": need,
            "stabilized": held,
        }
        details.update(forecast.details(outlook, index, "forecast"))
        reason = (
            f"p{self.params.quantile * 100:g} demand {demand:.4g} over the next {lead_s:g} s "
            f"at {per_replica:.4g}/replica -> {need}"
        )
        if held > need:
            reason += f"; held at {held} (highest of the last {window.window_s:g} s)"
        return Proposal(self.name, held, reason, details)
