"""A GPU pool kept in a ConfigMap, through the official client against the fake API server:
the budget holds under concurrent updates (threads under hypothesis, and separate processes),
409 storms, an unreachable or unreadable store holds, creation races, the same division as the
in-process pool, and the `daemon.gpu_pools` section."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elastiscale.adapters.kubernetes.pool_store import (
    DATA_KEY,
    KubernetesPoolStore,
    connect_core,
    pool_factory,
)
from elastiscale.clock import FakeClock
from elastiscale.config import Config, load_config
from elastiscale.config.daemon import GpuPoolsConfig
from elastiscale.controllers import budget
from elastiscale.controllers.budget import Claim, GpuPool, shared_pool
from elastiscale.controllers.pool_store import PoolState, decode_state
from elastiscale.daemon.runtime import install_gpu_pools
from elastiscale.errors import ConfigError
from elastiscale.testing.kubernetes import CONFIG_MAPS, FakeKubeAPI
from pool_member import PIPELINE, member_config
from test_gpu_pool import DIVISIONS, claim, expected_division, member_claims

NAME = "elastiscale-gpu-pool-shared"
PATH = f"/api/v1/namespaces/default/configmaps/{NAME}"
TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"


@pytest.fixture(scope="module")
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as server:
        yield server


@pytest.fixture
def kubeconfig(api: FakeKubeAPI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = api.write_kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig")
    yield path
    api.clear_faults()
    api.clear_requests()
    api.store._objects.pop((CONFIG_MAPS, "default", NAME), None)  # a fresh pool per test


def config_for(kubeconfig: Path, **pools: Any) -> Config:
    section = {"store": "kubernetes", "connection": "kubeconfig", "kubeconfig": str(kubeconfig)}
    section.update(pools)
    return member_config(str(PIPELINE["name"]), section)


def member_pool(
    kubeconfig: Path, max_gpus: float = 20, clock: FakeClock | None = None, **pools: Any
) -> GpuPool:
    """One daemon's view of pool `shared`: its own client, connection and clock."""
    now = (clock or FakeClock()).now_s
    return pool_factory(config_for(kubeconfig, **pools), clock=now)("shared", max_gpus)


def check_versions(states: list[PoolState], max_gpus: float) -> None:
    """Every accepted version keeps the budget and loses no member's write: a member's `seq`
    never goes back and its entry never vanishes (a lost update would do both)."""
    seqs: dict[str, int] = {}
    for state in states:
        assert state.granted_gpus() <= max_gpus + 1e-9
        for member, seq in seqs.items():
            assert member in state.members and state.members[member].seq >= seq
        seqs = {m: e.seq for m, e in state.members.items()}


def written_states(api: FakeKubeAPI) -> list[PoolState]:
    """Every state the API server accepted for the pool's ConfigMap, in order."""
    out = []
    for r in api.requests:
        accepted = r.status in (200, 201) and r.method in ("PUT", "POST")
        if accepted and r.path.startswith("/api/v1/namespaces/default/configmaps"):
            out.append(decode_state(r.body["data"][DATA_KEY]))
    return out


# --------------------------------------------------------------------------------------------
# The budget holds under concurrent updates


def run_members(
    kubeconfig: Path, rounds: dict[str, list[list[Claim]]], max_gpus: float
) -> dict[str, list[Any]]:
    """Each member on its own thread with its own client, all starting at once."""
    start = threading.Barrier(len(rounds))
    got: dict[str, list[Any]] = {m: [] for m in rounds}
    errors: list[BaseException] = []

    def run(member: str) -> None:
        try:
            pool = member_pool(kubeconfig, max_gpus, conflict_retries=50)
            start.wait()
            for claims in rounds[member]:
                got[member].append(pool.request(member, claims))
        except BaseException as exc:  # reported by the test, not lost in a thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(m,)) for m in rounds]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return got


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rounds=st.dictionaries(
        st.sampled_from(["a", "b", "c", "d"]),
        st.lists(member_claims(), min_size=1, max_size=4),
        min_size=2,
    ),
    max_gpus=st.sampled_from([4.0, 10.0]),
)
def test_the_budget_holds_under_concurrent_updates(
    api: FakeKubeAPI, kubeconfig: Path, rounds: dict[str, list[list[Claim]]], max_gpus: float
) -> None:
    api.store._objects.pop((CONFIG_MAPS, "default", NAME), None)
    api.clear_requests()
    got = run_members(kubeconfig, rounds, max_gpus)
    states = written_states(api)
    assert states, "nothing was written"
    check_versions(states, max_gpus)  # every version of the object the server accepted
    for member, allocations in got.items():
        assert all(a.note is None or "over-committed" in a.note for a in allocations)
        final = [s.members[member] for s in states if member in s.members][-1]
        assert dict(final.grants) == allocations[-1].granted


