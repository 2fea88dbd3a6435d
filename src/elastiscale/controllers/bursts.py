"""Burst reserve: capacity for the increase demand can make within a component's lead time,
learned from the history's own increases and sized to the pipeline's attainment target.

A component that decides now gets its new replicas one lead time later, so what it must hold on
top of today's rate is the rise demand may make before then. The history says how large such
rises are: for every past sample y[t], the increase to the highest rate of the k bins that
followed, max(y[t+1..t+k]) - y[t]. A fixed quantile of those rises is the wrong size for both
kinds of traffic: on bursty traffic the p90 rise from a quiet level is many times that level
(and buys capacity most of whose hours go unused), while on traffic with rare flash spikes the
p90 rise is small and the spikes, which carry many requests, are missed.

So the reserve r is sized by what the requests need: the smallest r such that the demand left
above "level + r" over the history's windows is at most `1 - attainment_target` of the demand,

    sum_t (rise_t - r * s_t)^+  <=  (1 - target) * sum_t max(y[t+1..t+k])

with s_t the level the rise started from (floored at a tenth of the mean, as the forecasting
module's bands are). Worked numbers: rises 0, 0, 0, 10 from level 10 (relative 0, 0, 0, 1.0),
window peaks 10, 10, 10, 20, target 0.99: the budget is 0.01 x 50 = 0.5 requests/s of
shortfall; r = 0.95 (10 x (1.0 - 0.95) = 0.5), where a p90 of the rises would give 0.7.
Calm traffic gives small rises and a small reserve; flash spikes that carry more than the
allowance raise it.

As persistence's quantiles in demand.py, the rises are conditioned on the level they start
from (pairs within a factor 2 of it, then 4, then all), because bursty traffic at the top of a
burst mostly falls back and from a quiet minute can jump many times over.

How many windows it takes (`min_windows`): a reserve that may leave `1 - target` of the demand
short is a statement about the top `1 - target` of the rises, and a history of fewer than
`1 / (1 - target)` windows (100 at 0.99, 50 minutes of 30 s bins) does not contain that tail:
with 30 windows the rule can only return about the largest rise seen, an extreme of a small
sample that is paid for at every tick. Until the history holds that many windows, the
persistence quantile serves. A level's and a time of day's own pairs then refine it from 30
of them on (`MIN_CALIBRATION`, as the quantiles): they share the whole history's allowance
(the budget is a share of their demand, and the time-of-day buckets split one budget).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
Buckets = npt.NDArray[np.int64]

DAY_S = 86400.0
#: The reserve is conditioned on time of day once the history spans this many days.
TIME_OF_DAY_MIN_DAYS = 2.0
#: Width of the time-of-day buckets the shortfall allowance is shared between.
BUCKET_S = 7200.0


def min_windows(allowance: float, floor: int) -> int:
    """The fewest windows a reserve for a shortfall `allowance` is learnt from: 1 / allowance,
    at least `floor` (module docstring). Worked numbers: 0.01 -> 100; 0.001 -> 1000; 0.05 with
    a floor of 30 -> 30."""
    if allowance <= 0.0:
        return max(floor, 1)
    return max(floor, math.ceil(1.0 / allowance - 1e-9))


def time_of_day_buckets(t_s: Array, centre_s: float) -> tuple[Buckets, int] | None:
    """Each sample's time-of-day bucket (`BUCKET_S` wide) and the bucket of `centre_s`, or None
    when the history spans fewer than `TIME_OF_DAY_MIN_DAYS` (one day of each hour is no
    record). Worked numbers: 2 h buckets; 05:30 is in bucket 2 (04:00 to 06:00) of every day."""
    if t_s.size < 2:
        return None
    span_s = float(t_s[-1] - t_s[0] + t_s[1] - t_s[0])  # the bins cover one more step
    if span_s < TIME_OF_DAY_MIN_DAYS * DAY_S - 1e-6:
        return None
    buckets: Buckets = ((t_s % DAY_S) // BUCKET_S).astype(np.int64)
    return buckets, int((centre_s % DAY_S) // BUCKET_S)


def allocated_reserve(
    rise: Array, weight: Array, bucket: Buckets, current: int, budget: float, min_pairs: int
) -> float | None:
    """The reserve of bucket `current` when one shortfall budget is shared by all buckets at the
    least total reserve, or None with fewer than `min_pairs` pairs in `current`.

    A bucket's reserve r_b is paid over all its pairs (cost r_b x sum of its weights) and
    leaves sum (rise - r_b)^+ x weight short. For a price per request short, each bucket's best
    r_b is the one above which the same share q of its weight lies; the budget then fixes q
    (the largest whose total shortfall fits, by bisection). So a time of day whose rises are
    rare and small pays little, and the hours where bursts happen hold what the budget asks.
    With one bucket this is the single reserve of `shortfall_reserve`.
    Worked numbers: bucket 0 rises [1, 0, 0, 0], bucket 1 rises [1, 1, 1, 1], weights 1,
    budget 1: q = 1/4 leaves bucket 0 at r = 0 (short 1) and bucket 1 at 1 (short 0)."""
    groups = []
    for b in np.unique(bucket):
        sel = bucket == b
        x, w = rise[sel], weight[sel]
        order = np.argsort(-x, kind="stable")
        x, w = x[order], w[order]
        positive = int(np.count_nonzero(x > 0.0))
        groups.append((int(b), x, np.cumsum(w), np.cumsum(w * x), positive))
    mine = next((g for g in groups if g[0] == current), None)
    if mine is None or mine[1].size < min_pairs:
        return None

    def at(q: float) -> tuple[float, dict[int, tuple[float, float]]]:
        """Total shortfall and each bucket's (reserve, shortfall) at share q."""
        total = 0.0
        out: dict[int, tuple[float, float]] = {}
        for b, x, cw, cwx, positive in groups:
            j = min(int(np.searchsorted(cw, q * float(cw[-1]), side="right")), positive)
            r = float(x[j]) if j < positive else 0.0
            short = float(cwx[j - 1] - r * cw[j - 1]) if j > 0 else 0.0
            total += short
            out[b] = (r, short)
        return total, out

    lo, hi = 0.0, 1.0
    total, chosen = at(hi)
    if total <= budget:
        return chosen[current][0]
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if at(mid)[0] <= budget:
            lo = mid
        else:
            hi = mid
    total, chosen = at(lo)
    # The reserves sit on rises; the budget left over goes, exactly, to the buckets whose
    # reserve steps down between lo and hi (the marginal ones), in bucket order.
    slack = budget - total
    stepped = at(hi)[1]
    for b, x, cw, _cwx, _positive in groups:
        r, short = chosen[b]
        if slack <= 0.0 or stepped[b][0] >= r:
            continue
        weights = np.diff(cw, prepend=0.0)
        lower = max(shortfall_reserve(x, weights, short + slack), stepped[b][0])
        spent = float(np.sum(weights * np.maximum(x - lower, 0.0))) - short
        chosen[b] = (lower, short + spent)
        slack -= spent
    return chosen[current][0]


