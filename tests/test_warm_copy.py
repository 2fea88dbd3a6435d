"""One warm start shared by a calibration's candidates (controllers/warm_copy.py) gives the
same numbers as each candidate's own warm start."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from elastiscale.backtest import calibration as replay_module
from elastiscale.backtest.calibration import replay_candidates
from elastiscale.controllers.calibration import CANDIDATES, ObservedTraffic
from elastiscale.controllers.warm_copy import copy_warm_state
from elastiscale.observations import Observation
from test_feedforward import TICK_S, Driver, make_config

BASE = {"refit": "inline", "self_calibration": False}
SETTINGS = {label: {**BASE, **dict(setting)} for label, setting in CANDIDATES}


def _rate(t_s: float) -> float:
    """A daily-ish wave with a burst every 15 minutes and noise: reserves have work to do."""
    noise = math.sin(t_s * 0.37) * 3.0
    burst = 25.0 if t_s % 900 < 90 else 0.0
    return 20.0 + 10.0 * math.sin(2 * math.pi * t_s / 5400.0) + burst + noise


def _snapshot(t_s: float) -> dict[str, Observation]:
    rps = _rate(t_s)
    rates = {"router": rps, "planner": 4 * rps, "writer": rps}
    return {
        n: Observation(component=n, at_s=t_s, demand_rps=r, queue_length=0.0, in_flight=0.0)
        for n, r in rates.items()
    }


def _warmed(label: str, times: np.ndarray) -> Driver:
    driver = Driver(make_config(), **SETTINGS[label])
    driver.policy.warm_start(_snapshot(float(t)) for t in times)
    return driver


@pytest.mark.parametrize("label", ["reserve+hold", "reserve", "quantile+hold"])
def test_a_copied_warm_state_decides_as_its_own_warm_start(label: str) -> None:
    times = np.arange(0.0, 3 * 3600.0, TICK_S)
    source = _warmed("reserve+hold", times)
    own = _warmed(label, times)
    copied = Driver(make_config(), **SETTINGS[label])
    assert copy_warm_state(source.policy, copied.policy)
    reserves = set()
    for t in np.arange(times[-1] + TICK_S, times[-1] + 1800.0, TICK_S):
        rates = {n: o.demand_rps for n, o in _snapshot(float(t)).items()}
        want = own.tick(float(t), rates)
        got = copied.tick(float(t), rates)
        for name in want:
            assert got[name].replicas == want[name].replicas, (t, name)
            assert got[name].reason == want[name].reason, (t, name)
            assert got[name].details == want[name].details, (t, name)
        reserves.add(want["writer"].details.get("forecast_router_reserve"))
    # The reserve candidates carry a reserve, the other none: the copy was adjusted to each.
    assert (reserves == {None}) == (label == "quantile+hold")


def test_a_state_without_the_reserve_table_is_not_copied_into_a_reserve_candidate() -> None:
    times = np.arange(0.0, 3600.0, TICK_S)
    source = _warmed("quantile+hold", times)
    target = Driver(make_config(), **SETTINGS["reserve"])
    assert not copy_warm_state(source.policy, target.policy)
    assert not target.policy._forecasts


def test_other_parameters_are_not_copied_across() -> None:
    times = np.arange(0.0, 3600.0, TICK_S)
    source = _warmed("reserve+hold", times)
    target = Driver(make_config(), **{**SETTINGS["reserve"], "quantile": 0.95})
    assert not copy_warm_state(source.policy, target.policy)


def test_a_replay_with_one_shared_warm_start_scores_as_with_one_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = make_config()
    step_s = 30.0
    t_s = np.arange(0.0, 6 * 3600.0, step_s)
    rate = np.array([_rate(float(t)) for t in t_s])
    traffic = ObservedTraffic(t_s=t_s, rate_rps=rate, tokens_per_s=None, bin_s=step_s)
    labels = list(SETTINGS)
    params: list[dict[str, Any]] = [SETTINGS[label] for label in labels]
    copies: list[bool] = []
    original = replay_module.copy_warm_state

    def counted(source: Any, target: Any, **kwargs: Any) -> bool:
        copies.append(original(source, target, **kwargs))
        return copies[-1]

    monkeypatch.setattr(replay_module, "copy_warm_state", counted)
    shared = replay_candidates(config, traffic, params, labels, 60.0)
    assert copies == [True, True]
    monkeypatch.setattr(replay_module, "copy_warm_state", lambda source, target, **kwargs: False)
    each = replay_candidates(config, traffic, params, labels, 60.0)
    assert shared == each
