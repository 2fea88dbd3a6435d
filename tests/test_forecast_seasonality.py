"""Seasonality detection on synthetic series and on a slice of a bundled trace."""

from __future__ import annotations

import numpy as np
import pytest

from elastiscale.forecasting.evaluation import demand_series
from elastiscale.forecasting.seasonality import detect_periods
from elastiscale.trace import load_trace


def wave(bins: int, period: int, noise: float, seed: int = 0, trend: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    i = np.arange(bins)
    return 50 + 20 * np.sin(2 * np.pi * i / period) + rng.normal(0, noise, bins) + trend * i


@pytest.mark.parametrize(
    ("series", "step_s", "expected_s"),
    [
        (wave(3 * 1440, 1440, 10.0), 60.0, [86400.0]),  # daily in heavy noise
        (wave(3 * 1440, 1440, 5.0, trend=0.05), 60.0, [86400.0]),  # on a strong trend
        (wave(24 * 12, 12, 2.0), 300.0, [3600.0]),  # hourly at 5-minute bins
        (wave(2000, 90, 2.0), 60.0, [5400.0]),  # a 90-minute cycle, from the periodogram
    ],
)
def test_detects_the_period(series: np.ndarray, step_s: float, expected_s: list[float]) -> None:
    found = detect_periods(series, step_s)
    assert [p.period_s for p in found[: len(expected_s)]] == pytest.approx(expected_s, rel=0.02)
    assert found[0].strength > 0.2


@pytest.mark.parametrize(
    "series",
    [
        np.random.default_rng(1).normal(50, 5, 3 * 1440),  # noise
        np.full(3 * 1440, 7.0),  # constant
        wave(1440 + 100, 1440, 1.0),  # less than two days of a daily cycle
        np.full(100, np.nan),  # nothing observed
    ],
)
def test_no_period_in_noise_constants_or_short_series(series: np.ndarray) -> None:
    assert detect_periods(series, 60.0) == []


def test_missing_values_are_interpolated_not_zeroed() -> None:
    series = wave(3 * 1440, 1440, 3.0)
    series[::7] = np.nan
    assert detect_periods(series, 60.0)[0].period_s == 86400.0


@pytest.mark.parametrize(
    "path",
    [
        "examples/traces/azure_llm_2023_conv_1s.csv",
        "examples/traces/mooncake_fast25_conversation_1s.csv",
    ],
)
def test_bundled_traces_have_no_spurious_period(path: str) -> None:
    """An hour of chat traffic at 1-minute bins: 58 points, nothing to find; none invented."""
    _, rate = demand_series(load_trace(path), 60.0)
    assert detect_periods(rate, 60.0) == []
