"""Seasonality detection: which periods (hourly, daily, weekly, or another) a demand series has.

Candidates come from the calendar (1 h, 1 d, 7 d) and from the periodogram's strongest peaks
(kept only at a local peak of the autocorrelation, with a trough half a period before it).
Each candidate period m is scored by the autocorrelation at lag m of the series minus its
centered m-bin moving average. The moving average is the trend (a full period averages the
cycle out), so growth over days or a quiet weekend does not pass for a cycle, and the score
reads as the share of the de-trended variance that repeats every m bins: a daily sine wave of
variance 1 in noise of variance 1 scores about 0.5. A candidate is kept when it scores at least
`min_strength` (0.2 by default), stands clear of what white noise gives over as many pairs
(3 standard errors for a calendar period, 4 for a periodogram peak, which is the best of a
search), and the series spans at least three periods of it (the moving average uses one, and
the correlation needs a full period of pairs after that).

Worked example: the NASA July 1995 trace at 1-minute bins scores about 0.5 at one day; the
same series shuffled scores about 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from elastiscale.forecasting.grid import DAY_S, WEEK_S, fill_missing

Array = npt.NDArray[np.float64]

#: Calendar periods tried first, seconds.
CALENDAR_S = (3600.0, DAY_S, WEEK_S)
#: Default minimum score of a kept period.
MIN_STRENGTH = 0.2
#: A periodogram peak within this fraction of a calendar period is that calendar period.
SNAP_FRACTION = 0.05
#: Periodogram peaks examined.
PEAKS = 3
#: Periods of history needed to detect a period.
CYCLES = 3
#: How far above white noise a period's autocorrelation must stand, in standard errors: a
#: calendar period is one guess; a periodogram peak is the best of many, so it needs more.
CALENDAR_SIGMAS = 3.0
SEARCH_SIGMAS = 4.0


@dataclass(frozen=True, slots=True)
class SeasonalPeriod:
    """A detected period: its length, in seconds and in bins, and its strength (0..1)."""

    period_s: float
    bins: int
    strength: float
    source: str  # "calendar" or "periodogram"


def _moving_average(y: Array, m: int) -> Array:
    """Means of every m consecutive values (the 'valid' part: y.size - m + 1 of them)."""
    sums = np.cumsum(np.concatenate([[0.0], y]))
    out: Array = (sums[m:] - sums[:-m]) / m
    return out


def _residual(y: Array, m: int) -> Array | None:
    """y minus its centered m-bin moving average, or None when too short for lag m."""
    if m < 2 or y.size < CYCLES * m:
        return None
    trend = _moving_average(y, m)  # trend[i] averages y[i : i + m]
    start = m // 2
    resid: Array = y[start : start + trend.size] - trend
    centered: Array = resid - resid.mean()
    return centered


def _acf(resid: Array) -> Array:
    """Autocorrelation of a zero-mean series at every lag, each lag averaged over its own pairs
    (so lag m of a 2m-long series is not halved for having half the pairs)."""
    n = resid.size
    spectrum = np.fft.rfft(resid, 2 * n)
    sums = np.fft.irfft(spectrum * np.conj(spectrum))[:n]
    var = sums[0] / n
    if var <= 0.0:
        return np.zeros(n)
    return np.asarray(sums / np.arange(n, 0, -1) / var, dtype=float)


def _strength(y: Array, m: int, sigmas: float) -> float:
    """Autocorrelation at lag m of y minus its centered m-bin moving average; NaN unless it
    stands `sigmas` standard errors (1 / sqrt(pairs) for white noise) clear of zero."""
    resid = _residual(y, m)
    if resid is None or resid.size <= m:
        return float("nan")
    score = float(_acf(resid)[m])
    return score if score >= sigmas / math.sqrt(resid.size - m) else float("nan")


def _refine(y: Array, lag: int, width: float, max_lag: int) -> int | None:
    """The lag of the autocorrelation peak within `width` (a fraction) of `lag`, or None when
    the correlation only rises towards the edge of that window (leakage from a neighbouring
    period) or has no trough half a period earlier."""
    resid = _residual(y, lag)
    if resid is None:
        return None
    acf = _acf(resid)
    lo = max(2, math.floor(lag * (1.0 - width)))
    hi = min(resid.size - 2, max_lag + 1, math.ceil(lag * (1.0 + width)) + 1)
    if hi - lo < 3:
        return None
    best = lo + int(np.argmax(acf[lo:hi]))
    if not lo < best < hi - 1:
        return None
    # A cycle has a trough half way: without one, the correlation is a slow drift's.
    return best if acf[best // 2] < acf[best] - MIN_STRENGTH else None


def _harmonic(a: int, b: int) -> bool:
    """Whether a is within 15% of b or of a whole multiple or fraction of it."""
    ratio = a / b if a >= b else b / a
    return abs(ratio - round(ratio)) <= 0.15 * round(ratio)


def _periodogram_lags(y: Array, max_lag: int) -> list[tuple[int, float]]:
    """(lag in bins, relative uncertainty) of the strongest periodogram peaks, longest first.

    A peak at frequency index f of an n-long series means a period of about n / f bins, give
    or take n / f / f (half a frequency step either way): 1/3 of the lag at f = 3, 10% at 10.
    """
    trend = _moving_average(y, max_lag)
    start = max_lag // 2
    z = y[start : start + trend.size] - trend
    z = z - z.mean()
    power = np.abs(np.fft.rfft(z)) ** 2
    n = z.size
    freqs = np.arange(power.size)
    usable = (freqs >= max(1, n // max_lag)) & (freqs <= n // 4)
    if not usable.any():
        return []
    candidates = freqs[usable]
    order = np.argsort(power[usable])[::-1][:PEAKS]
    peaks = {round(n / candidates[i]): max(0.1, 1.0 / float(candidates[i])) for i in order}
    return sorted(peaks.items(), reverse=True)


def detect_periods(
    y: npt.ArrayLike,
    step_s: float,
    *,
    max_period_s: float = WEEK_S,
    min_strength: float = MIN_STRENGTH,
) -> list[SeasonalPeriod]:
    """Seasonal periods of `y` (one value per `step_s` bin, NaN = missing), strongest first.

    A constant series, or one shorter than three periods of every candidate, has none.
    """
    values = np.asarray(y, dtype=float)
    if values.size == 0 or np.isnan(values).all():
        return []
    filled = fill_missing(values)
    if float(np.ptp(filled)) == 0.0:
        return []
    max_bins = min(int(max_period_s // step_s), filled.size // CYCLES)
    found: dict[int, SeasonalPeriod] = {}
    calendar = [round(p / step_s) for p in CALENDAR_S if 2 <= round(p / step_s) <= max_bins]
    for m in calendar:
        score = _strength(filled, m, CALENDAR_SIGMAS)
        if score >= min_strength:
            found[m] = SeasonalPeriod(m * step_s, m, score, "calendar")
    if max_bins >= 4:
        for peak, width in _periodogram_lags(filled, max_bins):
            lag = _refine(filled, peak, width, max_bins) if 2 <= peak <= max_bins else None
            if lag is None or not 2 <= lag <= max_bins or lag in found:
                continue
            if any(abs(lag - m) <= SNAP_FRACTION * m for m in calendar):
                continue
            if any(_harmonic(lag, m) for m in found):
                continue  # a multiple or a fraction of a kept period adds nothing to it
            score = _strength(filled, lag, SEARCH_SIGMAS)
            if score >= min_strength:
                found[lag] = SeasonalPeriod(lag * step_s, lag, score, "periodogram")
    return sorted(found.values(), key=lambda p: p.strength, reverse=True)
