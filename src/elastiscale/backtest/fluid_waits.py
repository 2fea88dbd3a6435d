"""Callers that wait, in the fluid model: calls awaiting their downstream calls (`backtest.fluid`).

A component whose calls wait for their calls on an edge (`caller_waits`: a Ray Serve
deployment awaiting a `DeploymentHandle`) keeps each such call in flight while it waits, and
Serve counts it as ongoing. The discrete-event model counts those calls one by one; the fluid
cannot tell which unit of work belongs to which caller, so it counts them by where the work
is. After each step, in reverse topological order:

    ongoing(Y)   = in service at Y (the step's mean) + queued at Y (end of step)
                   + awaiting(Y)
    share(e)     = calls that arrived on edge e into Y / all calls that arrived at Y, each
                   summed with a decay of exp(-step / Y's mean hold) per step (the calls at Y
                   now came in over about one hold)
    held(e)      = share(e) x ongoing(Y)
    awaiting(X)  = the sum of held(e) over X's sequential waited-for edges (one call at a time
                   per caller) + the largest held(e) / E[N | N >= 1] over its parallel ones
                   (a caller's parallel calls run together; it waits for the slowest, which
                   counts it once for about its mean number of calls)

A sequential edge's next call comes back to its component a step after the previous one
completes (`fluid.py`); that step is the fluid's own delay, not a wait of the caller's (in the
discrete-event model the next call starts at once), so it is not counted.

A handed-over edge (`via`: the calls are made by the request's last call to V) also counts
at V: P(the caller made a call to V) x held(e), added to what V reports but not to what V's
own callers attribute to V, which already count the edge themselves.

Worked numbers (tests/test_sim_waits.py): a planner whose calls each make one tools call
(sequential, waited for) and a tools component with 3 calls in service and 1 queued: the
planner awaits 4 calls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from elastiscale.backtest.model import first_call_probability
from elastiscale.config import EdgeConfig


@dataclass
class WaitedEdge:
    """One edge whose caller waits: components by topological index, and its flow's sum."""

    source: int
    target: int
    slot: int  # the edge's slot in the step's first-call flows
    cls: int  # the target's re-entry class of a sequential edge, or -1
    via: int = -1  # the component the calls are handed over to, or -1
    via_share: float = 0.0  # P(the caller made at least one call to `via`)
    per_caller: float = 1.0  # calls at once per waiting caller: E[N | N >= 1] if parallel
    parallel: bool = False
    flow: float = 0.0

    @classmethod
    def of(
        cls,
        spec: EdgeConfig,
        ends: tuple[int, int],
        slot: int,
        reentry: int,
        via: tuple[int, EdgeConfig] | None,
    ) -> WaitedEdge:
        """The edge `spec` from `ends[0]` to `ends[1]`; `via`: the index of the hand-over's
        component and the caller's edge to it."""
        first = first_call_probability(spec.fanout, spec.fanout_distribution)
        parallel = spec.mode == "parallel"
        out = cls(ends[0], ends[1], slot, reentry, parallel=parallel)
        if parallel and first > 0:
            out.per_caller = spec.fanout / first
        if via is not None:
            out.via = via[0]
            out.via_share = first_call_probability(via[1].fanout, via[1].fanout_distribution)
        return out


class CallerWaits:
    """Calls awaiting their downstream calls, per component, after each fluid step."""

    def __init__(
        self, edges: Sequence[WaitedEdge], mean_hold_s: Sequence[float], step_s: float
    ) -> None:
        n = len(mean_hold_s)
        self._n = n
        # Reverse topological order of targets: a target's own awaiting is complete (every
        # edge out of it has a later target) before an edge into it is counted.
        self.edges = sorted(edges, key=lambda e: -e.target)
        self._decay = [math.exp(-step_s / max(step_s, h)) for h in mean_hold_s]
        self._arrived = [0.0] * n

    def awaiting(
        self,
        arrived: Sequence[float],
        first_calls: Sequence[float],
        class_calls: Sequence[Sequence[float]],
        in_service: Sequence[float],
        queued: Sequence[float],
    ) -> list[float]:
        """Calls awaiting their downstream calls at each component at the end of this step,
        from the calls that arrived at each component in it (`arrived`), the first calls on
        each edge slot (`first_calls`), the calls of each re-entry class (`class_calls`: first
        and next calls), the mean calls in service and the queue at the end."""
        total = self._arrived
        decay = self._decay
        for i in range(self._n):
            total[i] = total[i] * decay[i] + arrived[i]
        own = [0.0] * self._n
        widest = [0.0] * self._n
        handed: list[tuple[int, float]] = []
        for e in self.edges:
            got = class_calls[e.target][e.cls] if e.cls >= 0 else first_calls[e.slot]
            e.flow = e.flow * decay[e.target] + got
            y = e.target
            share = e.flow / total[y] if total[y] > 0 else 0.0
            ongoing = in_service[y] + queued[y] + own[y] + widest[y]
            held = share * ongoing
            if e.parallel:
                widest[e.source] = max(widest[e.source], held / e.per_caller)
            else:
                own[e.source] += held
            if e.via >= 0:
                handed.append((e.via, e.via_share * held))
        out = [own[i] + widest[i] for i in range(self._n)]
        for via, held in handed:
            out[via] += held
        return out
