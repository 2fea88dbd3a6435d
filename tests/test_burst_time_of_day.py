"""The burst reserve conditioned on time of day (bursts.same_time_of_day, demand.py).

Scenarios on a fake clock: a history with flash spikes at one hour of every day raises the
reserve at that hour only, and lowers it at the calm hours below what the whole history would
give; with less than two days of history the reserve is the unconditioned one.
"""

from __future__ import annotations

import numpy as np
import pytest

from elastiscale.controllers.bursts import DAY_S, same_time_of_day
from elastiscale.controllers.demand import DemandForecast
from elastiscale.observations import Observation
from test_feedforward import Driver, make_config

STEP_S = 120.0  # bins of a 240 s rate window: few enough for a quick replay of days
WINDOW_S = 2 * STEP_S
SPIKE_HOUR = 5


def _rates(days: float, seed: int = 7) -> np.ndarray:
    """100 req/s with noise; at 05:00-06:00 of every day, 12 one-bin spikes to 4x."""
    rng = np.random.default_rng(seed)
    n = int(days * DAY_S / STEP_S)
    y = 100.0 + rng.normal(0.0, 2.0, n)
    per_day = int(DAY_S / STEP_S)
    hour = int(3600 / STEP_S)
    for day in range(int(np.ceil(days))):
        first = day * per_day + SPIKE_HOUR * hour
        spikes = first + rng.choice(hour, 12, replace=False)
        y[spikes[spikes < n]] *= 4.0
    return y


def _reserve_after(rates: np.ndarray, time_of_day: bool, bins: int = 3) -> float:
    forecast = DemandForecast.build(
        "last-value",
        {"step_s": STEP_S},
        quantile=0.9,
        rate_window_s=WINDOW_S,
        attainment_target=0.99,
        time_of_day=time_of_day,
    )
    # A rate observed at `at_s` describes the bin half a rate window earlier (demand.py).
    for i, rate in enumerate(rates):
        forecast.observe(WINDOW_S / 2 + i * STEP_S, float(rate))
    outlook = forecast.outlook(bins)
    assert outlook is not None
    got = forecast.reserve(outlook, bins - 1)
    assert got is not None
    return got


def _until(days: int, hour: float) -> int:
    return int((days * DAY_S + hour * 3600.0) / STEP_S)


def test_same_time_of_day_worked_numbers() -> None:
    t = np.arange(0.0, 2 * DAY_S, STEP_S)
    mask = same_time_of_day(t, 5.5 * 3600.0)
    assert mask is not None
    assert int(mask.sum()) == 2 * (3 * 30 + 1)  # 04:00 to 07:00 of both days, inclusive
    assert same_time_of_day(t[: int(1.5 * DAY_S / STEP_S)], 5.5 * 3600.0) is None
    # Across midnight: 23:30 keeps 22:00 to 01:00.
    mask = same_time_of_day(t, 23.5 * 3600.0)
    assert mask is not None and bool(mask[0]) and bool(mask[int(22 * 3600 / STEP_S)])
    assert not bool(mask[int(12 * 3600 / STEP_S)])


def test_spikes_at_one_hour_raise_the_reserve_at_that_hour_only() -> None:
    rates = _rates(4.0)
    before_spikes = rates[: _until(3, SPIKE_HOUR - 0.75)]  # day 3, 04:15: the hour ahead
    calm_hour = rates[: _until(3, 14.25)]  # day 3, 14:15
    at_spikes = _reserve_after(before_spikes, time_of_day=True)
    at_calm = _reserve_after(calm_hour, time_of_day=True)
    whole = _reserve_after(calm_hour, time_of_day=False)
    assert at_spikes > 5 * at_calm
    assert at_calm < 0.5 * whole  # the calm hours no longer pay for the spikes
    assert at_spikes >= whole  # and the spiky hour is not left short by the calm ones


def test_less_than_two_days_of_history_gives_the_unconditioned_reserve() -> None:
    rates = _rates(1.8)
    assert _reserve_after(rates, time_of_day=True) == pytest.approx(
        _reserve_after(rates, time_of_day=False)
    )


def _reserve_of_policy(time_of_day: bool, hours: float) -> float:
    driver = Driver(
        make_config(),
        forecaster="last-value",
        rate_window_s=WINDOW_S,
        self_calibration=False,
        burst_reserve_time_of_day=time_of_day,
    )
    rates = _rates(3.0)[: _until(2, hours)]
    history = [
        {"router": Observation(component="router", at_s=WINDOW_S + STEP_S * i, demand_rps=float(r))}
        for i, r in enumerate(rates)
    ]
    driver.policy.warm_start(history)
    now_s = WINDOW_S + STEP_S * len(rates)
    got = driver.tick(now_s, {"router": 100.0, "planner": 400.0, "writer": 100.0})
    reserve = got["router"].details["forecast_router_reserve"]
    assert reserve is not None
    return float(reserve)


def test_the_policy_holds_the_reserve_where_the_spikes_happened() -> None:
    spiky_hour = _reserve_of_policy(True, SPIKE_HOUR - 0.75)
    calm_hour = _reserve_of_policy(True, 14.25)
    assert spiky_hour > 5 * calm_hour
    assert calm_hour < 0.5 * _reserve_of_policy(False, 14.25)
