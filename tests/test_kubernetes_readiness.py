"""Start-up times from pod readiness transitions, read with the official client from the
shipped fake API server, into the start-up estimator."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from elastiscale.adapters.kubernetes.actuator import KubernetesActuator
from elastiscale.adapters.kubernetes.calls import KubeCallError
from elastiscale.adapters.kubernetes.readiness import PodStartups, label_selector
from elastiscale.adapters.memory import SeriesMetricSource
from elastiscale.config import load_config
from elastiscale.controllers.base import TickContext
from elastiscale.controllers.feedforward import ElastiscalePolicy
from elastiscale.controllers.feedforward_state import ElastiscaleParams
from elastiscale.decision import Proposal
from elastiscale.engine import Engine
from elastiscale.learning import StartupEstimator
from elastiscale.testing.kubernetes import FakeKubeAPI

T0 = 1_780_000_000.0


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as fake:
        yield fake


def client(api: FakeKubeAPI, tmp_path: Path) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(
        config_file=str(api.write_kubeconfig(tmp_path / "kubeconfig")),
        client_configuration=configuration,
        persist_config=False,
    )
    return k8s.ApiClient(configuration)


def test_startups_from_readiness_transitions(api: FakeKubeAPI, tmp_path: Path) -> None:
    api.add_deployment("default", "llm", replicas=2)
    api.add_pod("default", "llm-a", {"app": "llm"}, T0, T0 + 120)
    api.add_pod("default", "llm-b", {"app": "llm"}, T0 + 10, None)  # still starting
    api.add_pod("default", "other", {"app": "router"}, T0, T0 + 5)  # another workload
    reader = PodStartups.of_deployment(client(api, tmp_path), "default", "llm")
    assert reader.selector == "app=llm"
    assert reader.poll() == [120.0]
    assert reader.poll() == []  # each pod counts once
    api.set_pod_ready("default", "llm-b", T0 + 10, T0 + 310)
    assert reader.poll() == [300.0]
    calls = list(api.requests_to("/api/v1/namespaces/default/pods", "GET"))
    assert calls and calls[-1].query["labelSelector"] == ["app=llm"]


def test_samples_move_the_startup_estimate(api: FakeKubeAPI, tmp_path: Path) -> None:
    api.add_deployment("default", "llm", replicas=3)
    reader = PodStartups(client(api, tmp_path), "default", {"app": "llm"})
    estimate = StartupEstimator(120.0)
    for i, startup_s in enumerate([290.0, 300.0, 310.0]):
        api.add_pod("default", f"llm-{i}", {"app": "llm"}, T0 + i, T0 + i + startup_s)
    for sample in reader.poll():
        estimate.add(sample)
    assert estimate.measured_s == 310.0
    assert estimate.value_s == 310.0


def test_unreachable_or_forbidden_is_a_typed_error(api: FakeKubeAPI, tmp_path: Path) -> None:
    reader = PodStartups(client(api, tmp_path), "default", {"app": "llm"})
    api.inject("/api/v1/namespaces/default/pods", status=403, times=1)
    with pytest.raises(KubeCallError, match="403"):
        reader.poll()
    assert reader.poll() == []


def test_label_selector() -> None:
    assert label_selector({"b": "2", "a": "1"}) == "a=1,b=2"


def test_actuator_startups_reach_the_policy_through_the_engine(
    api: FakeKubeAPI, tmp_path: Path
) -> None:
    """`measure_startup: true`: the engine asks the Kubernetes actuator for its pods' start-ups
    each tick and a learning `elastiscale` plans with their upper quantile."""
    api.add_deployment("default", "llm", replicas=1)
    api.add_statefulset("default", "router", replicas=1)
    api.add_pod("default", "llm-a", {"app": "llm"}, T0, T0 + 280)
    api.add_pod("default", "llm-b", {"app": "llm"}, T0, T0 + 300)
    api.add_pod("default", "router-0", {"app": "router"}, T0, T0 + 4)
    config = load_config(
        {
            "pipeline": {
                "name": "p",
                "slo": {"latency_p95_s": 20},
                "components": {
                    "router": {
                        "ingress": True,
                        "capacity_per_replica": 50,
                        "service_time_s": 0.02,
                        "startup_s": 10,
                        "replicas": {"max": 4},
                    },
                    "llm": {
                        "capacity_per_replica": 2,
                        "service_time_s": 2,
                        "startup_s": 120,
                        "replicas": {"max": 8},
                    },
                },
                "edges": [{"from": "router", "to": "llm", "fanout": 1}],
            },
            "actuator": {
                "type": "kubernetes",
                "connection": "kubeconfig",
                "kubeconfig": str(api.write_kubeconfig(tmp_path / "kubeconfig")),
                "measure_startup": True,
                "targets": {
                    "router": {"kind": "StatefulSet", "name": "router"},
                    "llm": {"name": "llm"},
                },
            },
        }
    )
    assert config.actuator is not None
    actuator = KubernetesActuator(config, config.actuator.options())
    policy = ElastiscalePolicy(
        config, ElastiscaleParams(learn=True, refit="inline", self_calibration=False)
    )
    seen: list[TickContext] = []

    class Keep:
        name = policy.name

        def propose(self, ctx: TickContext) -> Mapping[str, Proposal]:
            seen.append(ctx)
            return policy.propose(ctx)

    metrics = SeriesMetricSource({n: {"demand_rps": ([0.0], [1.0])} for n in ("router", "llm")})
    engine = Engine(config, metrics=metrics, actuator=actuator, policies=[Keep()])
    records = {r.component: r for r in engine.step(15.0)}
    engine.step(30.0)
    assert sorted(seen[0].startups_s["llm"]) == [280.0, 300.0]
    assert seen[0].startups_s["router"] == [4.0]
    assert seen[1].startups_s == {"router": [], "llm": []}  # each pod counted once
    details = records["llm"].proposals[0].details
    assert details["startup_prior_s"] == 120
    assert details["startup_in_use_s"] == 300.0
    assert details["startup_samples"] == 2
    actuator.close()


def test_without_measure_startup_the_actuator_reports_none(
    api: FakeKubeAPI, tmp_path: Path
) -> None:
    api.add_deployment("default", "llm", replicas=1)
    config = load_config(
        {
            "pipeline": {
                "name": "p",
                "slo": {"latency_p95_s": 20},
                "components": {
                    "llm": {
                        "ingress": True,
                        "capacity_per_replica": 2,
                        "service_time_s": 2,
                        "replicas": {"max": 8},
                    }
                },
            },
            "actuator": {
                "type": "kubernetes",
                "connection": "kubeconfig",
                "kubeconfig": str(api.write_kubeconfig(tmp_path / "kubeconfig")),
                "targets": {"llm": {"name": "llm"}},
            },
        }
    )
    assert config.actuator is not None
    with KubernetesActuator(config, config.actuator.options()) as actuator:
        assert actuator.startups(["llm"]) == {}
    assert not list(api.requests_to("/api/v1/namespaces/default/pods"))
