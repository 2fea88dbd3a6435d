"""A shared GPU budget, divided between components by their effect on end-to-end SLO attainment.

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

Several pipelines that share GPUs share a `GpuPool` by name. Each pipeline's policy claims at
its own tick; the pool divides the GPUs over the latest claims of all of them, and grants a
pipeline no more than what the others currently hold leaves, so the sum of grants in force
never exceeds the pool even while the pipelines tick at different times.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from elastiscale.controllers.base import TickContext
    from elastiscale.controllers.queueing import Sizer

Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Claim:
    """One component's request for GPU replicas."""

    key: str
    gpus_per_replica: float
    min_replicas: int
    wanted: int
    demand_rps: float  # the call rate it was sized for
    served_rps: Callable[[int], float]  # calls/s n replicas serve within the budget
    calls_per_request: float  # calls to it per ingress request
    ingress_rps: float  # ingress requests per second behind that demand


def late_requests(claim: Claim, replicas: int) -> float:
    """Ingress requests per second made late by `claim` running `replicas` (see above)."""
    if claim.demand_rps <= 0.0:
        return 0.0
    short = max(0.0, claim.demand_rps - claim.served_rps(replicas)) / claim.demand_rps
    calls = max(claim.calls_per_request, 1.0)
    return float(claim.ingress_rps * (1.0 - (1.0 - min(short, 1.0)) ** calls))


@dataclass(frozen=True, slots=True)
class Allocation:
    """Replicas granted per claim key, and whether the budget bound."""

    granted: dict[str, int]
    binding: bool
    infeasible: bool  # the minimums alone exceed the budget
    gpus_used: float


def allocate(claims: Sequence[Claim], max_gpus: float) -> Allocation:
    """Divide `max_gpus` between `claims` (see the module docstring)."""
    wanted = {c.key: max(c.wanted, c.min_replicas) for c in claims}
    total = sum(wanted[c.key] * c.gpus_per_replica for c in claims)
    if total <= max_gpus + 1e-9:
        return Allocation(wanted, binding=False, infeasible=False, gpus_used=total)
    granted = {c.key: c.min_replicas for c in claims}
    used = sum(c.min_replicas * c.gpus_per_replica for c in claims)
    if used > max_gpus + 1e-9:
        return Allocation(granted, binding=True, infeasible=True, gpus_used=used)
    curves = {c.key: _late_curve(c, wanted[c.key]) for c in claims}
    by_key = {c.key: c for c in claims}
    while True:
        best: tuple[float, int, str] | None = None  # (saved per GPU, block, key)
        for claim in claims:
            block, per_gpu = _best_block(
                claim, curves[claim.key], granted[claim.key], wanted[claim.key], max_gpus - used
            )
            if block > 0 and per_gpu > 0.0 and (best is None or per_gpu > best[0] + 1e-15):
                best = (per_gpu, block, claim.key)
        if best is None:
            break
        _, block, key = best
        granted[key] += block
        used += block * by_key[key].gpus_per_replica
    return Allocation(granted, binding=True, infeasible=False, gpus_used=used)


def _late_curve(claim: Claim, wanted: int) -> Array:
    """late_requests(claim, n) for n = 0..wanted."""
    return np.array([late_requests(claim, n) for n in range(wanted + 1)])


def _best_block(
    claim: Claim, curve: Array, granted: int, wanted: int, gpus_left: float
) -> tuple[int, float]:
    """The block of replicas (1..what fits) saving the most late requests per GPU."""
    if granted >= wanted:
        return 0, 0.0
    if claim.gpus_per_replica <= 0:
        return wanted - granted, math.inf  # free replicas: give them all
    fits = min(wanted - granted, math.floor(gpus_left / claim.gpus_per_replica + 1e-9))
    if fits <= 0:
        return 0, 0.0
    saved = curve[granted] - curve[granted + 1 : granted + fits + 1]
    per_gpu = saved / (np.arange(1, fits + 1) * claim.gpus_per_replica)
    i = int(np.argmax(per_gpu))
    return i + 1, float(per_gpu[i])


