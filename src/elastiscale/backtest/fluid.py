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
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from elastiscale.backtest.fluid_latency import (
    CallRecords,
    Edges,
    EndToEndSampler,
    latency_table,
    queueing_delay,
    wait_quantile,
)
from elastiscale.backtest.model import (
    ComponentSeries,
    ServiceModel,
    SimulationResult,
    StepLog,
    fanout_variance,
    first_call_probability,
    service_models,
    work_per_request,
)
from elastiscale.config import Config
from elastiscale.observations import ReplicaState
from elastiscale.pipeline import Pipeline
from elastiscale.trace import Trace

Array = npt.NDArray[np.float64]

_EPS = 1e-9
_NOISE_BLOCK = 4096  # steps of normal deviates drawn at once


class _Replicas:
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
            self.acc_t = end_s  # nothing changed during the step
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


class _Component:
    """Static description and mutable state of one component in the fluid model."""

    __slots__ = (
        "arrived_by_arrival",
        "cap",
        "dropped_by_arrival",
        "hold_by_arrival",
        "hold_per_work",
        "index",
        "last_util",
        "log",
        "model",
        "name",
        "noise_slot",
        "out_edges",
        "pending_req",
        "pending_tin",
        "pending_tout",
        "queue",
        "reenter",
        "reenter_spread",
        "replicas",
        "slots",
        "timeout",
        "unit",
        "wait_first",
        "wait_last",
    )

    def __init__(
        self, index: int, model: ServiceModel, replicas: int, t0_s: float, step_s: float, n: int
    ) -> None:
        self.index = index
        self.name = model.name
        self.model = model
        self.unit = model.unit
        self.cap = model.capacity
        self.slots = model.slots
        self.hold_per_work = model.hold_per_work_s
        self.timeout = model.timeout_s
        self.replicas = _Replicas(replicas, model.startup_s, t0_s)
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
        self.log = StepLog(t0_s, step_s)
        nan = math.nan
        self.wait_first = [nan] * n
        self.wait_last = [nan] * n
        self.arrived_by_arrival = [0.0] * n
        self.dropped_by_arrival = [0.0] * n
        self.hold_by_arrival = [nan] * n
        self.last_util = 0.0


def _noisy(z: float, mean: float, variance: float) -> float:
    """A count of calls made by many requests with random fan-out, to the second moment: a
    lognormal with this `mean` and `variance`, driven by the standard normal deviate `z`
    (never negative, and unbiased where clipping a normal at zero would not be)."""
    if variance <= 0 or mean <= 1e-12:
        return mean
    s2 = math.log1p(variance / (mean * mean))
    return mean * math.exp(z * math.sqrt(s2) - 0.5 * s2)


def _reentry_spread(mean: float, distribution: str, first: float, reenter: float) -> float:
    """Variance per re-entry that gives a request's sequential calls the variance of the edge's
    own distribution (given at least one call), not that of the geometric stand-in: Bernoulli
    re-entries have variance 1 - r each and a geometric count r / (1 - r)^2. Fixed integer
    fan-outs get none (3 calls are always 3)."""
    conditional_mean = mean / first
    second_moment = (fanout_variance(mean, distribution) + mean * mean) / first
    conditional_variance = max(0.0, second_moment - conditional_mean**2)
    geometric_variance = reenter / (1.0 - reenter) ** 2
    return (1.0 - reenter) * conditional_variance / geometric_variance


def per_step(trace: Trace, values: Array, t0_s: float, step_s: float, n: int) -> Array:
    """Per-bin counts re-binned into `n` steps of `step_s` from `t0_s` (linear within a bin)."""
    edges = np.append(trace.t_s, trace.t_s[-1] + trace.bin_s)
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    at = t0_s + step_s * np.arange(n + 1, dtype=float)
    return np.diff(np.interp(at, edges, cumulative))


