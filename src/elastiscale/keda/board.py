"""The replica counts elastiscale last decided, as KEDA reads them.

The run loop publishes after every tick; the gRPC server's threads read. A count is None until
the first tick decided it: KEDA is then told the metric is unavailable (its `fallback` applies)
and that the target is active, never that it may go to zero for lack of a decision.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping


class DesiredReplicas:
    """Thread-safe component -> desired replicas, with a version that moves on every change."""

    def __init__(self, components: Iterable[str] = ()) -> None:
        self._lock = threading.Condition()
        self._counts: dict[str, int] = {}
        self._components: tuple[str, ...] = tuple(components)
        self._version = 0

    @property
    def components(self) -> tuple[str, ...]:
        with self._lock:
            return self._components

    def set_components(self, components: Iterable[str]) -> None:
        """The pipeline's components (after a reload): counts of removed ones are forgotten."""
        with self._lock:
            self._components = tuple(components)
            for name in list(self._counts):
                if name not in self._components:
                    del self._counts[name]
            self._version += 1
            self._lock.notify_all()

    def publish(self, counts: Mapping[str, int]) -> None:
        """Record decided counts; wakes the streams when one changed."""
        with self._lock:
            changed = False
            for name, replicas in counts.items():
                if replicas < 0:
                    raise ValueError(f"{name}: replicas = {replicas}, must be >= 0")
                if self._counts.get(name) != replicas:
                    self._counts[name] = replicas
                    changed = True
            if changed:
                self._version += 1
                self._lock.notify_all()

    def get(self, component: str) -> int | None:
        with self._lock:
            return self._counts.get(component)

    @property
    def version(self) -> int:
        with self._lock:
            return self._version

    def wait_for_change(self, version: int, timeout_s: float) -> int:
        """Block until the version differs from `version` or `timeout_s` passes; the version."""
        with self._lock:
            self._lock.wait_for(lambda: self._version != version, timeout=timeout_s)
            return self._version
