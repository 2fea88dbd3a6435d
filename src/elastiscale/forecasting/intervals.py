"""Upper quantiles (p90, p99) of a forecast from the errors the forecaster actually made.

No distributional assumption: at each horizon the upper quantiles are the empirical 90th and
99th percentiles of the forecaster's own recent errors at that horizon (out-of-sample: the
tracker only holds forecasts made before their actual was known), added to the point forecast.

Errors are scaled by the level of the forecast (`relative`, the default) or used as they are
(`absolute`). Demand noise grows with demand (a busy hour varies more in req/s than a quiet
one), so relative bands widen at peaks and narrow at night instead of being one width for both.
The scale has a floor of 10% of the history's mean demand so that a near-zero forecast (a quiet
night) does not turn a small absolute error into an enormous relative one.

Before a horizon has `MIN_CALIBRATION` resolved errors, the quantiles come from the history's
own changes over that horizon (the errors a last-value forecast would have made): a
conservative prior, since a fitted model rarely does worse. With less than that (a handful of
points) the bands are `NO_EVIDENCE_WIDTH` times the forecast's scale above it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import numpy as np
import numpy.typing as npt

from elastiscale.forecasting.order_stats import sorted_quantile
from elastiscale.forecasting.quality import ErrorTracker

Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

IntervalMode = Literal["relative", "absolute"]

#: Resolved errors needed before a horizon's own errors replace the prior.
MIN_CALIBRATION = 30
#: Relative floor of the scale: a fraction of the history's mean demand.
FLOOR_FRACTION = 0.1
#: (p90, p99) distance above the forecast, in units of its scale, when nothing is known.
NO_EVIDENCE_WIDTH = (0.5, 1.0)


class Intervals:
    """Per-horizon error quantiles, refreshed from an `ErrorTracker` as errors accumulate."""

    def __init__(self, mode: IntervalMode, window_bins: int) -> None:
        self.mode: IntervalMode = mode
        self.floor = 1e-12
        self.level = 0.0
        # Recomputing a percentile over a day of errors at every bin would cost more than the
        # forecast itself; refreshing every 1/24 of the window (an hour of a day) is plenty.
        self._refresh_every = max(1, window_bins // 24)
        self._prior: dict[int, tuple[float, float]] = {}
        #: horizon -> (q90, q99, the resolved count at which they are refreshed)
        self._cache: dict[int, tuple[float, float, int]] = {}

    def prepare(self, y: Array, ks: Iterable[int]) -> None:
        """Set the floor and the priors from a history (NaN = missing); clear the cache."""
        seen = y[~np.isnan(y)]
        mean = float(seen.mean()) if seen.size else 0.0
        self.level = mean
        self.floor = max(FLOOR_FRACTION * mean, 1e-12)
        self._prior.clear()
        self._cache.clear()
        for k in ks:
            self.add_prior(y, k)

    def add_prior(self, y: Array, k: int) -> None:
        """The prior for horizon `k`: quantiles of the history's own k-bin changes."""
        if y.size <= k:
            return
        before, after = y[:-k], y[k:]
        ok = ~np.isnan(before) & ~np.isnan(after)
        if np.count_nonzero(ok) < MIN_CALIBRATION:
            return
        change = after[ok] - before[ok]
        scaled = change / self._scale(before[ok])
        q90, q99 = np.quantile(scaled, [0.9, 0.99])
        self._prior[k] = (float(q90), float(q99))

    def _scale(self, level: Array) -> Array:
        if self.mode == "absolute":
            return np.ones_like(level)
        return np.maximum(level, self.floor)

    def quantiles(self, k: int, tracker: ErrorTracker) -> tuple[float, float]:
        """(q90, q99) of the scaled error at horizon `k`, both >= 0 and ordered."""
        done = tracker.resolved(k)
        cached = self._cache.get(k)
        if cached is not None and done < cached[2]:
            return cached[0], cached[1]
        rows = tracker.window_view(k)  # read here only, before the tracker changes
        if rows.shape[0] >= MIN_CALIBRATION:
            scaled = np.sort((rows[:, 0] - rows[:, 1]) / self._scale(rows[:, 1]))
            q90, q99 = sorted_quantile(scaled, 0.9), sorted_quantile(scaled, 0.99)
        elif k in self._prior:
            q90, q99 = self._prior[k]
        elif self.mode == "relative":
            q90, q99 = NO_EVIDENCE_WIDTH
        else:  # in demand units: the widths times the history's mean demand
            q90, q99 = (w * self.level for w in NO_EVIDENCE_WIDTH)
        q90 = max(q90, 0.0)
        q99 = max(q99, q90)
        # Refresh after a tenth more errors while they are few, then every `refresh_every`.
        due = max(1, min(self._refresh_every, int(rows.shape[0]) // 10))
        self._cache[k] = (q90, q99, done + due)
        return q90, q99

    def bands(self, ks: IntArray, mean: Array, tracker: ErrorTracker) -> tuple[Array, Array]:
        """(p90, p99) above the point forecasts `mean` at horizons `ks` (bins)."""
        pairs = [self.quantiles(int(k), tracker) for k in ks.tolist()]
        q90 = np.array([q[0] for q in pairs], dtype=float)
        q99 = np.array([q[1] for q in pairs], dtype=float)
        scale = self._scale(mean)
        return mean + q90 * scale, mean + q99 * scale


def horizon_bins(horizon_s: float, step_s: float) -> int:
    """Bins ahead for a horizon: the bin ending at or after `horizon_s` (at least 1).

    With 60 s bins: 60 s -> 1, 90 s -> 2, 300 s -> 5.
    """
    return max(1, math.ceil(horizon_s / step_s - 1e-9))
