"""The dependency graph of a pipeline: components, edges with fan-out, topological order, and
the propagation of demand from ingress to every component.

Propagation: a component's demand is its own external (ingress) demand plus, over every incoming
edge, the upstream component's demand times the edge's fan-out. A component shared by two
branches (one retriever called by a planner and by a writer) receives the sum.

Worked example: router -> planner (fan-out 4) -> retriever (1.5), router -> retriever (1):
10 req/s at the router gives the planner 40 req/s and the retriever 40 x 1.5 + 10 = 70 req/s.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from elastiscale.config import ComponentConfig, EdgeConfig, PipelineSpec


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    fanout: float
    mode: str


class Pipeline:
    """An immutable view of a validated `PipelineSpec` as a graph."""

    def __init__(self, spec: PipelineSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.components: Mapping[str, ComponentConfig] = spec.components
        self.edges: tuple[Edge, ...] = tuple(_edge(e) for e in spec.edges)
        self._incoming: dict[str, list[Edge]] = {n: [] for n in spec.components}
        self._outgoing: dict[str, list[Edge]] = {n: [] for n in spec.components}
        for edge in self.edges:
            self._incoming[edge.target].append(edge)
            self._outgoing[edge.source].append(edge)
        self.order: tuple[str, ...] = _topological_order(list(spec.components), self.edges)
        self.ingress: tuple[str, ...] = tuple(n for n in self.order if spec.components[n].ingress)
        self._index = {name: i for i, name in enumerate(self.order)}

    def incoming(self, component: str) -> list[Edge]:
        return self._incoming[component]

    def outgoing(self, component: str) -> list[Edge]:
        return self._outgoing[component]

    def upstream(self, component: str) -> list[str]:
        return [e.source for e in self._incoming[component]]

    def downstream(self, component: str) -> list[str]:
        return [e.target for e in self._outgoing[component]]

    def prior_fanouts(self) -> dict[tuple[str, str], float]:
        return {(e.source, e.target): e.fanout for e in self.edges}

    def propagate(
        self,
        external_demand: Mapping[str, float],
        fanout: Mapping[tuple[str, str], float] | None = None,
    ) -> dict[str, float]:
        """Demand of every component given external demand at ingress components.

        `fanout` overrides the configured fan-out of any edge (e.g. with measured factors).
        Components absent from `external_demand` have no external demand.
        """
        factors = fanout or {}
        demand: dict[str, float] = {}
        for name in self.order:
            total = float(external_demand.get(name, 0.0))
            for edge in self._incoming[name]:
                factor = factors.get((edge.source, edge.target), edge.fanout)
                total += demand[edge.source] * factor
            demand[name] = total
        return demand

    @cached_property
    def _ingress_gain(self) -> npt.NDArray[np.float64]:
        """gain[i, j]: demand at component j per unit of external demand at ingress i, with the
        configured fan-outs; lets series be propagated as one matrix product."""
        gains = np.zeros((len(self.ingress), len(self.order)))
        for i, name in enumerate(self.ingress):
            unit = self.propagate({name: 1.0})
            gains[i] = [unit[n] for n in self.order]
        return gains

    def propagate_series(
        self, ingress_series: Mapping[str, npt.NDArray[np.float64]]
    ) -> dict[str, npt.NDArray[np.float64]]:
        """Propagate demand series (one array per ingress, equal lengths) with configured
        fan-outs; returns one array per component."""
        rows = [np.asarray(ingress_series.get(n, 0.0), dtype=float) for n in self.ingress]
        stacked = np.vstack(np.broadcast_arrays(*rows))
        out = self._ingress_gain.T @ stacked
        return {name: out[self._index[name]] for name in self.order}

    def paths_from_ingress(self, component: str) -> list[list[str]]:
        """Every path from an ingress component to `component` (inclusive of both ends)."""
        if not self._incoming[component]:
            return [[component]]
        paths: list[list[str]] = []
        for edge in self._incoming[component]:
            paths.extend([*p, component] for p in self.paths_from_ingress(edge.source))
        if self.components[component].ingress:
            paths.append([component])
        return paths


def _edge(spec: EdgeConfig) -> Edge:
    return Edge(source=spec.source, target=spec.target, fanout=spec.fanout, mode=spec.mode)


def _topological_order(names: list[str], edges: tuple[Edge, ...]) -> tuple[str, ...]:
    """Kahn's algorithm, ties broken by declaration order so the order is stable: of the
    components whose upstreams are all placed, the one declared first comes next."""
    position = {n: i for i, n in enumerate(names)}
    indegree = dict.fromkeys(names, 0)
    children: dict[str, list[str]] = {n: [] for n in names}
    for edge in edges:
        indegree[edge.target] += 1
        children[edge.source].append(edge.target)
    ready = [position[n] for n in names if indegree[n] == 0]  # a heap of positions
    order: list[str] = []
    while ready:
        node = names[heapq.heappop(ready)]
        order.append(node)
        for child in children[node]:
            indegree[child] -= 1
            if indegree[child] == 0:
                heapq.heappush(ready, position[child])
    if len(order) != len(names):
        raise ValueError("the pipeline graph has a cycle")  # validated configs never do
    return tuple(order)
