"""Forecast quality: the asymmetric error, and an online tracker of errors per horizon.

Under-forecasting costs more than over-forecasting: too few replicas miss the latency SLO, too
many only cost money. The asymmetric error weighs a shortfall `under_weight` times as much as
an excess, and divides by the actual demand so that one threshold fits every component:

    asymmetric_error = sum(w_under * max(actual - forecast, 0) + w_over * max(forecast - actual, 0))
                       / sum(actual)
    with w_under = 2 r / (r + 1), w_over = 2 / (r + 1), r = under_weight.

The weights add up to 2, so with r = 1 it is the weighted absolute percentage error (WAPE).
Worked example with r = 3 (w_under = 1.5, w_over = 0.5), actual demand 10 and 10 req/s:
forecasting 8 and 8 scores 1.5 * 4 / 20 = 0.30; forecasting 12 and 12 scores 0.5 * 4 / 20 = 0.10.

The tracker works on the forecaster's grid: at every closed bin the forecaster issues its
forecast for each tracked horizon (k bins ahead); when bin `origin + k` closes, the forecast is
compared with what happened. Only the last `window_bins` resolved forecasts of each horizon are
kept, so the figures describe recent quality. A policy reads them (`HorizonQuality`) to lean on
reactive control when the forecast is poor, and copies `details()` into its decision records.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from elastiscale.decision import Detail

Array = npt.NDArray[np.float64]

#: Below this many resolved forecasts a horizon's figures are not reported (None).
MIN_ERRORS = 10


def error_weights(under_weight: float) -> tuple[float, float]:
    """(w_under, w_over) for a shortfall-to-excess cost ratio; they add up to 2."""
    if not under_weight > 0:
        raise ValueError(f"under_weight = {under_weight}, must be > 0")
    return 2.0 * under_weight / (under_weight + 1.0), 2.0 / (under_weight + 1.0)


def asymmetric_error(
    actual: npt.ArrayLike, forecast: npt.ArrayLike, under_weight: float = 3.0
) -> float | None:
    """The asymmetric error of `forecast` against `actual` (see the module docstring).

    Pairs with a NaN on either side are skipped. None when nothing is left, or when the actual
    demand sums to zero while the forecast did not (a relative error is undefined there).
    """
    a = np.asarray(actual, dtype=float)
    f = np.asarray(forecast, dtype=float)
    ok = np.isfinite(a) & np.isfinite(f)
    if not ok.any():
        return None
    a, f = a[ok], f[ok]
    w_under, w_over = error_weights(under_weight)
    cost = float(np.sum(w_under * np.maximum(a - f, 0.0) + w_over * np.maximum(f - a, 0.0)))
    total = float(np.sum(a))
    if total <= 0.0:
        return 0.0 if cost == 0.0 else None
    return cost / total


@dataclass(frozen=True, slots=True)
class HorizonQuality:
    """Recent quality of a forecaster at one horizon, over its last `errors` resolved forecasts.

    Rates are in the unit of the series (requests/s or tokens/s); coverages are fractions.
    `asymmetric_error` is None when the actual demand in the window was zero.
    """

    horizon_s: float
    errors: int
    mean_actual: float
    mae: float
    asymmetric_error: float | None
    under_fraction: float
    p90_coverage: float
    p99_coverage: float

    def details(self, prefix: str = "forecast") -> dict[str, Detail]:
        """Flat key/values for a `Proposal`'s details, e.g. `forecast_300s_asym_err`."""
        head = f"{prefix}_{self.horizon_s:g}s"
        return {
            f"{head}_errors": self.errors,
            f"{head}_mae": round(self.mae, 6),
            f"{head}_asym_err": None
            if self.asymmetric_error is None
            else round(self.asymmetric_error, 4),
            f"{head}_p90_coverage": round(self.p90_coverage, 4),
        }


Row = tuple[float, float, float, float]


def _terms(row: Row) -> tuple[float, float, float, float, float, float, float]:
    """A row's share of the running sums: actual, |error|, shortfall, excess, is-short,
    p90 hit, p99 hit."""
    actual, mean, hi90, hi99 = row
    diff = actual - mean
    return (
        actual,
        abs(diff),
        diff if diff > 0.0 else 0.0,
        -diff if diff < 0.0 else 0.0,
        1.0 if diff > 0.0 else 0.0,
        1.0 if actual <= hi90 else 0.0,
        1.0 if actual <= hi99 else 0.0,
    )


