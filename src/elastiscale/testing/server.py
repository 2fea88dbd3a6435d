"""What the wire-level fakes share: a threaded HTTP server on 127.0.0.1 and its lifecycle.

`LocalServer` answers each connection on its own daemon thread and disables Nagle's algorithm
on accepted sockets: a response goes out as two writes (head, body), and with Nagle on the
second waits for the client's delayed ACK, about 40 ms a request. `FakeServer` runs one on a
background thread, bound to a free port, and is a context manager; `QuietHandler` is the
request handler base (HTTP/1.1 keep-alive, as client connection pools expect; no access log,
since each fake records its own requests).
"""

from __future__ import annotations

import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class LocalServer(ThreadingHTTPServer):
    """A threaded HTTP server whose accepted sockets disable Nagle's algorithm (unless
    `tcp_nodelay` is False, only to measure what it costs)."""

    daemon_threads = True
    tcp_nodelay = True

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self.tcp_nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-request (a killed process) is not an error of the
        server: no traceback for it; anything else is reported as socketserver does."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class QuietHandler(BaseHTTPRequestHandler):
    """Base of the fakes' handlers: keep-alive, no access log, the request body read whole.

    Every method goes to `_serve(method)`; a fake answers the ones it speaks and leaves the
    others to this default, 501 as `BaseHTTPRequestHandler` answers a method it lacks.
    """

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        self.send_error(501, f"Unsupported method ({method!r})")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the fake keeps its own record of requests."""

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def lower_headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}


class FakeServer:
    """A fake's server on 127.0.0.1 (a free port), served from a background thread between
    `start()` and `stop()`, or inside a `with` block. Subclasses build their server in
    `_make_server`."""

    _poll_interval_s = 0.02
    _server: LocalServer | None = None
    _thread: threading.Thread | None = None

    def _make_server(self) -> LocalServer:
        raise NotImplementedError

    def start(self) -> Self:
        server = self._make_server()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": self._poll_interval_s},
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"the {type(self).__name__} is not running; call start() first")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
