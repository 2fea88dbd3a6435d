"""The shapes shared by the simulators, the runner and the report.

A simulator advances a pipeline under an ingress trace in fixed steps of `step_s` seconds. The
runner alternates `advance_to(t)` with `Engine.step(t)`; the engine's actuator calls
`set_desired`, and its metric source reads `series` (never past `now_s`). At the end `result()`
gives what scoring needs: end-to-end latency of every ingress request (or of groups of requests
with equal latency, as weights), drops, and per-component series.

Arrays in `ComponentSeries` are indexed by simulation step; entry i covers the interval
(t_s[i] - step_s, t_s[i]].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from elastiscale.observations import ReplicaState

Array = npt.NDArray[np.float64]


@dataclass
class ComponentSeries:
    """Per-step series of one component, up to the simulator's current step."""

    t_s: Array  # end of each step, seconds
    arrivals: Array  # requests arrived during the step
    work_arrivals: Array  # work arrived in the capacity unit (requests or tokens)
    completions: Array  # requests completed during the step
    dropped: Array  # requests dropped (queue timeout) during the step
    queue: Array  # requests waiting at the end of the step
    in_flight: Array  # requests being served at the end of the step
    ready: Array  # ready replicas during the step
    starting: Array  # replicas requested but not yet ready (billed) during the step
    desired: Array  # desired replicas at the end of the step
    utilization: Array  # busy fraction of ready capacity during the step, 0..1
    latency_p95_s: Array  # p95 latency at this component of requests completing (NaN if none)


@dataclass
class SimulationResult:
    """Everything a simulation produced, for scoring and plots."""

    step_s: float
    latency_s: Array  # end-to-end latency of completed ingress requests (or groups)
    weight: Array  # requests each entry of `latency_s` stands for
    completed_at_s: Array  # when each entry of `latency_s` completed (for latency-over-time plots)
    dropped_requests: float  # ingress requests dropped anywhere along their path
    components: dict[str, ComponentSeries] = field(default_factory=dict)

    def replica_seconds(self, component: str) -> float:
        """Billed replica-seconds: ready plus starting replicas, integrated over time."""
        series = self.components[component]
        return float(np.sum(series.ready + series.starting) * self.step_s)


class Simulator(Protocol):
    """A pipeline simulation advanced by a runner. Fidelities: "fast" and "discrete-event"."""

    step_s: float

    @property
    def now_s(self) -> float: ...

    def advance_to(self, t_s: float) -> None:
        """Simulate up to `t_s` (a multiple of `step_s` after the start)."""
        ...

    def set_desired(self, component: str, replicas: int) -> None:
        """Ask for `replicas` at `now_s`: new replicas are ready after the component's
        `startup_s` (billed from now); removed replicas stop taking work at once and drain."""
        ...

    def state(self, component: str) -> ReplicaState: ...

    def series(self, component: str) -> ComponentSeries: ...

    def result(self) -> SimulationResult: ...
