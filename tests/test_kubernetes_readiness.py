"""Start-up times from pod readiness transitions, read with the official client from the
shipped fake API server, into the start-up estimator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from elastiscale.adapters.kubernetes.calls import KubeCallError
from elastiscale.adapters.kubernetes.readiness import PodStartups, label_selector
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
