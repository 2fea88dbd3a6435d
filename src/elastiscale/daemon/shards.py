"""Sharding units (pipelines) over daemon replicas with Kubernetes Leases.

Every replica of a fleet is configured with the same units. Each round (every
`retry_period_s`) a replica:

1. lists the fleet's Leases in one call (label `elastiscale.io/fleet=<fleet>`);
2. renews its member Lease `<fleet>-member-<identity>` (created on the first round);
3. takes the live members to be the holders of member Leases it has seen change within their
   `leaseDurationSeconds`, on its own monotonic clock (client-go's rule: another node's
   timestamps are never trusted); a released member Lease (empty holder) is not live;
4. assigns each unit to one live member by rendezvous hashing of the unit's name (the member
   with the highest hash of `member/unit`), so a member joining or leaving moves only the units
   it gains or loses;
5. for each unit it is assigned, creates, renews or takes over the unit Lease
   `<fleet>-unit-<unit>` (a `LeaseElector` round on the listed record: a stale list costs a
   409, never a double holder); a unit Lease it holds but is no longer assigned (a member
   joined) it releases, so the new owner takes it at its next round.

A replica acts on a unit only while `acting(unit)`: it holds the unit's Lease and renewed it
less than `renew_deadline_s` ago. The unit Lease alone makes two actors impossible, whatever
the members' views are; the hashing only decides who tries.

Bounds (duration D, retry R): a replica that dies (SIGKILL) renewed its Leases at most R
before; the others see that last change within R (they list every R), so its member Lease and
its unit Leases expire in their view within D + R of its death, and the new owners take the
units over at that round (a round is scheduled at the earliest expiry). The R is the lag of
seeing the last renewal: a replica never trusts another's timestamps (clocks differ), so it
times a Lease from the list that first showed the change, up to R after it was made; only a
shorter R shortens it. The daemon therefore runs with R at most one control tick (a longer
`retry_period_s` is cut to the units' shortest `control.interval_s`), and a dead replica's
units are held within D + one tick of its death, and stepped at once. A replica cut off from
the API stops acting `renew_deadline_s` after its last renewal, before anyone takes over. A
replica stopped cleanly releases its Leases: the others take its units at their next round.

`ShardCoordinator.round(mono_s, wall_s)` does one round with the times passed in (tests drive
it on a fake clock); `ShardLoop` runs it on a thread on the system clocks.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from elastiscale.adapters.kubernetes.calls import KubeCallError, call
from elastiscale.config import Config
from elastiscale.daemon.leader import (
    RELEASE_TIMEOUT_S,
    LeaseElector,
    LeaseRecord,
    LeaseSettings,
    connect_coordination,
    lease_record,
    resolve_settings,
)
from elastiscale.errors import ActuatorError, ConfigError

log = logging.getLogger("elastiscale.daemon.shards")

FLEET_LABEL = "elastiscale.io/fleet"
ROLE_LABEL = "elastiscale.io/lease"
#: Shortest pause between rounds (an expiry already past must not make the loop spin).
MIN_ROUND_S = 0.05


def _slug(text: str, room: int) -> str:
    """`text` as a DNS label part of at most `room` characters, with a short hash of the
    original so two names that slug alike (`RAG QA`, `rag-qa`) stay apart."""
    digest = hashlib.blake2b(text.encode(), digest_size=4).hexdigest()
    base = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "x"
    return f"{base[: max(1, room - 9)].rstrip('-')}-{digest}"


def member_lease_name(fleet: str, identity: str) -> str:
    """The member Lease of `identity` in `fleet` (a valid Lease name)."""
    return f"{fleet}-member-{_slug(identity, 253 - len(fleet) - 8)}"


def unit_lease_name(fleet: str, unit: str) -> str:
    """The Lease a replica holds while it acts on `unit`."""
    return f"{fleet}-unit-{_slug(unit, 253 - len(fleet) - 6)}"


def _score(member: str, unit: str) -> int:
    digest = hashlib.blake2b(f"{member}/{unit}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous_owner(unit: str, members: Iterable[str]) -> str | None:
    """The member `unit` is assigned to: the highest hash of `member/unit` (ties, which a
    64-bit hash makes negligible, go to the larger name). None when there is no member."""
    best: tuple[int, str] | None = None
    for member in members:
        key = (_score(member, unit), member)
        if best is None or key > best:
            best = key
    return best[1] if best is not None else None


@dataclass(frozen=True, slots=True)
class ShardSettings:
    """The fleet's name and this replica's Lease settings (`lease.name` is its member Lease;
    `lease.renew_s` is the retry period)."""

    fleet: str
    lease: LeaseSettings


def resolve_shard_settings(
    config: Config,
    fleet_name: str | None = None,
    identity: str | None = None,
    tick_s: float | None = None,
) -> ShardSettings:
    """The settings of `config.daemon.sharding`, defaults from the leader-election block, the
    Kubernetes actuator and the pod's environment (see `leader.resolve_settings`). With
    `tick_s` (the units' shortest control interval) the retry period is at most one tick, so
    a dead replica's units are taken over within lease duration + one tick."""
    own = config.daemon.sharding
    fleet = own.name or fleet_name
    if not fleet:
        raise ConfigError(["daemon.sharding.name: required (no fleet file names the fleet)"])
    base = resolve_settings(config, identity or own.identity)
    lease = LeaseSettings(
        name=member_lease_name(fleet, base.identity),
        namespace=own.namespace or base.namespace,
        identity=base.identity,
        duration_s=own.lease_duration_s,
        renew_s=min(own.retry_period_s, tick_s) if tick_s is not None else own.retry_period_s,
        timeout_s=own.timeout_s,
        connection=own.connection or base.connection,
        kubeconfig=own.kubeconfig or base.kubeconfig,
        context=own.context or base.context,
        renew_deadline_s=own.renew_deadline_s,
    )
    return ShardSettings(fleet=fleet, lease=lease)


@dataclass(slots=True)
class _Seen:
    resource_version: str | None
    mono_s: float


class ShardCoordinator:
    """This replica's part in the fleet (see the module docstring). Rounds run on one thread
    at a time; `acting` may be asked from any thread."""

    def __init__(
        self, api: Any, namespace: str, settings: ShardSettings, units: Sequence[str]
    ) -> None:
        if len(set(units)) != len(units):
            raise ValueError("unit names must be unique")
        self.api = api
        self.namespace = namespace
        self.settings = settings
        self.identity = settings.lease.identity
        fleet = settings.fleet
        self.member = LeaseElector(
            api, namespace, settings.lease, {FLEET_LABEL: fleet, ROLE_LABEL: "member"}
        )
        self.units: dict[str, LeaseElector] = {}
        for unit in units:
            unit_settings = dataclasses.replace(settings.lease, name=unit_lease_name(fleet, unit))
            labels = {FLEET_LABEL: fleet, ROLE_LABEL: "unit"}
            self.units[unit] = LeaseElector(api, namespace, unit_settings, labels)
        self._members_seen: dict[str, _Seen] = {}
        #: The live members at the last round (this replica's view), sorted.
        self.live: tuple[str, ...] = ()
        #: The earliest moment a Lease seen at the last round expires (for the next round).
        self._next_expiry_s = float("inf")
        self.rounds = 0
        self.failed_writes = 0

    @property
    def label_selector(self) -> str:
        return f"{FLEET_LABEL}={self.settings.fleet}"

    def acting(self, unit: str, mono_s: float) -> bool:
        """Whether this replica may act on `unit` at monotonic time `mono_s`."""
        return self.units[unit].is_leader(mono_s)

    def acting_units(self, mono_s: float) -> list[str]:
        return [unit for unit, elector in self.units.items() if elector.is_leader(mono_s)]

    def owner(self, unit: str) -> str | None:
        """Who this replica's view assigns `unit` to."""
        return rendezvous_owner(unit, self.live)

    def round(self, mono_s: float, wall_s: float) -> None:
        """One round (see the module docstring). Raises KubeCallError when the list fails
        (nothing is written then; held Leases run out on their own); a failed write of one
        Lease is logged and the others are still tried."""
        self.rounds += 1
        listing = call(
            functools.partial(self.api.list_namespaced_lease, label_selector=self.label_selector),
            self.namespace,
            timeout_s=self.settings.lease.timeout_s,
        )
        records: dict[str, tuple[str, LeaseRecord]] = {}
        for item in listing.items or ():
            labels = (item.metadata.labels or {}) if item.metadata else {}
            records[item.metadata.name] = (labels.get(ROLE_LABEL, ""), lease_record(item))
        expiries: list[float] = []
        self._write(self.member, records.get(self.member.settings.name), mono_s, wall_s)
        self.live = self._live_members(records, mono_s, expiries)
        for unit, elector in self.units.items():
            found = records.get(elector.settings.name)
            record = found[1] if found is not None else None
            if record is not None:
                elector.observe(record, mono_s)
            if rendezvous_owner(unit, self.live) == self.identity:
                self._write(elector, found, mono_s, wall_s)
                if record is not None and record.holder and record.holder != self.identity:
                    expiries.append(self._expiry(elector, record))
            elif elector.holding:
                log.info("unit %s handed off to %s", unit, rendezvous_owner(unit, self.live))
                elector.release(wall_s)
        self._next_expiry_s = min(expiries, default=float("inf"))

    def next_round_in(self, mono_s: float) -> float:
        """Seconds to the next round: the retry period, or sooner when a Lease this replica
        waits on expires sooner (so a takeover does not wait for the next regular round)."""
        retry_s = self.settings.lease.renew_s
        until_s = self._next_expiry_s - mono_s
        if until_s <= 0:
            return retry_s
        return max(MIN_ROUND_S, min(retry_s, until_s))

    def release_all(self, wall_s: float) -> None:
        """Give every held Lease up (a clean stop): units first, then the member Lease."""
        for elector in self.units.values():
            elector.release(wall_s)
        self.member.release(wall_s)

    # --- internals ----------------------------------------------------------------------------

    def _write(
        self,
        elector: LeaseElector,
        found: tuple[str, LeaseRecord] | None,
        mono_s: float,
        wall_s: float,
    ) -> None:
        try:
            elector.attempt_on(found[1] if found is not None else None, mono_s, wall_s)
        except KubeCallError:
            self.failed_writes += 1

    def _expiry(self, elector: LeaseElector, record: LeaseRecord) -> float:
        seen_s = elector.observed_mono_s
        return seen_s + (record.duration_s or self.settings.lease.duration_s)

    def _live_members(
        self,
        records: dict[str, tuple[str, LeaseRecord]],
        mono_s: float,
        expiries: list[float],
    ) -> tuple[str, ...]:
        live: set[str] = set()
        seen_names = set()
        for name, (role, record) in records.items():
            if role != "member":
                continue
            seen_names.add(name)
            if name == self.member.settings.name:
                continue  # our own: live exactly while we hold it
            seen = self._members_seen.get(name)
            if seen is None or seen.resource_version != record.resource_version:
                seen = self._members_seen[name] = _Seen(record.resource_version, mono_s)
            if not record.holder:
                continue  # released by a clean stop
            expires_s = seen.mono_s + (record.duration_s or self.settings.lease.duration_s)
            if mono_s < expires_s:
                live.add(record.holder)
                expiries.append(expires_s)
        for name in set(self._members_seen) - seen_names:
            del self._members_seen[name]  # deleted
        if self.member.is_leader(mono_s):
            live.add(self.identity)
        else:
            live.discard(self.identity)
        return tuple(sorted(live))


class ShardLoop:
    """Runs `ShardCoordinator.round` on a thread, on the system's monotonic and wall clocks.

    `connect` gives the CoordinationV1Api client and namespace (it may raise `ActuatorError`
    when Kubernetes cannot be reached; the loop retries every retry period). `on_error` is
    told of each failed round, `on_round` of each round done (on the loop's thread).
    `stop(release=True)` releases every held Lease.
    """

    def __init__(
        self,
        settings: ShardSettings,
        units: Sequence[str],
        connect: Callable[[LeaseSettings], tuple[Any, str]] = connect_coordination,
        on_error: Callable[[str], None] | None = None,
        on_round: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.unit_names = tuple(units)
        self._connect = connect
        self._on_error = on_error
        self._on_round = on_round
        self.coordinator: ShardCoordinator | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acting(self, unit: str) -> bool:
        coordinator = self.coordinator
        return coordinator is not None and coordinator.acting(unit, time.monotonic())

    def round_now(self) -> bool:
        """One round on the calling thread (before the first tick); whether it succeeded."""
        try:
            self._coordinator().round(time.monotonic(), time.time())
            return True
        except (KubeCallError, ActuatorError) as exc:
            self._failed(exc)
            return False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="shard-leases", daemon=True)
        self._thread.start()

    def stop(self, release: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=RELEASE_TIMEOUT_S)
        if release and self.coordinator is not None:
            self.coordinator.release_all(time.time())

    def _coordinator(self) -> ShardCoordinator:
        if self.coordinator is None:
            api, namespace = self._connect(self.settings.lease)
            self.coordinator = ShardCoordinator(api, namespace, self.settings, self.unit_names)
            lease = self.settings.lease
            log.info(
                "sharding fleet %s over Leases in %s as %s: %d unit(s); duration %g s, "
                "renew deadline %g s, retry every %g s",
                self.settings.fleet,
                namespace,
                lease.identity,
                len(self.unit_names),
                lease.duration_s,
                lease.deadline_s,
                lease.renew_s,
            )
        return self.coordinator

    def _run(self) -> None:
        delay_s = 0.0 if self.coordinator is None else self.settings.lease.renew_s
        while not self._stop.wait(delay_s):
            delay_s = self.settings.lease.renew_s
            try:
                coordinator = self._coordinator()
                coordinator.round(time.monotonic(), time.time())
                delay_s = coordinator.next_round_in(time.monotonic())
                if self._on_round is not None:
                    self._on_round()
            except (KubeCallError, ActuatorError) as exc:
                self._failed(exc)
            except Exception:  # the thread must outlive any bug in one round
                log.exception("shard round failed")
                self._failed(None)

    def _failed(self, exc: Exception | None) -> None:
        if exc is not None:
            log.warning("shard round: %s", exc)
        if self._on_error is not None:
            self._on_error("sharding")
