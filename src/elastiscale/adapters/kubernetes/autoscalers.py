"""Finding other autoscalers that drive the same workloads, so the actuator refuses to fight.

Two controllers setting one replica count undo each other's changes every few seconds. At
start-up the Kubernetes actuator lists, in each namespace it scales in:

- autoscaling/v2 HorizontalPodAutoscalers: `spec.scaleTargetRef` {apiVersion, kind, name};
- KEDA ScaledObjects (keda.sh/v1alpha1): `spec.scaleTargetRef` {name, kind, apiVersion}, where
  an absent kind means Deployment and an absent apiVersion apps/v1, as KEDA reads them. (KEDA
  also creates an HPA of its own for each ScaledObject; both are reported.)

A namespace without the KEDA CRD answers 404 for ScaledObjects: no KEDA, nothing to fight.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from elastiscale.adapters.base import Failure
from elastiscale.adapters.contract import OtherAutoscalerError
from elastiscale.adapters.kubernetes.calls import KubeCallError
from elastiscale.adapters.kubernetes.options import ResolvedTarget
from elastiscale.errors import ActuatorError

log = logging.getLogger("elastiscale.adapters.kubernetes")

#: Deployments were once served by extensions/v1beta1; an old reference still names them.
_SAME_GROUP = {"extensions": "apps"}


def find_other_autoscalers(
    targets: list[ResolvedTarget],
    list_hpas: Callable[[str], Any],
    list_scaled_objects: Callable[[str], Any],
    allowed: bool,
) -> list[str]:
    """Sentences naming each other autoscaler of a target. Unless `allowed`, raises
    `OtherAutoscalerError` when there is one and `ActuatorError` when a list is refused;
    when `allowed`, logs them as warnings instead."""
    found: list[str] = []
    for namespace in sorted({t.namespace for t in targets}):
        here = [t for t in targets if t.namespace == namespace]
        lists = (
            ("HorizontalPodAutoscaler", "horizontalpodautoscalers.autoscaling", list_hpas),
            ("ScaledObject", "scaledobjects.keda.sh", list_scaled_objects),
        )
        for kind, resource, list_them in lists:
            try:
                answer = list_them(namespace)
            except KubeCallError as exc:
                if kind == "ScaledObject" and exc.failure is Failure.NOT_FOUND:
                    continue  # KEDA is not installed
                problem = (
                    f"cannot check for other autoscalers: listing {resource} in namespace "
                    f"{namespace!r} failed ({exc.message}); grant 'list' on it or set "
                    "actuator.allow_other_autoscalers: true"
                )
                if not allowed:
                    raise ActuatorError(f"actuator: {problem}") from None
                log.warning("%s", problem)
                continue
            for name, ref in _references(answer, kind):
                found += [
                    f"{kind} {namespace}/{name} scales {t.label} (component {t.component})"
                    for t in here
                    if _refers_to(ref, t, kind)
                ]
    if found and not allowed:
        raise OtherAutoscalerError(
            "actuator: refusing to fight another autoscaler: "
            + "; ".join(found)
            + ". Remove it, or set actuator.allow_other_autoscalers: true"
        )
    for sentence in found:
        log.warning("another autoscaler drives a target (allowed): %s", sentence)
    return found


def _references(answer: Any, kind: str) -> Iterable[tuple[str, dict[str, Any]]]:
    """(object name, scaleTargetRef as a camelCase dict) of each item of a list answer."""
    if not isinstance(answer, dict):  # a typed list from the client
        answer = answer.to_dict() if hasattr(answer, "to_dict") else {}
    for item in answer.get("items") or []:
        meta = item.get("metadata") or {}
        ref = (item.get("spec") or {}).get("scaleTargetRef") or (item.get("spec") or {}).get(
            "scale_target_ref"
        )
        if not isinstance(ref, dict):
            continue
        api_version = ref.get("apiVersion", ref.get("api_version"))
        if kind == "ScaledObject":
            api_version = api_version or "apps/v1"
        yield (
            str(meta.get("name", "?")),
            {
                "apiVersion": api_version,
                "kind": ref.get("kind") or ("Deployment" if kind == "ScaledObject" else None),
                "name": ref.get("name"),
            },
        )


def _refers_to(ref: dict[str, Any], target: ResolvedTarget, kind: str) -> bool:
    if ref["name"] != target.name or ref["kind"] != target.kind:
        return False
    api_version = ref["apiVersion"]
    if not api_version:
        return True
    group = api_version.split("/")[0] if "/" in api_version else ""
    return _SAME_GROUP.get(group, group) == target.group
