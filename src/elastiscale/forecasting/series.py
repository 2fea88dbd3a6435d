"""Demand series as forecasters see them: checked input, and regular bins of `step_s` seconds.

A forecaster accepts points `(t_s, value)` at any spacing: irregular, gappy, finer or coarser
than its own step. Each point is put in the bin `floor(t_s / step_s)` (bins are aligned to
multiples of the step, so a daily pattern keeps its phase across refits) and a bin's value is
the mean of the rates that fell in it. A bin with no finite value is missing (NaN), never zero.

Rules for bad input, each a one-line `ForecastInputError` naming the index and the value:
- timestamps must be finite and must not decrease (equal timestamps are allowed);
- values are rates (requests/s, tokens/s): NaN means missing, +-inf and negatives are refused.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from elastiscale.errors import ElastiscaleError

Array = npt.NDArray[np.float64]

#: Slack when putting a timestamp in a bin, so that 0.3 / 0.1 lands in bin 3, not 2.
_BIN_EPS = 1e-9


class ForecastInputError(ElastiscaleError, ValueError):
    """A demand series given to a forecaster is malformed (the message names index and value)."""


def check_history(t_s: npt.ArrayLike, values: npt.ArrayLike) -> tuple[Array, Array]:
    """Validate a history and return it as float arrays; NaN values are kept (missing)."""
    t = np.asarray(t_s, dtype=float)
    v = np.asarray(values, dtype=float)
    if t.ndim != 1 or v.ndim != 1 or t.shape != v.shape:
        raise ForecastInputError(
            f"t_s and values must be 1-d and of equal length (got shapes {t.shape} and {v.shape})"
        )
    bad = np.flatnonzero(~np.isfinite(t))
    if bad.size:
        i = int(bad[0])
        raise ForecastInputError(f"t_s[{i}] = {t[i]}: timestamps must be finite seconds")
    back = np.flatnonzero(np.diff(t) < 0)
    if back.size:
        i = int(back[0]) + 1
        raise ForecastInputError(
            f"t_s[{i}] = {t[i]:g} is earlier than t_s[{i - 1}] = {t[i - 1]:g}: "
            "timestamps must not decrease"
        )
    inf = np.flatnonzero(np.isinf(v))
    if inf.size:
        i = int(inf[0])
        raise ForecastInputError(
            f"values[{i}] = {v[i]} at t_s = {t[i]:g} is not a finite rate (NaN marks a missing one)"
        )
    negative = np.flatnonzero(v < 0)
    if negative.size:
        i = int(negative[0])
        raise ForecastInputError(
            f"values[{i}] = {v[i]:g} at t_s = {t[i]:g} is negative: demand is a rate >= 0"
        )
    return t, v


def check_point(t_s: float, value: float | None) -> tuple[float, float]:
    """Validate one point; None and NaN both mean missing and come back as NaN."""
    t = float(t_s)
    if not math.isfinite(t):
        raise ForecastInputError(f"t_s = {t}: timestamps must be finite seconds")
    v = math.nan if value is None else float(value)
    if math.isinf(v):
        raise ForecastInputError(f"value = {v} at t_s = {t:g} is not a finite rate")
    if v < 0:
        raise ForecastInputError(f"value = {v:g} at t_s = {t:g} is negative: demand is a rate >= 0")
    return t, v


def bin_of(t_s: float, step_s: float) -> int:
    """Index of the bin [k * step_s, (k + 1) * step_s) holding `t_s`."""
    return math.floor(t_s / step_s + _BIN_EPS)


def to_bins(t_s: Array, values: Array, step_s: float, max_bins: int) -> tuple[int, Array]:
    """Mean value per bin over the last `max_bins` bins of a checked history.

    Returns (index of the first bin, values); bins without a finite value are NaN. Leading
    missing bins are dropped, so the first bin holds an observation (an all-missing history
    gives an empty array). Worked example with step_s = 60: points at 0 s (2.0), 30 s (4.0) and
    150 s (1.0) give bins 0, 1, 2 = [3.0, NaN, 1.0].
    """
    if t_s.size == 0:
        return 0, np.empty(0)
    index = np.floor(t_s / step_s + _BIN_EPS).astype(np.int64)
    last = int(index[-1])
    seen = ~np.isnan(values) & (index > last - max_bins)
    if not seen.any():
        return last + 1, np.empty(0)
    first = int(index[seen].min())
    rel = index[seen] - first
    size = last - first + 1
    sums = np.bincount(rel, weights=values[seen], minlength=size)
    counts = np.bincount(rel, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return first, means.astype(float)


class BinAccumulator:
    """Online binning of points that arrive one at a time.

    The bin holding the newest point stays open; it closes when a later point or `advance(now_s)`
    reaches its end. Closing returns the values of every newly closed bin in order (NaN for a
    bin that received nothing). A point falling in an already closed bin is late: it is counted
    in `late_points` and otherwise ignored; a point earlier than the previous one is an error.
    """

    def __init__(self, step_s: float, max_gap_bins: int) -> None:
        self.step_s = step_s
        self.max_gap_bins = max_gap_bins
        #: Set by the last `add` or `advance` when time jumped by more than `max_gap_bins`: the
        #: bins in between were skipped, not returned, and the caller's history is obsolete.
        self.gap_reset = False
        self.last_closed: int | None = None
        self.last_t_s: float | None = None
        self.late_points = 0
        self._open: int | None = None
        self._sum = 0.0
        self._count = 0

    def reset(self, last_closed: int | None, last_t_s: float | None) -> None:
        """Start again after bin `last_closed` (the last bin of a fitted history)."""
        self.last_closed = last_closed
        self.last_t_s = last_t_s
        self._open = None
        self._sum = 0.0
        self._count = 0

    def add(self, t_s: float, value: float) -> list[float]:
        """Add a checked point; returns the values of the bins this closes."""
        self.gap_reset = False
        if self.last_t_s is not None and t_s < self.last_t_s:
            raise ForecastInputError(
                f"t_s = {t_s:g} is earlier than the previous point at {self.last_t_s:g}: "
                "timestamps must not decrease"
            )
        self.last_t_s = t_s
        index = bin_of(t_s, self.step_s)
        if self.last_closed is not None and index <= self.last_closed:
            self.late_points += 1
            return []
        closed = self._close_before(index)
        self._open = index
        if not math.isnan(value):
            self._sum += value
            self._count += 1
        return closed

    def advance(self, now_s: float) -> list[float]:
        """Close every bin that ends at or before `now_s`."""
        if self._open is None and self.last_closed is None:
            return []
        return self._close_before(bin_of(now_s, self.step_s))

    def _close_before(self, index: int) -> list[float]:
        """Close every bin before bin `index`."""
        if self._open is None and self.last_closed is None:
            return []
        start = self.last_closed + 1 if self.last_closed is not None else self._open
        assert start is not None
        self.gap_reset = False
        if index <= start:
            return []
        if index - start > self.max_gap_bins:
            self.gap_reset = True
            self.last_closed = index - 1
            self._open = None
            self._sum = 0.0
            self._count = 0
            return []
        out: list[float] = []
        for b in range(start, index):
            if b == self._open:
                out.append(self._sum / self._count if self._count else math.nan)
                self._open = None
                self._sum = 0.0
                self._count = 0
            else:
                out.append(math.nan)
            self.last_closed = b
        return out