def shortfall_reserve(rise: Array, weight: Array, budget: float) -> float:
    """The smallest r >= 0 with sum(weight * max(rise - r, 0)) <= budget.

    `rise` is relative (per unit of `weight`); the left side falls piecewise linearly in r,
    so r is found exactly between two sorted rises. Worked numbers: rise [1.0, 0, 0],
    weight [10, 10, 10], budget 0.5: 10 x (1.0 - r) = 0.5 gives r = 0.95.
    """
    if rise.size == 0:
        return 0.0
    order = np.argsort(-rise, kind="stable")
    return sorted_shortfall_reserve(rise[order], weight[order], budget)


def sorted_shortfall_reserve(x: Array, w: Array, budget: float) -> float:
    """`shortfall_reserve` of rises `x` already in its order (descending, ties in the order
    of the pairs: a stable sort of -rise), with their weights `w`. A subset, taken by a mask,
    of pairs in that order is in that order too, so the levels of `level_reserves` share one
    sort."""
    if x.size == 0:
        return 0.0
    s = np.cumsum(w * x)
    wsum = np.cumsum(w)
    # Shortfall with r at each sorted rise: the rises above it each miss by (x_i - x_j).
    at = s - x * wsum
    over = np.nonzero(at > budget)[0]
    # With none over, even r = the smallest rise leaves budget unspent: go below it.
    j = x.size if over.size == 0 else int(over[0])
    if j == 0:
        return max(float(x[0]), 0.0)
    r = (float(s[j - 1]) - budget) / float(wsum[j - 1])
    return max(r, 0.0)


