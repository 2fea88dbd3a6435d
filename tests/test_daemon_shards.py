"""Sharding units over replicas with Leases, through the official client against the fake API
server, on a fake clock: rendezvous hashing moves only the units of a member that comes or
goes; a hypothesis state machine over start, kill, clean stop, partition and heal orders (and
replicas out of phase) checks after every round that no unit has two actors, and that once
membership has been stable for lease duration + 2 retry periods every unit has exactly one
actor, the owner the hashing names among the connected replicas."""

from __future__ import annotations

import dataclasses
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from elastiscale.adapters.kubernetes.calls import KubeCallError
from elastiscale.config import load_config
from elastiscale.daemon.leader import LeaseSettings, connect_coordination
from elastiscale.daemon.shards import (
    ShardCoordinator,
    ShardSettings,
    member_lease_name,
    rendezvous_owner,
    resolve_shard_settings,
    unit_lease_name,
)
from elastiscale.errors import ConfigError
from elastiscale.testing.kubernetes import LEASES, FakeKubeAPI

DURATION_S = 6.0
DEADLINE_S = 4.0
RETRY_S = 1.0
STEP_S = RETRY_S / 4  # the fake clock moves in quarters: replicas round out of phase
WALL0_S = 1_700_000_000.0
UNITS = tuple(f"pipeline-{i}" for i in range(7))
IDENTITIES = ("r0", "r1", "r2", "r3")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def lease_settings(kubeconfig: Path, identity: str) -> LeaseSettings:
    return LeaseSettings(
        name=member_lease_name("fleet", identity),
        namespace=None,
        identity=identity,
        duration_s=DURATION_S,
        renew_s=RETRY_S,
        timeout_s=10,
        connection="kubeconfig",
        kubeconfig=str(kubeconfig),
        context=None,
        renew_deadline_s=DEADLINE_S,
    )


# --- hashing and names --------------------------------------------------------------------------


@given(
    members=st.sets(st.text("abcdefgh0123-", min_size=1, max_size=8), min_size=2, max_size=6),
    units=st.sets(st.text("xyz0123456789/-", min_size=1, max_size=12), min_size=1, max_size=40),
)
def test_a_member_leaving_moves_only_its_own_units(members: set[str], units: set[str]) -> None:
    gone = sorted(members)[0]
    rest = members - {gone}
    for unit in units:
        before = rendezvous_owner(unit, members)
        after = rendezvous_owner(unit, rest)
        assert before in members and after in rest
        if before != gone:
            assert after == before  # a unit moves only when its owner left
        assert rendezvous_owner(unit, sorted(members, reverse=True)) == before  # order-free


def test_no_member_owns_nothing() -> None:
    assert rendezvous_owner("rag", []) is None


@pytest.mark.parametrize(
    "fleet, name",
    [("platform", "RAG QA"), ("platform", "rag-qa"), ("p", "x" * 300), ("p", "a/b+c")],
)
def test_lease_names_are_valid_and_apart(fleet: str, name: str) -> None:
    for lease in (member_lease_name(fleet, name), unit_lease_name(fleet, name)):
        assert len(lease) <= 253 and _NAME.match(lease), lease
    assert unit_lease_name("platform", "RAG QA") != unit_lease_name("platform", "rag-qa")


# --- config -------------------------------------------------------------------------------------


def config_file(tmp_path: Path, sharding: dict[str, Any]) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(
        "pipeline:\n  name: p\n  slo: {latency_p95_s: 1}\n  components:\n"
        "    a: {ingress: true, capacity_per_replica: 1, service_time_s: 0.1,"
        " replicas: {min: 1, max: 3}}\n"
        f"daemon:\n  sharding: {sharding!r}\n".replace("'", '"'),
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    "sharding, message",
    [
        ({"lease_duration_s": 10, "renew_deadline_s": 10}, "must be greater than renew_deadline_s"),
        ({"renew_deadline_s": 2, "retry_period_s": 2}, "1.2 x retry_period_s = 2"),
        ({"name": "Platform"}, "'Platform' is not a valid fleet name"),
        ({"retry_s": 2}, "retry_s"),
    ],
)
def test_bad_sharding_blocks_are_refused_naming_the_field(
    tmp_path: Path, sharding: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(config_file(tmp_path, sharding))
    assert any("daemon.sharding" in p and message in p for p in caught.value.problems), (
        caught.value.problems
    )


def test_settings_take_client_go_timings_and_leader_election_defaults(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, {"enabled": True, "namespace": "ml"}))
    got = resolve_shard_settings(config, "platform", identity="pod-1")
    assert got.fleet == "platform" and got.lease.identity == "pod-1"
    assert got.lease.namespace == "ml"
    assert (got.lease.duration_s, got.lease.deadline_s, got.lease.renew_s) == (15, 10, 2)
    assert got.lease.name == member_lease_name("platform", "pod-1")
    with pytest.raises(ConfigError, match=r"daemon\.sharding\.name"):
        resolve_shard_settings(config, None)


