"""The connection to a Prometheus server: options, authentication, TLS, timeouts, and the two
query calls, on top of `prometheus_api_client.PrometheusConnect`.

Errors come back in two kinds, because the engine treats them differently:

- `MetricSourceError`: the server as a whole did not answer (unreachable, timed out, 5xx,
  credentials refused). The engine holds every component this tick and tries again next tick.
- `PromQLError`: the server answered and refused one query (400 bad_data, 422 execution
  error). Only the signals that query serves are missing.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, SecretStr, model_validator
from urllib3 import exceptions as urllib3_exceptions
from urllib3.util.retry import Retry

from elastiscale.errors import ElastiscaleError, MetricSourceError

log = logging.getLogger("elastiscale.adapters.prometheus")

Array = npt.NDArray[np.float64]


class PromQLError(ElastiscaleError):
    """The server refused a query: `error_type` is Prometheus's (bad_data, execution...)."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        self.status = status
        self.error_type = error_type
        self.message = message
        super().__init__(f"{error_type}: {message}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthParams(_Strict):
    """One way to authenticate: a bearer token (inline or from a file, re-read when the file
    changes, as mounted service-account tokens do) or HTTP basic auth."""

    bearer_token: SecretStr | None = None
    bearer_token_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None

    @model_validator(mode="after")
    def _one_method(self) -> AuthParams:
        methods = [
            name
            for name in ("bearer_token", "bearer_token_file", "username")
            if getattr(self, name) is not None
        ]
        if len(methods) != 1:
            raise ValueError(
                "set exactly one of bearer_token, bearer_token_file, username"
                + (f" (got {', '.join(methods)})" if methods else "")
            )
        has_password = self.password is not None or self.password_file is not None
        if self.username is None and has_password:
            raise ValueError("password and password_file go with username")
        if self.password is not None and self.password_file is not None:
            raise ValueError("set password or password_file, not both")
        return self


class TLSParams(_Strict):
    """Server verification is on by default, against the system CAs or `ca_file`;
    `insecure_skip_verify: true` turns it off. `cert_file` and `key_file` give a client
    certificate."""

    ca_file: Path | None = None
    insecure_skip_verify: bool = False
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _pairs(self) -> TLSParams:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if self.insecure_skip_verify and self.ca_file is not None:
            raise ValueError("ca_file has no effect with insecure_skip_verify: true")
        return self


class ConnectionParams(_Strict):
    """Where the server is and how to talk to it.

    timeout_s: the longest wait for one answer (also sent to the server as its query timeout).
    retries: extra attempts after a connection error or a 502/503/504, with backoff. The live
    loop wants 0 (the engine retries at the next tick); history fetches may want a few.
    """

    url: str = Field(..., min_length=1)
    timeout_s: PositiveFloat = 5.0
    retries: int = Field(0, ge=0, le=10)
    auth: AuthParams | None = None
    tls: TLSParams = TLSParams()

    @model_validator(mode="after")
    def _url_scheme(self) -> ConnectionParams:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url {self.url!r} must start with http:// or https://")
        return self


class _BearerAuth(requests.auth.AuthBase):
    """Adds `Authorization: Bearer ...`, re-reading the token file when it changes."""

    def __init__(self, token: str | None, path: Path | None) -> None:
        self._token = token
        self._path = path
        self._mtime_ns: int | None = None

    def _current(self) -> str:
        if self._path is None:
            return self._token or ""
        try:
            mtime_ns = self._path.stat().st_mtime_ns
            if mtime_ns != self._mtime_ns:
                self._token = self._path.read_text(encoding="utf-8").strip()
                self._mtime_ns = mtime_ns
        except OSError as exc:
            raise MetricSourceError(
                f"bearer_token_file {self._path}: cannot read: {exc.strerror or exc}"
            ) from None
        return self._token or ""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._current()}"
        return request


