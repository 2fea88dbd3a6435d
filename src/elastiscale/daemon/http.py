"""The daemon's HTTP endpoints, served by the standard library's ThreadingHTTPServer on a thread
of its own (127.0.0.1 by default):

    GET /healthz     200 "ok" while the run loop is alive; 503 when it has stalled
    GET /readyz      200 when ready (see `DaemonStatus.readiness`), else 503; JSON with reasons
    GET /metrics     Prometheus text format (prometheus-client, the daemon's own registry)
    GET /decisions   recent decision records as JSON; `?component=llm&limit=20`

Nothing here changes the daemon's state: every endpoint is a read.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from elastiscale.daemon.status import DaemonStatus
from elastiscale.daemon.telemetry import DaemonMetrics

log = logging.getLogger("elastiscale.daemon.http")

MAX_LIMIT = 10_000


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    status: DaemonStatus
    metrics: DaemonMetrics


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "elastiscale"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        status = self.server.status
        if url.path == "/healthz":
            alive = status.liveness(time.monotonic())
            text = "ok\n" if alive.ready else "; ".join(alive.reasons) + "\n"
            self._send(200 if alive.ready else 503, text.encode(), "text/plain; charset=utf-8")
        elif url.path == "/readyz":
            ready = status.readiness()
            body = {"ready": ready.ready, "reasons": list(ready.reasons), "leader": status.leader}
            self._json(200 if ready.ready else 503, body)
        elif url.path == "/metrics":
            self._send(200, generate_latest(self.server.metrics.registry), CONTENT_TYPE_LATEST)
        elif url.path == "/decisions":
            query = parse_qs(url.query)
            component = query.get("component", [None])[0]
            try:
                limit = int(query.get("limit", ["100"])[0])
            except ValueError:
                self._json(400, {"error": f"limit = {query['limit'][0]!r} is not an integer"})
                return
            limit = max(0, min(limit, MAX_LIMIT))
            self._json(200, status.decisions(component=component, limit=limit))
        else:
            self._json(404, {"error": f"no endpoint {url.path}"})

    def _json(self, code: int, body: object) -> None:
        payload = json.dumps(body, default=str).encode()
        self._send(code, payload, "application/json")

    def _send(self, code: int, payload: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class StatusServer:
    """Serves the endpoints on `host:port` (port 0: any free port; see `port`)."""

    def __init__(self, host: str, port: int, status: DaemonStatus, metrics: DaemonMetrics) -> None:
        server_class = _Server6 if ":" in host else _Server
        self._server = server_class((host, port), _Handler)  # binds now: OSError if taken
        self._server.status = status
        self._server.metrics = metrics
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="http",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
