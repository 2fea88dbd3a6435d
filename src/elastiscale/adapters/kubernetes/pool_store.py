"""A shared GPU pool's state in a Kubernetes ConfigMap, so that daemons share one budget.

One ConfigMap per pool (`daemon.gpu_pools`: `<name_prefix><pool>` in its namespace) holds the
state as JSON under `data["pool.json"]` (the document of `controllers/pool_store.py`).
`transact` reads it, computes the next state and writes it back with the resourceVersion it
read, so the API server refuses (409) a write that raced another member's; the store then reads
again and recomputes, up to `conflict_retries` times. A missing ConfigMap is created (two
members creating it at once: one gets 409 AlreadyExists and retries on the other's object).
Any other failure (unreachable, forbidden, an unreadable object) raises `PoolStoreError` at
once, and the pool holds its allocation for the tick (`controllers/budget.py`).

Through the official client (`CoreV1Api`), so the RBAC it needs is `get`, `create` and
`update` on that ConfigMap.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from elastiscale.adapters.base import Failure
from elastiscale.adapters.kubernetes.calls import KubeCallError, call
from elastiscale.config import Config
from elastiscale.config.daemon import GpuPoolsConfig
from elastiscale.controllers.budget import GpuPool
from elastiscale.controllers.pool_store import (
    PoolState,
    PoolStoreError,
    decode_state,
    encode_state,
)
from elastiscale.extras import require

DATA_KEY = "pool.json"
#: The most a write may hold: the API server refuses objects past 1 MiB (etcd's request
#: limit), so a state that large is refused here, in a line that says what to change.
MAX_BYTES = 1_000_000
LABELS = {"app.kubernetes.io/managed-by": "elastiscale", "elastiscale.io/role": "gpu-pool"}


class KubernetesPoolStore:
    """A pool's state in ConfigMap `namespace/name` (see the module docstring)."""

    def __init__(
        self,
        api: Any,
        namespace: str,
        name: str,
        *,
        conflict_retries: int = 5,
        timeout_s: float = 5.0,
    ) -> None:
        self.api = api  # a kubernetes.client.CoreV1Api
        self.namespace = namespace
        self.name = name
        self.conflict_retries = conflict_retries
        self.timeout_s = timeout_s
        #: 409s answered to this store's writes, over its life (for figures and tests).
        self.conflicts = 0

    @property
    def label(self) -> str:
        return f"ConfigMap {self.namespace}/{self.name}"

    def transact(self, update: Callable[[PoolState], PoolState | None]) -> PoolState:
        for _ in range(self.conflict_retries + 1):
            version, state = self._read()
            new = update(state)
            if new is None:
                return state
            try:
                self._write(version, new)
            except KubeCallError as exc:
                if exc.failure is Failure.CONFLICT:
                    self.conflicts += 1
                    continue
                raise PoolStoreError(f"{self.label}: {exc.message}") from None
            return new
        raise PoolStoreError(
            f"{self.label}: {self.conflict_retries + 1} writes in a row lost to other "
            "members' (409 Conflict)"
        )

    def read(self) -> PoolState:
        """The state as stored now (one GET; an empty state when there is no object yet), e.g.
        for a check that the grants in force stay within the pool."""
        return self._read()[1]

    def _read(self) -> tuple[str | None, PoolState]:
        """The resourceVersion (None: no object yet) and the state it holds."""
        try:
            obj = call(
                self.api.read_namespaced_config_map,
                self.name,
                self.namespace,
                timeout_s=self.timeout_s,
            )
        except KubeCallError as exc:
            if exc.failure is Failure.NOT_FOUND:
                return None, PoolState()
            raise PoolStoreError(f"{self.label}: {exc.message}") from None
        data = obj.data or {}
        text = data.get(DATA_KEY)
        version = obj.metadata.resource_version if obj.metadata else None
        if text is None:
            return version or "", PoolState()  # created empty by hand: filled at first write
        try:
            return version or "", decode_state(text)
        except PoolStoreError as exc:
            raise PoolStoreError(f"{self.label}: data.{DATA_KEY}: {exc}") from None

    def _write(self, version: str | None, state: PoolState) -> None:
        text = encode_state(state)
        if len(text) > MAX_BYTES:
            raise PoolStoreError(
                f"{self.label}: the pool state is {len(text)} bytes, over the {MAX_BYTES} a "
                "ConfigMap can hold: split the pool, or lower the members' max replicas"
            )
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace, "labels": LABELS}
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}
        body["data"] = {DATA_KEY: text}
        if version is None:
            call(
                self.api.create_namespaced_config_map,
                self.namespace,
                body,
                timeout_s=self.timeout_s,
            )
            return
        meta["resourceVersion"] = version  # the precondition: 409 when another wrote since
        call(
            self.api.replace_namespaced_config_map,
            self.name,
            self.namespace,
            body,
            timeout_s=self.timeout_s,
        )


def pool_factory(
    config: Config,
    connect: Callable[[GpuPoolsConfig, Config], tuple[Any, str]] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Callable[[str, float], GpuPool]:
    """`factory(pool name, max_gpus)` building pools kept in ConfigMaps as `config`'s
    `daemon.gpu_pools` says (for `controllers.budget.use_pools`); the connection is made once,
    at the first pool. `clock` is the runner's monotonic clock (lapses and expiry)."""
    settings = config.daemon.gpu_pools
    link = connect or connect_core
    made: list[tuple[Any, str]] = []

    def factory(name: str, max_gpus: float) -> GpuPool:
        if not made:
            made.append(link(settings, config))
        api, namespace = made[0]
        store = KubernetesPoolStore(
            api,
            namespace,
            settings.object_name(name),
            conflict_retries=settings.conflict_retries,
            timeout_s=settings.timeout_s,
        )
        return GpuPool(name, max_gpus, store=store, clock=clock, expiry_s=settings.expiry_s)

    return factory


def connect_core(settings: GpuPoolsConfig, config: Config) -> tuple[Any, str]:
    """A CoreV1Api and the pools' namespace, defaults taken from the Kubernetes actuator's
    section, then $POD_NAMESPACE; ActuatorError when no configuration can be loaded."""
    require("kubernetes", "kubernetes", "GPU pools shared across daemons (a ConfigMap)")
    from kubernetes import client as k8s

    from elastiscale.adapters.kubernetes.actuator import connect
    from elastiscale.adapters.kubernetes.options import KubernetesOptions

    actuator: dict[str, Any] = {}
    if config.actuator is not None and config.actuator.type == "kubernetes":
        actuator = config.actuator.options()
    namespace = settings.namespace or actuator.get("namespace") or os.environ.get("POD_NAMESPACE")
    options = KubernetesOptions.model_construct(  # only the connection fields are read
        targets={},
        namespace=namespace or None,
        connection=settings.connection or actuator.get("connection") or "auto",
        kubeconfig=settings.kubeconfig or actuator.get("kubeconfig"),
        context=settings.context or actuator.get("context"),
    )
    api_client, resolved = connect(options)
    return k8s.CoreV1Api(api_client), resolved
