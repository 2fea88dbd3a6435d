"""A wire-level fake Kubernetes API server, for testing scaling code through the real client.

It is a real HTTP server on 127.0.0.1 (optionally TLS, optionally demanding a bearer token)
that speaks the paths and JSON of the API a scaling client uses:

- apps/v1 deployments and statefulsets, and their `/scale` subresource: GET, PUT (a stale
  `metadata.resourceVersion` answers 409) and PATCH in the content types the official client
  sends (strategic merge for a JSON object, JSON patch for a list, merge patch);
- custom resources with a scale subresource (KServe InferenceService, LeaderWorkerSet, or any
  type added with `add_type`), through the custom objects API paths;
- autoscaling/v2 HorizontalPodAutoscalers and keda.sh/v1alpha1 ScaledObjects (lists), so
  other autoscalers can be put in the way;
- coordination.k8s.io/v1 Leases (get, create, replace with resourceVersion), for leader election;
- core/v1 ConfigMaps (get, create, replace with resourceVersion: 409 when stale, 409
  AlreadyExists on a second create), for GPU pools shared across daemons;
- core/v1 Pods (`add_pod`, with creation time and Ready condition), listed with an equality
  `labelSelector` as the real server filters them, for start-up times read from readiness;
- errors as `Status` objects (404, 403, 409, 422, 500...), faults injected per path (a status
  code N times, added latency), and a record of every request.

    with FakeKubeAPI() as api:
        api.add_deployment("default", "router", replicas=2)
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        ...  # point the official client (or elastiscale's actuator) at `kubeconfig`
        assert api.replicas(DEPLOYMENTS, "default", "router") == 3

Accepted sockets disable Nagle's algorithm: the response head and body go out as two writes,
and with Nagle on, the second waits for the client's delayed ACK (about 40 ms a request).
"""

from __future__ import annotations

import json
import re
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from elastiscale.testing.kubernetes_store import (
    CONFIG_MAPS,
    DEPLOYMENTS,
    HORIZONTAL_POD_AUTOSCALERS,
    INFERENCE_SERVICES,
    JSON,
    LEADER_WORKER_SETS,
    LEASES,
    PODS,
    SCALED_OBJECTS,
    STATEFULSETS,
    ObjectStore,
    ResourceType,
    StatusError,
    put_path,
)
from elastiscale.testing.server import FakeServer, LocalServer, QuietHandler

__all__ = [
    "CONFIG_MAPS",
    "DEPLOYMENTS",
    "HORIZONTAL_POD_AUTOSCALERS",
    "INFERENCE_SERVICES",
    "LEADER_WORKER_SETS",
    "LEASES",
    "PODS",
    "SCALED_OBJECTS",
    "STATEFULSETS",
    "FakeKubeAPI",
    "Fault",
    "RecordedRequest",
    "ResourceType",
]

_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"/namespaces/(?P<namespace>[^/]+)/(?P<plural>[^/]+)"
    r"(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?/?$"
)


