"""Talking to a guarded Prometheus: TLS verified against a CA file (on by default), basic auth
against the real server's web configuration, and bearer tokens (re-read when their file
changes) as a stand-in API server sees them."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from elastiscale.adapters.prometheus.http import ConnectionParams, PrometheusHTTP
from elastiscale.errors import MetricSourceError
from elastiscale.testing.prometheus import LocalPrometheus

pytestmark = pytest.mark.integration

USER, PASSWORD = "elastiscale", "s3cret-pw"
#: bcrypt (cost 4) of PASSWORD, as Prometheus's web configuration wants it.
PASSWORD_BCRYPT = "$2b$04$abcdefghijklmnopqrstuufbu7IbsAKnz0sK.RhkuQd5ApLvLcZVy"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def write_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key) files."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("test CA"))
        .issuer_name(_name("test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.fixture
def guarded(
    prometheus_factory: Callable[..., LocalPrometheus], tmp_path: Path
) -> tuple[LocalPrometheus, Path]:
    """A Prometheus behind TLS and basic auth; returns it and the CA file."""
    ca, cert, key = write_certificates(tmp_path)
    server = prometheus_factory(
        web_config={
            "tls_server_config": {"cert_file": str(cert), "key_file": str(key)},
            "basic_auth_users": {USER: PASSWORD_BCRYPT},
        },
        probe_auth=(USER, PASSWORD),
    )
    return server, ca


def connect(url: str, **options: Any) -> PrometheusHTTP:
    return PrometheusHTTP(ConnectionParams.model_validate({"url": url, **options}))


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_and_basic_auth_against_the_real_server(
    guarded: tuple[LocalPrometheus, Path], tmp_path: Path
) -> None:
    server, ca = guarded
    assert server.url.startswith("https://")
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    good = {
        "tls": {"ca_file": str(ca)},
        "auth": {"username": USER, "password_file": str(password_file)},
    }
    assert connect(server.url, **good).instant("vector(7)").series[0][2] == 7.0
    skip_verify = {
        "tls": {"insecure_skip_verify": True},
        "auth": {"username": USER, "password": PASSWORD},
    }
    assert connect(server.url, **skip_verify).instant("vector(1)").series[0][2] == 1.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"auth": {"username": USER, "password": PASSWORD}}, "certificate verify failed"),
        ({"tls": {"ca_file": "CA"}}, r"credentials refused \(HTTP 401\)"),
        ({"tls": {"ca_file": "CA"}, "auth": {"username": USER, "password": "x"}}, "HTTP 401"),
    ],
)
def test_unverified_or_unauthorized_is_a_source_error(
    guarded: tuple[LocalPrometheus, Path], options: dict[str, Any], message: str
) -> None:
    server, ca = guarded
    if "tls" in options:
        options = {**options, "tls": {"ca_file": str(ca)}}
    with pytest.raises(MetricSourceError, match=message):
        connect(server.url, **options).instant("vector(1)")


# --------------------------------------------------------------------------------------------
# Bearer tokens


@pytest.fixture
def recording_api() -> Iterator[tuple[str, list[str]]]:
    """A stand-in query API on 127.0.0.1 that records each request's Authorization header."""
    seen: list[str] = []
    body = json.dumps(
        {"status": "success", "data": {"resultType": "vector", "result": []}}
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}", seen
    httpd.shutdown()
    httpd.server_close()


def test_bearer_tokens_inline_and_from_a_file_that_rotates(
    recording_api: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, seen = recording_api
    connect(url, auth={"bearer_token": "inline-token"}).instant("up")
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    http = connect(url, auth={"bearer_token_file": str(token_file)})
    http.instant("up")
    http.instant("up")
    token_file.write_text("second\n")
    http.instant("up")
    assert seen == ["Bearer inline-token", "Bearer first", "Bearer first", "Bearer second"]
    token_file.unlink()
    with pytest.raises(MetricSourceError, match=r"bearer_token_file .*: cannot read"):
        http.instant("up")
