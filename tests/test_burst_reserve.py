"""Burst reserve (controllers/bursts.py) and the cost guard of `elastiscale`.

Worked numbers from the docstrings, an invariant of the shortfall rule (hypothesis), and
scenarios on a fake clock: a history with flash spikes raises the reserve, a calm one lowers
it; a forecast that has not beaten persistence buys no more than the latest rate plus the
reserve; the scale-down window does not hold the reserve twice.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale.controllers.bursts import (
    level_reserves,
    min_windows,
    near_level,
    near_levels,
    shortfall_reserve,
    sorted_shortfall_reserve,
    window_peaks,
)
from elastiscale.controllers.demand import DemandForecast
from elastiscale.errors import ConfigError
from test_feedforward import TICK_S, Driver, make_config


def test_shortfall_reserve_worked_numbers() -> None:
    rise = np.array([1.0, 0.0, 0.0])
    weight = np.full(3, 10.0)
    assert shortfall_reserve(rise, weight, 0.5) == pytest.approx(0.95)
    # Nothing may be left short: the largest rise.
    assert shortfall_reserve(rise, weight, 0.0) == pytest.approx(1.0)
    # Budget to spare at every level: no reserve.
    assert shortfall_reserve(rise, weight, 100.0) == 0.0
    assert shortfall_reserve(np.zeros(0), np.zeros(0), 1.0) == 0.0


def test_near_levels_and_one_sort_give_what_each_level_alone_gives() -> None:
    """`near_levels` is `near_level` of each level, and a masked subset of the pairs sorted
    once gives `shortfall_reserve`'s doubles on the subset (ties and zeros of both signs)."""
    rng = np.random.default_rng(7)
    before = np.round(rng.lognormal(0.0, 1.0, 500), 1)
    before[:20] = 0.0
    levels = before.mean() * 2.0 ** np.arange(-6, 5)
    for min_pairs in (1, 30, 200, 600):
        got = near_levels(before, levels, min_pairs)
        for level, near in zip(levels, got, strict=True):
            alone = near_level(before, level, min_pairs)
            assert (near is None) == (alone is None)
            if near is not None and alone is not None:
                assert np.array_equal(near, alone)
    rise = np.round(rng.normal(0.0, 1.0, 500), 1)
    rise[::7] = -0.0
    weight = np.round(rng.uniform(0.1, 3.0, 500), 2)
    order = np.argsort(-rise, kind="stable")
    for near in near_levels(before, levels, 30):
        if near is None:
            continue
        kept = near[order]
        for budget in (0.0, 1.0, 10.0, 1e6):
            one = sorted_shortfall_reserve(rise[order][kept], weight[order][kept], budget)
            alone = shortfall_reserve(rise[near], weight[near], budget)
            assert math.copysign(1.0, one) == math.copysign(1.0, alone) and one == alone


def test_module_docstring_example_against_a_p90() -> None:
    before = np.full(4, 10.0)
    peak = np.array([10.0, 10.0, 10.0, 20.0])
    got = level_reserves(before, peak, np.array([10.0]), 1.0, 0.01, min_pairs=4)
    assert got is not None
    assert float(got[0]) == pytest.approx(0.95)
    assert level_reserves(before, peak, np.array([10.0]), 1.0, 0.01, min_pairs=5) is None


def test_window_peaks() -> None:
    y = np.array([1.0, 3.0, 2.0, math.nan, 0.0])
    peaks = window_peaks(y, 3)
    np.testing.assert_array_equal(peaks[0], [3.0, 2.0, math.nan, 0.0])
    np.testing.assert_array_equal(peaks[1], [3.0, 2.0, 0.0])
    np.testing.assert_array_equal(peaks[2], [3.0, 2.0])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-2.0, 20.0), st.floats(0.01, 50.0)), min_size=1, max_size=40),
    st.floats(0.0, 100.0),
)
def test_shortfall_reserve_is_the_smallest_that_fits_the_budget(
    pairs: list[tuple[float, float]], budget: float
) -> None:
    rise = np.array([p[0] for p in pairs])
    weight = np.array([p[1] for p in pairs])

    def short(r: float) -> float:
        return float(np.sum(weight * np.maximum(rise - r, 0.0)))

    r = shortfall_reserve(rise, weight, budget)
    assert r >= 0.0
    assert short(r) <= budget * (1 + 1e-9) + 1e-9
    if r > 1e-6:
        assert short(r - 1e-6 * max(1.0, r)) > budget - 1e-9


# --------------------------------------------------------------------------------------------
# Scenarios: the reserve learnt from a history


def _fed(rates: np.ndarray, step_s: float = 30.0, target: float = 0.99) -> DemandForecast:
    forecast = DemandForecast.build(
        "last-value",
        {"step_s": step_s},
        quantile=0.9,
        rate_window_s=60.0,
        attainment_target=target,
    )
    for i, rate in enumerate(rates):
        forecast.observe(30.0 + i * step_s, float(rate))
    return forecast


