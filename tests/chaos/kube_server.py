"""The wire-level fake Kubernetes API server as a process of its own, with a control port.

    python tests/chaos/kube_server.py READY.json router worker ...

serves the fake API (one Deployment per name in namespace `default`, one replica each) and a
control API on another port, then writes `{"api": URL, "control": URL}` to READY.json:

    POST /inject   {"path": ..., "status": 409, "times": 1, "latency_s": 0, "method": "PATCH",
                    "retry_after_s": null}            a fault (see `FakeKubeAPI.inject`)
    POST /clear                                      drop every fault
    GET  /requests                                   every request received: method, path,
                                                     status, body
    GET  /replicas?name=router                       spec.replicas of a Deployment
    GET  /lease?name=NAME                            the Lease's holderIdentity (null: none)

With KUBE_FAKE_TOKEN set, the API demands that bearer token. It runs until SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from elastiscale.testing.kubernetes import DEPLOYMENTS, LEASES, FakeKubeAPI

NAMESPACE = "default"


def serve(ready_path: Path, names: list[str]) -> None:
    api = FakeKubeAPI(token=os.environ.get("KUBE_FAKE_TOKEN") or None).start()
    for name in names:
        api.add_deployment(NAMESPACE, name, replicas=1)

    class Control(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def _answer(self, body: Any, code: int = 200) -> None:
            payload = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            name = parse_qs(url.query).get("name", [""])[0]
            if url.path == "/requests":
                self._answer(
                    [
                        {"method": r.method, "path": r.path, "status": r.status, "body": r.body}
                        for r in api.requests
                    ]
                )
            elif url.path == "/replicas":
                self._answer(api.replicas(DEPLOYMENTS, NAMESPACE, name))
            elif url.path == "/lease":
                try:
                    holder = api.get(LEASES, NAMESPACE, name)["spec"].get("holderIdentity")
                except Exception:
                    holder = None
                self._answer(holder)
            else:
                self._answer({"error": url.path}, 404)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else {}
            if self.path == "/inject":
                api.inject(body.pop("path"), **body)
                self._answer("ok")
            elif self.path == "/clear":
                api.clear_faults()
                self._answer("ok")
            else:
                self._answer({"error": self.path}, 404)

    control = ThreadingHTTPServer(("127.0.0.1", 0), Control)
    control.daemon_threads = True
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    serving = threading.Thread(
        target=control.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    serving.start()
    tmp = ready_path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps({"api": api.url, "control": f"http://127.0.0.1:{control.server_address[1]}"})
    )
    tmp.replace(ready_path)
    stop.wait()
    control.shutdown()
    api.stop()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), sys.argv[2:])
