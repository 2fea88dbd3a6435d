"""One Kubernetes API call, its answer or its failure in the engine's words.

`call(method, *args, timeout_s=...)` runs a method of the official client with a timeout and
turns what can go wrong into `KubeCallError(failure, message)`: an HTTP error by its status
(with the Status object's message and any Retry-After), a timeout or a refused connection as
UNAVAILABLE.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import urllib3

if TYPE_CHECKING:  # imported where used: the client is the optional extra `kubernetes`
    from kubernetes import client as k8s

from elastiscale.adapters.base import Failure
from elastiscale.adapters.contract import failure_for_http_status, parse_retry_after

T = TypeVar("T")


class KubeCallError(Exception):
    """One API call failed; `failure` is its meaning for the engine."""

    def __init__(self, failure: Failure, message: str, retry_after_s: float | None = None) -> None:
        message = " ".join(message.split())  # one line: client errors quote multi-line text
        super().__init__(message)
        self.failure = failure
        self.message = message
        self.retry_after_s = retry_after_s


def call(method: Callable[..., T], *args: Any, timeout_s: float) -> T:
    """`method(*args)` with `timeout_s` as the request timeout; raises `KubeCallError`."""
    from kubernetes.client import ApiException

    try:
        return method(*args, _request_timeout=timeout_s)
    except ApiException as exc:
        status = int(exc.status or 0)
        headers = exc.headers or {}
        retry_after = parse_retry_after(headers.get("Retry-After"))
        failure = failure_for_http_status(status) if status else Failure.UNAVAILABLE
        raise KubeCallError(failure, api_message(exc), retry_after) from None
    except urllib3.exceptions.NewConnectionError as exc:  # a subclass of its TimeoutError
        reason = str(exc).rsplit("] ", 1)[-1] if "] " in str(exc) else str(exc)
        raise KubeCallError(Failure.UNAVAILABLE, f"API server unreachable: {reason}") from None
    except urllib3.exceptions.TimeoutError:
        raise KubeCallError(
            Failure.UNAVAILABLE, f"no answer within timeout_s = {timeout_s:g}"
        ) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise KubeCallError(Failure.UNAVAILABLE, f"API server unreachable: {exc}") from None
    except AssertionError as exc:  # the client's own check of an answer it could not read
        raise KubeCallError(Failure.UNAVAILABLE, f"unreadable answer: {exc}") from None
    except ValueError as exc:  # a request the client could not send or an answer it could not read
        raise KubeCallError(Failure.UNAVAILABLE, f"request failed: {exc}") from None


def api_message(exc: k8s.ApiException) -> str:
    """`HTTP 404: <the Status object's message>`, or the HTTP reason when the body has none."""
    status = int(exc.status or 0)
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        body = None
    message = body.get("message") if isinstance(body, dict) else None
    return f"HTTP {status}: {message or exc.reason or 'no message'}"
