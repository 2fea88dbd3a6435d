"""The actuator contract helpers (elastiscale.adapters.contract) that the Kubernetes actuator
is built on and other actuators share: HTTP status to `Failure`, Retry-After, retry on
conflict, one change at a time, and the `targets` mapping checked against the pipeline."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from elastiscale import ActuationResult, Failure, FakeClock
from elastiscale.adapters.contract import (
    ActuatorOptions,
    InProgressGuard,
    TargetSpec,
    failure_for_http_status,
    parse_retry_after,
    retry_on_conflict,
)


@pytest.mark.parametrize(
    ("status", "failure"),
    [
        (400, Failure.INVALID),
        (401, Failure.FORBIDDEN),
        (403, Failure.FORBIDDEN),
        (404, Failure.NOT_FOUND),
        (408, Failure.UNAVAILABLE),
        (409, Failure.CONFLICT),
        (410, Failure.NOT_FOUND),
        (415, Failure.INVALID),
        (422, Failure.INVALID),
        (429, Failure.THROTTLED),
        (500, Failure.UNAVAILABLE),
        (502, Failure.UNAVAILABLE),
        (503, Failure.UNAVAILABLE),
        (504, Failure.UNAVAILABLE),
    ],
)
def test_http_status_to_failure(status: int, failure: Failure) -> None:
    assert failure_for_http_status(status) is failure


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("3", 3.0),
        ("0.5", 0.5),
        ("-4", 0.0),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 10.0),  # 10 s after now_unix_s below
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # already past
    ],
)
def test_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now_unix_s=1445412470.0) == expected


def conflicts_then(
    failures_first: int, last: Failure | None
) -> tuple[list[int], Callable[[], ActuationResult]]:
    calls: list[int] = []

    def attempt() -> ActuationResult:
        calls.append(len(calls))
        if len(calls) <= failures_first:
            return ActuationResult.failed("llm", 3, Failure.CONFLICT, "stale")
        if last is None:
            return ActuationResult.success("llm", 3)
        return ActuationResult.failed("llm", 3, last, "no")

    return calls, attempt


@pytest.mark.parametrize(
    ("conflicts", "then", "retries", "calls", "outcome"),
    [
        (0, None, 3, 1, None),
        (2, None, 3, 3, None),  # two conflicts, then success
        (5, None, 3, 4, Failure.CONFLICT),  # gives up after 1 + 3 attempts
        (0, Failure.FORBIDDEN, 3, 1, Failure.FORBIDDEN),  # other failures are not retried
        (1, Failure.UNAVAILABLE, 3, 2, Failure.UNAVAILABLE),
        (1, None, 0, 1, Failure.CONFLICT),
    ],
)
def test_retry_on_conflict(
    conflicts: int, then: Failure | None, retries: int, calls: int, outcome: Failure | None
) -> None:
    made, attempt = conflicts_then(conflicts, then)
    result = retry_on_conflict(attempt, retries)
    assert len(made) == calls
    assert result.failure is outcome


def test_in_progress_guard_scenario() -> None:
    clock = FakeClock(100.0)
    guard = InProgressGuard(settle_timeout_s=60.0, clock=clock)
    assert guard.pending("a", settled=False) is None  # nothing written yet
    guard.wrote("a", 5)
    assert guard.pending("b", settled=False) is None  # per target
    clock.advance(30)
    message = guard.pending("a", settled=False)
    assert message is not None and "5 replicas written 30 s ago" in message
    assert guard.pending("a", settled=True) is None  # settled: free, and forgotten
    assert guard.pending("a", settled=False) is None
    guard.wrote("a", 6)
    clock.advance(60)
    assert guard.pending("a", settled=False) is None  # timed out


@pytest.mark.parametrize(
    ("raise_while_scaling_up", "previous", "written", "wanted", "held"),
    [
        (True, 8, 9, 10, False),  # a further scale-up on top of one in progress goes ahead
        (True, 8, 9, 9, True),  # the same count: nothing to add
        (True, 8, 9, 8, True),  # reversing a scale-up waits
        (True, 9, 8, 10, True),  # after a scale-down, any change waits
        (True, 9, 8, 7, True),
        (True, None, 9, 10, True),  # the count before the write unknown: wait
        (False, 8, 9, 10, True),  # off (SageMaker): every change waits
    ],
)
def test_in_progress_guard_lets_a_scale_up_grow(
    raise_while_scaling_up: bool, previous: int | None, written: int, wanted: int, held: bool
) -> None:
    clock = FakeClock(100.0)
    guard = InProgressGuard(60.0, clock, raise_while_scaling_up=raise_while_scaling_up)
    guard.wrote("a", written, previous=previous)
    clock.advance(15)
    assert (guard.pending("a", settled=False, replicas=wanted) is not None) is held


def test_zero_settle_timeout_never_holds_and_negative_is_refused() -> None:
    guard = InProgressGuard(0.0, FakeClock())
    guard.wrote("a", 1)
    assert guard.pending("a", settled=False) is None
    with pytest.raises(ValueError, match="settle_timeout_s = -1"):
        InProgressGuard(-1.0)


@given(
    timeout_s=st.floats(0, 1e4),
    wait_s=st.floats(0, 2e4),
    settled=st.booleans(),
)
def test_guard_never_holds_past_its_timeout(timeout_s: float, wait_s: float, settled: bool) -> None:
    clock = FakeClock(0.0)
    guard = InProgressGuard(timeout_s, clock)
    guard.wrote("t", 3)
    clock.advance(wait_s)
    held = guard.pending("t", settled) is not None
    assert held == (not settled and wait_s < timeout_s)


class Target(TargetSpec):
    name: str


class Options(ActuatorOptions[Target]):
    region: str = "here"


def test_targets_are_checked_against_the_components_in_the_context() -> None:
    raw = {"targets": {"router": {"name": "r"}, "lm": {"name": "l"}}}
    assert Options.model_validate(raw).targets["lm"].name == "l"  # no context: no check
    with pytest.raises(ValidationError) as exc:
        Options.model_validate(raw, context={"components": ["router", "llm"]})
    text = str(exc.value)
    assert "unknown component 'lm' (components: router, llm)" in text
    assert "no target for component 'llm'" in text


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"targets": {}}, "targets"),
        ({"targets": {"router": {"name": "r", "nme": 1}}}, "nme"),
        ({"targets": {"router": {"name": "r"}}, "timeout_s": 0}, "timeout_s"),
        ({"targets": {"router": {"name": "r"}}, "regoin": "x"}, "regoin"),
    ],
)
def test_options_refuse_bad_fields(raw: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        Options.model_validate(raw)
