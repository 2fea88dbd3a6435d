"""The fast fidelity: a fluid model of the pipeline, advanced in fixed steps.

Work is a continuous flow. In each step every component (in topological order) receives its
arrivals (the trace at ingress components; elsewhere upstream completions times the calls per
completion, with the spread that random fan-out counts give them), serves them first come first
served at its ready capacity, and passes its completions downstream in the same step. A
sequential edge's later calls come back to their component only as earlier ones complete. Inside
a step the model is exact for a fluid: arrivals of a step are spread evenly over it, the server
drains the queue at `ready x capacity` work per second, and a unit of work still waiting
`timeout_s` after it arrived leaves the queue (reneging) and is dropped. Each step's arrivals
form a cohort whose first and last served units' waits are recorded; end-to-end latency is
sampled from those records in `result()` (`backtest.fluid_latency`). docs/simulator.md has the
model, its assumptions, and worked numbers.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping

import numpy as np

from elastiscale.backtest import stepcolumn
from elastiscale.backtest.fluid_component import FluidComponent, noisy_count, reentry_spread
from elastiscale.backtest.fluid_latency import (
    EndToEndSampler,
    LatencyTable,
    StepLoad,
    queueing_delay,
    table_of,
    wait_quantile,
)
from elastiscale.backtest.fluid_queue import serve
from elastiscale.backtest.fluid_waits import CallerWaits, WaitedEdge
from elastiscale.backtest.model import (
    ComponentSeries,
    ServiceModel,
    SimulationResult,
    fanout_variance,
    first_call_probability,
    work_per_request,
)
from elastiscale.backtest.routes import Routes
from elastiscale.backtest.simbase import SimulatorFrame
from elastiscale.config import Config, EdgeConfig
from elastiscale.observations import ReplicaState
from elastiscale.trace import Trace

_NOISE_BLOCK = 4096  # steps of normal deviates drawn at once
_NO_CLASSES: list[float] = []  # the re-entrant classes' calls of a component without any
_NO_DEVIATES: list[float] = []  # a step's deviates when no flow reads any
# A step's record of one component (`_record`'s arguments after the component).
_Row = tuple[int, float, float, float, float, float, float, float, float, float, float]


class FluidSimulator(SimulatorFrame):
    """The fast fidelity (see the module docstring). Implements `backtest.model.Simulator`."""

    fidelity = "fast"

    def __init__(
        self,
        config: Config,
        trace: Trace,
        initial_replicas: Mapping[str, int],
        *,
        step_s: float | None = None,
        seed: int = 0,
        fanout_noise: bool = True,
    ) -> None:
        super().__init__(config, trace, step_s)
        self.fanout_noise = fanout_noise
        self.seed = seed
        # Normal deviates for the fan-out noise, one per step and noisy flow, drawn in blocks of
        # steps from the seed alone: every policy replayed with the same seed meets the same
        # deviates at the same step (common random numbers), so comparisons are not blurred.
        self._noise_rng = np.random.default_rng([seed, 7])
        self._noise_block = -1
        self._noise_rows: list[list[float]] = []
        depth = self._depths()
        max_timeout = max(m.timeout_s for m in self.models.values())
        # Steps simulated after the trace ends (no arrivals, no engine) so that every request
        # still queued finishes or times out: each hop may wait up to its timeout.
        self._drain_steps = (max(depth.values()) + 1) * (math.ceil(max_timeout / self.step_s) + 2)
        total = self.n_steps + self._drain_steps
        self._comps = [
            FluidComponent(
                i, self.models[name], start, self.start_s, self.step_s, total, self.n_steps
            )
            for i, (name, start) in enumerate(
                zip(self.pipeline.order, self.initial_counts(initial_replicas), strict=True)
            )
        ]
        self._parts = self._comps
        # Each component's state at the last `state` read (immutable, so shared while the
        # counts stay: the engine reads every component at every tick).
        self._states: list[ReplicaState | None] = [None] * len(self._comps)
        slot = 0  # one normal deviate per step for each noisy flow (see `_deviates`)
        waited: list[WaitedEdge] = []
        #: (source, target) -> (source's flow index, the target's re-entry class or -1)
        self._flows: dict[tuple[str, str], tuple[int, int]] = {}
        self._routes = Routes(config, self._index)  # the calls as the latency sampler draws them
        for edge, spec in zip(self.pipeline.edges, config.pipeline.edges, strict=True):
            source = self._comps[self._index[edge.source]]
            target = self._comps[self._index[edge.target]]
            calls, spread, reenter, reenter_spread = self._flow(edge.fanout, spec)
            # A variant's sequential calls keep a re-entry class even at a share of 0: the
            # split may move (`reroute`).
            split = config.pipeline.components[edge.target].variant is not None
            cls = -1
            if edge.mode == "sequential" and (reenter > 1e-12 or split):
                cls = len(target.reenter)
                target.reenter.append(reenter)
                target.reenter_spread.append(reenter_spread)
                target.pending_req.append(0.0)
            self._flows[(edge.source, edge.target)] = (len(source.out_edges), cls)
            if cls < 0:
                source.out_edges.append((target.index, edge.fanout, spread, -1, slot))
            else:
                source.out_edges.append((target.index, calls, spread, cls, slot))
            if spec.caller_waits:
                waited.append(self._waited(spec, source, target, slot, edge.mode))
            slot += 1
        for comp in self._comps:  # each re-entry comes back or not (Bernoulli(reenter))
            comp.noise_slot = slot
            slot += len(comp.reenter)
        self._noise_slots = slot
        # No component with re-entrant classes: every step's class flows are the same empty
        # lists (classes are set up here only; a reroute changes their probabilities).
        self._reentrant = any(c.reenter for c in self._comps)
        self._no_flow_cls = [_NO_CLASSES for _ in self._comps]
        self._noisy = self._any_noise()
        # Callers that wait for their calls (`caller_waits`): None when no edge says so.
        self._waits = (
            CallerWaits(waited, [c.model.mean_hold_s for c in self._comps], self.step_s)
            if waited
            else None
        )
        for comp in self._comps:  # columns `_record` computes from others (steplog.py)
            comp.log.derive(
                capacity_slots=comp.slots,
                work=comp.unit == "requests",
                in_flight=self._waits is None,
            )
        self._ingress = [self._index[n] for n in self.pipeline.ingress]
        self._req, tin, tout = self.arrivals(trace)
        self._has_tokens = tin is not None
        self._tin = tin if tin is not None else array("d")
        self._tout = tout if tout is not None else array("d")
        self._step = 0  # steps simulated so far
        self._seal_at = stepcolumn.CHUNK  # the step at which the arrival records are sealed next
        self._finished = False
        self._tables: list[LatencyTable] | None = None  # built once, at the first `result()`
        self._series: dict[str, ComponentSeries] | None = None  # likewise

    def _waited(
        self, spec: EdgeConfig, source: FluidComponent, target: FluidComponent, slot: int, mode: str
    ) -> WaitedEdge:
        """A waited-for edge: its re-entry class at the target when its calls come back."""
        reentry = (
            len(target.reenter) - 1 if mode == "sequential" and source.out_edges[-1][3] >= 0 else -1
        )
        via = None
        if spec.via is not None:
            to_via = next(
                e
                for e in self.config.pipeline.edges
                if e.source == spec.source and e.target == spec.via
            )
            via = (self._index[spec.via], to_via)
        return WaitedEdge.of(spec, (source.index, target.index), slot, reentry, via)

    def _flow(self, fanout: float, spec: EdgeConfig) -> tuple[float, float, float, float]:
        """(first calls per served call, their variance, re-entry probability, re-entry
        variance) of a sequential edge; a parallel one uses the fan-out and its variance."""
        distribution = spec.fanout_distribution
        first = first_call_probability(fanout, distribution)
        # Sequential calls: the first call now, each next one when the previous completes.
        # The count given at least one call is taken as geometric with the edge's mean,
        # so a completed call comes back with probability r = 1 - P(N >= 1) / mean.
        # Worked numbers: fixed 3.0 -> P(N >= 1) = 1, r = 2/3, 1 / (1 - r) = 3 calls.
        # (a mean so small that P(N >= 1) underflows to 0 makes no calls: no re-entry)
        reenter = 1.0 - first / fanout if fanout > 0 and first > 0 else 0.0
        if spec.mode == "parallel" or reenter <= 1e-12:
            spread = fanout_variance(fanout, distribution) if self.fanout_noise else 0.0
            return first, spread, reenter, 0.0
        # Each completion makes a first call or not (Bernoulli(first)).
        spread = first * (1.0 - first) if self.fanout_noise else 0.0
        back = reentry_spread(fanout, distribution, first, reenter) if self.fanout_noise else 0.0
        return first, spread, reenter, back

    def _depths(self) -> dict[str, int]:
        depth: dict[str, int] = {}
        for name in self.pipeline.order:
            ups = self.pipeline.upstream(name)
            depth[name] = 1 + max((depth[u] for u in ups), default=-1)
        return depth

    # ---------------------------------------------------------------------------------------
    # Simulator protocol

    def advance_to(self, t_s: float) -> None:
        self.check_advance(t_s)
        limit = min(self.n_steps, math.floor((t_s - self.start_s) / self.step_s + 1e-9))
        while self._step < limit:
            self._run_step(self._step, record=True)
            self._step += 1
        self._now_s = max(self._now_s, t_s)

    def set_desired(self, component: str, replicas: int) -> None:
        comp = self._comps[self._index[component]]
        drain_s = comp.model.mean_hold_s if comp.last_util > 0 else 0.0
        comp.replicas.command(self._now_s, max(0, int(replicas)), drain_s)

    def retune(self, model: ServiceModel) -> None:
        comp = self._comps[self._index[model.name]]
        comp.model = model
        comp.cap = model.capacity
        comp.hold_per_work = model.hold_per_work_s
        comp.replicas.startup_s = model.startup_s

    def reroute(self, source: str, target: str, fanout: float) -> None:
        comp = self._comps[self._index[source]]
        at, cls = self._flows[(source, target)]
        spec = next(
            e for e in self.config.pipeline.edges if (e.source, e.target) == (source, target)
        )
        index, _, _, _, slot = comp.out_edges[at]
        calls, spread, reenter, reenter_spread = self._flow(fanout, spec)
        self._routes.move(source, target, fanout, self._now_s)
        if cls < 0:
            spread = fanout_variance(fanout, spec.fanout_distribution) if self.fanout_noise else 0.0
            comp.out_edges[at] = (index, fanout, spread, -1, slot)
            self._noisy = self._any_noise()
            return
        comp.out_edges[at] = (index, calls, spread, cls, slot)
        self._comps[index].reenter[cls] = reenter
        self._comps[index].reenter_spread[cls] = reenter_spread
        self._noisy = self._any_noise()

    def _any_noise(self) -> bool:
        """Whether a step reads normal deviates: a flow with a spread, or re-entries drawn
        with noise. Without, the deviates are not drawn at all (`_deviates` draws the blocks
        skipped, in order, when they are needed again: the same numbers)."""
        spread = any(edge[2] > 0 for c in self._comps for edge in c.out_edges)
        return spread or (self.fanout_noise and any(c.reenter for c in self._comps))

    def state(self, component: str) -> ReplicaState:
        index = self._index[component]
        book = self._comps[index].replicas
        book.integrate_to(self._now_s)
        desired, ready = book.ready + len(book.starting), book.ready
        last = self._states[index]  # the same counts as at the last read: the same object
        if last is None or last.desired != desired or last.ready != ready:
            last = self._states[index] = ReplicaState(desired, ready)
        return last

    # ---------------------------------------------------------------------------------------
    # One step

    def _run_step(self, j: int, record: bool) -> None:
        dt = self.step_s
        a = self.start_s + j * dt
        b = a + dt
        ncomp = len(self._comps)
        flow_req = [0.0] * ncomp
        flow_tin = [0.0] * ncomp
        flow_tout = [0.0] * ncomp
        # Calls of each re-entrant class (sequential incoming edges) arriving this step (a
        # component without such classes shares one empty list, never written to).
        flow_cls: list[list[float]] = (
            [[0.0] * len(c.reenter) if c.reenter else _NO_CLASSES for c in self._comps]
            if self._reentrant
            else self._no_flow_cls
        )
        tokens = self._has_tokens
        z = self._deviates(j) if self._noisy else _NO_DEVIATES
        waits = self._waits
        first_calls = [0.0] * self._noise_slots if waits is not None else None
        rows: list[tuple[FluidComponent, _Row]] = []
        if j >= self._seal_at:
            self._seal(j)
        if j < self.n_steps:
            req = self._req[j]
            for i in self._ingress:
                flow_req[i] += req
                if tokens:
                    flow_tin[i] += self._tin[j]
                    flow_tout[i] += self._tout[j]
        for comp in self._comps:
            i = comp.index
            classes = flow_cls[i]
            if comp.reenter:
                # Sequential calls that came back at the end of the last step.
                pending = comp.pending_req
                for k, back in enumerate(pending):
                    classes[k] += back
                    flow_req[i] += back
                    pending[k] = 0.0
                flow_tin[i] += comp.pending_tin
                flow_tout[i] += comp.pending_tout
                comp.pending_tin = comp.pending_tout = 0.0
            areq = flow_req[i]
            ready_avg, starting_avg, draining_avg = comp.replicas.close_step(b, dt)
            mu = ready_avg * comp.cap
            records = comp.records
            k = j - records.base  # this step in the records' window
            queue = comp.queue
            at_once = False  # every unit served on arrival: no cohort is queued
            if areq > 0:
                tin_pr = flow_tin[i] / areq
                tout_pr = flow_tout[i] / areq
                wpr = (
                    work_per_request(comp.unit, tin_pr, tout_pr) if comp.unit != "requests" else 1.0
                )
                work = areq * wpr
                records.arrived[k] = areq
                if work > 0:
                    records.hold[k] = comp.hold_per_work * wpr
                    # Fast path: an empty queue and enough capacity.
                    at_once = not queue and work <= mu * dt * (1 + 1e-12)
                    if not at_once:
                        mix = [x / areq for x in classes] if classes else None
                        queue.append([a, b, work / dt, j, areq / work, tin_pr, tout_pr, 0.0, mix])
                else:  # zero-token requests need no service time
                    records.hold[k] = 0.0
                    records.wait_first[k] = records.wait_last[k] = 0.0
            else:
                work = 0.0
            if at_once:
                records.wait_first[k] = records.wait_last[k] = 0.0
                served_w, served_r, dropped_r = work, areq, 0.0
                s_tin, s_tout = flow_tin[i], flow_tout[i]
                served_cls = classes
                wmax = 0.0
            elif not queue:
                served_w = served_r = s_tin = s_tout = dropped_r = 0.0
                wmax = -1.0
                served_cls = classes
                if areq > 0 and work <= 0:
                    served_r, s_tin, s_tout = areq, flow_tin[i], flow_tout[i]
                    wmax = 0.0
            else:
                served_cls = [0.0] * len(classes)
                served_w, served_r, s_tin, s_tout, dropped_r, wmax = serve(
                    comp, a, b, mu, served_cls
                )
            if served_r > 0:
                for target, calls, spread, cls, slot in comp.out_edges:
                    sent = served_r * calls
                    if spread > 0:
                        sent = noisy_count(z[slot], sent, served_r * spread)
                    flow_req[target] += sent
                    if first_calls is not None:
                        first_calls[slot] = sent
                    if cls >= 0:
                        flow_cls[target][cls] += sent
                    if tokens:
                        flow_tin[target] += s_tin * sent / served_r
                        flow_tout[target] += s_tout * sent / served_r
                if comp.reenter:  # sequential calls that come back at the next step
                    back_total = 0.0
                    for k, reenter in enumerate(comp.reenter):
                        back = served_cls[k] * reenter
                        if self.fanout_noise:
                            spread = comp.reenter_spread[k]
                            back = noisy_count(z[comp.noise_slot + k], back, back * spread)
                        comp.pending_req[k] += back
                        back_total += back
                    if back_total > 0 and tokens:
                        comp.pending_tin += back_total * s_tin / served_r
                        comp.pending_tout += back_total * s_tout / served_r
            capacity_w = mu * dt
            comp.last_util = served_w / capacity_w if capacity_w > 0 else 0.0
            if not record:
                continue
            if waits is None:
                self._record(
                    comp, j, areq, work, flow_tin[i] + flow_tout[i], served_w, served_r,
                    dropped_r, wmax, ready_avg, starting_avg, draining_avg,
                )  # fmt: skip
            else:
                row: _Row = (
                    j, areq, work, flow_tin[i] + flow_tout[i], served_w, served_r, dropped_r,
                    wmax, ready_avg, starting_avg, draining_avg,
                )  # fmt: skip
                rows.append((comp, row))
        if waits is not None and first_calls is not None and record:
            awaiting = waits.awaiting(
                [row[1] for _, row in rows],
                first_calls,
                flow_cls,
                [c.hold_per_work * row[4] / dt for c, row in rows],
                [_queued(c) for c, _ in rows],
            )
            for (part, values), held in zip(rows, awaiting, strict=True):
                self._record(part, *values, held)

    def _seal(self, j: int) -> None:
        """At the start of step j: seal each component's arrival records of the steps before
        its oldest queued cohort (`backtest.fluid_records`)."""
        for comp in self._comps:
            queue = comp.queue
            comp.records.seal(min(int(queue[0][3]), j) if queue else j, j)
        self._seal_at = j + stepcolumn.CHUNK

    def _deviates(self, j: int) -> list[float]:
        """The normal deviates of step j: a function of the seed and j only."""
        block, row = divmod(j, _NOISE_BLOCK)
        while self._noise_block < block:
            self._noise_block += 1
            self._noise_rows = self._noise_rng.standard_normal(
                (_NOISE_BLOCK, max(1, self._noise_slots))
            ).tolist()
        return self._noise_rows[row]

    def _record(
        self,
        comp: FluidComponent,
        j: int,
        areq: float,
        work: float,
        tokens: float,
        served_w: float,
        served_r: float,
        dropped_r: float,
        wmax: float,
        ready_avg: float,
        starting_avg: float,
        draining_avg: float,
        awaiting: float = 0.0,
    ) -> None:
        dt = self.step_s
        hold_w = comp.hold_per_work
        queue_r = _queued(comp) if comp.queue else 0.0
        busy = served_w * hold_w  # slot-seconds
        capacity = ready_avg * comp.slots * dt
        if served_r > 0:
            hold = hold_w * served_w / served_r
            p95 = wmax + hold
            # Below 5% utilization no server is busy long enough for a 95th-percentile wait.
            if queue_r <= 0 and wmax <= 0 and busy > 0.05 * capacity:
                p_wait, mean_wait = queueing_delay(busy / capacity, ready_avg * comp.slots, hold)
                p95 += wait_quantile(p_wait, mean_wait, 0.95)
        else:
            p95 = math.nan
        book = comp.replicas
        ready = book.ready
        # In flight: the step's mean in service, and the calls awaiting their downstream calls
        # (`caller_waits`, backtest/fluid_waits.py).
        in_flight = busy / dt if awaiting == 0.0 else busy / dt + awaiting
        comp.log.append(
            areq, work, tokens, served_r, dropped_r, queue_r, in_flight, ready_avg, starting_avg,
            draining_avg, float(ready + len(book.starting)), float(ready), busy, capacity, p95,
        )  # fmt: skip

    # ---------------------------------------------------------------------------------------
    # Result

    def _finish(self) -> None:
        """Run to the end of the trace, then drain: no arrivals, no engine, no series."""
        if self._finished:
            return
        self.advance_to(self.end_s)
        for extra in range(self._drain_steps):
            if not any(c.queue or any(c.pending_req) for c in self._comps):
                break
            self._run_step(self.n_steps + extra, record=False)
        self._finished = True

    def _table(self, comp: FluidComponent, total_steps: int) -> LatencyTable:
        """The latency table of a frozen component; its arrival records are handed over."""
        log = comp.log
        load = StepLoad(
            capacity=log.column("capacity"),
            busy=log.column("busy"),
            ready=log.column("ready"),
            queue=log.column("queue"),
            # the log's arrivals are the records' wherever there were any (an arrival step's
            # record is 0 without arrivals, and so is the log's)
            arrived=log.column("arrivals") > 0,
            slots=comp.slots,
            mean_hold_s=comp.model.mean_hold_s,
        )
        return table_of(comp.records.waits(total_steps), load, self.step_s, total_steps)

    def result(self) -> SimulationResult:
        """Run the remaining steps and sample end-to-end latency (`backtest.fluid_latency`)."""
        self._finish()
        total_steps = self.n_steps + self._drain_steps
        if self._tables is None or self._series is None:
            self._tables, self._series = [], {}
            steps = len(self._comps[0].log) if self._comps else 0
            t_s = self.start_s + self.step_s * np.arange(1, steps + 1, dtype=float)  # shared
            # One component at a time: its table, then its series, then what neither needs
            # again is dropped before the next component's (the peak of a month at 1 s).
            for c in self._comps:
                c.log.freeze()  # the series below: views of the dense columns, runs of the others
                self._tables.append(self._table(c, total_steps))
                self._series[c.name] = ComponentSeries.from_steps(c.log, t_s)
                c.log.release("busy", "capacity")  # in the table and the series from now on
        tables = self._tables
        sampler = EndToEndSampler(
            tables, self._routes.parallel, self._routes.sequential, self.start_s, self.step_s,
            np.random.default_rng(self.seed),
        )  # fmt: skip
        latency, weight, done_at, dropped, total = sampler.run(self._ingress, np.asarray(self._req))
        origin, dropped_by_origin = sampler.origins
        return SimulationResult(
            step_s=self.step_s,
            latency_s=latency,
            weight=weight,
            completed_at_s=done_at,
            dropped_requests=dropped,
            components=dict(self._series),
            fidelity=self.fidelity,
            start_s=self.start_s,
            end_s=self.end_s,
            ingress_requests=total,
            origin=origin,
            dropped_by_origin=dropped_by_origin,
        )


def _queued(comp: FluidComponent) -> float:
    """Calls waiting in the component's queue (the cohorts' remaining requests)."""
    queue_r = 0.0
    for co in comp.queue:
        queue_r += co[2] * (co[1] - co[0]) * co[4]
    return queue_r
