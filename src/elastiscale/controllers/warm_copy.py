"""One warm start for several `elastiscale` candidates: what a warmed policy learned, copied
into a fresh one that differs from it only in the settings a calibration chooses.

A self-calibration (calibration.py) replays the observed ingress under each candidate, each
first warmed on the same half of the window (`ElastiscalePolicy.warm_start`). The warm start
feeds only the fan-out estimates, the arrival variability and noise, and the ingress forecasts
(their models, gates and burst statistics), and none of that depends on `scale_down_lookback` or
`burst_reserve_cap`; of `burst_reserve` it depends only on the burst reserve table, which a
policy without the reserve never computes (its `DemandForecast` has no attainment target, so its
`_reserve` stays None at every refresh, while the refresh times, quantiles and errors are the
same). So a candidate's warm state is a copy of the first candidate's with, where the reserve is
off, the table dropped: the same numbers as its own warm start, at the price of a deep copy
instead of replaying the half window once more (the replay's forecaster updates, refits and
refreshes).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from elastiscale.controllers.feedforward import ElastiscalePolicy

#: The parameters a warm state does not depend on (besides the burst reserve's target).
CALIBRATED = {"burst_reserve", "scale_down_lookback", "burst_reserve_cap"}


def copy_warm_state(
    source: ElastiscalePolicy, target: ElastiscalePolicy, *, shared_forecasters: bool = False
) -> bool:
    """Give the fresh `target` the state `source` learned in its warm start; False (nothing
    done) when that would not be what `target`'s own warm start learns. With
    `shared_forecasters`, `target`'s forecasts hold `source`'s forecasters themselves, not
    copies: for candidates that will be stepped side by side on them
    (backtest/side_by_side.py), where a copy would be dropped unread."""
    if source.calibrator is not None or target.calibrator is not None:
        return False  # a warm start ends with a calibration of its own
    if target._forecasts or target._components:
        return False  # not a fresh policy
    if source.refits.failed or source.refits.in_flight():
        return False  # a failed refit leaves a retry time behind in the scheduler
    if source.params.model_dump(exclude=CALIBRATED) != target.params.model_dump(exclude=CALIBRATED):
        return False
    wanted = target._reserve_target()
    for forecast in source._forecasts.values():
        if forecast.attainment_target != wanted and wanted is not None:
            return False  # the reserve table `target` needs was never computed
    memo: dict[int, Any] = {id(source.refits): target.refits, id(source.pipeline): target.pipeline}
    if shared_forecasters:
        memo.update((id(f.forecaster), f.forecaster) for f in source._forecasts.values())
    target.fanout = copy.deepcopy(source.fanout, memo)
    target.arrivals = copy.deepcopy(source.arrivals, memo)
    target.surge_noise = copy.deepcopy(source.surge_noise, memo)
    forecasts = copy.deepcopy(source._forecasts, memo)
    for forecast in forecasts.values():
        if forecast.attainment_target != wanted:
            forecast.attainment_target = wanted
            forecast._reserve = None  # what every refresh sets without a target
    target._forecasts = forecasts
    return True
