"""End-to-end latency for the fast fidelity, from what the fluid model recorded per step.

The fluid model (`backtest.fluid`) records, for each component and each step, the waits of the
first and last served unit of the step's arrivals, their hold, and how many were dropped. Here a
few ingress requests per step are followed down the pipeline graph: a call arriving at a
component at time t takes the wait of the step containing t, the stationary queueing delay a
fluid leaves out (`queueing_delay`), and its hold; its calls downstream are drawn from the
edges' fan-out distributions, sequential ones adding up and parallel ones taking the slowest;
it survives with probability 1 - dropped / arrived of that step. docs/simulator.md has the
model and worked numbers.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from elastiscale.backtest.model import draw_fanout, draw_fanouts
from elastiscale.backtest.routes import Route
from elastiscale.backtest.runs import Array, Column, Runs, compact, dense, take

#: Utilization above which the stationary queueing formula is capped (it diverges at 1, where
#: the fluid queue itself takes over).
RHO_CAP = 0.95
#: About this many end-to-end samples per run (at least one per step with arrivals, at most 64).
SAMPLES_TARGET = 200_000


def queueing_delay(rho: float, servers: float, hold_s: float) -> tuple[float, float]:
    """Stationary wait of a busy, not backlogged component: (P(wait > 0), mean wait if waiting).

    M/D/c by Sakasegawa's approximation of M/M/c, halved for constant service (Allen-Cunneen,
    (ca^2 + cs^2) / 2 with Poisson arrivals and fixed holds): P(wait) = rho^(sqrt(2(c+1)) - 1),
    and a wait is exponential with mean hold / (2 c (1 - rho)). Worked numbers: 6 slots at
    rho = 0.9 with a 4 s hold: P(wait) = 0.9^2.74 = 0.75, mean wait 4 / (2 x 6 x 0.1) = 3.3 s.
    """
    if servers < 1.0 or rho <= 0.0 or hold_s <= 0.0:
        return 0.0, 0.0
    if rho > RHO_CAP:  # min(rho, RHO_CAP), without the call
        rho = RHO_CAP
    p_wait = rho ** _exponent(servers)
    return p_wait, 0.5 * hold_s / (servers * (1.0 - rho))


@functools.lru_cache(maxsize=4096)
def _exponent(servers: float) -> float:
    """sqrt(2(c + 1)) - 1, cached: a component's server count changes only when it scales."""
    return math.sqrt(2.0 * (servers + 1.0)) - 1.0


def wait_quantile(p_wait: float, mean_s: float, q: float) -> float:
    """The q quantile of a wait that is 0 with probability 1 - p_wait, else exponential."""
    if p_wait <= 1.0 - q or mean_s <= 0.0:
        return 0.0
    return mean_s * math.log(p_wait / (1.0 - q))


@dataclass(frozen=True, slots=True)
class ArrivalWaits:
    """Per arrival step, what the fluid model recorded of a component's arrivals (their
    waits, hold and drops, `backtest.fluid_records`) as the latency table reads them: the
    steps without served arrivals filled in (`arrival_waits`), the drops a probability."""

    first: Column  # wait of the first served unit, seconds
    last: Column  # wait of the last served unit, seconds
    hold: Column  # seconds; NaN before the first step with arrivals
    p_drop: Column  # probability of being dropped (before the no-capacity rule of the table)


@dataclass(frozen=True, slots=True)
class StepLoad:
    """What the latency table reads of a component's step log, one entry per logged step."""

    capacity: Array  # ready capacity (slot-seconds)
    busy: Array  # busy capacity (slot-seconds)
    ready: Array  # ready replicas (time average)
    queue: Array  # requests waiting at the end of the step
    arrived: npt.NDArray[np.bool_]  # whether requests arrived in the step
    slots: int  # slots per replica
    mean_hold_s: float  # hold of a request of mean size


@dataclass(frozen=True, slots=True)
class LatencyTable:
    """Per step: what a call arriving then meets at one component (each column dense or as
    runs, `backtest.runs`: the same doubles)."""

    first: Column  # wait of the first served unit, seconds
    last: Column  # wait of the last served unit, seconds
    hold: Column  # seconds
    p_drop: Column  # probability of being dropped
    p_wait: Column  # probability of a stationary queueing delay
    mean_wait: Column  # mean of that delay when there is one, seconds


