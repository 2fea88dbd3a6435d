"""Variants of one component (stable and canary, two model versions, two GPU types) and the
traffic split between them.

A component may list `variants:`, each with its share of the component's traffic in `percent`
(the spelling of Knative's and Argo Rollouts' traffic weights; `weight` is accepted, as Argo's
`setWeight`, Flagger and Istio say it) and any of the component's own fields it changes:

```yaml
llm:
  capacity_per_replica: 1.5
  service_time_s: 4.0
  startup_s: 240
  replicas: {min: 1, max: 64}
  variants:
    stable: {percent: 90}
    canary: {percent: 10, startup_s: 300, replicas: {min: 1, max: 16}}
```

On loading, each variant becomes a component of its own, named `<component>-<variant>`
(`llm-stable`, `llm-canary`): its own scale target (actuator targets, metrics queries and
decisions use that name), its own learned start-up and capacity (`controllers.learned`), sized
for its own share of the demand. An edge into the component becomes one edge into each variant
with the fan-out times the variant's share (`router -> llm` at 3.0 gives `router -> llm-stable`
at 2.7 and `router -> llm-canary` at 0.3); an edge out of it leaves every variant with the same
fan-out. The fan-out measured online (`controllers.fanout`) is then the split the metrics show,
so a split that moves without a new config is followed from the per-variant rates. Each
expanded component carries `variant: {of, name, percent}`, which the simulator uses to route
each call to exactly one variant (`backtest.drift` moves the split over time).

Refused, one line each: fewer than two variants, a percent outside [0, 100] or missing,
percents not adding up to 100 (as Knative requires), a variant of an ingress component (put a
router in front: the split is of a component's incoming calls), a variant setting `ingress` or
`variants`, and an expanded name that is already a component's. KServe's
`canaryTrafficPercent` is answered with a hint (`spellings.HINTS`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The keys a variant's share may be spelled with (Knative/Argo `percent`; Argo/Flagger/Istio
#: `weight`).
PERCENT_KEYS = ("percent", "weight")


def variant_component(component: str, variant: str) -> str:
    """The name of a variant's own component: `llm` and `canary` give `llm-canary`."""
    return f"{component}-{variant}"


@dataclass
class Expansion:
    """A pipeline mapping with its variants made components, and how to name problems in it in
    the file's own terms."""

    pipeline: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    #: expanded component -> (the file's path of it, the keys the variant itself set)
    components: dict[str, tuple[str, frozenset[str]]] = field(default_factory=dict)
    #: expanded edge index -> the file's edge index
    edges: dict[int, int] = field(default_factory=dict)

    def file_path(self, line: str) -> str:
        """A problem line about the expanded pipeline, its path rewritten to the file's."""
        for name, (where, own) in self.components.items():
            prefix = f"pipeline.components.{name}"
            if line.startswith(prefix + ".") or line.startswith(prefix + ":"):
                rest = line[len(prefix) :]
                key = rest[1:].split(".", 1)[0].split(":", 1)[0].split("[", 1)[0]
                base = where if (rest.startswith(":") or key in own) else where.rsplit(".", 2)[0]
                return base + rest
        for expanded, original in self.edges.items():
            prefix = f"pipeline.edges[{expanded}]"
            if line.startswith(prefix):
                return f"pipeline.edges[{original}]" + line[len(prefix) :]
        return line


def _percent(spec: Mapping[str, Any], where: str, problems: list[str]) -> float | None:
    given = [k for k in PERCENT_KEYS if k in spec]
    if not given:
        problems.append(f"{where}.percent: required field is missing (the variant's share, %)")
        return None
    if len(given) > 1:
        problems.append(f"{where}: give one of {', '.join(given)}")
    value = spec[given[0]]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        problems.append(f"{where}.{given[0]}: must be a number in [0, 100] (got {value!r})")
        return None
    if not 0 <= value <= 100:
        problems.append(f"{where}.{given[0]}: must be in [0, 100] (got {value!r})")
        return None
    return float(value)


def expand(pipeline: Mapping[str, Any]) -> Expansion:
    """`pipeline` (a raw mapping) with every component's `variants:` made components; a
    mapping without variants comes back as it is. Problems are collected, not raised."""
    out = Expansion(dict(pipeline))
    components = pipeline.get("components")
    if not isinstance(components, Mapping) or not any(
        isinstance(c, Mapping) and "variants" in c for c in components.values()
    ):
        return out
    problems = out.problems
    expanded: dict[str, Any] = {}
    groups: dict[str, list[tuple[str, float]]] = {}  # component -> [(expanded name, share)]
    for name, comp in components.items():
        if not (isinstance(comp, Mapping) and "variants" in comp):
            expanded[name] = comp
            continue
        where = f"pipeline.components.{name}.variants"
        variants = comp["variants"]
        base = {k: v for k, v in comp.items() if k != "variants"}
        if not isinstance(variants, Mapping) or len(variants) < 2:
            problems.append(f"{where}: give at least two variants, each with its percent")
            expanded[name] = base
            continue
        if base.get("ingress"):
            problems.append(
                f"{where}: an ingress component cannot be split; put a router in front of it "
                "(the split is of the calls coming in)"
            )
        total, unreadable = 0.0, False
        members: list[tuple[str, float]] = []
        for vname, spec in variants.items():
            at = f"{where}.{vname}"
            if not isinstance(spec, Mapping):
                problems.append(f"{at}: expected a mapping with percent and the fields it changes")
                continue
            percent = _percent(spec, at, problems)
            unreadable = unreadable or percent is None
            for key in ("ingress", "variants", "variant"):
                if key in spec:
                    problems.append(f"{at}.{key}: a variant cannot set {key}")
            own = {k: v for k, v in spec.items() if k not in (*PERCENT_KEYS, "ingress")}
            full = variant_component(str(name), str(vname))
            if full in components:
                problems.append(f"{at}: its component name {full!r} is already a component's")
                unreadable = True
                continue
            share = percent if percent is not None else 0.0
            total += share
            merged = {**base, **own, "variant": {"of": name, "name": vname, "percent": share}}
            expanded[full] = merged
            members.append((full, share / 100.0))
            out.components[full] = (at, frozenset(own))
        readable = not unreadable and all(isinstance(s, Mapping) for s in variants.values())
        if readable and abs(total - 100.0) > 1e-6:
            problems.append(f"{where}: the percents add up to {total:g}, must be 100")
        groups[str(name)] = members
    out.pipeline["components"] = expanded
    edges = pipeline.get("edges")
    if isinstance(edges, list | tuple):
        new_edges: list[Any] = []
        for i, edge in enumerate(edges):
            for made in _edges(edge, groups):
                out.edges[len(new_edges)] = i
                new_edges.append(made)
        out.pipeline["edges"] = new_edges
    return out


def _edges(edge: Any, groups: Mapping[str, list[tuple[str, float]]]) -> list[Any]:
    """One file edge as the edges between expanded components."""
    if not isinstance(edge, Mapping):
        return [edge]
    src, dst = edge.get("from"), edge.get("to")
    sources = [n for n, _ in groups[src]] if isinstance(src, str) and src in groups else [src]
    targets = groups[dst] if isinstance(dst, str) and dst in groups else [(dst, 1.0)]
    fanout = edge.get("fanout", 1.0)
    out = []
    for s in sources:
        for t, share in targets:
            made = {**edge, "from": s, "to": t}
            if share != 1.0 and isinstance(fanout, int | float) and not isinstance(fanout, bool):
                made["fanout"] = fanout * share
            out.append(made)
    return out
