"""Invariants of every forecast, for arbitrary (gappy, irregular, spiky) demand histories."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elastiscale import registry
from elastiscale.forecasting import Forecast, NoForecast

# The cheap forecasters, plus the composites over them (the statsmodels-backed ones are checked
# on fixed series in test_forecast_models.py; a fit per hypothesis example would be too slow).
CHEAP = {
    "last-value": {},
    "seasonal-naive": {"period": 600.0},
    "ewma": {},
    "holt": {},
    "ensemble": {
        "members": ["ewma", "holt", {"name": "seasonal-naive", "params": {"period": 600.0}}]
    },
    "auto": {
        "candidates": ["last-value", "ewma", "holt"],
        "combined": ["ewma", "holt"],
    },
}

rates = st.one_of(
    st.floats(0.0, 1e6, allow_nan=False),
    st.just(math.nan),  # missing
    st.sampled_from([0.0, 1e-9, 5e5]),  # zeros, tiny values, spikes
)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[float], list[float]]:
    gaps = draw(st.lists(st.floats(0.5, 400.0), min_size=1, max_size=150))
    t = np.cumsum(gaps).tolist()
    values = draw(st.lists(rates, min_size=len(t), max_size=len(t)))
    return t, values


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(CHEAP)),
    history=histories(),
    horizons=st.lists(st.floats(0.0, 7200.0), min_size=1, max_size=4),
    later=st.lists(rates, max_size=20),
)
def test_forecasts_are_finite_nonnegative_and_ordered(
    name: str,
    history: tuple[list[float], list[float]],
    horizons: list[float],
    later: list[float],
) -> None:
    t, values = history
    fc = registry.build("forecaster", name, None, CHEAP[name])
    fc.fit(t, values)
    now = t[-1]
    for value in later:
        now += 45.0
        fc.update(now, value)
    result = fc.predict(horizons, now_s=now + 45.0)
    if all(math.isnan(v) for v in values + later):
        assert isinstance(result, NoForecast)
        return
    if isinstance(result, NoForecast):  # only when nothing observed has closed yet
        assert all(math.isnan(v) for v in values)
        return
    assert isinstance(result, Forecast)
    for array in (result.mean, result.p90, result.p99):
        assert array.shape == (len(horizons),) and np.isfinite(array).all()
    assert (result.mean >= 0).all()
    assert (result.p90 >= result.mean).all() and (result.p99 >= result.p90).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(CHEAP)),
    level=st.floats(0.0, 1e6, allow_nan=False),
    bins=st.integers(1, 400),
    missing=st.sets(st.integers(0, 399), max_size=50),
    horizons=st.lists(st.floats(1.0, 3600.0), min_size=1, max_size=3),
)
def test_a_constant_series_is_forecast_as_that_constant(
    name: str, level: float, bins: int, missing: set[int], horizons: list[float]
) -> None:
    values = [math.nan if i in missing else level for i in range(bins)]
    values[-1] = level
    t = [60.0 * i for i in range(bins)]
    fc = registry.build("forecaster", name, None, CHEAP[name]).fit(t, values)
    result = fc.predict(horizons)
    assert isinstance(result, Forecast)
    np.testing.assert_allclose(result.mean, level, rtol=1e-9, atol=1e-12)
    if bins - len(missing) >= 100:  # enough history to know it does not vary
        np.testing.assert_allclose(result.p99, level, rtol=1e-9, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    scale=st.floats(0.01, 100.0),
    seed=st.integers(0, 1000),
)
def test_scaling_demand_scales_the_forecast(scale: float, seed: int) -> None:
    """Requests/s or tokens/s: a unit change must not change the shape of the forecast."""
    rng = np.random.default_rng(seed)
    y = 50.0 + 10.0 * np.sin(np.arange(300) / 20.0) + rng.normal(0.0, 2.0, 300)
    t = np.arange(300) * 60.0
    base = registry.build("forecaster", "holt", None, {}).fit(t, y).predict([300.0, 900.0])
    scaled = registry.build("forecaster", "holt", None, {}).fit(t, y * scale).predict([300, 900])
    assert isinstance(base, Forecast) and isinstance(scaled, Forecast)
    np.testing.assert_allclose(scaled.mean, base.mean * scale, rtol=1e-6)
    np.testing.assert_allclose(scaled.p90, base.p90 * scale, rtol=1e-6)
