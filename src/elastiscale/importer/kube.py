"""Kubernetes HorizontalPodAutoscaler (autoscaling/v2) -> the `hpa` policy of one component.

Carried over: `scaleTargetRef` (the component, and the Kubernetes actuator's target),
`minReplicas` / `maxReplicas`, `behavior` (both directions: stabilization window, select
policy, rate-limit policies, tolerance), and the metrics the `hpa` policy reads:
- Resource `cpu` with a Utilization target -> metric `utilization` at that target;
- a Pods, Object or External metric with an AverageValue target -> metric `demand_rps` (the
  component's demand per replica) with `capacity_per_replica` = target / target utilization,
  so the per-replica target is the HPA's exactly.
Anything else (memory, Value targets, a second demand metric) is named in a note.
"""

from __future__ import annotations

from typing import Any, Final

from elastiscale.importer.model import (
    DEFAULT_UTILIZATION,
    ImportedComponent,
    ImportRefusedError,
    integer,
    mapping,
    number,
    quantity,
)

HPA_VERSIONS: Final = ("autoscaling/v2", "autoscaling/v2beta2")
_SELECT: Final = {"Max": "max", "Min": "min", "Disabled": "disabled"}
_TYPES: Final = {"Pods": "pods", "Percent": "percent"}
_RULE_KEYS: Final = {"stabilizationWindowSeconds", "selectPolicy", "policies", "tolerance"}


def behavior(raw: Any, where: str, comp: ImportedComponent) -> dict[str, Any]:
    """An HPA `behavior` block in the `hpa` policy's own spelling."""
    out: dict[str, Any] = {}
    block = mapping(raw, where)
    for key in block:
        if key not in ("scaleUp", "scaleDown"):
            raise ImportRefusedError(f"{where}.{key}: unknown key (scaleUp, scaleDown)")
    for key, ours in (("scaleUp", "scale_up"), ("scaleDown", "scale_down")):
        if key not in block:
            continue
        rules = mapping(block[key], f"{where}.{key}")
        at = f"{where}.{key}"
        unknown = sorted(set(rules) - _RULE_KEYS)
        if unknown:
            raise ImportRefusedError(
                f"{at}.{unknown[0]}: unknown key ({', '.join(sorted(_RULE_KEYS))})"
            )
        rule: dict[str, Any] = {}
        if "stabilizationWindowSeconds" in rules:
            rule["stabilization_window_s"] = integer(
                rules["stabilizationWindowSeconds"], f"{at}.stabilizationWindowSeconds"
            )
        if "selectPolicy" in rules:
            select = rules["selectPolicy"]
            if select not in _SELECT:
                raise ImportRefusedError(
                    f"{at}.selectPolicy: {select!r} is not Max, Min or Disabled"
                )
            rule["select_policy"] = _SELECT[select]
        if "policies" in rules:
            policies = rules["policies"]
            if not isinstance(policies, list):
                raise ImportRefusedError(f"{at}.policies: expected a list")
            rule["rate_limits"] = [_rate(p, f"{at}.policies[{i}]") for i, p in enumerate(policies)]
        if "tolerance" in rules:
            rule["tolerance"] = quantity(rules["tolerance"], f"{at}.tolerance")
        out[ours] = rule
    return out


def _rate(raw: Any, where: str) -> dict[str, Any]:
    policy = mapping(raw, where)
    kind = policy.get("type")
    if kind not in _TYPES:
        raise ImportRefusedError(f"{where}.type: {kind!r} is not Pods or Percent")
    return {
        "type": _TYPES[kind],
        "value": integer(policy.get("value"), f"{where}.value", 1),
        "period_s": integer(policy.get("periodSeconds"), f"{where}.periodSeconds", 1),
    }


def target_of(ref: Any, where: str, default_kind: str = "") -> dict[str, str]:
    """A `scaleTargetRef` as the Kubernetes actuator's target."""
    raw = mapping(ref, where)
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ImportRefusedError(f"{where}.name: required")
    kind = raw.get("kind", default_kind)
    if not isinstance(kind, str) or not kind:
        raise ImportRefusedError(f"{where}.kind: required")
    target = {"kind": kind, "name": name}
    api_version = raw.get("apiVersion")
    if isinstance(api_version, str) and api_version not in ("apps/v1", "v1", ""):
        target["api_version"] = api_version
    return target


