"""The `actuator:` section of the Kubernetes actuator, validated field by field.

    actuator:
      type: kubernetes
      namespace: serving            # default of every target (else the pod's or context's)
      connection: auto              # in-cluster inside a pod, else the kubeconfig
      timeout_s: 5
      targets:
        router: {kind: Deployment, name: router}
        retriever: {kind: StatefulSet, name: vector-db}
        llm:
          kind: LeaderWorkerSet
          api_version: leaderworkerset.x-k8s.io/v1
          name: llama-70b

A target is any object with a `/scale` subresource: apps/v1 Deployments and StatefulSets, or a
custom resource whose CRD declares one (KServe InferenceService, LeaderWorkerSet...). A custom
kind needs its `api_version` (group/version); its `plural` defaults to the lower-cased kind
plus "s" (LeaderWorkerSet -> leaderworkersets), which is how most CRDs name it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from pydantic import Field, NonNegativeFloat, model_validator

from elastiscale.adapters.contract import ActuatorOptions, TargetSpec

#: Kinds served by apps/v1 with a scale subresource, and their plural.
APPS_KINDS: Final = {"Deployment": "deployments", "StatefulSet": "statefulsets"}

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_KIND = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_GROUP_VERSION = re.compile(r"^[a-z0-9.-]+\.[a-z0-9.-]+/v[0-9a-z]+$")


def _check_name(value: str, what: str) -> None:
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        raise ValueError(
            f"{what} {value!r} is not a valid Kubernetes name "
            "(lower-case letters, digits, '-' and '.')"
        )


def _check_namespace(value: str) -> None:
    if len(value) > 63 or not _DNS_LABEL.match(value):
        raise ValueError(
            f"namespace {value!r} is not a valid namespace (lower-case letters, digits, '-')"
        )


class KubernetesTarget(TargetSpec):
    """One workload whose replica count a component's decisions set.

    ready_path: where `ready_from: workload` reads the ready count in the object (dotted;
    default `status.readyReplicas`, which Deployments and StatefulSets have).
    """

    kind: str = "Deployment"
    name: str
    namespace: str | None = None
    api_version: str | None = None
    plural: str | None = None
    ready_path: str = "status.readyReplicas"

    @model_validator(mode="after")
    def _coherent(self) -> KubernetesTarget:
        _check_name(self.name, "name")
        if self.namespace is not None:
            _check_namespace(self.namespace)
        if not _KIND.match(self.kind):
            raise ValueError(f"kind {self.kind!r} is not a Kubernetes kind (e.g. Deployment)")
        if self.kind in APPS_KINDS:
            if self.api_version not in (None, "apps/v1"):
                raise ValueError(f"kind {self.kind} is served by apps/v1, not {self.api_version}")
            if self.plural not in (None, APPS_KINDS[self.kind]):
                raise ValueError(f"kind {self.kind} has plural {APPS_KINDS[self.kind]!r}")
        elif self.api_version is None:
            raise ValueError(
                f"kind {self.kind!r} needs api_version (group/version, "
                "e.g. leaderworkerset.x-k8s.io/v1)"
            )
        elif not _GROUP_VERSION.match(self.api_version):
            raise ValueError(
                f"api_version {self.api_version!r} must be group/version of a custom resource "
                "(e.g. serving.kserve.io/v1beta1)"
            )
        if self.plural is not None and not _DNS_LABEL.match(self.plural):
            raise ValueError(f"plural {self.plural!r} must be lower-case (e.g. inferenceservices)")
        return self


class KubernetesOptions(ActuatorOptions[KubernetesTarget]):
    """Options of the Kubernetes actuator (besides `targets`, `timeout_s` and
    `allow_other_autoscalers`, see `ActuatorOptions`).

    connection: `in-cluster` (the pod's service account), `kubeconfig` (`kubeconfig` file, or
    $KUBECONFIG, or ~/.kube/config; `context` or its current context), or `auto`: in-cluster
    when $KUBERNETES_SERVICE_HOST is set.
    conflict_retries: how many times one `scale` call re-reads and retries after a 409.
    settle_timeout_s: after a write, further changes to the target wait until its scale status
    shows the new count, at most this long (0: never wait).
    ready_from: `scale` reads ready replicas from the scale subresource's status (created
    pods; needs only the scale permission); `workload` reads `ready_path` of the object itself
    (pods that pass readiness; needs `get` on the workload).
    measure_startup: report each Deployment or StatefulSet target's pods' start-up times (from
    creation to Ready; needs `get` on the workload and `list` on pods) to the engine, which
    passes them to policies that learn (`elastiscale` with `learn: true`).
    """

    namespace: str | None = None
    connection: Literal["auto", "in-cluster", "kubeconfig"] = "auto"
    kubeconfig: str | None = None
    context: str | None = None
    service_account_dir: str = "/var/run/secrets/kubernetes.io/serviceaccount"
    conflict_retries: int = Field(3, ge=0, le=20)
    settle_timeout_s: NonNegativeFloat = 60.0
    ready_from: Literal["scale", "workload"] = "scale"
    measure_startup: bool = False

    @model_validator(mode="after")
    def _namespace_valid(self) -> KubernetesOptions:
        if self.namespace is not None:
            _check_namespace(self.namespace)
        return self


@dataclass(frozen=True, slots=True)
class ResolvedTarget:
    """A target with every default filled in: where its scale subresource lives."""

    component: str
    kind: str
    group: str
    version: str
    plural: str
    namespace: str
    name: str
    ready_path: str

    @property
    def is_apps(self) -> bool:
        return self.group == "apps"

    @property
    def label(self) -> str:
        """`Deployment serving/router`, as messages name it."""
        return f"{self.kind} {self.namespace}/{self.name}"

    @property
    def key(self) -> str:
        return f"{self.group}/{self.plural}/{self.namespace}/{self.name}"


def resolve_target(component: str, target: KubernetesTarget, namespace: str) -> ResolvedTarget:
    """Fill in the defaults of `target`; `namespace` is used when the target names none."""
    if target.kind in APPS_KINDS:
        group, version, plural = "apps", "v1", APPS_KINDS[target.kind]
    else:
        assert target.api_version is not None  # checked by validation
        group, version = target.api_version.split("/", 1)
        plural = target.plural or target.kind.lower() + "s"
    return ResolvedTarget(
        component=component,
        kind=target.kind,
        group=group,
        version=version,
        plural=plural,
        namespace=target.namespace or namespace,
        name=target.name,
        ready_path=target.ready_path,
    )
