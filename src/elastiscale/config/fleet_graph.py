"""The merged graph of a fleet unit: component names, shared definitions, and edges.

Names. A component listed in the fleet's `shared` keeps its name and is one component for
every pipeline naming it; any other is local to its pipeline and becomes
`<pipeline name>/<component>` (`rag-qa/router`), so two pipelines may both have a `router`.

Definitions. A shared component is one deployment, so every pipeline naming it must define
it alike: its fields with the pipeline-level defaults it inherits resolved (target
utilization, constraints). The queue timeout is the exception: when no pipeline sets one
explicitly, each pipeline's default (2 x its SLO) differs, and the shortest is used.

Edges. An edge means "each call here makes `fanout` calls there", so an edge out of a shared
component would carry every pipeline's traffic into the next component. It is kept as it is
only when every pipeline naming the shared component has the same edge. Otherwise it is
routed around the shared component for its own pipeline: each call into the shared component
from upstream U (fan-out g) is followed by the shared component's call onward (fan-out f), so
the pipeline gets the edge U -> next with fan-out g x f, repeated upward while U is itself
shared. Worked example: rag-qa has router -> embedder -> retriever (1 each), support-agent
has planner -> embedder (2); with `embedder` shared the merged edges are rag-qa/router ->
embedder, support-agent/planner -> embedder (2) and rag-qa/router -> rag-qa/retriever: the
embedder receives both pipelines' calls and the retriever only rag-qa's. Every component
then receives exactly what its own pipelines send it, and no cycle can appear that no single
pipeline has. Edges that meet again add their fan-outs. The routed edge keeps the onward
call's distribution and mode, and nobody waits for it (no `caller_waits` or `via`): demand
is exact; in a backtest the latency of a `parallel` call routed this way, and whose in-flight
count a routed call's wait is in, are approximate.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from elastiscale.config.models import Config, EdgeConfig


@dataclass(frozen=True, slots=True)
class Member:
    """One pipeline of a unit: the file as the fleet file names it, and its loaded config."""

    label: str
    config: Config

    @property
    def name(self) -> str:
        return self.config.pipeline.name

    def describe(self) -> str:
        """`rag.yaml (rag-qa)`: how problems name the pipeline."""
        return f"{self.label} ({self.name})"


def merged_name(member: Member, component: str, shared: Collection[str]) -> str:
    """The component's name in the merged pipeline."""
    return component if component in shared else f"{member.name}/{component}"


def definition(config: Config, component: str) -> dict[str, Any]:
    """The component's fields with the pipeline-level values it inherits resolved."""
    spec = config.pipeline
    out = spec.components[component].model_dump(mode="json", by_alias=True)
    out["target_utilization"] = spec.utilization_target(component)
    out["constraints"] = config.constraints_for(component).model_dump(mode="json", by_alias=True)
    out["queue_timeout_s"] = spec.queue_timeout(component)
    return out


def explicit_queue_timeout(config: Config, component: str) -> float | None:
    """The queue timeout the file sets for the component (its own, else the pipeline's)."""
    own = config.pipeline.components[component].queue_timeout_s
    return own if own is not None else config.pipeline.queue_timeout_s


def first_difference(a: Any, b: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """The first field (dotted path) where `a` and `b` differ, with both values."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in [*a, *(k for k in b if k not in a)]:
            found = first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
            if found:
                return found
        return None
    if isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b else (path or "(value)", a, b)


@dataclass(frozen=True, slots=True)
class _Call:
    source: str  # merged names
    target: str
    fanout: float
    distribution: str
    mode: str
    caller_waits: bool = False
    via: str | None = None


def merged_edges(members: Sequence[Member], shared: Collection[str]) -> list[dict[str, Any]]:
    """The merged pipeline's edges (see the module docstring), as `pipeline.edges` entries."""
    holders: dict[str, list[Member]] = {}
    for member in members:
        for name in member.config.pipeline.components:
            if name in shared:
                holders.setdefault(name, []).append(member)

    def call(member: Member, edge: EdgeConfig) -> _Call:
        return _Call(
            merged_name(member, edge.source, shared),
            merged_name(member, edge.target, shared),
            edge.fanout,
            edge.fanout_distribution,
            edge.mode,
            edge.caller_waits,
            None if edge.via is None else merged_name(member, edge.via, shared),
        )

    own_calls = {m.name: [call(m, e) for e in m.config.pipeline.edges] for m in members}

    def kept(c: _Call) -> bool:
        return all(c in own_calls[h.name] for h in holders.get(c.source, []))

    out: dict[tuple[str, str], _Call] = {}

    def add(c: _Call) -> None:
        key = (c.source, c.target)
        old = out.get(key)
        out[key] = c if old is None else replace(old, fanout=old.fanout + c.fanout)

    kept_seen: set[_Call] = set()
    for member in members:
        calls = own_calls[member.name]
        incoming: dict[str, list[_Call]] = {}
        for c in calls:
            incoming.setdefault(c.target, []).append(c)

        def route(c: _Call, original: bool, calls_in: Mapping[str, list[_Call]]) -> None:
            if c.source not in shared:
                add(c)
            elif original and kept(c):
                if c not in kept_seen:
                    kept_seen.add(c)
                    add(c)
            else:
                for up in calls_in.get(c.source, []):
                    onward = _Call(up.source, c.target, up.fanout * c.fanout,
                                   c.distribution, c.mode)  # fmt: skip
                    route(onward, False, calls_in)

        for c in calls:
            route(c, True, incoming)
    return [
        {
            "from": c.source,
            "to": c.target,
            "fanout": c.fanout,
            "fanout_distribution": c.distribution,
            "mode": c.mode,
            "caller_waits": c.caller_waits,
            "via": c.via,
        }
        for c in out.values()
    ]