def _read_secret(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise MetricSourceError(f"{what} {path}: cannot read: {exc.strerror or exc}") from None


@dataclass(frozen=True, slots=True)
class InstantResult:
    """The answer to an instant query: `result_type` is vector, scalar, matrix or string;
    `series` lists (labels, timestamp_s, value) and is empty when there is no data."""

    result_type: str
    series: list[tuple[dict[str, str], float, float]]


class PrometheusHTTP:
    """Instant and range queries against one server; counts the requests it sends."""

    def __init__(self, params: ConnectionParams) -> None:
        self.params = params
        self.url = params.url.rstrip("/")
        self.requests_sent = 0
        self._last_response: requests.Response | None = None
        session = requests.Session()
        tls = params.tls
        session.verify = (
            False if tls.insecure_skip_verify else str(tls.ca_file) if tls.ca_file else True
        )
        if tls.cert_file is not None and tls.key_file is not None:
            session.cert = (str(tls.cert_file), str(tls.key_file))
        session.hooks["response"].append(self._remember)
        retry = Retry(
            total=params.retries,
            connect=params.retries,
            read=params.retries,
            status=params.retries,
            backoff_factor=0.5,
            status_forcelist=(502, 503, 504),
            raise_on_status=False,
        )
        self._client = PrometheusConnect(
            url=self.url,
            session=session,
            retry=retry,
            auth=self._auth(params.auth),
            timeout=params.timeout_s,
        )
        self._session = session

    @staticmethod
    def _auth(auth: AuthParams | None) -> Any:
        if auth is None:
            return None
        if auth.username is not None:
            if auth.password_file is not None:
                password = _read_secret(auth.password_file, "password_file")
            else:
                password = auth.password.get_secret_value() if auth.password else ""
            return (auth.username, password)
        token = auth.bearer_token.get_secret_value() if auth.bearer_token else None
        return _BearerAuth(token, auth.bearer_token_file)

    def _remember(self, response: requests.Response, *args: object, **kwargs: object) -> None:
        self._last_response = response

    def _result_type(self) -> str | None:
        """`data.resultType` of the last answer (the client returns `data.result` only, and an
        empty result does not show whether it was a vector or a range)."""
        try:
            body = self._last_response.json() if self._last_response is not None else None
            return str(body["data"]["resultType"]) if isinstance(body, dict) else None
        except (ValueError, KeyError, TypeError):
            return None

    def close(self) -> None:
        self._session.close()

    # ----------------------------------------------------------------------------------------

    def instant(self, query: str, at_s: float | None = None) -> InstantResult:
        """Evaluate `query` at `at_s` (Unix seconds; the server's now when None)."""
        params: dict[str, Any] = {"timeout": _go_duration(self.params.timeout_s)}
        if at_s is not None:
            params["time"] = _fmt_time(at_s)
        data = self._call(lambda: self._client.custom_query(query, params=params))
        try:
            return _parse_instant(data, self._result_type())
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            # A body that is JSON but not an instant-query answer: refused whole.
            raise MetricSourceError(
                f"{self.url}: malformed answer ({type(exc).__name__}: {one_line(str(exc))})"
            ) from None

    def range(
        self, query: str, start_s: float, end_s: float, step_s: float
    ) -> list[tuple[dict[str, str], Array, Array]]:
        """Evaluate `query` at start_s, start_s + step_s, ... <= end_s; one (labels, times_s,
        values) entry per series ("NaN" and "+Inf" values read as floats)."""
        start = _dt.datetime.fromtimestamp(start_s, tz=_dt.UTC)
        end = _dt.datetime.fromtimestamp(end_s, tz=_dt.UTC)
        # The client rounds start and end to whole seconds; exact values go in `params`.
        params = {
            "start": _fmt_time(start_s),
            "end": _fmt_time(end_s),
            "timeout": _go_duration(self.params.timeout_s),
        }
        data = self._call(
            lambda: self._client.custom_query_range(
                query, start, end, _fmt_time(step_s), params=params
            )
        )
        out = []
        for entry in data or []:
            samples = entry.get("values") or []
            times_s = np.fromiter((float(ts) for ts, _ in samples), float, len(samples))
            values = np.asarray([v for _, v in samples], dtype=np.str_).astype(float)
            out.append((dict(entry.get("metric", {})), times_s, values))
        return out

    def ready(self) -> bool:
        """Whether `/-/ready` answers 200 (False when unreachable)."""
        try:
            response = self._session.get(f"{self.url}/-/ready", timeout=self.params.timeout_s)
        except requests.RequestException:
            return False
        return response.status_code == 200

    # ----------------------------------------------------------------------------------------

    def _call(self, send: Any) -> Any:
        self._last_response = None
        self.requests_sent += 1
        try:
            return send()
        except requests.Timeout:
            raise MetricSourceError(
                f"{self.url}: no answer within {self.params.timeout_s:g} s"
            ) from None
        except requests.ConnectionError as exc:
            if _timed_out(exc):
                raise MetricSourceError(
                    f"{self.url}: no answer within {self.params.timeout_s:g} s"
                ) from None
            raise MetricSourceError(f"{self.url}: cannot connect ({_root_cause(exc)})") from None
        except requests.RequestException as exc:
            raise MetricSourceError(f"{self.url}: request failed: {_root_cause(exc)}") from None
        except PrometheusApiClientException:
            raise self._refusal() from None
        except ValueError as exc:  # the body was not JSON: not a Prometheus API
            raise MetricSourceError(f"{self.url}: not a Prometheus API answer: {exc}") from None
        except (KeyError, IndexError, TypeError, AttributeError) as exc:  # JSON of another shape
            raise MetricSourceError(
                f"{self.url}: not a Prometheus API answer ({type(exc).__name__}: "
                f"{one_line(str(exc))})"
            ) from None

    def _refusal(self) -> Exception:
        response = self._last_response
        if response is None:  # pragma: no cover - the hook always runs before the exception
            return MetricSourceError(f"{self.url}: query failed")
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            error_type = one_line(str(body.get("errorType", "error")))
            message = one_line(str(body.get("error", "")))
        else:
            error_type, message = "error", one_line(response.text)
        if status in (400, 422):
            return PromQLError(status, error_type, message)
        if status in (401, 403):
            return MetricSourceError(f"{self.url}: credentials refused (HTTP {status})")
        return MetricSourceError(f"{self.url}: HTTP {status} {error_type}: {message}")


def one_line(text: str, limit: int = 200) -> str:
    """`text` on one line (whitespace runs as one space), cut at `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what it wraps (urllib3 keeps the inner error in `reason`), outermost first."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        inner = getattr(seen, "reason", None)
        seen = inner if isinstance(inner, BaseException) else seen.__cause__ or seen.__context__
    return chain


def _timed_out(exc: BaseException) -> bool:
    """Whether the server was reached but did not answer in time. (urllib3's
    NewConnectionError, a refused connection, subclasses its timeout error; it is not one.)"""
    return any(
        isinstance(e, TimeoutError | urllib3_exceptions.TimeoutError)
        and not isinstance(e, urllib3_exceptions.NewConnectionError)
        for e in _causes(exc)
    )


def _root_cause(exc: BaseException) -> str:
    """The innermost reason of a requests error, short: 'Connection refused'."""
    inner = _causes(exc)[-1]
    text = str(inner)
    if "] " in text and "Errno" in text:
        text = text.rsplit("] ", 1)[-1]
    return text or type(inner).__name__


def _fmt_time(seconds: float) -> str:
    """A time or step for the API: plain decimal seconds, never exponent notation."""
    return format(seconds, ".3f").rstrip("0").rstrip(".")


def _go_duration(seconds: float) -> str:
    return f"{max(1, math.ceil(seconds * 1000))}ms"


def _number(text: object) -> float:
    """A sample value as Prometheus writes it ("1.5", "NaN", "+Inf")."""
    return float(str(text))


def _parse_instant(data: Any, result_type: str | None = None) -> InstantResult:
    """Shape the client's `result` into `InstantResult`; without `result_type` the type is told
    from the shape: a list of dicts with `value` (vector) or `values` (matrix), or a
    [time, value] pair (scalar or string)."""
    if result_type in ("matrix", "string"):
        return InstantResult(result_type, [])
    if isinstance(data, list) and len(data) == 2 and not isinstance(data[0], Mapping):
        try:
            return InstantResult("scalar", [({}, float(data[0]), _number(data[1]))])
        except ValueError:
            return InstantResult("string", [])
    series: list[tuple[dict[str, str], float, float]] = []
    for entry in data or []:
        if "values" in entry:
            return InstantResult("matrix", [])
        ts, value = entry["value"]
        metric = entry.get("metric", {})
        if not isinstance(metric, Mapping):
            raise ValueError(f"metric is {type(metric).__name__}, not an object")
        labels = {str(k): v for k, v in metric.items() if isinstance(v, str)}
        series.append((labels, float(ts), _number(value)))
    return InstantResult("vector", series)
