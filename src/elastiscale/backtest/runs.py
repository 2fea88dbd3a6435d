"""`Runs`: a float64 array stored as runs of equal doubles, for series that rarely change.

Over a month at 1 s steps (2.68 million steps) most of what the fast fidelity records of a
component is piecewise constant: replica counts change only around scaling, drops and queues
are 0 outside overload, and a request-sized component's hold is one value. A dense float64
array of it is 21 MB; its runs (a start index and a value each, 16 bytes) are a few KB.

Runs are exact: two neighbouring steps are one run only when their doubles have the same bits
(so 0.0 and -0.0 stay apart, and a NaN is kept with its payload), and reading a run-length
column gives the very doubles the dense array held, at every index.

`Column` is either representation; `take` and `dense` read both, and `compact` picks the
smaller for an array that is already dense.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
Index = npt.NDArray[np.int64]

#: `compact` keeps runs when there are at most this share of runs per step (a run costs 16
#: bytes, a dense step 8: at a quarter the runs take half the memory of the array).
RUNS_SHARE = 0.25


class Runs:
    """`size` doubles as runs: run k holds `values[k]` from index `starts[k]` up to the next
    run's start (`starts[0]` is 0; no runs when `size` is 0)."""

    __slots__ = ("size", "starts", "values")

    def __init__(self, starts: Index, values: Array, size: int) -> None:
        if starts.shape != values.shape:
            raise ValueError(f"{starts.size} run starts for {values.size} values")
        if size > 0 and (starts.size == 0 or starts[0] != 0):
            raise ValueError("the first run starts at index 0")
        self.starts = starts
        self.values = values
        self.size = size

    @classmethod
    def of(cls, values: Array) -> Runs:
        """The runs of a dense array (bitwise equal neighbours make one run)."""
        values = np.ascontiguousarray(values, dtype=np.float64)
        if values.size == 0:
            return cls(np.zeros(0, dtype=np.int64), np.zeros(0), 0)
        starts = np.concatenate([np.zeros(1, dtype=np.int64), run_starts(values)])
        return cls(starts, values[starts], int(values.size))

    def __len__(self) -> int:
        return self.size

    @property
    def nbytes(self) -> int:
        return int(self.starts.nbytes + self.values.nbytes)

    def __getitem__(self, i: int) -> float:
        """The value at index i (negative counts from the end, as for an array)."""
        if i < 0:
            i += self.size
        if not 0 <= i < self.size:
            raise IndexError(f"index {i} out of {self.size} steps")
        return float(self.values[int(np.searchsorted(self.starts, i, side="right")) - 1])

    def take(self, idx: Index) -> Array:
        """The values at indices `idx` (each within 0..size-1), as `dense()[idx]` gives them."""
        got: Array = self.values[np.searchsorted(self.starts, idx, side="right") - 1]
        return got

    def dense(self) -> Array:
        """Every value, as a new float64 array."""
        lengths = np.diff(np.append(self.starts, self.size))
        out: Array = np.repeat(self.values, lengths)
        return out

    def map_values(self, values: Array) -> Runs:
        """The same runs holding other values (one per run): the result of a function applied
        value by value, or of a fill along the runs such as a forward fill of NaNs."""
        return Runs(self.starts, values, self.size)


Column = Array | Runs


def run_starts(values: Array) -> Index:
    """The indices after 0 where a run starts: each value whose bits differ from the one
    before it (`values` contiguous float64)."""
    bits = values.view(np.int64)
    starts: Index = (np.flatnonzero(bits[1:] != bits[:-1]) + 1).astype(np.int64)
    return starts


def take(column: Column, idx: Index) -> Array:
    """`column[idx]` for either representation."""
    if isinstance(column, Runs):
        return column.take(idx)
    got: Array = column[idx]
    return got


def dense(column: Column) -> Array:
    """Every value of `column` as a float array (the array itself when it is one)."""
    return column.dense() if isinstance(column, Runs) else column


def compact(values: Array, share: float = RUNS_SHARE) -> Column:
    """`values` as runs when it has at most `share` runs per step, else as it is."""
    if values.size == 0:
        return values
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.int64)
    changes = int(np.count_nonzero(bits[1:] != bits[:-1]))
    if changes + 1 > share * values.size:
        return values
    return Runs.of(values)
