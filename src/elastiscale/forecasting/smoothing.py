"""Exponential smoothing without seasonality: EWMA (level) and Holt's damped trend.

The EWMA model and the tuning helpers both use are `ewma.py`'s (the forecasters' fallback model
too, so `base.py` imports it without importing this module).

Both update in O(1) per bin (`append`) and forecast in closed form. Their smoothing constants are
chosen at fit time for the horizons the forecaster serves: each candidate on a small grid is run
over the history as a linear filter (scipy's `lfilter`, so a candidate costs one vectorized pass)
and scored by its mean absolute error at those horizons. Tuning for the horizons that matter,
rather than for one step ahead, is what keeps a 1-minute series with noisy bins from being
chased bin by bin when the question is the demand in 5 or 15 minutes.

Half-lives are given in seconds and converted per step as `ewma.py` says.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import numpy as np
from pydantic import Field, PositiveFloat
from scipy import signal

from elastiscale.decision import Detail
from elastiscale.forecasting.base import Forecaster
from elastiscale.forecasting.ewma import (
    DEFAULT_HALF_LIFE_S,
    HALF_LIFE_GRID_BINS,
    EwmaModel,
    alpha_of,
    forward_fill,
    horizon_mae,
    tuning_bins,
)
from elastiscale.forecasting.grid import (
    Array,
    GridContext,
    GridModel,
    IntArray,
    NotEnoughHistoryError,
    observed,
)
from elastiscale.forecasting.params import ForecasterParams

#: Candidate trend smoothing (beta) and damping (phi) constants of Holt's method.
TREND_GRID = (0.02, 0.1, 0.3)
DAMPING_GRID = (0.8, 0.9, 0.98)
DEFAULT_TREND = 0.1
DEFAULT_DAMPING = 0.9


class HoltModel(GridModel):
    """Level and damped trend: forecast(k) = level + (phi + phi^2 + ... + phi^k) * trend.

    Recursion for an observed bin y (Gardner's damped trend, as in statsmodels):
        level' = alpha * y + (1 - alpha) * (level + phi * trend)
        trend' = beta * (level' - level) + (1 - beta) * phi * trend
    A missing bin moves the state along its own forecast: level' = level + phi * trend,
    trend' = phi * trend.
    """

    label = "holt"

    def __init__(
        self, half_life_s: float | None, trend: float | None, damping: float | None
    ) -> None:
        self.half_life_s = half_life_s
        self.beta = trend
        self.phi = damping
        self.alpha = math.nan
        self.level = math.nan
        self.trend = 0.0

    def fit(self, y: Array, ctx: GridContext) -> None:
        have = observed(y)
        if have < 2:
            raise NotEnoughHistoryError("holt", have, 2, ctx.step_s)
        fixed = self.half_life_s is not None and self.beta is not None and self.phi is not None
        if not fixed and have >= tuning_bins(ctx):
            self.alpha, self.beta, self.phi = self._tune(y, ctx)
        else:
            half_life_s = self.half_life_s if self.half_life_s is not None else DEFAULT_HALF_LIFE_S
            self.alpha = alpha_of(half_life_s / ctx.step_s)
            self.beta = DEFAULT_TREND if self.beta is None else self.beta
            self.phi = DEFAULT_DAMPING if self.phi is None else self.phi
        seen = np.flatnonzero(~np.isnan(y))
        self.level = float(y[seen[0]])
        self.trend = 0.0
        for value in y[seen[0] + 1 :].tolist():
            self.append(value)

    def _tune(self, y: Array, ctx: GridContext) -> tuple[float, float, float]:
        filled = forward_fill(y)
        warmup = min(filled.size // 10, int(4 * HALF_LIFE_GRID_BINS[-1]))

        def loss(alpha: float, beta: float, phi: float) -> float:
            level, trend = holt_filter(filled, alpha, beta, phi)
            forecasts = {k: level + damped_sum(phi, k) * trend for k in ctx.horizons}
            return horizon_mae(y, forecasts, warmup)

        return search_holt(
            loss,
            halves=None if self.half_life_s is None else (self.half_life_s / ctx.step_s,),
            betas=None if self.beta is None else (self.beta,),
            phis=None if self.phi is None else (self.phi,),
        )

    def append(self, value: float) -> None:
        assert self.beta is not None and self.phi is not None
        drift = self.phi * self.trend
        if math.isnan(value):
            self.level += drift
            self.trend = drift
            return
        level = self.alpha * value + (1.0 - self.alpha) * (self.level + drift)
        self.trend = self.beta * (level - self.level) + (1.0 - self.beta) * drift
        self.level = level

    def forecast(self, ks: IntArray) -> Array:
        assert self.phi is not None
        return self.level + damped_sums(self.phi, ks) * self.trend

    def describe(self) -> dict[str, Detail]:
        return {
            "alpha": round(self.alpha, 6),
            "beta": self.beta,
            "phi": self.phi,
        }


def search_holt(
    loss: Callable[[float, float, float], float],
    halves: tuple[float, ...] | None = None,
    betas: tuple[float, ...] | None = None,
    phis: tuple[float, ...] | None = None,
    start: tuple[float, float, float] | None = None,
) -> tuple[float, float, float]:
    """(alpha, beta, phi) minimizing `loss`, one constant at a time over its grid.

    Coordinate descent: alpha over the half-life grid, then beta, then phi, repeated while
    anything changes (two or three sweeps, about 20 evaluations instead of the 81 of the full
    grid). `start`, when given, is scored first and kept unless something beats it.
    """
    alphas = [alpha_of(h) for h in (halves or HALF_LIFE_GRID_BINS)]
    grids = (alphas, list(betas or TREND_GRID), list(phis or DAMPING_GRID))
    seen: dict[tuple[float, float, float], float] = {}

    def score(point: tuple[float, float, float]) -> float:
        if point not in seen:
            seen[point] = loss(*point)
        return seen[point]

    current = (alphas[len(alphas) // 2], DEFAULT_TREND, DEFAULT_DAMPING)
    current = (
        current[0] if len(alphas) > 1 else alphas[0],
        current[1] if len(grids[1]) > 1 else grids[1][0],
        current[2] if len(grids[2]) > 1 else grids[2][0],
    )
    best = min([current] if start is None else [start, current], key=score)
    for _ in range(4):
        before = best
        for axis, grid in enumerate(grids):
            for value in grid:
                point = list(best)
                point[axis] = value
                candidate = (point[0], point[1], point[2])
                if score(candidate) < score(best):
                    best = candidate
        if best == before:
            break
    return best


def damped_sum(phi: float, k: int) -> float:
    """phi + phi^2 + ... + phi^k (k when phi = 1)."""
    if phi == 1.0:
        return float(k)
    return phi * (1.0 - phi**k) / (1.0 - phi)


def damped_sums(phi: float, ks: IntArray) -> Array:
    """`damped_sum` for each k; memoized, since the same few horizons are asked at every bin."""
    key = (phi, ks.tobytes())
    cached = _DAMPED.get(key)
    if cached is None:
        if phi == 1.0:
            cached = ks.astype(float)
        else:
            cached = phi * (1.0 - phi ** ks.astype(float)) / (1.0 - phi)
        if len(_DAMPED) > 4096:
            _DAMPED.clear()
        _DAMPED[key] = cached
    return cached


_DAMPED: dict[tuple[float, bytes], Array] = {}


def holt_filter(y: Array, alpha: float, beta: float, phi: float) -> tuple[Array, Array]:
    """Level and trend of Holt's damped method over a gap-free series, as two linear filters.

    The recursion is linear in the state x = (level, trend): x' = A x + B y with
        A = [[1 - alpha, (1 - alpha) phi], [-alpha beta, phi (1 - alpha beta)]],
        B = [alpha, alpha beta],
    so each output is y through a 2nd-order IIR filter; starting at the steady state of a
    constant y[0] (level = y[0], trend = 0).
    """
    a_matrix = np.array(
        [[1.0 - alpha, (1.0 - alpha) * phi], [-alpha * beta, phi * (1.0 - alpha * beta)]]
    )
    b_vector = np.array([[alpha], [alpha * beta]])
    num, den = signal.ss2tf(a_matrix, b_vector, np.eye(2), np.zeros((2, 1)))
    out = []
    for row in num:
        zi = signal.lfilter_zi(row, den) * y[0]
        out.append(signal.lfilter(row, den, y, zi=zi)[0])
    return out[0], out[1]


# --------------------------------------------------------------------------------------------


class EWMA(Forecaster):
    """Exponentially weighted moving average: a level that follows demand with a half-life."""

    name: ClassVar[str] = "ewma"
    uses_fallback: ClassVar[bool] = False

    class Params(ForecasterParams):
        half_life_s: PositiveFloat | None = Field(
            None, description="half-life of the weights; None: tuned for the served horizons"
        )

    def new_model(self) -> GridModel:
        assert isinstance(self.params, EWMA.Params)
        return EwmaModel(self.params.half_life_s)


class Holt(Forecaster):
    """Holt's linear method with a damped trend: follows ramps without overshooting forever."""

    name: ClassVar[str] = "holt"

    class Params(ForecasterParams):
        half_life_s: PositiveFloat | None = Field(
            None, description="half-life of the level; None: tuned"
        )
        trend_smoothing: float | None = Field(None, gt=0, le=1, description="beta; None: tuned")
        damping: float | None = Field(
            None, gt=0, le=1, description="phi (1 = no damping); None: tuned"
        )

    def new_model(self) -> GridModel:
        assert isinstance(self.params, Holt.Params)
        p = self.params
        return HoltModel(p.half_life_s, p.trend_smoothing, p.damping)
