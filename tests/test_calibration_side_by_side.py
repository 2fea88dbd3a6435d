"""A calibration's candidates stepped side by side on one ingress forecaster give the same
numbers as one by one, and a follower that asks what the leader did not is caught.

backtest/side_by_side.py and controllers/forecast_sharing.py."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from elastiscale.backtest import calibration as replay_module
from elastiscale.backtest.calibration import replay_candidates
from elastiscale.controllers.calibration import CANDIDATES, ObservedTraffic
from elastiscale.controllers.demand import DemandForecast
from elastiscale.controllers.forecast_sharing import DivergedError, ForecastShare, Turns
from test_feedforward import make_config

LABELS = [label for label, _ in CANDIDATES]
STEP_S = 30.0


def _traffic(hours: float, scored_bins: int | None = None) -> ObservedTraffic:
    t_s = np.arange(0.0, hours * 3600.0, STEP_S)
    rng = np.random.default_rng(3)
    rate = 20.0 + 10.0 * np.sin(2 * np.pi * t_s / 1800.0) + rng.gamma(2.0, 2.0, t_s.size)
    rate[15] = math.nan  # a gap, filled by the replay
    return ObservedTraffic(t_s, rate, None, STEP_S, scored_bins)


def _params() -> list[dict[str, Any]]:
    base = {"refit": "inline", "self_calibration": False}
    return [{**base, **dict(setting)} for _, setting in CANDIDATES]


def _one_by_one(*args: Any, **kwargs: Any) -> Any:
    raise DivergedError("forced: one by one")


@pytest.mark.parametrize("scored_bins", [None, 120])
def test_side_by_side_is_one_by_one(
    monkeypatch: pytest.MonkeyPatch, scored_bins: int | None
) -> None:
    config = make_config()
    traffic = _traffic(3.0, scored_bins)
    calls: list[int] = []
    side_by_side = replay_module._side_by_side

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return side_by_side(*args, **kwargs)

    monkeypatch.setattr(replay_module, "_side_by_side", counted)
    shared = replay_candidates(config, traffic, _params(), LABELS, 60.0, "hpa")
    assert calls, "the candidates were not stepped side by side"
    monkeypatch.setattr(replay_module, "_side_by_side", _one_by_one)
    alone = replay_candidates(config, traffic, _params(), LABELS, 60.0, "hpa")
    assert shared == alone  # every attainment and GPU-hour, to the bit


def test_a_diverged_follower_falls_back_to_the_same_numbers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = make_config()
    traffic = _traffic(2.0)
    want = replay_candidates(config, traffic, _params(), LABELS, 60.0)
    real_observe = DemandForecast.observe
    seen = {"n": 0}

    def observe(self: DemandForecast, at_s: float, rate: float | None) -> None:
        share = self._share
        if share is not None and not share.turns.leading:
            seen["n"] += 1
            if seen["n"] == 50:  # one follower's reading off by a hair
                rate = None if rate is None else rate * (1.0 + 1e-12)
        real_observe(self, at_s, rate)

    diverged: list[str] = []
    side_by_side = replay_module._side_by_side

    def watched(*args: Any, **kwargs: Any) -> Any:
        try:
            return side_by_side(*args, **kwargs)
        except DivergedError as exc:
            diverged.append(str(exc))
            raise

    monkeypatch.setattr(DemandForecast, "observe", observe)
    monkeypatch.setattr(replay_module, "_side_by_side", watched)
    got = replay_candidates(config, traffic, _params(), LABELS, 60.0)
    assert seen["n"] >= 50 and len(diverged) == 1
    assert got == want


def _forecast() -> DemandForecast:
    return DemandForecast.build("ewma", {"step_s": 30.0}, quantile=0.95, rate_window_s=60.0)


def test_a_follower_must_make_the_leaders_calls_of_the_tick() -> None:
    turns = Turns()
    leader, follower = _forecast(), _forecast()
    share = ForecastShare(turns, leader)
    leader.share(share)
    follower.share(share)
    assert follower.forecaster is leader.forecaster
    turns.lead()
    leader.observe(60.0, 5.0)
    first = leader.outlook(4)
    turns.follow()
    follower.observe(60.0, 5.0)  # the same: no second update of the forecaster
    again = follower.outlook(4)
    share.end_turn()
    assert first is not None and again is not None
    assert np.array_equal(first.demand, again.demand)
    turns.lead()
    leader.observe(90.0, 6.0)
    turns.follow()
    with pytest.raises(DivergedError):
        follower.observe(90.0, 7.0)
    turns.lead()
    leader.observe(120.0, 6.0)
    turns.follow()
    with pytest.raises(DivergedError):
        share.end_turn()  # the follower skipped the leader's observation