@pytest.mark.parametrize(
    ("retry_s", "tick_s", "expected_s"),
    [(2.0, 15.0, 2.0), (2.0, 0.5, 0.5), (2.0, None, 2.0), (1.5, 1.5, 1.5)],
)
def test_the_retry_period_is_at_most_one_tick(
    tmp_path: Path, retry_s: float, tick_s: float | None, expected_s: float
) -> None:
    sharding = {"enabled": True, "retry_period_s": retry_s}
    config = load_config(config_file(tmp_path, sharding))
    got = resolve_shard_settings(config, "platform", identity="pod-1", tick_s=tick_s)
    assert got.lease.renew_s == expected_s
    assert got.lease.deadline_s == 10  # renew_deadline_s as configured


def takeover_s(
    kubeconfig: Path, lease: LeaseSettings, observer_lag_s: float, kill_after_s: float
) -> float:
    """Seconds from the SIGKILL of replica `a` until `b` acts on the unit `a` held (one the
    hashing gives `a` while both are live), each replica rounding as `ShardLoop` does
    (`next_round_in`) on a fake clock. `b` rounds `observer_lag_s` before `a` does; `a` dies
    `kill_after_s` after one of its rounds."""
    unit = next(u for u in UNITS if rendezvous_owner(u, ["a", "b"]) == "a")  # a's while live
    coordinators = {}
    for identity in ("a", "b"):
        settings = dataclasses.replace(
            lease,
            name=member_lease_name("fleet", identity),
            identity=identity,
            connection="kubeconfig",
            kubeconfig=str(kubeconfig),
        )
        client, namespace = connect_coordination(settings)
        coordinators[identity] = ShardCoordinator(
            client, namespace, ShardSettings("fleet", settings), [unit]
        )
    a, b = coordinators["a"], coordinators["b"]
    a.round(0.0, WALL0_S)  # a takes the unit before b is live
    retry_s = lease.renew_s
    next_s = {"a": retry_s, "b": retry_s - observer_lag_s}
    killed_s = 3 * retry_s + kill_after_s  # after a's fourth round
    now_s = 0.0
    while now_s < killed_s + 10 * lease.duration_s:
        who = min((n for n in next_s if n == "b" or now_s < killed_s), key=next_s.__getitem__)
        now_s = next_s[who]
        if who == "a" and now_s >= killed_s:
            del next_s["a"]  # dead: no more rounds
            continue
        coordinators[who].round(now_s, WALL0_S + now_s)
        next_s[who] = now_s + coordinators[who].next_round_in(now_s)
        assert now_s >= killed_s or not b.acting(unit, now_s)
        if now_s >= killed_s and b.acting(unit, now_s):
            return now_s - killed_s
    raise AssertionError("never taken over")


@pytest.mark.parametrize(
    ("retry_s", "tick_s", "lag_s", "kill_s"),
    [
        (3.0, 1.0, 0.01, 0.01),  # the worst phase: b listed just before a's last renewal
        (3.0, 1.0, 0.5, 0.9),
        (3.0, 1.0, 0.9, 0.5),
        (2.0, 15.0, 0.01, 0.01),  # a retry period below the tick is kept
    ],
)
def test_a_dead_replicas_unit_is_taken_over_within_lease_duration_plus_one_tick(
    tmp_path: Path, retry_s: float, tick_s: float, lag_s: float, kill_s: float
) -> None:
    sharding = {
        "enabled": True,
        "lease_duration_s": DURATION_S,
        "renew_deadline_s": 3.7,
        "retry_period_s": retry_s,
    }
    config = load_config(config_file(tmp_path, sharding))
    lease = resolve_shard_settings(config, "fleet", identity="a", tick_s=tick_s).lease
    with FakeKubeAPI() as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        took_s = takeover_s(kubeconfig, lease, lag_s * lease.renew_s, kill_s * lease.renew_s)
    assert lease.duration_s - lease.renew_s <= took_s <= lease.duration_s + min(retry_s, tick_s)
    assert took_s <= DURATION_S + tick_s


