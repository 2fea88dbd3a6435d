"""A bounded, per-component history of observations, kept by the engine for policies that need
windows (averages over the last 60 s, a series to fit a forecaster on)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from elastiscale.observations import SIGNALS, Observation

_SIGNAL_COUNT = len(SIGNALS)  # an observation missing fewer carries a value


class MetricHistory:
    """Observations of each component for the last `retention_s` seconds, oldest first."""

    def __init__(self, retention_s: float) -> None:
        if retention_s <= 0:
            raise ValueError(f"retention_s = {retention_s}, must be > 0")
        self.retention_s = retention_s
        self._by_component: dict[str, deque[Observation]] = {}

    def record(self, observations: Iterable[Observation], now_s: float) -> None:
        """Keep each observation that carries at least one value and is newer than the last one
        kept for its component, so every buffer stays in time order."""
        horizon_s = now_s - self.retention_s
        buffers = self._by_component
        for obs in observations:
            buf = buffers.get(obs.component)
            if buf is None:
                buf = buffers[obs.component] = deque()
            has_value = len(obs.missing) < _SIGNAL_COUNT
            if has_value and (not buf or obs.at_s > buf[-1].at_s):
                buf.append(obs)
            while buf and buf[0].at_s < horizon_s:
                buf.popleft()

    def observations(self, component: str, since_s: float = float("-inf")) -> list[Observation]:
        """Observations with `at_s >= since_s`, oldest first; reads only the window's entries."""
        recent: list[Observation] = []
        for obs in reversed(self._by_component.get(component, ())):
            if obs.at_s < since_s:
                break
            recent.append(obs)
        recent.reverse()
        return recent

    def series(
        self, component: str, signal: str, since_s: float = float("-inf")
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(timestamps, values) of `signal` since `since_s`, skipping missing values."""
        times: list[float] = []
        values: list[float] = []
        for obs in self.observations(component, since_s):
            got = obs.value(signal)
            if got is not None:
                times.append(obs.at_s)
                values.append(got)
        return np.asarray(times, dtype=float), np.asarray(values, dtype=float)

    def window_mean(
        self, component: str, signal: str, now_s: float, window_s: float
    ) -> float | None:
        """Mean of `signal` over (now - window, now], or None when no value is in the window."""
        _, values = self.series(component, signal, since_s=now_s - window_s)
        return float(values.mean()) if values.size else None
