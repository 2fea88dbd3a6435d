"""The calls of one component to the next, as the per-request simulators draw them, and their
changes over time.

A `Route` is either one edge, or all the edges from one component into the variants of another
(`config.variants`): a request's calls into a split component are drawn once, with the sum of
the edges' fan-outs as their mean, and each call then goes to exactly one variant with
probability its share (a traffic split routes calls, it does not duplicate or drop them:
drawing the two edges apart would let a request call both variants or neither). The fan-outs
may change during a run (`scenario.traffic`, applied through `Simulator.reroute`); a route keeps
every change with its time, so the end-to-end sampler of the fast fidelity, which runs after the
simulation, draws each call with the split in force when it was made.

Routes of single edges draw exactly as the edges did before routes existed (one count, no
extra random number), so runs without variants are unchanged.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from elastiscale.config import Config

Array = npt.NDArray[np.float64]


class Route:
    """Calls from one component to one target, or to the variants of one component."""

    __slots__ = ("distribution", "fanouts", "mode", "names", "targets", "times_s", "total")

    def __init__(
        self, names: list[str], targets: list[int], fanouts: list[float], distribution: str,
        mode: str,
    ) -> None:  # fmt: skip
        self.names = names
        self.targets = targets
        self.distribution = distribution
        self.mode = mode
        self.times_s: list[float] = [-math.inf]
        self.fanouts: list[list[float]] = [list(fanouts)]
        self.total = float(sum(fanouts))  # calls per request now

    @property
    def split(self) -> bool:
        return len(self.targets) > 1

    def shares(self, row: int = -1) -> list[float]:
        """Each target's share of the calls in change `row` (equal when there are none)."""
        fanouts = self.fanouts[row]
        total = sum(fanouts)
        if total <= 0:
            return [1.0 / len(fanouts)] * len(fanouts)
        return [f / total for f in fanouts]

    def pick(self, u: float) -> int:
        """The target of one call, given a uniform number `u` (latest shares)."""
        running = 0.0
        for k, share in enumerate(self.shares()):
            running += share
            if u < running:
                return k
        return len(self.targets) - 1

    def move(self, target: str, fanout: float, at_s: float) -> None:
        """`target`'s fan-out is `fanout` from `at_s` on."""
        row = list(self.fanouts[-1])
        row[self.names.index(target)] = fanout
        if at_s <= self.times_s[-1]:
            self.fanouts[-1] = row
        else:
            self.times_s.append(at_s)
            self.fanouts.append(row)
        self.total = float(sum(row))

    def rows_at(self, t_s: Array) -> npt.NDArray[np.int64]:
        """The change in force at each time of `t_s`."""
        edges = np.asarray(self.times_s[1:], dtype=float)
        return np.searchsorted(edges, t_s, side="right").astype(np.int64)

    def row_at(self, t_s: float) -> int:
        return bisect.bisect_right(self.times_s, t_s) - 1


class Routes:
    """Every component's routes, by mode (see the module docstring)."""

    def __init__(self, config: Config, index: Mapping[str, int]) -> None:
        n = len(index)
        self.parallel: list[list[Route]] = [[] for _ in range(n)]
        self.sequential: list[list[Route]] = [[] for _ in range(n)]
        self._of: dict[tuple[str, str], Route] = {}
        groups: dict[tuple[str, str, str, str], Route] = {}
        components = config.pipeline.components
        for spec in config.pipeline.edges:
            variant = components[spec.target].variant
            key = (spec.source, variant.of if variant else "", spec.mode, spec.fanout_distribution)
            route = groups.get(key) if variant is not None else None
            if route is None:
                route = Route([spec.target], [index[spec.target]], [spec.fanout],
                              spec.fanout_distribution, spec.mode)  # fmt: skip
                if variant is not None:
                    groups[key] = route
                bucket = self.parallel if spec.mode == "parallel" else self.sequential
                bucket[index[spec.source]].append(route)
            else:
                route.names.append(spec.target)
                route.targets.append(index[spec.target])
                route.fanouts[0].append(spec.fanout)
                route.total += spec.fanout
            self._of[(spec.source, spec.target)] = route

    def move(self, source: str, target: str, fanout: float, at_s: float) -> None:
        """The edge `source -> target` has fan-out `fanout` from `at_s` on."""
        self._of[(source, target)].move(target, fanout, at_s)