def test_the_configured_retry_period_would_miss_that_bound(tmp_path: Path) -> None:
    """The same worst phase with the retry period as configured (3 s, above the 1 s tick):
    the renewal is seen up to 3 s late, so the takeover comes after lease duration + one
    tick. What cutting the retry period to the tick prevents."""
    sharding = {
        "enabled": True,
        "lease_duration_s": DURATION_S,
        "renew_deadline_s": 3.7,
        "retry_period_s": 3.0,
    }
    config = load_config(config_file(tmp_path, sharding))
    lease = resolve_shard_settings(config, "fleet", identity="a").lease
    with FakeKubeAPI() as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        took_s = takeover_s(kubeconfig, lease, 0.01 * 3.0, 0.01 * 3.0)
    assert took_s > DURATION_S + 1.0


# --- the state machine --------------------------------------------------------------------------


class Replica:
    def __init__(self, coordinator: ShardCoordinator, started_s: float) -> None:
        self.coordinator = coordinator
        self.next_round_s = started_s
        self.partitioned = False


class Fleet(RuleBasedStateMachine):
    """Replicas of one fleet on a fake clock shared by all (each with its own offset on the
    monotonic clock, as separate hosts have)."""

    def __init__(self) -> None:
        super().__init__()
        self.api = FakeKubeAPI()
        self.api.start()
        self._dir = tempfile.TemporaryDirectory()
        self.kubeconfig = self.api.write_kubeconfig(Path(self._dir.name) / "kubeconfig")
        self.client: Any = None
        self.namespace = "default"
        self.now_s = 0.0
        self.replicas: dict[str, Replica] = {}
        self.offsets = {name: 1000.0 * i for i, name in enumerate(IDENTITIES)}
        self.last_change_s = 0.0

    def teardown(self) -> None:
        self.api.stop()
        self._dir.cleanup()

    def mono(self, identity: str) -> float:
        return self.now_s + self.offsets[identity]

    def changed(self) -> None:
        self.last_change_s = self.now_s

    def actors(self, unit: str) -> list[str]:
        return [
            name
            for name, replica in self.replicas.items()
            if replica.coordinator.acting(unit, self.mono(name))
        ]

    def check_one_actor(self) -> None:
        for unit in UNITS:
            actors = self.actors(unit)
            assert len(actors) <= 1, f"{unit} acted on by {actors} at t={self.now_s}"

    # --- membership changes -------------------------------------------------------------------

    @rule(identity=st.sampled_from(IDENTITIES))
    def start(self, identity: str) -> None:
        if identity in self.replicas:
            return
        settings = lease_settings(self.kubeconfig, identity)
        if self.client is None:
            self.client, self.namespace = connect_coordination(settings)
        coordinator = ShardCoordinator(
            self.client, self.namespace, ShardSettings("fleet", settings), UNITS
        )
        self.replicas[identity] = Replica(coordinator, self.now_s)
        self.changed()

    @precondition(lambda self: self.replicas)
    @rule(data=st.data())
    def kill(self, data: st.DataObject) -> None:
        identity = data.draw(st.sampled_from(sorted(self.replicas)))
        del self.replicas[identity]  # SIGKILL: nothing released
        self.changed()

    @precondition(lambda self: any(not r.partitioned for r in self.replicas.values()))
    @rule(data=st.data())
    def stop(self, data: st.DataObject) -> None:
        connected = sorted(n for n, r in self.replicas.items() if not r.partitioned)
        identity = data.draw(st.sampled_from(connected))
        self.replicas.pop(identity).coordinator.release_all(WALL0_S + self.now_s)
        self.changed()
        self.check_one_actor()

    @precondition(lambda self: self.replicas)
    @rule(data=st.data())
    def partition(self, data: st.DataObject) -> None:
        identity = data.draw(st.sampled_from(sorted(self.replicas)))
        self.replicas[identity].partitioned = True  # no round reaches the API
        self.changed()

    @precondition(lambda self: any(r.partitioned for r in self.replicas.values()))
    @rule(data=st.data())
    def heal(self, data: st.DataObject) -> None:
        cut = sorted(n for n, r in self.replicas.items() if r.partitioned)
        self.replicas[data.draw(st.sampled_from(cut))].partitioned = False
        self.changed()

    # --- time ---------------------------------------------------------------------------------

    def round(self, name: str, replica: Replica) -> None:
        """One round; a call that failed for want of an answer (a loaded host) is a fault
        like a partition: safety is checked through it, the liveness clock restarts."""
        coordinator = replica.coordinator
        failed = coordinator.failed_writes
        try:
            coordinator.round(self.mono(name), WALL0_S + self.now_s)
        except KubeCallError:
            self.changed()
        if coordinator.failed_writes != failed:
            self.changed()

    @rule(steps=st.integers(1, 12), data=st.data())
    def advance(self, steps: int, data: st.DataObject) -> None:
        """Move the clock quarter by quarter; replicas due round in a drawn order, and the
        one-actor rule is checked after every single round."""
        for _ in range(steps):
            self.now_s += STEP_S
            due = [name for name, r in self.replicas.items() if r.next_round_s <= self.now_s + 1e-9]
            for name in data.draw(st.permutations(due)):
                replica = self.replicas[name]
                replica.next_round_s += RETRY_S
                if not replica.partitioned:
                    self.round(name, replica)
                self.check_one_actor()

    @invariant()
    def never_two_actors(self) -> None:
        self.check_one_actor()

    @invariant()
    def every_unit_acted_on_once_membership_is_stable(self) -> None:
        connected = [n for n, r in self.replicas.items() if not r.partitioned]
        if not connected or self.now_s - self.last_change_s < DURATION_S + 2 * RETRY_S:
            return
        for unit in UNITS:
            assert self.actors(unit) == [rendezvous_owner(unit, connected)], (
                f"{unit}: actors {self.actors(unit)} at t={self.now_s}, stable since "
                f"{self.last_change_s}, connected {sorted(connected)}"
            )


