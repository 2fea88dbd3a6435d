"""The forecaster contract, and the machinery every forecaster shares (the settings every
forecaster has, `ForecasterParams`, are in params.py).

Two layers:

- a `GridModel` (grid.py) is one forecasting method on a regular grid of bins: `fit(y)`,
  `append(value)`, `forecast(ks)` with `ks` in bins ahead. numpy only; it knows nothing of
  seconds, gaps or quality. Each method (last value, EWMA, Holt-Winters, ...) is one small
  `GridModel`.
- a `Forecaster` is what policies use. It takes points `(t_s, value)` at any spacing and
  resamples them to its `step_s` (series.py), keeps a bounded history for refits, serves
  forecasts at horizons in seconds with upper quantiles (intervals.py), tracks its own recent
  errors at the horizons it serves (quality.py), and falls back to a simpler model, saying so,
  when its own cannot be fitted. Its answers are in results.py.

Configuration (`params`, a frozen pydantic model) is kept apart from fitted state; `clone()`
gives a new, unfitted forecaster with the same configuration.

Use:

    fc = build_forecaster("holt-winters", {"step_s": 60})
    fc.fit(t_s, rps)                           # history: seconds, requests/s (NaN = missing)
    fc.update(now_s, observed_rps)             # every control tick: cheap
    result = fc.predict([300.0], now_s=now_s)  # Forecast (mean, p90, p99) or NoForecast
    if fc.refit_due(now_s):
        job = fc.start_refit()                 # cheap: a snapshot of the history
        job.run()                              # expensive: anywhere, any thread
        fc.adopt(job)                          # cheap: catch up with the bins seen meanwhile

What a horizon means: the forecast at horizon h is the mean demand over the step (bin) that ends
at or after `now + h` (see `intervals.horizon_bins`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from elastiscale.forecasting.ewma import EwmaModel
from elastiscale.forecasting.grid import (
    Array,
    FitRefusedError,
    GridContext,
    GridModel,
    IntArray,
    NotEnoughHistoryError,
    observed,
)
from elastiscale.forecasting.intervals import Intervals, horizon_bins
from elastiscale.forecasting.params import MAX_TRACKED_HORIZONS, ForecasterParams, lead_times_s
from elastiscale.forecasting.quality import ErrorTracker, HorizonQuality
from elastiscale.forecasting.results import FitStatus, Forecast, ForecastResult, NoForecast
from elastiscale.forecasting.series import (
    BinAccumulator,
    ForecastInputError,
    bin_of,
    check_history,
    check_point,
    to_bins,
)

if TYPE_CHECKING:
    from elastiscale.config import Config

# --------------------------------------------------------------------------------------------
# The forecaster


class Forecaster:
    """Base of every forecaster: resampling, history, quantiles, quality, fallback.

    Subclasses set `name` and `Params` and implement `new_model()`.
    """

    name: ClassVar[str] = "forecaster"
    Params: ClassVar[type[ForecasterParams]] = ForecasterParams
    #: Whether a short history falls back to an EWMA (models needing one point do not).
    uses_fallback: ClassVar[bool] = True

    def __init__(
        self,
        config: Config | None = None,
        params: ForecasterParams | Mapping[str, Any] | None = None,
    ) -> None:
        if params is None:
            params = self.Params()
        elif isinstance(params, Mapping):
            params = self.Params.model_validate(dict(params))
        if not isinstance(params, self.Params):
            raise TypeError(
                f"{self.name}: params must be {self.Params.__name__} or a mapping, "
                f"got {type(params).__name__}"
            )
        self.config = config
        self.params: ForecasterParams = params
        self.step_s = float(params.step_s)
        self._capacity = max(2, math.ceil(params.history_s / self.step_s - 1e-9))
        self._window_bins = max(1, math.ceil(params.window_s / self.step_s - 1e-9))
        self._calibration_bins = max(1, math.ceil(params.calibration_s / self.step_s - 1e-9))
        served = set(params.horizons_s) | lead_times_s(config)
        ks = sorted({horizon_bins(h, self.step_s) for h in served})
        self._initial_ks = ks[:MAX_TRACKED_HORIZONS]
        #: Counts the changes of what `predict` and the error tracker answer (a closed bin, a
        #: fit, a newly tracked horizon, an adopted refit): the same count, the same answers.
        self.version = 0
        self._reset()

    # -- to implement ---------------------------------------------------------------------

    def new_model(self) -> GridModel:
        """A new, unfitted model of this forecaster's method (its configuration applied)."""
        raise NotImplementedError

    # -- configuration --------------------------------------------------------------------

    def clone(self) -> Self:
        """A new, unfitted forecaster with the same configuration."""
        return type(self)(self.config, self.params)

    def _new_fallback(self) -> GridModel | None:
        if not self.uses_fallback:
            return None
        return EwmaModel(half_life_s=None)

    # -- state ------------------------------------------------------------------------------

    def _reset(self) -> None:
        self.version += 1
        self._acc = BinAccumulator(self.step_s, max_gap_bins=self._capacity)
        self._buffer: deque[float] = deque(maxlen=self._capacity)
        self._last_bin: int | None = None
        self._model: GridModel | None = None
        self._model_label: str | None = None
        self._fallback_reason: str | None = None
        self._needed_bins: int | None = None
        self._fitted_at_bin: int | None = None
        self._tracker = ErrorTracker(self._window_bins, self.params.under_weight)
        for k in self._initial_ks:
            self._tracker.track(k)
        self._ks: IntArray = np.asarray(self._tracker.horizons, dtype=np.int64)
        self._intervals = Intervals(self.params.intervals, self._window_bins)

    def history_extent(self) -> tuple[float, int] | None:
        """(start time in s of the newest kept bin, bins kept), None before any: `history()`'s
        last time and length, without copying the history."""
        if self._last_bin is None:
            return None
        return float(self._last_bin * self.step_s), len(self._buffer)

    def history(self) -> tuple[Array, Array]:
        """The kept history as (bin start times in s, bin means; NaN = missing)."""
        if self._last_bin is None:
            return np.empty(0), np.empty(0)
        y = np.fromiter(self._buffer, dtype=float, count=len(self._buffer))
        first = self._last_bin - y.size + 1
        return (np.arange(first, self._last_bin + 1) * self.step_s).astype(float), y

    @property
    def status(self) -> FitStatus:
        _, y = self.history()
        return FitStatus(
            forecaster=self.name,
            model=self._model_label,
            fallback_reason=self._fallback_reason,
            history_bins=int(y.size),
            observed_bins=observed(y),
            fitted_at_s=None
            if self._fitted_at_bin is None
            else (self._fitted_at_bin + 1) * self.step_s,
            parameters=self._model.describe() if self._model is not None else {},
        )

    # -- fitting ----------------------------------------------------------------------------

    def fit(self, t_s: npt.ArrayLike, values: npt.ArrayLike, now_s: float | None = None) -> Self:
        """Replace the history with `(t_s, values)` and fit on it.

        `values` are rates (requests/s or tokens/s); NaN marks a missing value. Bins that end
        after `now_s` stay open, so a later `update` can complete them; without `now_s` every
        bin counts as closed. Raises `ForecastInputError` for decreasing timestamps, negative
        or infinite values.
        """
        t, v = check_history(t_s, values)
        self._reset()
        later = np.zeros(t.size, dtype=bool)
        if t.size:
            last_closed = bin_of(float(t[-1]), self.step_s)
            if now_s is not None:
                last_closed = bin_of(float(now_s), self.step_s) - 1
                later = np.floor(t / self.step_s + 1e-9) > last_closed
            closed_t, closed_v = t[~later], v[~later]
            if closed_t.size:
                first, y = to_bins(closed_t, closed_v, self.step_s, self._capacity)
                gap = last_closed - (first + y.size - 1)
                if y.size and gap < self._capacity:
                    y = np.concatenate([y, np.full(gap, np.nan)])[-self._capacity :]
                    self._buffer.extend(y.tolist())
                    self._last_bin = last_closed
            last_t = float(closed_t[-1]) if closed_t.size else None
            self._acc.reset(last_closed=last_closed, last_t_s=last_t)
        self._fit_buffer()
        for t_later, v_later in zip(t[later].tolist(), v[later].tolist(), strict=True):
            self._absorb(self._acc.add(t_later, v_later))
        return self

    def refit(self) -> None:
        """Fit again on the kept history (blocking; see `start_refit` for the other way)."""
        job = self.start_refit()
        job.run()
        self.adopt(job)

    def refit_due(self, now_s: float) -> bool:
        """Whether a refit is worth it: never fitted, enough history now for a model that had
        too little, or `refit_every_s` since the last fit."""
        if self._last_bin is None:
            return False
        if self._fitted_at_bin is None:
            return True
        if self._needed_bins is not None:
            _, y = self.history()
            if observed(y) >= self._needed_bins:
                return True
        fitted_end_s = (self._fitted_at_bin + 1) * self.step_s
        return now_s - fitted_end_s >= self.params.refit_every_s

    def start_refit(self) -> RefitJob:
        """A refit to run off the control loop: a clone holding a copy of the history."""
        t, y = self.history()
        twin = self.clone()
        for k in self._ks:
            twin._track(int(k))
        if t.size:
            twin._buffer.extend(y.tolist())
            twin._last_bin = self._last_bin
        return RefitJob(twin)

    def adopt(self, job: RefitJob) -> None:
        """Take the model fitted by `job`, replaying the bins that closed since its snapshot."""
        if not job.done:
            raise RuntimeError("adopt() needs a refit job that has run")
        twin = job.forecaster
        if twin._last_bin is not None and self._last_bin is not None:
            behind = self._last_bin - twin._last_bin
            if behind > 0:
                _, y = self.history()
                for value in y[-behind:] if behind <= y.size else y:
                    twin._consume(float(value))
        self.version += 1
        self._model = twin._model
        self._model_label = twin._model_label
        self._fallback_reason = twin._fallback_reason
        self._needed_bins = twin._needed_bins
        self._fitted_at_bin = twin._fitted_at_bin
        self._tracker = twin._tracker
        self._intervals = twin._intervals
        self._ks = twin._ks

    def _fit_buffer(self) -> None:
        """Fit on the history: the model on all but the last `calibration_s` (at most a third of
        the history), then that part replayed bin by bin, so the error tracker starts with
        honest out-of-sample errors (half a day of 1-minute bins: 720 per horizon)."""
        self.version += 1
        self._tracker.clear()
        self._model = None
        self._model_label = None
        self._needed_bins = None
        _, y = self.history()
        seen = np.flatnonzero(~np.isnan(y))
        if self._last_bin is None or not seen.size:
            self._fallback_reason = "no observations: every value in the history is missing"
            return
        self._fitted_at_bin = self._last_bin
        y = y[seen[0] :]
        first = self._last_bin - y.size + 1
        ks = tuple(int(k) for k in self._ks)
        self._intervals.prepare(y, ks)
        tail = min(self._calibration_bins, y.size // 3)
        model: GridModel | None = self.new_model()
        reason: str | None = None
        ctx = GridContext(self.step_s, first, ks, self.params.under_weight)
        try:
            assert model is not None
            try:
                model.fit(y[: y.size - tail], ctx)
            except NotEnoughHistoryError:
                if not tail:
                    raise
                tail = 0
                model.fit(y, ctx)
        except NotEnoughHistoryError as exc:
            reason = f"not enough history: {exc}"
            self._needed_bins = exc.need_bins
            model = None
        except FitRefusedError as exc:
            reason = str(exc)
            model = None
        except Exception as exc:  # a method that cannot fit must not take the forecaster down
            reason = f"fit failed: {type(exc).__name__}: {exc}"
            model = None
        label = self.name
        if model is None:
            model = self._new_fallback()
            if model is None:
                self._fallback_reason = reason
                return
            tail = min(self._calibration_bins, y.size // 3)
            model.fit(y[: y.size - tail], ctx)
            label = model.label
        self._model = model
        self._model_label = label
        self._fallback_reason = reason
        start = y.size - tail
        self._issue(first + start - 1)
        for i in range(start, y.size):
            self._step_model(first + i, float(y[i]))

    # -- online -----------------------------------------------------------------------------

    def update(self, t_s: float, value: float | None) -> None:
        """Add one observation (rate at `t_s`; None or NaN: missing). Cheap: no fitting unless
        `auto_refit` is set and a refit is due."""
        t, v = check_point(t_s, value)
        self._absorb(self._acc.add(t, v))

    def advance(self, now_s: float) -> None:
        """Close every bin that ends at or before `now_s` (bins without data are missing)."""
        self._absorb(self._acc.advance(float(now_s)))

    def _absorb(self, closed: list[float]) -> None:
        if self._acc.gap_reset:
            # The gap outlasts the whole history: nothing kept describes the present. Keep only
            # the accumulator (it holds the newest point) and start again from it.
            acc = self._acc
            self._reset()
            self._acc = acc
        if not closed:
            return
        self.version += 1
        assert self._acc.last_closed is not None
        first = self._acc.last_closed - len(closed) + 1
        for i, value in enumerate(closed):
            self._buffer.append(value)
            self._last_bin = first + i
            if self._model is not None:
                self._step_model(self._last_bin, value)
            elif not math.isnan(value):
                self._fit_buffer()  # the first observation: start on what it supports
        assert self._last_bin is not None
        if self.params.auto_refit and self.refit_due((self._last_bin + 1) * self.step_s):
            self.refit()

    def _consume(self, value: float) -> None:
        """One more closed bin (used when catching up after a refit)."""
        self.version += 1
        self._buffer.append(value)
        self._last_bin = 0 if self._last_bin is None else self._last_bin + 1
        if self._model is not None:
            self._step_model(self._last_bin, value)

    def _step_model(self, index: int, value: float) -> None:
        assert self._model is not None
        self.version += 1
        self._tracker.resolve(index, value)
        self._model.append(value)
        self._issue(index)

    def _issue(self, origin: int) -> None:
        """Issue the forecasts of every tracked horizon from bin `origin`."""
        assert self._model is not None
        mean = np.maximum(self._model.forecast(self._ks), 0.0)
        p90, p99 = self._intervals.bands(self._ks, mean, self._tracker)
        self._tracker.issue(origin, self._tracker.horizons, mean, p90, p99)

    def _track(self, k: int) -> None:
        if self._tracker.tracks(k) or len(self._tracker.horizons) >= MAX_TRACKED_HORIZONS:
            return
        self.version += 1
        self._tracker.track(k)
        self._ks = np.asarray(self._tracker.horizons, dtype=np.int64)
        _, y = self.history()
        self._intervals.add_prior(y, k)

    # -- forecasting ------------------------------------------------------------------------

    def predict(self, horizons_s: npt.ArrayLike, now_s: float | None = None) -> ForecastResult:
        """Forecast demand at `horizons_s` seconds after `now_s` (default: the end of the latest
        closed bin). With `now_s`, bins ending by then are closed first."""
        if now_s is not None:
            self.advance(now_s)
        hs = np.atleast_1d(np.asarray(horizons_s, dtype=float))
        if hs.ndim != 1 or not np.isfinite(hs).all() or (hs < 0).any():
            raise ForecastInputError(
                f"horizons_s = {hs.tolist()}: horizons must be finite seconds >= 0"
            )
        if self._model is None or self._last_bin is None:
            return NoForecast(model=self.name, reason=self._fallback_reason or "no observations")
        origin_s = (self._last_bin + 1) * self.step_s
        ref_s = origin_s if now_s is None else max(float(now_s), origin_s)
        ks = np.maximum(1, np.ceil((ref_s + hs - origin_s) / self.step_s - 1e-9)).astype(np.int64)
        for k in ks.tolist():
            if not self._tracker.tracks(k):
                self._track(k)
        mean = np.maximum(self._model.forecast(ks), 0.0)
        p90, p99 = self._intervals.bands(ks, mean, self._tracker)
        return Forecast(
            origin_s=origin_s,
            horizons_s=hs,
            mean=mean,
            p90=p90,
            p99=p99,
            model=self._model_label or self.name,
            fallback_reason=self._fallback_reason,
        )

    # -- quality ----------------------------------------------------------------------------

    def quality(self, horizon_s: float) -> HorizonQuality | None:
        """Recent quality at `horizon_s` (tracking starts on first request); None until there
        are enough resolved forecasts."""
        k = horizon_bins(horizon_s, self.step_s)
        self._track(k)
        return self._tracker.summary(k, self.step_s)

    def asymmetric_error(self, horizon_s: float) -> float | None:
        """`quality(horizon_s).asymmetric_error`, without building the whole summary (a
        policy reads it for every horizon at every tick)."""
        k = horizon_bins(horizon_s, self.step_s)
        self._track(k)
        return self._tracker.asymmetric_error(k)

    def asymmetric_errors(self, bins: int) -> list[float | None]:
        """`asymmetric_error` at 1, 2, ..., `bins` bins ahead, in one call (a policy's outlook
        reads them all at every tick)."""
        out: list[float | None] = []
        for k in range(1, bins + 1):
            self._track(k)
            out.append(self._tracker.asymmetric_error(k))
        return out

    def qualities(self) -> dict[float, HorizonQuality | None]:
        """Recent quality at every tracked horizon, keyed by horizon in seconds."""
        return {k * self.step_s: self._tracker.summary(k, self.step_s) for k in self._ks.tolist()}


class RefitJob:
    """A refit prepared by `Forecaster.start_refit()`: `run()` it anywhere, then `adopt()` it."""

    def __init__(self, forecaster: Forecaster) -> None:
        self.forecaster = forecaster
        self.done = False

    def run(self) -> None:
        self.forecaster._fit_buffer()
        self.done = True
