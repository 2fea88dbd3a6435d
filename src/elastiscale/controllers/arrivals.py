"""How bursty a component's arrivals are, measured from the windowed rates the policy reads.

Erlang-C sizing (queueing.py) assumes Poisson arrivals inside the rate window. Arrivals that
come in batches (an agent's parallel tool calls, a client retrying a page, a cron fleet) queue
far longer at the same mean rate: heavy-traffic theory for a G/G/c queue (Kingman; Allen and
Cunneen for many servers) scales the queueing wait by `(c_a^2 + c_s^2) / 2`, where `c_a^2` is
the squared coefficient of variation of the inter-arrival times (1 for Poisson) and `c_s^2`
that of the service times. For batch arrivals of mean size B the scaled wait is the time the
spare capacity takes to clear a batch, which is what a burst inside a minute costs.

`c_a^2` is measured here as the index of dispersion of the arrival counts (their variance over
their mean; 1 for Poisson, about `E[B^2] / E[B]` for batches of size B), the quantity it tends
to over counting intervals longer than the gaps between arrivals. The source's rate is a mean
over `window_s` (60 s), read every tick (15 s): two consecutive readings `delta_s` apart share
all but `min(delta_s, window_s)` seconds at each end, so with counts independent between
intervals

    Var(window_s x (r_t - r_{t - delta})) = 2 x I x mean rate x min(delta_s, window_s)

and the index I over `min(delta_s, window_s)` follows from the squared changes of the rate
between ticks, without a finer metric than the one every source already gives. Slow swings of
the level (a diurnal curve) add `(slope x delta)^2`, negligible at a tick's spacing; swings
inside a minute count, as they should: they are what a queue sees.

Kept as exponentially decayed sums (`half_life_s`), so a trace whose bursts come and go is
followed within the hour; nothing is reported until `min_pairs` pairs of readings were seen.
numpy's or statsmodels' dispersion tests need the counts themselves, which a rate source does
not give, hence these few lines.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field

#: Pairs of readings further apart than this many of the tick spacing seen so far are not
#: consecutive (a gap in the data): they are skipped, not read as one long change.
MAX_GAP_TICKS = 2.5


@dataclass(slots=True)
class RatePairs:
    """Consecutive readings of one windowed rate, each pair turned into one estimate of the
    index of dispersion over the readings' spacing (the module docstring's formula)."""

    window_s: float
    _last: tuple[float, float] | None = None
    _spacing_s: float | None = None

    def take(self, at_s: float, rate_rps: float | None) -> tuple[float, float] | None:
        """The reading at `at_s` -> (the pair's squared change scaled as the module docstring
        says, its mean rate; their ratio is the pair's index estimate), or None where it makes
        no pair (the first reading, a gap, a missing one, no traffic)."""
        if rate_rps is None or not math.isfinite(rate_rps) or rate_rps < 0.0:
            self._last = None
            return None
        last = self._last
        self._last = (at_s, rate_rps)
        if last is None or at_s <= last[0]:
            return None
        delta_s = at_s - last[0]
        if self._spacing_s is None or delta_s < self._spacing_s:
            self._spacing_s = delta_s
        if delta_s > MAX_GAP_TICKS * self._spacing_s:
            return None
        mean_rps = 0.5 * (rate_rps + last[1])
        if mean_rps <= 0.0:
            return None
        apart_s = min(delta_s, self.window_s)
        change = rate_rps - last[1]
        return self.window_s**2 * change * change / (2.0 * apart_s), mean_rps


@dataclass(slots=True)
class ArrivalVariability:
    """The index of dispersion of one component's arrivals (see the module docstring)."""

    window_s: float
    half_life_s: float = 3600.0
    min_pairs: int = 20
    _pairs_of: RatePairs = field(init=False)
    _squares: float = 0.0  # decayed sum of window_s^2 x change^2 / (2 x overlap-free seconds)
    _rates: float = 0.0  # decayed sum of the pairs' mean rates
    _pairs: int = 0
    _at_s: float | None = None

    def __post_init__(self) -> None:
        self._pairs_of = RatePairs(self.window_s)

    def update(self, at_s: float, rate_rps: float | None) -> None:
        """One reading of the component's windowed arrival rate at `at_s` (None: missing,
        which breaks the pair rather than reading as zero)."""
        pair = self._pairs_of.take(at_s, rate_rps)
        if pair is None:
            return
        squares, mean_rps = pair
        self._decay(at_s)
        self._squares += squares
        self._rates += mean_rps
        self._pairs += 1

    def _decay(self, at_s: float) -> None:
        if self._at_s is not None and at_s > self._at_s:
            keep = 0.5 ** ((at_s - self._at_s) / self.half_life_s)
            self._squares *= keep
            self._rates *= keep
        self._at_s = at_s

    @property
    def dispersion(self) -> float | None:
        """Var / mean of the arrival counts (1 for Poisson), or None before `min_pairs`."""
        if self._pairs < self.min_pairs or self._rates <= 0.0:
            return None
        return self._squares / self._rates

    def wait_factor(self, service_scv: float = 1.0) -> float:
        """`wait_factor` of the measured dispersion."""
        return wait_factor(self.dispersion, service_scv)


def wait_factor(dispersion: float | None, service_scv: float = 1.0) -> float:
    """How much longer than Erlang C's the queueing wait is: `(c_a^2 + c_s^2) / 2` with `c_a^2`
    the arrivals' dispersion, never below 1 (Poisson: the Erlang-C sizing as is), 1 while it is
    not measured (None)."""
    if dispersion is None:
        return 1.0
    return max(1.0, 0.5 * (dispersion + service_scv))


#: The median of a squared standard normal: a median of squared changes over it estimates
#: their variance when most changes are noise.
CHI2_1_MEDIAN = 0.454936


@dataclass(slots=True)
class TypicalDispersion:
    """The index of dispersion of the typical change of one component's arrivals: the median
    of the last `pairs` pair estimates (an hour of 15 s ticks by default) over
    `CHI2_1_MEDIAN`, recomputed every `every` pairs.

    This is the noise a surge must stand out from (surge.py). Unlike the decayed mean of
    `ArrivalVariability`, a median is not moved by the few surges themselves, only by
    arrivals that are bursty all the time: batches, or a trace whose every request stands
    for many (a rate scale of 8 makes Poisson counts eight times as dispersed). None until
    `min_pairs` pairs were seen."""

    window_s: float
    pairs: int = 240
    every: int = 20
    min_pairs: int = 40
    _pairs_of: RatePairs = field(init=False)
    _recent: deque[float] = field(init=False)
    _since: int = 0
    _value: float | None = None

    def __post_init__(self) -> None:
        self._pairs_of = RatePairs(self.window_s)
        self._recent = deque(maxlen=self.pairs)

    def update(self, at_s: float, rate_rps: float | None) -> None:
        """One reading of the windowed arrival rate (None: missing, breaks the pair)."""
        pair = self._pairs_of.take(at_s, rate_rps)
        if pair is None:
            return
        self._recent.append(pair[0] / pair[1])
        self._since += 1
        if len(self._recent) >= self.min_pairs and (
            self._value is None or self._since >= self.every
        ):
            self._since = 0
            self._value = statistics.median(self._recent) / CHI2_1_MEDIAN

    @property
    def dispersion(self) -> float | None:
        """The typical index of dispersion, or None before `min_pairs` pairs."""
        return self._value
