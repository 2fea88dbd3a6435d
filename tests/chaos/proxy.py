"""`FaultProxy`: an HTTP reverse proxy in the test process, between the daemon and a server
(Prometheus, the fake API server, moto), that answers errors, answers slowly, rewrites answers
or refuses connections (cutting the kept-alive ones too)."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from elastiscale.testing.prometheus import free_port

#: Not forwarded; without accept-encoding, answers come back plain, for `transform` to read.
_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
    "accept-encoding",
}


class _TrackingServer(ThreadingHTTPServer):
    """Keeps its accepted sockets, so that `cut_connections` can close kept-alive ones."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        with self._connections_lock:
            self.connections.add(sock)
        return sock, addr

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        with self._connections_lock:
            kept = list(self.connections)
            self.connections.clear()
        for sock in kept:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class FaultProxy:
    """A reverse proxy to `upstream` (http://host:port) on a fixed port of 127.0.0.1.

    Faults, set as attributes (each applies to every request until cleared by `clear()`):
    `status` answers that code without asking upstream (with `headers`); `delay_s` waits
    before answering; `transform(path, body) -> body` rewrites upstream's answer; `close()`
    stops listening (connection refused) until `open()`. `only` limits faults to requests
    whose path contains it.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://").rstrip("/")
        self.port = free_port()
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.delay_s = 0.0
        self.transform: Callable[[str, bytes], bytes] | None = None
        self.only: str | None = None
        self.faulted = 0
        self._server: _TrackingServer | None = None
        self._stopping = threading.Event()
        self.open()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def clear(self) -> None:
        self.status, self.headers, self.delay_s = None, {}, 0.0
        self.transform, self.only = None, None

    def open(self) -> None:
        if self._server is not None:
            return
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

            def do_GET(self) -> None:
                self._proxy("GET")

            def do_POST(self) -> None:
                self._proxy("POST")

            def do_PUT(self) -> None:
                self._proxy("PUT")

            def do_PATCH(self) -> None:
                self._proxy("PATCH")

            def _proxy(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                hit = proxy.only is None or proxy.only in self.path
                try:
                    if hit and proxy.delay_s > 0:
                        proxy.faulted += 1
                        proxy._stopping.wait(proxy.delay_s)
                    if hit and proxy.status is not None:
                        proxy.faulted += 1
                        body = json.dumps({"status": "error", "error": "injected"}).encode()
                        self._send(proxy.status, dict(proxy.headers), body)
                        return
                    code, headers, body = proxy._forward(method, self.path, self.headers, raw)
                    if hit and proxy.transform is not None:
                        proxy.faulted += 1
                        body = proxy.transform(self.path, body)
                    self._send(code, headers, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout)
                except OSError as exc:  # upstream down
                    self._send(502, {}, f"upstream: {exc}".encode())

            def _send(self, code: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(code)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = _TrackingServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def _forward(
        self, method: str, path: str, headers: Any, raw: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection(self.upstream, timeout=30)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in _HOP}
            connection.request(method, path, body=raw or None, headers=sent)
            answer = connection.getresponse()
            body = answer.read()
            kept = {k: v for k, v in answer.getheaders() if k.lower() not in _HOP}
            return answer.status, kept, body
        finally:
            connection.close()

    def close(self) -> None:
        """Stop listening and cut the open connections: every connection is refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.cut_connections()
            self._server = None

    def stop(self) -> None:
        self._stopping.set()
        self.close()