class _Ring:
    """The last `capacity` rows of (actual, mean, p90, p99), oldest overwritten first, with
    running sums so that the window's errors cost O(1) to read at every bin.

    Plain Python floats: a row is pushed at every bin for every tracked horizon of every model,
    where numpy's per-call cost would dominate. The sums are recomputed from the rows whenever
    the ring wraps, so rounding cannot build up. Once `rows()` has been read, the array it made
    is kept and only the rows pushed since are written into it at the next read.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.data: list[Row] = []
        self.pos = 0
        self.total = 0
        self.sums = [0.0] * 7
        self._array: Array | None = None  # the rows at the last `rows()`
        self._written: list[int] = []  # positions pushed since then

    @property
    def size(self) -> int:
        return len(self.data)

    def push(self, row: Row) -> None:
        if self._array is not None:
            self._written.append(self.pos)
            if len(self._written) > self.capacity:
                self._array, self._written = None, []
        # `_terms(row)` added to the sums (less the overwritten row's), written out: the same
        # float operations in the same order, without building the lists per push.
        actual, mean, hi90, hi99 = row
        diff = actual - mean
        sums = self.sums
        if len(self.data) < self.capacity:
            self.data.append(row)
            sums[0] = sums[0] + actual
            sums[1] = sums[1] + abs(diff)
            sums[2] = sums[2] + (diff if diff > 0.0 else 0.0)
            sums[3] = sums[3] + (-diff if diff < 0.0 else 0.0)
            sums[4] = sums[4] + (1.0 if diff > 0.0 else 0.0)
            sums[5] = sums[5] + (1.0 if actual <= hi90 else 0.0)
            sums[6] = sums[6] + (1.0 if actual <= hi99 else 0.0)
        else:
            o = _terms(self.data[self.pos])
            self.data[self.pos] = row
            sums[0] = sums[0] + actual - o[0]
            sums[1] = sums[1] + abs(diff) - o[1]
            sums[2] = sums[2] + (diff if diff > 0.0 else 0.0) - o[2]
            sums[3] = sums[3] + (-diff if diff < 0.0 else 0.0) - o[3]
            sums[4] = sums[4] + (1.0 if diff > 0.0 else 0.0) - o[4]
            sums[5] = sums[5] + (1.0 if actual <= hi90 else 0.0) - o[5]
            sums[6] = sums[6] + (1.0 if actual <= hi99 else 0.0) - o[6]
        self.pos = (self.pos + 1) % self.capacity
        self.total += 1
        if self.pos == 0:
            self.sums = [sum(column) for column in zip(*map(_terms, self.data), strict=True)]

    def rows(self, copy: bool = True) -> Array:
        """The rows as an (n, 4) array, in ring order (a copy unless `copy` is False: then
        the array kept, valid until the next push)."""
        n = len(self.data)
        kept = self._array
        if kept is None:
            flat = itertools.chain.from_iterable(self.data)
            kept = np.fromiter(flat, dtype=float, count=4 * n).reshape(-1, 4)
        elif self._written:
            if kept.shape[0] < n:
                kept = np.concatenate([kept, np.empty((n - kept.shape[0], 4))])
            where = list(dict.fromkeys(self._written))
            kept[where] = [self.data[i] for i in where]
        self._array, self._written = kept, []
        return kept.copy() if copy else kept


def _floats(values: Sequence[float] | Array) -> list[float]:
    """`[float(v) for v in values]`: a numpy array's values as Python floats (`tolist` of its
    float64 cast: the same doubles) in one call."""
    if isinstance(values, np.ndarray):
        got: list[float] = values.astype(np.float64, copy=False).tolist()
        return got
    return [float(v) for v in values]


class ErrorTracker:
    """Rolling errors per horizon (in bins) of the forecasts one model issued at every bin."""

    def __init__(self, window_bins: int, under_weight: float = 3.0) -> None:
        if window_bins < 1:
            raise ValueError(f"window_bins = {window_bins}, must be >= 1")
        self.window_bins = window_bins
        self.under_weight = under_weight
        self._w_under, self._w_over = error_weights(under_weight)
        self._pending: dict[int, deque[tuple[int, float, float, float]]] = {}
        self._rings: dict[int, _Ring] = {}

    @property
    def horizons(self) -> tuple[int, ...]:
        return tuple(self._rings)

    def tracks(self, k: int) -> bool:
        """Whether horizon `k` is tracked."""
        return k in self._rings

    def track(self, k: int) -> None:
        """Start tracking horizon `k` (bins ahead); no effect if already tracked."""
        if k < 1:
            raise ValueError(f"k = {k}, must be >= 1")
        if k not in self._rings:
            self._rings[k] = _Ring(self.window_bins)
            self._pending[k] = deque()

    def clear(self) -> None:
        """Forget every issued and resolved forecast; keep the tracked horizons."""
        for k in self._rings:
            self._rings[k] = _Ring(self.window_bins)
            self._pending[k] = deque()

    def issue(
        self,
        origin: int,
        ks: Sequence[int],
        mean: Sequence[float] | Array,
        p90: Sequence[float] | Array | None = None,
        p99: Sequence[float] | Array | None = None,
    ) -> None:
        """Record the forecasts made with data up to bin `origin` for bins `origin + k`."""
        # The values as Python floats in one call each: `float(mean[j])` of every j, the same
        # doubles, without numpy's cost per element.
        means = _floats(mean)
        his90 = None if p90 is None else _floats(p90)
        his99 = None if p99 is None else _floats(p99)
        nan = math.nan
        pendings = self._pending
        for j, k in enumerate(ks):
            pending = pendings.get(k)
            if pending is None:
                continue
            hi90 = nan if his90 is None else his90[j]
            hi99 = nan if his99 is None else his99[j]
            pending.append((origin + k, means[j], hi90, hi99))

    def resolve(self, index: int, actual: float) -> None:
        """Bin `index` closed with `actual` (NaN: missing, the forecasts for it are dropped)."""
        missing = math.isnan(actual)
        for k, pending in self._pending.items():
            while pending and pending[0][0] < index:
                pending.popleft()
            if pending and pending[0][0] == index:
                _, mean, hi90, hi99 = pending.popleft()
                if not missing and not math.isnan(mean):
                    self._rings[k].push((actual, mean, hi90, hi99))

    def resolved(self, k: int) -> int:
        """How many forecasts of horizon `k` were ever resolved (grows by one per bin)."""
        ring = self._rings.get(k)
        return 0 if ring is None else ring.total

    def window(self, k: int) -> Array:
        """Rows (actual, mean, p90, p99) of the resolved forecasts in the window, unordered."""
        ring = self._rings.get(k)
        return np.empty((0, 4)) if ring is None else ring.rows()

    def window_view(self, k: int) -> Array:
        """`window(k)` without the copy, for a caller that only reads it before the next push
        (the bands' refresh): the ring's own array."""
        ring = self._rings.get(k)
        return np.empty((0, 4)) if ring is None else ring.rows(copy=False)

    def asymmetric_error(self, k: int) -> float | None:
        """The horizon's asymmetric error over the window (None below `MIN_ERRORS`)."""
        ring = self._rings.get(k)
        if ring is None or len(ring.data) < MIN_ERRORS:  # ring.size, without the property
            return None
        sums = ring.sums
        actual = sums[0]
        cost = self._w_under * sums[2] + self._w_over * sums[3]
        if actual <= 0.0:
            return 0.0 if cost <= 0.0 else None
        return float(cost / actual)

    def summary(self, k: int, step_s: float) -> HorizonQuality | None:
        """Quality of horizon `k` over the window, or None below `MIN_ERRORS` forecasts."""
        ring = self._rings.get(k)
        if ring is None or ring.size < MIN_ERRORS:
            return None
        n = ring.size
        actual, abs_error, _, _, under_count, hits90, hits99 = (float(x) for x in ring.sums)
        return HorizonQuality(
            horizon_s=k * step_s,
            errors=n,
            mean_actual=actual / n,
            mae=abs_error / n,
            asymmetric_error=self.asymmetric_error(k),
            under_fraction=under_count / n,
            p90_coverage=hits90 / n,
            p99_coverage=hits99 / n,
        )
