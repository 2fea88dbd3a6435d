"""Forecasters on synthetic series and a fake clock: fallback, gaps, bad input, each method."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from elastiscale import registry
from elastiscale.config import load_config
from elastiscale.forecasting import Forecast, Forecaster, NoForecast
from elastiscale.forecasting.arima import ArimaModel
from elastiscale.forecasting.grid import GridContext
from elastiscale.forecasting.holt_winters import HoltWintersModel
from elastiscale.forecasting.intervals import horizon_bins
from elastiscale.forecasting.series import ForecastInputError

NAMES = [
    "last-value",
    "seasonal-naive",
    "ewma",
    "holt",
    "holt-winters",
    "arima",
    "ensemble",
    "auto",
]
HOURLY = {"max_period_s": 3600.0}  # keeps Holt-Winters' detection on hour-long cycles


def build(name: str, **params: Any) -> Forecaster:
    fc = registry.build("forecaster", name, None, params)
    assert isinstance(fc, Forecaster)
    return fc


def forecast(fc: Forecaster, horizons_s: list[float], now_s: float | None = None) -> Forecast:
    result = fc.predict(horizons_s, now_s=now_s)
    assert isinstance(result, Forecast), result
    return result


def hourly_wave(bins: int, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """100 +- 40 req/s with a one-hour period, at 60 s bins."""
    rng = np.random.default_rng(seed)
    phase = 2 * np.pi * np.arange(bins) / 60.0
    return 100.0 + 40.0 * np.sin(phase) + rng.normal(0.0, noise, bins)


# --------------------------------------------------------------------------------------------
# The contract, for every registered forecaster


@pytest.mark.parametrize("name", NAMES)
def test_registry_builds_each_forecaster_standalone(name: str) -> None:
    fc = registry.build("forecaster", name, None, {})
    assert isinstance(fc, Forecaster) and fc.name == name
    assert registry.check("forecaster", name, {"stepp_s": 60}, path="f") == [
        "f.stepp_s: unknown key (check the spelling)"
    ]


@pytest.mark.parametrize("name", NAMES)
def test_no_forecast_before_any_observation(name: str) -> None:
    fc = build(name)
    result = fc.predict([300.0], now_s=1000.0)
    assert isinstance(result, NoForecast) and result.reason


@pytest.mark.parametrize("name", ["last-value", "ewma", "holt", "seasonal-naive"])
def test_all_missing_history_is_no_forecast_with_reason(name: str) -> None:
    fc = build(name).fit(np.arange(5) * 60.0, np.full(5, np.nan))
    result = fc.predict([60.0])
    assert isinstance(result, NoForecast) and "missing" in result.reason


@pytest.mark.parametrize(
    ("name", "expected_model"),
    [
        ("last-value", "last-value"),
        ("ewma", "ewma"),
        ("holt", "ewma"),
        ("seasonal-naive", "last-value"),
        ("holt-winters", "ewma"),
        ("arima", "ewma"),
        ("ensemble", "ensemble"),  # its ewma member needs one point
        ("auto", "auto"),
    ],
)
def test_one_point_is_enough_for_a_forecast_saying_which_model(
    name: str, expected_model: str
) -> None:
    fc = build(name)
    fc.update(0.0, 12.0)
    assert isinstance(fc.predict([60.0], now_s=fc.step_s - 1.0), NoForecast)  # bin still open
    got = forecast(fc, [60.0, 300.0], now_s=fc.step_s)
    assert got.model == expected_model
    assert got.mean.tolist() == [12.0, 12.0]
    if expected_model != name:
        assert got.fallback_reason is not None
        assert got.fallback_reason.startswith("not enough history")


def test_short_history_falls_back_then_refits_when_enough() -> None:
    fc = build("holt-winters", **HOURLY)
    y = hourly_wave(100)
    fc.fit(np.arange(100) * 60.0, y)
    got = forecast(fc, [300.0])
    assert got.model == "ewma" and "needs 180 observed bins (3 h)" in str(got.fallback_reason)
    assert fc.status.fallback_reason == got.fallback_reason
    assert not fc.refit_due(100 * 60.0)
    more = hourly_wave(180)
    for i in range(100, 180):
        fc.update(i * 60.0, float(more[i]))
    fc.advance(180 * 60.0)
    assert fc.refit_due(180 * 60.0)
    fc.refit()
    got = forecast(fc, [300.0])
    assert got.model == "holt-winters" and got.fallback_reason is None
    assert not fc.refit_due(180 * 60.0)
    assert fc.refit_due(180 * 60.0 + 86400.0)


@pytest.mark.parametrize("name", ["last-value", "ewma", "holt", "seasonal-naive", "auto"])
def test_gaps_are_missing_not_zero(name: str) -> None:
    """A level of 50 req/s with a 40-minute hole (no points at all, then NaN points): the
    forecast stays near 50 instead of being dragged towards 0."""
    fc = build(name)
    t = np.arange(0, 6 * 3600, 60.0)
    fc.fit(t, np.full(t.size, 50.0))
    now = float(t[-1]) + 60.0
    fc.advance(now + 40 * 60.0)  # 40 minutes without a point
    for i in range(10):
        fc.update(now + 40 * 60.0 + i * 60.0, math.nan)
    got = forecast(fc, [300.0], now_s=now + 51 * 60.0)
    assert got.mean[0] == pytest.approx(50.0, rel=1e-6)


def test_update_and_fit_refuse_bad_input() -> None:
    fc = build("ewma")
    with pytest.raises(ForecastInputError, match="values\\[2\\] = -1 at t_s = 120 is negative"):
        fc.fit([0.0, 60.0, 120.0], [1.0, 2.0, -1.0])
    with pytest.raises(ForecastInputError, match="t_s\\[1\\] = 0 is earlier than t_s\\[0\\] = 60"):
        fc.fit([60.0, 0.0], [1.0, 2.0])
    fc.update(120.0, 3.0)
    with pytest.raises(ForecastInputError, match="earlier than the previous point at 120"):
        fc.update(60.0, 3.0)
    with pytest.raises(ForecastInputError, match="value = -2 at t_s = 180 is negative"):
        fc.update(180.0, -2.0)
    with pytest.raises(ForecastInputError, match="horizons must be finite seconds"):
        fc.predict([-5.0])


def test_constant_series_is_forecast_as_that_constant_with_no_spread() -> None:
    t = np.arange(0, 3 * 3600, 60.0)
    for name in NAMES:
        params = {"step_s": 300.0} if name == "arima" else {}
        fc = build(name, **params).fit(t, np.full(t.size, 7.5))
        got = forecast(fc, [60.0, 300.0, 900.0])
        np.testing.assert_allclose(got.mean, 7.5, rtol=1e-9, err_msg=name)
        np.testing.assert_allclose(got.p99, 7.5, rtol=1e-9, err_msg=name)


def test_irregular_points_are_resampled_to_the_step() -> None:
    """Points every 7 to 43 s on a ramp of 1 req/s per minute: Holt follows the ramp."""
    rng = np.random.default_rng(3)
    t = np.cumsum(rng.uniform(7.0, 43.0, 1500))
    fc = build("holt").fit(t, t / 60.0)
    now = float(t[-1])
    got = forecast(fc, [600.0], now_s=now)
    # The bin ending at or after now + 600 s has a mean rate near (now + 600 - 30) / 60.
    assert got.mean[0] == pytest.approx((now + 570.0) / 60.0, rel=0.02)
    ewma = forecast(build("ewma").fit(t, t / 60.0), [600.0], now_s=now)
    assert ewma.mean[0] < got.mean[0]  # a level without trend lags the ramp


def test_horizon_maps_to_the_bin_ending_at_or_after_it() -> None:
    assert [horizon_bins(h, 60.0) for h in (0.0, 1.0, 60.0, 61.0, 300.0, 900.0)] == [
        1,
        1,
        1,
        2,
        5,
        15,
    ]
    fc = build("seasonal-naive", period=600.0)
    y = np.arange(30, dtype=float)  # bin i holds i; period 10 bins
    fc.fit(np.arange(30) * 60.0, y)
    got = forecast(fc, [60.0, 300.0], now_s=30 * 60.0)
    assert got.mean.tolist() == [20.0, 24.0]  # bins 30 and 34 repeat bins 20 and 24
    got = forecast(fc, [60.0], now_s=30 * 60.0 + 20.0)  # mid-bin: the target is bin 31
    assert got.mean.tolist() == [21.0]


def test_seasonal_models_follow_the_cycle_and_smoothers_do_not() -> None:
    y = hourly_wave(6 * 60, noise=1.0)
    t = np.arange(y.size) * 60.0
    truth = 100.0 + 40.0 * np.sin(2 * np.pi * (y.size + 14) / 60.0)  # bin 15 ahead
    errors = {}
    for name, params in [
        ("seasonal-naive", {}),
        ("holt-winters", HOURLY),
        ("ewma", {}),
    ]:
        got = forecast(build(name, **params).fit(t, y), [900.0])
        errors[name] = abs(got.mean[0] - truth)
    assert errors["seasonal-naive"] < 5 and errors["holt-winters"] < 5
    assert errors["ewma"] > 20


def test_clone_is_unfitted_with_the_same_configuration() -> None:
    fc = build("ewma", half_life_s=120.0, horizons_s=[600.0]).fit([0.0, 60.0], [1.0, 2.0])
    twin = fc.clone()
    assert twin.params == fc.params and twin is not fc
    assert isinstance(twin.predict([60.0]), NoForecast)
    assert isinstance(fc.predict([60.0]), Forecast)


def test_lead_times_of_the_pipeline_are_tracked() -> None:
    config = load_config(
        {
            "pipeline": {
                "name": "p",
                "slo": {"latency_p95_s": 10},
                "components": {
                    "router": {
                        "ingress": True,
                        "capacity_per_replica": 50,
                        "service_time_s": 0.05,
                        "startup_s": 15,
                        "replicas": {"max": 5},
                    },
                    "llm": {
                        "capacity_per_replica": 2,
                        "service_time_s": 3,
                        "startup_s": 285,
                        "replicas": {"max": 5},
                    },
                },
                "edges": [{"from": "router", "to": "llm"}],
            },
            "control": {"interval_s": 15},
        }
    )
    fc = registry.build("forecaster", "ewma", config, {"horizons_s": [60.0]})
    t = np.arange(0, 4 * 3600, 60.0)
    fc.fit(t, np.full(t.size, 3.0))
    # lead times 30 s (1 bin) and 300 s (5 bins) join the configured 60 s (1 bin)
    assert sorted(fc.qualities()) == [60.0, 300.0]


def test_background_refit_catches_up_with_bins_seen_meanwhile() -> None:
    y = hourly_wave(400, noise=2.0, seed=5)
    t = np.arange(y.size) * 60.0
    live = build("holt").fit(t[:300], y[:300])
    job = live.start_refit()
    for i in range(300, 400):  # the control loop goes on while the job would run
        live.update(float(t[i]), float(y[i]))
    live.advance(400 * 60.0)
    job.run()
    live.adopt(job)
    direct = build("holt").fit(t[:300], y[:300])
    for i in range(300, 400):
        direct.update(float(t[i]), float(y[i]))
    direct.advance(400 * 60.0)
    np.testing.assert_allclose(forecast(live, [300.0]).mean, forecast(direct, [300.0]).mean)
    with pytest.raises(RuntimeError, match="has run"):
        live.adopt(live.start_refit())


def test_gap_longer_than_history_starts_over() -> None:
    fc = build("ewma", history_s=3600.0)
    fc.fit(np.arange(60) * 60.0, np.full(60, 5.0))
    fc.update(10 * 3600.0, 9.0)  # ten hours later
    got = forecast(fc, [60.0], now_s=10 * 3600.0 + 60.0)
    assert got.mean.tolist() == [9.0]
    assert fc.status.history_bins == 1


# --------------------------------------------------------------------------------------------
# Models against statsmodels


def test_holt_winters_recursion_matches_statsmodels() -> None:
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    y = hourly_wave(60 * 8, noise=3.0, seed=2) + np.linspace(0, 20, 480)
    model = HoltWintersModel(3600.0, 3600.0, profile_smoothing_s=0.0, tune_for_horizons=False)
    model.fit(y, GridContext(60.0, first_bin=0, horizons=(1, 5)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = ExponentialSmoothing(
            y,
            trend="add",
            damped_trend=True,
            seasonal="add",
            seasonal_periods=60,
            initialization_method="heuristic",
        ).fit(use_brute=False)
    ks = np.array([1, 2, 5, 61])
    np.testing.assert_allclose(model.forecast(ks), reference.forecast(61)[ks - 1], rtol=1e-9)


def test_arima_kalman_updates_match_statsmodels_append() -> None:
    from statsmodels.tsa.arima.model import ARIMA

    rng = np.random.default_rng(0)
    shocks = rng.normal(size=220)
    y = np.zeros(220)
    for i in range(2, 220):
        y[i] = 0.6 * y[i - 1] + 0.2 * y[i - 2] + shocks[i] + 0.3 * shocks[i - 1]
    y += 5.0
    y[50] = np.nan
    model = ArimaModel((2, 0, 1), 0, "detected")
    model.fit(y[:200], GridContext(900.0, first_bin=0, horizons=(1,)))
    for value in y[200:]:
        model.append(float(value))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = ARIMA(y[:200] - model.coef[0], order=(2, 0, 1), trend="n").fit(cov_type="none")
    expected = reference.append(y[200:] - model.coef[0]).forecast(4) + model.coef[0]
    np.testing.assert_allclose(model.forecast(np.array([1, 2, 4])), expected[[0, 1, 3]])


def test_seasonal_naive_history_must_hold_its_period() -> None:
    with pytest.raises(ValidationError, match="history_s = 604800 cannot hold a period of 604800"):
        build("seasonal-naive", period="weekly", history_s=7 * 86400.0)
    weekly = build("seasonal-naive", period="weekly")  # 8 days kept by default
    t = np.arange(0, 8 * 86400, 600.0)
    weekly.fit(t, 1.0 + (t // 86400) % 7)  # each weekday has its own level
    assert forecast(weekly, [600.0]).mean.tolist() == [2.0]  # day 8 repeats day 1


def test_arima_refuses_fine_steps_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="step_s"):
        build("arima", step_s=60.0)
    assert registry.check("forecaster", "arima", {"step_s": 60}, path="forecaster")[0].startswith(
        "forecaster.step_s:"
    )


# --------------------------------------------------------------------------------------------
# Ensemble and automatic selection


@pytest.mark.parametrize(
    ("combine", "expected"),
    [("mean", 15.0), ("max", 20.0), ("median", 15.0)],
)
def test_ensemble_combinations(combine: str, expected: float) -> None:
    """Last value 10, seasonal-naive (period 2 bins) 20 for the next bin."""
    fc = build(
        "ensemble",
        members=["last-value", {"name": "seasonal-naive", "params": {"period": 120.0}}],
        combine=combine,
    )
    fc.fit(np.arange(6) * 60.0, [20.0, 10.0, 20.0, 10.0, 20.0, 10.0])
    assert forecast(fc, [60.0]).mean.tolist() == [expected]


def test_weighted_ensemble_leans_on_the_member_with_lower_error() -> None:
    y = hourly_wave(5 * 60, noise=0.5, seed=1)
    fc = build(
        "ensemble",
        members=["last-value", {"name": "seasonal-naive", "params": {"period": 3600.0}}],
        combine="weighted",
    )
    fc.fit(np.arange(y.size) * 60.0, y)
    got = forecast(fc, [900.0]).mean[0]
    last, seasonal = y[-1], y[y.size + 14 - 60]
    assert abs(got - seasonal) < abs(got - last) / 4


def test_ensemble_members_cannot_override_shared_settings() -> None:
    with pytest.raises(ValidationError, match="step_s is set by the ensemble"):
        build("ensemble", members=[{"name": "ewma", "params": {"step_s": 10}}])


def test_auto_picks_the_seasonal_model_on_a_repeating_series() -> None:
    y = np.tile(np.r_[np.full(30, 10.0), np.full(30, 90.0)], 8)  # square wave, 1 h period
    fc = build("auto", candidates=["ewma", {"name": "seasonal-naive", "params": {"period": 3600}}])
    fc.fit(np.arange(y.size) * 60.0, y)
    assert set(fc.choices().values()) == {"seasonal-naive"}
    got = forecast(fc, [900.0])
    assert got.mean[0] == y[y.size + 14 - 60]


def test_auto_prefers_a_smoother_on_a_noisy_level() -> None:
    rng = np.random.default_rng(4)
    y = 50.0 + rng.normal(0.0, 5.0, 600)
    fc = build("auto", candidates=["last-value", "ewma"], combine=None)
    fc.fit(np.arange(y.size) * 60.0, y)
    assert set(fc.choices().values()) == {"ewma"}


def test_auto_refuses_itself_as_candidate() -> None:
    with pytest.raises(ValidationError, match="auto cannot be a candidate of itself"):
        build("auto", candidates=["ewma", "auto"])


def test_auto_refit_fits_the_model_once_history_suffices() -> None:
    fc = build("holt-winters", auto_refit=True, **HOURLY)
    y = hourly_wave(200, noise=1.0)
    for i in range(200):
        fc.update(i * 60.0, float(y[i]))
        if i == 100:
            assert forecast(fc, [60.0], now_s=(i + 1) * 60.0).model == "ewma"
    got = forecast(fc, [60.0], now_s=200 * 60.0)
    assert got.model == "holt-winters" and got.fallback_reason is None


def test_package_api_and_decision_record_details() -> None:
    from elastiscale.forecasting import HorizonQuality, build_forecaster

    fc = build_forecaster("ewma", {"horizons_s": [300.0]})
    t = np.arange(0, 4 * 3600, 60.0)
    fc.fit(t, 20.0 + np.sin(t / 600.0))
    got = forecast(fc, [300.0])
    details = got.details()
    assert details["forecast_model"] == "ewma" and details["forecast_fallback"] is None
    assert details["forecast_300s_mean"] == pytest.approx(got.mean[0], rel=1e-6)
    quality = fc.quality(300.0)
    assert isinstance(quality, HorizonQuality)
    assert set(quality.details()) == {
        "forecast_300s_errors",
        "forecast_300s_mae",
        "forecast_300s_asym_err",
        "forecast_300s_p90_coverage",
    }
    with pytest.raises(TypeError, match="built a"):
        registry.register("forecaster", "not-a-forecaster", lambda config, params: object())
        build_forecaster("not-a-forecaster")
