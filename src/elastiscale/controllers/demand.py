"""One demand series forecast for a policy: an upper quantile at each future bin, gated by the
forecast's recent quality against reacting.

A `DemandForecast` follows one observed rate (an ingress's requests/s, or tokens/s, or a
component's own load) and answers, for the bins ahead of the latest data, an upper quantile of
demand that a policy can size for. It blends two forecasts of that quantile:

- the model's: the forecaster's own upper quantile (its p90/p99 come from its own recent errors
  at that horizon; forecasting/intervals.py);
- persistence, i.e. reactive control: the latest observed rate plus the upper quantile of the
  history's own changes over that horizon. A reactive policy with lead time L is exactly a bet
  that demand in L looks like demand now; this gives that bet the headroom its history asks for.

The weight of the model (`trust`) comes from its recent asymmetric error at that horizon
(quality.py: a shortfall weighs 3 times an excess) against the error persistence made on the
same history: none when the model has done no better than persistence, full when its error is
half of persistence's or less, linear in between. Worked numbers: persistence error 0.20 and
model error 0.15 give trust 2 - 2 x 0.15 / 0.20 = 0.5, so the demand sized for is halfway
between the two quantiles. Until the model has `quality.MIN_ERRORS` resolved forecasts at a
horizon, it has no record and gets no trust there.

Quantiles between those served (mean, p90, p99) are interpolated on the normal scale: the
`quantile` knob's z-score places it between mean (z = 0), p90 (z = 1.28) and p99 (z = 2.33).

Refits run where the policy's `RefitScheduler` says (forecasting/refits.py): inline in
backtests, on a background worker live, where the forecast keeps its previous model until the
new fit is adopted at a later observation or outlook.

Timing: a rate from a metric source is a trailing mean over `rate_window_s` (Prometheus
`rate(x[1m])`), so it describes the middle of its window; points are fed at `at_s - window / 2`
and horizons are counted from there, so the data's age and the window's lag are part of the
look-ahead rather than a silent shortfall.

The trust of each bin is computed in plain floats (`_trust_of`), not with numpy's array
operations: the same doubles, for the 16 bins at most of an outlook at every tick, where a
numpy call costs more than the arithmetic.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, NamedTuple, Self, cast

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from elastiscale import registry
from elastiscale.controllers.bursts import (
    Buckets,
    level_reserves,
    min_windows,
    near_levels,
    time_of_day_buckets,
    window_peaks,
)
from elastiscale.controllers.forecast_sharing import DivergedError, ForecastShare
from elastiscale.decision import Detail
from elastiscale.errors import RegistryError
from elastiscale.forecasting import Forecast, Forecaster, ForecastResult, build_forecaster
from elastiscale.forecasting.intervals import FLOOR_FRACTION, MIN_CALIBRATION, NO_EVIDENCE_WIDTH
from elastiscale.forecasting.order_stats import sorted_quantile
from elastiscale.forecasting.quality import asymmetric_error
from elastiscale.forecasting.refits import RefitMode, RefitScheduler

Array = npt.NDArray[np.float64]
#: What an outlook reads off the forecaster: its forecast, and its errors per bin ahead.
Reads = tuple[ForecastResult, list[float | None] | None]


class _ModelMemo(NamedTuple):
    """The model's part of an outlook (`DemandForecast._model_memo`) and what it was made of."""

    forecaster: Forecaster
    version: int  # the forecaster's `version` then
    bins: int
    result: Forecast
    errors: list[float | None]
    model: Array  # the model's quantile per bin
    model_error: Array
    gated_by: Array  # the persistence errors the trust was computed against
    trust: Array


_Z90 = NormalDist().inv_cdf(0.90)
_Z99 = NormalDist().inv_cdf(0.99)

#: At most this many bins ahead are forecast (the forecaster tracks at most 16 horizons).
MAX_BINS_AHEAD = 16
#: Levels (times the history's mean) at which persistence's quantiles are conditioned.
LEVEL_GRID = 2.0 ** np.arange(-6, 5)


def quantile_between(mean: Array, p90: Array, p99: Array, quantile: float) -> Array:
    """The `quantile` of a forecast given its mean, p90 and p99, interpolated in z-score.

    Worked numbers: mean 10, p90 13, p99 16 at quantile 0.95 (z = 1.645): 13 + (1.645 - 1.282)
    / (2.326 - 1.282) x 3 = 14.04. Below the mean (quantile < 0.5) it goes down towards 0.
    """
    z = _z_score(quantile)
    if z <= _Z90:
        out = mean + (z / _Z90) * (p90 - mean)
    else:
        out = p90 + (z - _Z90) / (_Z99 - _Z90) * (p99 - p90)
    result: Array = np.maximum(out, 0.0)
    return result


