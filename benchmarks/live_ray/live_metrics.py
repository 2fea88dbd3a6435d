"""The metrics of the live benchmark's stand-in models, one set per replica process.

A module of its own so that Ray imports it by name in each worker (the deployment class, which
Ray serializes, only refers to it): prometheus-client metrics cannot be pickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from prometheus_client import Counter, Gauge, start_http_server

CALLS = Counter("live_calls", "calls made to a component", ["component"])
OUTSTANDING = Gauge("live_outstanding", "calls made and not yet answered", ["component"])
BUSY = Gauge("live_busy", "calls holding a slot at this replica", ["component"])
READY = Gauge("live_ready", "1 once this replica serves", ["component"])
DOWNSTREAM = Gauge(
    "live_downstream", "calls past their hold, awaiting their own downstream calls", ["component"]
)
HELD = Counter("live_hold_seconds", "seconds slots were held, as measured", ["component"])
NOMINAL = Counter(
    "live_hold_nominal_seconds", "seconds slots were to be held (hold_s per call)", ["component"]
)

_EXPORTER_PORT: int | None = None


def export(registry_dir: str, component: str) -> None:
    """Start this process's metrics endpoint (once) and announce it."""
    global _EXPORTER_PORT
    if _EXPORTER_PORT is None:
        server, _thread = start_http_server(0, addr="127.0.0.1")
        _EXPORTER_PORT = int(server.server_port)
    path = Path(registry_dir) / f"{os.getpid()}.json"
    tmp = path.with_suffix(".tmp")
    entry = {"address": f"127.0.0.1:{_EXPORTER_PORT}", "component": component, "pid": os.getpid()}
    tmp.write_text(json.dumps(entry), encoding="utf-8")
    os.replace(tmp, path)
