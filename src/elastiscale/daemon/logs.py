"""The daemon's logs: text lines or one JSON object per line, with secrets taken out.

Every formatted line, traceback included, passes through `redact` before it is written, so a
token cannot reach the log whatever the code that logged it: an HTTP client's debug output, an
exception message quoting a request, a config value. Two nets:

- patterns: `Authorization: Bearer ...`, `bearer <token>`, `token=...` / `"password": "..."` and
  the like, AWS access key ids (AKIA/ASIA...);
- exact values: secrets read from the config file (any option whose key names a token, password,
  secret or key) are registered with `register_secret` and replaced wherever they appear.

A JSON line looks like
    {"time": "2025-01-31T12:00:00.123Z", "level": "INFO", "logger": "elastiscale.daemon",
     "message": "scaled llm 3 -> 5", "exception": "Traceback ..."}
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

REDACTED: Final = "[redacted]"

#: Option keys whose values are secrets (matched anywhere in the key, case-insensitively);
#: keys naming a file that holds one (`bearer_token_file`) are paths, not secrets.
SECRET_KEY: Final = re.compile(
    r"(token|password|passwd|secret|api[_-]?key|access[_-]?key|credential|private[_-]?key)",
    re.IGNORECASE,
)

_PATTERNS: Final = (
    # "Authorization: Bearer abc", "'authorization': 'Basic abc'"
    (
        re.compile(r"(authorization['\"]?\s*[:=]\s*['\"]?)(?:(bearer|basic)\s+)?[^\s'\",}]+", re.I),
        lambda m: f"{m.group(1)}{m.group(2) + ' ' if m.group(2) else ''}{REDACTED}",
    ),
    (
        re.compile(r"\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}", re.I),
        lambda m: f"{m.group(1)} {REDACTED}",
    ),
    # key=value and "key": "value" for secret-looking keys, not for *_file paths
    (
        re.compile(
            r"(\b[\w-]*(?:token|password|passwd|secret|api[_-]?key|access[_-]?key)(?!_file)"
            r"['\"]?\s*[:=]\s*['\"]?)([^\s'\",}&]+)",
            re.I,
        ),
        lambda m: f"{m.group(1)}{REDACTED}",
    ),
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), lambda m: REDACTED),
)

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Replace `value` wherever it appears in later log lines (values under 4 characters are
    too likely to occur by chance and are ignored)."""
    if len(value) >= 4:
        with _secrets_lock:
            _secrets.add(value)


def register_secrets_in(options: Mapping[str, Any]) -> int:
    """Register every string under a secret-looking key in `options` (nested); the count."""
    found = 0
    for key, value in options.items():
        secret_key = bool(SECRET_KEY.search(str(key))) and not str(key).endswith("_file")
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            if isinstance(item, Mapping):
                found += register_secrets_in(item)
            elif isinstance(item, str) and secret_key:
                register_secret(item)
                found += 1
    return found


def redact(text: str) -> str:
    """`text` with registered secrets and secret-looking patterns replaced by `[redacted]`."""
    with _secrets_lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replace in _PATTERNS:
        text = pattern.sub(replace, text)
    return text


class TextFormatter(logging.Formatter):
    """`2025-01-31 12:00:00,123 INFO elastiscale.daemon: message`, redacted."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


#: LogRecord attributes that are not extra fields.
_STANDARD: Final = frozenset(
    {*vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)), "message", "asctime"}
)


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ms), level, logger, message, exception, and any
    `extra=` fields whose values JSON can hold."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = _dt.datetime.fromtimestamp(record.created, tz=_dt.UTC)
        out: dict[str, Any] = {
            "time": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out and _jsonable(value):
                out[key] = value
        return redact(json.dumps(out, default=str))


def _jsonable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | type(None) | list | dict)


#: Loggers of libraries that say too much at INFO (every HTTP connection).
_CHATTY: Final = ("urllib3", "kubernetes", "requests")


def setup_logging(
    log_format: Literal["text", "json"], level: int = logging.INFO, quiet: Iterable[str] = _CHATTY
) -> None:
    """Send every log record to stderr, formatted as asked; replaces earlier handlers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in quiet:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
