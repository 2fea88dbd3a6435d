"""The Kubernetes actuator: replica counts through the `/scale` subresource, with the official
`kubernetes` client.

- Deployments and StatefulSets through the apps/v1 API; any custom resource with a scale
  subresource (KServe InferenceService, LeaderWorkerSet...) through the custom objects API.
- Reads: desired = the scale's `spec.replicas` (absent means 0), ready = the scale's
  `status.replicas` or, with `ready_from: workload`, the object's `status.readyReplicas`.
- Writes: a PATCH of the scale carrying the resourceVersion last read, so a write based on a
  stale read is refused (409) instead of overwriting another writer; the actuator then re-reads
  and retries (`conflict_retries`) before answering CONFLICT. Only get and patch on the scale
  subresources are needed (see examples/kubernetes/rbac.yaml).
- One change at a time: after a write, a further change waits (IN_PROGRESS) until the scale's
  status shows the written count or `settle_timeout_s` has passed. The wait covers the
  controller taking the change in (creating or deleting pods), not pods becoming ready: holding
  a scale-up for minutes while GPU pods start would defeat scaling ahead of demand.
- At start-up, an HPA or KEDA ScaledObject that targets the same workload is an error (two
  controllers on one replica count fight), unless `allow_other_autoscalers: true`.

Errors map to `Failure`s: 401/403 FORBIDDEN, 404 NOT_FOUND, 409 CONFLICT (after retries), 429
THROTTLED (with Retry-After), 400/422 INVALID, 5xx, timeouts and refused connections UNAVAILABLE.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.incluster_config import SERVICE_HOST_ENV_NAME, InClusterConfigLoader

from elastiscale.adapters.base import ActuationResult, Failure
from elastiscale.adapters.contract import InProgressGuard, retry_on_conflict
from elastiscale.adapters.kubernetes.autoscalers import find_other_autoscalers
from elastiscale.adapters.kubernetes.calls import KubeCallError, call
from elastiscale.adapters.kubernetes.options import (
    KubernetesOptions,
    KubernetesTarget,
    ResolvedTarget,
    resolve_target,
)
from elastiscale.adapters.kubernetes.readiness import TargetStartups
from elastiscale.clock import Clock
from elastiscale.errors import ActuatorError
from elastiscale.observations import ReplicaState

if TYPE_CHECKING:
    from elastiscale.config import Config

__all__ = ["KubeCallError", "KubernetesActuator", "KubernetesOptions", "KubernetesTarget"]

log = logging.getLogger("elastiscale.adapters.kubernetes")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ScaleView:
    """What a scale subresource says: desired and observed replicas, and its version."""

    desired: int
    observed: int
    resource_version: str | None

    @property
    def settled(self) -> bool:
        return self.observed == self.desired


# --------------------------------------------------------------------------------------------
# Connection


def connect(options: KubernetesOptions) -> tuple[k8s.ApiClient, str]:
    """An API client as `options.connection` says, and the namespace targets default to.

    Calls made through it never retry on their own (the engine retries with backoff).
    Raises `ActuatorError` when no configuration can be loaded.
    """
    mode = options.connection
    if mode == "auto":
        mode = "in-cluster" if os.environ.get(SERVICE_HOST_ENV_NAME) else "kubeconfig"
    configuration = k8s.Configuration()
    sa_dir = Path(options.service_account_dir)
    try:
        if mode == "in-cluster":
            loader = InClusterConfigLoader(  # type: ignore[no-untyped-call]
                token_filename=str(sa_dir / "token"), cert_filename=str(sa_dir / "ca.crt")
            )
            loader.load_and_set(configuration)  # type: ignore[no-untyped-call]
            namespace = options.namespace or _read_text(sa_dir / "namespace") or "default"
        else:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=_expand(options.kubeconfig),
                context=options.context,
                client_configuration=configuration,
                persist_config=False,
            )
            namespace = options.namespace or _context_namespace(options) or "default"
    except (ConfigException, OSError, ValueError) as exc:
        source = str(sa_dir) if mode == "in-cluster" else options.kubeconfig or "default kubeconfig"
        raise ActuatorError(
            f"actuator: cannot load the {mode} Kubernetes config ({source}): {exc}"
        ) from None
    configuration.retries = False
    return k8s.ApiClient(configuration), namespace


def _expand(path: str | None) -> str | None:
    return None if path is None else os.path.expanduser(path)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _context_namespace(options: KubernetesOptions) -> str | None:
    contexts, active = k8s_config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
        config_file=_expand(options.kubeconfig)
    )
    chosen = active
    if options.context is not None:
        chosen = next((c for c in contexts if c.get("name") == options.context), None)
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return str(namespace) if namespace else None


# --------------------------------------------------------------------------------------------
# The actuator


class KubernetesActuator:
    """Reads and sets the replica counts of the pipeline's Kubernetes workloads.

    Built from a config file as `KubernetesActuator(config, options)`; `api_client` and `clock`
    replace the connection from `options` and the system clock (for tests and embedding).
    Construction checks for other autoscalers and raises `OtherAutoscalerError` (or
    `ActuatorError` when it cannot look) unless `allow_other_autoscalers` is set.
    """

    Params = KubernetesOptions

    def __init__(
        self,
        config: Config,
        options: KubernetesOptions | Mapping[str, Any],
        *,
        api_client: k8s.ApiClient | None = None,
        namespace: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.options = KubernetesOptions.for_config(options, config)
        if api_client is None:
            api_client, found_namespace = connect(self.options)
            namespace = namespace or found_namespace
        self.api_client = api_client
        self.namespace = namespace or self.options.namespace or "default"
        self.targets: dict[str, ResolvedTarget] = {
            component: resolve_target(component, target, self.namespace)
            for component, target in self.options.targets.items()
        }
        self._apps = k8s.AppsV1Api(api_client)
        self._custom = k8s.CustomObjectsApi(api_client)
        self._guard = InProgressGuard(
            self.options.settle_timeout_s, clock, raise_while_scaling_up=True
        )
        self._last_read: dict[str, ScaleView] = {}
        #: The failure of the last read of each component that could not be read.
        self.read_failures: dict[str, KubeCallError] = {}
        self._startups = TargetStartups(api_client, self.targets, self.options.timeout_s)
        self.check_other_autoscalers()

    def close(self) -> None:
        self.api_client.close()  # type: ignore[no-untyped-call]

    def __enter__(self) -> KubernetesActuator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the Actuator protocol ----------------------------------------------------------------

    def read(self, components: Sequence[str]) -> dict[str, ReplicaState]:
        """Desired and ready replicas of each component that could be read; raises
        `ActuatorError` when none could because the API server is unreachable."""
        out: dict[str, ReplicaState] = {}
        failures: list[KubeCallError] = []
        for component in components:
            target = self.targets.get(component)
            if target is None:
                continue
            try:
                scale = self._read_scale(target)
                ready = scale.observed
                if self.options.ready_from == "workload":
                    ready = self._read_ready(target)
            except KubeCallError as exc:
                # Said when reads of it start failing; repeats of a lasting fault at debug.
                before = self.read_failures.get(component)
                level = (
                    logging.DEBUG if before and before.failure is exc.failure else logging.WARNING
                )
                log.log(level, "reading %s (%s) failed: %s", component, target.label, exc.message)
                self.read_failures[component] = exc
                failures.append(exc)
                continue
            self.read_failures.pop(component, None)
            self._last_read[component] = scale
            out[component] = ReplicaState(desired=scale.desired, ready=ready)
        if not out and failures and all(f.failure is Failure.UNAVAILABLE for f in failures):
            raise ActuatorError(f"Kubernetes API unavailable: {failures[0].message}")
        return out

    def startups(
        self, components: Sequence[str], now_s: float | None = None
    ) -> dict[str, list[float]]:
        """Start-up times of the targets' pods ready since the last call, with
        `measure_startup: true` (else none; `adapters.kubernetes.readiness`). The pods carry
        their own times, so `now_s` is not needed."""
        if not self.options.measure_startup:
            return {}
        return self._startups.poll(components)

    def scale(self, component: str, replicas: int) -> ActuationResult:
        """Set the desired replicas of `component`'s workload (see the module docstring)."""
        target = self.targets.get(component)
        if target is None:
            return ActuationResult.failed(
                component, replicas, Failure.NOT_FOUND, f"no target for component {component!r}"
            )
        if replicas < 0:
            return ActuationResult.failed(
                component, replicas, Failure.INVALID, f"replicas = {replicas}, must be >= 0"
            )
        result = retry_on_conflict(
            lambda: self._attempt(target, replicas), self.options.conflict_retries
        )
        if not result.ok:
            log.info(
                "scaling %s to %d: %s %s", target.label, replicas, result.failure, result.message
            )
        return result

    def _attempt(self, target: ResolvedTarget, replicas: int) -> ActuationResult:
        component = target.component
        try:
            # The state this tick's `read` saw, used once: its resourceVersion makes the write
            # conditional on nothing having changed since. Later attempts read afresh, and so
            # does a decision that must not rest on an old read (a no-op, a hold).
            scale = self._last_read.pop(component, None)
            if scale is None or scale.desired == replicas or not scale.settled:
                scale = self._read_scale(target)
            if scale.desired == replicas:
                return ActuationResult.success(component, replicas)  # already there: a no-op
            pending = self._guard.pending(target.key, settled=scale.settled, replicas=replicas)
            if pending is not None:
                return ActuationResult.failed(component, replicas, Failure.IN_PROGRESS, pending)
            self._patch_scale(target, replicas, scale.resource_version)
        except KubeCallError as exc:
            return ActuationResult.failed(
                component, replicas, exc.failure, exc.message, exc.retry_after_s
            )
        self._guard.wrote(target.key, replicas, previous=scale.desired)
        log.info("scaled %s from %d to %d", target.label, scale.desired, replicas)
        return ActuationResult.success(component, replicas)

    # --- fights -------------------------------------------------------------------------------

    def check_other_autoscalers(self) -> list[str]:
        """Other autoscalers driving our targets, as sentences; raises unless allowed."""
        return find_other_autoscalers(
            list(self.targets.values()),
            list_hpas=lambda ns: self._call(
                k8s.AutoscalingV2Api(self.api_client).list_namespaced_horizontal_pod_autoscaler,
                ns,
            ),
            list_scaled_objects=lambda ns: self._call(
                self._custom.list_namespaced_custom_object,
                "keda.sh",
                "v1alpha1",
                ns,
                "scaledobjects",
            ),
            allowed=self.options.allow_other_autoscalers,
        )

    # --- API calls ----------------------------------------------------------------------------

    def _read_scale(self, target: ResolvedTarget) -> ScaleView:
        if target.is_apps:
            read = (
                self._apps.read_namespaced_deployment_scale
                if target.plural == "deployments"
                else self._apps.read_namespaced_stateful_set_scale
            )
            typed = self._call(read, target.name, target.namespace)
            return _view_of(typed.to_dict() if typed is not None else None)
        raw = self._call(
            self._custom.get_namespaced_custom_object_scale,
            target.group,
            target.version,
            target.namespace,
            target.plural,
            target.name,
        )
        return _view_of(raw)

    def _patch_scale(self, target: ResolvedTarget, replicas: int, version: str | None) -> None:
        # A JSON object body: the client sends it as a strategic merge patch to apps/v1 and
        # as a merge patch to custom resources. The resourceVersion is a precondition.
        body: dict[str, Any] = {"spec": {"replicas": replicas}}
        if version:
            body["metadata"] = {"resourceVersion": version}
        if target.is_apps:
            patch = (
                self._apps.patch_namespaced_deployment_scale
                if target.plural == "deployments"
                else self._apps.patch_namespaced_stateful_set_scale
            )
            self._call(patch, target.name, target.namespace, body)
        else:
            self._call(
                self._custom.patch_namespaced_custom_object_scale,
                target.group,
                target.version,
                target.namespace,
                target.plural,
                target.name,
                body,
            )

    def _read_ready(self, target: ResolvedTarget) -> int:
        obj = self._call(
            self._custom.get_namespaced_custom_object,
            target.group,
            target.version,
            target.namespace,
            target.plural,
            target.name,
        )
        value: Any = obj
        for part in target.ready_path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        # The API leaves out zero counts (omitempty), so an absent field means none ready.
        return int(value) if isinstance(value, int | float) else 0

    def _call(self, method: Callable[..., T], *args: Any) -> T:
        return call(method, *args, timeout_s=self.options.timeout_s)


def _view_of(scale: Any) -> ScaleView:
    """A scale subresource as JSON (or the client's dict of it) -> `ScaleView`."""
    if not isinstance(scale, dict):
        raise KubeCallError(Failure.INVALID, "the scale answer is not an object")
    spec, status, meta = (_part(scale, key) for key in ("spec", "status", "metadata"))
    version = meta.get("resourceVersion", meta.get("resource_version"))
    desired = _count(spec.get("replicas") or 0, "spec.replicas")  # omitted when 0
    observed = _count(status.get("replicas") or 0, "status.replicas")
    return ScaleView(desired, observed, str(version) if version else None)


def _part(scale: dict[str, Any], key: str) -> dict[str, Any]:
    value = scale.get(key) or {}
    if not isinstance(value, dict):
        raise KubeCallError(Failure.INVALID, f"scale {key} is not an object")
    return value


def _count(value: Any, field: str) -> int:
    """A replica count from an answer; `KubeCallError` (INVALID) naming the field when it is
    not a count (the client checks types only)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise KubeCallError(Failure.INVALID, f"scale {field} = {value!r} is not a replica count")
    return value
