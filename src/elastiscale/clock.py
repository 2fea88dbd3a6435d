"""Clocks. Only runners (the daemon loop, the backtest driver, benchmarks) read one.

Decision code takes `now_s` as an argument; a `Clock` is what a runner uses to produce it.
Times are seconds as floats: Unix time for `SystemClock`, any origin for `FakeClock`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    """A source of the current time in seconds and a way to wait."""

    def now_s(self) -> float:
        """The current time, seconds."""
        ...

    def sleep(self, duration_s: float) -> None:
        """Wait `duration_s` seconds (at once, on a fake clock)."""
        ...


class SystemClock:
    """Wall-clock time (Unix seconds); `sleep` blocks the calling thread."""

    def now_s(self) -> float:
        return time.time()

    def sleep(self, duration_s: float) -> None:
        if duration_s > 0:
            time.sleep(duration_s)


class FakeClock:
    """A clock that moves only when told to: `sleep` and `advance` add to the time at once."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = float(start_s)

    def now_s(self) -> float:
        return self._now_s

    def sleep(self, duration_s: float) -> None:
        self.advance(duration_s)

    def advance(self, duration_s: float) -> float:
        """Move time forward by `duration_s` (never backward) and return the new time."""
        if duration_s < 0:
            raise ValueError(f"duration_s = {duration_s}, must be >= 0")
        self._now_s += duration_s
        return self._now_s

    def set(self, now_s: float) -> None:
        """Jump to `now_s`; time never goes backward."""
        if now_s < self._now_s:
            raise ValueError(f"now_s = {now_s} is before the clock's time {self._now_s}")
        self._now_s = float(now_s)


class OffsetFileClock:
    """Wall-clock time plus an offset in seconds read from a file at every call: a clock that
    an operator (or a fault drill) can step forward and back while a process runs, by writing
    a number such as `3600` or `-60` to the file. A missing, empty or unreadable file means no
    offset; so does a value that is not a finite number.

    `elastiscale run` uses it when ELASTISCALE_CLOCK_OFFSET_FILE names a file, to rehearse what
    the daemon does when the host's clock is stepped (NTP, a VM resumed) without changing the
    host's clock.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def offset_s(self) -> float:
        """The file's offset, seconds (0 when there is none; see the class docstring)."""
        try:
            text = self.path.read_text(encoding="utf-8").strip()
        except OSError:
            return 0.0
        try:
            offset = float(text) if text else 0.0
        except ValueError:
            return 0.0
        return offset if math.isfinite(offset) else 0.0

    def now_s(self) -> float:
        return time.time() + self.offset_s()

    def sleep(self, duration_s: float) -> None:
        if duration_s > 0:
            time.sleep(duration_s)