def arrival_waits(
    arrived: Array,
    dropped: Array,
    first: Array,
    last: Array,
    hold: Array,
    after: tuple[float, float] = (0.0, math.nan),
) -> tuple[Array, Array, Array, Array]:
    """(first, last, hold, p_drop) of `ArrivalWaits` for consecutive arrival steps.

    A step without served arrivals (none came, or all were dropped) waits as the last step
    that had some, so a sample arriving then sees the backlog that was there; its last wait
    is the first wait so carried. `after`: the filled first wait and hold of the step before
    these (0 and NaN before the first step), so that steps filled a stretch at a time give
    what the whole run filled at once gives. Each value depends on its step and the earlier
    ones only."""
    has = arrived > 0
    # a tiny count of arrivals may overflow the ratio: clipped to 1 all the same
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        p_drop = np.where(has, np.clip(dropped / np.where(has, arrived, 1.0), 0.0, 1.0), 0.0)
    first = _ffill(first, after[0])
    # `first` has no NaN left, so neither has this (the fill of the whole run did fill it again)
    last = np.where(np.isnan(last), first, last)
    hold = _ffill(hold, after[1])
    return first, last, hold, p_drop


def table_of(waits: ArrivalWaits, load: StepLoad, step_s: float, total_steps: int) -> LatencyTable:
    """The latency table of one component from its filled arrival records and its step log.

    Memory: for a month at 1 s steps each array here is 21 MB, so temporaries go as soon as
    they are used, the hold is read only where there is a stationary wait, and the columns
    that are mostly one value (all but the stationary wait's, for most components) are kept
    as runs (`runs.compact`)."""
    n = total_steps
    hold = waits.hold
    if isinstance(hold, Runs):  # before the first arrival: a request of mean size
        hold = hold.map_values(_ffill(hold.values, load.mean_hold_s))
    else:
        hold = _ffill(hold, load.mean_hold_s)
    p_drop = waits.p_drop
    m = load.capacity.shape[0]
    rho = np.zeros(n)
    servers = np.zeros(n)
    backlog = np.ones(n, dtype=bool)
    if m:
        cap = load.capacity
        with np.errstate(invalid="ignore", divide="ignore"):
            rho[:m] = np.where(cap > 0, load.busy / np.where(cap > 0, cap, 1), 0)
        # Utilization over about one hold: the stationary formula describes fluctuations
        # faster than that, the steps' own (noisy) arrivals the slower ones.
        span = max(1, round(load.mean_hold_s / step_s))
        if span > 1:
            kernel = np.ones(span) / span
            rho[:m] = np.convolve(rho[:m], kernel)[:m]
        servers[:m] = load.ready * load.slots
        queued = load.queue > 0
        backlog[:m] = queued | np.concatenate([[False], queued[:-1]])
        del queued
        # No ready capacity: a call arriving then waits for the timeout and is dropped.
        empty = (cap <= 0) & ~load.arrived[:m]
        if empty.any():
            dropping = dense(p_drop).copy()
            dropping[:m] = np.where(empty, 1.0, dropping[:m])
            p_drop = compact(dropping)
            del dropping
        del empty
    rho_c = np.minimum(rho, RHO_CAP)
    p_wait = np.where(
        (servers >= 1) & (rho > 0) & ~backlog,
        rho_c ** (np.sqrt(2.0 * (servers + 1.0)) - 1.0),
        0.0,
    )
    del rho, backlog
    # The mean wait only where there is one: there servers >= 1 and 1 - rho_c >= 0.05, so it is
    # at most 10 holds. Elsewhere the formula would divide by anything down to a sliver of a
    # replica (a scale to 0 at 2e-311 s into a step leaves 4e-311 servers) and overflow.
    waiting = np.flatnonzero(p_wait > 0)
    mean_wait = np.zeros(n)
    mean_wait[waiting] = 0.5 * take(hold, waiting) / (servers[waiting] * (1.0 - rho_c[waiting]))
    del servers, rho_c, waiting
    return LatencyTable(waits.first, waits.last, hold, p_drop, compact(p_wait), compact(mean_wait))