class FluidSimulator:
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
        self.config = config
        self.pipeline = Pipeline(config.pipeline)
        self.fanout_noise = fanout_noise
        self.models = service_models(config, trace)
        self.step_s = float(step_s if step_s is not None else trace.bin_s)
        if not self.step_s > 0:
            raise ValueError(f"step_s = {self.step_s}, must be > 0")
        self.start_s = trace.start_s
        self.end_s = trace.end_s
        self.n_steps = max(1, math.ceil(trace.duration_s / self.step_s - 1e-9))
        self.seed = seed
        # Normal deviates for the fan-out noise, one per step and noisy flow, drawn in blocks of
        # steps from the seed alone: every policy replayed with the same seed meets the same
        # deviates at the same step (common random numbers), so comparisons are not blurred.
        self._noise_rng = np.random.default_rng([seed, 7])
        self._noise_block = -1
        self._noise_rows: list[list[float]] = []
        order = self.pipeline.order
        self._index = {name: i for i, name in enumerate(order)}
        depth = self._depths()
        max_timeout = max(m.timeout_s for m in self.models.values())
        # Steps simulated after the trace ends (no arrivals, no engine) so that every request
        # still queued finishes or times out: each hop may wait up to its timeout.
        self._drain_steps = (max(depth.values()) + 1) * (math.ceil(max_timeout / self.step_s) + 2)
        total = self.n_steps + self._drain_steps
        self._comps: list[_Component] = []
        for i, name in enumerate(order):
            start = initial_replicas.get(name)
            if start is None:
                raise ValueError(f"initial_replicas: no count for component {name!r}")
            if start < 0:
                raise ValueError(f"initial_replicas[{name!r}] = {start}, must be >= 0")
            self._comps.append(
                _Component(i, self.models[name], int(start), self.start_s, self.step_s, total)
            )
        slot = 0  # one normal deviate per step for each noisy flow (see `_deviates`)
        for edge, spec in zip(self.pipeline.edges, config.pipeline.edges, strict=True):
            source = self._comps[self._index[edge.source]]
            target = self._comps[self._index[edge.target]]
            spread = fanout_variance(edge.fanout, spec.fanout_distribution) if fanout_noise else 0.0
            first = first_call_probability(edge.fanout, spec.fanout_distribution)
            # Sequential calls: the first call now, each next one when the previous completes.
            # The count given at least one call is taken as geometric with the edge's mean,
            # so a completed call comes back with probability r = 1 - P(N >= 1) / mean.
            # Worked numbers: fixed 3.0 -> P(N >= 1) = 1, r = 2/3, 1 / (1 - r) = 3 calls.
            reenter = 1.0 - first / edge.fanout if edge.fanout > 0 else 0.0
            if edge.mode == "parallel" or reenter <= 1e-12:
                source.out_edges.append((target.index, edge.fanout, spread, -1, slot))
            else:
                # Each completion makes a first call or not (Bernoulli(first)).
                spread = first * (1.0 - first) if fanout_noise else 0.0
                source.out_edges.append((target.index, first, spread, len(target.reenter), slot))
                target.reenter.append(reenter)
                target.reenter_spread.append(
                    _reentry_spread(edge.fanout, spec.fanout_distribution, first, reenter)
                    if fanout_noise
                    else 0.0
                )
                target.pending_req.append(0.0)
            slot += 1
        for comp in self._comps:  # each re-entry comes back or not (Bernoulli(reenter))
            comp.noise_slot = slot
            slot += len(comp.reenter)
        self._noise_slots = slot
        self._ingress = [self._index[n] for n in self.pipeline.ingress]
        n = self.n_steps
        self._req = per_step(trace, trace.requests, self.start_s, self.step_s, n).tolist()
        self._has_tokens = trace.has_unit("tokens")
        if self._has_tokens:
            self._tin = per_step(
                trace, trace.columns["input_tokens"], self.start_s, self.step_s, n
            ).tolist()
            self._tout = per_step(
                trace, trace.columns["output_tokens"], self.start_s, self.step_s, n
            ).tolist()
        self._step = 0  # steps simulated so far
        self._now_s = self.start_s
        self._finished = False

    def _depths(self) -> dict[str, int]:
        depth: dict[str, int] = {}
        for name in self.pipeline.order:
            ups = self.pipeline.upstream(name)
            depth[name] = 1 + max((depth[u] for u in ups), default=-1)
        return depth

    # ---------------------------------------------------------------------------------------
    # Simulator protocol

    @property
    def now_s(self) -> float:
        return self._now_s

    def advance_to(self, t_s: float) -> None:
        if t_s < self._now_s - _EPS:
            raise ValueError(f"advance_to({t_s}): before the simulation's time {self._now_s}")
        limit = min(self.n_steps, math.floor((t_s - self.start_s) / self.step_s + 1e-9))
        while self._step < limit:
            self._run_step(self._step, record=True)
            self._step += 1
        self._now_s = max(self._now_s, t_s)

    def set_desired(self, component: str, replicas: int) -> None:
        comp = self._comps[self._index[component]]
        drain_s = comp.model.mean_hold_s if comp.last_util > 0 else 0.0
        comp.replicas.command(self._now_s, max(0, int(replicas)), drain_s)

    def state(self, component: str) -> ReplicaState:
        book = self._comps[self._index[component]].replicas
        book.integrate_to(self._now_s)
        return ReplicaState(desired=book.desired, ready=book.ready)

    def steps(self, component: str) -> StepLog:
        return self._comps[self._index[component]].log

    def series(self, component: str) -> ComponentSeries:
        return self.steps(component).series()

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
        # Calls of each re-entrant class (sequential incoming edges) arriving this step.
        flow_cls: list[list[float]] = [[0.0] * len(c.reenter) for c in self._comps]
        tokens = self._has_tokens
        z = self._deviates(j)
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
            mix = [x / areq for x in classes] if classes and areq > 0 else None
            if areq > 0:
                tin_pr = flow_tin[i] / areq
                tout_pr = flow_tout[i] / areq
                wpr = (
                    work_per_request(comp.unit, tin_pr, tout_pr) if comp.unit != "requests" else 1.0
                )
                work = areq * wpr
                comp.arrived_by_arrival[j] = areq
                if work > 0:
                    comp.hold_by_arrival[j] = comp.hold_per_work * wpr
                    comp.queue.append([a, b, work / dt, j, areq / work, tin_pr, tout_pr, 0.0, mix])
                else:  # zero-token requests need no service time
                    comp.hold_by_arrival[j] = 0.0
                    comp.wait_first[j] = comp.wait_last[j] = 0.0
            else:
                work = 0.0
            queue = comp.queue
            served_cls = [0.0] * len(classes)
            if not queue:
                served_w = served_r = s_tin = s_tout = dropped_r = 0.0
                wmax = -1.0
                if areq > 0 and work <= 0:
                    served_r, s_tin, s_tout = areq, flow_tin[i], flow_tout[i]
                    served_cls = classes
                    wmax = 0.0
            elif len(queue) == 1 and work > 0 and work <= mu * dt * (1 + 1e-12):
                # Fast path: an empty queue and enough capacity: every unit served on arrival.
                queue.clear()
                comp.wait_first[j] = comp.wait_last[j] = 0.0
                served_w, served_r, dropped_r = work, areq, 0.0
                s_tin, s_tout = flow_tin[i], flow_tout[i]
                served_cls = classes
                wmax = 0.0
            else:
                served_w, served_r, s_tin, s_tout, dropped_r, wmax = self._serve(
                    comp, a, b, mu, served_cls
                )
            if served_r > 0:
                for target, calls, spread, cls, slot in comp.out_edges:
                    sent = served_r * calls
                    if spread > 0:
                        sent = _noisy(z[slot], sent, served_r * spread)
                    flow_req[target] += sent
                    if cls >= 0:
                        flow_cls[target][cls] += sent
                    if tokens:
                        flow_tin[target] += s_tin * sent / served_r
                        flow_tout[target] += s_tout * sent / served_r
                back_total = 0.0
                for k, reenter in enumerate(comp.reenter):
                    back = served_cls[k] * reenter
                    if self.fanout_noise:
                        spread = comp.reenter_spread[k]
                        back = _noisy(z[comp.noise_slot + k], back, back * spread)
                    comp.pending_req[k] += back
                    back_total += back
                if back_total > 0 and tokens:
                    comp.pending_tin += back_total * s_tin / served_r
                    comp.pending_tout += back_total * s_tout / served_r
            capacity_w = mu * dt
            comp.last_util = served_w / capacity_w if capacity_w > 0 else 0.0
            if not record:
                continue
            self._record(
                comp, j, areq, work, flow_tin[i] + flow_tout[i], served_w, served_r, dropped_r,
                wmax, ready_avg, starting_avg, draining_avg,
            )  # fmt: skip

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
        comp: _Component,
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
    ) -> None:
        dt = self.step_s
        hold_w = comp.hold_per_work
        queue_r = 0.0
        for co in comp.queue:
            queue_r += co[2] * (co[1] - co[0]) * co[4]
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
        comp.log.append(
            areq, work, tokens, served_r, dropped_r, queue_r, busy / dt, ready_avg, starting_avg,
            draining_avg, float(ready + len(book.starting)), float(ready), busy, capacity, p95,
        )  # fmt: skip

    def _serve(
        self, comp: _Component, a: float, b: float, mu: float, served_cls: list[float]
    ) -> tuple[float, float, float, float, float, float]:
        """Serve the queue FCFS over [a, b] at `mu` work/s with reneging after the timeout.

        Returns (work served, requests served, input tokens served, output tokens served,
        requests dropped, the longest wait of a unit served, or -1 if none was); requests served
        of each re-entrant class are added to `served_cls`.

        The head cohort's remaining units arrived evenly over [lo, hi] (`dens` work per second
        of arrival time). Serving at full rate moves the head's arrival time forward at
        v = mu / dens per second, so the head's wait d - lo changes at 1 - v per second: it
        shrinks to 0 when v > 1 (the server catches up and then serves units as they arrive),
        and grows to the timeout when v < 1 (from then on units older than the timeout leave:
        mu is served and dens - mu dropped per second).
        """
        queue = comp.queue
        timeout = comp.timeout
        wait_first, wait_last = comp.wait_first, comp.wait_last
        dropped_by_arrival = comp.dropped_by_arrival
        d = a
        served_w = served_r = s_tin = s_tout = dropped_r = 0.0
        wmax = -1.0
        while queue:
            co = queue[0]
            lo, hi, dens, s = co[0], co[1], co[2], int(co[3])
            rpw = co[4]
            cut = d - timeout
            if lo < cut:
                upto = hi if hi < cut else cut
                gone = dens * (upto - lo) * rpw
                dropped_r += gone
                dropped_by_arrival[s] += gone
                lo = upto
                if hi - lo <= _EPS:
                    queue.popleft()
                    continue
            if d >= b or mu <= 0:
                co[0] = lo
                break
            if lo > d:  # the head has not arrived yet: idle until it does
                if lo >= b:
                    co[0] = lo
                    break
                d = lo
            w = d - lo
            if co[7] == 0.0:
                wait_first[s] = w
                co[7] = 1.0
            v = mu / dens
            if v >= 1.0:
                # Phase 1: full rate, catching up with arrivals.
                t_catch = w / (v - 1.0) if v > 1.0 else (math.inf if w > 0 else 0.0)
                tau = min(t_catch, (hi - lo) / v, b - d)
                got = mu * tau
                lo += v * tau
                d += tau
                w_end = w - (v - 1.0) * tau
                if w_end < 0:
                    w_end = 0.0
                if hi - lo > _EPS and d < b:
                    # Phase 2: caught up, units are served as they arrive (no wait).
                    tau = min(hi - lo, b - d)
                    got += dens * tau
                    lo += tau
                    d += tau
                    w_end = 0.0
            else:
                # Phase 1: waits grow at 1 - v per second until the timeout.
                tau = min((timeout - w) / (1.0 - v), (hi - lo) / v, b - d)
                if tau < 0:
                    tau = 0.0
                got = mu * tau
                lo += v * tau
                d += tau
                w_end = w + (1.0 - v) * tau
                if hi - lo > _EPS and d < b:
                    # Phase 2: at the timeout; the head moves with time, the excess drops.
                    tau = min(hi - lo, b - d)
                    got += mu * tau
                    gone = (dens - mu) * tau * rpw
                    dropped_r += gone
                    dropped_by_arrival[s] += gone
                    lo += tau
                    d += tau
                    w_end = timeout
            served_w += got
            got_r = got * rpw
            served_r += got_r
            s_tin += got_r * co[5]
            s_tout += got_r * co[6]
            mix = co[8]
            if mix is not None:
                for k, share in enumerate(mix):
                    served_cls[k] += got_r * share
            if w > wmax:
                wmax = w
            if w_end > wmax:
                wmax = w_end
            wait_last[s] = w_end
            if hi - lo <= _EPS:
                queue.popleft()
                continue
            co[0] = lo
            if d >= b:
                break
        # Units still waiting past the timeout at the end of the step leave now.
        cut = b - timeout
        while queue and queue[0][0] < cut:
            co = queue[0]
            lo, hi = co[0], co[1]
            upto = hi if hi < cut else cut
            gone = co[2] * (upto - lo) * co[4]
            dropped_r += gone
            dropped_by_arrival[int(co[3])] += gone
            if hi - upto <= _EPS:
                queue.popleft()
            else:
                co[0] = upto
                break
        return served_w, served_r, s_tin, s_tout, dropped_r, wmax

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

    def result(self) -> SimulationResult:
        """Run the remaining steps and sample end-to-end latency (`backtest.fluid_latency`)."""
        self._finish()
        total_steps = self.n_steps + self._drain_steps
        tables = [
            latency_table(
                CallRecords(
                    arrived=c.arrived_by_arrival,
                    dropped=c.dropped_by_arrival,
                    wait_first=c.wait_first,
                    wait_last=c.wait_last,
                    hold=c.hold_by_arrival,
                    log=c.log.array(),
                    slots=c.slots,
                    mean_hold_s=c.model.mean_hold_s,
                ),
                self.step_s,
                total_steps,
            )
            for c in self._comps
        ]
        parallel: Edges = [[] for _ in self._comps]
        sequential: Edges = [[] for _ in self._comps]
        for edge, spec in zip(self.pipeline.edges, self.config.pipeline.edges, strict=True):
            bucket = parallel if edge.mode == "parallel" else sequential
            bucket[self._index[edge.source]].append(
                (self._index[edge.target], edge.fanout, spec.fanout_distribution)
            )
        sampler = EndToEndSampler(
            tables, parallel, sequential, self.start_s, self.step_s,
            np.random.default_rng(self.seed),
        )  # fmt: skip
        latency, weight, done_at, dropped, total = sampler.run(self._ingress, np.asarray(self._req))
        return SimulationResult(
            step_s=self.step_s,
            latency_s=latency,
            weight=weight,
            completed_at_s=done_at,
            dropped_requests=dropped,
            components={c.name: c.log.series() for c in self._comps},
            fidelity=self.fidelity,
            start_s=self.start_s,
            end_s=self.end_s,
            ingress_requests=total,
        )
