"""The stationary queueing delay of the fast fidelity's latency table (`fluid_latency`): one
step per case, what a call arriving then meets, against the scalar formula
(`queueing_delay`), and no arithmetic warning whatever the step's servers."""

from __future__ import annotations

import numpy as np
import pytest

from elastiscale.backtest.fluid_latency import (
    ArrivalWaits,
    LatencyTable,
    StepLoad,
    arrival_waits,
    queueing_delay,
    table_of,
)

HOLD_S = 4.0


def one_step(ready: float, slots: int, utilization: float, queue: float = 0.0) -> LatencyTable:
    """The table of one step of 10 s (longer than a hold, so utilization is not smoothed) with
    a call."""
    capacity_s = ready * slots * 10.0
    one = np.array([1.0])
    waits = arrival_waits(one, np.zeros(1), np.zeros(1), np.zeros(1), one * HOLD_S)
    load = StepLoad(
        capacity=np.array([capacity_s]),
        busy=np.array([capacity_s * utilization]),
        ready=np.array([ready]),
        queue=np.array([queue]),
        arrived=one > 0,
        slots=slots,
        mean_hold_s=HOLD_S,
    )
    return table_of(ArrivalWaits(*waits), load, 10.0, 1)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(
    ("ready", "slots", "utilization", "queue", "p_wait", "mean_wait_s"),
    [
        # the docstring's worked numbers: 6 slots at 0.9, P(wait) 0.75, mean 4 / 1.2 = 3.3 s
        (1.0, 6, 0.9, 0.0, 0.749, 3.333),
        # utilization past the cap (0.95) is taken at the cap: 4 / (2 x 6 x 0.05) = 6.7 s
        (1.0, 6, 1.0, 0.0, 0.869, 6.667),
        (2.0, 4, 0.5, 0.0, 0.106, 0.5),  # 8 servers: 0.5^(sqrt(18) - 1), 4 / (2 x 8 x 0.5)
        (1.0, 6, 0.9, 3.0, 0.0, 0.0),  # a backlog: the fluid queue's own wait, not this one
        (0.5, 1, 0.9, 0.0, 0.0, 0.0),  # less than one server
        # a sliver of a replica (scaled to 0 at 2e-311 s into the step): no wait, no overflow
        (4e-311, 1, 0.5, 0.0, 0.0, 0.0),
        (1.0, 6, 0.0, 0.0, 0.0, 0.0),  # idle
    ],
)
def test_the_stationary_wait_of_one_step(
    ready: float, slots: int, utilization: float, queue: float, p_wait: float, mean_wait_s: float
) -> None:
    table = one_step(ready, slots, utilization, queue)
    assert table.p_wait[0] == pytest.approx(p_wait, abs=1e-3)
    assert table.mean_wait[0] == pytest.approx(mean_wait_s, abs=1e-3)
    assert np.isfinite(table.mean_wait).all()
    if queue == 0.0:  # the table is the scalar formula, step by step
        want = queueing_delay(utilization, ready * slots, HOLD_S)
        assert (table.p_wait[0], table.mean_wait[0]) == pytest.approx(want)