Edges = list[list[Route]]  # per component: its routes (`backtest.routes`) of one mode


class EndToEndSampler:
    """Follows sampled ingress requests through the graph of `LatencyTable`s.

    A request's weight is split into completed (weight x survival) and dropped
    (weight x (1 - survival)), so drops are an expectation rather than a draw.
    """

    def __init__(
        self,
        tables: Sequence[LatencyTable],
        parallel: Edges,
        sequential: Edges,
        t0_s: float,
        step_s: float,
        rng: np.random.Generator,
    ) -> None:
        self.tables = list(tables)
        self.parallel = parallel
        self.sequential = sequential
        self.t0_s = t0_s
        self.step_s = step_s
        self.total_steps = len(tables[0].first) if tables else 0
        self.rng = rng
        #: Of the last `run`: the ingress (index into its `ingress`) of each sample, and the
        #: requests dropped per ingress.
        self.origins: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]] = (
            np.zeros(0, dtype=np.int64),
            np.zeros(0),
        )

    def _call(self, comp: int, t_s: Array) -> tuple[Array, Array]:
        """Latency and survival probability of calls arriving at `comp` at times `t_s`,
        including everything they call downstream.

        Memory: one array per sample is alive at each level of the graph for a month of 1 s
        steps (2.7 million samples, 21 MB each), so temporaries are dropped before the calls
        downstream, and a call that every sample makes gets the caller's times themselves,
        not a copy. The arithmetic and the order of the random draws are those of the plain
        expressions, so the results are the same bits."""
        table = self.tables[comp]
        rng = self.rng
        size = t_s.size
        idx = np.clip(((t_s - self.t0_s) / self.step_s).astype(np.int64), 0, self.total_steps - 1)
        first = take(table.first, idx)
        latency = first + rng.random(size) * (take(table.last, idx) - first)  # the wait, for now
        del first
        # As many draws whatever the outcome, so runs that differ only in capacity see the same
        # random numbers (common random numbers: comparisons are not blurred by them).
        waits = rng.random(size) < take(table.p_wait, idx)
        latency += np.where(waits, rng.exponential(1.0, size) * take(table.mean_wait, idx), 0.0)
        del waits
        latency += take(table.hold, idx)
        survive = 1.0 - take(table.p_drop, idx)
        del idx
        parallel, sequential = self.parallel[comp], self.sequential[comp]
        if parallel:
            done = t_s + latency
            slowest = np.zeros(size)
            for route in parallel:
                for sel, sub_latency, sub_survive in self._fanned_out(route, done):
                    if sel is None:
                        np.maximum(slowest, sub_latency, out=slowest)
                        survive *= sub_survive
                    else:
                        slowest[sel] = np.maximum(slowest[sel], sub_latency)
                        survive[sel] *= sub_survive
                    del sel, sub_latency, sub_survive
            del done
            latency += slowest
            del slowest
        else:
            latency += 0.0  # what adding no slowest call did: a -0.0 becomes 0.0
        if not sequential:
            return latency, survive
        clock = t_s + latency
        del t_s
        for route in sequential:
            # `clock` moves on in place between the calls, so each starts after the last.
            for sel, sub_latency, sub_survive in self._fanned_out(route, clock):
                if sel is None:
                    latency += sub_latency
                    clock += sub_latency
                    survive *= sub_survive
                else:
                    latency[sel] += sub_latency
                    clock[sel] += sub_latency
                    survive[sel] *= sub_survive
                del sel, sub_latency, sub_survive
        return latency, survive

    def _fanned_out(
        self, route: Route, t_s: Array
    ) -> Iterator[tuple[npt.NDArray[np.bool_] | None, Array, Array]]:
        """The calls the requests at `t_s` make on `route`, round by round: round k holds the
        k-th call of every request that makes at least k, as (which requests, or None for all
        of them; the calls' latency; their survival). Each round reads `t_s` when it starts,
        so a caller that moves `t_s` on in place (sequential calls) starts the next round after
        the last; the counts are drawn before the first round, as the plain loop drew them."""
        counts = self._counts(route, t_s)
        most = int(counts.max(initial=0))
        for k in range(1, most + 1):
            sel = counts >= k
            if k == most:
                del counts  # not needed for the last call
            if sel.all():
                del sel
                yield None, *self._routed(route, t_s)
            else:
                yield sel, *self._routed(route, t_s[sel])
                del sel

    def _counts(self, route: Route, t_s: Array) -> npt.NDArray[np.int64]:
        """Each request's call count on `route`, with the fan-out in force at its time."""
        if len(route.times_s) == 1:  # as one edge always drew (same random numbers)
            return draw_fanout(self.rng, route.total, route.distribution, t_s.size)
        totals = np.asarray([sum(row) for row in route.fanouts], dtype=float)
        return draw_fanouts(self.rng, totals[route.rows_at(t_s)], route.distribution)

    def _routed(self, route: Route, t_s: Array) -> tuple[Array, Array]:
        """Latency and survival of calls made on `route` at `t_s`: one target's, or each
        call's variant drawn by the split in force at its time (`backtest.routes`)."""
        if not route.split:
            return self._call(route.targets[0], t_s)
        shares = np.asarray([route.shares(r) for r in range(len(route.fanouts))], dtype=float)
        bounds = np.cumsum(shares[route.rows_at(t_s)], axis=1)
        u = self.rng.random(t_s.size)
        choice = np.minimum((u[:, None] >= bounds).sum(axis=1), len(route.targets) - 1)
        latency = np.zeros(t_s.size)
        survive = np.ones(t_s.size)
        for j, target in enumerate(route.targets):
            mine = np.flatnonzero(choice == j)
            if mine.size:
                latency[mine], survive[mine] = self._call(target, t_s[mine])
        return latency, survive

    def run(
        self, ingress: Sequence[int], requests: Array
    ) -> tuple[Array, Array, Array, float, float]:
        """(latency, completed weight, completion time, dropped requests, ingress requests)
        for `requests[j]` ingress requests in step j at each ingress component."""
        active = np.flatnonzero(requests > 0)
        self.origins = (np.zeros(0, dtype=np.int64), np.zeros(len(ingress)))
        if active.size == 0 or not ingress:
            empty = np.zeros(0)
            return empty, empty, empty, 0.0, 0.0
        per_step_samples = int(min(64, max(1, math.ceil(SAMPLES_TARGET / active.size))))
        latencies: list[Array] = []
        weights: list[Array] = []
        done: list[Array] = []
        dropped = 0.0
        total = 0.0
        origins: list[npt.NDArray[np.int64]] = []
        dropped_by_origin = np.zeros(len(ingress))
        for k, component in enumerate(ingress):
            steps = np.repeat(active, per_step_samples)
            strata = np.tile(np.arange(per_step_samples), active.size)
            offset = (strata + self.rng.random(steps.size)) / per_step_samples
            t_s = self.t0_s + (steps + offset) * self.step_s
            weight = requests[steps] / per_step_samples
            del steps, strata, offset  # three arrays of samples fewer through the graph
            latency, survive = self._call(component, t_s)
            latencies.append(latency)
            weights.append(weight * survive)
            done.append(t_s + latency)
            dropped_by_origin[k] = float(np.sum(weight * (1.0 - survive)))
            dropped += dropped_by_origin[k]
            total += float(np.sum(weight))
            origins.append(np.full(latency.size, k, dtype=np.int64))
        self.origins = (np.concatenate(origins), dropped_by_origin)
        return (
            np.concatenate(latencies),
            np.concatenate(weights),
            np.concatenate(done),
            dropped,
            total,
        )


def _ffill(values: Array, default: float) -> Array:
    """NaNs replaced by the last non-NaN value before them (`default` before the first)."""
    out = np.array(values, dtype=float)
    bad = np.isnan(out)
    if not bad.any():
        return out
    idx = np.where(~bad, np.arange(out.size), -1)
    np.maximum.accumulate(idx, out=idx)
    filled = np.where(idx >= 0, out[np.maximum(idx, 0)], default)
    return filled
