"""Each pipeline's share of a shared component's demand, for its decision record.

In a merged fleet unit (`pipeline.members`), a shared component's demand is the sum of what
each member pipeline sends it: the member's observed ingress rate times the calls one of its
requests makes to the component (the configured fan-outs along its paths, `Pipeline
.propagate`). Worked example: rag-qa at 20 requests/s with one embedder call each and
support-agent at 5 requests/s with 4 each: the embedder's 40 calls/s are rag-qa 20 (50 %)
and support-agent 20 (50 %).

A member whose ingress rate is missing has no share (None, never zero), and the fractions
are then not given: they would not say what the missing member sends.
"""

from __future__ import annotations

from collections.abc import Mapping

from elastiscale.config import Config
from elastiscale.decision import fractions
from elastiscale.observations import Observation
from elastiscale.pipeline import Pipeline

__all__ = ["DemandShares", "fractions"]


class DemandShares:
    """Per shared component, the calls per second each member pipeline sends it."""

    def __init__(self, config: Config) -> None:
        spec = config.pipeline
        pipeline = Pipeline(spec)
        callers: dict[str, list[str]] = {}
        for member, m in spec.members.items():
            for name in m.components:
                callers.setdefault(name, []).append(member)
        #: shared component -> member -> [(ingress, calls per ingress request)]
        self._gains: dict[str, dict[str, list[tuple[str, float]]]] = {}
        unit = {i: pipeline.propagate({i: 1.0}) for i in pipeline.ingress}
        for name, members in callers.items():
            if len(members) < 2:
                continue
            self._gains[name] = {
                member: [
                    (i, unit[i][name])
                    for i in spec.members[member].components
                    if i in unit and unit[i][name] > 0
                ]
                for member in members
            }

    @property
    def shared(self) -> tuple[str, ...]:
        """The components at least two members call."""
        return tuple(self._gains)

    def of(self, observations: Mapping[str, Observation]) -> dict[str, dict[str, float | None]]:
        """component -> member -> calls per second it sends (None when its ingress rate is
        missing)."""
        out: dict[str, dict[str, float | None]] = {}
        for name, by_member in self._gains.items():
            shares: dict[str, float | None] = {}
            for member, gains in by_member.items():
                total: float | None = 0.0
                for ingress, calls in gains:
                    obs = observations.get(ingress)
                    rate = obs.demand_rps if obs is not None else None
                    if rate is None or total is None:
                        total = None
                    else:
                        total += rate * calls
                shares[member] = total
            out[name] = shares
        return out