def _reserve_at(forecast: DemandForecast, bins: int) -> float:
    outlook = forecast.outlook(bins)
    assert outlook is not None
    got = forecast.reserve(outlook, bins - 1)
    assert got is not None
    return got


@pytest.mark.parametrize(
    ("allowance", "floor", "want"),
    [(0.01, 30, 100), (0.001, 30, 1000), (0.05, 30, 30), (0.0, 30, 30), (1 / 3, 1, 3)],
)
def test_min_windows(allowance: float, floor: int, want: int) -> None:
    assert min_windows(allowance, floor) == want


@pytest.mark.parametrize(
    ("minutes", "reserve"),
    [
        (30, False),  # 60 windows: fewer than the 100 a 1% tail needs; the quantile serves
        (45, False),  # 90
        (60, True),  # 120 (less the 16 bins of look-ahead): the reserve is learnt
    ],
)
def test_a_history_too_short_for_the_targets_tail_keeps_the_quantile(
    minutes: int, reserve: bool
) -> None:
    rng = np.random.default_rng(5)
    rates = 100.0 + rng.normal(0.0, 5.0, 2 * minutes)
    rates[::15] *= 3.0  # a spike every 7.5 minutes
    forecast = _fed(rates)
    outlook = forecast.outlook(8)
    assert outlook is not None
    got = forecast.reserve(outlook, 7)
    assert (got is not None) == reserve
    if not reserve:  # persistence's quantile of the changes, not a reserve of zero
        assert float(outlook.persistence[7]) > float(outlook.latest)


def test_flash_spikes_raise_the_reserve_and_calm_lowers_it() -> None:
    rng = np.random.default_rng(3)
    calm = 100.0 + rng.normal(0.0, 2.0, 960)
    spiky = calm.copy()
    spiky[rng.choice(960, 12, replace=False)] *= 4.0  # a few flash spikes, 4x for one bin
    lead_bins = 9  # a 257 s lead time at 30 s bins
    calm_reserve = _reserve_at(_fed(calm), lead_bins)
    spiky_reserve = _reserve_at(_fed(spiky), lead_bins)
    assert calm_reserve < 10.0  # a few percent of the level
    assert spiky_reserve > 3 * calm_reserve
    # Calm traffic after the spikes have left the window: the reserve falls back.
    later = _fed(np.concatenate([spiky, calm, calm, calm]))
    assert _reserve_at(later, lead_bins) < 1.5 * calm_reserve


def test_a_higher_attainment_target_never_buys_a_smaller_reserve() -> None:
    rng = np.random.default_rng(5)
    rates = 50.0 * rng.lognormal(0.0, 0.5, 1200)  # 0.999 needs 1000 windows
    got = [_reserve_at(_fed(rates, target=t), 8) for t in (0.9, 0.99, 0.999)]
    assert got[0] <= got[1] <= got[2]


def test_without_a_target_the_quantile_of_changes_serves() -> None:
    forecast = DemandForecast.build(
        "last-value", {"step_s": 30.0}, quantile=0.9, rate_window_s=60.0
    )
    for i in range(200):
        forecast.observe(30.0 + 30.0 * i, 10.0 + (i % 7))
    outlook = forecast.outlook(8)
    assert outlook is not None and forecast.reserve(outlook, 7) is None


# --------------------------------------------------------------------------------------------
# The cost guard and the scale-down window in the policy


def _bursty(t_s: float) -> float:
    """10 req/s with a 6x burst of one minute every 20 minutes."""
    return 60.0 if (t_s % 1200.0) < 60.0 else 10.0


def test_a_forecast_that_has_not_beaten_persistence_buys_at_most_latest_plus_reserve() -> None:
    driver = Driver(make_config())
    driver.run(0.0, 4 * 3600.0, _bursty)
    now_s = 4 * 3600.0 + 600.0
    got = driver.tick(now_s, {"router": 10.0, "planner": 40.0, "writer": 10.0})
    d = got["router"].details
    # One-minute bursts every 20 minutes: no model beats persistence at the lead time.
    assert d["forecast_router_trust"] == 0.0
    reserve = d["forecast_router_reserve"]
    assert reserve is not None and float(reserve) > 0.0
    latest = float(d["forecast_router_latest"])
    assert float(d["feedforward_rps"]) <= latest + float(reserve) + 1e-6


def test_scale_down_does_not_hold_the_reserve_twice() -> None:
    cases = {}
    for mode in ("need", "forecast"):
        driver = Driver(make_config(), scale_down_lookback=mode)
        driver.run(0.0, 4 * 3600.0, _bursty)
        writer = []
        for t in np.arange(4 * 3600.0, 5 * 3600.0, TICK_S):
            driver.run(float(t), float(t) + 1.0, _bursty)
            writer.append(driver.replicas["writer"])
        cases[mode] = float(np.mean(writer))
    assert cases["forecast"] <= cases["need"]


@pytest.mark.parametrize("value", [0.0, 1.5, -0.1])
def test_attainment_target_is_validated(value: float) -> None:
    with pytest.raises(ConfigError, match="attainment_target"):
        make_config(slo={"latency_p95_s": 60, "attainment_target": value})
