"""A calibration's candidates replayed side by side, tick by tick, on one ingress forecaster.

The candidates of a self-calibration (backtest/calibration.py) replay the same observed
ingress from the same warm state and differ only in what they do with their forecasts
(controllers/calibration.py's settings), so their ingress forecasters would repeat the same
work: the same updates, refits and forecasts. Here they run in lock step instead: each tick the
first candidate (the leader) steps first and updates the one forecaster; then each other
candidate (a follower) steps, and its calls on the forecaster only read it
(controllers/forecast_sharing.py). A follower whose settings give the same forecast as the
leader's (the same burst reserve target) takes the leader's whole `DemandForecast`, its
outlooks too; one with another target keeps its own on the leader's forecaster.

Any call of a follower that is not the leader's of the same tick raises `DivergedError`: the
caller then replays the candidates one by one from fresh policies. The results are the same
numbers as one by one, by construction where it runs and by that fallback where it does not.
"""

from __future__ import annotations

from collections.abc import Sequence

from elastiscale.backtest.model import SimulationResult
from elastiscale.backtest.runner import SteppedRun
from elastiscale.controllers.feedforward import ElastiscalePolicy
from elastiscale.controllers.forecast_sharing import DivergedError, ForecastShare, Turns

__all__ = ["DivergedError", "share_forecasts", "step_side_by_side"]


def share_forecasts(
    leader: ElastiscalePolicy, followers: Sequence[ElastiscalePolicy], turns: Turns
) -> list[ForecastShare]:
    """Put the followers' ingress forecasts on the leader's (the warm states are copies of one,
    controllers/warm_copy.py): the leader's forecast itself where the follower's has the same
    settings, else the follower's own on the leader's forecaster."""
    shares = []
    for key, forecast in leader._forecasts.items():
        share = ForecastShare(turns, forecast)
        forecast.share(share)
        shares.append(share)
        for follower in followers:
            own = follower._forecasts.get(key)
            if own is None:
                continue  # it forecasts on its own, when it first needs to
            if own.attainment_target == forecast.attainment_target:
                follower._forecasts[key] = forecast
            else:
                own.share(share)
    return shares


def step_side_by_side(
    runs: Sequence[SteppedRun], turns: Turns, shares: Sequence[ForecastShare]
) -> list[SimulationResult]:
    """Every run to its end, a tick each in turn, the leader's (`runs[0]`) first; their results.
    `DivergedError` when a follower's forecast calls are not the leader's (the runs are spoilt)."""
    leader, followers = runs[0], runs[1:]
    if any(run.ticks != leader.ticks for run in followers):
        raise DivergedError("the candidates tick at different times")
    going = True
    while going:
        turns.lead()
        going = leader.step()
        for run in followers:
            turns.follow()
            run.step()
            for share in shares:
                share.end_turn()
    return [run.finish() for run in runs]
