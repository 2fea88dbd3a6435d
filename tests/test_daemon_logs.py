"""Logs: secrets never reach a line (patterns and values from the config), JSON lines carry
the fields and the traceback."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from elastiscale.daemon import logs
from elastiscale.daemon.logs import (
    REDACTED,
    JSONFormatter,
    TextFormatter,
    redact,
    register_secrets_in,
    setup_logging,
)


@pytest.fixture(autouse=True)
def _no_leftover_secrets() -> Iterator[None]:
    yield
    logs._secrets.clear()


@pytest.mark.parametrize(
    ("text", "kept", "gone"),
    [
        ("headers: {'Authorization': 'Bearer eyJhbGciOi.abc.def'}", "Authorization", "eyJhbG"),
        ("Authorization: Basic dXNlcjpwYXNz", "Basic", "dXNlcjpwYXNz"),
        ("sending bearer sk-live-0123456789abcdef to the API", "sending bearer", "sk-live"),
        ("url=https://x/?token=abc123secret&limit=5", "limit=5", "abc123secret"),
        ('{"password": "hunter2hunter2", "user": "bob"}', '"user": "bob"', "hunter2"),
        ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG", "aws_secret_access_key=", "wJalrXUt"),
        ("key id AKIAIOSFODNN7EXAMPLE in use", "key id", "AKIAIOSFODNN7EXAMPLE"),
        ("api_key: 'zzz-top-secret'", "api_key", "zzz-top-secret"),
    ],
)
def test_secret_patterns_are_redacted(text: str, kept: str, gone: str) -> None:
    out = redact(text)
    assert gone not in out and kept in out and REDACTED in out


@pytest.mark.parametrize(
    "text",
    [
        "bearer_token_file=/var/run/secrets/kubernetes.io/serviceaccount/token",
        "scaled llm 3 -> 5 (policy:hpa)",
        "tokens_per_s = 4707.5",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_secrets_named_in_the_config_are_redacted_anywhere() -> None:
    options = {
        "url": "http://prom:9090",
        "auth": {"bearer_token": "t0ps3cr3t-value", "bearer_token_file": "/path/token"},
        "headers": [{"x_api_key": "k3y-in-a-list"}],
        "targets": {"router": {"name": "router"}},
    }
    assert register_secrets_in(options) == 2
    line = redact("request to http://prom:9090 failed: t0ps3cr3t-value k3y-in-a-list /path/token")
    assert "t0ps3cr3t" not in line and "k3y-in" not in line
    assert "/path/token" in line and "http://prom:9090" in line


def capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test.daemon.logs.{id(formatter)}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_json_lines_carry_fields_and_the_traceback_redacted() -> None:
    logger, stream = capture(JSONFormatter())
    try:
        raise RuntimeError("call with Authorization: Bearer abcdefghijklmnop failed")
    except RuntimeError:
        logger.exception("tick %d failed", 4, extra={"component": "llm"})
    entry = json.loads(stream.getvalue())
    assert entry["level"] == "ERROR" and entry["message"] == "tick 4 failed"
    assert entry["component"] == "llm" and entry["time"].endswith("Z")
    assert "RuntimeError" in entry["exception"] and "abcdefghijklmnop" not in entry["exception"]


def test_text_lines_are_redacted_too() -> None:
    logger, stream = capture(TextFormatter())
    logger.warning("token=%s", "s3cr3t-t0k3n")
    assert "s3cr3t" not in stream.getvalue() and "WARNING" in stream.getvalue()


def test_setup_replaces_handlers_and_quiets_chatty_libraries() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging("json")
        assert len(root.handlers) == 1
        assert isinstance(root.handlers[0].formatter, JSONFormatter)
        assert logging.getLogger("urllib3").level == logging.WARNING
    finally:
        root.handlers, root.level = saved[0], saved[1]
