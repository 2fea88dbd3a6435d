"""`ArrivalRecords`: what the fluid model records of one component per arrival step.

For each step the simulator records the requests that arrived, how many of them were dropped,
the waits of their first and last served units and their hold. A step's entries change while
its cohort is in the queue (its last wait when the cohort is served, its drops when it times
out), so they are written in place in a window of the recent steps (`wait_first` ... `hold`,
flat float arrays indexed by step - `base`: the inner loops' cheapest writes). Every
`stepcolumn.CHUNK` steps the simulator seals the steps no queued cohort can change any more
(those before the oldest cohort's arrival step): they leave the window as the latency table
reads them (`fluid_latency.arrival_waits`: the steps without served arrivals filled in, the
drops a probability), appended to `StepColumn`s, which keep them as runs where they rarely
change.

Why: five float arrays of every step are 40 bytes per component and step, 643 MB for the
benchmark's month at 1 s steps through 6 components (`benchmarks/backtest_speed.py`). Raw,
they would not shrink as runs (a step without arrivals reads NaN, and at 1 s many have none);
filled, the waits and the hold of a component that never queues are one run each, and the drop
probability mostly 0: 50 MB for that month, most of it the LLM's waits.
"""

from __future__ import annotations

import math
from array import array

import numpy as np

from elastiscale.backtest import stepcolumn
from elastiscale.backtest.fluid_latency import ArrivalWaits, arrival_waits
from elastiscale.backtest.stepcolumn import StepColumn


class ArrivalRecords:
    """One component's per-arrival-step records (see the module docstring)."""

    __slots__ = (
        "_after",
        "_first",
        "_hold",
        "_last",
        "_p_drop",
        "arrived",
        "base",
        "dropped",
        "hold",
        "wait_first",
        "wait_last",
    )

    def __init__(self, steps: int) -> None:
        """`steps`: every arrival step the simulation may record (the latency table's)."""
        self.base = 0  # the step at index 0 of the window; every step before it is sealed
        self._first, self._last = StepColumn(steps), StepColumn(steps)
        self._hold, self._p_drop = StepColumn(steps), StepColumn(steps)
        self._after = (0.0, math.nan)  # the filled first wait and hold of the last sealed step
        self.wait_first = self.wait_last = self.hold = array("d")
        self.arrived = self.dropped = array("d")
        self._fresh(2 * stepcolumn.CHUNK)

    def _fresh(self, size: int, keep: int = 0, start: int = 0) -> None:
        """A window of `size` steps holding the window's entries [start, start + keep) first,
        the rest as no step has written them (NaN waits and hold, no arrivals or drops)."""
        nans, zeros = array("d", [math.nan]), array("d", [0.0])
        old = (self.wait_first, self.wait_last, self.hold, self.arrived, self.dropped)
        new = [nans * size, nans * size, nans * size, zeros * size, zeros * size]
        for was, now in zip(old, new, strict=True):
            now[:keep] = was[start : start + keep]
        self.wait_first, self.wait_last, self.hold, self.arrived, self.dropped = new

    def seal(self, upto: int, now: int) -> None:
        """Seal every step before `upto` (no cohort of theirs is queued any more), and keep
        room in the window for every step from `upto` to `now + stepcolumn.CHUNK`."""
        count = upto - self.base
        if count > len(self.arrived):  # steps never written (a run cut short): as they are
            self._fresh(count, len(self.arrived))
        if count > 0:
            arrived, dropped, first, last, hold = (
                np.frombuffer(column, dtype=np.float64)[:count].copy()
                for column in (
                    self.arrived,
                    self.dropped,
                    self.wait_first,
                    self.wait_last,
                    self.hold,
                )
            )
            first, last, held, p_drop = arrival_waits(
                arrived, dropped, first, last, hold, self._after
            )
            del arrived, dropped, hold
            self._after = (float(first[-1]), float(held[-1]))
            for column, values in zip(
                (self._first, self._last, self._hold, self._p_drop),
                (first, last, held, p_drop),
                strict=True,
            ):
                column.extend(values)
        pending = max(0, now - upto)
        size = max(2 * stepcolumn.CHUNK, pending + stepcolumn.CHUNK)
        self._fresh(size, pending, max(0, count))
        self.base = upto

    def waits(self, total: int) -> ArrivalWaits:
        """Every step's record, once the simulation is over: the steps up to `total` sealed
        and handed over, the window and the columns dropped (the records are empty after)."""
        self.seal(total, total)
        columns = (self._first, self._last, self._hold, self._p_drop)
        got = ArrivalWaits(*(column.compact() for column in columns))
        self._first, self._last = StepColumn(), StepColumn()
        self._hold, self._p_drop = StepColumn(), StepColumn()
        self.wait_first = self.wait_last = self.hold = array("d")
        self.arrived = self.dropped = array("d")
        return got

    @property
    def nbytes(self) -> int:
        """Memory of the sealed columns and the window."""
        window = 8 * 5 * len(self.arrived)
        sealed = (self._first, self._last, self._hold, self._p_drop)
        return window + sum(column.nbytes for column in sealed)
