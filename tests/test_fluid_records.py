"""The fluid model's arrival records sealed a stretch at a time (`backtest.fluid_records`) are
what filling the whole run's records at once gives (`fluid_latency.arrival_waits`), bit for bit,
whatever the seals and however late a queued cohort's entries are written."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale.backtest import stepcolumn
from elastiscale.backtest.fluid_latency import arrival_waits
from elastiscale.backtest.fluid_records import ArrivalRecords
from elastiscale.backtest.runs import dense

maybe = st.sampled_from([math.nan, 0.0, -0.0, 0.5, 3.0]) | st.floats(0.0, 100.0)
#: one arrival step: (arrived, dropped, first wait, last wait, hold, steps its cohort stays)
step = st.tuples(
    st.sampled_from([0.0, 1.0, 2.5]) | st.floats(0.0, 10.0),
    st.sampled_from([0.0, 0.0, 1.0]) | st.floats(0.0, 10.0),
    maybe,
    maybe,
    maybe,
    st.integers(0, 12),
)


def bits(values: npt.ArrayLike) -> npt.NDArray[np.int64]:
    return np.asarray(values, dtype=np.float64).view(np.int64)


@settings(max_examples=200, deadline=None)
@given(st.lists(step, max_size=120), st.integers(2, 9), st.integers(0, 8))
def test_sealing_by_stretches_is_filling_the_whole_run(
    steps: list[tuple[float, float, float, float, float, int]], chunk: int, unused: int
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stepcolumn, "CHUNK", chunk)
        total = len(steps) + unused  # steps at the end that nothing writes
        records = ArrivalRecords(total)
        queued: list[int] = []  # arrival steps whose final entries are still to be written
        done_at = [j + stay for j, (*_, stay) in enumerate(steps)]
        seal_at = chunk
        for j, (arrived, _, _, _, hold, _) in enumerate(steps):
            if j >= seal_at:  # as the simulator seals: before the oldest queued cohort
                records.seal(min(queued[0], j) if queued else j, j)
                seal_at = j + chunk
            k = j - records.base
            records.arrived[k] = arrived
            records.hold[k] = hold
            records.wait_first[k] = 99.0  # overwritten when the cohort leaves
            queued.append(j)
            for s in [s for s in queued if done_at[s] <= j]:  # cohorts leaving, oldest first
                if s != queued[0]:
                    break
                _, dropped, first, last, _, _ = steps[s]
                k = s - records.base
                records.dropped[k] += dropped
                records.wait_first[k] = first
                records.wait_last[k] = last
                queued.pop(0)
        for s in queued:  # the run ends with these still queued: what they wrote so far
            steps[s] = (steps[s][0], 0.0, 99.0, math.nan, steps[s][4], 0)
        got = records.waits(total)
    rows = [s[:5] for s in steps] + [(0.0, 0.0, math.nan, math.nan, math.nan)] * unused
    arrived, dropped, first, last, hold = (
        np.asarray([row[i] for row in rows], dtype=np.float64) for i in range(5)
    )
    want = arrival_waits(arrived, dropped, first, last, hold)
    for name, column, expected in zip(
        ("first", "last", "hold", "p_drop"),
        (got.first, got.last, got.hold, got.p_drop),
        want,
        strict=True,
    ):
        assert np.array_equal(bits(dense(column)), bits(expected)), name
    assert records.nbytes == 0  # handed over: nothing kept
