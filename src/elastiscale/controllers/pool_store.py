"""Where a shared GPU pool keeps its state: each member's latest needs and its grants in force.

A store offers one operation, `transact(update)`: read the state, let `update` compute the next
one from it, and write that only if nobody wrote in between; otherwise read again and recompute
(optimistic concurrency, as with a Kubernetes object's resourceVersion). `update` returns None
when nothing needs writing. A store that cannot read or write, or that keeps losing races past
its retry budget, raises `PoolStoreError`.

`InProcessPoolStore` keeps the state in memory behind a lock: pipelines of one process sharing
a pool, as before a store existed. The Kubernetes store (a ConfigMap per pool, updated with
resourceVersion preconditions) is `elastiscale.adapters.kubernetes.pool_store`.

The state as stored (`encode_state` / `decode_state`), one JSON document:

    {"version": 1,
     "members": {"rag": {"seq": 12, "max_gpus": 20, "expired": false,
                         "needs": [{"key": "llm", "gpus_per_replica": 1, "min_replicas": 1,
                                    "wanted": 3, "late_rps": [4.2, 1.1, 0.0]}],
                         "grants": {"llm": 3}, "running": {"llm": 2}}}}

A member is a pipeline (or fleet unit) by name, not the daemon running it, so a unit that moves
to another daemon keeps its entry. `seq` grows with every write of the member's entry: others
tell by it whether the member is still refreshing (see `controllers/budget.py`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    ValidationError,
    model_validator,
)

from elastiscale.controllers.division import Need
from elastiscale.errors import ElastiscaleError, one_line

FORMAT_VERSION = 1


class PoolStoreError(ElastiscaleError):
    """The pool's store could not be read or written this time (unreachable, refused, too many
    conflicts in a row, an unreadable object); the message is one line saying which."""


@dataclass(frozen=True, slots=True)
class MemberEntry:
    """One member's needs and the grants it holds (replicas per need key)."""

    needs: tuple[Need, ...]
    grants: Mapping[str, int]
    seq: int
    max_gpus: float
    expired: bool = False
    #: Replicas each component ran when the entry was written (its desired count), when known.
    running: Mapping[str, int] = field(default_factory=dict)

    def gpus(self) -> float:
        """GPUs its grants hold."""
        per = {n.key: n.gpus_per_replica for n in self.needs}
        return sum(count * per.get(key, 0.0) for key, count in self.grants.items())

    def held_gpus(self) -> float:
        """GPUs it holds: per component the larger of its grant and what it runs (a scale-down
        held back by a stabilization window still takes its GPUs)."""
        return sum(
            max(self.grants.get(n.key, 0), self.running.get(n.key, 0)) * n.gpus_per_replica
            for n in self.needs
        )

    def trimmed(self) -> MemberEntry:
        """The entry of a member that stopped refreshing: grants and needs cut to the minimums,
        which stay reserved (see `controllers/budget.py`)."""
        needs = tuple(n.capped(n.min_replicas) for n in self.needs)
        grants = {n.key: min(self.grants.get(n.key, 0), n.min_replicas) for n in self.needs}
        running = {k: min(v, grants.get(k, 0)) for k, v in self.running.items()}
        return MemberEntry(needs, grants, self.seq, self.max_gpus, True, running)


@dataclass(frozen=True, slots=True)
class PoolState:
    """Every member's entry, by member name."""

    members: Mapping[str, MemberEntry] = field(default_factory=dict)

    def granted_gpus(self) -> float:
        """GPUs the grants in force hold, over all members."""
        return sum(entry.gpus() for entry in self.members.values())


class PoolStore(Protocol):
    """A pool's state, read-modify-written as one unit (see the module docstring)."""

    def transact(self, update: Callable[[PoolState], PoolState | None]) -> PoolState:
        """Apply `update` to the latest state and store its answer; returns the state in force
        afterwards. Raises `PoolStoreError`."""
        ...


class InProcessPoolStore:
    """The state in this process's memory (pipelines of one process sharing a pool)."""

    def __init__(self) -> None:
        self._state = PoolState()
        self._lock = threading.Lock()

    def transact(self, update: Callable[[PoolState], PoolState | None]) -> PoolState:
        with self._lock:
            new = update(self._state)
            if new is not None:
                self._state = new
            return self._state

    def read(self) -> PoolState:
        with self._lock:
            return self._state


# ----------------------------------------------------------------------------------------------
# The stored document


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _NeedDoc(_Strict):
    key: str = Field(min_length=1)
    gpus_per_replica: NonNegativeFloat
    min_replicas: int = Field(ge=0)
    wanted: int = Field(ge=0)
    late_rps: list[NonNegativeFloat]

    @model_validator(mode="after")
    def _curve_covers_counts(self) -> _NeedDoc:
        if self.wanted < self.min_replicas:
            raise ValueError(f"wanted = {self.wanted} is below min_replicas = {self.min_replicas}")
        if len(self.late_rps) != self.wanted - self.min_replicas + 1:
            raise ValueError(
                f"late_rps has {len(self.late_rps)} values; min_replicas..wanted needs "
                f"{self.wanted - self.min_replicas + 1}"
            )
        return self


class _MemberDoc(_Strict):
    seq: int = Field(ge=0)
    max_gpus: NonNegativeFloat
    expired: bool = False
    needs: list[_NeedDoc]
    grants: dict[str, int]
    running: dict[str, int] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _grants_name_needs(self) -> _MemberDoc:
        keys = {n.key for n in self.needs}
        for field_name, counts in (("grants", self.grants), ("running", self.running)):
            for key, count in counts.items():
                if key not in keys:
                    raise ValueError(f"{field_name}.{key}: no need of that key")
                if count < 0:
                    raise ValueError(f"{field_name}.{key}: {count} is negative")
        return self


class _PoolDoc(_Strict):
    version: int
    members: dict[str, _MemberDoc]

    @model_validator(mode="after")
    def _known_version(self) -> _PoolDoc:
        if self.version != FORMAT_VERSION:
            raise ValueError(f"version {self.version} is not {FORMAT_VERSION}")
        return self


def encode_state(state: PoolState) -> str:
    """The state as its JSON document (floats written exactly, so the division is the same)."""
    members: dict[str, Any] = {}
    for name in sorted(state.members):
        entry = state.members[name]
        members[name] = {
            "seq": entry.seq,
            "max_gpus": entry.max_gpus,
            "expired": entry.expired,
            "needs": [
                {
                    "key": n.key,
                    "gpus_per_replica": n.gpus_per_replica,
                    "min_replicas": n.min_replicas,
                    "wanted": n.wanted,
                    "late_rps": list(n.late_rps),
                }
                for n in entry.needs
            ],
            "grants": dict(entry.grants),
            "running": dict(entry.running),
        }
    return json.dumps({"version": FORMAT_VERSION, "members": members}, separators=(",", ":"))


def decode_state(text: str) -> PoolState:
    """A stored document back as the state; `PoolStoreError` naming the field when it is not
    one (a hand-edited or foreign object is refused, never half read)."""
    try:
        doc = _PoolDoc.model_validate_json(text)
    except ValidationError as exc:
        raise PoolStoreError(f"the stored pool state is invalid: {one_line(exc)}") from None
    members = {}
    for name, m in doc.members.items():
        needs = tuple(
            Need(n.key, n.gpus_per_replica, n.min_replicas, n.wanted, tuple(n.late_rps))
            for n in m.needs
        )
        members[name] = MemberEntry(
            needs, dict(m.grants), m.seq, m.max_gpus, m.expired, dict(m.running)
        )
    return PoolState(members)