def level_reserves(
    before: Array,
    peak_after: Array,
    levels: Array,
    floor: float,
    allowance: float,
    min_pairs: int,
    buckets: tuple[Buckets, int] | None = None,
    min_total: int = 0,
) -> Array | None:
    """Relative reserve per level of `levels` (see the module docstring), or None with fewer
    than max(`min_pairs`, `min_total`) pairs. `before` is each sample's rate, `peak_after` the
    highest rate of the window after it; `allowance` is 1 - attainment target. A level's (and
    a time of day's) own pairs serve from `min_pairs` of them, refining a reserve the whole
    history, of at least `min_total` pairs, holds the tail for (`min_windows`). With `buckets`
    (each pair's time-of-day bucket, and the bucket to size for), the allowance is shared
    between the buckets (`allocated_reserve`) and the reserve is the current bucket's."""
    ok = ~np.isnan(before) & ~np.isnan(peak_after)
    if np.count_nonzero(ok) < max(min_pairs, min_total):
        return None
    before, peak_after = before[ok], peak_after[ok]
    bucket = buckets[0][ok] if buckets is not None else None
    scale = np.maximum(before, max(floor, 1e-12))
    rise = (peak_after - before) / scale
    demand = np.maximum(peak_after, 0.0)

    sorted_pairs: tuple[npt.NDArray[np.intp], Array, Array] | None = None  # order, x, w

    def reserve(chosen: npt.NDArray[np.bool_]) -> float:
        nonlocal sorted_pairs
        budget = allowance * float(demand[chosen].sum())
        if bucket is not None and buckets is not None:
            got = allocated_reserve(
                rise[chosen], scale[chosen], bucket[chosen], buckets[1], budget, min_pairs
            )
            if got is not None:
                return got
        # `shortfall_reserve(rise[chosen], scale[chosen], budget)`, on one sort of all pairs.
        if sorted_pairs is None:
            by_rise = np.argsort(-rise, kind="stable")
            sorted_pairs = (by_rise, rise[by_rise], scale[by_rise])
        by_rise, x, w = sorted_pairs
        kept = chosen[by_rise]
        return sorted_shortfall_reserve(x[kept], w[kept], budget)

    out = np.zeros(levels.size)
    everywhere: float | None = None  # the levels with too few pairs near them share it
    for g, near in enumerate(near_levels(before, levels, min_pairs)):
        if near is not None:
            out[g] = reserve(near)
            continue
        if everywhere is None:
            everywhere = reserve(np.ones(before.size, dtype=bool))
        out[g] = everywhere
    return out


def near_level(before: Array, level: float, min_pairs: int) -> npt.NDArray[np.bool_] | None:
    """The pairs that start within a factor 2 of `level` (4 when fewer than `min_pairs` do),
    None when fewer than `min_pairs` do even then."""
    for factor in (2.0, 4.0):
        near = (before >= level / factor) & (before <= level * factor)
        if np.count_nonzero(near) >= min_pairs:
            return near
    return None


def near_levels(before: Array, levels: Array, min_pairs: int) -> list[npt.NDArray[np.bool_] | None]:
    """`near_level(before, level, min_pairs)` of every level of `levels`, in order: the same
    comparisons, made for all the levels in one (levels x pairs) array per factor instead of
    a few numpy calls per level (a refresh of the quantiles and reserves asks for 11 levels
    at each of 16 horizons)."""
    out: list[npt.NDArray[np.bool_] | None] = [None] * levels.size
    todo = np.arange(levels.size)
    for factor in (2.0, 4.0):
        if todo.size == 0:
            break
        wanted = levels[todo]
        near = (before >= (wanted / factor)[:, None]) & (before <= (wanted * factor)[:, None])
        enough = np.count_nonzero(near, axis=1) >= min_pairs
        for j in np.flatnonzero(enough).tolist():
            out[int(todo[j])] = near[j]
        todo = todo[~enough]
    return out


def window_peaks(y: Array, bins: int) -> list[Array]:
    """For k = 1..bins: max(y[t+1..t+k]) for every t with k bins after it (NaN-ignoring)."""
    peaks: list[Array] = []
    running: Array | None = None
    n = y.size
    for k in range(1, bins + 1):
        if n <= k:
            break
        nxt = y[k:]
        running = nxt.copy() if running is None else np.fmax(running[: n - k], nxt)
        peaks.append(running)
    return peaks
