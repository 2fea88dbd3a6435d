"""`SeriesField`: a dataclass field that may hold `Runs` and always reads as a float array.

A `ComponentSeries` of a month at 1 s steps has 2.68 million steps per field; six of its fields
(the replica counts, the drops and, for most components, the queue) hold a few runs of equal
doubles (`backtest.runs`). Stored as runs, they cost a few KB instead of 21 MB each: 35 of
the 36 of the benchmark's 6 components (`benchmarks/backtest_speed.py`; its LLM's queue
changes too often) are 750 MB as arrays. A reader still gets a
numpy float array with the same doubles: the first read of a field expands its runs and keeps
the array in their place, so later reads are that same array (writes to it stick, as they do
to any field's array), and only the fields somebody reads take the memory of an array.
"""

from __future__ import annotations

from typing import Any, overload

import numpy as np

from elastiscale.backtest.runs import Array, Column, Runs


class _Slot:
    """Where a field's value is kept on the instance, and how it is read: in the instance's
    `__dict__` under the field's own name (so `vars()` lists the fields as a dataclass's
    would); a descriptor with `__set__` is read before the instance's dict."""

    __slots__ = ("_slot",)

    def __init__(self) -> None:
        self._slot = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = name

    def _read(self, obj: object) -> Array:
        stored = obj.__dict__
        value = stored[self._slot]
        if isinstance(value, Runs):
            value = stored[self._slot] = value.dense()
        elif value is None:
            value = stored[self._slot] = np.zeros(0)
        return value  # type: ignore[no-any-return]


class SeriesField(_Slot):
    """A required field of a float array, or its `Runs` (see the module docstring)."""

    __slots__ = ()

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> SeriesField: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> Array: ...

    def __get__(self, obj: object | None, owner: type | None = None) -> Any:
        if obj is None:  # on the class: no default value (a dataclass reads this)
            raise AttributeError(self._slot)
        return self._read(obj)

    def __set__(self, obj: object, value: Column) -> None:
        obj.__dict__[self._slot] = value


class OptionalSeriesField(_Slot):
    """A field whose default (None) reads as an empty array."""

    __slots__ = ()

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> None: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> Array: ...

    def __get__(self, obj: object | None, owner: type | None = None) -> Any:
        if obj is None:
            return None  # the dataclass's default
        return self._read(obj)

    def __set__(self, obj: object, value: Column | None) -> None:
        obj.__dict__[self._slot] = value
