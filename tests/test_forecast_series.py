"""Forecaster input: checks with one-line errors, binning, and online bin closing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from elastiscale.forecasting.series import (
    BinAccumulator,
    ForecastInputError,
    check_history,
    check_point,
    to_bins,
)

NAN = math.nan


@pytest.mark.parametrize(
    ("t_s", "values", "message"),
    [
        ([0, 60], [1.0], r"equal length \(got shapes \(2,\) and \(1,\)\)"),
        ([0, NAN], [1.0, 2.0], r"t_s\[1\] = nan: timestamps must be finite"),
        ([0, 120, 60], [1.0, 2.0, 3.0], r"t_s\[2\] = 60 is earlier than t_s\[1\] = 120"),
        ([0, 60], [1.0, math.inf], r"values\[1\] = inf at t_s = 60 is not a finite rate"),
        ([0, 60, 120], [1.0, -3.0, 2.0], r"values\[1\] = -3 at t_s = 60 is negative"),
    ],
)
def test_bad_history_is_refused_naming_index_and_value(
    t_s: list[float], values: list[float], message: str
) -> None:
    with pytest.raises(ForecastInputError, match=message):
        check_history(t_s, values)


def test_nan_values_and_equal_timestamps_are_accepted() -> None:
    t, v = check_history([0, 0, 60], [1.0, NAN, 2.0])
    assert t.tolist() == [0, 0, 60] and np.isnan(v[1])


@pytest.mark.parametrize(
    ("t_s", "value", "message"),
    [
        (NAN, 1.0, "timestamps must be finite"),
        (10.0, -0.5, r"value = -0.5 at t_s = 10 is negative"),
        (10.0, math.inf, "not a finite rate"),
    ],
)
def test_bad_point_is_refused(t_s: float, value: float, message: str) -> None:
    with pytest.raises(ForecastInputError, match=message):
        check_point(t_s, value)


def test_none_point_is_missing() -> None:
    assert math.isnan(check_point(5.0, None)[1])


def test_to_bins_worked_example() -> None:
    first, y = to_bins(np.array([0.0, 30.0, 150.0]), np.array([2.0, 4.0, 1.0]), 60.0, 100)
    assert first == 0
    np.testing.assert_array_equal(y, [3.0, NAN, 1.0])


def test_to_bins_drops_leading_missing_and_old_bins() -> None:
    t = np.arange(10) * 60.0
    v = np.array([NAN, NAN, 1, 2, 3, 4, 5, 6, 7, 8], dtype=float)
    first, y = to_bins(t, v, 60.0, 100)
    assert first == 2 and y.tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    first, y = to_bins(t, v, 60.0, 3)
    assert first == 7 and y.tolist() == [6, 7, 8]
    first, y = to_bins(t, np.full(10, NAN), 60.0, 100)
    assert y.size == 0


def test_accumulator_closes_bins_as_time_passes() -> None:
    acc = BinAccumulator(60.0, max_gap_bins=100)
    assert acc.add(0.0, 2.0) == []
    assert acc.add(30.0, 4.0) == []  # same bin: still open
    closed = acc.add(130.0, 1.0)  # bin 2: closes bin 0 (mean 3) and bin 1 (nothing: NaN)
    assert closed[0] == 3.0 and math.isnan(closed[1]) and acc.last_closed == 1
    assert acc.advance(179.0) == []  # bin 2 ends at 180
    assert acc.advance(180.0) == [1.0]
    assert acc.add(170.0, 9.0) == [] and acc.late_points == 1  # bin 2 has closed: late


def test_accumulator_late_and_decreasing_points() -> None:
    acc = BinAccumulator(60.0, max_gap_bins=100)
    acc.reset(last_closed=4, last_t_s=290.0)
    assert acc.add(295.0, 5.0) == []  # bin 4 is closed: late, ignored
    assert acc.late_points == 1
    with pytest.raises(ForecastInputError, match="earlier than the previous point at 295"):
        acc.add(100.0, 1.0)


def test_accumulator_gap_longer_than_history_resets() -> None:
    acc = BinAccumulator(60.0, max_gap_bins=10)
    acc.add(0.0, 1.0)
    assert acc.add(60.0 * 50, 2.0) == [] and acc.gap_reset
    assert acc.last_closed == 49
    assert acc.advance(60.0 * 51) == [2.0] and not acc.gap_reset
