"""A shared GPU budget, divided between components by their effect on end-to-end SLO attainment
(the rule and its worked numbers: `controllers/division.py`), and GPU pools shared by several
pipelines, in one process or across daemons.

Several pipelines that share GPUs share a `GpuPool` by name. Each pipeline (a *member*, by its
pipeline or fleet-unit name) claims at its own tick; the pool divides the GPUs over the latest
needs of every member, and grants a member no more than what the others' grants in force leave,
so the sum of grants in force never exceeds the pool even while members tick at different
times, in different processes. The pool's state lives in a store (`controllers/pool_store.py`):
this process's memory by default, or a Kubernetes ConfigMap per pool
(`adapters/kubernetes/pool_store.py`, `daemon.gpu_pools`), read-modify-written as one unit.

The rules of a request, with `expiry_s` the pool's grant expiry (default 300 s):

- **Divide, then cap.** The member's share is the division of the pool over every member's
  needs (members in name order, so every process computes the same division). It gets at most
  what the pool minus the others' holdings leaves, a member's holding being per component the
  larger of its grant and the replicas it ran at its last write (a scale-down held back by a
  stabilization window keeps its GPUs counted): a member that grows waits until the others
  have shrunk, and a member that shrinks frees GPUs for the others once it has shrunk and
  written so.
- **Minimums reserved up front.** The daemon declares the pool's members from its configs
  (`declare_members`, `controllers/pool_roster.py`; a pool smaller than the sum of their
  minimums is refused at load): a declared member with no entry yet counts as holding its
  minimums (its Deployments run them before its first tick), and the first write stores
  that as its entry (`seq` 0, expired: minimums only) until the member writes its own. So
  every grant leaves every declared member's minimums free. A member no daemon declared
  (several daemons with different configs on one pool) that finds its minimums taken is
  granted what is left and its record says the pool is over-committed: its Deployments
  keep their minimums, and the others make room at their next tick, since every division
  reserves every member's minimums.
- **Write only what changed.** The entry is written when its grants or needs' counts change,
  and otherwise every `expiry_s / 4`, to show the member is alive (the late-request curves of
  an unchanged entry are refreshed then).
- **Hold when the store fails.** When the store cannot be read or written, or keeps answering
  409 past its retry budget, the member holds: each component keeps at most its last grant
  that landed (never more GPUs; less when it wants less), or, with no grant landed in this process,
  at most its current replicas. The allocation's `note` says why, for the decision record.
- **Grants lapse; dead members expire.** A member's grants are good for `expiry_s / 2` after
  the start of the write that landed them, on its own clock. Holding past that, it falls back
  to its minimums. Other members free its GPUs only after seeing its entry unchanged for
  `expiry_s` on their own clocks (as a Lease candidate does, they do not trust written times):
  they cut the entry to its minimums, which stay reserved. A member's entry only changes when
  it is written, which happens after the write started, so the member has fallen back at
  least `expiry_s / 2` before anyone grows into its GPUs: enough for its next tick to apply
  the smaller count when ticks come more often than that (`daemon.gpu_pools` checks).
  A fleet's unit that moves to another daemon replica is refreshed there under the same member
  name within the shard takeover time (lease duration + one tick), far below `expiry_s`, so
  only units nobody runs any more expire. Their minimums stay reserved until their entry is
  deleted from the store (an operator's `kubectl edit`): the pool errs on the side of less.

Without a clock (backtests, the embedded API) nothing lapses or expires and every request
writes, which is the behaviour of a pool in one process's memory.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from elastiscale.controllers.division import (
    Allocation,
    Claim,
    Need,
    allocate,
    divide,
    fit,
    late_requests,
    need_of,
    rounded,
)
from elastiscale.controllers.pool_store import (
    InProcessPoolStore,
    MemberEntry,
    PoolState,
    PoolStore,
    PoolStoreError,
)

if TYPE_CHECKING:
    from elastiscale.controllers.base import TickContext
    from elastiscale.controllers.queueing import Sizer

__all__ = [
    "DEFAULT_EXPIRY_S",
    "Allocation",
    "Claim",
    "GpuPool",
    "allocate",
    "declare_members",
    "late_requests",
    "pipeline_allocation",
    "shared_pool",
    "use_pools",
]

#: Default grant expiry of a pool (see the module docstring).
DEFAULT_EXPIRY_S = 300.0

_SEP = "\x1f"  # between member and claim key in the pooled division: in neither name


class GpuPool:
    """GPUs shared by several pipelines (see the module docstring). Thread-safe.

    `store`: where the state lives (default: this process's memory). `clock`: a monotonic clock
    for lapses and expiry, given by the runner that builds the pool (None: neither).
    """

    def __init__(
        self,
        name: str,
        max_gpus: float,
        store: PoolStore | None = None,
        clock: Callable[[], float] | None = None,
        expiry_s: float = DEFAULT_EXPIRY_S,
    ) -> None:
        self.name = name
        self.max_gpus = max_gpus
        self.store: PoolStore = store if store is not None else InProcessPoolStore()
        self.clock = clock
        self.expiry_s = expiry_s
        self._lock = threading.Lock()
        #: member -> ({need key: (GPUs granted, GPUs an expiry would leave it)}, when the
        #: write that landed them started)
        self._landed: dict[str, tuple[dict[str, tuple[float, float]], float | None]] = {}
        self._seen: dict[str, tuple[int, float]] = {}  # member -> (seq, first seen at)
        #: member -> its GPU components at their minimums: members declared up front
        #: (`declare_members`), held at their minimums until they write themselves.
        self.reserved: dict[str, tuple[Need, ...]] = {}

    def request(self, member: str, claims: Sequence[Claim], *, write: bool = True) -> Allocation:
        """Grants for `member`'s claims, given every member's latest needs. With `write`
        False (a dry run, a standby daemon), what they would be, leaving the store as it is."""
        needs = [rounded(need_of(c)) for c in claims]
        with self._lock:
            now_s = self.clock() if self.clock is not None else None
            got: list[tuple[Allocation, bool]] = []

            running = {c.key: c.current for c in claims if c.current is not None}

            def update(state: PoolState) -> PoolState | None:
                new, allocation = self._step(state, member, needs, now_s, running)
                got[:] = [(allocation, new is not None and write)]
                return new if write else None

            try:
                self.store.transact(update)
            except PoolStoreError as exc:
                # A write that timed out may have landed: hold no more than it asked for either.
                tried = got[0][0].granted if got else None
                return self._hold(member, claims, needs, now_s, str(exc), tried)
            allocation, wrote = got[0]
            if wrote:
                gpus = {}
                for n in needs:
                    count = allocation.granted[n.key]
                    floor = min(count, n.min_replicas)  # what `MemberEntry.trimmed` leaves
                    gpus[n.key] = (count * n.gpus_per_replica, floor * n.gpus_per_replica)
                self._landed[member] = (gpus, now_s)
            return allocation

    def granted_gpus(self) -> float:
        """GPUs held by the grants in force, over all members (as the store holds them)."""
        return self.store.transact(lambda state: None).granted_gpus()

    # --- one request on one read of the state --------------------------------------------------

    def _step(
        self,
        state: PoolState,
        member: str,
        needs: Sequence[Need],
        now_s: float | None,
        running: Mapping[str, int],
    ) -> tuple[PoolState | None, Allocation]:
        """The next state (None: nothing to write) and the member's allocation."""
        entries = dict(state.members)
        for who, entry in state.members.items():
            if who != member and not entry.expired and self._expired(who, entry, now_s):
                entries[who] = entry.trimmed()
        for who, minimums in self.reserved.items():
            if who != member and who not in entries:  # declared, not written yet
                grants = {n.key: n.min_replicas for n in minimums}
                entries[who] = MemberEntry(minimums, grants, 0, self.max_gpus, True)
        others = {who: e for who, e in entries.items() if who != member}
        size = min([self.max_gpus] + [e.max_gpus for e in others.values() if not e.expired])
        pooled: list[Need] = []
        for who in sorted({*others, member}):
            mine = needs if who == member else others[who].needs
            pooled += [n.renamed(f"{who}{_SEP}{n.key}") for n in mine]
        overall = divide(pooled, size)
        share = {n.key: overall.granted[f"{member}{_SEP}{n.key}"] for n in needs}
        room = size - sum(e.held_gpus() for e in others.values())
        note = None
        if sum(share[n.key] * n.gpus_per_replica for n in needs) > room + 1e-9:
            share = fit([n.capped(share[n.key]) for n in needs], room)
            if any(share[n.key] < n.min_replicas for n in needs):
                minimum = sum(n.min_replicas * n.gpus_per_replica for n in needs)
                note = (
                    f"GPU pool {self.name} over-committed: {max(room, 0.0):g} GPUs left for "
                    f"this pipeline's minimums of {minimum:g}, which run over the pool until "
                    "the other members shrink (a member the daemons' configs do not declare)"
                )
        used = sum(share[n.key] * n.gpus_per_replica for n in needs)
        allocation = Allocation(share, overall.binding, overall.infeasible, used, note)
        old = state.members.get(member)
        seq = (old.seq + 1) if old else 1
        entry = MemberEntry(tuple(needs), share, seq, self.max_gpus, False, dict(running))
        unchanged = entries == dict(state.members)
        if old is not None and unchanged and self._fresh(member, old, entry, now_s):
            return None, allocation
        entries[member] = entry
        return PoolState(entries), allocation

    def _expired(self, who: str, entry: MemberEntry, now_s: float | None) -> bool:
        """Whether `who`'s entry has been seen unchanged for `expiry_s` (on this clock)."""
        if now_s is None:
            return False
        seen = self._seen.get(who)
        if seen is None or seen[0] != entry.seq:
            self._seen[who] = (entry.seq, now_s)
            return False
        return now_s - seen[1] >= self.expiry_s

    def _fresh(self, member: str, old: MemberEntry, new: MemberEntry, now_s: float | None) -> bool:
        """Whether the stored entry stands for `new` and was written recently enough."""
        landed = self._landed.get(member)
        if now_s is None or landed is None or landed[1] is None or old.expired:
            return False
        if now_s - landed[1] >= self.expiry_s / 4:
            return False
        shape = [(n.key, n.gpus_per_replica, n.min_replicas, n.wanted) for n in new.needs]
        stored = [(n.key, n.gpus_per_replica, n.min_replicas, n.wanted) for n in old.needs]
        return (
            shape == stored
            and dict(old.grants) == dict(new.grants)
            and dict(old.running) == dict(new.running)
            and (old.max_gpus == new.max_gpus)
        )

    def _hold(
        self,
        member: str,
        claims: Sequence[Claim],
        needs: Sequence[Need],
        now_s: float | None,
        why: str,
        tried: Mapping[str, int] | None = None,
    ) -> Allocation:
        """What a member may run when the store failed (see the module docstring)."""
        landed = self._landed.get(member)
        lapsed = (
            landed is not None
            and now_s is not None
            and landed[1] is not None
            and now_s - landed[1] >= self.expiry_s / 2
        )
        granted: dict[str, int] = {}
        for claim, need in zip(claims, needs, strict=True):
            if landed is None:
                cap = claim.current if claim.current is not None else need.min_replicas
            else:
                cap = 0  # a component new since the last grant has none
                if need.key in landed[0]:  # in GPUs: a replica's size may have changed since
                    # Lapsed: what the others leave it once they see it expired (the minimums
                    # of the entry that landed, which may differ from today's).
                    held_gpus = landed[0][need.key][1 if lapsed else 0]
                    size = need.gpus_per_replica
                    cap = math.floor(held_gpus / size + 1e-9) if size > 0 else need.wanted
            if tried is not None:
                cap = min(cap, tried.get(need.key, cap))
            granted[need.key] = min(need.wanted, cap)
        if lapsed:
            rule = f"grants lapsed (none landed for {self.expiry_s / 2:g} s): minimums"
        elif landed is None:
            rule = "no grant yet: holding the current replicas"
        else:
            rule = "holding the last grant"
        used = sum(granted[n.key] * n.gpus_per_replica for n in needs)
        note = f"GPU pool {self.name} store failed ({why}); {rule}"
        return Allocation(granted, binding=True, infeasible=False, gpus_used=used, note=note)


_POOLS: dict[str, GpuPool] = {}
_POOLS_LOCK = threading.Lock()
_DECLARED: dict[str, dict[str, tuple[Need, ...]]] = {}
_FACTORY: Callable[[str, float], GpuPool] | None = None
_FACTORY_KEY: object = None


def use_pools(factory: Callable[[str, float], GpuPool] | None, key: object = None) -> None:
    """Build the pools of this process with `factory(name, max_gpus)` from now on (the daemon
    passes one for `daemon.gpu_pools: {store: kubernetes}`); None: in memory. Pools already
    built are dropped, so call it before the first tick, unless `key` (the settings the
    factory stands for) is the one already in use: then nothing changes, so several pipelines
    of one process built one after the other keep their pools."""
    global _FACTORY, _FACTORY_KEY
    with _POOLS_LOCK:
        if key is not None and key == _FACTORY_KEY:
            return
        _FACTORY, _FACTORY_KEY = factory, key
        _POOLS.clear()


def declare_members(pools: Mapping[str, Mapping[str, Sequence[Need]]]) -> None:
    """The members of each pool known before they tick: pool -> member -> its GPU components at
    their minimums (`controllers/pool_roster.py` builds them from the daemon's configs). Every
    request to a pool counts a declared member with no entry yet as holding its minimums (and
    writes that entry: `seq` 0, expired), so nobody grows into the GPUs its Deployments already
    run. Replaces what was declared before, for pools built and still to be built."""
    with _POOLS_LOCK:
        _DECLARED.clear()
        for pool, members in pools.items():
            _DECLARED[pool] = {m: tuple(needs) for m, needs in members.items()}
        for name, built in _POOLS.items():
            built.reserved = dict(_DECLARED.get(name, {}))


def shared_pool(name: str, max_gpus: float) -> GpuPool:
    """The process-wide pool `name`; its size is the smallest `max_gpus` any member declared."""
    with _POOLS_LOCK:
        pool = _POOLS.get(name)
        if pool is None:
            factory = _FACTORY
            pool = _POOLS[name] = factory(name, max_gpus) if factory else GpuPool(name, max_gpus)
            pool.reserved = dict(_DECLARED.get(name, {}))
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
    per count, its calls per ingress request and its current replicas; with `gpu_pool`,
    through that named pool shared with other pipelines (a GPU component with no count this
    tick, its data missing, holds its replicas: it claims them as its minimum, so the pool keeps
    counting the GPUs it runs)."""
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
        current = ctx.replicas.get(name)
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
                current=current.desired if current is not None else None,
            )
        )
    if gpu_pool is not None:
        claims += _held(ctx, wanted)
    if not claims:
        return None
    if gpu_pool is not None:
        pool = shared_pool(gpu_pool, max_gpus)
        return pool.request(ctx.config.pipeline.name, claims, write=ctx.acting)
    return allocate(claims, max_gpus)


def _held(ctx: TickContext, wanted: Mapping[str, int]) -> list[Claim]:
    """The GPU components without a count this tick, each claiming exactly what it runs (at
    least its minimum): it holds its replicas, and a pool member's entry must go on holding
    their GPUs, else the others would grow into them."""
    out = []
    for name, comp in ctx.pipeline.components.items():
        if not comp.is_gpu or name in wanted:
            continue
        state = ctx.replicas.get(name)
        runs = max(state.desired if state is not None else 0, comp.replicas.min)
        out.append(
            Claim(
                key=name,
                gpus_per_replica=comp.gpus_per_replica,
                min_replicas=runs,
                wanted=runs,
                demand_rps=0.0,
                served_rps=lambda n: 0.0,
                calls_per_request=1.0,
                ingress_rps=0.0,
                current=state.desired if state is not None else None,
            )
        )
    return out
