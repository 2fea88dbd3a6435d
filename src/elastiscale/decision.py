"""Proposals, clamps and decision records: the reasons behind every replica count.

The same `DecisionRecord` feeds logs, the daemon's `/decisions` and metrics, and backtest reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from elastiscale.observations import Observation
from elastiscale.slotinit import slot_init

Detail = float | int | str | bool | None


@slot_init
@dataclass(frozen=True, slots=True)
class Proposal:
    """One policy's proposal for one component: a replica count, or None and the reason why not."""

    policy: str
    replicas: int | None
    reason: str
    details: Mapping[str, Detail] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return self.replicas is not None

    @classmethod
    def none(cls, policy: str, reason: str, **details: Detail) -> Proposal:
        return cls(policy=policy, replicas=None, reason=reason, details=details)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "policy": self.policy,
            "replicas": self.replicas,
            "reason": self.reason,
        }
        if self.details:
            out["details"] = dict(self.details)
        return out


@dataclass(frozen=True, slots=True)
class Clamp:
    """A constraint that changed the count: from `before` to `after`, and why."""

    constraint: str
    before: int
    after: int
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {
            "constraint": self.constraint,
            "before": self.before,
            "after": self.after,
            "reason": self.reason,
        }


@slot_init
@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """Everything one tick decided for one component, and why.

    `outcome` is one of: "unchanged", "scaled", "dry-run", "held: <why>", "failed: <kind>".
    """

    at_s: float
    component: str
    observation: Observation
    current_replicas: int
    proposals: tuple[Proposal, ...]
    combined_replicas: int | None
    clamps: tuple[Clamp, ...]
    desired_replicas: int
    outcome: str
    #: A component several pipelines of a fleet unit call: the calls per second each sends
    #: it (None when that pipeline's ingress rate is missing; `elastiscale.demand_shares`).
    demand_by_pipeline: Mapping[str, float | None] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return self.desired_replicas != self.current_replicas

    def to_dict(self) -> dict[str, object]:
        return {
            "at_s": self.at_s,
            "component": self.component,
            "current_replicas": self.current_replicas,
            "combined_replicas": self.combined_replicas,
            "desired_replicas": self.desired_replicas,
            "outcome": self.outcome,
            "observation": self.observation.to_dict(),
            "proposals": [p.to_dict() for p in self.proposals],
            "clamps": [c.to_dict() for c in self.clamps],
            **self._shares(),
        }

    def _shares(self) -> dict[str, object]:
        if not self.demand_by_pipeline:
            return {}
        out: dict[str, object] = {"demand_by_pipeline": dict(self.demand_by_pipeline)}
        share = fractions(self.demand_by_pipeline)
        if share is not None:
            out["demand_share"] = share
        return out


def fractions(shares: Mapping[str, float | None]) -> dict[str, float] | None:
    """Each pipeline's fraction of a shared component's demand, or None when a share is
    missing (the others' fractions would overstate them) or the total is zero."""
    values = list(shares.values())
    if any(v is None for v in values):
        return None
    total = sum(v for v in values if v is not None)
    if total <= 0:
        return None
    return {m: v / total for m, v in shares.items() if v is not None}
