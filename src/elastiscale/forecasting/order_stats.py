"""Quantiles of values already sorted, the same bits as `numpy.quantile` (method "linear").

A policy that takes many quantiles of subsets of one sample (persistence's changes near each
level, `controllers/demand.py`) sorts the sample once and reads each subset's order statistics
from it: a boolean mask of a sorted array is sorted. `numpy.quantile` would partition every
subset again and pays some 20 microseconds of Python around each call. The forecast intervals
(`intervals.py`) read the p90 and p99 of a window's errors off one sort the same way.

The arithmetic is numpy's own for method "linear" (Hyndman and Fan's 7th): the virtual index
(n - 1) x q, the two neighbouring order statistics (the largest twice at or past the end), and
numpy's two-sided interpolation, a + (b - a) x g below g = 0.5 and b - (b - a) x (1 - g) from
there, so every result is the double `numpy.quantile` gives (`tests/test_order_stats.py` checks it
against numpy). The one freedom: in a sample holding both 0.0 and -0.0, which of the two numpy's
partition puts first is its own, so the sign of a zero result may differ (never a value).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


def sorted_quantile(values: Array, q: float) -> float:
    """The `q` quantile of `values` (sorted ascending, no NaN, at least one), as
    `float(numpy.quantile(values, q))`. Worked numbers: [1, 2, 10] at q = 0.9: virtual
    index 1.8, so 2 + (10 - 2) x 0.8 = 8.4."""
    n = values.shape[0]
    virtual = (n - 1) * q
    if virtual >= n - 1:  # numpy takes the last value twice, with a weight past 1
        last = float(values[n - 1])
        return _lerp(last, last, virtual + 1.0)
    previous = math.floor(virtual)
    gamma = virtual - previous
    return _lerp(float(values[previous]), float(values[previous + 1]), gamma)


def _lerp(a: float, b: float, t: float) -> float:
    """numpy's `_lerp`: from the nearer end, for the same rounding."""
    diff = b - a
    if t >= 0.5:
        return b - diff * (1 - t)
    return a + diff * t
