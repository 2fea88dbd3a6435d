"""KEDA ScaledObject -> the `hpa` policy of one component (KEDA drives an HPA it creates).

Carried over: `scaleTargetRef`, `minReplicaCount` (default 0) / `maxReplicaCount` (default
100), `advanced.horizontalPodAutoscalerConfig.behavior`, `fallback` (as the component's
`constraints.missing_data`: `failureThreshold` -> `fallback_after`, `replicas` ->
`fallback_replicas`, behavior `static` -> `static`, `currentReplicas` -> `hold`,
`currentReplicasIfHigher` -> `current-if-higher`), and the triggers the `hpa` policy can
read: `cpu` (Utilization) and any scaler whose target is per replica (metricType AverageValue,
KEDA's default) through its threshold key. The query or queue a trigger reads is not carried:
elastiscale reads the component's demand from its own `metrics:` section (a note says so).
"""

from __future__ import annotations

from typing import Any, Final

from elastiscale.importer.kube import MetricSet, behavior, target_of
from elastiscale.importer.model import (
    ImportedComponent,
    ImportRefusedError,
    integer,
    mapping,
    number,
)

#: The metadata key holding the per-replica target, by trigger type (else the first present
#: of `GENERIC_TARGET_KEYS`).
TARGET_KEYS: Final = {
    "prometheus": "threshold",
    "kafka": "lagThreshold",
    "aws-sqs-queue": "queueLength",
    "azure-queue": "queueLength",
    "redis": "listLength",
    "rabbitmq": "value",
    "metrics-api": "targetValue",
}
GENERIC_TARGET_KEYS: Final = ("threshold", "value", "targetValue", "queueLength", "lagThreshold")
_FALLBACK: Final = {
    "static": "static",
    "currentReplicas": "hold",
    "currentReplicasIfHigher": "current-if-higher",
}
_KNOWN_SPEC: Final = {
    "scaleTargetRef",
    "minReplicaCount",
    "maxReplicaCount",
    "triggers",
    "fallback",
    "advanced",
    "pollingInterval",
    "cooldownPeriod",
    "idleReplicaCount",
    "initialCooldownPeriod",
}


def read_scaled_object(doc: dict[str, Any], origin: str) -> ImportedComponent:
    spec = mapping(doc.get("spec"), f"{origin}: spec")
    target = target_of(spec.get("scaleTargetRef"), f"{origin}: spec.scaleTargetRef", "Deployment")
    meta = mapping(doc.get("metadata"), f"{origin}: metadata")
    comp = ImportedComponent(
        name=target["name"],
        origin=origin,
        policy="hpa",
        replicas_min=integer(spec.get("minReplicaCount", 0), f"{origin}: spec.minReplicaCount"),
        replicas_max=integer(
            spec.get("maxReplicaCount", 100), f"{origin}: spec.maxReplicaCount", 1
        ),
        namespace=meta.get("namespace"),
        target=target,
    )
    triggers = spec.get("triggers")
    if not isinstance(triggers, list) or not triggers:
        raise ImportRefusedError(f"{origin}: spec.triggers: required (a list of triggers)")
    metrics = MetricSet(comp)
    for i, trigger in enumerate(triggers):
        _trigger(mapping(trigger, f"{origin}: spec.triggers[{i}]"), f"spec.triggers[{i}]", metrics)
    metrics.finish()
    advanced = mapping(spec.get("advanced"), f"{origin}: spec.advanced")
    hpa_config = mapping(
        advanced.get("horizontalPodAutoscalerConfig"),
        f"{origin}: spec.advanced.horizontalPodAutoscalerConfig",
    )
    if "behavior" in hpa_config:
        where = f"{origin}: spec.advanced.horizontalPodAutoscalerConfig.behavior"
        comp.params["behavior"] = behavior(hpa_config["behavior"], where, comp)
    if "scalingModifiers" in advanced:
        comp.note("spec.advanced.scalingModifiers", "the formula is not carried over")
    if "restoreToOriginalReplicaCount" in advanced:
        comp.note("spec.advanced.restoreToOriginalReplicaCount", "not carried over")
    if "fallback" in spec:
        comp.missing_data = _fallback(mapping(spec["fallback"], f"{origin}: spec.fallback"), comp)
    if comp.replicas_min == 0:
        comp.note(
            "spec.minReplicaCount",
            "0: KEDA's activation to and from zero (activationThreshold, cooldownPeriod) is "
            "not carried over; the hpa policy scales on its metrics alone",
        )
    for key in ("idleReplicaCount", "initialCooldownPeriod"):
        if key in spec:
            comp.note(f"spec.{key}", "not carried over")
    if "pollingInterval" in spec:
        comp.note(
            "spec.pollingInterval",
            "KEDA's activation polling; elastiscale decides every control.interval_s (15 s, "
            "the HPA's sync period)",
        )
    for key in sorted(set(spec) - _KNOWN_SPEC):
        comp.note(f"spec.{key}", "not carried over (unknown to ScaledObject)")
    return comp


def _trigger(trigger: dict[str, Any], where: str, metrics: MetricSet) -> None:
    comp = metrics.comp
    kind = trigger.get("type")
    if not isinstance(kind, str):
        raise ImportRefusedError(f"{comp.origin}: {where}.type: required")
    meta = mapping(trigger.get("metadata"), f"{comp.origin}: {where}.metadata")
    metric_type = trigger.get("metricType", "Utilization" if kind == "cpu" else "AverageValue")
    if kind == "cpu":
        if metric_type != "Utilization":
            comp.note(where, f"cpu with metricType {metric_type}: not carried over")
            return
        metrics.add_cpu(number(meta.get("value"), f"{comp.origin}: {where}.metadata.value"), where)
        return
    if kind == "memory":
        comp.note(where, "memory: not carried over (elastiscale does not scale on memory)")
        return
    if metric_type != "AverageValue":
        comp.note(where, f"{kind} with metricType {metric_type} (not per replica): not carried")
        return
    key = TARGET_KEYS.get(kind) or next((k for k in GENERIC_TARGET_KEYS if k in meta), None)
    if key is None or key not in meta:
        comp.note(where, f"{kind}: no per-replica target in its metadata; not carried over")
        return
    per_replica = number(meta[key], f"{comp.origin}: {where}.metadata.{key}")
    metrics.add_demand(per_replica, f"trigger {kind} ({key} {meta[key]})", where)
    if "activationThreshold" in meta:
        comp.note(f"{where}.metadata.activationThreshold", "not carried over")


def _fallback(raw: dict[str, Any], comp: ImportedComponent) -> dict[str, Any]:
    where = f"{comp.origin}: spec.fallback"
    kind = raw.get("behavior", "static")
    out: dict[str, Any] = {
        "fallback_after": integer(raw.get("failureThreshold"), f"{where}.failureThreshold", 1),
    }
    if kind not in _FALLBACK:
        comp.note(
            "spec.fallback.behavior",
            f"{kind!r}: not carried over (static, currentReplicas, currentReplicasIfHigher "
            "are); the static count is used",
        )
        kind = "static"
    out["fallback"] = _FALLBACK[kind]
    if out["fallback"] != "hold":
        out["fallback_replicas"] = integer(raw.get("replicas"), f"{where}.replicas")
    return out
