"""The step log keeps its running sums for the last steps only, and that changes nothing the
simulated metric source reads; a finished log gives views and refuses more steps."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale.backtest import api, baselines, runner
from elastiscale.backtest.model import ComponentSeries
from elastiscale.backtest.simmetrics import SimulatedMetricSource
from elastiscale.backtest.steplog import COLUMNS, StepLog
from elastiscale.clock import FakeClock
from elastiscale.config import load_config
from sim_reference import AGENT, AZURE

value = st.floats(0.0, 1e6, allow_nan=False) | st.sampled_from([0.0, 1.0, 0.1])


def append(log: StepLog, row: list[float]) -> None:
    arrivals, work, tokens, busy, capacity, completions, latency = row
    log.append(
        arrivals, work, tokens, completions, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 2.0, busy,
        capacity, latency,
    )  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.lists(value, min_size=7, max_size=7), min_size=1, max_size=120),
    st.integers(1, 10),
)
def test_recent_running_sums_are_the_whole_runs(rows: list[list[float]], lookback: int) -> None:
    """Every kept step's running totals are the totals over all steps up to it, summed in the
    same order; older steps are refused, never read wrong."""
    log = StepLog(0.0, 1.0, lookback=lookback)
    sums = [0.0] * 7
    want: list[list[float]] = []
    for row in rows:
        append(log, row)
        arrivals, work, tokens, busy, capacity, completions, latency = row
        sums[0] += arrivals
        sums[1] += work
        sums[2] += tokens
        sums[3] += busy
        sums[4] += capacity
        if completions > 0:
            sums[5] += completions
            sums[6] += latency * completions
        want.append(list(sums))
    n = len(log)
    assert n == len(rows)
    for i in range(n):
        if i < n - lookback and i < log.tail_start:
            with pytest.raises(ValueError, match="running sums"):
                log.tail_row(i)
            continue
        at = log.tail_row(i)
        assert list(log.tail[at : at + 7]) == want[i]
        assert log.tail[at + StepLog.T_READY_END] == 2.0
        row = log.tail_values(i)  # the same row, read at once
        assert list(row[:7]) == want[i] and row == tuple(log.tail[at : at + StepLog.TAIL_WIDTH])
        assert log.tail_span(i, n - 1) == (row, log.tail_values(n - 1))
    assert n - log.tail_start >= min(n, lookback)  # at least the look-back is kept
    assert len(log.tail) // StepLog.TAIL_WIDTH < 2 * lookback  # and not much more


def test_a_longer_look_back_after_steps_were_dropped_is_refused() -> None:
    log = StepLog(0.0, 1.0, lookback=2)
    for _ in range(10):
        append(log, [1.0] * 7)
    assert log.tail_start > 0
    log.keep_lookback(2)  # what is kept already: fine
    with pytest.raises(ValueError, match="look-back of 5 steps"):
        log.keep_lookback(5)


def test_a_frozen_log_gives_views_and_takes_no_more_steps() -> None:
    log = StepLog(0.0, 1.0)
    append(log, [1.0, 2.0, 0.0, 3.0, 4.0, 1.0, 0.5])
    copy = log.column("arrivals")
    copy[0] = 99.0
    assert log.column("arrivals")[0] == 1.0  # a copy while running
    with pytest.raises(ValueError, match="frozen"):
        log.release("busy")
    log.freeze()
    with pytest.raises(ValueError, match="frozen"):
        append(log, [1.0] * 7)
    view = log.column("arrivals")
    assert np.shares_memory(view, log.column("arrivals"))
    series = ComponentSeries.from_steps(log)
    assert series.utilization.tolist() == [0.75]
    log.release("busy", "capacity")
    with pytest.raises(ValueError, match="'busy' was released"):
        log.column("busy")
    assert set(log.columns) == set(COLUMNS) - {"busy", "capacity"}


def test_observations_are_the_same_whatever_the_look_back_kept() -> None:
    """A 1 s-step run long enough to drop running sums many times: the metric source reads
    the same observations as with every step's sums kept."""
    config = load_config(AGENT)
    trace = api.prepare_trace(AZURE, rate_scale=4.0, end_s=900.0)
    initial = baselines.initial_replicas(config, trace)
    names = list(config.pipeline.components)

    def observed(lookback: int) -> list[str]:
        sim = runner.build_simulator(config, trace, initial)
        for name in names:
            sim.steps(name).lookback = lookback
        clock = FakeClock(trace.start_s)
        source = SimulatedMetricSource(sim, config, clock, rate_window_s=60.0, delay_s=15.0)
        seen = []
        for k in range(math.ceil(trace.duration_s / 15.0)):
            now_s = trace.start_s + 15.0 * k
            sim.advance_to(now_s)
            clock.set(now_s)
            seen.extend(repr(o) for o in source.observe(names, now_s).values())
            if k % 4 == 0:  # some scaling, so that the counts move
                sim.set_desired(names[-1], 2 + k % 3)
        if lookback < 900:
            assert sim.steps(names[0]).tail_start > 0  # sums were dropped on the way
        return seen

    assert observed(1) == observed(100_000)


step = st.sampled_from([1.0, 10.0, 0.5, 3.0])
level = st.floats(0.0, 500.0, allow_nan=False) | st.sampled_from([0.0, 1.0, 1 / 3, 2.5])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(level, level, level), min_size=1, max_size=60),
    st.integers(1, 64),
    step,
)
def test_derived_columns_are_the_doubles_the_fluid_model_stored(
    rows: list[tuple[float, float, float]], slots: int, step_s: float
) -> None:
    """A derived column (not stored) reads as the column the fluid model's own arithmetic
    stored: capacity = ready_avg * slots * dt, work = arrivals * 1.0, in flight = busy / dt."""
    stored, derived = StepLog(0.0, step_s), StepLog(0.0, step_s)
    derived.derive(capacity_slots=slots, work=True, in_flight=True)
    for arrivals, ready, busy in rows:
        for log in (stored, derived):
            log.append(
                arrivals, arrivals * 1.0, 0.0, arrivals, 0.0, 0.0, busy / step_s, ready, 0.0,
                0.0, 1.0, 1.0, busy, ready * slots * step_s, math.nan,
            )  # fmt: skip
    assert sorted(derived.columns) == sorted(set(COLUMNS) - {"capacity", "work", "in_flight"})
    for log in (stored, derived):
        log.freeze()
    for name in COLUMNS:
        want, got = stored.column(name), derived.column(name)
        assert want.tobytes() == got.tobytes(), name
    derived.release("busy", "capacity")
    for name in ("busy", "capacity", "in_flight"):
        with pytest.raises(ValueError, match="released"):
            derived.column(name)


def test_columns_are_derived_before_the_first_step_only() -> None:
    log = StepLog(0.0, 1.0)
    append(log, [1.0] * 7)
    with pytest.raises(ValueError, match="before the first step"):
        log.derive(work=True)
