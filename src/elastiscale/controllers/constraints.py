"""Constraints: what a component may have, applied after the policies have proposed.

Each constraint is a small object with `apply` (change a count, say why) and `commit` (learn what
was finally applied). They run in a fixed order for each component:

    missing data -> stabilization -> rate limits -> cooldown -> scheduled bounds -> bounds

so that hard bounds are always the last word (as in the HPA, where min/max clamp after the
behavior rules).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from elastiscale.config import ComponentConfig, ConstraintsConfig, MissingDataRules
from elastiscale.decision import Clamp
from elastiscale.observations import Observation


@dataclass(frozen=True, slots=True)
class ConstraintInput:
    """What a constraint knows about one component in one tick."""

    component: str
    now_s: float
    current: int  # desired replicas before this tick
    ready: int
    observation: Observation
    data_ok: bool  # the component's load signal is present and fresh


class Constraint(Protocol):
    name: str

    def apply(self, inp: ConstraintInput, replicas: int) -> tuple[int, str]:
        """Return the constrained count and, when it differs from `replicas`, the reason."""
        ...

    def commit(self, component: str, now_s: float, before: int, after: int) -> None:
        """Record that the count changed from `before` to `after` at `now_s` (or stayed)."""
        ...


class Bounds:
    """The component's hard replica bounds (`replicas.min`, `replicas.max`)."""

    name = "bounds"

    def __init__(self, min_replicas: int, max_replicas: int) -> None:
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas

    def apply(self, inp: ConstraintInput, replicas: int) -> tuple[int, str]:
        if replicas > self.max_replicas:
            return self.max_replicas, f"max = {self.max_replicas}"
        if replicas < self.min_replicas:
            return self.min_replicas, f"min = {self.min_replicas}"
        return replicas, ""

    def commit(self, component: str, now_s: float, before: int, after: int) -> None:
        return None


class MissingData:
    """Missing or stale metrics never cause a scale-down.

    While data is missing the count is held at least at the current one; after
    `fallback_after` consecutive ticks without usable data the configured fallback applies.
    """

    name = "missing_data"

    def __init__(self, rules: MissingDataRules) -> None:
        self.rules = rules
        self._failures = 0

    def apply(self, inp: ConstraintInput, replicas: int) -> tuple[int, str]:
        if inp.data_ok:
            self._failures = 0
            return replicas, ""
        self._failures += 1
        why = inp.observation.why_missing("demand_rps")
        if self._failures >= self.rules.fallback_after and self.rules.fallback != "hold":
            fallback = self.rules.fallback_replicas or 0
            target = fallback if self.rules.fallback == "static" else max(inp.current, fallback)
            return target, (
                f"fallback {self.rules.fallback} after {self._failures} ticks without data ({why})"
            )
        if replicas < inp.current:
            return inp.current, f"no scale-down on missing data ({why})"
        return replicas, ""

    def commit(self, component: str, now_s: float, before: int, after: int) -> None:
        return None


class ComponentConstraints:
    """The ordered chain of constraints of one component."""

    def __init__(self, chain: list[Constraint]) -> None:
        self.chain = chain

    def apply(self, inp: ConstraintInput, proposed: int) -> tuple[int, list[Clamp]]:
        clamps: list[Clamp] = []
        replicas = proposed
        for constraint in self.chain:
            after, reason = constraint.apply(inp, replicas)
            if after != replicas:
                clamps.append(Clamp(constraint.name, replicas, after, reason))
                replicas = after
        return replicas, clamps

    def commit(self, component: str, now_s: float, before: int, after: int) -> None:
        for constraint in self.chain:
            constraint.commit(component, now_s, before, after)


def build_constraints(component: ComponentConfig, rules: ConstraintsConfig) -> ComponentConstraints:
    """The constraint chain for one component from its config and its effective constraints."""
    chain: list[Constraint] = [
        MissingData(rules.missing_data),
        Bounds(component.replicas.min, component.replicas.max),
    ]
    return ComponentConstraints(chain)