def test_a_storm_of_conflicts_holds_the_grant_then_passes(
    api: FakeKubeAPI, kubeconfig: Path
) -> None:
    pool = member_pool(kubeconfig, conflict_retries=3)
    assert pool.request("rag", [claim("llm", 6, 6.0)]).granted == {"llm": 6}
    storm = api.inject(PATH, status=409, times=4, method="PUT")
    held = pool.request("rag", [claim("llm", 9, 9.0)])
    assert held.granted == {"llm": 6} and storm.hits == 4
    assert held.note is not None and "4 writes in a row lost" in held.note
    assert pool.request("rag", [claim("llm", 9, 9.0)]).granted == {"llm": 9}
    store = pool.store
    assert isinstance(store, KubernetesPoolStore) and store.conflicts == 4
    assert dict(store.read().members["rag"].grants) == {"llm": 9}


@pytest.mark.parametrize(
    ("case", "fault", "message"),
    [
        ("server error", {"status": 503, "times": None}, "HTTP 503"),
        ("forbidden", {"status": 403, "times": None}, "HTTP 403"),
        ("too slow", {"latency_s": 1.5, "times": None}, "no answer within timeout_s = 0.5"),
    ],
)
def test_an_unreachable_store_holds_the_grant(
    api: FakeKubeAPI, kubeconfig: Path, case: str, fault: dict[str, Any], message: str
) -> None:
    pool = member_pool(kubeconfig, timeout_s=0.5)
    assert pool.request("rag", [claim("llm", 6, 6.0)]).granted == {"llm": 6}
    api.inject(PATH, method="GET", **fault)
    held = pool.request("rag", [claim("llm", 12, 12.0)])
    assert held.granted == {"llm": 6}
    assert held.note is not None and message in held.note and "\n" not in held.note


def test_a_refused_connection_holds_the_current_replicas(tmp_path: Path) -> None:
    with FakeKubeAPI() as gone:
        kubeconfig = gone.write_kubeconfig(tmp_path / "kubeconfig")
    pool = member_pool(kubeconfig, timeout_s=0.5)
    held = pool.request("rag", [claim("llm", 12, 12.0, current=3)])
    assert held.granted == {"llm": 3}
    assert held.note is not None and "unreachable" in held.note


def test_an_unreadable_object_is_refused_and_held(api: FakeKubeAPI, kubeconfig: Path) -> None:
    pool = member_pool(kubeconfig)
    api.store.create(CONFIG_MAPS, "default", {"metadata": {"name": NAME}, "data": {DATA_KEY: "["}})
    held = pool.request("rag", [claim("llm", 4, 4.0, current=2)])
    assert held.granted == {"llm": 2}
    assert held.note is not None and f"data.{DATA_KEY}: the stored pool state is invalid" in (
        held.note
    )


def test_two_members_creating_the_object_at_once_both_land(
    api: FakeKubeAPI, kubeconfig: Path
) -> None:
    a, b = member_pool(kubeconfig), member_pool(kubeconfig)
    inner = b.store
    assert isinstance(inner, KubernetesPoolStore)

    class Racing:
        """b's store, letting `a` create the object between b's read and b's create."""

        def transact(self, update: Callable[[PoolState], PoolState | None]) -> PoolState:
            raced: list[bool] = []

            def late(state: PoolState) -> PoolState | None:
                if not raced:
                    raced.append(True)
                    assert not state.members  # b read "not found"
                    a.request("a", [claim("llm", 5, 5.0)])
                return update(state)

            return inner.transact(late)

    b.store = Racing()
    assert b.request("b", [claim("llm", 5, 5.0)]).granted == {"llm": 5}
    posts = [r.status for r in api.requests_to("/api/v1/namespaces/default/configmaps", "POST")]
    assert sorted(posts) == [201, 409]
    state = decode_state(api.get(CONFIG_MAPS, "default", NAME)["data"][DATA_KEY])
    assert set(state.members) == {"a", "b"} and state.granted_gpus() == 10


# --------------------------------------------------------------------------------------------
# The same division as the in-process pool


@pytest.mark.parametrize(("case", "members", "max_gpus"), DIVISIONS, ids=[c[0] for c in DIVISIONS])
def test_the_same_division_as_in_one_process(
    api: FakeKubeAPI,
    kubeconfig: Path,
    case: str,
    members: dict[str, list[Claim]],
    max_gpus: float,
) -> None:
    clock = FakeClock()
    views = {m: member_pool(kubeconfig, max_gpus, clock) for m in members}
    local = GpuPool("shared", max_gpus)
    got: dict[str, Any] = {}
    for _ in range(3):
        for who in members:
            got[who] = views[who].request(who, members[who]).granted
            assert got[who] == local.request(who, members[who]).granted
        clock.advance(15.0)
    assert got == expected_division(members, max_gpus)


