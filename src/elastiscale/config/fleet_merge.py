"""`merge_unit`: the pipelines of one fleet unit as one ordinary, validated `Config`.

What the merged config holds (names and edges: `elastiscale.config.fleet_graph`; metric source and
actuator: `elastiscale.config.fleet_plugins`):

- `pipeline.name` is the unit's name; `pipeline.members` names each pipeline with its own SLO
  and its components, so every request is held to its own pipeline's objective (a component
  several pipelines call meets the tightest of their budgets) and a shared component's
  decision record shows each pipeline's share of its demand (`elastiscale.demand_shares`);
- `pipeline.slo` is the tightest of the members' (the shortest latency, the highest
  attainment target): what a whole-unit figure such as a backtest's attainment is held to;
- every component carries the pipeline-level values it inherited in its own fields (target
  utilization, queue timeout, constraints), so they stay those of its pipeline;
- `pipeline.max_gpus` is the sum of the members' budgets (set on all of them, or on none);
- `policies` and `control` must be the same in every member (a unit ticks once, with one set
  of policies); per-component policy overrides are renamed and kept.

Problems are lines naming the pipelines and the field; `ConfigError` carries them all.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from elastiscale.config.daemon import DaemonConfig
from elastiscale.config.fleet_graph import (
    Member,
    definition,
    explicit_queue_timeout,
    first_difference,
    merged_edges,
    merged_name,
)
from elastiscale.config.fleet_plugins import merge_plugin
from elastiscale.config.loading import validate_mapping
from elastiscale.config.models import Config, PluginSpec
from elastiscale.errors import ConfigError
from elastiscale.overrides import OVERRIDES_KEY

__all__ = ["Member", "merge_unit"]

#: The fields merging carries over; a field added to the models must be merged here before
#: a pipeline of a unit may set it (else it would be dropped without a word).
_PIPELINE_FIELDS = frozenset(
    {"name", "slo", "target_utilization", "queue_timeout_s", "max_gpus", "components", "edges"}
)
_CONFIG_FIELDS = frozenset(
    {"pipeline", "policies", "control", "constraints", "metrics", "actuator", "daemon"}
)


def merge_unit(
    name: str,
    members: Sequence[Member],
    shared: Collection[str],
    *,
    daemon: DaemonConfig,
    metrics: PluginSpec | None = None,
    actuator: PluginSpec | None = None,
    label: str = "",
) -> Config:
    """The unit `name` of `members` (which share the components in `shared`) as one config.

    `metrics` and `actuator` are the fleet file's sections, used by members without their
    own. Raises `ConfigError` (source `label`) listing every problem."""
    problems: list[str] = []
    for member in members:
        fields = [
            f"pipeline.{f}" for f in member.config.pipeline.model_fields_set - _PIPELINE_FIELDS
        ]
        fields += sorted(member.config.model_fields_set - _CONFIG_FIELDS)
        problems.extend(
            f"{member.label}: {f}: not supported in a pipeline that shares components"
            for f in sorted(fields)
        )
    components = _components(members, shared, problems)
    raw: dict[str, Any] = {
        "pipeline": {
            "name": name,
            "slo": _tightest_slo(members),
            "components": components,
            "edges": merged_edges(members, shared),
            "members": {
                m.name: {
                    "slo": m.config.pipeline.slo.model_dump(mode="json"),
                    "components": [merged_name(m, c, shared) for c in m.config.pipeline.components],
                }
                for m in members
            },
        },
        "policies": _policies(members, shared, problems),
        "control": _same("control", members, problems),
        "daemon": daemon.model_dump(mode="json"),
    }
    budget = _budget(members, problems)
    if budget is not None:
        raw["pipeline"]["max_gpus"] = budget
    for section, fallback in (("metrics", metrics), ("actuator", actuator)):
        spec = merge_plugin(section, members, fallback, shared, problems)
        if spec is not None:
            raw[section] = spec
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)), source=label)
    try:
        return validate_mapping(raw, label=label)
    except ConfigError as exc:  # a merge this module should not make: say which unit
        raise ConfigError([f"unit {name}: {p}" for p in exc.problems], source=label) from None


def _components(
    members: Sequence[Member], shared: Collection[str], problems: list[str]
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    owner: dict[str, Member] = {}
    timeouts: dict[str, list[tuple[Member, float | None, float]]] = {}
    for member in members:
        config = member.config
        for component in config.pipeline.components:
            merged = merged_name(member, component, shared)
            own = definition(config, component)
            timeouts.setdefault(merged, []).append(
                (member, explicit_queue_timeout(config, component), own.pop("queue_timeout_s"))
            )
            if merged not in out:
                if component in shared and own["ingress"]:
                    problems.append(
                        f"fleet.shared: {component} is an ingress component of "
                        f"{member.describe()}; a shared component cannot be one (its external "
                        "requests could not be told apart by pipeline)"
                    )
                out[merged], owner[merged] = own, member
                continue
            if component not in shared:  # a local name colliding with a shared one
                problems.append(
                    f"fleet.shared: {merged} of {member.describe()} has the name of a shared "
                    f"component of {owner[merged].describe()}; rename one"
                )
                continue
            diff = first_difference(out[merged], own)
            if diff is not None:
                field, a, b = diff
                problems.append(
                    f"pipeline.components.{component}.{field}: shared component defined "
                    f"differently by {owner[merged].describe()} ({a!r}) and "
                    f"{member.describe()} ({b!r})"
                )
    for merged, seen in timeouts.items():
        explicit = [(m, t) for m, t, _ in seen if t is not None]
        values = {t for _, t in explicit}
        if len(values) > 1:
            (m1, t1), (m2, t2) = explicit[0], next(e for e in explicit if e[1] != explicit[0][1])
            problems.append(
                f"pipeline.components.{merged}.queue_timeout_s: shared component defined "
                f"differently by {m1.describe()} ({t1!r}) and {m2.describe()} ({t2!r})"
            )
        out[merged]["queue_timeout_s"] = (
            explicit[0][1] if explicit else min(resolved for _, _, resolved in seen)
        )
    return out


def _tightest_slo(members: Sequence[Member]) -> dict[str, float]:
    slos = [m.config.pipeline.slo for m in members]
    return {
        "latency_p95_s": min(s.latency_p95_s for s in slos),
        "attainment_target": max(s.attainment_target for s in slos),
    }


def _budget(members: Sequence[Member], problems: list[str]) -> float | None:
    budgets = [(m, m.config.pipeline.max_gpus) for m in members]
    given = [(m, b) for m, b in budgets if b is not None]
    if not given:
        return None
    if len(given) < len(budgets):
        lack = next(m for m, b in budgets if b is None)
        problems.append(
            f"pipeline.max_gpus: set by {given[0][0].describe()} but not by {lack.describe()};"
            " a unit has one GPU budget (the sum of its pipelines'): set it on all or none"
        )
        return None
    return sum(b for _, b in given)


def _same(section: str, members: Sequence[Member], problems: list[str]) -> dict[str, Any]:
    """A section every member must hold alike."""
    dumps: list[tuple[Member, dict[str, Any]]] = [
        (m, getattr(m.config, section).model_dump(mode="json")) for m in members
    ]
    first, value = dumps[0]
    for member, other in dumps[1:]:
        diff = first_difference(value, other)
        if diff is not None:
            field, a, b = diff
            problems.append(
                f"{section}.{field}: {first.describe()} has {a!r}, {member.describe()} has "
                f"{b!r}; pipelines sharing a component run in one loop with one {section}"
            )
    return value


def _policies(
    members: Sequence[Member], shared: Collection[str], problems: list[str]
) -> list[dict[str, Any]]:
    """The members' policies, alike but for per-component overrides, which are renamed."""
    lists: list[tuple[Member, list[dict[str, Any]]]] = []
    for member in members:
        specs = []
        for policy in member.config.policies:
            dump = policy.model_dump(mode="json")
            own = dump["params"].get(OVERRIDES_KEY)
            if isinstance(own, dict):
                dump["params"][OVERRIDES_KEY] = {
                    merged_name(member, c, shared): v for c, v in own.items()
                }
            specs.append(dump)
        lists.append((member, specs))
    first, merged = lists[0]

    def without_overrides(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {**s, "params": {k: v for k, v in s["params"].items() if k != OVERRIDES_KEY}}
            for s in specs
        ]

    alike = True
    for member, specs in lists[1:]:
        if len(specs) != len(merged):
            problems.append(
                f"policies: {first.describe()} has {len(merged)}, {member.describe()} has "
                f"{len(specs)}; pipelines sharing a component run one set of policies"
            )
            alike = False
            continue
        diff = first_difference(without_overrides(merged), without_overrides(specs))
        if diff is not None:
            field, a, b = diff
            problems.append(
                f"policies{field}: {first.describe()} has {a!r}, {member.describe()} has "
                f"{b!r}; pipelines sharing a component run one set of policies"
            )
            alike = False
    if not alike:
        return merged
    out = without_overrides(merged)
    for i, spec in enumerate(out):
        union: dict[str, Any] = {}
        for _, specs in lists:
            own = specs[i]["params"].get(OVERRIDES_KEY) or {}
            union.update({c: v for c, v in own.items() if c not in union})
        for name in sorted(n for n in shared if n in union or _held_by_several(n, members)):
            # a shared component's overrides (or their absence) must agree
            seen = [
                (m, (specs[i]["params"].get(OVERRIDES_KEY) or {}).get(name))
                for m, specs in lists
                if name in m.config.pipeline.components
            ]
            other = next(((m, v) for m, v in seen if v != seen[0][1]), None)
            if other is not None:
                problems.append(
                    f"policies[{i}].params.{OVERRIDES_KEY}.{name}: shared component set "
                    f"differently by {seen[0][0].describe()} ({seen[0][1]!r}) and "
                    f"{other[0].describe()} ({other[1]!r})"
                )
        if union:
            spec["params"][OVERRIDES_KEY] = union
    return out


def _held_by_several(name: str, members: Sequence[Member]) -> bool:
    return sum(name in m.config.pipeline.components for m in members) > 1
