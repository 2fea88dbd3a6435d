"""The object store behind the fake Kubernetes API server (`elastiscale.testing.kubernetes`).

It keeps objects as the JSON the real API server returns and applies the rules a scaling
client meets: one resourceVersion counter for every write (as etcd's revision), a
resourceVersion in a PUT body or a patch as a precondition (409 Conflict when stale), the
`/scale` subresource as an `autoscaling/v1` Scale (whose `spec.replicas` is omitted when 0, as
the real one is), merge, strategic-merge and JSON patches (strategic merge only for built-in
kinds: a custom resource answers 415, as the real server does), and errors as `Status` objects.

Strategic merge patches are applied as merge patches: lists are replaced, not merged by key,
which is exact for Scale objects and for everything a scaling client sends.

A simulated controller (`status_follows_spec`) copies a written replica count into the
object's status at once; with it off, a test sets status itself (`set_status`).
"""

from __future__ import annotations

import copy
import datetime as dt
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

JSON = dict[str, Any]

MERGE_PATCH: Final = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH: Final = "application/strategic-merge-patch+json"
JSON_PATCH: Final = "application/json-patch+json"

#: The `reason` of a Status object for each HTTP code the fake answers with.
REASONS: Final[Mapping[int, str]] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Gone",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class StatusError(Exception):
    """An error answer: HTTP `code` and the `Status` object the real server would send."""

    def __init__(self, code: int, message: str, details: JSON | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}

    def body(self) -> JSON:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": REASONS.get(self.code, "Unknown"),
            "details": self.details,
            "code": self.code,
        }


