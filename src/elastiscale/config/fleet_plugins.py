"""The `metrics:` and `actuator:` sections of a merged fleet unit.

A unit runs one metric source and one actuator, so its pipelines' sections are merged:

- every pipeline of the unit has the section (its own, else the fleet file's), of one `type`;
- per-component entries (`metrics.components`, `actuator.targets`) are renamed to the merged
  names; a local component's entry carries what its pipeline set for all its components, so
  each pipeline's Prometheus preset, label, selector and queries still apply to its own
  components (and the series are still found by the component's own name: `label_value`
  defaults to it); a Kubernetes target keeps its pipeline's namespace, a Ray Serve target
  its pipeline's application;
- a shared component's entry must be the same in every pipeline naming it;
- every other option (the server's URL, credentials, timeouts) must be the same: one source
  and one actuator serve the whole unit.

Each disagreement is one problem naming both pipelines and the field.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from elastiscale.config.fleet_graph import Member, first_difference, merged_name
from elastiscale.config.models import PluginSpec

#: Options of the metric source set for all components that a component's entry also takes.
_MATCHING = ("preset", "label", "selector", "queries")
#: Per actuator type: options of all targets that a target also takes (option -> target key).
_TARGET_DEFAULTS: Mapping[str, Mapping[str, str]] = {
    "kubernetes": {"namespace": "namespace"},
    "ray-serve": {"application": "application"},
}


def _queries(value: Any) -> dict[str, Any]:
    """`signal: "promql"` as `signal: {expr: "promql"}`, so spellings compare equal."""
    if not isinstance(value, Mapping):
        return {}
    return {k: {"expr": v} if isinstance(v, str) else v for k, v in value.items()}


def _metric_entries(
    member: Member, options: dict[str, Any], shared: Collection[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the source-wide options, the per-component entries under merged names)."""
    own = options.pop("components", None) or {}
    if options.get("type") != "prometheus":  # a source without per-component matching
        return options, {merged_name(member, c, shared): v for c, v in own.items()}
    level = {k: options.pop(k) for k in _MATCHING if k in options}
    entries: dict[str, Any] = {}
    for component in member.config.pipeline.components:
        mine = dict(own.get(component) or {})
        entry: dict[str, Any] = {}
        if "preset" in mine or "preset" in level:
            entry["preset"] = mine["preset"] if "preset" in mine else level["preset"]
        label = mine.get("label") or level.get("label")
        if label:
            entry["label"] = label
        selector = {**(level.get("selector") or {}), **(mine.get("selector") or {})}
        if selector:
            entry["selector"] = selector
        queries = {**_queries(level.get("queries")), **_queries(mine.get("queries"))}
        if queries:
            entry["queries"] = queries
        entry["label_value"] = mine.get("label_value") or component
        entries[merged_name(member, component, shared)] = entry
    return options, entries


def _actuator_entries(
    member: Member, options: dict[str, Any], shared: Collection[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    own = options.pop("targets", None) or {}
    defaults = _TARGET_DEFAULTS.get(str(options.get("type")), {})
    pushed = {key: options.pop(option) for option, key in defaults.items() if option in options}
    entries = {}
    for component, target in own.items():
        entry = dict(target) if isinstance(target, Mapping) else target
        if isinstance(entry, dict):
            entry = {**pushed, **entry}
        entries[merged_name(member, str(component), shared)] = entry
    return options, entries


def merge_plugin(
    section: str,
    members: Sequence[Member],
    fallback: PluginSpec | None,
    shared: Collection[str],
    problems: list[str],
) -> dict[str, Any] | None:
    """The merged `section` ("metrics" or "actuator") as a mapping, or None when no pipeline
    has one; disagreements are appended to `problems`."""
    key = "components" if section == "metrics" else "targets"
    split = _metric_entries if section == "metrics" else _actuator_entries
    specs = [(m, getattr(m.config, section) or fallback) for m in members]
    present = [(m, s) for m, s in specs if s is not None]
    if not present:
        return None
    if len(present) < len(specs):
        have = next(m for m, _ in present)
        lack = next(m for m, s in specs if s is None)
        problems.append(
            f"{section}: {have.describe()} has a {section} section and {lack.describe()} has "
            f"none; pipelines sharing a component use one (set it in the fleet file or in both)"
        )
        return None
    merged: dict[str, Any] | None = None
    first: Member | None = None
    entries: dict[str, Any] = {}
    owner: dict[str, Member] = {}
    for member, spec in present:
        options, own_entries = split(member, {"type": spec.type, **spec.options()}, shared)
        if merged is None or first is None:
            merged, first = options, member
        else:
            diff = first_difference(merged, options)
            if diff is not None:
                field, a, b = diff
                problems.append(
                    f"{section}.{field}: {first.describe()} has {a!r}, {member.describe()} "
                    f"has {b!r}; pipelines sharing a component use one {section} section"
                )
        for name, entry in own_entries.items():
            if name in entries:
                diff = first_difference(entries[name], entry)
                if diff is not None:
                    field, a, b = diff
                    problems.append(
                        f"{section}.{key}.{name}.{field}: shared component defined differently"
                        f" by {owner[name].describe()} ({a!r}) and {member.describe()} ({b!r})"
                    )
            else:
                entries[name], owner[name] = entry, member
    assert merged is not None
    if entries:
        merged[key] = entries
    return merged
