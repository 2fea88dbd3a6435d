"""`StepLog`: what a simulator records of one component at every closed step.

Two parts, so that a month at 1 s steps fits in memory:

- columns: one `StepColumn` per signal that a `ComponentSeries` or the end-to-end latency
  model needs for every step (`backtest.stepcolumn`), flushed every `stepcolumn.CHUNK` steps
  into runs of equal doubles or a dense array, whichever is smaller. Until a flush, a step's
  values wait in one row-major buffer of the log, written by one `struct` pack a step (an
  `array.append` per column was 13 calls, about 3x the time), and a flush hands each column
  its strided slice of them. At the end of a run the series are numpy views of the dense
  columns, not copies, and the runs of the others (`freeze`).
- a tail of running sums: for the last `lookback` steps only, the running totals of the
  signals the simulated metric source reads over a rate window (arrivals, work, tokens, busy
  and ready capacity, completions, latency x completions) and the values it reads at the end
  of the step (ready replicas, queue, calls in flight, desired replicas), also one pack a
  step (`array.extend` of a tuple took 3x as long). The total of a signal over a window of
  steps is one subtraction of two running totals: O(1) per signal. Older rows of the tail are
  dropped in batches; a reader that needs a longer look-back asks for it (`keep_lookback`)
  before the run starts. Both are doubles in `array`s, not lists of floats: a month's run
  keeping every float object of the last thousands of steps alive was slower, not faster.

Worked numbers: 31 days at 1 s steps are 2.68 million steps; 13 dense columns would be 104
bytes a step (279 MB per component), where a row of 22 doubles with the running sums was 176.
Stored as runs, the replica counts (ready, starting, draining, desired), the drops and a queue
that is mostly empty take a few KB each: the benchmark's month (`benchmarks/backtest_speed.py`)
keeps 4 dense columns for most components (arrivals, completions, busy, p95 latency: 32 bytes
a step, 86 MB), 5 for its LLM, whose queue changes at 45% of the steps (3 days measured).

A simulator that computes some columns from others declares them (`derive`), and they are then
not stored but computed on reading with the simulator's own arithmetic, so the same doubles:
the fluid model's ready capacity is `ready x slots x step_s`, a component sized in requests has
its work equal to its arrivals (x 1.0), and without callers that wait the calls in flight are
`busy / step_s`. That is 3 columns fewer (24 bytes a step: 64 MB per component for a month at
1 s steps).
"""

from __future__ import annotations

import struct
from array import array

import numpy as np

from elastiscale.backtest import stepcolumn
from elastiscale.backtest.runs import Array, Column
from elastiscale.backtest.stepcolumn import StepColumn

#: Columns kept for every step, in `append`'s order of arguments (tokens and the ready count at
#: the end of the step are kept in the tail only).
COLUMNS = (
    "arrivals",  # requests arrived during the step
    "work",  # work arrived, in the component's capacity unit
    "completions",  # requests completed
    "dropped",  # requests dropped (queue timeout)
    "queue",  # requests waiting at the end of the step
    "in_flight",  # requests in service (end of step, or the step's mean for the fluid model)
    "ready",  # ready replicas, time average over the step
    "starting",  # starting replicas, time average
    "draining",  # draining replicas, time average
    "desired",  # desired replicas at the end of the step
    "busy",  # busy capacity used during the step (slot-seconds)
    "capacity",  # ready capacity during the step (slot-seconds)
    "latency_p95_s",  # p95 latency at this component of requests completing (NaN if none)
)

#: Columns a simulator may declare computed from others (see `StepLog.derive`).
DERIVABLE = ("capacity", "work", "in_flight")

#: One step's values of the columns (in COLUMNS order) and one row of the tail, as native
#: doubles (the bits of each float as `array("d")` stores them).
_PACK_ROW = struct.Struct(f"{len(COLUMNS)}d").pack
_TAIL_WIDTH = 11
_TAIL_ROW = struct.Struct(f"{_TAIL_WIDTH}d")
_PACK_TAIL, _UNPACK_TAIL = _TAIL_ROW.pack, _TAIL_ROW.unpack_from

#: Steps of running sums kept by default (a rate window and a metrics delay of up to about
#: an hour at 1 s steps).
DEFAULT_LOOKBACK = 4096


