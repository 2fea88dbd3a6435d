"""The reference fidelity: a per-request discrete-event simulation of the pipeline.

Every ingress request and every call it makes is simulated. A component is a pool of replicas
with `ServiceModel.slots` slots each behind one first-come-first-served queue (a load balancer
that sends each request to the least busy ready replica); a call holds a slot for
`hold_per_work_s` x its work; a call still queued `timeout_s` after it arrived is dropped and so
is its ingress request. When a call's own service ends it makes its downstream calls: every
parallel call at once, then, once they have all finished, the sequential calls one after another;
the call is complete when the last of them is. Fan-out counts are drawn per call from the edge's
distribution.

A caller that waits (an edge's `caller_waits`: a Ray Serve deployment awaiting a
`DeploymentHandle`) keeps its call in flight at its component from the end of its hold while
any of its calls on such edges is outstanding; a handed-over edge (`via`) keeps the request's
last call to `via` in flight too while the calls run. So a component's in-flight count is its
calls in service plus those awaiting their downstream calls, what Serve counts as ongoing.

Replicas: a scale-up creates replicas that are ready `startup_s` later (billed from the request);
a scale-down first cancels starting replicas (newest first), then drains the least busy ready
ones: a draining replica takes no new call and is billed until its last call finishes.

Arrivals: the trace's count in each step (fractional counts carried over to the next step, so
totals are exact) at uniformly random times within the step, i.e. a Poisson process given the
count. Each request carries its bin's mean input and output tokens.
"""

from __future__ import annotations

import heapq
import math
import random
from array import array
from collections.abc import Mapping
from typing import Any

import numpy as np

from elastiscale.backtest.des_state import Call, Replica, Request, Station, draw_count
from elastiscale.backtest.model import (
    ComponentSeries,
    ServiceModel,
    SimulationResult,
    work_per_request,
)
from elastiscale.backtest.routes import Routes
from elastiscale.backtest.simbase import SimulatorFrame
from elastiscale.config import Config
from elastiscale.observations import ReplicaState
from elastiscale.trace import Trace

_EPS = 1e-9
_DONE, _READY, _ARRIVE = 0, 1, 2