# --------------------------------------------------------------------------------------------
# Separate processes


def test_members_in_separate_processes_never_exceed_the_budget(
    api: FakeKubeAPI, kubeconfig: Path
) -> None:
    api.inject(PATH, latency_s=0.01, method="GET", times=None)  # reads overlap: writes race
    env = {"PYTHONPATH": f"{SRC}:{TESTS}", "PATH": "/usr/bin:/bin"}
    script = str(TESTS / "pool_member.py")
    procs = [
        subprocess.Popen(
            [sys.executable, script, str(kubeconfig), f"unit-{i}", str(i), "25", "10"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(3)
    ]
    # All connected before any requests: their rounds overlap whatever each start-up took.
    ready = [p.stdout.readline() if p.stdout else "" for p in procs]
    assert ready == ["ready\n"] * 3, [p.communicate(timeout=120)[1] for p in procs]
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outputs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert len(out.splitlines()) == 25
    states = written_states(api)
    assert len(states) >= 25
    check_versions(states, 10)
    for i, (out, _) in enumerate(outputs):
        last = json.loads(out.splitlines()[-1])
        assert last["granted"] == dict(states[-1].members[f"unit-{i}"].grants)
    conflicts = [r for r in api.requests_to(PATH, "PUT") if r.status == 409]
    assert conflicts, "the members never raced: the test did not test concurrency"


# --------------------------------------------------------------------------------------------
# The config section and the daemon's wiring


def daemon_file(tmp_path: Path, name: str, kubeconfig: Path) -> Path:
    trace = TESTS.parent / "examples/traces/azure_llm_2023_conv_1s.csv"
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"pipeline:\n  name: {name}\n  slo: {{latency_p95_s: 30}}\n  max_gpus: 6\n"
        "  components:\n"
        "    router: {ingress: true, capacity_per_replica: 2, service_time_s: 0.05,"
        " replicas: {min: 1, max: 40}}\n"
        "    llm: {capacity_per_replica: 1.5, service_time_s: 4, startup_s: 60,"
        " gpus_per_replica: 1, replicas: {min: 1, max: 20}}\n"
        "  edges: [{from: router, to: llm, fanout: 3}]\n"
        "policies: [{name: elastiscale, params: {gpu_pool: shared}}]\n"
        f"metrics: {{type: trace, path: {trace}, loop: true}}\n"
        "actuator: {type: dry-run}\n"
        "daemon:\n  gpu_pools: {store: kubernetes, connection: kubeconfig,"
        f" kubeconfig: {kubeconfig}}}\n",
        encoding="utf-8",
    )
    return path


def test_two_daemons_share_one_pool_through_its_configmap(
    api: FakeKubeAPI, kubeconfig: Path, tmp_path: Path
) -> None:
    """`elastiscale run --once` for two pipelines in two processes: the first takes the pool
    (each wants 18 GPUs of 6), the second finds it full; the ConfigMap holds both."""
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    notes: dict[str, list[Any]] = {}  # the llm's proposal details in each journal
    for name in ("rag", "agent"):
        journal = tmp_path / f"{name}.jsonl"
        command = [sys.executable, "-m", "elastiscale.cli", "run", str(daemon_file(tmp_path,
                   name, kubeconfig)), "--once", "--journal", str(journal),
                   "--listen", "127.0.0.1:0"]  # fmt: skip
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        records = [json.loads(line) for line in journal.read_text().splitlines()]
        notes[name] = [
            r["proposals"][0]["details"]
            for r in records
            if r.get("kind") == "decision" and r["component"] == "llm"
        ]
    state = decode_state(api.get(CONFIG_MAPS, "default", NAME)["data"][DATA_KEY])
    assert set(state.members) == {"rag", "agent"} and state.granted_gpus() <= 6
    assert dict(state.members["rag"].grants) == {"llm": 6}
    assert dict(state.members["agent"].grants) == {"llm": 0}  # held at min 1 by its bounds
    assert notes["rag"][0]["budget_granted"] == 6
    assert notes["agent"] == []  # 1 -> 1: unchanged, so not journaled


def test_the_daemon_keeps_pools_in_configmaps(kubeconfig: Path, api: FakeKubeAPI) -> None:
    config = config_for(kubeconfig)
    try:
        install_gpu_pools(config, dry_run=False)
        pool = shared_pool("shared", 8)
        assert isinstance(pool.store, KubernetesPoolStore) and pool.store.name == NAME
        install_gpu_pools(config, dry_run=False)  # a second unit of the same daemon
        assert shared_pool("shared", 8) is pool
        install_gpu_pools(config, dry_run=True)  # a dry run takes no GPUs from others
        assert not isinstance(shared_pool("shared", 8).store, KubernetesPoolStore)
    finally:
        budget.use_pools(None)


def test_pools_stay_in_process_by_default() -> None:
    assert GpuPoolsConfig().store == "in-process"
    install_gpu_pools(Config.model_validate(config_for(Path("x")).model_dump() | {
        "daemon": {}}), dry_run=False)  # fmt: skip
    assert not isinstance(shared_pool("default-pool", 4).store, KubernetesPoolStore)
    budget.use_pools(None)


BAD_SECTIONS = [
    ({"store": "etcd"}, "daemon.gpu_pools.store: Input should be 'in-process' or 'kubernetes'"),
    ({"namespace": "Serving"}, "daemon.gpu_pools.namespace: 'Serving' is not a valid namespace"),
    ({"names": {"a": "Big_Name"}}, "daemon.gpu_pools.names: a: 'Big_Name' is not a valid"),
    ({"expiry_s": 30}, "daemon.gpu_pools.expiry_s = 30 must be at least four control intervals"),
    ({"conflict_retries": -1}, "daemon.gpu_pools.conflict_retries: Input should be greater"),
]


@pytest.mark.parametrize(("section", "message"), BAD_SECTIONS, ids=[m for _, m in BAD_SECTIONS])
def test_a_bad_section_is_refused_in_one_line(
    tmp_path: Path, section: dict[str, Any], message: str
) -> None:
    path = tmp_path / "pipeline.yaml"
    doc = {
        "pipeline": PIPELINE,
        "daemon": {"gpu_pools": {"store": "kubernetes", **section}},
    }
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert any(message in p for p in err.value.problems), err.value.problems
    assert all("\n" not in p for p in err.value.problems)


def test_a_pool_name_that_makes_no_object_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    doc = {
        "pipeline": PIPELINE,
        "policies": [{"name": "elastiscale", "params": {"gpu_pool": "Team A"}}],
        "daemon": {"gpu_pools": {"store": "kubernetes"}},
    }
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert any("set daemon.gpu_pools.names.Team A" in p for p in err.value.problems)


def test_the_connection_defaults_to_the_kubernetes_actuator(kubeconfig: Path) -> None:
    config = Config.model_validate(
        {
            "pipeline": PIPELINE,
            "actuator": {
                "type": "kubernetes",
                "connection": "kubeconfig",
                "kubeconfig": str(kubeconfig),
                "namespace": "serving",
                "targets": {"llm": {"name": "llm"}},
            },
            "daemon": {"gpu_pools": {"store": "kubernetes"}},
        }
    )
    _, namespace = connect_core(config.daemon.gpu_pools, config)
    assert namespace == "serving"


def test_a_state_too_large_for_a_configmap_is_refused_in_one_line(
    api: FakeKubeAPI, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from elastiscale.adapters.kubernetes import pool_store

    pool = member_pool(kubeconfig)
    assert pool.request("rag", [claim("llm", 4, 4.0)]).granted == {"llm": 4}
    monkeypatch.setattr(pool_store, "MAX_BYTES", 300)
    held = pool.request("rag", [claim("llm", 40, 40.0)])
    assert held.granted == {"llm": 4}
    assert held.note is not None and "over the 300 a ConfigMap can hold: split the pool" in (
        held.note
    )


def test_the_fake_serves_configmaps_as_the_api_server_does(
    api: FakeKubeAPI, kubeconfig: Path
) -> None:
    """Through the official client: create, a second create (409 AlreadyExists), a replace with
    a stale resourceVersion (409 Conflict), one with the current one (accepted, new version)."""
    from kubernetes.client import ApiException

    core, namespace = connect_core(config_for(kubeconfig).daemon.gpu_pools, config_for(kubeconfig))
    body = {"metadata": {"name": NAME}, "data": {"k": "1"}}
    made = core.create_namespaced_config_map(namespace, body)
    with pytest.raises(ApiException) as exists:
        core.create_namespaced_config_map(namespace, body)
    assert exists.value.status == 409 and "already exists" in exists.value.body
    version = made.metadata.resource_version
    fresh = {"metadata": {"name": NAME, "resourceVersion": version}, "data": {"k": "2"}}
    replaced = core.replace_namespaced_config_map(NAME, namespace, fresh)
    assert replaced.data == {"k": "2"} and replaced.metadata.resource_version != version
    with pytest.raises(ApiException) as stale:
        core.replace_namespaced_config_map(NAME, namespace, fresh)  # the old version again
    assert stale.value.status == 409 and "has been modified" in stale.value.body
    assert core.read_namespaced_config_map(NAME, namespace).data == {"k": "2"}
