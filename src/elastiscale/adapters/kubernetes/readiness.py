"""Measured start-up times of a scale target's pods, from their readiness transitions.

A pod's start-up is the time from its `metadata.creationTimestamp` (the controller created it
for a scale-up) to the `lastTransitionTime` of its `Ready` condition turning `True` (image
pulled, weights loaded, readiness probe passing). `PodStartups.poll()` lists the target's pods
through the official client (`CoreV1Api.list_namespaced_pod` with the workload's
`spec.selector.matchLabels` as an equality label selector) and returns the start-ups of pods
seen ready for the first time since the last poll; each pod (by uid) counts once, and pods
ready at the first poll are taken as history (their start-ups count too: a restart of the
daemon should not forget what the cluster already shows). Pods not ready yet, or whose Ready
condition lacks a time, are skipped until a later poll. These are for the start-up estimator of
`controllers.learned`, which replaces the configured `startup_s` with their upper quantile:
with the actuator's `measure_startup: true`, `KubernetesActuator.startups` polls them
(`TargetStartups`) and the engine hands them to the policies in `TickContext.startups_s`.

Needs `get` on the workload and `list` on pods in the target's namespace
(examples/kubernetes/rbac.yaml grants both; tests/test_kubernetes_examples.py checks the Role
against every call the adapter makes).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes import client as k8s

from elastiscale.adapters.kubernetes.calls import KubeCallError, call
from elastiscale.adapters.kubernetes.options import ResolvedTarget

log = logging.getLogger("elastiscale.adapters.kubernetes")


def label_selector(match_labels: Mapping[str, str]) -> str:
    """`a=b,c=d`: the equality selector of a workload's `spec.selector.matchLabels`."""
    return ",".join(f"{key}={value}" for key, value in sorted(match_labels.items()))


def _seconds(stamp: Any) -> float | None:
    if isinstance(stamp, dt.datetime):
        moment = stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=dt.UTC)
        return moment.timestamp()
    return None


def pod_startup_s(pod: Any) -> float | None:
    """Seconds from a pod's creation to its Ready transition, None when not (yet) known."""
    created = _seconds(getattr(pod.metadata, "creation_timestamp", None))
    conditions = getattr(pod.status, "conditions", None) or []
    for condition in conditions:
        if condition.type == "Ready" and condition.status == "True":
            ready = _seconds(condition.last_transition_time)
            if created is None or ready is None or ready < created:
                return None
            return ready - created
    return None


class PodStartups:
    """New start-up samples of one workload's pods at each `poll` (see the module docstring)."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        namespace: str,
        match_labels: Mapping[str, str],
        *,
        timeout_s: float = 10.0,
    ) -> None:
        self.core = k8s.CoreV1Api(api_client)
        self.namespace = namespace
        self.selector = label_selector(match_labels)
        self.timeout_s = timeout_s
        self._counted: set[str] = set()

    @classmethod
    def of_deployment(
        cls,
        api_client: k8s.ApiClient,
        namespace: str,
        name: str,
        *,
        timeout_s: float = 10.0,
        kind: str = "Deployment",
    ) -> PodStartups:
        """The reader of a Deployment's (or StatefulSet's) pods, its selector read from it."""
        apps = k8s.AppsV1Api(api_client)
        read = (
            apps.read_namespaced_stateful_set
            if kind == "StatefulSet"
            else apps.read_namespaced_deployment
        )
        workload: Any = call(read, name, namespace, timeout_s=timeout_s)
        labels = workload.spec.selector.match_labels or {}
        return cls(api_client, namespace, labels, timeout_s=timeout_s)

    def poll(self) -> list[float]:
        """Start-ups of pods ready since the last poll; raises `KubeCallError` on failure."""
        listing = functools.partial(self.core.list_namespaced_pod, label_selector=self.selector)
        pods = call(listing, self.namespace, timeout_s=self.timeout_s)
        out: list[float] = []
        for pod in pods.items:
            meta = pod.metadata
            uid = str((meta.uid or meta.name) if meta is not None else "")
            if not uid or uid in self._counted:
                continue
            startup_s = pod_startup_s(pod)
            if startup_s is None:
                continue
            self._counted.add(uid)
            out.append(startup_s)
        return out


class TargetStartups:
    """`PodStartups` of each Deployment or StatefulSet target, made at its first poll."""

    def __init__(
        self, api_client: k8s.ApiClient, targets: Mapping[str, ResolvedTarget], timeout_s: float
    ) -> None:
        self.api_client = api_client
        self.targets = targets
        self.timeout_s = timeout_s
        self._readers: dict[str, PodStartups] = {}

    def poll(self, components: Sequence[str]) -> dict[str, list[float]]:
        """New start-ups per component; a component whose pods cannot be read is left out
        (logged at debug level: the replica counts still measure its start-ups roughly)."""
        out: dict[str, list[float]] = {}
        for component in components:
            target = self.targets.get(component)
            if target is None or not target.is_apps:
                continue
            try:
                reader = self._readers.get(component)
                if reader is None:
                    reader = PodStartups.of_deployment(
                        self.api_client, target.namespace, target.name,
                        timeout_s=self.timeout_s, kind=target.kind,
                    )  # fmt: skip
                    self._readers[component] = reader
                out[component] = reader.poll()
            except KubeCallError as exc:
                log.debug("pod start-ups of %s: %s", component, exc.message)
        return out
