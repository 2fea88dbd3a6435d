"""`StepColumn`: one double per simulated step, appended in order, stored as runs or dense.

A simulator appends to a column at every step, through `append` (a bound `array.append` of a
small buffer: the cheapest write an inner loop has). Every `flush` moves the buffer into the
column's storage, which is either runs of equal doubles (`backtest.runs`) or a dense float64
array. A column starts as runs and turns dense for good at the first flush after which it has
more than `runs.RUNS_SHARE` runs per step, so a replica count or a queue that is mostly 0
costs a few KB for a month, and arrivals 8 bytes a step, as an array does.

The dense storage is allocated once for the number of steps the simulator will run when it
says so (`capacity`; pages not yet written take no memory), so a month does not grow 21 MB
arrays by reallocation: with 60 of them grown side by side, the benchmark's month ended its
loop 287 MiB of RSS above the arrays it held. Without a capacity, or past it, it doubles.

Reading gives the same doubles as a dense array appended to would: `[i]` one value (the
simulated metric source reads the last steps while the run goes on), `dense()` all of them,
`compact()` the runs or the dense array, whichever is stored.
"""

from __future__ import annotations

import bisect
from array import array

import numpy as np
import numpy.typing as npt

from elastiscale.backtest.runs import RUNS_SHARE, Array, Column, Runs, run_starts

#: Steps between flushes of a step log, and between seals of the fluid model's arrival records
#: (read at run time, so that a test can make it small).
CHUNK = 4096


class StepColumn:
    """One double per step (see the module docstring)."""

    __slots__ = ("_buffer", "_capacity", "_dense", "_flushed", "_starts", "_values", "append")

    def __init__(self, capacity: int = 0) -> None:
        self._buffer = array("d")
        self.append = self._buffer.append  # bound once: the buffer object is never replaced
        self._flushed = 0  # steps moved out of the buffer
        self._starts = array("q")  # runs storage, while not dense
        self._values = array("d")
        self._dense: Array | None = None
        self._capacity = capacity

    def __len__(self) -> int:
        return self._flushed + len(self._buffer)

    @property
    def is_dense(self) -> bool:
        return self._dense is not None

    @property
    def runs(self) -> int:
        """Runs stored (0 once dense)."""
        return len(self._starts)

    def flush(self) -> None:
        """Move the buffered steps into the storage (and turn dense if runs no longer pay)."""
        buffer = self._buffer
        if not buffer:
            return
        chunk = np.frombuffer(buffer, dtype=np.float64).copy()  # the buffer must stay resizable
        del buffer[:]
        self._store(chunk)

    def extend(self, values: Array) -> None:
        """Append many steps at once (the same as appending them one by one)."""
        self.flush()
        if values.size:
            self._store(np.ascontiguousarray(values, dtype=np.float64))

    def _store(self, chunk: Array) -> None:
        lo = self._flushed
        k = chunk.size
        if self._dense is None:
            starts = self._chunk_runs(chunk)
            if len(self._starts) + starts.size <= RUNS_SHARE * (lo + k):
                self._starts.frombytes((starts + lo).tobytes())
                self._values.frombytes(chunk[starts].tobytes())
            else:
                self._turn_dense(lo, k)
                self._write(chunk, lo)
        else:
            self._write(chunk, lo)
        self._flushed = lo + k

    def _chunk_runs(self, chunk: Array) -> npt.NDArray[np.int64]:
        """Offsets in `chunk` where a new run starts (bitwise: -0.0 is not 0.0), the first
        included unless it continues the last stored run."""
        starts = run_starts(chunk)
        values = self._values
        if not values or np.float64(values[-1]).view(np.int64) != chunk[:1].view(np.int64)[0]:
            starts = np.concatenate([np.zeros(1, dtype=np.int64), starts])
        return starts

    def _turn_dense(self, upto: int, more: int) -> None:
        """Expand the runs of the first `upto` steps into a dense array with room for `more`
        after them."""
        size = max(self._capacity, upto + more)
        self._dense = np.empty(size)
        if upto:
            self._dense[:upto] = self._runs(upto).dense()
        self._starts, self._values = array("q"), array("d")

    def _write(self, chunk: Array, lo: int) -> None:
        dense = self._dense
        assert dense is not None
        hi = lo + chunk.size
        if hi > dense.size:  # past the capacity the simulator announced: double
            grown = np.empty(max(hi, 2 * dense.size))
            grown[:lo] = dense[:lo]
            self._dense = dense = grown
        dense[lo:hi] = chunk

    def _runs(self, size: int) -> Runs:
        return Runs(
            np.frombuffer(self._starts, dtype=np.int64).copy(),
            np.frombuffer(self._values, dtype=np.float64).copy(),
            size,
        )

    def __getitem__(self, i: int) -> float:
        """Step i's value (0-based; negative counts from the end)."""
        if i < 0:
            i += len(self)
        if i >= self._flushed:
            return self._buffer[i - self._flushed]
        if i < 0:
            raise IndexError(f"step {i - len(self)} out of {len(self)}")
        if self._dense is not None:
            return float(self._dense[i])
        return self._values[bisect.bisect_right(self._starts, i) - 1]

    def dense(self) -> Array:
        """Every value as a float array: a view of the storage once dense and flushed (do not
        append after taking one), else a new array."""
        self.flush()
        if self._dense is not None:
            return self._dense[: self._flushed]
        return self._runs(self._flushed).dense()

    def compact(self) -> Column:
        """The stored form: `Runs` (copies of the runs) or a view of the dense array."""
        self.flush()
        if self._dense is not None:
            return self._dense[: self._flushed]
        return self._runs(self._flushed)

    @property
    def nbytes(self) -> int:
        """Memory of the storage and the buffer (the dense array as allocated)."""
        stored = self._dense.nbytes if self._dense is not None else 0
        items = len(self._starts) + len(self._values) + len(self._buffer)
        return stored + 8 * items
