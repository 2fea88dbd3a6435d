"""A series field given as runs reads as a float array with the same doubles, the same array
at every read (`backtest.seriesfield`)."""

from __future__ import annotations

import numpy as np

from elastiscale.backtest.model import ComponentSeries
from elastiscale.backtest.runs import Runs
from elastiscale.backtest.steplog import COLUMNS, StepLog


def test_a_series_field_given_runs_reads_as_the_same_array_every_time() -> None:
    t_s = np.arange(1.0, 7.0)
    ready = np.array([1.0, 1.0, 2.0, 2.0, 2.0, -0.0])
    series = ComponentSeries(
        t_s, t_s, t_s, t_s, Runs.of(np.zeros(6)), t_s, t_s, Runs.of(ready), t_s, t_s, t_s, t_s
    )
    assert set(vars(series)) == {
        "t_s", "arrivals", "work_arrivals", "completions", "dropped", "queue", "in_flight",
        "ready", "starting", "desired", "utilization", "latency_p95_s", "draining",
    }  # fmt: skip
    got = series.ready
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    assert np.array_equal(got.view(np.int64), ready.view(np.int64))  # -0.0 stays -0.0
    assert series.ready is got  # expanded once, then that array
    got[0] = 9.0
    assert series.ready[0] == 9.0
    assert series.draining.size == 0 and series.billed().tolist() == [10, 3, 5, 6, 7, 6]
    assert series.t_s is t_s  # an array stays itself


def test_a_simulated_series_of_runs_reads_as_the_arrays_of_the_log() -> None:
    """A frozen step log's series hold runs for its rarely changing columns and views for the
    others; read, each is the log's column as an array."""
    log = StepLog(0.0, 1.0)
    for i in range(100):
        row = [float(i), float(i), 0.0, float(i % 7), 0.0, 0.0, 1.0, 3.0, 0.0, -0.0]
        log.append(*row, 3.0, 3.0, 2.0, 1.5, float(i))
    log.freeze()
    series = ComponentSeries.from_steps(log)
    assert isinstance(vars(series)["ready"], Runs)
    assert isinstance(vars(series)["arrivals"], np.ndarray)
    names = {"work": "work_arrivals"}
    for name in set(COLUMNS) - {"busy", "capacity"}:
        want = log.column(name)
        got = getattr(series, names.get(name, name))
        assert np.array_equal(got.view(np.int64), want.view(np.int64)), name
