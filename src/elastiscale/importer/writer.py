"""Imported autoscalers -> one pipeline file, laid over an optional base pipeline file.

Without a base, what no autoscaler knows is a placeholder, named in a note: the SLO, the call
graph (edges), `service_time_s`, and `capacity_per_replica` where no per-replica target gives
it. With `--pipeline BASE.yaml`, the base's pipeline (components matched by name), control,
metrics and actuator are kept, and the imported bounds, policy parameters and fallbacks are
laid over it. The result is validated as a whole before it is written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import yaml

from elastiscale.config import validate_mapping
from elastiscale.errors import ConfigError
from elastiscale.importer.keda import read_scaled_object
from elastiscale.importer.kube import read_hpa
from elastiscale.importer.model import ImportedComponent, ImportRefusedError
from elastiscale.importer.ray_serve import read_serve_config

#: Placeholders where neither the autoscaler nor a base pipeline says (each named in a note).
PLACEHOLDER_SLO_S: Final = 10.0
PLACEHOLDER_SERVICE_TIME_S: Final = 1.0
PLACEHOLDER_CAPACITY: Final = 1.0
KINDS: Final = "HorizontalPodAutoscaler, ScaledObject, or a Ray Serve config with `applications:`"


def read_file(path: Path) -> list[ImportedComponent]:
    """Every autoscaler in one YAML file (several documents, or a `kind: List`)."""
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except OSError as exc:
        raise ImportRefusedError(f"{path}: cannot read file: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ImportRefusedError(f"{path}: invalid YAML: {exc}") from None
    found: list[ImportedComponent] = []
    for i, doc in enumerate(docs):
        where = f"{path}" if len(docs) == 1 else f"{path} (document {i + 1})"
        items = doc.get("items") if isinstance(doc, dict) and doc.get("kind") == "List" else [doc]
        for j, item in enumerate(items or []):
            at = where if doc is item else f"{where}: items[{j}]"
            found.extend(_read(item, at))
    return found


def _read(doc: Any, where: str) -> list[ImportedComponent]:
    if not isinstance(doc, dict):
        raise ImportRefusedError(f"{where}: expected a mapping ({KINDS})")
    kind = doc.get("kind")
    if kind is None and "applications" in doc:
        return read_serve_config(doc, f"{where}: Ray Serve config")
    meta: dict[str, Any] = doc["metadata"] if isinstance(doc.get("metadata"), dict) else {}
    label = f"{where}: {kind} {meta.get('namespace', 'default')}/{meta.get('name', '?')}"
    if kind == "HorizontalPodAutoscaler":
        return [read_hpa(doc, label)]
    if kind == "ScaledObject" and str(doc.get("apiVersion", "")).startswith("keda.sh/"):
        return [read_scaled_object(doc, label)]
    if kind is None:
        raise ImportRefusedError(f"{where}: kind: required ({KINDS})")
    raise ImportRefusedError(f"{where}: kind: {kind!r} is not imported ({KINDS})")


def gather(paths: Sequence[Path]) -> list[ImportedComponent]:
    """The components of every file; refuses a workload scaled twice and mixed platforms."""
    components: list[ImportedComponent] = []
    by_name: dict[str, ImportedComponent] = {}
    for path in paths:
        for comp in read_file(path):
            other = by_name.get(comp.name)
            if other is not None:
                raise ImportRefusedError(
                    f"{comp.origin}: {comp.name!r} is already scaled by {other.origin}"
                )
            by_name[comp.name] = comp
            components.append(comp)
    policies = sorted({c.policy for c in components})
    if len(policies) > 1:
        raise ImportRefusedError(
            "cannot mix Ray Serve deployments with Kubernetes autoscalers in one pipeline "
            "(import them into two files)"
        )
    return components


def build(
    components: Sequence[ImportedComponent],
    base: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The pipeline file as a mapping, and the notes (one line each), validated."""
    out: dict[str, Any] = {k: v for k, v in dict(base or {}).items()}
    _rename_by_targets(components, out.get("actuator"))
    notes = [n for c in components for n in c.notes]
    pipeline: dict[str, Any] = dict(out.get("pipeline") or {})
    pipeline["name"] = name or pipeline.get("name") or "imported"
    if "slo" not in pipeline:
        pipeline["slo"] = {"latency_p95_s": PLACEHOLDER_SLO_S}
        notes.append(
            f"pipeline.slo: placeholder latency_p95_s: {PLACEHOLDER_SLO_S:g} (autoscalers have "
            "no latency objective; set yours)"
        )
    given: dict[str, Any] = dict(pipeline.get("components") or {})
    merged: dict[str, Any] = {}
    params: dict[str, dict[str, Any]] = {}
    for comp in components:
        merged[comp.name] = _component(comp, dict(given.get(comp.name) or {}), notes)
        params[comp.name] = comp.params
    for other, spec in given.items():
        if other not in merged:
            merged[other] = spec
            notes.append(
                f"pipeline.components.{other}: no imported autoscaler; the "
                f"{components[0].policy} policy runs with its defaults for it"
            )
    if not any(isinstance(c, dict) and c.get("ingress") for c in merged.values()):
        first = components[0].name
        merged[first]["ingress"] = True
        notes.append(
            f"pipeline.edges: an autoscaler does not know the call graph; {first} is the "
            "ingress and no edges are set (add them, or pass --pipeline with a base file)"
        )
    pipeline["components"] = merged
    out["pipeline"] = pipeline
    out["policies"] = [{"name": components[0].policy, "params": {"components": params}}]
    out.setdefault("control", {"interval_s": 15})
    if "actuator" not in out:
        actuator = _kubernetes_actuator(components)
        if actuator is not None:
            out["actuator"] = actuator
    try:
        validate_mapping(out, label="imported pipeline")
    except ConfigError as exc:
        raise ImportRefusedError(
            "the imported pipeline does not validate: " + "; ".join(exc.problems)
        ) from None
    return out, notes