def _timestamp(unix_s: float) -> str:
    """RFC 3339 in UTC at whole seconds, as the API server writes times."""
    import datetime as dt

    return dt.datetime.fromtimestamp(int(unix_s), tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _selected(items: list[JSON], selector: str) -> list[JSON]:
    """Items whose labels match an equality selector `a=b,c==d,e!=f`."""
    wanted: list[tuple[str, str, bool]] = []
    for term in filter(None, (t.strip() for t in selector.split(","))):
        negate = "!=" in term
        key, _, value = term.replace("!=", "=").replace("==", "=").partition("=")
        wanted.append((key.strip(), value.strip(), negate))
    out = []
    for item in items:
        labels = (item.get("metadata") or {}).get("labels") or {}
        if all((labels.get(k) == v) != neg for k, v, neg in wanted):
            out.append(item)
    return out


@dataclass(slots=True)
class Fault:
    """An injected fault on requests whose path (without query) equals `path`.

    `status` answers with that code (a Status object) instead of serving the request; `None`
    serves it normally. `latency_s` delays the answer. `times` is how many requests it hits
    (None: all). `method` restricts it to one HTTP method.
    """

    path: str
    status: int | None = None
    times: int | None = 1
    latency_s: float = 0.0
    method: str | None = None
    retry_after_s: float | None = None
    hits: int = 0


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the fake received it, and the status it answered."""

    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str | None
    body: Any
    status: int
    headers: dict[str, str] = field(default_factory=dict)


class _Server(LocalServer):
    block_on_close = False
    api: FakeKubeAPI


class _Handler(QuietHandler):
    server: _Server

    def _serve(self, method: str) -> None:
        raw, headers = self.read_body(), self.lower_headers()
        code, body, extra = self.server.api.handle(method, self.path, headers, raw)
        payload = json.dumps(body).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the client gave up (a timeout test); nothing to answer


class FakeKubeAPI(FakeServer):
    """The fake API server. Start it with `start()` or as a context manager.

    `token`: when set, requests must carry `Authorization: Bearer <token>` (else 401).
    `certfile`/`keyfile`: serve HTTPS with this certificate (as in-cluster clients expect).
    `status_follows_spec`: a written replica count shows in the status at once (a controller
    that is never slow); with False, tests move status themselves with `set_status`.
    `tcp_nodelay`: False keeps Nagle's algorithm on accepted sockets, only to measure its cost.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        certfile: str | Path | None = None,
        keyfile: str | Path | None = None,
        status_follows_spec: bool = True,
        tcp_nodelay: bool = True,
    ) -> None:
        self.token = token
        self.tcp_nodelay = tcp_nodelay
        self.store = ObjectStore(status_follows_spec=status_follows_spec)
        self._tls = (str(certfile), str(keyfile)) if certfile and keyfile else None
        self._faults: list[Fault] = []
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        #: Held while a request is served and recorded, so `requests` lists writes in the
        #: order the store took them (else one could be listed after a write made on it, and
        #: the record would show an update lost that was not). Latency is waited outside it.
        self._serving = threading.Lock()
        self._stopping = threading.Event()

    # --- lifecycle ----------------------------------------------------------------------------

    _poll_interval_s = 0.05

    def _make_server(self) -> _Server:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.api = self
        server.tcp_nodelay = self.tcp_nodelay
        if self._tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self._tls)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        return server

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping on injected latency
        super().stop()

    @property
    def url(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def write_kubeconfig(
        self, path: str | Path, namespace: str = "default", ca_file: str | Path | None = None
    ) -> Path:
        """A kubeconfig whose current context points at this server (with its token)."""
        cluster: JSON = {"server": self.url}
        if ca_file is not None:
            cluster["certificate-authority"] = str(ca_file)
        user: JSON = {"token": self.token} if self.token else {}
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": "fake", "user": user}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "fake", "namespace": namespace},
                }
            ],
            "current-context": "fake",
        }
        out = Path(path)
        out.write_text(yaml.safe_dump(doc), encoding="utf-8")
        return out

    # --- objects ------------------------------------------------------------------------------

    def add_type(self, rtype: ResourceType) -> None:
        """Serve another kind (a CRD), e.g. with a scale subresource."""
        self.store.add_type(rtype)

    def add_workload(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        replicas: int,
        ready: int | None = None,
    ) -> JSON:
        """Create a scalable object with `replicas` in its spec and status (`ready` of them
        ready; default all)."""
        if rtype.spec_replicas_path is None:
            raise ValueError(f"{rtype.kind} has no scale subresource")
        obj: JSON = {"metadata": {"name": name, "labels": {"app": name}}, "spec": {}}
        put_path(obj, rtype.spec_replicas_path, replicas)
        obj["spec"].setdefault("selector", {"matchLabels": {"app": name}})
        if rtype.group == "apps":  # the fields the apps/v1 schema requires
            container = {"name": name, "image": f"registry.example/{name}:1"}
            obj["spec"]["template"] = {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container]},
            }
        if rtype.status_replicas_path:
            put_path(obj, rtype.status_replicas_path, replicas)
        ready = replicas if ready is None else ready
        if rtype.group == "apps" and ready:
            obj.setdefault("status", {})["readyReplicas"] = ready
        self.store.create(rtype, namespace, obj)
        return self.store.get(rtype, namespace, name)

    def add_pod(
        self,
        namespace: str,
        name: str,
        labels: dict[str, str],
        created_s: float,
        ready_s: float | None = None,
    ) -> JSON:
        """Create a pod created at `created_s` (Unix seconds), Ready from `ready_s` (None: not
        ready yet; `set_pod_ready` later)."""
        pod: JSON = {
            "metadata": {"name": name, "labels": dict(labels)},
            "spec": {"containers": [{"name": "main", "image": "registry.example/model:1"}]},
        }
        self.store.create(PODS, namespace, pod)
        self.store.backdate(PODS, namespace, name, _timestamp(created_s))
        return self.set_pod_ready(namespace, name, created_s, ready_s)

    def set_pod_ready(
        self, namespace: str, name: str, created_s: float, ready_s: float | None
    ) -> JSON:
        """The pod's phase and conditions: Ready since `ready_s`, or not ready (None)."""
        ready = {
            "type": "Ready",
            "status": "True" if ready_s is not None else "False",
            "lastTransitionTime": _timestamp(ready_s if ready_s is not None else created_s),
        }
        scheduled = {"type": "PodScheduled", "status": "True",
                     "lastTransitionTime": _timestamp(created_s)}  # fmt: skip
        phase = "Running" if ready_s is not None else "Pending"
        return self.store.set_status(PODS, namespace, name, phase=phase,
                                     conditions=[scheduled, ready])  # fmt: skip

    def add_deployment(self, namespace: str, name: str, replicas: int = 1) -> JSON:
        return self.add_workload(DEPLOYMENTS, namespace, name, replicas)

    def add_statefulset(self, namespace: str, name: str, replicas: int = 1) -> JSON:
        return self.add_workload(STATEFULSETS, namespace, name, replicas)

    def add_hpa(
        self,
        namespace: str,
        name: str,
        target_kind: str,
        target_name: str,
        target_api_version: str = "apps/v1",
    ) -> JSON:
        """An HPA whose `scaleTargetRef` names the given workload."""
        ref = {"apiVersion": target_api_version, "kind": target_kind, "name": target_name}
        obj = {"metadata": {"name": name}, "spec": {"scaleTargetRef": ref, "maxReplicas": 10}}
        return self.store.create(HORIZONTAL_POD_AUTOSCALERS, namespace, obj)

    def add_scaled_object(
        self,
        namespace: str,
        name: str,
        target_name: str,
        target_kind: str | None = None,
        target_api_version: str | None = None,
    ) -> JSON:
        """A KEDA ScaledObject; like KEDA, an absent kind means a Deployment."""
        ref: JSON = {"name": target_name}
        if target_kind is not None:
            ref["kind"] = target_kind
        if target_api_version is not None:
            ref["apiVersion"] = target_api_version
        obj = {"metadata": {"name": name}, "spec": {"scaleTargetRef": ref}}
        return self.store.create(SCALED_OBJECTS, namespace, obj)

    def get(self, rtype: ResourceType, namespace: str, name: str) -> JSON:
        return self.store.get(rtype, namespace, name)

    def replicas(self, rtype: ResourceType, namespace: str, name: str) -> int:
        """The object's desired replicas, as its scale subresource shows them."""
        scale = self.store.get_scale(rtype, namespace, name)
        return int(scale["spec"].get("replicas", 0))

    def set_status(self, rtype: ResourceType, namespace: str, name: str, **fields: Any) -> JSON:
        return self.store.set_status(rtype, namespace, name, **fields)

    def set_replicas(self, rtype: ResourceType, namespace: str, name: str, replicas: int) -> JSON:
        """Change desired replicas behind the client's back (another writer)."""
        return self.store.replace_scale(rtype, namespace, name, {"spec": {"replicas": replicas}})

    # --- faults and the record ----------------------------------------------------------------

    def inject(
        self,
        path: str,
        *,
        status: int | None = None,
        times: int | None = 1,
        latency_s: float = 0.0,
        method: str | None = None,
        retry_after_s: float | None = None,
    ) -> Fault:
        """Add a fault on `path` (see `Fault`); returns it so a test can read `hits`."""
        fault = Fault(path, status, times, latency_s, method, retry_after_s)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def requests_to(self, path: str, method: str | None = None) -> Iterator[RecordedRequest]:
        return (
            r for r in self.requests if r.path == path and (method is None or r.method == method)
        )

    # --- serving ------------------------------------------------------------------------------

    def handle(
        self, method: str, target: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, JSON, dict[str, str]]:
        """Answer one request: (status code, JSON body, extra headers)."""
        url = urlsplit(target)
        content_type = headers.get("content-type")
        extra: dict[str, str] = {}
        body: Any = None
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            code, answer = 400, StatusError(400, "the request body is not valid JSON").body()
            fault, valid = None, False
        else:
            valid = True
            fault = self._take_fault(url.path, method)
            if fault is not None and fault.latency_s > 0:
                self._stopping.wait(fault.latency_s)  # outside `_serving`: delays overlap
        with self._serving:  # served and recorded as one step (see `_serving`)
            if not valid:
                pass  # answered above
            elif fault is not None and fault.status is not None:
                code = fault.status
                answer = StatusError(code, f"injected fault on {url.path}").body()
                if fault.retry_after_s is not None:
                    extra["Retry-After"] = f"{fault.retry_after_s:g}"
            else:
                try:
                    self._authorize(headers)
                    code, answer = self._route(method, url.path, content_type, body)
                    selector = parse_qs(url.query).get("labelSelector")
                    if selector and method == "GET" and "items" in answer:
                        answer["items"] = _selected(answer["items"], selector[0])
                except StatusError as exc:
                    code, answer = exc.code, exc.body()
            record = RecordedRequest(
                method=method,
                path=url.path,
                query=parse_qs(url.query),
                content_type=content_type,
                body=body,
                status=code,
                headers=headers,
            )
            with self._lock:
                self._requests.append(record)
        return code, answer, extra

    def _take_fault(self, path: str, method: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.path != path or fault.method not in (None, method):
                    continue
                if fault.times is not None and fault.hits >= fault.times:
                    continue
                fault.hits += 1
                return fault
        return None

    def _authorize(self, headers: dict[str, str]) -> None:
        if self.token is None:
            return
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.token:  # as the real one
            raise StatusError(401, "Unauthorized")

    def _route(
        self, method: str, path: str, content_type: str | None, body: Any
    ) -> tuple[int, JSON]:
        if path == "/version" and method == "GET":
            return 200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0-elastiscale-fake"}
        match = _PATH.match(path)
        if match is None:
            raise StatusError(404, "the server could not find the requested resource")
        group = "" if match["core"] else match["group"]
        version = match["core"] or match["version"]
        rtype = self.store.type_for(group, version, match["plural"])
        namespace, name, sub = match["namespace"], match["name"], match["sub"]
        store = self.store
        if name is None:
            if method == "GET":
                return 200, store.list(rtype, namespace)
            if method == "POST":
                return 201, store.create(rtype, namespace, body)
        elif sub is None:
            if method == "GET":
                return 200, store.get(rtype, namespace, name)
            if method == "PUT":
                return 200, store.replace(rtype, namespace, name, body)
            if method == "PATCH":
                return 200, store.patch(rtype, namespace, name, content_type or "", body)
        elif sub == "scale":
            if method == "GET":
                return 200, store.get_scale(rtype, namespace, name)
            if method == "PUT":
                return 200, store.replace_scale(rtype, namespace, name, body)
            if method == "PATCH":
                return 200, store.patch_scale(rtype, namespace, name, content_type or "", body)
        else:
            raise StatusError(404, "the server could not find the requested resource")
        raise StatusError(405, f"{method} is not supported on {path}")
