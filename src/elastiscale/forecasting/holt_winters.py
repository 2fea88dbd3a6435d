"""Holt-Winters: level, damped trend and an additive seasonal profile.

statsmodels' `ExponentialSmoothing` estimates the model at refit time, with the heuristic
initialization (initial level, trend and profile from a decomposition of the first cycles; the
estimated initialization is about 8 times slower on a week of 1-minute bins for little gain).
Between refits the state moves on with the same recursion in numpy, one bin at a time:

    level'  = alpha * (y - season) + (1 - alpha) * (level + phi * trend)
    trend'  = beta * (level' - level) + (1 - beta) * phi * trend
    season' = gamma * (y - level - phi * trend) + (1 - gamma) * season
    forecast(k) = level' + (phi + ... + phi^k) * trend' + season of bin t + k

(this matches statsmodels' own fitted values to rounding). A missing bin moves the state along
its forecast and keeps the season.

Two refinements for fine resolutions, both on by default:
- the seasonal profile is smoothed by a centered moving average of `profile_smoothing_s`: at
  1-minute bins each slot of a daily profile is estimated from a handful of noisy values, and
  demand shapes change over tens of minutes, not from one minute to the next;
- the level, trend and damping constants are tuned for the served horizons on the
  de-seasonalized history (as for Holt's method), instead of statsmodels' one-step-ahead fit,
  which at 1-minute bins chases noise (alpha near 0.3 on the NASA trace).

Periods longer than `max_period_s` (default one day) are not modelled: a weekly profile at
1-minute bins needs two weeks of history and a 10,080-slot state.
"""

from __future__ import annotations

import math
import warnings
from typing import ClassVar

import numpy as np
from pydantic import Field, NonNegativeFloat, PositiveFloat

from elastiscale.decision import Detail
from elastiscale.extras import require
from elastiscale.forecasting.base import Forecaster
from elastiscale.forecasting.ewma import HALF_LIFE_GRID_BINS, forward_fill, horizon_mae, tuning_bins
from elastiscale.forecasting.grid import (
    DAY_S,
    WEEK_S,
    Array,
    FitRefusedError,
    GridContext,
    GridModel,
    IntArray,
    NotEnoughHistoryError,
    fill_missing,
    observed,
)
from elastiscale.forecasting.naive import PeriodChoice
from elastiscale.forecasting.params import ForecasterParams
from elastiscale.forecasting.seasonality import CYCLES, detect_periods
from elastiscale.forecasting.smoothing import damped_sum, damped_sums, holt_filter, search_holt


def circular_smooth(profile: Array, width: int) -> Array:
    """Centered moving average of `width` slots around a cyclic profile (width 1: unchanged)."""
    if width <= 1 or profile.size < 3:
        return profile
    width = min(width, profile.size)
    half = width // 2
    padded = np.concatenate([profile[-half:], profile, profile[: width - half - 1]])
    sums = np.cumsum(np.concatenate([[0.0], padded]))
    out: Array = (sums[width:] - sums[:-width]) / width
    return out


