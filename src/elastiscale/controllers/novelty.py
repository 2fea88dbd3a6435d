"""Novel traffic: ingress well above anything the self-calibration chose its setting on.

A calibration's evidence is a replay of the traffic the policy has seen (calibration.py). A
setting that was cheapest over three calm days says nothing about a level ten times theirs:
on the bursty Alibaba trace, whose fourth day runs at about ten times the rate of the three
before it, the setting chosen on the calm days (`reserve`, which keeps only the forecast in
its scale-down window) held half of what `hpa` at a 0.4 target held in the new day's busy
hours and missed a quarter of their requests, until the next daily calibration.

`NoveltyWatch` keeps two numbers: the highest one-hour mean ingress rate of the history a
calibration was chosen on (`covered_rps`) and the mean of the last hour observed. When the
recent mean exceeds `factor` x the covered level, the traffic is novel: the calibrator falls
back to its safest candidate (the first of `calibration_candidates`) and calibrates again once
the replay's scored half can hold the new traffic. The default factor, 2, is the burst
reserve's own level neighbourhood (bursts.py: rises that start within a factor 2 of a level
count as that level's), so "novel" means a level no learned part of the policy has evidence
for. Traffic that swings by day within what the history holds is not novel, so seasonal
traffic is not affected.

Worked numbers: a history whose busiest hour averaged 1.5 requests/s covers up to 3.0; a last
hour averaging 3.9 is novel; one averaging 2.8 is not.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]

#: The span of the means compared (one hour).
WINDOW_S = 3600.0


def busiest_mean(t_s: Array, rate: Array, window_s: float = WINDOW_S) -> float | None:
    """The highest mean of `rate` (NaN: missing) over `window_s` of consecutive bins (all of
    them when fewer, but at least half a window), counting only windows at least half
    observed; None when no window is.
    Worked numbers: 30 s bins, a window of 120 s (4 bins), rates 1, 1, 3, 3, 1: means 2.0 and
    2.0 of the two full windows, so 2.0."""
    if t_s.size < 2:
        return None
    step_s = float(t_s[1] - t_s[0])
    bins = max(1, round(window_s / step_s))
    if rate.size < bins / 2.0:
        return None
    bins = min(bins, rate.size)
    seen = ~np.isnan(rate)
    sums = np.concatenate([[0.0], np.cumsum(np.where(seen, rate, 0.0))])
    counts = np.concatenate([[0], np.cumsum(seen)])
    total = sums[bins:] - sums[:-bins]
    n = counts[bins:] - counts[:-bins]
    ok = n >= bins / 2.0
    if not ok.any():
        return None
    return float(np.max(total[ok] / n[ok]))


class NoveltyWatch:
    """Whether the recent ingress is novel (see the module docstring)."""

    __slots__ = ("_recent", "_sum", "covered_rps", "factor", "window_s")

    def __init__(self, factor: float | None, window_s: float = WINDOW_S) -> None:
        self.factor = factor
        self.window_s = window_s
        #: The busiest hour of the history the setting in force was chosen on (None: none yet).
        self.covered_rps: float | None = None
        self._recent: deque[tuple[float, float]] = deque()
        self._sum = 0.0

    def cover(self, t_s: Array, rate: Array) -> None:
        """A calibration starts on the history (`t_s`, `rate`): it covers its busiest hour."""
        self.covered_rps = busiest_mean(t_s, rate, self.window_s)

    def observe(self, t_s: float, rate_rps: float) -> None:
        """One observed ingress rate (each data time once; an older or equal one is ignored)."""
        recent = self._recent
        if recent and t_s <= recent[-1][0]:
            return
        if not math.isfinite(rate_rps):
            return
        recent.append((t_s, rate_rps))
        self._sum += rate_rps
        while recent and recent[0][0] <= t_s - self.window_s:
            self._sum -= recent.popleft()[1]

    def recent_rps(self) -> float | None:
        """Mean of the observations of the last window, None until they span half of it."""
        recent = self._recent
        if len(recent) < 2 or recent[-1][0] - recent[0][0] < self.window_s / 2.0:
            return None
        return max(self._sum, 0.0) / len(recent)

    def novel(self) -> bool:
        """The recent mean is above `factor` x the covered level."""
        if self.factor is None or self.covered_rps is None:
            return False
        recent = self.recent_rps()
        return recent is not None and recent > self.factor * self.covered_rps