class MetricSet:
    """The `hpa` metrics of one component, filled from HPA metrics or KEDA triggers."""

    def __init__(self, comp: ImportedComponent) -> None:
        self.comp = comp
        self.utilization: float | None = None
        self.demand_target: float | None = None

    def add_cpu(self, utilization_percent: float, where: str) -> None:
        if self.utilization is not None:
            self.comp.note(where, "a second CPU target is not carried over (the first is kept)")
            return
        self.utilization = utilization_percent / 100.0

    def add_demand(self, per_replica: float, what: str, where: str) -> None:
        if self.demand_target is not None:
            self.comp.note(
                where, f"{what}: not carried over (elastiscale reads one demand per component)"
            )
            return
        self.demand_target = per_replica
        self.comp.note(
            where,
            f"{what} is read as the component's demand per replica (elastiscale reads demand "
            "from its `metrics:` section; check that the two measure the same)",
        )

    def finish(self) -> None:
        """Write the metrics, target utilization and capacity into the component."""
        metrics = []
        if self.demand_target is not None:
            metrics.append("demand_rps")
        if self.utilization is not None:
            metrics.append("utilization")
        if not metrics:
            raise ImportRefusedError(
                f"{self.comp.origin}: no metric the hpa policy can reproduce (a CPU "
                "Utilization target, or a per-replica AverageValue target)"
            )
        utilization = self.utilization if self.utilization is not None else DEFAULT_UTILIZATION
        self.comp.params["metrics"] = metrics
        self.comp.params["target_utilization"] = round(utilization, 6)
        if self.demand_target is not None:
            self.comp.capacity_per_replica = self.demand_target / utilization


def read_hpa(doc: dict[str, Any], origin: str) -> ImportedComponent:
    """One HorizontalPodAutoscaler as a component with the `hpa` policy."""
    version = doc.get("apiVersion")
    if version not in HPA_VERSIONS:
        raise ImportRefusedError(
            f"{origin}: apiVersion: {version!r} is not imported (autoscaling/v2; "
            "`kubectl get hpa NAME -o yaml` returns v2)"
        )
    spec = mapping(doc.get("spec"), f"{origin}: spec")
    target = target_of(spec.get("scaleTargetRef"), f"{origin}: spec.scaleTargetRef")
    meta = mapping(doc.get("metadata"), f"{origin}: metadata")
    comp = ImportedComponent(
        name=target["name"],
        origin=origin,
        policy="hpa",
        replicas_min=integer(spec.get("minReplicas", 1), f"{origin}: spec.minReplicas"),
        replicas_max=integer(spec.get("maxReplicas"), f"{origin}: spec.maxReplicas", 1),
        namespace=meta.get("namespace"),
        target=target,
    )
    metrics = MetricSet(comp)
    raw_metrics = spec.get("metrics")
    if raw_metrics is None:  # the API's default: 80 % CPU
        metrics.add_cpu(80.0, "spec.metrics")
    elif not isinstance(raw_metrics, list):
        raise ImportRefusedError(f"{origin}: spec.metrics: expected a list")
    else:
        for i, metric in enumerate(raw_metrics):
            _hpa_metric(
                mapping(metric, f"{origin}: spec.metrics[{i}]"), f"spec.metrics[{i}]", metrics
            )
    metrics.finish()
    if "behavior" in spec:
        comp.params["behavior"] = behavior(spec["behavior"], f"{origin}: spec.behavior", comp)
    for key in sorted(
        set(spec) - {"scaleTargetRef", "minReplicas", "maxReplicas", "metrics", "behavior"}
    ):
        comp.note(f"spec.{key}", "not carried over (unknown to autoscaling/v2)")
    return comp


def _hpa_metric(metric: dict[str, Any], where: str, metrics: MetricSet) -> None:
    kind = metric.get("type")
    comp = metrics.comp
    if kind in ("Resource", "ContainerResource"):
        source = mapping(
            metric.get("resource" if kind == "Resource" else "containerResource"), where
        )
        target = mapping(source.get("target"), f"{where}.target")
        name = source.get("name")
        if name == "cpu" and target.get("type") == "Utilization":
            percent = number(target.get("averageUtilization"), f"{where}.target.averageUtilization")
            metrics.add_cpu(percent, where)
            if kind == "ContainerResource":
                comp.note(where, f"container {source.get('container')!r}: read as the pod's CPU")
        else:
            comp.note(
                where,
                f"{kind} {name} with a {target.get('type')} target: not carried over (the hpa "
                "policy reads CPU utilization, demand and concurrency)",
            )
        return
    key = {"Pods": "pods", "Object": "object", "External": "external"}.get(str(kind))
    if key is None:
        raise ImportRefusedError(
            f"{comp.origin}: {where}.type: {kind!r} is not Resource, "
            "ContainerResource, Pods, Object or External"
        )
    source = mapping(metric.get(key), f"{where}.{key}")
    name = mapping(source.get("metric"), f"{where}.{key}.metric").get("name", "?")
    target = mapping(source.get("target"), f"{where}.{key}.target")
    if target.get("type") == "AverageValue":
        value = quantity(target.get("averageValue"), f"{comp.origin}: {where}.target.averageValue")
        metrics.add_demand(value, f"{kind} metric {name!r}", where)
    else:
        comp.note(
            where,
            f"{kind} metric {name!r} with a {target.get('type')} target (not per replica): "
            "not carried over",
        )
