"""The policy contract.

A policy sees the whole pipeline at once (`TickContext`) and returns one `Proposal` per
component it has an opinion on. It keeps whatever state it needs as attributes of its own object
(each engine builds its own policy instances), takes time only from `ctx.now_s`, and never does
I/O. Bounds, rate limits and other constraints are applied by the engine afterwards, so a policy
stays a small piece of arithmetic.

Most reactive policies decide each component alone: subclass `PerComponentPolicy` and implement
`propose_component`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from elastiscale.decision import Proposal
from elastiscale.history import MetricHistory
from elastiscale.observations import Observation, ReplicaState
from elastiscale.pipeline import Pipeline
from elastiscale.slotinit import slot_init

if TYPE_CHECKING:
    from elastiscale.config import Config


@slot_init
@dataclass(frozen=True, slots=True)
class TickContext:
    """Everything a policy may look at in one tick."""

    now_s: float
    config: Config
    pipeline: Pipeline
    observations: Mapping[str, Observation]
    replicas: Mapping[str, ReplicaState]
    history: MetricHistory
    interval_s: float
    #: Start-up times measured exactly by the platform since the last tick, per component
    #: (an actuator's optional `startups`); a component absent here has no such measurement.
    startups_s: Mapping[str, Sequence[float]] = field(default_factory=dict)
    #: False when this tick's decisions will not be acted on (a dry run, a standby replica):
    #: a policy then changes no state shared with other processes (a GPU pool's grants).
    acting: bool = True

    def load(self, component: str) -> float | None:
        """The component's observed demand in its capacity unit (requests/s or tokens/s)."""
        obs = self.observations[component]
        unit = self.pipeline.components[component].capacity_unit
        return obs.demand_rps if unit == "requests" else obs.tokens_per_s

    def load_signal(self, component: str) -> str:
        unit = self.pipeline.components[component].capacity_unit
        return "demand_rps" if unit == "requests" else "tokens_per_s"

    def lead_time_s(self, component: str) -> float:
        """How far ahead a decision for `component` must look: startup + one control interval +
        the actuation delay."""
        comp = self.pipeline.components[component]
        return comp.startup_s + self.interval_s + self.config.control.actuation_delay_s


class ParamsModel(BaseModel):
    """Base of the policies' `Params` models: unknown keys are errors, instances immutable; a
    field with other accepted spellings (`elastiscale.spellings`) is also set by its name."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


@runtime_checkable
class Policy(Protocol):
    """Proposes replica counts for the components of a pipeline."""

    name: str

    def propose(self, ctx: TickContext) -> Mapping[str, Proposal]: ...


class PerComponentPolicy:
    """A policy that decides each component on its own signals.

    Subclasses implement `propose_component`; per-component state lives in dictionaries keyed
    by component name on the subclass.
    """

    name = "per-component"

    def propose(self, ctx: TickContext) -> dict[str, Proposal]:
        propose_component = self.propose_component
        return {name: propose_component(ctx, name) for name in ctx.pipeline.order}

    def propose_component(self, ctx: TickContext, component: str) -> Proposal:
        raise NotImplementedError