class GpuPool:
    """GPUs shared by several pipelines (see the module docstring). Thread-safe."""

    def __init__(self, name: str, max_gpus: float) -> None:
        self.name = name
        self.max_gpus = max_gpus
        self._claims: dict[str, list[Claim]] = {}
        self._granted: dict[str, dict[str, tuple[int, float]]] = {}  # replicas, gpus each
        self._lock = threading.Lock()

    def request(self, member: str, claims: Sequence[Claim]) -> Allocation:
        """Grants for `member`'s claims, given every member's latest claims."""
        with self._lock:
            self._claims[member] = list(claims)
            pooled = [_renamed(c, f"{who}/{c.key}") for who, cs in self._claims.items() for c in cs]
            overall = allocate(pooled, self.max_gpus)
            held = sum(
                n * g for who, grants in self._granted.items() if who != member
                for n, g in grants.values()
            )  # fmt: skip
            mine = {c.key: overall.granted[f"{member}/{c.key}"] for c in claims}
            room = self.max_gpus - held
            if sum(mine[c.key] * c.gpus_per_replica for c in claims) > room + 1e-9:
                capped = [_with_wanted(c, mine[c.key]) for c in claims]
                mine = allocate(capped, max(room, 0.0)).granted
            self._granted[member] = {c.key: (mine[c.key], c.gpus_per_replica) for c in claims}
            used = sum(mine[c.key] * c.gpus_per_replica for c in claims)
            return Allocation(mine, overall.binding, overall.infeasible, used)

    def granted_gpus(self) -> float:
        """GPUs held by the grants in force, over all members."""
        with self._lock:
            return sum(n * g for grants in self._granted.values() for n, g in grants.values())


def _renamed(claim: Claim, key: str) -> Claim:
    return Claim(
        key, claim.gpus_per_replica, claim.min_replicas, claim.wanted, claim.demand_rps,
        claim.served_rps, claim.calls_per_request, claim.ingress_rps,
    )  # fmt: skip


def _with_wanted(claim: Claim, wanted: int) -> Claim:
    return Claim(
        claim.key, claim.gpus_per_replica, claim.min_replicas, wanted, claim.demand_rps,
        claim.served_rps, claim.calls_per_request, claim.ingress_rps,
    )  # fmt: skip


_POOLS: dict[str, GpuPool] = {}
_POOLS_LOCK = threading.Lock()


def shared_pool(name: str, max_gpus: float) -> GpuPool:
    """The process-wide pool `name`; its size is the smallest `max_gpus` any member declared."""
    with _POOLS_LOCK:
        pool = _POOLS.get(name)
        if pool is None:
            pool = _POOLS[name] = GpuPool(name, max_gpus)
        elif max_gpus < pool.max_gpus:
            pool.max_gpus = max_gpus
        return pool


def pipeline_allocation(
    ctx: TickContext,
    wanted: Mapping[str, int],
    demand_rps: Mapping[str, float],
    sizers: Mapping[str, Sizer],
    gains: Mapping[str, Mapping[str, float]],
    rates: Mapping[str, float | None],
    gpu_pool: str | None = None,
) -> Allocation | None:
    """The GPU budget (`pipeline.max_gpus`) divided over one tick's wanted counts of the GPU
    components (None without a budget): each claim carries its demand, what its sizer serves
    per count, and its calls per ingress request; with `gpu_pool`, through that named pool
    shared with other pipelines."""
    max_gpus = ctx.config.pipeline.max_gpus
    if max_gpus is None:
        return None
    ingress_rps = sum(rates.get(i) or 0.0 for i in ctx.pipeline.ingress)
    claims = []
    for name, count in wanted.items():
        comp = ctx.pipeline.components[name]
        if not comp.is_gpu:
            continue
        calls = sum(g[name] for g in gains.values())
        claims.append(
            Claim(
                key=name,
                gpus_per_replica=comp.gpus_per_replica,
                min_replicas=comp.replicas.min,
                wanted=count,
                demand_rps=demand_rps[name],
                served_rps=sizers[name].served_rps,
                calls_per_request=calls,
                ingress_rps=max(ingress_rps, demand_rps[name] / max(calls, 1e-9)),
            )
        )
    if not claims:
        return None
    if gpu_pool is not None:
        pool = shared_pool(gpu_pool, max_gpus)
        return pool.request(ctx.config.pipeline.name, claims)
    return allocate(claims, max_gpus)
