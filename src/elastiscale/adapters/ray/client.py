"""The few calls of the Ray dashboard's Serve REST API the `ray-serve` actuator makes, over
HTTP with the standard library (no Ray installation needed), with failures classified in the
engine's words (`ServeRequestError`)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from elastiscale.adapters.base import Failure
from elastiscale.adapters.contract import failure_for_http_status, parse_retry_after


class ServeRequestError(Exception):
    """An HTTP exchange with the dashboard that did not succeed, already classified."""

    def __init__(self, failure: Failure, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.failure = failure
        self.retry_after_s = retry_after_s


def failure_for_status(status: int, body: str) -> Failure:
    """The engine's word for an HTTP error status of the Serve REST API.

    412 is what Serve answers when the application was not deployed with
    `external_scaler_enabled: true` (not ours to change: forbidden) or when the deployment is
    being deleted (gone: not found); the rest as for every HTTP platform.
    """
    if status == 412:
        return Failure.NOT_FOUND if "deleted" in body.lower() else Failure.FORBIDDEN
    return failure_for_http_status(status)


class ServeClient:
    """The few calls of the Serve REST API this actuator makes."""

    def __init__(self, address: str, token: str | None, timeout_s: float) -> None:
        self.address = address
        self.token = token
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Send one request; return the decoded JSON answer (None when empty) or raise
        `ServeRequestError`."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.address + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                text = resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", "replace")
            raise ServeRequestError(
                failure_for_status(exc.code, text),
                f"{method} {path}: HTTP {exc.code}: {_error_text(text)}",
                parse_retry_after(exc.headers.get("Retry-After")),
            ) from None
        except OSError as exc:  # refused, reset, timed out, name not resolved
            reason = getattr(exc, "reason", exc)
            raise ServeRequestError(
                Failure.UNAVAILABLE, f"{method} {self.address}{path}: {reason}"
            ) from None
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise ServeRequestError(
                Failure.UNAVAILABLE, f"{method} {path}: answer is not JSON: {text[:200]!r}"
            ) from None

    def instance(self) -> dict[str, Any]:
        """`GET /api/serve/applications/`: every application, its deployments and config."""
        got = self.request("GET", "/api/serve/applications/")
        if not isinstance(got, dict) or not isinstance(got.get("applications"), dict):
            raise ServeRequestError(
                Failure.UNAVAILABLE, "GET /api/serve/applications/: unexpected body"
            )
        return got

    def scale(self, application: str, deployment: str, replicas: int) -> None:
        """The external-scaler call."""
        path = f"/api/v1/applications/{_quote(application)}/deployments/{_quote(deployment)}/scale"
        self.request("POST", path, {"target_num_replicas": replicas})

    def deploy(self, config: Mapping[str, Any]) -> None:
        """The declarative call: the whole Serve config."""
        self.request("PUT", "/api/serve/applications/", config)


def _error_text(body: str) -> str:
    """The `error` field of a JSON error body, else the body itself (shortened)."""
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError:
        parsed = None
    text = str(parsed["error"]) if isinstance(parsed, dict) and "error" in parsed else body
    return " ".join(text.split())[:300]  # one line


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")
