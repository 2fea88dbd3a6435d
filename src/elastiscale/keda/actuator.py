"""The actuator of KEDA mode: KEDA's HPA sets the replicas, elastiscale only publishes them.

`scale` records the count on the board (KEDA reads it at its next poll) and changes nothing on
the platform. `read` asks the configured `actuator:` (read only: its `scale` is never called),
so the engine sees what KEDA actually landed on; without one, the counts published so far
(starting from each component's `replicas.initial`, else `min`) stand for the platform's.
The daemon's `JournaledActuator` wraps this one, so every decision is journaled as usual.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from elastiscale.adapters.base import ActuationResult, Actuator
from elastiscale.adapters.memory import table_states
from elastiscale.keda.board import DesiredReplicas
from elastiscale.observations import ReplicaState


class KedaActuator:
    """Publishes decisions to `board`; reads replica counts from `inner` when there is one."""

    def __init__(
        self, board: DesiredReplicas, inner: Actuator | None, initial: Mapping[str, int]
    ) -> None:
        self.board = board
        self.inner = inner
        self._table = dict(initial)

    def read(self, components: Sequence[str]) -> Mapping[str, ReplicaState]:
        if self.inner is not None:
            return self.inner.read(components)
        return table_states(self._table, components)

    def scale(self, component: str, replicas: int) -> ActuationResult:
        self._table[component] = replicas
        self.board.publish({component: replicas})
        return ActuationResult.success(component, replicas)
