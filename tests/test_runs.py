"""Run-length columns give back the very doubles appended, bit for bit (`backtest.runs`,
`backtest.stepcolumn`): NaNs with their payloads, -0.0 apart from 0.0, whatever the flushes and
whether a column stayed as runs or turned dense."""

from __future__ import annotations

import math
import struct

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale.backtest import stepcolumn
from elastiscale.backtest.runs import Runs, compact, dense, take
from elastiscale.backtest.stepcolumn import StepColumn
from elastiscale.backtest.steplog import StepLog

OTHER_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF8_0000_0000_0BAD))[0]

#: doubles that compare equal without the same bits, or not at all, and some ordinary ones
tricky = st.sampled_from([0.0, -0.0, math.nan, OTHER_NAN, math.inf, -math.inf, 1.0, 2.5, 5e-324])
value = tricky | st.floats(allow_nan=True, allow_infinity=True)
#: mostly long runs of a few values, as replica counts are, sometimes every step different
sequence = st.lists(st.tuples(tricky | value, st.integers(1, 40)), min_size=0, max_size=40).map(
    lambda runs: [v for v, n in runs for _ in range(n)]
) | st.lists(value, max_size=200)


def bits(values: npt.ArrayLike) -> npt.NDArray[np.int64]:
    return np.asarray(values, dtype=np.float64).view(np.int64)


def same(a: npt.ArrayLike, b: npt.ArrayLike) -> bool:
    return np.array_equal(bits(a), bits(b))


@settings(max_examples=200, deadline=None)
@given(sequence, st.integers(0, 300), st.sets(st.integers(0, 300)))
def test_a_step_column_reads_back_every_double_it_was_given(
    values: list[float], capacity: int, flush_at: set[int]
) -> None:
    column = StepColumn(capacity)
    for i, v in enumerate(values):
        if i in flush_at:
            column.flush()
        column.append(v)
        assert bits([column[i]]) == bits([v])  # the last step, as the metric source reads it
    assert len(column) == len(values)
    for i, v in enumerate(values):  # every step, from the runs, the array or the buffer
        assert same([column[i]], [v]), i
        assert same([column[i - len(values)]], [v]), i
    assert same(column.dense(), values)
    assert same(dense(column.compact()), values)
    if values:
        with pytest.raises(IndexError):
            column[len(values)]


@settings(max_examples=200, deadline=None)
@given(sequence, st.lists(st.integers(0, 50), max_size=8))
def test_extending_is_appending_one_by_one(values: list[float], cuts: list[int]) -> None:
    one, many = StepColumn(), StepColumn()
    for v in values:
        one.append(v)
    at = 0
    for cut in [*cuts, len(values)]:
        many.extend(np.asarray(values[at : at + cut], dtype=np.float64))
        at += cut
    assert same(one.dense(), many.dense())


def test_a_column_that_changes_at_most_steps_turns_dense_and_one_that_does_not_stays_runs() -> None:
    steady, busy = StepColumn(10_000), StepColumn(10_000)
    for i in range(10_000):
        steady.append(3.0 if i < 5_000 else -0.0)
        busy.append(float(i))
    steady.flush()
    busy.flush()
    assert not steady.is_dense and steady.runs == 2 and steady.nbytes < 100
    assert busy.is_dense and busy.nbytes == 80_000
    assert isinstance(steady.compact(), Runs)
    assert isinstance(busy.compact(), np.ndarray)


def test_a_dense_column_grows_past_its_capacity() -> None:
    column = StepColumn(3)
    values = [float(i) for i in range(50)]
    for v in values:
        column.append(v)
        column.flush()
    assert column.dense().tolist() == values


@settings(max_examples=200, deadline=None)
@given(sequence, st.data())
def test_runs_are_the_dense_array_at_every_index(values: list[float], data: st.DataObject) -> None:
    array = np.asarray(values, dtype=np.float64)
    runs = Runs.of(array)
    assert len(runs) == array.size
    assert same(runs.dense(), array)
    if array.size:
        idx = np.asarray(
            data.draw(st.lists(st.integers(0, array.size - 1), max_size=50)), dtype=np.int64
        )
        assert same(runs.take(idx), array[idx])
        assert same(take(runs, idx), take(array, idx))
        i = data.draw(st.integers(-array.size, array.size - 1))
        assert same([runs[i]], [array[i]])
    assert same(dense(compact(array)), array)
    # neighbours in one run have the same bits; neighbouring runs do not
    assert runs.starts.size == (np.count_nonzero(np.diff(bits(array)) != 0) + 1 if values else 0)


def test_a_run_filled_value_by_value_keeps_its_runs() -> None:
    runs = Runs.of(np.array([math.nan, math.nan, 2.0, math.nan, 5.0]))
    filled = runs.map_values(np.array([0.0, 2.0, 2.0, 5.0]))
    assert filled.dense().tolist() == [0.0, 0.0, 2.0, 2.0, 5.0]
    with pytest.raises(ValueError, match="first run"):
        Runs(np.array([1], dtype=np.int64), np.array([1.0]), 2)


def test_compact_keeps_an_array_that_changes_often() -> None:
    often = np.arange(100, dtype=np.float64)
    assert compact(often) is often
    assert isinstance(compact(np.zeros(100)), Runs)


def test_the_chunk_is_read_at_run_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests make the chunk small to flush and seal often (`test_sim_reference.py`)."""
    monkeypatch.setattr(stepcolumn, "CHUNK", 4)
    log = StepLog(0.0, 1.0)
    ready = log.columns["ready"]
    for _ in range(3):
        log.append(*([1.0] * 15))
    assert ready.runs == 0  # all in the log's rows
    for _ in range(6):
        log.append(*([1.0] * 15))
    assert ready.runs == 1 and len(ready) == 8  # flushed after steps 4 and 8
    assert len(log) == 9 and log.column("ready").tolist() == [1.0] * 9
