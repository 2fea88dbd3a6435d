"""The state of one component in the fluid model (`backtest.fluid`).

`ReplicaBook` integrates a component's replica counts over time exactly (readiness after the
start-up time, draining after a scale-down), for billing and for the capacity of each step.
`FluidComponent` is one component's static description (its `ServiceModel`, out-edges,
re-entry classes of sequential calls) and mutable state (queue of cohorts, per-arrival-step
records (`backtest.fluid_records`), step log). `noisy_count` and `reentry_spread` give flows
of calls the spread that random fan-out counts give them.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from typing import Any

from elastiscale.backtest.fluid_records import ArrivalRecords
from elastiscale.backtest.model import ServiceModel, fanout_variance
from elastiscale.backtest.simbase import ComponentFrame


class ReplicaBook:
    """Replica counts of one component over time, integrated exactly for billing and capacity.

    `starting` holds the ready times of requested replicas (non-decreasing, as commands come in
    time order and the startup time is fixed); `draining` holds the times draining replicas
    finish. `acc_*` accumulate replica-seconds since the start of the current step.
    """

    __slots__ = (
        "acc_draining",
        "acc_ready",
        "acc_starting",
        "acc_t",
        "draining",
        "ready",
        "starting",
        "startup_s",
        "touched",
    )

    def __init__(self, ready: int, startup_s: float, t0_s: float) -> None:
        self.ready = ready
        self.startup_s = startup_s
        self.starting: deque[float] = deque()
        self.draining: deque[float] = deque()
        self.acc_t = t0_s
        self.acc_ready = 0.0
        self.acc_starting = 0.0
        self.acc_draining = 0.0
        self.touched = False  # a command came since the start of the current step

    def integrate_to(self, t_s: float) -> None:
        """Apply every readiness and drain-end event up to `t_s`, accumulating replica-seconds."""
        starting, draining = self.starting, self.draining
        if not starting and not draining:  # no event: the accumulation below, for 0 of each
            span = t_s - self.acc_t
            if span > 0:
                self.acc_ready += self.ready * span
                self.acc_starting += 0 * span
                self.acc_draining += 0 * span
                self.acc_t = t_s
            return
        while True:
            nxt = math.inf
            if starting:
                nxt = starting[0]
            if draining and draining[0] < nxt:
                nxt = draining[0]
            if nxt > t_s:
                break
            span = nxt - self.acc_t
            if span > 0:
                self.acc_ready += self.ready * span
                self.acc_starting += len(starting) * span
                self.acc_draining += len(draining) * span
                self.acc_t = nxt
            if starting and starting[0] == nxt:
                starting.popleft()
                self.ready += 1
            else:
                draining.popleft()
        span = t_s - self.acc_t
        if span > 0:
            self.acc_ready += self.ready * span
            self.acc_starting += len(starting) * span
            self.acc_draining += len(draining) * span
            self.acc_t = t_s

    def close_step(self, end_s: float, step_s: float) -> tuple[float, float, float]:
        """Time averages (ready, starting, draining) over the step ending at `end_s`."""
        if not (self.touched or self.starting or self.draining):
            # nothing changed during the step; what a read mid-step integrated is dropped too,
            # or it would be counted again in the next step that changes
            self.acc_t = end_s
            self.acc_ready = self.acc_starting = self.acc_draining = 0.0
            return float(self.ready), 0.0, 0.0
        self.touched = False
        self.integrate_to(end_s)
        out = (self.acc_ready / step_s, self.acc_starting / step_s, self.acc_draining / step_s)
        self.acc_ready = self.acc_starting = self.acc_draining = 0.0
        return out

    @property
    def desired(self) -> int:
        return self.ready + len(self.starting)

    def command(self, now_s: float, replicas: int, drain_s: float) -> None:
        """Ask for `replicas` at `now_s`. Scale-down cancels starting replicas first (the newest
        first, as a ReplicaSet deletes not-ready pods first), then drains ready ones."""
        self.integrate_to(now_s)
        self.touched = True
        desired = self.desired
        if replicas > desired:
            if self.startup_s <= 0:
                self.ready += replicas - desired
            elif self.starting and now_s + self.startup_s < self.starting[-1]:
                # A start-up shortened by a drift scenario: keep the ready times in order.
                for _ in range(replicas - desired):
                    bisect.insort(self.starting, now_s + self.startup_s)
            else:
                self.starting.extend([now_s + self.startup_s] * (replicas - desired))
        elif replicas < desired:
            cut = desired - replicas
            while cut and self.starting:
                self.starting.pop()
                cut -= 1
            if cut:
                self.ready -= cut
                if drain_s > 0:
                    self.draining.extend([now_s + drain_s] * cut)


class FluidComponent(ComponentFrame):
    """Static description and mutable state of one component in the fluid model."""

    __slots__ = (
        "cap",
        "last_util",
        "noise_slot",
        "out_edges",
        "pending_req",
        "pending_tin",
        "pending_tout",
        "queue",
        "records",
        "reenter",
        "reenter_spread",
        "replicas",
    )

    def __init__(
        self,
        index: int,
        model: ServiceModel,
        replicas: int,
        t0_s: float,
        step_s: float,
        n: int,
        logged: int,
    ) -> None:
        """`n`: arrival steps the simulation may record; `logged`: steps its log records."""
        super().__init__(index, model, t0_s, step_s, logged)
        self.cap = model.capacity
        self.replicas = ReplicaBook(replicas, model.startup_s, t0_s)
        # (target, calls per completed request that reach the target now, their variance per
        # completed request, class at target or -1, index of the flow's normal deviate)
        self.out_edges: list[tuple[int, float, float, int, int]] = []
        self.noise_slot = 0  # first deviate of this component's re-entry classes
        # Re-entry probability of each class of calls (sequential incoming edges), and the
        # re-entries waiting for the next step.
        self.reenter: list[float] = []
        self.reenter_spread: list[float] = []  # variance of a re-entry count per re-entry
        self.pending_req: list[float] = []
        self.pending_tin = 0.0
        self.pending_tout = 0.0
        # Cohorts: [lo_s, hi_s, density (work per second of arrival time), arrival step,
        # requests per work, input tokens per request, output tokens per request, started,
        # share of each re-entrant class or None].
        self.queue: deque[list[Any]] = deque()
        # Per arrival step: arrivals, drops, first and last waits, hold (a window of recent
        # steps written in place, the older ones sealed into columns).
        self.records = ArrivalRecords(n)
        self.last_util = 0.0


def noisy_count(z: float, mean: float, variance: float) -> float:
    """A count of calls made by many requests with random fan-out, to the second moment: a
    lognormal with this `mean` and `variance`, driven by the standard normal deviate `z`
    (never negative, and unbiased where clipping a normal at zero would not be)."""
    if variance <= 0 or mean <= 1e-12:
        return mean
    s2 = math.log1p(variance / (mean * mean))
    return mean * math.exp(z * math.sqrt(s2) - 0.5 * s2)


def reentry_spread(mean: float, distribution: str, first: float, reenter: float) -> float:
    """Variance per re-entry that gives a request's sequential calls the variance of the edge's
    own distribution (given at least one call), not that of the geometric stand-in: Bernoulli
    re-entries have variance 1 - r each and a geometric count r / (1 - r)^2. Fixed integer
    fan-outs get none (3 calls are always 3)."""
    conditional_mean = mean / first
    second_moment = (fanout_variance(mean, distribution) + mean * mean) / first
    conditional_variance = max(0.0, second_moment - conditional_mean**2)
    geometric_variance = reenter / (1.0 - reenter) ** 2
    return (1.0 - reenter) * conditional_variance / geometric_variance
