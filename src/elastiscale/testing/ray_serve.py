"""A wire-level fake of the Ray dashboard's Serve REST API, for testing without a Ray cluster.

A real HTTP server on 127.0.0.1 that answers the three calls the `ray-serve` actuator makes, with
the paths, JSON and status codes of Ray 2.60's dashboard:

- `GET /api/serve/applications/`: every application with its deployments (`status`,
  `target_num_replicas`, `replicas` with their `replica_id`, `state` and `start_time_s`
  (from `clock`: a replica keeps its id and start from STARTING to RUNNING),
  `deployment_config`), its
  `deployed_app_config` (None for an application deployed imperatively) and
  `external_scaler_enabled`;
- `PUT /api/serve/applications/`: a whole declarative config; applications it omits are
  deleted, as Serve does;
- `POST /api/v1/applications/{app}/deployments/{deployment}/scale`: 404 for an unknown target,
  412 when the application has no external scaler.

A change of target leaves new replicas STARTING (and removed ones STOPPING) until `settle()`,
unless `settle_at_once=True`. With a `token`, requests need `Authorization: Bearer TOKEN`
(401 without, 403 with another). Faults are injected per method (`fail`), latency with `slow`,
and every request is recorded in `requests`.

    with FakeServeDashboard() as dashboard:
        dashboard.add_application("rag", {"router": 1, "llm": 1}, external_scaler=True)
        ...  # point the actuator's `address` at dashboard.url
        assert dashboard.target("rag", "llm") == 3

Accepted sockets disable Nagle's algorithm (no delayed-ACK wait of about 40 ms a request).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from elastiscale.testing.server import FakeServer, LocalServer, QuietHandler

#: Ports a local Ray (`ray.init`) takes by default whatever others it is given: the GCS, the
#: dashboard, the dashboard agent's HTTP server, the Ray client server and Serve's proxy. A
#: port chosen for one of its other servers must not be one of these.
RAY_DEFAULT_PORTS = frozenset({6379, 8000, 8265, 10001, 52365})

JSON = dict[str, Any]

_SCALE_PATH = re.compile(r"^/api/v1/applications/([^/]+)/deployments/([^/]+)/scale$")
_APPS_PATH = "/api/serve/applications/"


@dataclass
class FakeDeployment:
    """One deployment: its target and replica counts, and each replica's id and start time
    (`start_time_s` from `clock`, as Serve's controller stamps it when it starts the actor)."""

    name: str
    target: int
    running: int
    autoscaling: bool = False
    starting: int = 0
    stopping: int = 0
    clock: Callable[[], float] = time.time
    _running_ids: list[tuple[str, float]] = field(default_factory=list)
    _starting_ids: list[tuple[str, float]] = field(default_factory=list)
    _serial: int = 0

    def _sync(self) -> None:
        """As many replica ids as the counts say: new ones started now, extra ones dropped."""
        for ids, count in ((self._running_ids, self.running), (self._starting_ids, self.starting)):
            while len(ids) < count:
                self._serial += 1
                ids.append((f"{self.name}#{self._serial:04d}", self.clock()))
            del ids[count:]

    def retarget(self, replicas: int, at_once: bool) -> None:
        self._sync()
        self.target = replicas
        if at_once:
            self.settle()
            return
        self.starting = max(0, replicas - self.running)
        self.stopping = max(0, self.running - replicas)
        self._sync()

    def settle(self) -> None:
        self._sync()
        self._running_ids = (self._running_ids + self._starting_ids)[: self.target]
        self._starting_ids = []
        self.running, self.starting, self.stopping = self.target, 0, 0
        self._sync()

    def details(self) -> JSON:
        self._sync()
        states = ["RUNNING"] * (self.running - self.stopping)
        states += ["STOPPING"] * self.stopping + ["STARTING"] * self.starting
        ids = self._running_ids + self._starting_ids
        config: JSON = {"name": self.name, "num_replicas": self.target}
        if self.autoscaling:
            config["autoscaling_config"] = {"min_replicas": 1, "max_replicas": 8}
        return {
            "name": self.name,
            "status": "HEALTHY",
            "status_trigger": "CONFIG_UPDATE_COMPLETED",
            "message": "",
            "deployment_config": config,
            "target_num_replicas": self.target,
            "replicas": [
                {"replica_id": rid, "state": state, "start_time_s": started}
                for (rid, started), state in zip(ids, states, strict=True)
            ],
        }


@dataclass
class FakeApplication:
    name: str
    deployments: dict[str, FakeDeployment]
    external_scaler: bool = False
    config: JSON | None = None  # the deployed config; None when deployed imperatively

    def details(self) -> JSON:
        config = None
        if self.config is not None:
            config = json.loads(json.dumps(self.config))
            entries = {d.get("name"): d for d in config.setdefault("deployments", [])}
            for dep in self.deployments.values():
                if dep.name in entries:
                    entries[dep.name]["num_replicas"] = dep.target
        return {
            "name": self.name,
            "route_prefix": f"/{self.name}",
            "status": "RUNNING",
            "message": "",
            "deployed_app_config": config,
            "source": "imperative" if self.config is None else "declarative",
            "deployments": {n: d.details() for n, d in self.deployments.items()},
            "external_scaler_enabled": self.external_scaler,
        }


@dataclass
class RecordedRequest:
    method: str
    path: str
    body: Any


@dataclass
class _Fault:
    status: int
    body: str
    remaining: int
    path_prefix: str = ""


class FakeServeDashboard(FakeServer):
    """State and HTTP server of the fake; thread-safe; a context manager."""

    def __init__(
        self,
        token: str | None = None,
        settle_at_once: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token = token
        self.settle_at_once = settle_at_once
        self.clock = clock  # replicas' start_time_s
        self.applications: dict[str, FakeApplication] = {}
        self.http_options: JSON = {"host": "127.0.0.1", "port": 8000}
        self.requests: list[RecordedRequest] = []
        self._faults: dict[str, deque[_Fault]] = {}
        self._delay_s = 0.0
        self._lock = threading.RLock()

    # --- set-up and inspection ------------------------------------------------------------------

    def add_application(
        self,
        name: str,
        deployments: Mapping[str, int],
        external_scaler: bool = False,
        declarative: bool = True,
        autoscaling: Collection[str] = (),
    ) -> FakeApplication:
        """An application with deployments `{name: replicas}`, all RUNNING. `declarative`:
        deployed from a config (it has a `deployed_app_config`); `autoscaling`: deployments
        that carry an `autoscaling_config`."""
        config = None
        if declarative:
            config = {
                "name": name,
                "import_path": f"{name}_app:app",
                "external_scaler_enabled": external_scaler,
                "deployments": [{"name": d, "num_replicas": n} for d, n in deployments.items()],
            }
        app = FakeApplication(
            name,
            {
                d: FakeDeployment(
                    d, target=n, running=n, autoscaling=d in autoscaling, clock=self.clock
                )
                for d, n in deployments.items()
            },
            external_scaler=external_scaler,
            config=config,
        )
        with self._lock:
            self.applications[name] = app
        return app

    def target(self, app: str, deployment: str) -> int:
        with self._lock:
            return self.applications[app].deployments[deployment].target

    def running(self, app: str, deployment: str) -> int:
        with self._lock:
            return self.applications[app].deployments[deployment].running

    def settle(self) -> None:
        """Every deployment reaches its target: all replicas RUNNING."""
        with self._lock:
            for app in self.applications.values():
                for dep in app.deployments.values():
                    dep.settle()

    def fail(
        self, method: str, status: int, body: str = "", times: int = 1, path: str = ""
    ) -> None:
        """Answer the next `times` `method` requests (whose path starts with `path`) with
        `status` and `body`."""
        with self._lock:
            fault = _Fault(status, body or json.dumps({"error": f"injected {status}"}), times, path)
            self._faults.setdefault(method, deque()).append(fault)

    def slow(self, delay_s: float) -> None:
        """Delay every answer by `delay_s` seconds (0 to stop)."""
        self._delay_s = delay_s

    def writes(self) -> list[RecordedRequest]:
        """The PUT and POST requests received, in order."""
        with self._lock:
            return [r for r in self.requests if r.method in ("PUT", "POST")]

    # --- server -------------------------------------------------------------------------------

    def _make_server(self) -> _Server:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        return server

    # --- requests -----------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, headers: Mapping[str, str], raw: bytes
    ) -> tuple[int, str]:
        """Answer one request: (status, body text)."""
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw.decode("utf-8", "replace")
        with self._lock:
            self.requests.append(RecordedRequest(method, path, body))
            fault = self._take_fault(method, path)
        if self._delay_s > 0:
            time.sleep(self._delay_s)
        if self.token is not None:
            given = headers.get("authorization", "")
            if not given:
                return 401, "Unauthorized: Missing authentication token"
            if given != f"Bearer {self.token}":
                return 403, "Forbidden: Invalid authentication token"
        if fault is not None:
            return fault.status, fault.body
        with self._lock:
            if method == "GET" and path == _APPS_PATH:
                return 200, json.dumps(self._instance())
            if method == "PUT" and path == _APPS_PATH:
                return self._deploy(body)
            match = _SCALE_PATH.match(path)
            if method == "POST" and match is not None:
                return self._scale(match.group(1), match.group(2), body)
        return 404, "404: Not Found"

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        faults = self._faults.get(method)
        if not faults or not path.startswith(faults[0].path_prefix):
            return None
        fault = faults[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            faults.popleft()
        return fault

    def _instance(self) -> JSON:
        return {
            "controller_info": {},
            "proxy_location": "EveryNode",
            "http_options": self.http_options,
            "grpc_options": {"port": 9000, "grpc_servicer_functions": []},
            "target_capacity": None,
            "applications": {n: a.details() for n, a in self.applications.items()},
        }

    def _scale(self, app_name: str, deployment: str, body: Any) -> tuple[int, str]:
        replicas = body.get("target_num_replicas") if isinstance(body, dict) else None
        if not isinstance(replicas, int) or replicas < 0:
            return 400, json.dumps({"error": f"Invalid request body: {body!r}"})
        app = self.applications.get(app_name)
        if app is None or deployment not in app.deployments:
            return 404, json.dumps({"error": "Application or Deployment not found"})
        if not app.external_scaler:
            return 412, json.dumps(
                {
                    "error": f"Cannot update replicas for deployment '{deployment}' in "
                    f"application '{app_name}'. The external scaling API can only be used "
                    "when 'external_scaler_enabled' is set to true in the application "
                    "configuration."
                }
            )
        app.deployments[deployment].retarget(replicas, self.settle_at_once)
        return 200, json.dumps(
            {"message": "Scaling request received. Deployment will get scaled asynchronously."}
        )

    def _deploy(self, body: Any) -> tuple[int, str]:
        if not isinstance(body, dict) or not isinstance(body.get("applications"), list):
            return 400, "ValidationError: applications: a list is required"
        seen: set[str] = set()
        for config in body["applications"]:
            name = config.get("name", "default")
            seen.add(name)
            entries = {d["name"]: d for d in config.get("deployments", [])}
            external = bool(config.get("external_scaler_enabled"))
            if external and any("autoscaling_config" in d for d in entries.values()):
                return 400, "external_scaler_enabled is set to True, but a deployment autoscales"
            app = self.applications.get(name)
            if app is None:
                counts = {d: int(e.get("num_replicas", 1)) for d, e in entries.items()}
                self.add_application(name, counts, external_scaler=external)
                app = self.applications[name]
            app.config = json.loads(json.dumps(config))
            app.external_scaler = external
            for dep_name, entry in entries.items():
                dep = app.deployments.setdefault(
                    dep_name, FakeDeployment(dep_name, 1, 1, clock=self.clock)
                )
                dep.autoscaling = "autoscaling_config" in entry
                wanted = int(entry.get("num_replicas", dep.target))
                if wanted != dep.target:
                    dep.retarget(wanted, self.settle_at_once)
        for name in [n for n in self.applications if n not in seen]:
            del self.applications[name]  # a declarative PUT replaces every application
        return 200, ""


class _Server(LocalServer):
    fake: FakeServeDashboard


class _Handler(QuietHandler):
    server: _Server

    def _serve(self, method: str) -> None:
        if method not in ("GET", "PUT", "POST"):
            super()._serve(method)
            return
        raw, headers = self.read_body(), self.lower_headers()
        status, text = self.server.fake.handle(method, self.path, headers, raw)
        data = text.encode()
        self.send_response(status)
        kind = "application/json" if text[:1] in ("{", "[") else "text/plain"
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
