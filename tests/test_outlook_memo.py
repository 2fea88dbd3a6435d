"""A demand outlook between two closed bins reuses the model's part of the previous one
(controllers/demand.py, `_model_memo`): the forecaster's `version` says when its answers may
have changed, and every outlook is the same bits as one computed afresh."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from elastiscale.controllers.demand import DemandForecast
from elastiscale.forecasting.base import Forecaster

STEP_S = 30.0


def _forecast() -> DemandForecast:
    return DemandForecast.build(
        "auto",
        {"step_s": STEP_S},
        quantile=0.9,
        rate_window_s=60.0,
        attainment_target=0.99,
    )


def _rate(t_s: float) -> float:
    return 5.0 + 3.0 * math.sin(t_s / 900.0) + (2.0 if int(t_s // 600) % 7 == 0 else 0.0)


def _same(a: object, b: object) -> bool:
    """Field by field, arrays by their bytes."""
    for field in dataclasses.fields(a):  # type: ignore[arg-type]
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, np.ndarray):
            if x.dtype != y.dtype or x.tobytes() != y.tobytes():
                return False
        elif x != y and not (isinstance(x, float) and math.isnan(x) and math.isnan(y)):
            return False
    return True


def test_version_counts_what_changes_the_answers() -> None:
    forecaster: Forecaster = _forecast().forecaster
    seen = forecaster.version
    forecaster.update(0.0, 4.0)  # opens the first bin: nothing closed
    assert forecaster.version == seen
    forecaster.update(STEP_S + 1.0, 5.0)  # closes bin 0
    assert forecaster.version > seen
    seen = forecaster.version
    forecaster.update(STEP_S + 2.0, 5.0)  # the same open bin
    assert forecaster.version == seen
    forecaster.asymmetric_error(40 * STEP_S)  # a horizon not tracked before
    assert forecaster.version > seen
    seen = forecaster.version
    forecaster.refit()
    assert forecaster.version > seen


def test_outlooks_between_bins_are_those_computed_afresh() -> None:
    demand = _forecast()
    plain = _forecast()  # fed the same, with its memo dropped before every outlook
    reused = 0
    for tick in range(1200):  # 15 s ticks on 30 s bins: every other one closes a bin
        at_s = 15.0 * tick
        for one in (demand, plain):
            one.observe(at_s, _rate(at_s))
        memo = demand._model_memo
        plain._model_memo = None
        bins = 6 + (tick // 50) % 11  # the same for a while, then others
        got = demand.outlook(bins)
        want = plain.outlook(bins)
        assert (got is None) == (want is None)
        if got is not None and want is not None:
            assert _same(got, want), tick
        if memo is not None and demand._model_memo is not None:
            reused += demand._model_memo[3] is memo[3]
    assert reused > 100
