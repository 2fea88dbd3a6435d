"""Demand forecasters, online forecast-quality tracking and rolling-origin evaluation.

    from elastiscale.forecasting import build_forecaster, Forecast

    fc = build_forecaster("auto")               # or "ewma", "holt-winters", ... (registry names)
    fc.fit(t_s, demand_rps)                     # seconds, rates; NaN = missing
    fc.update(now_s, observed_rps)              # each control tick
    result = fc.predict([lead_time_s], now_s=now_s)
    if isinstance(result, Forecast):            # else NoForecast(reason)
        result.mean, result.p90, result.p99     # arrays aligned with the horizons
    fc.quality(lead_time_s)                     # recent asymmetric error, p90 coverage, ...

Modules: base (the contract and the shared machinery), series (input checks, binning),
intervals (quantiles from tracked errors), quality (asymmetric error, error tracker),
seasonality (period detection), naive, smoothing, holt_winters, arima, ensemble, selection
(the forecasters), members (what ensemble and selection share), evaluation, plots and cli
(`elastiscale forecast-eval`).
"""

from typing import Any

from elastiscale.forecasting.base import Forecaster, RefitJob
from elastiscale.forecasting.params import ForecasterParams
from elastiscale.forecasting.quality import HorizonQuality, asymmetric_error
from elastiscale.forecasting.results import FitStatus, Forecast, ForecastResult, NoForecast
from elastiscale.forecasting.seasonality import SeasonalPeriod, detect_periods
from elastiscale.forecasting.series import ForecastInputError


def build_forecaster(name: str, params: Any = None, config: Any = None) -> Forecaster:
    """The forecaster registered as `name` (see `elastiscale.registry`), with `params`."""
    from elastiscale import registry

    forecaster = registry.build("forecaster", name, config, params)
    if not isinstance(forecaster, Forecaster):
        raise TypeError(f"forecaster {name!r} built a {type(forecaster).__name__}")
    return forecaster


__all__ = [
    "FitStatus",
    "Forecast",
    "ForecastInputError",
    "ForecastResult",
    "Forecaster",
    "ForecasterParams",
    "HorizonQuality",
    "NoForecast",
    "RefitJob",
    "SeasonalPeriod",
    "asymmetric_error",
    "build_forecaster",
    "detect_periods",
]
