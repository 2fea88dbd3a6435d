"""ARIMA with Fourier seasonality, for coarse resolutions (5 minutes and up).

Demand = seasonal shape + ARIMA(p, d, q) deviations:
- the shape is a regression of the history on `fourier_terms` sine/cosine pairs of the detected
  (or given) period, plus a constant, fitted by least squares; Fourier terms stand in for a
  seasonal ARIMA, whose state grows with the season (a 1-day season at 15-minute bins is a
  96-lag polynomial; at 1-minute bins one SARIMAX fit on a week of data does not finish);
- the deviations are fitted by statsmodels' `ARIMA` (state-space maximum likelihood, which
  takes gaps as they are).

Between refits the model does not call statsmodels: it runs the Kalman filter of the fitted
state-space form in numpy, one observation at a time (a missing bin is a prediction step only),
and forecasts k bins ahead as Z T^(k-1) a + Z (I + T + ... + T^(k-2)) c plus the seasonal shape
of the target bin.

The fit cost grows quickly as the step shrinks, so `step_s` must be at least 300 s.
"""

from __future__ import annotations

import math
import warnings
from typing import ClassVar, Self

import numpy as np
from pydantic import Field, NonNegativeInt, model_validator

from elastiscale.decision import Detail
from elastiscale.extras import require
from elastiscale.forecasting.base import Forecaster
from elastiscale.forecasting.grid import (
    DAY_S,
    Array,
    GridContext,
    GridModel,
    IntArray,
    NotEnoughHistoryError,
    observed,
)
from elastiscale.forecasting.naive import PeriodChoice
from elastiscale.forecasting.params import ForecasterParams
from elastiscale.forecasting.seasonality import detect_periods

#: Finest resolution accepted, seconds.
MIN_STEP_S = 300.0


def fourier_terms(bins: IntArray, period_bins: int, pairs: int) -> Array:
    """Columns [1, sin(2 pi j b / m), cos(2 pi j b / m) for j = 1..pairs] at absolute bins b."""
    columns = [np.ones(bins.size)]
    phase = 2.0 * np.pi * bins.astype(float) / period_bins
    for j in range(1, pairs + 1):
        columns.append(np.sin(j * phase))
        columns.append(np.cos(j * phase))
    return np.column_stack(columns)