def _trust_of(model_error: float, persistence_error: float) -> float:
    """One bin's trust: clip(2 - 2 x model / persistence error, 0, 1); 1 where both errors are
    0 (a flat series: the model is as good as anything), 0 where it is undefined (NaN). The
    doubles numpy's division, clip and masks give on the bin's pair (x / 0 is +-inf, 0 / 0
    NaN), in plain floats: an outlook has at most 16 bins, where numpy's per-call cost
    dominates."""
    if model_error == 0.0 and persistence_error == 0.0:
        return 1.0
    if persistence_error == 0.0:
        if math.isnan(model_error):
            return 0.0
        ratio = math.copysign(math.inf, model_error) * math.copysign(1.0, persistence_error)
    else:
        ratio = model_error / persistence_error
    trust = 2.0 - 2.0 * ratio
    if math.isnan(trust):
        return 0.0
    if trust < 0.0:
        return 0.0
    return 1.0 if trust > 1.0 else trust


@functools.lru_cache(maxsize=64)
def _z_score(quantile: float) -> float:
    """The standard normal's `quantile` (a policy asks for the same one or two at every tick)."""
    return NormalDist().inv_cdf(quantile)


@dataclass(frozen=True, slots=True)
class DemandOutlook:
    """Upper-quantile demand for the bins ahead of the latest data, and how it was made.

    Arrays are indexed by bins ahead of `origin_s` (index 0 is one bin ahead). `at_s` is the
    data time of `latest`, the newest observed rate.
    """

    origin_s: float
    step_s: float
    at_s: float
    latest: float
    demand: Array  # the blended upper quantile per bin ahead
    model: Array  # the model's quantile per bin ahead (NaN: no forecast)
    persistence: Array  # persistence's quantile per bin ahead
    trust: Array  # the model's weight per bin ahead, 0..1
    model_error: Array  # the model's recent asymmetric error per bin ahead (NaN: unknown)
    persistence_error: Array  # persistence's asymmetric error per bin ahead (NaN: unknown)
    model_name: str

    def window(self, start_s: float, end_s: float) -> slice:
        """The bins ahead that overlap [start_s, end_s] (at least one)."""
        first = max(1, math.ceil((start_s - self.origin_s) / self.step_s - 1e-9))
        last = max(first, math.ceil((end_s - self.origin_s) / self.step_s - 1e-9))
        last = min(last, self.demand.size)
        first = min(first, last)
        return slice(first - 1, last)

    def peak(self, start_s: float, end_s: float) -> tuple[float, int]:
        """The highest demand over [start_s, end_s] (at least the latest rate), and its bin
        index (-1 when the latest rate is the highest)."""
        part = self.window(start_s, end_s)
        values = self.demand[part]
        if values.size == 0:
            return self.latest, -1
        i = int(values.argmax())
        highest = float(values[i])
        if highest <= self.latest:
            return self.latest, -1
        return highest, part.start + i


