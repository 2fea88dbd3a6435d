"""The EWMA model: a level that follows demand, its half-life tuned for the served horizons.

It updates in O(1) per bin (`append`) and forecasts in closed form. Its smoothing constant is
chosen at fit time for the horizons the forecaster serves: each candidate half-life on a small
grid is run over the history as a linear filter (scipy's `lfilter`, one vectorized pass a
candidate) and scored by its mean absolute error at those horizons. The helpers of that tuning
(`alpha_of`, `forward_fill`, `tuning_bins`, `horizon_mae`) serve Holt and Holt-Winters too.

This is also every forecaster's fallback model (`Forecaster.uses_fallback`), so it depends on
nothing but `grid.py`.

Half-lives are given in seconds and converted per step: alpha = 1 - 2 ** (-step_s / half_life_s).
With 60 s bins, a 300 s half-life gives alpha = 1 - 2 ** -0.2 = 0.129.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal

from elastiscale.decision import Detail
from elastiscale.forecasting.grid import (
    Array,
    GridContext,
    GridModel,
    IntArray,
    NotEnoughHistoryError,
)

#: Half-life when there is too little history to tune one.
DEFAULT_HALF_LIFE_S = 300.0
#: Candidate half-lives, in bins (a geometric grid from half a bin to 128 bins).
HALF_LIFE_GRID_BINS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)


def alpha_of(half_life_bins: float) -> float:
    """Smoothing constant whose weights halve every `half_life_bins` bins."""
    return float(1.0 - 2.0 ** (-1.0 / half_life_bins))


def forward_fill(y: Array) -> Array:
    """NaN replaced by the last observed value (y[0] must be observed)."""
    idx = np.where(np.isnan(y), 0, np.arange(y.size))
    np.maximum.accumulate(idx, out=idx)
    return y[idx]


def tuning_bins(ctx: GridContext) -> int:
    """Observed bins needed to tune: enough origins at the longest served horizon."""
    return max(60, 10 * max(ctx.horizons, default=1))


def horizon_mae(y: Array, forecasts: dict[int, Array], warmup: int) -> float:
    """Mean over horizons k of the MAE of `forecasts[k][t]` (made at t) against y[t + k]."""
    total = 0.0
    for k, f in forecasts.items():
        actual = y[warmup + k :]
        made = f[warmup : y.size - k]
        ok = ~np.isnan(actual)
        total += float(np.mean(np.abs(actual[ok] - made[ok]))) if ok.any() else 0.0
    return total / max(1, len(forecasts))


# --------------------------------------------------------------------------------------------


class EwmaModel(GridModel):
    """Level only: forecast = the exponentially weighted mean of the observed bins."""

    label = "ewma"

    def __init__(self, half_life_s: float | None) -> None:
        self.half_life_s = half_life_s
        self.alpha = math.nan
        self.level = math.nan

    def fit(self, y: Array, ctx: GridContext) -> None:
        seen = y[~np.isnan(y)]
        if not seen.size:
            raise NotEnoughHistoryError("ewma", 0, 1, ctx.step_s)
        if self.half_life_s is not None:
            self.alpha = alpha_of(self.half_life_s / ctx.step_s)
        elif seen.size >= tuning_bins(ctx):
            self.alpha = self._tune(y, ctx)
        else:
            self.alpha = alpha_of(DEFAULT_HALF_LIFE_S / ctx.step_s)
        # Skipping a missing bin leaves the level unchanged, so the state is the filter run
        # over the observed bins only.
        a = self.alpha
        levels = signal.lfilter([a], [1.0, a - 1.0], seen, zi=[(1.0 - a) * seen[0]])[0]
        self.level = float(levels[-1])

    def _tune(self, y: Array, ctx: GridContext) -> float:
        filled = forward_fill(y)
        warmup = min(filled.size // 10, int(4 * HALF_LIFE_GRID_BINS[-1]))
        best_alpha, best_loss = math.nan, math.inf
        for half_life in HALF_LIFE_GRID_BINS:
            a = alpha_of(half_life)
            level = signal.lfilter([a], [1.0, a - 1.0], filled, zi=[(1.0 - a) * filled[0]])[0]
            loss = horizon_mae(y, dict.fromkeys(ctx.horizons, level), warmup)
            if loss < best_loss:
                best_alpha, best_loss = a, loss
        return best_alpha

    def append(self, value: float) -> None:
        if not math.isnan(value):
            self.level += self.alpha * (value - self.level)

    def forecast(self, ks: IntArray) -> Array:
        return np.full(ks.shape, self.level)

    def describe(self) -> dict[str, Detail]:
        return {"alpha": round(self.alpha, 6)}
