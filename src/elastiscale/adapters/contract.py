"""Pieces every platform actuator shares, so each adapter keeps only its platform's own code.

- `ActuatorOptions`: the shape of the `actuator:` section. Platform options live beside a
  `targets` mapping from pipeline component to platform target; each adapter subclasses it
  with its own target model and uses it as its `Params`, so `elastiscale validate` names a bad
  key, a target for an unknown component, or a component without a target:

      actuator:
        type: kubernetes
        timeout_s: 5
        targets:
          router: {kind: Deployment, name: router}
          llm: {kind: StatefulSet, name: llm}

- `failure_for_http_status`, `parse_retry_after`: platform answers in the engine's words.
- `retry_on_conflict`: re-read and retry an optimistic-concurrency write a few times.
- `InProgressGuard`: holds further changes to a target until the platform has taken in the
  last one (or a settle timeout has passed, so a stuck platform never freezes a target).
- `OtherAutoscalerError`: another autoscaler already drives a target; refuse to fight it.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    ValidationInfo,
    field_validator,
)

from elastiscale.adapters.base import ActuationResult, Failure
from elastiscale.clock import Clock, SystemClock
from elastiscale.errors import ActuatorError, ConfigError

if TYPE_CHECKING:
    from elastiscale.config import Config

#: Key of the pydantic validation context holding the pipeline's component names; when it is
#: given, `targets` must map exactly those components.
COMPONENTS_CONTEXT = "components"


def context_components(info: ValidationInfo) -> Collection[str] | None:
    """The pipeline's component names this validation runs with (`registry.check` passes them
    in the context), or None when it runs without."""
    components: Collection[str] | None = (info.context or {}).get(COMPONENTS_CONTEXT)
    return components


def unknown_component(name: str, components: Collection[str]) -> str:
    """The message for a component the pipeline does not have."""
    return f"unknown component {name!r} (components: {', '.join(components)})"


class TargetSpec(BaseModel):
    """Base of a platform target model: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


TargetT = TypeVar("TargetT", bound=TargetSpec)


class ActuatorOptions(BaseModel, Generic[TargetT]):
    """Options common to every actuator; a subclass adds its platform's own.

    timeout_s: longest wait for one platform call; a call that takes longer is UNAVAILABLE.
    allow_other_autoscalers: by default an actuator refuses to start when another autoscaler
    (an HPA, a KEDA ScaledObject, an Application Auto Scaling policy, Ray Serve's own
    autoscaling) already drives one of its targets, since two controllers on one replica
    count fight; `true` downgrades that to a warning.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    targets: dict[str, TargetT] = Field(..., min_length=1)
    timeout_s: PositiveFloat = 10.0
    allow_other_autoscalers: bool = False

    @classmethod
    def for_config(cls, options: Self | Mapping[str, Any], config: Config) -> Self:
        """`options` (as the config file gives them, or already built) validated and checked
        to map exactly the components of `config`."""
        params = options if isinstance(options, cls) else cls.model_validate(dict(options))
        check_targets(params, config)
        return params

    @field_validator("targets")
    @classmethod
    def _targets_cover_components(
        cls, targets: dict[str, TargetT], info: ValidationInfo
    ) -> dict[str, TargetT]:
        components = context_components(info)
        if components is not None:
            problems = target_problems(targets, components)
            if problems:
                raise ValueError("; ".join(problems))
        return targets


def target_problems(targets: Mapping[str, Any], components: Collection[str]) -> list[str]:
    """Mismatches between the `targets` keys and the pipeline's components, as messages."""
    problems = [unknown_component(name, components) for name in targets if name not in components]
    problems += [f"no target for component {name!r}" for name in components if name not in targets]
    return problems


def check_targets(options: ActuatorOptions[Any], config: Config) -> None:
    """Raise `ConfigError` (`actuator.targets: ...`) unless `options` maps every component of
    `config` and nothing else; for options built without the validation context."""
    problems = target_problems(options.targets, list(config.pipeline.components))
    if problems:
        raise ConfigError([f"actuator.targets: {p}" for p in problems])


# --------------------------------------------------------------------------------------------
# Platform answers in the engine's words


