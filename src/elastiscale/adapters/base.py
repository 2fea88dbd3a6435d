"""The two narrow interfaces between elastiscale and the outside world.

A `MetricSource` observes components; an `Actuator` reads and sets replica counts. Both are
plain protocols: anything with the methods works, and the in-memory twins in
`elastiscale.adapters.memory` are what tests use instead of patching internals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from elastiscale.observations import Observation, ReplicaState


@runtime_checkable
class MetricSource(Protocol):
    """Observes components as of `now_s`.

    Returns one `Observation` per requested component; a signal it cannot read is missing in
    that observation (with the reason), never zero. Raises `MetricSourceError` only when the
    source as a whole cannot answer (server down, timed out).
    """

    def observe(self, components: Sequence[str], now_s: float) -> Mapping[str, Observation]: ...


class Failure(StrEnum):
    """Why an actuation did not happen, in the platform-neutral words the engine retries on.

    The engine retries CONFLICT and IN_PROGRESS at the next tick (with fresh state) and every
    other kind after a capped exponential backoff with jitter. An adapter maps its platform's
    errors onto these (see `elastiscale.adapters.contract.failure_for_http_status`).
    """

    CONFLICT = "conflict"  # the target changed underneath (stale version); re-read and retry
    THROTTLED = "throttled"  # rate limited by the platform
    UNAVAILABLE = "unavailable"  # platform unreachable or erroring (5xx, timeout)
    NOT_FOUND = "not found"  # the target does not exist
    FORBIDDEN = "forbidden"  # no permission
    IN_PROGRESS = "in progress"  # a previous change to this target has not finished
    INVALID = "invalid"  # the platform refused the value


@dataclass(frozen=True, slots=True)
class ActuationResult:
    """The outcome of one `Actuator.scale` call.

    `replicas` is the count that was asked for. `retry_after_s` is the platform's own hint of
    when to try again (an HTTP `Retry-After`), None when it gave none.
    """

    component: str
    replicas: int
    failure: Failure | None = None
    message: str = ""
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    @classmethod
    def success(cls, component: str, replicas: int) -> ActuationResult:
        return cls(component=component, replicas=replicas)

    @classmethod
    def failed(
        cls,
        component: str,
        replicas: int,
        failure: Failure,
        message: str,
        retry_after_s: float | None = None,
    ) -> ActuationResult:
        return cls(component, replicas, failure, message, retry_after_s)


@runtime_checkable
class Actuator(Protocol):
    """Reads and sets replica counts of pipeline components on a platform.

    `scale` is idempotent (setting the current count is a no-op success) and reports failures
    as `ActuationResult` values rather than raising. It never issues a second change to a target
    while the platform is still applying the previous one: it answers `Failure.IN_PROGRESS`.

    `read` returns the components it could read; one it could not is left out (and logged), so
    the engine falls back to the last known state. It raises `ActuatorError` only when the
    platform as a whole cannot be reached.

    An actuator may also offer `startups(components, now_s=None) -> Mapping[str,
    Sequence[float]]`: start-up times (seconds from a replica's request to its readiness)
    measured since the last call, `now_s` being the tick's time (the engine passes it); the
    engine passes them to policies as `TickContext.startups_s`.

    Adapters built from a config file are constructed as `Cls(config, options)`, `options`
    being the `actuator:` section without `type`, validated by the class's `Params` model
    (see `elastiscale.adapters.contract.ActuatorOptions`).
    """

    def read(self, components: Sequence[str]) -> Mapping[str, ReplicaState]: ...

    def scale(self, component: str, replicas: int) -> ActuationResult: ...
