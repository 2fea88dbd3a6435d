"""The model layer: one forecasting method on a regular grid of bins, numpy only.

A `GridModel` knows nothing of seconds, gaps or quality: `fit(y)` on one value per bin (NaN =
missing), `append(value)` per new bin, `forecast(ks)` k bins after the latest. The `Forecaster`
(base.py) turns points in seconds into bins for it and serves its forecasts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from elastiscale.decision import Detail

Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DAY_S = 86400.0
WEEK_S = 7 * DAY_S


@dataclass(frozen=True, slots=True)
class GridContext:
    """What a `GridModel` knows about its grid: the step, where the data starts, and the
    horizons (bins ahead) its forecasts are judged at."""

    step_s: float
    first_bin: int  # absolute index of y[0]: bin k covers [k * step_s, (k + 1) * step_s)
    horizons: tuple[int, ...]
    under_weight: float = 3.0


class FitRefusedError(Exception):
    """A model declines this history (too short, no seasonality); the forecaster falls back
    and reports the message as the reason."""


class NotEnoughHistoryError(FitRefusedError):
    """A model cannot be fitted on so little data; the forecaster falls back and says why."""

    def __init__(self, what: str, have_bins: int, need_bins: int, step_s: float) -> None:
        self.have_bins = have_bins
        self.need_bins = need_bins
        super().__init__(
            f"{what} needs {need_bins} observed bins ({_duration(need_bins * step_s)}), "
            f"has {have_bins} ({_duration(have_bins * step_s)})"
        )


def _duration(seconds: float) -> str:
    if seconds >= DAY_S:
        return f"{seconds / DAY_S:.3g} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds:.4g} s"


class GridModel(ABC):
    """One forecasting method on a regular grid; `y` holds one value per bin, NaN = missing."""

    label: str = "model"

    @abstractmethod
    def fit(self, y: Array, ctx: GridContext) -> None:
        """Fit on `y` (y[-1] is the latest bin, y[0] is observed); raise `NotEnoughHistoryError`
        when `y` is too short for this method, `FitRefusedError` when it does not suit it."""

    @abstractmethod
    def append(self, value: float) -> None:
        """The next bin closed with `value` (NaN: missing; the state moves on regardless)."""

    @abstractmethod
    def forecast(self, ks: IntArray) -> Array:
        """Point forecasts for the bins `ks` (>= 1) after the latest one."""

    def describe(self) -> dict[str, Detail]:
        """Fitted parameters worth reporting (smoothing constants, periods)."""
        return {}


def observed(y: Array) -> int:
    """Number of observed (non-NaN) bins."""
    return int(np.count_nonzero(~np.isnan(y)))


def fill_missing(y: Array) -> Array:
    """`y` with NaN replaced by linear interpolation (ends: the nearest value), for methods
    that cannot take gaps while fitting; the state is still run on the gappy series."""
    missing = np.isnan(y)
    if not missing.any():
        return y
    idx = np.arange(y.size)
    return np.interp(idx, idx[~missing], y[~missing])