def _rename_by_targets(components: Sequence[ImportedComponent], actuator: Any) -> None:
    """Name each imported workload as the base file's component whose actuator target it is
    (`targets: {llm: {kind: LeaderWorkerSet, name: rag-llm}}` -> rag-llm is `llm`)."""
    targets = actuator.get("targets") if isinstance(actuator, Mapping) else None
    if not isinstance(targets, Mapping):
        return
    by_workload: dict[str, str] = {}
    for component, target in targets.items():
        workload = target.get("name") if isinstance(target, Mapping) else target
        if isinstance(workload, str):
            by_workload[workload] = str(component)
    for comp in components:
        comp.name = by_workload.get(comp.name, comp.name)


def _component(comp: ImportedComponent, own: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    where = f"pipeline.components.{comp.name}"
    replicas: dict[str, Any] = {"min": comp.replicas_min, "max": comp.replicas_max}
    if comp.replicas_initial is not None:
        replicas["initial"] = comp.replicas_initial
    own["replicas"] = replicas
    if comp.capacity_per_replica is not None and "capacity_per_replica" in own:
        demand_target = comp.capacity_per_replica * comp.params["target_utilization"]
        if "utilization" not in comp.params.get("metrics", ()):
            comp.params["target_utilization"] = round(
                demand_target / own["capacity_per_replica"], 6
            )
        if not 0 < comp.params["target_utilization"] <= 1:
            raise ImportRefusedError(
                f"{comp.origin}: the per-replica target {demand_target:g} is above the base "
                f"file's {where}.capacity_per_replica = {own['capacity_per_replica']:g}"
            )
    elif comp.capacity_per_replica is not None:
        own["capacity_per_replica"] = round(comp.capacity_per_replica, 6)
    elif "capacity_per_replica" not in own:
        own["capacity_per_replica"] = PLACEHOLDER_CAPACITY
        notes.append(
            f"{where}.capacity_per_replica: placeholder {PLACEHOLDER_CAPACITY:g} (the "
            "autoscaler has no per-replica demand target; set what one replica sustains)"
        )
    if "service_time_s" not in own:
        own["service_time_s"] = PLACEHOLDER_SERVICE_TIME_S
        notes.append(
            f"{where}.service_time_s: placeholder {PLACEHOLDER_SERVICE_TIME_S:g} (set the "
            "time one request holds a replica)"
        )
    if comp.gpus_per_replica is not None:
        own["gpus_per_replica"] = comp.gpus_per_replica
    if comp.missing_data is not None:
        constraints = dict(own.get("constraints") or {})
        constraints["missing_data"] = comp.missing_data
        own["constraints"] = constraints
    return own


def _kubernetes_actuator(components: Sequence[ImportedComponent]) -> dict[str, Any] | None:
    """The Kubernetes actuator over the imported targets, when they share one namespace."""
    if any(c.target is None for c in components):
        return None
    namespaces = {c.namespace or "default" for c in components}
    if len(namespaces) != 1:
        return None
    return {
        "type": "kubernetes",
        "namespace": namespaces.pop(),
        "targets": {c.name: dict(c.target or {}) for c in components},
    }


def render(config: Mapping[str, Any], sources: Sequence[Path], notes: Sequence[str]) -> str:
    """The file's text: a header naming the sources and every note, then the YAML."""
    lines = [f"# Imported by `elastiscale import` from {', '.join(str(s) for s in sources)}."]
    lines += ["# Not carried over, placeholders and assumptions:"] if notes else []
    lines += [f"#   {note}" for note in notes]
    return "\n".join(lines) + "\n" + yaml.safe_dump(dict(config), sort_keys=False)