class ArimaModel(GridModel):
    """Fourier regression plus ARIMA errors, filtered incrementally."""

    label = "arima"

    def __init__(self, order: tuple[int, int, int], pairs: int, period: PeriodChoice) -> None:
        self.order = order
        self.pairs = pairs
        self.period = period
        self.period_bins = 0
        self.coef: Array = np.zeros(1)
        self.latest = -1
        self.step_s = 0.0

    def _period(self, y: Array, ctx: GridContext) -> int:
        if self.pairs == 0:
            return 0
        if self.period == "detected":
            found = detect_periods(y, ctx.step_s, max_period_s=7 * DAY_S)
            return found[0].bins if found else 0
        seconds = {"daily": DAY_S, "weekly": 7 * DAY_S}.get(str(self.period))
        m = round((float(self.period) if seconds is None else seconds) / ctx.step_s)
        return m if y.size >= 2 * m else 0

    def fit(self, y: Array, ctx: GridContext) -> None:
        p, d, q = self.order
        need = max(30, 10 * (p + d + q + 1))
        have = observed(y)
        if have < need:
            raise NotEnoughHistoryError(f"arima{self.order}", have, need, ctx.step_s)
        self.step_s = ctx.step_s
        self.period_bins = self._period(y, ctx)
        bins = np.arange(ctx.first_bin, ctx.first_bin + y.size, dtype=np.int64)
        seen = ~np.isnan(y)
        if self.period_bins:
            design = fourier_terms(bins, self.period_bins, self.pairs)
            self.coef = np.asarray(np.linalg.lstsq(design[seen], y[seen])[0], dtype=float)
        else:
            self.coef = np.array([float(np.mean(y[seen]))])
        resid = y - self._shape(bins)
        require("statsmodels", "forecast", "forecaster 'arima'")
        from statsmodels.tsa.arima.model import ARIMA

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter; the filter output is checked
            result = ARIMA(resid, order=self.order, trend="n").fit(cov_type="none")
        fr = result.filter_results
        self.Z = np.asarray(fr.design[:, :, -1], dtype=float)[0]
        self.T = np.asarray(fr.transition[:, :, -1], dtype=float)
        self.c = np.asarray(fr.state_intercept[:, -1], dtype=float)
        selection = np.asarray(fr.selection[:, :, -1], dtype=float)
        self.RQR = selection @ np.asarray(fr.state_cov[:, :, -1], dtype=float) @ selection.T
        self.H = float(fr.obs_cov[0, 0, -1])
        self.d = float(fr.obs_intercept[0, -1])
        self.a = np.asarray(fr.predicted_state[:, -1], dtype=float)  # state for the next bin
        self.P = np.asarray(fr.predicted_state_cov[:, :, -1], dtype=float)
        if not (np.isfinite(self.a).all() and np.isfinite(self.T).all()):
            raise ValueError("the fitted ARIMA state is not finite")
        names, values = result.param_names, result.params
        self.params = {str(k): float(v) for k, v in zip(names, values, strict=True)}
        self.latest = ctx.first_bin + y.size - 1
        self._paths: dict[int, tuple[Array, float]] = {}

    def _shape(self, bins: IntArray) -> Array:
        if not self.period_bins:
            return np.full(bins.size, float(self.coef[0]))
        out: Array = fourier_terms(bins, self.period_bins, self.pairs) @ self.coef
        return out

    def append(self, value: float) -> None:
        self.latest += 1
        if not math.isnan(value):
            resid = value - float(self._shape(np.asarray([self.latest]))[0])
            pz = self.P @ self.Z
            variance = float(self.Z @ pz) + self.H
            if variance > 0.0:
                gain = pz / variance
                self.a = self.a + gain * (resid - float(self.Z @ self.a) - self.d)
                self.P = self.P - np.outer(gain, pz)
        self.a = self.T @ self.a + self.c
        self.P = self.T @ self.P @ self.T.T + self.RQR

    def _path(self, k: int) -> tuple[Array, float]:
        """(Z T^(k-1), Z (I + T + ... + T^(k-2)) c): the k-step forecast is row . a + offset."""
        cached = self._paths.get(k)
        if cached is None:
            power = np.eye(self.T.shape[0])
            drift = np.zeros(self.T.shape[0])
            for _ in range(k - 1):
                drift = self.T @ drift + self.c
                power = self.T @ power
            cached = (self.Z @ power, float(self.Z @ drift))
            self._paths[k] = cached
        return cached

    def forecast(self, ks: IntArray) -> Array:
        deviation = np.array([float(row @ self.a) + off for row, off in map(self._path, ks)])
        return deviation + self.d + self._shape(self.latest + ks)

    def describe(self) -> dict[str, Detail]:
        out: dict[str, Detail] = {"order": str(self.order)}
        out["period_s"] = self.period_bins * self.step_s if self.period_bins else None
        out.update({k: round(v, 6) for k, v in self.params.items()})
        return out


class Arima(Forecaster):
    """ARIMA(p, d, q) errors around a Fourier seasonal shape; for steps of 300 s and more."""

    name: ClassVar[str] = "arima"

    class Params(ForecasterParams):
        step_s: float = Field(900.0, ge=MIN_STEP_S, description="bin width (coarse only)")
        order: tuple[NonNegativeInt, NonNegativeInt, NonNegativeInt] = Field(
            (2, 0, 1), description="(p, d, q) of the deviations"
        )
        fourier_terms: NonNegativeInt = Field(
            4, le=12, description="sine/cosine pairs of the seasonal shape (0: none)"
        )
        period: PeriodChoice = Field("detected", description="detected, daily, weekly or seconds")

        @model_validator(mode="after")
        def _small_order(self) -> Self:
            if sum(self.order) > 6:
                raise ValueError(f"order = {self.order}: p + d + q above 6 is too slow to fit")
            return self

    def new_model(self) -> GridModel:
        assert isinstance(self.params, Arima.Params)
        p = self.params
        return ArimaModel(p.order, p.fourier_terms, p.period)