class StepLog:
    """Per-step records of one component (see the module docstring)."""

    # Fields of a tail row, each a running total up to and including the step, except the
    # step's own values from READY_END on.
    T_ARRIVALS = 0
    T_WORK = 1
    T_TOKENS = 2  # input + output tokens arrived (0 when the trace has none)
    T_BUSY = 3
    T_CAPACITY = 4
    T_COMPLETIONS = 5  # completions with a latency figure
    T_LATENCY_WEIGHTED = 6  # sum of latency_p95 x completions
    T_READY_END = 7  # ready replicas at the end of the step (not a sum)
    T_QUEUE = 8  # the step's `queue` (not a sum)
    T_IN_FLIGHT = 9  # the step's `in_flight` (not a sum)
    T_DESIRED = 10  # the step's `desired` (not a sum)
    TAIL_WIDTH = _TAIL_WIDTH

    __slots__ = (
        "_derived",
        "_due",
        "_flushed",
        "_frozen",
        "_lookback",
        "_rows",
        "_sums",
        "columns",
        "step_s",
        "steps",
        "t0_s",
        "tail",
        "tail_start",
    )

    def __init__(
        self, t0_s: float, step_s: float, lookback: int = DEFAULT_LOOKBACK, capacity: int = 0
    ) -> None:
        """`capacity`: the steps the simulator will append, when it knows them (the dense
        columns are allocated for them once, `backtest.stepcolumn`)."""
        self.t0_s = t0_s
        self.step_s = step_s
        self.columns: dict[str, StepColumn] = {name: StepColumn(capacity) for name in COLUMNS}
        # The steps not flushed yet: len(COLUMNS) doubles each, in COLUMNS order.
        self._rows = array("d")
        self.tail = array("d")  # TAIL_WIDTH doubles per step, from step `tail_start` on
        self.tail_start = 0
        #: Steps appended so far (`len(log)`, an attribute for the readers of every tick).
        self.steps = 0
        self._flushed = 0  # steps flushed out of `_rows` into the columns
        self._lookback = lookback
        self._due = 0  # length of `tail` at which `_maintain` runs next
        self._schedule()
        self._sums = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        self._frozen = False
        self._derived: dict[str, float] = {}  # derived column -> its factor (see `derive`)

    @property
    def lookback(self) -> int:
        """Steps of running sums kept at least."""
        return self._lookback

    @lookback.setter
    def lookback(self, steps: int) -> None:
        self._lookback = steps
        self._schedule()

    def derive(
        self, *, capacity_slots: int | None = None, work: bool = False, in_flight: bool = False
    ) -> None:
        """Before the first step: stop storing columns the caller computes from others, so
        that reading them computes the same doubles (module docstring). `capacity_slots`:
        every step's `capacity` is `ready x capacity_slots x step_s`; `work`: the work equals
        the arrivals; `in_flight`: the calls in flight are `busy / step_s`."""
        if len(self):
            raise ValueError("columns are derived before the first step only")
        if capacity_slots is not None:
            self._derived["capacity"] = float(capacity_slots)
        if work:
            self._derived["work"] = 1.0
        if in_flight:
            self._derived["in_flight"] = 1.0
        for name in self._derived:  # a flush skips them
            del self.columns[name]

    def derived(self, name: str) -> bool:
        """Whether column `name` is computed on reading rather than stored."""
        return name in self._derived

    def keep_lookback(self, steps: int) -> None:
        """Keep the running sums of at least the last `steps` steps."""
        if steps > self._lookback:
            if self.tail_start > 0:
                raise ValueError(
                    f"a look-back of {steps} steps asked for after steps before the last "
                    f"{self._lookback} were dropped"
                )
            self.lookback = steps

    def append(
        self,
        arrivals: float,
        work: float,
        tokens: float,
        completions: float,
        dropped: float,
        queue: float,
        in_flight: float,
        ready: float,
        starting: float,
        draining: float,
        desired: float,
        ready_end: float,
        busy: float,
        capacity: float,
        latency_p95_s: float,
    ) -> None:
        """Close one step: append its values and its running totals."""
        if self._frozen:
            raise ValueError("the step log is frozen: the simulation has finished")
        ca, cw, ct, cb, cc, cn, cl = self._sums
        if latency_p95_s == latency_p95_s and completions > 0:  # not NaN
            cn += completions
            cl += latency_p95_s * completions
        ca += arrivals
        cw += work
        ct += tokens
        cb += busy
        cc += capacity
        self._sums = (ca, cw, ct, cb, cc, cn, cl)
        self._rows.frombytes(
            _PACK_ROW(arrivals, work, completions, dropped, queue, in_flight, ready, starting,
                      draining, desired, busy, capacity, latency_p95_s)
        )  # fmt: skip
        self.steps += 1
        tail = self.tail
        tail.frombytes(_PACK_TAIL(ca, cw, ct, cb, cc, cn, cl, ready_end, queue, in_flight, desired))
        if len(tail) >= self._due:  # one comparison a step for both chores
            self._maintain()

    def _maintain(self) -> None:
        """Drop the older half of the tail once it holds twice the look-back (amortized O(1)),
        and flush the columns' buffers every `stepcolumn.CHUNK` steps."""
        tail, width = self.tail, self.TAIL_WIDTH
        if len(tail) >= 2 * width * self._lookback:
            cut = len(tail) // width - self._lookback
            del tail[: cut * width]
            self.tail_start += cut
        steps = self.tail_start + len(tail) // width
        if steps - self._flushed >= stepcolumn.CHUNK:
            self._flush()
        self._schedule()

    def _flush(self) -> None:
        """Hand every stored column its values of the steps since the last flush (the same
        doubles as appending them one by one: `StepColumn.extend`)."""
        rows = self._rows
        if rows:
            # a copy: the buffer must stay resizable
            block = np.frombuffer(rows, dtype=np.float64).reshape(-1, len(COLUMNS)).copy()
            for c, name in enumerate(COLUMNS):
                column = self.columns.get(name)  # none for a derived or released column
                if column is not None:
                    column.extend(block[:, c])
            del rows[:]
        self._flushed = len(self)

    def _schedule(self) -> None:
        """The tail's length at which a trim or a flush is due."""
        rows = min(2 * self._lookback, self._flushed + stepcolumn.CHUNK - self.tail_start)
        self._due = self.TAIL_WIDTH * max(1, rows)

    def __len__(self) -> int:
        return self.steps

    def tail_row(self, i: int) -> int:
        """Offset in `tail` of step i's running sums (0-based step index)."""
        k = i - self.tail_start
        if k < 0:
            raise ValueError(
                f"step {i}: only the running sums of the last {self.lookback} steps are kept"
            )
        return k * self.TAIL_WIDTH

    def tail_values(self, i: int) -> tuple[float, ...]:
        """Step i's row of the tail (TAIL_WIDTH floats, indexed by the T_ fields), read at
        once: cheaper than indexing the tail field by field."""
        k = i - self.tail_start
        if k < 0:
            self.tail_row(i)  # raises: dropped already
        return _UNPACK_TAIL(self.tail, _TAIL_ROW.size * k)

    def tail_span(self, first: int, last: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """`tail_values` of steps `first` and `last` (a window's ends), in one call."""
        k, m = first - self.tail_start, last - self.tail_start
        if k < 0 or m < 0:
            self.tail_row(min(first, last))  # raises: dropped already
        width = _TAIL_ROW.size
        return _UNPACK_TAIL(self.tail, width * k), _UNPACK_TAIL(self.tail, width * m)

    def freeze(self) -> None:
        """No more steps: from now on `column` gives views of the dense columns, not copies."""
        self._flush()
        self._frozen = True

    def release(self, *names: str) -> None:
        """Drop columns nobody will read again (a frozen log, once the end-to-end latency
        table and the series' utilization hold what they say); reading one then raises."""
        if not self._frozen:
            raise ValueError("only a frozen step log releases columns")
        for name in names:
            if name in self._derived:  # computed from another column, which may go too
                self._derived.pop(name)
                self.columns.pop(name, None)
                continue
            del self.columns[name]

    def column(self, name: str) -> Array:
        """One column as a float array (a view of a dense column once frozen, else a new
        array)."""
        if name in self._derived:
            return self._derive(name)
        if not self._frozen:
            self._flush()  # the steps still in the rows
        stored = self._stored(name)
        values = stored.dense()
        return values if self._frozen or not stored.is_dense else values.copy()

    def compact(self, name: str) -> Column:
        """One column of a frozen log as it is stored: `Runs`, or a view of the dense array
        (a derived column, or any column while the log runs: as `column` gives it)."""
        if name in self._derived or not self._frozen:
            return self.column(name)
        return self._stored(name).compact()

    def _stored(self, name: str) -> StepColumn:
        stored = self.columns.get(name)
        if stored is None:
            raise ValueError(f"step log column {name!r} was released after the run")
        return stored

    def _derive(self, name: str) -> Array:
        """A derived column, with the arithmetic of the simulator that declared it: the fluid
        model's `ready_avg * slots * dt` and `busy / dt` per step are these products and
        quotients of the same doubles, so the same bits."""
        if name == "capacity":
            result: Array = self.column("ready") * self._derived[name] * self.step_s
            return result
        if name == "work":
            return self.column("arrivals")
        result = self.column("busy") / self.step_s
        return result