@dataclass(frozen=True, slots=True)
class ResourceType:
    """A kind the fake serves. `spec_replicas_path` (dotted) gives it a `/scale` subresource,
    as a CRD's `subresources.scale.specReplicasPath` does."""

    group: str
    version: str
    plural: str
    kind: str
    spec_replicas_path: str | None = None
    status_replicas_path: str | None = None
    builtin: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> str:
        """`plural.group`, as error messages name it (`deployments.apps`)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


DEPLOYMENTS = ResourceType(
    "apps", "v1", "deployments", "Deployment", "spec.replicas", "status.replicas", builtin=True
)
STATEFULSETS = ResourceType(
    "apps", "v1", "statefulsets", "StatefulSet", "spec.replicas", "status.replicas", builtin=True
)
HORIZONTAL_POD_AUTOSCALERS = ResourceType(
    "autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", builtin=True
)
LEASES = ResourceType("coordination.k8s.io", "v1", "leases", "Lease", builtin=True)
PODS = ResourceType("", "v1", "pods", "Pod", builtin=True)
CONFIG_MAPS = ResourceType("", "v1", "configmaps", "ConfigMap", builtin=True)
SCALED_OBJECTS = ResourceType("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject")
INFERENCE_SERVICES = ResourceType(
    "serving.kserve.io",
    "v1beta1",
    "inferenceservices",
    "InferenceService",
    "spec.replicas",
    "status.replicas",
)
LEADER_WORKER_SETS = ResourceType(
    "leaderworkerset.x-k8s.io",
    "v1",
    "leaderworkersets",
    "LeaderWorkerSet",
    "spec.replicas",
    "status.replicas",
)

DEFAULT_TYPES: Final = (
    DEPLOYMENTS,
    STATEFULSETS,
    HORIZONTAL_POD_AUTOSCALERS,
    LEASES,
    SCALED_OBJECTS,
    INFERENCE_SERVICES,
    LEADER_WORKER_SETS,
    PODS,
    CONFIG_MAPS,
)

_APPS_READY_FIELDS: Final = ("readyReplicas", "availableReplicas", "updatedReplicas")


class ObjectStore:
    """Objects by (type, namespace, name), guarded by one lock; every method returns copies."""

    def __init__(self, status_follows_spec: bool = True) -> None:
        self.status_follows_spec = status_follows_spec
        self._lock = threading.Lock()
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._objects: dict[tuple[ResourceType, str, str], JSON] = {}
        self._revision = 0
        for rtype in DEFAULT_TYPES:
            self.add_type(rtype)

    # --- types --------------------------------------------------------------------------------

    def add_type(self, rtype: ResourceType) -> None:
        with self._lock:
            self._types[(rtype.group, rtype.version, rtype.plural)] = rtype

    def type_for(self, group: str, version: str, plural: str) -> ResourceType:
        rtype = self._types.get((group, version, plural))
        if rtype is None:
            raise StatusError(404, "the server could not find the requested resource")
        return rtype

    # --- objects ------------------------------------------------------------------------------

    def get(self, rtype: ResourceType, namespace: str, name: str) -> JSON:
        with self._lock:
            return copy.deepcopy(self._find(rtype, namespace, name))

    def list(self, rtype: ResourceType, namespace: str) -> JSON:
        with self._lock:
            items = [
                copy.deepcopy(obj)
                for (t, ns, _), obj in sorted(self._objects.items(), key=lambda kv: kv[0][2])
                if t == rtype and ns == namespace
            ]
            return {
                "kind": f"{rtype.kind}List",
                "apiVersion": rtype.api_version,
                "metadata": {"resourceVersion": str(self._revision)},
                "items": items,
            }

    def create(self, rtype: ResourceType, namespace: str, obj: Any) -> JSON:
        if not isinstance(obj, dict):
            raise StatusError(400, f"{rtype.kind} body must be a JSON object")
        name = dig(obj, "metadata.name")
        if not isinstance(name, str) or not name:
            raise StatusError(
                422, f"{rtype.kind}.{rtype.group} is invalid: metadata.name: Required"
            )
        with self._lock:
            key = (rtype, namespace, name)
            if key in self._objects:
                raise StatusError(
                    409,
                    f'{rtype.resource} "{name}" already exists',
                    {"name": name, "group": rtype.group, "kind": rtype.plural},
                )
            stored = copy.deepcopy(obj)
            stored["kind"] = rtype.kind
            stored["apiVersion"] = rtype.api_version
            meta = stored.setdefault("metadata", {})
            meta.update(
                namespace=namespace,
                uid=str(uuid.uuid4()),
                creationTimestamp=_now_text(),
                generation=1,
            )
            self._store(key, stored)
            return copy.deepcopy(stored)

    def replace(self, rtype: ResourceType, namespace: str, name: str, obj: Any) -> JSON:
        if not isinstance(obj, dict):
            raise StatusError(400, f"{rtype.kind} body must be a JSON object")
        with self._lock:
            current = self._find(rtype, namespace, name)
            given = dig(obj, "metadata.name")
            if given not in (None, name):
                raise StatusError(400, f"the name of the object ({given}) does not match the URL")
            self._check_version(rtype, name, dig(obj, "metadata.resourceVersion"), current)
            updated = copy.deepcopy(obj)
            updated["kind"], updated["apiVersion"] = rtype.kind, rtype.api_version
            meta = updated.setdefault("metadata", {})
            for keep in ("uid", "creationTimestamp", "generation"):
                meta[keep] = current["metadata"].get(keep)
            meta.update(name=name, namespace=namespace)
            return self._write(rtype, namespace, name, current, updated)

    def patch(
        self, rtype: ResourceType, namespace: str, name: str, content_type: str, patch: Any
    ) -> JSON:
        with self._lock:
            current = self._find(rtype, namespace, name)
            updated = _apply_patch(rtype, content_type, current, patch)
            self._check_version(rtype, name, dig(updated, "metadata.resourceVersion"), current)
            return self._write(rtype, namespace, name, current, updated)

    # --- the scale subresource ----------------------------------------------------------------

    def get_scale(self, rtype: ResourceType, namespace: str, name: str) -> JSON:
        with self._lock:
            return self._scale_of(rtype, self._find(rtype, namespace, name))

    def replace_scale(self, rtype: ResourceType, namespace: str, name: str, scale: Any) -> JSON:
        if not isinstance(scale, dict):
            raise StatusError(400, "Scale body must be a JSON object")
        with self._lock:
            current = self._find(rtype, namespace, name)
            self._check_version(rtype, name, dig(scale, "metadata.resourceVersion"), current)
            return self._set_replicas(rtype, namespace, name, current, scale)

    def patch_scale(
        self, rtype: ResourceType, namespace: str, name: str, content_type: str, patch: Any
    ) -> JSON:
        with self._lock:
            current = self._find(rtype, namespace, name)
            scale = _apply_patch(rtype, content_type, self._scale_of(rtype, current), patch)
            self._check_version(rtype, name, dig(scale, "metadata.resourceVersion"), current)
            return self._set_replicas(rtype, namespace, name, current, scale)

    # --- test-side helpers (no HTTP) ----------------------------------------------------------

    def set_status(self, rtype: ResourceType, namespace: str, name: str, **fields: Any) -> JSON:
        """Set status fields (`replicas=3, readyReplicas=2`) as a controller would."""
        with self._lock:
            current = self._find(rtype, namespace, name)
            updated = copy.deepcopy(current)
            updated.setdefault("status", {}).update(fields)
            return self._write(rtype, namespace, name, current, updated, controller=False)

    def backdate(self, rtype: ResourceType, namespace: str, name: str, created: str) -> None:
        """Set `metadata.creationTimestamp` (RFC 3339), as if created then."""
        with self._lock:
            self._find(rtype, namespace, name)["metadata"]["creationTimestamp"] = created

    # --- internals (called with the lock held) ------------------------------------------------

    def _find(self, rtype: ResourceType, namespace: str, name: str) -> JSON:
        obj = self._objects.get((rtype, namespace, name))
        if obj is None:
            raise StatusError(
                404,
                f'{rtype.resource} "{name}" not found',
                {"name": name, "group": rtype.group, "kind": rtype.plural},
            )
        return obj

    def _check_version(self, rtype: ResourceType, name: str, given: Any, current: JSON) -> None:
        if given in (None, ""):
            return  # an unconditional update
        if str(given) != current["metadata"]["resourceVersion"]:
            raise StatusError(
                409,
                f'Operation cannot be fulfilled on {rtype.resource} "{name}": the object has '
                "been modified; please apply your changes to the latest version and try again",
                {"name": name, "group": rtype.group, "kind": rtype.plural},
            )

    def _store(self, key: tuple[ResourceType, str, str], obj: JSON) -> None:
        self._revision += 1
        obj["metadata"]["resourceVersion"] = str(self._revision)
        self._objects[key] = obj

    def _write(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        current: JSON,
        updated: JSON,
        controller: bool = True,
    ) -> JSON:
        if updated.get("spec") != current.get("spec"):
            updated["metadata"]["generation"] = int(current["metadata"].get("generation", 1)) + 1
        if controller and self.status_follows_spec and rtype.spec_replicas_path:
            self._follow(rtype, updated)
        self._store((rtype, namespace, name), updated)
        return copy.deepcopy(updated)

    def _follow(self, rtype: ResourceType, obj: JSON) -> None:
        """The simulated controller: status catches up with spec at once."""
        assert rtype.spec_replicas_path is not None
        replicas = int(dig(obj, rtype.spec_replicas_path) or 0)
        if rtype.status_replicas_path:
            put_path(obj, rtype.status_replicas_path, replicas)
        status = obj.setdefault("status", {})
        status["observedGeneration"] = obj["metadata"].get("generation", 1)
        if rtype.group == "apps":
            for field in _APPS_READY_FIELDS:
                if replicas:
                    status[field] = replicas
                else:
                    status.pop(field, None)  # omitempty, as the real status

    def _scale_of(self, rtype: ResourceType, obj: JSON) -> JSON:
        if rtype.spec_replicas_path is None:
            raise StatusError(404, "the server could not find the requested resource")
        meta = obj["metadata"]
        spec: JSON = {}
        replicas = int(dig(obj, rtype.spec_replicas_path) or 0)
        if replicas:
            spec["replicas"] = replicas  # omitempty: a Scale at 0 has an empty spec
        observed = dig(obj, rtype.status_replicas_path) if rtype.status_replicas_path else None
        status: JSON = {"replicas": int(observed or 0)}
        labels = dig(obj, "spec.selector.matchLabels")
        if isinstance(labels, dict) and labels:
            status["selector"] = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"],
                "creationTimestamp": meta["creationTimestamp"],
            },
            "spec": spec,
            "status": status,
        }

    def _set_replicas(
        self, rtype: ResourceType, namespace: str, name: str, current: JSON, scale: JSON
    ) -> JSON:
        replicas = dig(scale, "spec.replicas")
        replicas = 0 if replicas is None else replicas
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise StatusError(
                422,
                f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: '
                f"{replicas!r}: must be greater than or equal to 0",
                {"name": name, "group": "autoscaling", "kind": "Scale"},
            )
        assert rtype.spec_replicas_path is not None
        updated = copy.deepcopy(current)
        put_path(updated, rtype.spec_replicas_path, replicas)
        written = self._write(rtype, namespace, name, current, updated)
        return self._scale_of(rtype, written)


# ----------------------------------------------------------------------------------------------
# Patches


def _apply_patch(rtype: ResourceType, content_type: str, target: JSON, patch: Any) -> JSON:
    media = content_type.split(";")[0].strip().lower()
    if media == STRATEGIC_MERGE_PATCH and not rtype.builtin:
        raise StatusError(
            415,
            "the body of the request was in an unknown format - accepted media types include: "
            f"{JSON_PATCH}, {MERGE_PATCH}, application/apply-patch+yaml",
        )
    if media in (MERGE_PATCH, STRATEGIC_MERGE_PATCH):
        if not isinstance(patch, dict):
            raise StatusError(400, "a merge patch must be a JSON object")
        merged = merge_patch(target, patch)
        assert isinstance(merged, dict)
        return merged
    if media == JSON_PATCH:
        if not isinstance(patch, list):
            raise StatusError(400, "a JSON patch must be a JSON array of operations")
        return json_patch(target, patch)
    raise StatusError(415, f"unsupported patch media type {content_type!r}")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def json_patch(target: JSON, operations: list[Any]) -> JSON:
    """RFC 6902 `add`, `replace`, `remove` and `test` on object members and list indexes."""
    doc = copy.deepcopy(target)
    for i, op in enumerate(operations):
        if not isinstance(op, dict) or not isinstance(op.get("path"), str):
            raise StatusError(400, f"JSON patch operation {i} needs 'op' and 'path'")
        kind = op.get("op")
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        if not parts:
            raise StatusError(
                422, f"JSON patch operation {i}: the whole document cannot be {kind}d"
            )
        parent: Any = doc
        for part in parts[:-1]:
            parent = _step(parent, part, i)
        last = parts[-1]
        if kind == "test":
            if _step(parent, last, i) != op.get("value"):
                raise StatusError(422, f"JSON patch test failed at {op['path']}")
        elif kind in ("add", "replace"):
            if kind == "replace":
                _step(parent, last, i)  # must exist
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if kind == "add":
                    parent.insert(index, op.get("value"))
                else:
                    parent[index] = op.get("value")
            else:
                parent[last] = op.get("value")
        elif kind == "remove":
            _step(parent, last, i)
            del parent[int(last) if isinstance(parent, list) else last]
        else:
            raise StatusError(400, f"JSON patch operation {i}: unsupported op {kind!r}")
    return doc


def _step(node: Any, part: str, op_index: int) -> Any:
    try:
        if isinstance(node, list):
            return node[int(part)]
        if isinstance(node, dict):
            return node[part]
    except (KeyError, IndexError, ValueError):
        pass
    raise StatusError(422, f"JSON patch operation {op_index}: path member {part!r} does not exist")


# ----------------------------------------------------------------------------------------------
# Dotted paths


def dig(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def put_path(obj: JSON, path: str, value: Any) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        obj = obj.setdefault(part, {})
    obj[parts[-1]] = value


def _now_text() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
