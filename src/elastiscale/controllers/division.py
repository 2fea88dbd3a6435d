"""The division of a GPU budget between claims by their effect on end-to-end SLO attainment.

When the replicas every GPU component wants fit in `max_gpus`, each gets what it wants. When
they do not, first-come first-served would hand the GPUs to whichever component asked first;
instead each replica goes where it saves the most late requests per GPU.

The effect of a component's count on the SLO: with `n` replicas a component serves
`served_rps(n)` calls per second within its latency budget (the capacity model's own figure),
so a share x = (demand - served) / demand of its calls is late. An ingress request that makes
k calls to it is late when any of them is, with probability 1 - (1 - x)^k, so

    late requests/s (n) = ingress_rps x (1 - (1 - x(n))^k)

Worked numbers: a planner called 4 times per request, 10% short, makes 1 - 0.9^4 = 34% of
requests late; a writer called once, 10% short, makes 10% late. A GPU moved from the writer to
the planner there saves more than it costs.

Allocation starts every component at its `min` replicas and then repeatedly gives the block of
replicas with the highest late requests saved per GPU (blocks, not single replicas, because the
saving is not concave: replicas that leave a component still overloaded save little until the
one that brings it within budget). It stops when the budget is spent or no block saves anything:
GPUs that would not change attainment stay free. If even the minimums do not fit, the minimums
are granted (bounds are the operator's hard word) and the record says so.

A `Claim` holds its capacity model as a callable; a `Need` is the same claim as plain numbers
(the late-requests curve over the counts from `min` to `wanted`), which is all the division
reads. Needs are what a shared pool keeps in its store, so that another process runs the same
division on the same numbers (`divide`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Claim:
    """One component's request for GPU replicas. `current`: the replicas it runs now (what a
    pool member holds when its pool cannot be reached and it never had a grant)."""

    key: str
    gpus_per_replica: float
    min_replicas: int
    wanted: int
    demand_rps: float  # the call rate it was sized for
    served_rps: Callable[[int], float]  # calls/s n replicas serve within the budget
    calls_per_request: float  # calls to it per ingress request
    ingress_rps: float  # ingress requests per second behind that demand
    current: int | None = None


@dataclass(frozen=True, slots=True)
class Need:
    """A claim as numbers: `late_rps[i]` is the late ingress requests/s at `min_replicas + i`
    replicas, for every count up to `wanted` (>= `min_replicas`)."""

    key: str
    gpus_per_replica: float
    min_replicas: int
    wanted: int
    late_rps: tuple[float, ...]

    def renamed(self, key: str) -> Need:
        return Need(key, self.gpus_per_replica, self.min_replicas, self.wanted, self.late_rps)

    def capped(self, wanted: int) -> Need:
        """The same need wanting at most `wanted` (never below its minimum)."""
        top = max(min(wanted, self.wanted), self.min_replicas)
        cut = self.late_rps[: top - self.min_replicas + 1]
        return Need(self.key, self.gpus_per_replica, self.min_replicas, top, cut)


@dataclass(frozen=True, slots=True)
class Allocation:
    """Replicas granted per claim key, and whether the budget bound. `note`: why the grant is
    not the division's share (a pool that could not be reached, a lapsed grant), for the
    decision record; None when it is."""

    granted: dict[str, int]
    binding: bool
    infeasible: bool  # the minimums alone exceed the budget
    gpus_used: float
    note: str | None = None


def late_requests(claim: Claim, replicas: int) -> float:
    """Ingress requests per second made late by `claim` running `replicas` (see above)."""
    if claim.demand_rps <= 0.0:
        return 0.0
    short = max(0.0, claim.demand_rps - claim.served_rps(replicas)) / claim.demand_rps
    calls = max(claim.calls_per_request, 1.0)
    return float(claim.ingress_rps * (1.0 - (1.0 - min(short, 1.0)) ** calls))


def need_of(claim: Claim) -> Need:
    """The claim as numbers (its late-requests curve from `min` to `wanted`)."""
    wanted = max(claim.wanted, claim.min_replicas)
    curve = tuple(late_requests(claim, n) for n in range(claim.min_replicas, wanted + 1))
    return Need(claim.key, claim.gpus_per_replica, claim.min_replicas, wanted, curve)


def rounded(need: Need, digits: int = 6) -> Need:
    """The need with its curve at `digits` significant digits: what a shared pool stores (a
    third of the bytes of exact floats, and late requests/s are not known to more digits);
    the member divides with these same numbers, so every process still divides alike."""
    curve = tuple(float(f"{x:.{digits}g}") for x in need.late_rps)
    return Need(need.key, need.gpus_per_replica, need.min_replicas, need.wanted, curve)


def allocate(claims: Sequence[Claim], max_gpus: float) -> Allocation:
    """Divide `max_gpus` between `claims` (see the module docstring)."""
    wanted = {c.key: max(c.wanted, c.min_replicas) for c in claims}
    total = sum(wanted[c.key] * c.gpus_per_replica for c in claims)
    if total <= max_gpus + 1e-9:  # the curves are needed only when the budget binds
        return Allocation(wanted, binding=False, infeasible=False, gpus_used=total)
    return divide([need_of(c) for c in claims], max_gpus)


def divide(needs: Sequence[Need], max_gpus: float) -> Allocation:
    """Divide `max_gpus` between `needs` (see the module docstring); `allocate` on numbers."""
    wanted = {n.key: n.wanted for n in needs}
    total = sum(n.wanted * n.gpus_per_replica for n in needs)
    if total <= max_gpus + 1e-9:
        return Allocation(wanted, binding=False, infeasible=False, gpus_used=total)
    granted = {n.key: n.min_replicas for n in needs}
    used = sum(n.min_replicas * n.gpus_per_replica for n in needs)
    if used > max_gpus + 1e-9:
        return Allocation(granted, binding=True, infeasible=True, gpus_used=used)
    curves = {n.key: np.asarray(n.late_rps, dtype=np.float64) for n in needs}
    by_key = {n.key: n for n in needs}
    while True:
        best: tuple[float, int, str] | None = None  # (saved per GPU, block, key)
        for need in needs:
            block, per_gpu = _best_block(need, curves[need.key], granted[need.key], max_gpus - used)
            if block > 0 and per_gpu > 0.0 and (best is None or per_gpu > best[0] + 1e-15):
                best = (per_gpu, block, need.key)
        if best is None:
            break
        _, block, key = best
        granted[key] += block
        used += block * by_key[key].gpus_per_replica
    return Allocation(granted, binding=True, infeasible=False, gpus_used=used)


def _best_block(
    need: Need, curve: np.typing.NDArray[np.float64], granted: int, gpus_left: float
) -> tuple[int, float]:
    """The block of replicas (1..what fits) saving the most late requests per GPU."""
    if granted >= need.wanted:
        return 0, 0.0
    if need.gpus_per_replica <= 0:
        return need.wanted - granted, math.inf  # free replicas: give them all
    fits = min(need.wanted - granted, math.floor(gpus_left / need.gpus_per_replica + 1e-9))
    if fits <= 0:
        return 0, 0.0
    at = granted - need.min_replicas
    saved = curve[at] - curve[at + 1 : at + fits + 1]
    per_gpu = saved / (np.arange(1, fits + 1) * need.gpus_per_replica)
    i = int(np.argmax(per_gpu))
    return i + 1, float(per_gpu[i])


def fit(needs: Sequence[Need], room_gpus: float) -> dict[str, int]:
    """Grants within `room_gpus` for needs that want what they may have: their division when
    their minimums fit, else each its minimum in turn as far as the room goes (the pool is
    full: the rest waits until the other members shrink)."""
    if sum(n.min_replicas * n.gpus_per_replica for n in needs) <= room_gpus + 1e-9:
        return divide(needs, max(room_gpus, 0.0)).granted
    out: dict[str, int] = {}
    left = room_gpus
    for need in needs:
        if need.gpus_per_replica <= 0:
            out[need.key] = need.wanted
            continue
        take = max(0, min(need.min_replicas, math.floor(left / need.gpus_per_replica + 1e-9)))
        out[need.key] = take
        left -= take * need.gpus_per_replica
    return out
