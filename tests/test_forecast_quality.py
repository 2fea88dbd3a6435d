"""The asymmetric error, the online error tracker, and quantiles from tracked errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale import registry
from elastiscale.forecasting import Forecast, Forecaster
from elastiscale.forecasting.intervals import NO_EVIDENCE_WIDTH, Intervals
from elastiscale.forecasting.quality import (
    MIN_ERRORS,
    ErrorTracker,
    asymmetric_error,
    error_weights,
)


@pytest.mark.parametrize(
    ("actual", "forecast", "under_weight", "expected"),
    [
        ([10, 10], [8, 8], 3.0, 0.30),  # short by 4 in 20: 1.5 * 4 / 20
        ([10, 10], [12, 12], 3.0, 0.10),  # over by 4 in 20: 0.5 * 4 / 20
        ([10, 10], [8, 12], 1.0, 0.20),  # r = 1 is the WAPE
        ([10, math.nan], [8, 5], 3.0, 0.30),  # pairs with a NaN are skipped
        ([0, 0], [0, 0], 3.0, 0.0),
        ([0, 0], [1, 0], 3.0, None),  # no demand at all: a relative error is undefined
        ([], [], 3.0, None),
    ],
)
def test_asymmetric_error_worked_examples(
    actual: list[float], forecast: list[float], under_weight: float, expected: float | None
) -> None:
    got = asymmetric_error(actual, forecast, under_weight)
    assert got == (None if expected is None else pytest.approx(expected))


def test_weights_add_up_to_two() -> None:
    assert error_weights(3.0) == (1.5, 0.5)
    with pytest.raises(ValueError, match="under_weight = 0"):
        error_weights(0.0)


def test_tracker_resolves_forecasts_when_their_bin_closes() -> None:
    tracker = ErrorTracker(window_bins=100)
    tracker.track(2)
    for origin in range(40):
        tracker.issue(origin, (2,), [10.0], [12.0], [15.0])
        tracker.resolve(origin + 1, 11.0 if origin % 2 else math.nan)
    summary = tracker.summary(2, step_s=60.0)
    assert summary is not None
    assert summary.horizon_s == 120.0
    # Origins 0..39 targeted bins 2..41; bins 1..40 closed, the even ones with 11 (an odd
    # origin closes an even bin), the odd ones missing: bins 2, 4, ..., 40 count.
    assert summary.errors == 20
    assert summary.mae == 1.0 and summary.under_fraction == 1.0
    assert summary.p90_coverage == 1.0 and summary.p99_coverage == 1.0
    assert summary.asymmetric_error == pytest.approx(1.5 * 1.0 / 11.0)
    details = summary.details()
    assert details["forecast_120s_asym_err"] == round(1.5 / 11.0, 4)


def test_tracker_needs_min_errors() -> None:
    tracker = ErrorTracker(window_bins=100)
    tracker.track(1)
    for origin in range(MIN_ERRORS - 1):
        tracker.issue(origin, (1,), [1.0])
        tracker.resolve(origin + 1, 1.0)
    assert tracker.summary(1, 60.0) is None and tracker.asymmetric_error(1) is None


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(
        st.tuples(
            st.floats(0, 1e4, allow_nan=False),
            st.floats(0, 1e4, allow_nan=False),
        ),
        min_size=MIN_ERRORS,
        max_size=200,
    ),
    window=st.integers(MIN_ERRORS, 60),
)
def test_running_sums_equal_a_recount_of_the_window(
    values: list[tuple[float, float]], window: int
) -> None:
    tracker = ErrorTracker(window_bins=window, under_weight=3.0)
    tracker.track(1)
    for origin, (actual, mean) in enumerate(values):
        tracker.issue(origin, (1,), [mean], [mean * 1.2], [mean * 1.5])
        tracker.resolve(origin + 1, actual)
    kept = values[-window:]
    actual = np.array([a for a, _ in kept])
    mean = np.array([m for _, m in kept])
    summary = tracker.summary(1, 60.0)
    assert summary is not None and summary.errors == len(kept)
    assert summary.mae == pytest.approx(np.mean(np.abs(actual - mean)), rel=1e-6, abs=1e-6)
    expected = asymmetric_error(actual, mean, 3.0)
    if expected is None:
        assert summary.asymmetric_error is None
    else:
        assert summary.asymmetric_error == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert summary.p90_coverage == pytest.approx(np.mean(actual <= mean * 1.2))


def test_intervals_without_evidence_are_wide_and_ordered() -> None:
    intervals = Intervals("relative", window_bins=100)
    intervals.prepare(np.array([10.0, 12.0]), [1])
    tracker = ErrorTracker(100)
    tracker.track(1)
    p90, p99 = intervals.bands(np.array([1]), np.array([10.0]), tracker)
    assert p90[0] == 10.0 * (1 + NO_EVIDENCE_WIDTH[0])
    assert p99[0] == 10.0 * (1 + NO_EVIDENCE_WIDTH[1])


def test_prior_comes_from_the_history_own_changes() -> None:
    y = np.tile([10.0, 20.0], 50)  # every 1-bin change is +10 or -10 (relative +1 or -0.5)
    intervals = Intervals("relative", window_bins=100)
    intervals.prepare(y, [1])
    tracker = ErrorTracker(100)
    tracker.track(1)
    q90, q99 = intervals.quantiles(1, tracker)
    assert q90 == pytest.approx(1.0) and q99 == pytest.approx(1.0)


def run_online(fc: Forecaster, y: np.ndarray, start: int) -> list[Forecast]:
    out = []
    for i in range(start, y.size):
        got = fc.predict([300.0], now_s=i * 60.0)
        assert isinstance(got, Forecast)
        out.append(got)
        fc.update(i * 60.0, float(y[i]))
    return out


@pytest.mark.parametrize("mode", ["relative", "absolute"])
def test_p90_covers_about_ninety_percent_of_stationary_noise(mode: str) -> None:
    rng = np.random.default_rng(11)
    y = np.maximum(0.0, 100.0 + rng.normal(0.0, 10.0, 3000))
    fc = registry.build("forecaster", "ewma", None, {"intervals": mode, "window_s": 43200})
    fc.fit(np.arange(1000) * 60.0, y[:1000])
    forecasts = run_online(fc, y, 1000)
    made = np.array([f.p90[0] for f in forecasts[:-4]])
    actual = y[1004:]
    assert 0.86 <= np.mean(actual <= made) <= 0.94
    quality = fc.quality(300.0)
    assert quality is not None and 0.86 <= quality.p90_coverage <= 0.94
    assert quality.errors == 720  # the 12 h window


def test_quality_reflects_a_broken_forecast() -> None:
    """A level shift from 20 to 60 req/s: the last value recovers at once; the recent errors of
    a slow EWMA show it under-forecasting."""
    y = np.r_[np.full(500, 20.0), np.full(200, 60.0)]
    slow = registry.build("forecaster", "ewma", None, {"half_life_s": 7200.0})
    slow.fit(np.arange(400) * 60.0, y[:400])
    run_online(slow, y, 400)
    quality = slow.quality(300.0)
    assert quality is not None
    assert quality.under_fraction > 0.2
    assert quality.asymmetric_error is not None and quality.asymmetric_error > 0.2