class HoltWintersModel(GridModel):
    """Additive Holt-Winters with a damped trend, slots indexed by absolute bin number."""

    label = "holt-winters"

    def __init__(
        self,
        period: PeriodChoice,
        max_period_s: float,
        profile_smoothing_s: float,
        tune_for_horizons: bool,
    ) -> None:
        self.period = period
        self.max_period_s = max_period_s
        self.profile_smoothing_s = profile_smoothing_s
        self.tune_for_horizons = tune_for_horizons
        self.period_bins = 0
        self.step_s = 0.0
        self.alpha = self.beta = self.gamma = self.phi = math.nan
        self.level = self.trend = math.nan
        self.slots = np.empty(0)
        self.latest = -1

    def _choose_period(self, y: Array, ctx: GridContext) -> int:
        if self.period == "detected":
            found = [
                p
                for p in detect_periods(y, ctx.step_s, max_period_s=self.max_period_s)
                if p.period_s <= self.max_period_s
            ]
            if not found:
                span = y.size * ctx.step_s / 3600
                raise FitRefusedError(f"no seasonal period detected in {span:.3g} h of history")
            return found[0].bins
        seconds = {"daily": DAY_S, "weekly": WEEK_S}.get(str(self.period))
        period_s = float(self.period) if seconds is None else seconds
        return max(2, round(period_s / ctx.step_s))

    def fit(self, y: Array, ctx: GridContext) -> None:
        # Detection needs three cycles of the longest period considered: say so before trying.
        need = CYCLES * max(2, round(self.max_period_s / ctx.step_s))
        if self.period == "detected" and y.size < need:
            raise NotEnoughHistoryError("holt-winters", observed(y), need, ctx.step_s)
        m = self._choose_period(y, ctx)
        if y.size < 2 * m + 2 or observed(y) < m + 2:
            raise NotEnoughHistoryError(
                f"holt-winters (period {m} bins)", observed(y), 2 * m + 2, ctx.step_s
            )
        require("statsmodels", "forecast", "forecaster 'holt-winters'")
        from statsmodels.tsa.holtwinters import ExponentialSmoothing

        filled = fill_missing(y)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter; the result is checked below
            result = ExponentialSmoothing(
                filled,
                trend="add",
                damped_trend=True,
                seasonal="add",
                seasonal_periods=m,
                initialization_method="heuristic",
            ).fit(use_brute=False)
        params = result.params
        alpha, beta = float(params["smoothing_level"]), float(params["smoothing_trend"])
        gamma, phi = float(params["smoothing_seasonal"]), float(params["damping_trend"])
        level0, trend0 = float(params["initial_level"]), float(params["initial_trend"])
        seasons0 = np.asarray(params["initial_seasons"], dtype=float)
        if not np.isfinite([alpha, beta, gamma, phi, level0, trend0]).all():
            raise ValueError("statsmodels returned non-finite parameters")
        if not np.isfinite(seasons0).all():
            raise ValueError("statsmodels returned a non-finite seasonal profile")
        seasons0 = circular_smooth(seasons0, round(self.profile_smoothing_s / ctx.step_s))
        self.period_bins, self.step_s = m, ctx.step_s
        # initial_seasons[j] is the season of bin first + j - m, i.e. of slot (first + j) % m.
        self.slots = np.empty(m)
        self.slots[(ctx.first_bin + np.arange(m)) % m] = seasons0
        if self.tune_for_horizons and observed(y) >= tuning_bins(ctx):
            alpha, beta, phi = self._tune(y, ctx, alpha, beta, phi)
        self.alpha, self.beta, self.gamma, self.phi = alpha, beta, gamma, phi
        self.level, self.trend = level0, trend0
        self.latest = ctx.first_bin - 1
        for value in y.tolist():
            self.append(value)

    def _tune(
        self, y: Array, ctx: GridContext, alpha: float, beta: float, phi: float
    ) -> tuple[float, float, float]:
        """Level, trend and damping constants for the served horizons, on y minus the profile
        (the statsmodels estimate is one of the candidates, so tuning never makes it worse
        on the history)."""
        m = self.period_bins
        season = self.slots[(ctx.first_bin + np.arange(y.size)) % m]
        deseasonalized = forward_fill(y - season)  # y[0] is observed
        warmup = min(y.size // 10, int(4 * HALF_LIFE_GRID_BINS[-1]))

        def loss(a: float, b: float, p: float) -> float:
            level, trend = holt_filter(deseasonalized, a, b, p)
            forecasts = {
                k: level + damped_sum(p, k) * trend + np.roll(season, -k)  # season of t + k
                for k in ctx.horizons
            }
            return horizon_mae(y, forecasts, warmup)

        return search_holt(loss, start=(alpha, beta, phi))

    def append(self, value: float) -> None:
        self.latest += 1
        slot = self.latest % self.period_bins
        season = float(self.slots[slot])
        drift = self.phi * self.trend
        if math.isnan(value):
            self.level += drift
            self.trend = drift
            return
        level = self.alpha * (value - season) + (1.0 - self.alpha) * (self.level + drift)
        self.slots[slot] = self.gamma * (value - self.level - drift) + (1.0 - self.gamma) * season
        self.trend = self.beta * (level - self.level) + (1.0 - self.beta) * drift
        self.level = level

    def forecast(self, ks: IntArray) -> Array:
        season = self.slots[(self.latest + ks) % self.period_bins]
        out: Array = self.level + damped_sums(self.phi, ks) * self.trend + season
        return out

    def describe(self) -> dict[str, Detail]:
        return {
            "period_s": self.period_bins * self.step_s,
            "alpha": round(self.alpha, 6),
            "beta": round(self.beta, 6),
            "gamma": round(self.gamma, 6),
            "phi": round(self.phi, 6),
        }


class HoltWinters(Forecaster):
    """Holt-Winters (additive season, damped trend), fitted by statsmodels, updated in numpy."""

    name: ClassVar[str] = "holt-winters"

    class Params(ForecasterParams):
        period: PeriodChoice = Field("detected", description="detected, daily, weekly or seconds")
        max_period_s: PositiveFloat = Field(DAY_S, description="longest period modelled")
        profile_smoothing_s: NonNegativeFloat = Field(
            1800.0, description="width of the moving average smoothing the seasonal profile"
        )
        tune_for_horizons: bool = Field(
            True, description="re-tune level/trend constants for the served horizons"
        )

    def new_model(self) -> GridModel:
        assert isinstance(self.params, HoltWinters.Params)
        p = self.params
        return HoltWintersModel(
            p.period, p.max_period_s, p.profile_smoothing_s, p.tune_for_horizons
        )