Fleet.TestCase.settings = settings(
    max_examples=30, stateful_step_count=30, deadline=None, print_blob=True
)
test_fleet_state_machine = Fleet.TestCase


def test_a_clean_stop_hands_its_units_over_at_the_next_round(tmp_path: Path) -> None:
    with FakeKubeAPI() as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        coordinators = {}
        for identity in ("a", "b"):
            settings = lease_settings(kubeconfig, identity)
            client, namespace = connect_coordination(settings)
            coordinators[identity] = ShardCoordinator(
                client, namespace, ShardSettings("fleet", settings), UNITS
            )
        for t in (0.0, 1.0, 2.0):
            for c in coordinators.values():
                c.round(t, WALL0_S + t)
        a_units = set(coordinators["a"].acting_units(2.0))
        b_units = set(coordinators["b"].acting_units(2.0))
        assert a_units and b_units and a_units | b_units == set(UNITS)
        assert not a_units & b_units
        coordinators["a"].release_all(WALL0_S + 2.5)
        member = api.get(LEASES, "default", member_lease_name("fleet", "a"))
        assert member["spec"]["holderIdentity"] == ""
        coordinators["b"].round(3.0, WALL0_S + 3.0)  # far sooner than the lease duration
        assert set(coordinators["b"].acting_units(3.0)) == set(UNITS)
        assert coordinators["b"].live == ("b",)
        lease = api.get(LEASES, "default", unit_lease_name("fleet", sorted(a_units)[0]))
        assert lease["metadata"]["labels"]["elastiscale.io/lease"] == "unit"


def test_a_joining_replica_gets_its_units_within_three_rounds(tmp_path: Path) -> None:
    """The holders release what the hashing now gives the newcomer (no lease-duration wait)."""
    with FakeKubeAPI() as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        coordinators: dict[str, ShardCoordinator] = {}

        def join(identity: str) -> None:
            settings = lease_settings(kubeconfig, identity)
            client, namespace = connect_coordination(settings)
            coordinators[identity] = ShardCoordinator(
                client, namespace, ShardSettings("fleet", settings), UNITS
            )

        join("a")
        join("b")
        for t in (0.0, 1.0):
            for c in coordinators.values():
                c.round(t, WALL0_S + t)
        join("c")
        wanted = {u for u in UNITS if rendezvous_owner(u, ["a", "b", "c"]) == "c"}
        assert wanted  # seven units over three members: c owns some
        for t in (2.0, 3.0, 4.0):  # far below the 6 s lease duration
            for c in coordinators.values():
                c.round(t, WALL0_S + t)
        assert set(coordinators["c"].acting_units(4.0)) == wanted
        for identity in ("a", "b"):
            assert not wanted & set(coordinators[identity].acting_units(4.0))
