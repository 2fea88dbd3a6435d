"""The Kubernetes actuator against the fake API server, through the official client: scaling
Deployments, StatefulSets and custom resources, reading desired and ready counts, 409s,
typed failures, timeouts, one change at a time, other autoscalers, in-cluster config, and the
engine driving it for a tick."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elastiscale import (
    Engine,
    Failure,
    FakeClock,
    Observation,
    Proposal,
    TickContext,
    load_config,
    registry,
)
from elastiscale.adapters.contract import OtherAutoscalerError
from elastiscale.adapters.kubernetes.actuator import KubernetesActuator
from elastiscale.config import Config
from elastiscale.errors import ActuatorError, ConfigError
from elastiscale.testing.kubernetes import (
    DEPLOYMENTS,
    INFERENCE_SERVICES,
    LEADER_WORKER_SETS,
    STATEFULSETS,
    FakeKubeAPI,
)

NS = "serving"
ROUTER_SCALE = f"/apis/apps/v1/namespaces/{NS}/deployments/router/scale"
LLM_SCALE = f"/apis/leaderworkerset.x-k8s.io/v1/namespaces/{NS}/leaderworkersets/llm/scale"
TARGETS: dict[str, Any] = {
    "router": {"kind": "Deployment", "name": "router"},
    "retriever": {"kind": "StatefulSet", "name": "vector-db"},
    "llm": {"kind": "LeaderWorkerSet", "api_version": "leaderworkerset.x-k8s.io/v1", "name": "llm"},
}


def make_config(actuator: Mapping[str, Any] | None = None) -> Config:
    def component(**extra: Any) -> dict[str, Any]:
        return {"capacity_per_replica": 10, "service_time_s": 0.1, "replicas": {"max": 20}, **extra}

    raw: dict[str, Any] = {
        "pipeline": {
            "name": "rag",
            "slo": {"latency_p95_s": 10},
            "components": {
                "router": component(ingress=True),
                "retriever": component(),
                "llm": component(startup_s=240, gpus_per_replica=1),
            },
            "edges": [
                {"from": "router", "to": "retriever", "fanout": 1},
                {"from": "router", "to": "llm", "fanout": 2},
            ],
        },
        "actuator": {"type": "kubernetes", "targets": TARGETS, **(actuator or {})},
    }
    return load_config(raw)


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI(token="t0ken") as fake:
        fake.add_deployment(NS, "router", replicas=2)
        fake.add_statefulset(NS, "vector-db", replicas=1)
        fake.add_workload(LEADER_WORKER_SETS, NS, "llm", replicas=1)
        yield fake


@pytest.fixture
def kubeconfig(api: FakeKubeAPI, tmp_path: Path) -> Path:
    return api.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)


def actuator_for(
    kubeconfig: Path, clock: FakeClock | None = None, **options: Any
) -> KubernetesActuator:
    config = make_config({"kubeconfig": str(kubeconfig), "connection": "kubeconfig", **options})
    assert config.actuator is not None
    return KubernetesActuator(config, config.actuator.options(), clock=clock)


@pytest.fixture
def actuator(kubeconfig: Path) -> Iterator[KubernetesActuator]:
    with actuator_for(kubeconfig) as built:
        yield built


# --------------------------------------------------------------------------------------------
# Reading and scaling


def test_reads_desired_and_ready_of_every_kind(
    api: FakeKubeAPI, actuator: KubernetesActuator
) -> None:
    api.set_status(DEPLOYMENTS, NS, "router", replicas=2, readyReplicas=1)
    states = actuator.read(["router", "retriever", "llm"])
    assert {n: (s.desired, s.ready) for n, s in states.items()} == {
        "router": (2, 2),  # the scale's status counts created pods
        "retriever": (1, 1),
        "llm": (1, 1),
    }
    assert actuator.namespace == NS  # from the kubeconfig context


def test_ready_from_workload_reads_ready_replicas(api: FakeKubeAPI, kubeconfig: Path) -> None:
    api.set_status(DEPLOYMENTS, NS, "router", replicas=3, readyReplicas=1)
    api.set_status(STATEFULSETS, NS, "vector-db", replicas=1, readyReplicas=0)
    api.set_status(LEADER_WORKER_SETS, NS, "llm", replicas=1, readyReplicas=1)
    with actuator_for(kubeconfig, ready_from="workload") as actuator:
        states = actuator.read(["router", "retriever", "llm"])
    assert {n: s.ready for n, s in states.items()} == {"router": 1, "retriever": 0, "llm": 1}


@pytest.mark.parametrize(
    ("component", "rtype", "name", "content_type"),
    [
        ("router", DEPLOYMENTS, "router", "application/strategic-merge-patch+json"),
        ("retriever", STATEFULSETS, "vector-db", "application/strategic-merge-patch+json"),
        ("llm", LEADER_WORKER_SETS, "llm", "application/merge-patch+json"),
    ],
)
def test_scale_each_kind(
    api: FakeKubeAPI,
    actuator: KubernetesActuator,
    component: str,
    rtype: Any,
    name: str,
    content_type: str,
) -> None:
    result = actuator.scale(component, 7)
    assert result.ok, result.message
    assert api.replicas(rtype, NS, name) == 7
    patches = [r for r in api.requests if r.method == "PATCH"]
    assert len(patches) == 1
    assert patches[0].content_type == content_type
    assert patches[0].body["spec"] == {"replicas": 7}
    assert patches[0].body["metadata"]["resourceVersion"]  # a conditional write
    assert patches[0].headers["authorization"] == "Bearer t0ken"


def test_inference_service_and_scale_to_zero(api: FakeKubeAPI, kubeconfig: Path) -> None:
    api.add_workload(INFERENCE_SERVICES, NS, "llm-isvc", replicas=2)
    targets = {
        **TARGETS,
        "llm": {
            "kind": "InferenceService",
            "api_version": "serving.kserve.io/v1beta1",
            "name": "llm-isvc",
        },
    }
    config = make_config({"kubeconfig": str(kubeconfig), "targets": targets})
    assert config.actuator is not None
    with KubernetesActuator(config, config.actuator.options()) as actuator:
        assert actuator.scale("llm", 0).ok
        assert actuator.read(["llm"])["llm"].desired == 0  # spec.replicas omitted at 0
        assert actuator.scale("llm", 1).ok
    assert api.replicas(INFERENCE_SERVICES, NS, "llm-isvc") == 1


def test_scaling_to_the_current_count_writes_nothing(
    api: FakeKubeAPI, actuator: KubernetesActuator
) -> None:
    actuator.read(["router"])
    assert actuator.scale("router", 2).ok
    assert actuator.scale("router", 2).ok
    assert not [r for r in api.requests if r.method == "PATCH"]


def test_stale_read_gives_409_then_rereads_and_retries(
    api: FakeKubeAPI, actuator: KubernetesActuator
) -> None:
    actuator.read(["router"])  # resourceVersion remembered
    api.set_replicas(DEPLOYMENTS, NS, "router", 4)  # another writer moves it
    result = actuator.scale("router", 6)
    assert result.ok, result.message
    assert api.replicas(DEPLOYMENTS, NS, "router") == 6
    assert [(r.method, r.status) for r in api.requests_to(ROUTER_SCALE)][-3:] == [
        ("PATCH", 409),
        ("GET", 200),
        ("PATCH", 200),
    ]


def test_conflicts_beyond_the_retries_are_a_conflict(api: FakeKubeAPI, kubeconfig: Path) -> None:
    api.inject(ROUTER_SCALE, status=409, times=None, method="PATCH")
    with actuator_for(kubeconfig, conflict_retries=2) as actuator:
        result = actuator.scale("router", 5)
    assert result.failure is Failure.CONFLICT
    assert len(list(api.requests_to(ROUTER_SCALE, "PATCH"))) == 3
    assert api.replicas(DEPLOYMENTS, NS, "router") == 2


@pytest.mark.parametrize(
    ("status", "failure"),
    [
        (403, Failure.FORBIDDEN),
        (404, Failure.NOT_FOUND),
        (500, Failure.UNAVAILABLE),
        (503, Failure.UNAVAILABLE),
        (422, Failure.INVALID),
        (429, Failure.THROTTLED),
    ],
)
def test_http_errors_are_typed_failures(
    api: FakeKubeAPI, actuator: KubernetesActuator, status: int, failure: Failure
) -> None:
    api.inject(ROUTER_SCALE, status=status, method="PATCH", retry_after_s=7)
    result = actuator.scale("router", 5)
    assert result.failure is failure
    assert f"HTTP {status}" in result.message
    assert result.retry_after_s == 7.0
    assert api.replicas(DEPLOYMENTS, NS, "router") == 2


def test_missing_workload_is_not_found(api: FakeKubeAPI, kubeconfig: Path) -> None:
    targets = {**TARGETS, "router": {"name": "gone"}}
    config = make_config({"kubeconfig": str(kubeconfig), "targets": targets})
    assert config.actuator is not None
    with KubernetesActuator(config, config.actuator.options()) as actuator:
        assert "router" not in actuator.read(["router", "llm"])
        assert actuator.read_failures["router"].failure is Failure.NOT_FOUND
        result = actuator.scale("router", 3)
    assert result.failure is Failure.NOT_FOUND
    assert 'deployments.apps "gone" not found' in result.message


def test_slow_api_server_times_out_as_unavailable(api: FakeKubeAPI, kubeconfig: Path) -> None:
    api.inject(ROUTER_SCALE, latency_s=2.0, times=None)
    with actuator_for(kubeconfig, timeout_s=0.2) as actuator:
        result = actuator.scale("router", 5)
        states = actuator.read(["router", "llm"])
    assert result.failure is Failure.UNAVAILABLE
    assert "timeout_s = 0.2" in result.message
    assert set(states) == {"llm"}  # the slow one is left out, the others still read


def test_unreachable_api_server(tmp_path: Path) -> None:
    with FakeKubeAPI() as gone:
        kubeconfig = gone.write_kubeconfig(tmp_path / "kubeconfig")
    with pytest.raises(ActuatorError, match="cannot check for other autoscalers"):
        actuator_for(kubeconfig, timeout_s=1)
    with actuator_for(kubeconfig, timeout_s=1, allow_other_autoscalers=True) as actuator:
        with pytest.raises(ActuatorError, match="unavailable"):
            actuator.read(["router", "llm"])
        assert actuator.scale("router", 3).failure is Failure.UNAVAILABLE


# --------------------------------------------------------------------------------------------
# One change at a time


def test_a_change_waits_until_the_controller_has_taken_the_last_one(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    with FakeKubeAPI(status_follows_spec=False) as api:
        api.add_deployment(NS, "router", replicas=2)
        api.add_statefulset(NS, "vector-db", replicas=1)
        api.add_workload(LEADER_WORKER_SETS, NS, "llm", replicas=1)
        config_path = api.write_kubeconfig(tmp_path / "slow", namespace=NS)
        with actuator_for(config_path, clock=clock, settle_timeout_s=60) as actuator:
            assert actuator.scale("router", 4).ok
            assert actuator.scale("router", 6).ok  # more on top of a scale-up in progress
            held = actuator.scale("router", 3)  # but not less
            assert held.failure is Failure.IN_PROGRESS
            assert "change to 6 replicas" in held.message
            assert actuator.scale("router", 6).ok  # asking for what was written: no-op
            assert actuator.scale("llm", 3).ok  # other targets are independent

            actuator.read(["router"])  # seen while still in progress
            api.set_status(DEPLOYMENTS, NS, "router", replicas=6)  # the controller caught up
            assert actuator.scale("router", 5).ok  # decided on a fresh read, not the old one
            clock.advance(59)
            # After a scale-down, even a scale-up waits for it (or for the settle timeout).
            assert actuator.scale("router", 7).failure is Failure.IN_PROGRESS
            clock.advance(1)  # the settle timeout has passed: a stuck target is not frozen
            assert actuator.scale("router", 7).ok
        assert api.replicas(DEPLOYMENTS, NS, "router") == 7


# --------------------------------------------------------------------------------------------
# Other autoscalers


@pytest.mark.parametrize(
    ("add", "names"),
    [
        (lambda api: api.add_hpa(NS, "router-hpa", "Deployment", "router"), "router-hpa"),
        (lambda api: api.add_hpa(NS, "db", "StatefulSet", "vector-db"), "db"),
        (lambda api: api.add_scaled_object(NS, "router-keda", "router"), "router-keda"),
        (
            lambda api: api.add_scaled_object(
                NS, "lws", "llm", "LeaderWorkerSet", "leaderworkerset.x-k8s.io/v1"
            ),
            "lws",
        ),
    ],
)
def test_another_autoscaler_on_a_target_stops_start_up(
    api: FakeKubeAPI, kubeconfig: Path, add: Any, names: str
) -> None:
    add(api)
    with pytest.raises(OtherAutoscalerError, match=f"{NS}/{names} scales") as exc:
        actuator_for(kubeconfig)
    assert "allow_other_autoscalers: true" in str(exc.value)
    with actuator_for(kubeconfig, allow_other_autoscalers=True) as actuator:
        assert len(actuator.check_other_autoscalers()) == 1


@pytest.mark.parametrize(
    "add",
    [
        lambda api: api.add_hpa(NS, "other", "Deployment", "some-other-app"),
        lambda api: api.add_hpa(NS, "same-name", "StatefulSet", "router"),  # another kind
        lambda api: api.add_hpa("elsewhere", "router", "Deployment", "router"),  # other ns
        lambda api: api.add_scaled_object(NS, "k", "llm"),  # KEDA default: a Deployment
    ],
)
def test_autoscalers_of_other_workloads_are_no_fight(
    api: FakeKubeAPI, kubeconfig: Path, add: Any
) -> None:
    add(api)
    with actuator_for(kubeconfig) as actuator:
        assert actuator.check_other_autoscalers() == []


def test_no_keda_installed_is_fine_but_a_refused_list_is_not(
    api: FakeKubeAPI, kubeconfig: Path
) -> None:
    api.inject(f"/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects", status=404)
    actuator_for(kubeconfig).close()
    api.inject(
        f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers", status=403, times=2
    )
    with pytest.raises(ActuatorError, match="grant 'list'"):
        actuator_for(kubeconfig)
    actuator_for(kubeconfig, allow_other_autoscalers=True).close()  # a warning only


# --------------------------------------------------------------------------------------------
# Connection


def make_certificate(directory: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = directory / "ca.crt", directory / "tls.key"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_in_cluster_config_with_service_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    cert, key = make_certificate(account)
    (account / "token").write_text("pod-token")  # as mounted: no trailing newline
    (account / "namespace").write_text("in-pod\n")
    with FakeKubeAPI(token="pod-token", certfile=cert, keyfile=key) as api:
        api.add_deployment("in-pod", "router", replicas=1)
        api.add_statefulset("in-pod", "vector-db", replicas=1)
        api.add_workload(LEADER_WORKER_SETS, "in-pod", "llm", replicas=1)
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(api.port))
        config = make_config({"service_account_dir": str(account)})  # connection: auto
        assert config.actuator is not None
        with KubernetesActuator(config, config.actuator.options()) as actuator:
            assert actuator.namespace == "in-pod"
            assert actuator.scale("router", 3).ok
        assert api.replicas(DEPLOYMENTS, "in-pod", "router") == 3
        assert api.requests[-1].headers["authorization"].lower() == "bearer pod-token"


def test_in_cluster_without_a_service_account_is_a_clear_error(tmp_path: Path) -> None:
    config = make_config({"connection": "in-cluster", "service_account_dir": str(tmp_path)})
    assert config.actuator is not None
    with pytest.raises(ActuatorError, match="cannot load the in-cluster Kubernetes config"):
        KubernetesActuator(config, config.actuator.options())


# --------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    ("actuator", "problem"),
    [
        ({"timout_s": 3}, "actuator.timout_s: unknown key"),
        ({"ready_from": "pods"}, "actuator.ready_from:"),
        ({"targets": {**TARGETS, "retriver": {"name": "x"}}}, "unknown component 'retriver'"),
        (
            {"targets": {k: v for k, v in TARGETS.items() if k != "llm"}},
            "no target for component 'llm'",
        ),
        (
            {"targets": {**TARGETS, "router": {"name": "Router"}}},
            "actuator.targets.router: name 'Router'",
        ),
        (
            {"targets": {**TARGETS, "llm": {"kind": "LeaderWorkerSet", "name": "llm"}}},
            "needs api_version",
        ),
        (
            {"targets": {**TARGETS, "router": {"name": "r", "api_version": "apps/v2"}}},
            "served by apps/v1",
        ),
        (
            {"targets": {**TARGETS, "router": {"name": "r", "replicas": 3}}},
            "targets.router.replicas: unknown key",
        ),
        ({"namespace": "Serving"}, "namespace 'Serving' is not a valid namespace"),
        ({"conflict_retries": -1}, "actuator.conflict_retries:"),
    ],
)
def test_bad_actuator_sections_are_named(actuator: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as exc:
        make_config(actuator)
    assert any(problem in line for line in exc.value.problems), exc.value.problems


def test_options_built_by_hand_are_checked_against_the_pipeline(kubeconfig: Path) -> None:
    config = make_config()
    with pytest.raises(ConfigError, match="no target for component 'llm'"):
        KubernetesActuator(
            config,
            {
                "kubeconfig": str(kubeconfig),
                "targets": {"router": {"name": "router"}, "retriever": {"name": "r"}},
            },
        )


# --------------------------------------------------------------------------------------------
# The engine driving it


class Fixed:
    name = "fixed"

    def __init__(self, counts: Mapping[str, int]) -> None:
        self.counts = counts

    def propose(self, ctx: TickContext) -> dict[str, Proposal]:
        return {c: Proposal(self.name, n, "fixed") for c, n in self.counts.items()}


class Demand:
    def observe(self, components: Sequence[str], now_s: float) -> dict[str, Observation]:
        return {c: Observation(component=c, at_s=now_s, demand_rps=10.0) for c in components}


def test_engine_tick_lands_on_the_cluster(api: FakeKubeAPI, kubeconfig: Path) -> None:
    config = make_config({"kubeconfig": str(kubeconfig)})
    assert config.actuator is not None
    actuator = registry.build("actuator", config.actuator.type, config, config.actuator.options())
    assert isinstance(actuator, KubernetesActuator)  # what the daemon builds from the file
    api.inject(LLM_SCALE, status=500, method="PATCH")
    engine = Engine(
        config,
        metrics=Demand(),
        actuator=actuator,
        policies=[Fixed({"router": 3, "retriever": 1, "llm": 4})],
    )
    records = {r.component: r for r in engine.step(0.0)}
    assert {c: r.outcome for c, r in records.items()} == {
        "router": "scaled",
        "retriever": "unchanged",
        "llm": "failed: unavailable",
    }
    assert api.replicas(DEPLOYMENTS, NS, "router") == 3
    assert api.replicas(LEADER_WORKER_SETS, NS, "llm") == 1

    later = {r.component: r for r in engine.step(1000.0)}  # past the backoff: retried
    assert later["llm"].outcome == "scaled" and later["router"].outcome == "unchanged"
    assert api.replicas(LEADER_WORKER_SETS, NS, "llm") == 4
    actuator.close()


# --------------------------------------------------------------------------------------------
# Invariants


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 6), st.one_of(st.none(), st.integers(0, 6))),
        min_size=1,
        max_size=6,
    )
)
def test_every_success_leaves_the_asked_count_and_no_change_writes_nothing(
    api: FakeKubeAPI, actuator: KubernetesActuator, steps: list[tuple[int, int | None]]
) -> None:
    """Whatever other writers do between a read and a scale, a successful `scale(n)` leaves n
    on the cluster, and a PATCH is sent only when the count differs."""
    for wanted, interloper in steps:
        actuator.read(["router"])
        if interloper is not None:
            api.set_replicas(DEPLOYMENTS, NS, "router", interloper)
        before = api.replicas(DEPLOYMENTS, NS, "router")
        api.clear_requests()
        result = actuator.scale("router", wanted)
        assert result.ok, result.message
        assert api.replicas(DEPLOYMENTS, NS, "router") == wanted
        patches = [r for r in api.requests if r.method == "PATCH" and r.status == 200]
        assert len(patches) == (0 if before == wanted else 1)
