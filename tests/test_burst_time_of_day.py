"""The burst reserve conditioned on time of day (bursts.allocated_reserve, demand.py).

Worked numbers, an invariant of the allocation (hypothesis: it never leaves more short than the
budget, and never costs more reserve than one reserve for all hours), and scenarios on a fake
clock: a history with flash spikes at one hour of every day raises the reserve at that hour
only, and lowers it at the calm hours below what the whole history would give; with less than
two days of history the reserve is the unconditioned one.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale.controllers.bursts import (
    DAY_S,
    allocated_reserve,
    shortfall_reserve,
    time_of_day_buckets,
)
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


def test_time_of_day_buckets_worked_numbers() -> None:
    t = np.arange(0.0, 2 * DAY_S, STEP_S)
    got = time_of_day_buckets(t, 5.5 * 3600.0)
    assert got is not None
    buckets, current = got
    assert current == 2  # 04:00 to 06:00
    assert int(buckets[int(DAY_S / STEP_S) + int(4.5 * 3600 / STEP_S)]) == 2  # day 2, 04:30
    assert int(buckets.max()) == 11
    assert time_of_day_buckets(t[: int(1.5 * DAY_S / STEP_S)], 5.5 * 3600.0) is None


def test_allocated_reserve_worked_numbers() -> None:
    rise = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    weight = np.ones(8)
    bucket = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    assert allocated_reserve(rise, weight, bucket, 0, 1.0, min_pairs=4) == 0.0
    assert allocated_reserve(rise, weight, bucket, 1, 1.0, min_pairs=4) == 1.0
    assert allocated_reserve(rise, weight, bucket, 1, 1.0, min_pairs=5) is None
    # One bucket: the single reserve.
    one = np.zeros(8, dtype=np.int64)
    got = allocated_reserve(rise, weight, one, 0, 1.0, min_pairs=4)
    assert got == pytest.approx(shortfall_reserve(rise, weight, 1.0))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-1.0, 10.0), st.floats(0.1, 5.0), st.integers(0, 3)),
        min_size=8,
        max_size=60,
    ),
    st.floats(0.0, 20.0),
)
def test_the_allocation_fits_the_budget_and_costs_no_more_than_one_reserve(
    pairs: list[tuple[float, float, int]], budget: float
) -> None:
    rise = np.array([p[0] for p in pairs])
    weight = np.array([p[1] for p in pairs])
    bucket = np.array([p[2] for p in pairs], dtype=np.int64)
    present = sorted(set(bucket.tolist()))
    reserves = {}
    for b in present:
        got = allocated_reserve(rise, weight, bucket, b, budget, min_pairs=1)
        assert got is not None and got >= 0.0
        reserves[b] = got
    r_of = np.array([reserves[int(b)] for b in bucket])
    short = float(np.sum(weight * np.maximum(rise - r_of, 0.0)))
    assert short <= budget * (1 + 1e-9) + 1e-9
    single = shortfall_reserve(rise, weight, budget)
    # Cost: each pair pays its bucket's reserve.
    assert float(np.sum(weight * r_of)) <= float(np.sum(weight)) * single * (1 + 1e-9) + 1e-6


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