class ForecastParams(BaseModel):
    """The forecasting parameters `predictive` and `elastiscale` share; each policy's `Params`
    extends them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quantile: float = Field(
        0.9, gt=0.5, lt=1.0, description="upper quantile of forecast demand sized for (p90)"
    )
    forecaster: str = Field("auto", description="forecaster of demand (registry name)")
    forecaster_params: dict[str, Any] = Field(
        default_factory=dict, description="its parameters (step_s defaults to rate_window_s/2)"
    )
    refit: RefitMode = Field(
        "background",
        description="where forecaster refits run: on a background worker (live), or inline in "
        "the tick (backtests set this)",
    )
    rate_window_s: float = Field(
        60.0, gt=0, description="window of the observed rates (Prometheus rate[1m])"
    )

    @model_validator(mode="after")
    def _forecaster_known(self) -> Self:
        """An unknown forecaster or a bad parameter of it is a config error, not a crash at
        the first tick."""
        try:
            registry.resolve("forecaster", self.forecaster)
        except RegistryError as exc:
            raise ValueError(f"forecaster: {exc}") from None
        problems = registry.check(
            "forecaster", self.forecaster, self.forecaster_params, path="forecaster_params"
        )
        if problems:
            raise ValueError(problems[0])
        return self


class DemandForecast:
    """A gated upper-quantile forecast of one rate series (see the module docstring)."""

    def __init__(
        self,
        forecaster: Forecaster,
        *,
        quantile: float,
        rate_window_s: float,
        gating: bool = True,
        refits: RefitScheduler | None = None,
        attainment_target: float | None = None,
        time_of_day: bool = False,
    ) -> None:
        self.forecaster = forecaster
        # Without a scheduler, refits run inline (blocking), as a plain `Forecaster.refit()`.
        self.refits = refits if refits is not None else RefitScheduler("inline")
        self.step_s = forecaster.step_s
        self.quantile = quantile
        self.rate_window_s = rate_window_s
        self.gating = gating
        self.attainment_target = attainment_target
        self.time_of_day = time_of_day  # burst reserve conditioned on time of day (bursts.py)
        self.window_bins = max(1, math.ceil(forecaster.params.window_s / self.step_s - 1e-9))
        self._latest: tuple[float, float] | None = None
        self._persistence_at: int | None = None  # last closed bin the figures below are for
        self._persistence_q: tuple[Array, Array] = (np.zeros(0), np.zeros(0))
        self._persistence_err: Array = np.zeros(0)
        self._reserve: Array | None = None  # relative burst reserve per (level, bins ahead)
        self._floor = 0.0
        self._levels: Array = np.zeros(0)
        # The last `_level_row` answer: (levels array, level, row); and the details of the
        # last outlook asked for (every component of a tick asks for the same one).
        self._row_memo: tuple[Array, float, int] | None = None
        self._details_memo: tuple[DemandOutlook | None, dict[tuple[int, str], dict[str, Detail]]]
        self._details_memo = (None, {})
        #: In a side-by-side replay, the record of the leader's calls (forecast_sharing.py).
        self._share: ForecastShare | None = None
        #: The forecaster's answers the last outlook used (its forecast; its errors, or None
        #: without a model forecast), for the followers of a side-by-side replay.
        self._reads: Reads | None = None
        #: The model's part of the last outlook made from the forecaster's own answers, with
        #: what it was made of: (forecaster, its `version`, bins, forecast, errors, model
        #: quantile, model error per bin, the persistence errors and trust it was gated with).
        #: The forecaster answers the same until its version changes (the next closed bin,
        #: every other tick of a 15 s interval on 30 s bins), so the outlooks between reuse it.
        self._model_memo: _ModelMemo | None = None

    @classmethod
    def from_params(
        cls,
        params: ForecastParams,
        *,
        gating: bool,
        refits: RefitScheduler,
        attainment_target: float | None = None,
        time_of_day: bool = False,
    ) -> DemandForecast:
        """The forecast a policy's `ForecastParams` describe (the forecaster's `step_s` half
        the rate window unless given)."""
        return cls.build(
            params.forecaster,
            {"step_s": params.rate_window_s / 2.0, **params.forecaster_params},
            quantile=params.quantile,
            rate_window_s=params.rate_window_s,
            gating=gating,
            refits=refits,
            attainment_target=attainment_target,
            time_of_day=time_of_day,
        )

    @classmethod
    def build(
        cls,
        name: str,
        params: Mapping[str, Any],
        *,
        quantile: float,
        rate_window_s: float,
        gating: bool = True,
        refits: RefitScheduler | None = None,
        attainment_target: float | None = None,
        time_of_day: bool = False,
    ) -> DemandForecast:
        """A forecast on a forecaster from the registry (`name`, `params`)."""
        forecaster = build_forecaster(name, dict(params))
        return cls(
            forecaster,
            quantile=quantile,
            rate_window_s=rate_window_s,
            gating=gating,
            refits=refits,
            attainment_target=attainment_target,
            time_of_day=time_of_day,
        )

    # ----------------------------------------------------------------------------------------

    def set_attainment_target(self, target: float | None) -> None:
        """Size the burst reserve to `target` from now on (None: the quantile of changes)."""
        if target != self.attainment_target:
            self.attainment_target = target
            self._persistence_at = None  # recomputed at the next outlook
            self._reserve = None

    @property
    def latest(self) -> tuple[float, float] | None:
        """(data time, rate) of the newest observation, or None before the first."""
        return self._latest

    def share(self, share: ForecastShare) -> None:
        """Take part in a side-by-side replay (forecast_sharing.py): as the leader when
        `share.leader` is this forecast, else as a follower on the leader's forecaster."""
        self._share = share
        if share.leader is not self:
            self.forecaster = share.leader.forecaster

    def observe(self, at_s: float, rate: float | None) -> None:
        """Add one observed rate whose window ends at `at_s` (None: missing)."""
        update = True
        share = self._share
        if share is not None:
            if share.follows(("observe", at_s, rate)):
                if share.leader is self:
                    return  # the leader's same call did it all
                update = False  # the leader's same call updated the forecaster
            else:
                share.record(("observe", at_s, rate))
        t_s = at_s - self.rate_window_s / 2.0
        if self._latest is not None and t_s < self._latest[0]:
            return  # an older sample than one already used: nothing new
        if rate is None or not math.isfinite(rate) or rate < 0:
            return
        if self._latest is not None and t_s == self._latest[0]:
            return  # the same sample again (a stale source repeats itself)
        self._latest = (t_s, float(rate))
        if update:
            self.forecaster.update(t_s, float(rate))
            self.refits.maintain(self.forecaster, t_s)

    def outlook(self, bins_ahead: int) -> DemandOutlook | None:
        """The gated demand for `bins_ahead` bins (capped at MAX_BINS_AHEAD), or None before
        any observation."""
        share = self._share
        if share is None:
            return self._outlook(bins_ahead)
        if not share.follows(("outlook", bins_ahead)):
            got = self._outlook(bins_ahead)
            share.record(("outlook", bins_ahead), (got, self._reads))
            return got
        got, reads = share.last
        if share.leader is self:
            return cast(DemandOutlook | None, got)  # the leader's, from the same state
        if self._latest != share.leader._latest:
            raise DivergedError("a follower's latest observation is not the leader's")
        # What the leader read off the forecaster for the same bins, in the same state.
        return self._outlook(bins_ahead, reads)

    def _outlook(self, bins_ahead: int, reads: Reads | None = None) -> DemandOutlook | None:
        """The outlook; with `reads`, the forecaster's answers for these bins (its forecast
        and errors) are those, not asked again."""
        self._reads = None
        if self._latest is None:
            return None
        self.refits.collect(self.forecaster)  # a finished background fit, even without new data
        at_s, latest = self._latest
        bins = max(1, min(bins_ahead, MAX_BINS_AHEAD))
        result: ForecastResult
        memo = self._model_memo if reads is None else None
        forecaster = self.forecaster
        if memo is not None and not (
            memo.forecaster is forecaster and memo.version == forecaster.version
            and memo.bins == bins
        ):  # fmt: skip
            memo = None
        if memo is not None:
            result = memo.result
        elif reads is None:
            ks = np.arange(1, bins + 1, dtype=float)
            result = forecaster.predict(ks * self.step_s)
        else:
            result = reads[0]
        self._reads = (result, None)
        origin_s = self._origin_s(at_s)
        self._refresh_persistence(bins)
        row = self._level_row(latest)
        p90_rel, p99_rel = self._persistence_q[0][row], self._persistence_q[1][row]
        scale = max(latest, self._floor)
        if self._reserve is not None:
            # The burst reserve (bursts.py) in place of a fixed quantile of the changes.
            persistence = latest + self._reserve[row, :bins] * scale
        else:
            persistence = quantile_between(
                np.full(bins, latest),
                latest + p90_rel[:bins] * scale,
                latest + p99_rel[:bins] * scale,
                self.quantile,
            )
        persistence_error = self._persistence_err[:bins]
        nan = np.full(bins, math.nan)
        if not isinstance(result, Forecast):
            return DemandOutlook(
                origin_s, self.step_s, at_s, latest, persistence, nan, persistence,
                np.zeros(bins), nan, persistence_error, result.model,
            )  # fmt: skip
        origin_s = result.origin_s
        if memo is not None:
            # The same forecaster state as the outlook the memo is of: the same answers.
            errors, model = memo.errors, memo.model
            model_error, trust = memo.model_error, memo.trust
            if memo.gated_by is not self._persistence_err:
                trust = self._trust(model_error, persistence_error)
                self._model_memo = memo._replace(gated_by=self._persistence_err, trust=trust)
        else:
            model = quantile_between(result.mean, result.p90, result.p99, self.quantile)
            got = forecaster.asymmetric_errors(bins) if reads is None else reads[1]
            assert got is not None  # a follower's reads of a model forecast have them
            errors = got
            model_error = np.array([math.nan if e is None else float(e) for e in errors])
            trust = self._trust(model_error, persistence_error)
            if reads is None:
                self._model_memo = _ModelMemo(
                    forecaster, forecaster.version, bins, result, errors, model, model_error,
                    self._persistence_err, trust,
                )  # fmt: skip
        self._reads = (result, errors)
        demand = trust * model + (1.0 - trust) * persistence
        return DemandOutlook(
            origin_s, self.step_s, at_s, latest, demand, model, persistence, trust,
            model_error, persistence_error, result.model,
        )  # fmt: skip

    # ----------------------------------------------------------------------------------------

    def _origin_s(self, at_s: float) -> float:
        return math.floor(at_s / self.step_s + 1e-9) * self.step_s

    def _trust(self, model_error: Array, persistence_error: Array) -> Array:
        """Full at half of persistence's error or less, none at persistence's or more."""
        if not self.gating:
            return np.ones_like(model_error)
        pairs = zip(model_error.tolist(), persistence_error.tolist(), strict=True)
        return np.array([_trust_of(m, p) for m, p in pairs], dtype=float)

    def _refresh_persistence(self, bins: int) -> None:
        """Quantiles and errors of persistence per bins ahead, from the kept history (at most
        one window of it), conditional on the level demand starts from.

        What demand does next depends on where it is: bursty traffic at the top of a burst
        mostly falls back, and from a quiet minute it can jump many times over. So the
        quantiles of the change from level L are taken over the history's pairs that started
        within a factor 2 of L (4, then any, when fewer than `MIN_CALIBRATION` did), on a grid
        of levels a factor 2 apart around the mean. For steady traffic every level sees the
        same changes, and this is the plain quantile of changes.
        """
        extent = self.forecaster.history_extent()  # no copy of the history when cached
        key = round(extent[0] / self.step_s) if extent is not None and extent[1] else None
        # Quantiles over a day of changes move slowly: refresh them once per 1/24 of the
        # history they are computed on (every bin while it is short).
        every = max(1, min(extent[1] if extent else 0, self.window_bins) // 24)
        cached = self._persistence_at is not None and self._persistence_err.size > 0
        if key is not None and cached and 0 <= key - (self._persistence_at or 0) < every:
            return
        t_all, y_all = self.forecaster.history()
        bins = MAX_BINS_AHEAD  # all of them at once: the cache then holds until the next bin
        y = y_all[-(self.window_bins + bins) :]
        seen = y[~np.isnan(y)]
        mean = float(seen.mean()) if seen.size else 0.0
        self._floor = FLOOR_FRACTION * mean
        self._levels = np.asarray(mean * LEVEL_GRID, dtype=float)
        p90 = np.full((LEVEL_GRID.size, bins), NO_EVIDENCE_WIDTH[0])
        p99 = np.full((LEVEL_GRID.size, bins), NO_EVIDENCE_WIDTH[1])
        err = np.full(bins, math.nan)
        for i in range(bins):
            k = i + 1
            if y.size <= k:
                continue
            before, after = y[:-k], y[k:]
            ok = ~np.isnan(before) & ~np.isnan(after)
            if np.count_nonzero(ok) < MIN_CALIBRATION:
                continue
            before, after = before[ok], after[ok]
            scaled = (after - before) / np.maximum(before, max(self._floor, 1e-12))
            # Sorted once: each level's subset is a mask of the sorted changes, so sorted too,
            # and its quantiles are read off it (the same doubles as np.quantile, order_stats.py).
            order = np.argsort(scaled, kind="stable")
            scaled_sorted, before_sorted = scaled[order], before[order]
            whole = (sorted_quantile(scaled_sorted, 0.9), sorted_quantile(scaled_sorted, 0.99))
            nears = near_levels(before_sorted, self._levels, MIN_CALIBRATION)
            for g, near in enumerate(nears):
                q90, q99 = whole
                if near is not None:
                    chosen = scaled_sorted[near]
                    q90, q99 = sorted_quantile(chosen, 0.9), sorted_quantile(chosen, 0.99)
                p90[g, i] = max(q90, 0.0)
                p99[g, i] = max(q99, p90[g, i])
            got = asymmetric_error(after, before, self.forecaster.params.under_weight)
            err[i] = math.nan if got is None else got
        self._persistence_q = (p90, p99)
        self._persistence_err = err
        self._reserve = None
        if self.attainment_target is not None and self.time_of_day and t_all.size:
            # Until the next refresh the reserve serves the coming `every` bins: condition it
            # on the time of day at their middle (None: too little history for that).
            centre_s = float(t_all[-1]) + (every + 1) * self.step_s / 2.0
            buckets = time_of_day_buckets(t_all, centre_s)
            if buckets is not None:
                self._reserve = self._reserves(y_all, bins, buckets)
        if self._reserve is None:
            self._reserve = self._reserves(y, bins)
        self._persistence_at = key

    def _reserves(
        self, y: Array, bins: int, buckets: tuple[Buckets, int] | None = None
    ) -> Array | None:
        """Burst reserves per (level, bins ahead), relative to the level; None without an
        attainment target, or while any horizon has fewer pairs than the target's tail needs
        (bursts.min_windows: 100 at 0.99; the quantiles serve).
        With `buckets` (each bin's time-of-day bucket, and the coming bins' one), the reserve
        of the coming bins' time of day (bursts.allocated_reserve)."""
        if self.attainment_target is None:
            return None
        allowance = 1.0 - self.attainment_target
        tail = min_windows(allowance, MIN_CALIBRATION)  # a history that holds the tail
        out = np.zeros((LEVEL_GRID.size, bins))
        peaks = window_peaks(y, bins)
        if len(peaks) < bins:
            return None
        for i, peak in enumerate(peaks):
            pairs = None if buckets is None else (buckets[0][: peak.size], buckets[1])
            args = (self._levels, self._floor, allowance, MIN_CALIBRATION, pairs, tail)
            got = level_reserves(y[: peak.size], peak, *args)
            if got is None:
                return None
            out[:, i] = got
        # A longer window never needs a smaller reserve.
        result: Array = np.maximum.accumulate(out, axis=1)
        return result

    def reserve(self, outlook: DemandOutlook, index: int) -> float | None:
        """The burst reserve (requests/s above the latest rate) at bin `index`, or None."""
        if self._reserve is None or index < 0:
            return None
        row = self._level_row(outlook.latest)
        return float(self._reserve[row, index]) * max(outlook.latest, self._floor)

    def _level_row(self, level: float) -> int:
        """Index of the grid level nearest to `level` (in ratio)."""
        levels = self._levels
        memo = self._row_memo
        if memo is not None and memo[0] is levels and memo[1] == level:
            return memo[2]
        lowest = float(levels[0]) if levels.size else 0.0
        if lowest <= 0:
            return 0
        if lowest >= 1e-290 and level <= 1e15:
            # The quotient stays below 1e305: no overflow to silence (and no `errstate`, which
            # costs more than the arithmetic here; the values are the same either way).
            ratio = np.abs(np.log(np.maximum(level, 1e-12) / levels))
        else:
            # A subnormal grid level overflows the quotient to inf: the right order (farthest).
            with np.errstate(over="ignore"):
                ratio = np.abs(np.log(np.maximum(level, 1e-12) / levels))
        row = int(np.argmin(ratio))
        self._row_memo = (levels, level, row)
        return row

    def details(self, outlook: DemandOutlook, index: int, prefix: str) -> dict[str, Detail]:
        """Flat key/values describing the forecast at bin `index` (-1: the latest rate); the
        caller copies them (the same outlook's are kept for the next component)."""
        seen, known = self._details_memo
        if seen is not outlook:
            known = {}
            self._details_memo = (outlook, known)
        got = known.get((index, prefix))
        if got is None:
            got = known[(index, prefix)] = self._details(outlook, index, prefix)
        return got

    def _details(self, outlook: DemandOutlook, index: int, prefix: str) -> dict[str, Detail]:
        if index < 0:
            return {
                f"{prefix}_latest": round(outlook.latest, 6),
                f"{prefix}_model": outlook.model_name,
            }
        model = float(outlook.model[index])
        err_m = float(outlook.model_error[index])
        err_p = float(outlook.persistence_error[index])
        horizon_s = outlook.origin_s + (index + 1) * self.step_s - outlook.at_s
        reserve = self.reserve(outlook, index)
        return {
            f"{prefix}_latest": round(outlook.latest, 6),
            f"{prefix}_model": outlook.model_name,
            f"{prefix}_horizon_s": round(horizon_s, 3),
            f"{prefix}_forecast_q": None if math.isnan(model) else round(model, 6),
            f"{prefix}_persistence_q": round(float(outlook.persistence[index]), 6),
            f"{prefix}_trust": round(float(outlook.trust[index]), 4),
            f"{prefix}_error": None if math.isnan(err_m) else round(err_m, 4),
            f"{prefix}_persistence_error": None if math.isnan(err_p) else round(err_p, 4),
            f"{prefix}_reserve": None if reserve is None else round(reserve, 6),
        }