class DiscreteEventSimulator(SimulatorFrame):
    """The per-request reference fidelity. Implements `backtest.model.Simulator`."""

    fidelity = "discrete-event"

    def __init__(
        self,
        config: Config,
        trace: Trace,
        initial_replicas: Mapping[str, int],
        *,
        step_s: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(config, trace, step_s)
        self._rng = random.Random(seed)
        self._stations = [
            Station(i, self.models[name], start, self.start_s, self.step_s)
            for i, (name, start) in enumerate(
                zip(self.pipeline.order, self.initial_counts(initial_replicas), strict=True)
            )
        ]
        self._parts = self._stations
        self._routes = Routes(config, self._index)
        for st in self._stations:
            for route in self._routes.parallel[st.index]:
                st.parallel.append((route, [self._stations[k] for k in route.targets]))
            for route in self._routes.sequential[st.index]:
                st.sequential.append((route, [self._stations[k] for k in route.targets]))
        for edge, spec in zip(self.pipeline.edges, config.pipeline.edges, strict=True):
            src = self._stations[self._index[edge.source]]
            dst = self._stations[self._index[edge.target]]
            if spec.caller_waits:
                via = None if spec.via is None else self._stations[self._index[spec.via]]
                src.waits[dst] = via
                if via is not None:
                    src.vias.add(via)
        self._ingress = [self._stations[self._index[n]] for n in self.pipeline.ingress]
        self._req, tin, tout = self.arrivals(trace)
        zeros = array("d", [0.0]) * self.n_steps
        self._tin = tin if tin is not None else zeros
        self._tout = tout if tout is not None else zeros
        self._carry = [0.0] * len(self._ingress)
        self._heap: list[tuple[float, int, int, Any, Any]] = []
        self._seq = 0
        self._step = 0  # closed steps
        self._opened = -1  # the step whose arrivals have been generated
        self._finished = False
        self.events = 0
        self._latency: list[float] = []
        self._done_at: list[float] = []
        self._dropped_requests = 0
        self._ingress_requests = 0
        self._origin: list[int] = []
        self._dropped_by_origin = [0.0] * len(self._ingress)

    # ---------------------------------------------------------------------------------------
    # Simulator protocol

    def advance_to(self, t_s: float) -> None:
        self.check_advance(t_s)
        while self._step < self.n_steps:
            j = self._step
            end_s = self.start_s + (j + 1) * self.step_s
            if self._opened < j:
                self._open_step(j)
            if end_s <= t_s + _EPS:
                self._process_until(end_s)
                self._close_step(end_s)
                self._step += 1
            else:
                self._process_until(t_s)
                break
        self._now_s = max(self._now_s, t_s)

    def set_desired(self, component: str, replicas: int) -> None:
        st = self._stations[self._index[component]]
        now = self._now_s
        st.integrate(now)
        replicas = max(0, int(replicas))
        desired = len(st.active) + len(st.starting)
        if replicas > desired:
            for _ in range(replicas - desired):
                if st.model.startup_s <= 0:
                    st.active.append(Replica(True))
                    st.free += st.slots
                else:
                    rep = Replica(False)
                    st.starting.append(rep)
                    self._push(now + st.model.startup_s, _READY, rep, st)
            self._dispatch(st, now)
            return
        cut = desired - replicas
        while cut and st.starting:
            st.starting.pop().cancelled = True
            cut -= 1
        while cut and st.active:
            rep = min(st.active, key=_busy)
            st.active.remove(rep)
            st.free -= st.slots - rep.busy
            rep.draining = True
            if rep.busy:
                st.draining.append(rep)
            cut -= 1

    def retune(self, model: ServiceModel) -> None:
        st = self._stations[self._index[model.name]]
        st.model = model
        st.hold_per_work = model.hold_per_work_s

    def reroute(self, source: str, target: str, fanout: float) -> None:
        self._routes.move(source, target, fanout, self._now_s)

    def state(self, component: str) -> ReplicaState:
        st = self._stations[self._index[component]]
        return ReplicaState(desired=len(st.active) + len(st.starting), ready=len(st.active))

    def result(self) -> SimulationResult:
        """Run to the end of the trace, let every request finish or time out, and report."""
        self._finish()
        for st in self._stations:
            st.log.freeze()  # the series are views of the logs' columns, not copies
        return SimulationResult(
            step_s=self.step_s,
            latency_s=np.asarray(self._latency, dtype=float),
            weight=np.ones(len(self._latency)),
            completed_at_s=np.asarray(self._done_at, dtype=float),
            dropped_requests=float(self._dropped_requests),
            components={st.name: ComponentSeries.from_steps(st.log) for st in self._stations},
            fidelity=self.fidelity,
            start_s=self.start_s,
            end_s=self.end_s,
            ingress_requests=float(self._ingress_requests),
            origin=np.asarray(self._origin, dtype=np.int64),
            dropped_by_origin=np.asarray(self._dropped_by_origin, dtype=float),
        )

    # ---------------------------------------------------------------------------------------
    # Events

    def _push(self, t_s: float, kind: int, obj: Any, extra: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t_s, self._seq, kind, obj, extra))

    def _open_step(self, j: int) -> None:
        """Generate the ingress arrivals of step j."""
        self._opened = j
        count_f = self._req[j]
        if count_f <= 0:
            return
        a = self.start_s + j * self.step_s
        tin, tout = self._tin[j] / count_f, self._tout[j] / count_f
        rng = self._rng
        for k, station in enumerate(self._ingress):
            carry = self._carry[k] + count_f
            count = math.floor(carry + 1e-9)
            self._carry[k] = carry - count
            for _ in range(count):
                t_s = a + rng.random() * self.step_s
                self._push(t_s, _ARRIVE, Request(t_s, tin, tout, k), station)
            self._ingress_requests += count

    def _process_until(self, t_s: float) -> None:
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][0] <= t_s:
            now, _, kind, obj, extra = pop(heap)
            self.events += 1
            if kind == _DONE:
                self._on_done(obj, extra, now)
            elif kind == _ARRIVE:
                self._arrive(Call(obj, extra, None, now), now)
            else:
                self._on_ready(obj, extra, now)

    def _arrive(self, call: Call, now: float) -> None:
        st = call.station
        st.n_arrivals += 1
        req = call.request
        st.tokens += req.tin + req.tout
        st.work += work_per_request(st.unit, req.tin, req.tout) if st.unit != "requests" else 1.0
        if st.free > 0 and not st.queue:
            self._start(st, call, now)
        else:
            st.queue.append(call)
            if st.free > 0:
                self._dispatch(st, now)

    def _start(self, st: Station, call: Call, now: float) -> None:
        rep = min(st.active, key=_busy)
        st.integrate(now)
        rep.busy += 1
        st.busy += 1
        st.free -= 1
        req = call.request
        work = work_per_request(st.unit, req.tin, req.tout) if st.unit != "requests" else 1.0
        self._push(now + st.hold_per_work * work, _DONE, call, rep)

    def _dispatch(self, st: Station, now: float) -> None:
        """Start queued calls while there are free slots; calls past the timeout are dropped."""
        queue = st.queue
        while queue and st.free > 0:
            call = queue.popleft()
            if now - call.arrival_s > st.timeout:
                self._drop(st, call)
                continue
            self._start(st, call, now)

    def _drop(self, st: Station, call: Call) -> None:
        st.dropped += 1
        request = call.request
        if not request.dropped:
            request.dropped = True
            self._dropped_requests += 1
            self._dropped_by_origin[request.origin] += 1
            request.release_all()

    def _on_ready(self, rep: Replica, st: Station, now: float) -> None:
        if rep.cancelled:
            return
        st.integrate(now)
        st.starting.remove(rep)
        rep.ready = True
        st.active.append(rep)
        st.free += st.slots
        self._dispatch(st, now)

    def _on_done(self, call: Call, rep: Replica, now: float) -> None:
        st = call.station
        st.integrate(now)
        rep.busy -= 1
        st.busy -= 1
        st.completions += 1
        st.latencies.append(now - call.arrival_s)
        if rep.draining:
            if rep.busy == 0 and rep in st.draining:
                st.draining.remove(rep)
        else:
            st.free += 1
            if st.queue:
                self._dispatch(st, now)
        if call.request.dropped:
            return
        rng = self._rng
        waits = st.waits
        for route, targets in st.parallel:
            for _ in range(draw_count(rng, route.total, route.distribution)):
                target = targets[route.pick(rng.random())] if route.split else targets[0]
                call.pending += 1
                if waits:
                    self._call(call, target, now)
                else:
                    self._arrive(Call(call.request, target, call, now), now)
        for route, targets in st.sequential:
            count = draw_count(rng, route.total, route.distribution)
            if route.split:  # each call to one variant (`backtest.routes`)
                call.sequence.extend(targets[route.pick(rng.random())] for _ in range(count))
            else:
                call.sequence.extend([targets[0]] * count)
        if call.sequence:
            call.sequence.reverse()
        if call.pending == 0:
            self._continue(call, now)

    def _call(self, call: Call, target: Station, now: float) -> None:
        """Make one call of `call` to `target` when `call`'s component waits for some of its
        calls: count `call` (and a handed-over call's maker) as awaiting downstream."""
        child = Call(call.request, target, call, now)
        waits = call.station.waits
        vias = call.station.vias
        if target in vias:
            if call.made is None:
                call.made = set()
            call.made.add(target)
        if target in waits:
            child.waited = True
            if call.open == 0:
                call.request.hold(call.station)
            call.open += 1
            via = waits[target]
            # Handed over: the request's last call to `via` makes it, unless there was none
            # (the sequence is popped from its end, so the calls still to come are left).
            if via is not None and call.made is not None and via in call.made:
                child.via_at = via
                call.request.hold(via)
        self._arrive(child, now)

    def _continue(self, call: Call, now: float) -> None:
        """The call's parallel calls are done: make its next sequential call, or complete."""
        while True:
            if call.request.dropped:
                return
            if call.sequence:
                target = call.sequence.pop()
                call.pending = 1
                if call.station.waits:
                    self._call(call, target, now)
                else:
                    self._arrive(Call(call.request, target, call, now), now)
                return
            parent = call.parent
            if parent is None:
                self._latency.append(now - call.request.arrival_s)
                self._done_at.append(now)
                self._origin.append(call.request.origin)
                return
            if call.waited:
                if call.via_at is not None:
                    call.request.release(call.via_at)
                parent.open -= 1
                if parent.open == 0:
                    call.request.release(parent.station)
            parent.pending -= 1
            if parent.pending > 0:
                return
            call = parent

    # ---------------------------------------------------------------------------------------
    # Steps

    def _close_step(self, end_s: float) -> None:
        dt = self.step_s
        for st in self._stations:
            # Calls that waited past the timeout leave the queue by the end of the step.
            queue = st.queue
            while queue and end_s - queue[0].arrival_s > st.timeout:
                self._drop(st, queue.popleft())
            st.integrate(end_s)
            latencies = st.latencies
            if latencies:
                latencies.sort()
                p95 = latencies[max(0, math.ceil(0.95 * len(latencies)) - 1)]
            else:
                p95 = math.nan
            st.log.append(
                float(st.n_arrivals), st.work, st.tokens, float(st.completions), float(st.dropped),
                float(len(queue)), float(st.busy + st.awaiting), st.acc_ready / dt,
                st.acc_starting / dt,
                st.acc_draining / dt, float(len(st.active) + len(st.starting)),
                float(len(st.active)), st.acc_busy, st.acc_ready * st.slots, p95,
            )  # fmt: skip
            st.acc_ready = st.acc_starting = st.acc_draining = st.acc_busy = 0.0
            st.n_arrivals = st.completions = st.dropped = 0
            st.work = st.tokens = 0.0
            st.latencies = []

    def _finish(self) -> None:
        """Close every step, then run without arrivals until all calls finish or time out."""
        if self._finished:
            return
        self.advance_to(self.end_s)
        self._process_until(math.inf)
        for st in self._stations:
            while st.queue:  # nothing left to serve them before their timeout
                self._drop(st, st.queue.popleft())
        self._finished = True


def _busy(rep: Replica) -> int:
    return rep.busy
