"""The naive forecasters: last value, and seasonal-naive (the value one period ago).

They are the baselines every other model must beat (`forecast-eval` reports each model's MAE
relative to the better of the two), and the last value is what a purely reactive policy
implicitly assumes.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, Self

import numpy as np
from pydantic import Field, PositiveFloat, model_validator

from elastiscale.decision import Detail
from elastiscale.forecasting.base import Forecaster
from elastiscale.forecasting.grid import (
    DAY_S,
    WEEK_S,
    Array,
    GridContext,
    GridModel,
    IntArray,
    NotEnoughHistoryError,
)
from elastiscale.forecasting.params import ForecasterParams
from elastiscale.forecasting.seasonality import detect_periods


class LastValueModel(GridModel):
    """Forecast = the latest observed bin, at every horizon."""

    label = "last-value"

    def __init__(self) -> None:
        self.last = math.nan

    def fit(self, y: Array, ctx: GridContext) -> None:
        seen = y[~np.isnan(y)]
        if not seen.size:
            raise NotEnoughHistoryError("last-value", 0, 1, ctx.step_s)
        self.last = float(seen[-1])

    def append(self, value: float) -> None:
        if not math.isnan(value):
            self.last = value

    def forecast(self, ks: IntArray) -> Array:
        return np.full(ks.shape, self.last)


PeriodChoice = Literal["detected", "daily", "weekly"] | PositiveFloat


class SeasonalNaiveModel(GridModel):
    """Forecast for bin t + k = the value of the same bin one period earlier.

    The state is one slot per position in the period, indexed by absolute bin number, so a
    slot always holds the newest observed value at that position. A missing bin keeps the
    slot's older value (one period before); a slot never observed forecasts the last value.
    """

    label = "seasonal-naive"

    def __init__(self, period: PeriodChoice) -> None:
        self.period = period
        self.period_bins = 0
        self.step_s = 0.0
        self.note = ""
        self.slots = np.empty(0)
        self.latest = -1  # absolute index of the latest bin
        self.last = math.nan

    def _choose_period(self, y: Array, ctx: GridContext) -> int:
        if self.period == "detected":
            found = detect_periods(y, ctx.step_s)
            if found:
                self.note = f"detected ({found[0].strength:.2f})"
                return found[0].bins
            self.note = "none detected: daily"
            return round(DAY_S / ctx.step_s)
        seconds = {"daily": DAY_S, "weekly": WEEK_S}.get(str(self.period))
        period_s = float(self.period) if seconds is None else seconds
        return max(1, round(period_s / ctx.step_s))

    def fit(self, y: Array, ctx: GridContext) -> None:
        m = self._choose_period(y, ctx)
        if y.size < m + 1:
            what = f"seasonal-naive (period {m} bins)"
            raise NotEnoughHistoryError(what, y.size, m + 1, ctx.step_s)
        self.period_bins = m
        self.step_s = ctx.step_s
        self.slots = np.full(m, np.nan)
        self.latest = ctx.first_bin + y.size - 1
        # Walk the periods oldest first; each observed value overwrites its slot.
        positions = np.arange(ctx.first_bin, ctx.first_bin + y.size) % m
        seen = ~np.isnan(y)
        self.slots[positions[seen]] = y[seen]  # numpy assigns in order: the last write wins
        self.last = float(y[seen][-1])

    def append(self, value: float) -> None:
        self.latest += 1
        if not math.isnan(value):
            self.slots[self.latest % self.period_bins] = value
            self.last = value

    def forecast(self, ks: IntArray) -> Array:
        values = self.slots[(self.latest + ks) % self.period_bins]
        return np.where(np.isnan(values), self.last, values)

    def describe(self) -> dict[str, Detail]:
        out: dict[str, Detail] = {"period_s": self.period_bins * self.step_s}
        if self.note:
            out["period"] = self.note
        return out


class LastValue(Forecaster):
    """Naive forecast: demand stays what it was in the latest bin."""

    name: ClassVar[str] = "last-value"
    uses_fallback: ClassVar[bool] = False

    def new_model(self) -> GridModel:
        return LastValueModel()


class SeasonalNaive(Forecaster):
    """Seasonal-naive forecast: demand repeats what it was one period ago.

    `period` is "detected" (the strongest period found in the history, else daily), "daily",
    "weekly", or a number of seconds.
    """

    name: ClassVar[str] = "seasonal-naive"

    class Params(ForecasterParams):
        history_s: PositiveFloat = Field(8 * DAY_S, description="a week and a day by default")
        period: PeriodChoice = Field("detected", description="detected, daily, weekly or seconds")

        @model_validator(mode="after")
        def _history_holds_a_period(self) -> Self:
            seconds = {"daily": DAY_S, "weekly": WEEK_S}.get(str(self.period))
            if self.period == "detected":
                return self
            period_s = float(self.period) if seconds is None else seconds
            if self.history_s < period_s + self.step_s:
                raise ValueError(
                    f"history_s = {self.history_s:g} cannot hold a period of {period_s:g} s "
                    f"and one more step: set history_s >= {period_s + self.step_s:g}"
                )
            return self

    def new_model(self) -> GridModel:
        assert isinstance(self.params, SeasonalNaive.Params)
        return SeasonalNaiveModel(self.params.period)

    def _new_fallback(self) -> GridModel | None:
        # Without a full period a naive baseline stays naive: the last value, not a smoother.
        return LastValueModel()
