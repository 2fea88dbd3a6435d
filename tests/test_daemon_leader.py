"""Leader election on a Lease, through the official client against the fake API server, with
the monotonic and wall times passed in: who leads, when a follower may take over, renewal,
release, races and an unreachable API server."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from elastiscale.adapters.kubernetes.calls import KubeCallError
from elastiscale.config import load_config
from elastiscale.daemon.leader import (
    LeaderLoop,
    LeaseElector,
    LeaseSettings,
    connect_coordination,
    default_lease_name,
    resolve_settings,
    wants_election,
)
from elastiscale.testing.kubernetes import LEASES, FakeKubeAPI

LEASE_PATH = "/apis/coordination.k8s.io/v1/namespaces/default/leases/elastiscale-test"
WALL_S = 1_700_000_000.0


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as server:
        yield server


def settings(kubeconfig: Path, identity: str, duration_s: float = 15, renew_s: float = 2) -> Any:
    return LeaseSettings(
        name="elastiscale-test",
        namespace=None,
        identity=identity,
        duration_s=duration_s,
        renew_s=renew_s,
        timeout_s=2,
        connection="kubeconfig",
        kubeconfig=str(kubeconfig),
        context=None,
    )


def candidate(api: FakeKubeAPI, tmp_path: Path, identity: str, **kw: float) -> LeaseElector:
    config = settings(api.write_kubeconfig(tmp_path / "kubeconfig"), identity, **kw)
    client, namespace = connect_coordination(config)
    assert namespace == "default"  # from the kubeconfig's context
    return LeaseElector(client, namespace, config)


def renewed_at(spec: dict[str, Any]) -> float:
    """`spec.renewTime` (RFC 3339) as Unix seconds."""
    return datetime.datetime.fromisoformat(spec["renewTime"].replace("Z", "+00:00")).timestamp()


def lease(api: FakeKubeAPI) -> dict[str, Any]:
    spec: dict[str, Any] = api.get(LEASES, "default", "elastiscale-test")["spec"]
    return spec


def test_first_candidate_creates_the_lease_and_the_second_follows(
    api: FakeKubeAPI, tmp_path: Path
) -> None:
    a = candidate(api, tmp_path, "a")
    b = candidate(api, tmp_path, "b")
    assert a.attempt(0.0, WALL_S) is True
    assert b.attempt(0.5, WALL_S + 0.5) is False
    spec = lease(api)
    assert spec["holderIdentity"] == "a"
    assert spec["leaseDurationSeconds"] == 15 and spec["leaseTransitions"] == 0
    assert renewed_at(spec) == WALL_S
    assert b.holder == "a"


def test_renewal_keeps_the_lead_and_resets_the_followers_timer(
    api: FakeKubeAPI, tmp_path: Path
) -> None:
    """Duration 15 s: b last sees a change at 10 s, so even at 24 s it may not take over."""
    a = candidate(api, tmp_path, "a")
    b = candidate(api, tmp_path, "b")
    a.attempt(0.0, WALL_S)
    b.attempt(0.5, WALL_S)
    for t in (2.0, 4.0, 6.0, 8.0, 10.0):
        assert a.attempt(t, WALL_S + t) is True
        assert b.attempt(t + 0.1, WALL_S + t) is False
    assert renewed_at(lease(api)) == WALL_S + 10
    assert lease(api)["leaseTransitions"] == 0
    assert b.attempt(24.0, WALL_S + 24) is False
    assert b.next_attempt_in(24.0) == pytest.approx(1.1)  # sooner than renew_s = 2
    assert b.attempt(25.1, WALL_S + 25.1) is True
    assert lease(api)["holderIdentity"] == "b" and lease(api)["leaseTransitions"] == 1


@pytest.mark.parametrize(
    ("now_s", "leads"),
    [(10.0, True), (12.9, True), (13.0, False), (20.0, False)],
)
def test_a_leader_that_cannot_renew_stops_at_duration_minus_renew(
    api: FakeKubeAPI, tmp_path: Path, now_s: float, leads: bool
) -> None:
    """Duration 15 s, renew 2 s: the last renewal at 0 s holds until 13 s, before any
    follower (who saw it at 0 s or later) may take over at 15 s."""
    a = candidate(api, tmp_path, "a")
    a.attempt(0.0, WALL_S)
    api.inject(LEASE_PATH, status=503, times=None)
    with pytest.raises(KubeCallError):
        a.attempt(now_s - 0.5, WALL_S + now_s)
    assert a.is_leader(now_s) is leads


def test_release_lets_a_follower_take_over_at_its_next_attempt(
    api: FakeKubeAPI, tmp_path: Path
) -> None:
    a = candidate(api, tmp_path, "a")
    b = candidate(api, tmp_path, "b")
    a.attempt(0.0, WALL_S)
    b.attempt(0.5, WALL_S)
    a.release(WALL_S + 1)
    assert lease(api)["holderIdentity"] == ""
    assert a.is_leader(1.0) is False
    assert b.attempt(1.5, WALL_S + 1.5) is True
    assert lease(api)["holderIdentity"] == "b"
    a.release(WALL_S + 2)  # no longer the holder: nothing is written
    assert lease(api)["holderIdentity"] == "b"


def test_of_two_candidates_writing_from_one_read_only_one_wins(
    api: FakeKubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = candidate(api, tmp_path, "a")
    b = candidate(api, tmp_path, "b")
    a.attempt(0.0, WALL_S)
    a.release(WALL_S + 1)  # free for the taking
    stale = b._read()  # b reads, then a writes first
    assert a.attempt(2.0, WALL_S + 2) is True
    monkeypatch.setattr(b, "_read", lambda timeout_s=None: stale)
    assert b.attempt(2.1, WALL_S + 2.1) is False  # its write carries the old resourceVersion
    assert lease(api)["holderIdentity"] == "a"
    assert [r.status for r in api.requests_to(LEASE_PATH, "PUT")][-1] == 409


def test_two_loops_elect_one_leader_and_hand_over_on_release(
    api: FakeKubeAPI, tmp_path: Path
) -> None:
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    loops = [LeaderLoop(settings(kubeconfig, name, duration_s=1.0, renew_s=0.1)) for name in "ab"]
    for loop in loops:
        loop.start()
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(loop.is_leader() for loop in loops):
            time.sleep(0.02)
        leaders = [loop for loop in loops if loop.is_leader()]
        assert len(leaders) == 1
        time.sleep(0.3)  # a few rounds later, still exactly one
        assert [loop.is_leader() for loop in loops].count(True) == 1
        (other,) = [loop for loop in loops if loop is not leaders[0]]
        leaders[0].stop(release=True)
        started = time.monotonic()
        while time.monotonic() - started < 2 and not other.is_leader():
            time.sleep(0.02)
        assert other.is_leader()
        assert time.monotonic() - started < 0.5  # released: no need to wait out the duration
    finally:
        for loop in loops:
            loop.stop(release=False)


# --------------------------------------------------------------------------------------------
# Settings


def config_with(**sections: Any) -> Any:
    raw: dict[str, Any] = {
        "pipeline": {
            "name": "RAG QA_v2",
            "slo": {"latency_p95_s": 5},
            "components": {
                "router": {
                    "ingress": True,
                    "capacity_per_replica": 1,
                    "service_time_s": 1,
                    "replicas": {"max": 2},
                }
            },
        },
        **sections,
    }
    return load_config(raw)


KUBE = {"type": "kubernetes", "namespace": "serving", "targets": {"router": {"name": "r"}}}


@pytest.mark.parametrize(
    ("sections", "dry_run", "expected"),
    [
        ({"actuator": KUBE}, False, True),
        ({"actuator": KUBE}, True, False),
        ({"actuator": {"type": "recording"}}, False, False),
        (
            {"actuator": {"type": "recording"}, "daemon": {"leader_election": {"enabled": True}}},
            False,
            True,
        ),
        ({"actuator": KUBE, "daemon": {"leader_election": {"enabled": False}}}, False, False),
    ],
    ids=["auto with kubernetes", "dry run", "auto without", "forced on", "forced off"],
)
def test_when_a_leader_is_elected(sections: dict[str, Any], dry_run: bool, expected: bool) -> None:
    assert wants_election(config_with(**sections), dry_run) is expected


def test_defaults_come_from_the_actuator_and_the_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "elastiscale-7d9f-x2")
    monkeypatch.setenv("POD_NAMESPACE", "elsewhere")
    got = resolve_settings(config_with(actuator=KUBE))
    assert (got.name, got.namespace, got.identity) == (
        "elastiscale-rag-qa-v2",
        "serving",
        "elastiscale-7d9f-x2",
    )
    own = {"lease_name": "mine", "namespace": "ops", "identity": "me", "kubeconfig": "~/k"}
    got = resolve_settings(config_with(actuator=KUBE, daemon={"leader_election": own}))
    assert (got.name, got.namespace, got.identity, got.kubeconfig) == ("mine", "ops", "me", "~/k")
    assert resolve_settings(config_with(), identity="flag").identity == "flag"
    assert resolve_settings(config_with()).namespace == "elsewhere"


def test_default_lease_name_is_a_valid_name() -> None:
    assert default_lease_name("rag-qa") == "elastiscale-rag-qa"  # the Role in examples/kubernetes
    assert default_lease_name("__") == "elastiscale-pipeline"