def failure_for_http_status(status: int) -> Failure:
    """The `Failure` an HTTP error status means for a scaling call.

    401 and 403 are FORBIDDEN (retrying will not grant permission, but credentials can be
    rotated, so the engine still retries after a backoff); 404 and 410 NOT_FOUND; 409 CONFLICT;
    429 THROTTLED; other 4xx INVALID (the request itself was refused); 5xx, 408 and anything
    else UNAVAILABLE.
    """
    if status in (401, 403):
        return Failure.FORBIDDEN
    if status in (404, 410):
        return Failure.NOT_FOUND
    if status == 409:
        return Failure.CONFLICT
    if status == 429:
        return Failure.THROTTLED
    if status != 408 and 400 <= status < 500:
        return Failure.INVALID
    return Failure.UNAVAILABLE


def parse_retry_after(value: str | None, now_unix_s: float | None = None) -> float | None:
    """Seconds to wait from an HTTP `Retry-After` value (delay-seconds or an HTTP date), or None
    when it is absent or unreadable. `now_unix_s` is needed only for the date form."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    now = time.time() if now_unix_s is None else now_unix_s
    return max(0.0, when.timestamp() - now)


def retry_on_conflict(attempt: Callable[[], ActuationResult], retries: int) -> ActuationResult:
    """Call `attempt` (which must read fresh state each time) until it does not answer CONFLICT,
    at most `1 + retries` times; the last result is returned as it is."""
    result = attempt()
    for _ in range(retries):
        if result.failure is not Failure.CONFLICT:
            break
        result = attempt()
    return result


# --------------------------------------------------------------------------------------------
# One change at a time


@dataclass(frozen=True, slots=True)
class _Write:
    replicas: int
    at_s: float
    previous: int | None  # the count before the write, when the adapter knew it


class InProgressGuard:
    """Remembers the last change written to each target and whether the platform took it in.

    An adapter calls `wrote(target, n, previous)` after a successful write and, before the next
    one, `pending(target, settled, replicas)` with whether the platform shows the change
    applied (for Kubernetes: the scale's status count equals its spec). The target counts as in
    progress until it settles or `settle_timeout_s` has passed since the write; 0 disables the
    guard.

    With `raise_while_scaling_up`, a scale-up in progress does not hold a larger one: raising
    the target while replicas are still starting only starts more (Kubernetes' /scale and Ray
    Serve accept it at any time), and holding it would make a policy that sees a ramp coming
    wait a whole cold start per step. Lowering it, or any change after a scale-down, still
    waits. Platforms that refuse any update while one is applied (SageMaker) leave it off.

    Worked example, settle_timeout_s = 60: a write at t = 100 s whose pods are refused by a
    quota never settles; further changes are held until t = 160 s, then allowed again. With
    `raise_while_scaling_up`, after 8 -> 9 written at t = 100 s, 10 may go at t = 115 s; 8 may
    not.

    The guard is adapter state, not decision state: it reads time from `clock` (the system
    clock unless a test passes a fake one).
    """

    def __init__(
        self,
        settle_timeout_s: float,
        clock: Clock | None = None,
        *,
        raise_while_scaling_up: bool = False,
    ) -> None:
        if settle_timeout_s < 0:
            raise ValueError(f"settle_timeout_s = {settle_timeout_s}, must be >= 0")
        self.settle_timeout_s = settle_timeout_s
        self.clock: Clock = clock or SystemClock()
        self.raise_while_scaling_up = raise_while_scaling_up
        self._writes: dict[str, _Write] = {}

    def wrote(self, target: str, replicas: int, previous: int | None = None) -> None:
        self._writes[target] = _Write(replicas, self.clock.now_s(), previous)

    def pending(self, target: str, settled: bool, replicas: int | None = None) -> str | None:
        """Why a change of `target` (to `replicas`, when given) must wait, or None when it may
        go ahead."""
        write = self._writes.get(target)
        if write is None:
            return None
        waited_s = self.clock.now_s() - write.at_s
        if settled or waited_s >= self.settle_timeout_s:
            del self._writes[target]
            return None
        if (
            self.raise_while_scaling_up
            and replicas is not None
            and write.previous is not None
            and write.previous < write.replicas < replicas
        ):
            return None  # a further scale-up on top of one in progress
        return (
            f"the change to {write.replicas} replicas written {waited_s:.0f} s ago is still "
            f"being applied (waiting up to {self.settle_timeout_s:g} s)"
        )


class OtherAutoscalerError(ActuatorError):
    """Another autoscaler drives a target this actuator would scale; the message names both."""
