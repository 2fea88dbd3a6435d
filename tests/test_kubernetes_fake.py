"""The fake Kubernetes API server, driven through the official `kubernetes` client: paths and
JSON of the scale subresource, patch content types, resourceVersion preconditions, Status
errors, Leases, injected faults, the request record, bearer tokens and TCP_NODELAY."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from elastiscale.testing.kubernetes import (
    DEPLOYMENTS,
    LEADER_WORKER_SETS,
    FakeKubeAPI,
    ResourceType,
    _Handler,
    _Server,
)
from elastiscale.testing.kubernetes_store import json_patch, merge_patch

LWS = ("leaderworkerset.x-k8s.io", "v1", "default", "leaderworkersets")


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI(token="s3cret") as fake:
        yield fake


@pytest.fixture
def kube(api: FakeKubeAPI, tmp_path: Path) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(
        config_file=str(api.write_kubeconfig(tmp_path / "kubeconfig")),
        client_configuration=configuration,
    )
    return k8s.ApiClient(configuration)


def status_of(exc: pytest.ExceptionInfo[k8s.ApiException]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.value.body)
    return body


def test_scale_subresource_read_and_strategic_merge_patch(
    api: FakeKubeAPI, kube: k8s.ApiClient
) -> None:
    api.add_deployment("default", "router", replicas=2)
    apps = k8s.AppsV1Api(kube)
    scale = apps.read_namespaced_deployment_scale("router", "default")
    assert (scale.kind, scale.api_version) == ("Scale", "autoscaling/v1")
    assert (scale.spec.replicas, scale.status.replicas) == (2, 2)
    assert scale.status.selector == "app=router"

    patched = apps.patch_namespaced_deployment_scale("router", "default", {"spec": {"replicas": 5}})
    assert patched.spec.replicas == 5
    last = api.requests[-1]
    assert (last.method, last.path) == (
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/router/scale",
    )
    assert last.content_type == "application/strategic-merge-patch+json"
    assert last.body == {"spec": {"replicas": 5}}
    deployment = apps.read_namespaced_deployment("router", "default")
    assert deployment.spec.replicas == 5
    assert deployment.status.ready_replicas == 5  # the simulated controller followed
    assert deployment.metadata.generation == 2


def test_json_patch_list_body_is_sent_as_json_patch(api: FakeKubeAPI, kube: k8s.ApiClient) -> None:
    api.add_statefulset("default", "db", replicas=1)
    apps = k8s.AppsV1Api(kube)
    ops = [{"op": "replace", "path": "/spec/replicas", "value": 3}]
    assert apps.patch_namespaced_stateful_set_scale("db", "default", ops).spec.replicas == 3
    assert api.requests[-1].content_type == "application/json-patch+json"
    failing = [{"op": "test", "path": "/spec/replicas", "value": 7}, *ops]
    with pytest.raises(k8s.ApiException) as exc:
        apps.patch_namespaced_stateful_set_scale("db", "default", failing)
    assert exc.value.status == 422


def test_put_with_stale_resource_version_is_a_conflict(
    api: FakeKubeAPI, kube: k8s.ApiClient
) -> None:
    api.add_deployment("default", "router", replicas=2)
    apps = k8s.AppsV1Api(kube)
    scale = apps.read_namespaced_deployment_scale("router", "default")
    api.set_replicas(DEPLOYMENTS, "default", "router", 4)  # another writer
    scale.spec.replicas = 6
    with pytest.raises(k8s.ApiException) as exc:
        apps.replace_namespaced_deployment_scale("router", "default", scale)
    assert exc.value.status == 409
    status = status_of(exc)
    assert (status["kind"], status["reason"], status["code"]) == ("Status", "Conflict", 409)
    assert "the object has been modified" in status["message"]
    assert api.replicas(DEPLOYMENTS, "default", "router") == 4

    fresh = apps.read_namespaced_deployment_scale("router", "default")
    fresh.spec.replicas = 6
    assert apps.replace_namespaced_deployment_scale("router", "default", fresh).spec.replicas == 6


def test_stale_resource_version_in_a_patch_is_a_conflict(
    api: FakeKubeAPI, kube: k8s.ApiClient
) -> None:
    api.add_deployment("default", "router", replicas=2)
    apps = k8s.AppsV1Api(kube)
    version = apps.read_namespaced_deployment_scale("router", "default").metadata.resource_version
    api.set_replicas(DEPLOYMENTS, "default", "router", 3)
    body = {"metadata": {"resourceVersion": version}, "spec": {"replicas": 9}}
    with pytest.raises(k8s.ApiException) as exc:
        apps.patch_namespaced_deployment_scale("router", "default", body)
    assert exc.value.status == 409


def test_custom_resource_scale_uses_merge_patch_and_refuses_strategic(
    api: FakeKubeAPI, kube: k8s.ApiClient
) -> None:
    api.add_workload(LEADER_WORKER_SETS, "default", "llm", replicas=2)
    custom = k8s.CustomObjectsApi(kube)
    scale = custom.get_namespaced_custom_object_scale(*LWS, "llm")
    assert scale["spec"] == {"replicas": 2} and scale["status"]["replicas"] == 2
    to_zero = custom.patch_namespaced_custom_object_scale(*LWS, "llm", {"spec": {"replicas": 0}})
    assert to_zero["spec"] == {}  # replicas is omitempty in a Scale
    assert api.requests[-1].content_type == "application/merge-patch+json"
    assert custom.get_namespaced_custom_object(*LWS, "llm")["spec"]["replicas"] == 0
    with pytest.raises(k8s.ApiException) as exc:
        custom.patch_namespaced_custom_object_scale(
            *LWS,
            "llm",
            {"spec": {"replicas": 1}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert exc.value.status == 415


def test_custom_type_with_its_own_replica_paths(api: FakeKubeAPI, kube: k8s.ApiClient) -> None:
    predictor = ResourceType(
        "example.ai",
        "v1",
        "predictors",
        "Predictor",
        spec_replicas_path="spec.predictor.replicas",
        status_replicas_path="status.current",
    )
    api.add_type(predictor)
    api.add_workload(predictor, "default", "p", replicas=1)
    custom = k8s.CustomObjectsApi(kube)
    coords = ("example.ai", "v1", "default", "predictors", "p")
    custom.patch_namespaced_custom_object_scale(*coords, {"spec": {"replicas": 4}})
    obj = custom.get_namespaced_custom_object(*coords)
    assert obj["spec"]["predictor"]["replicas"] == 4
    assert obj["status"]["current"] == 4


@pytest.mark.parametrize(
    ("call", "code", "reason"),
    [
        (lambda apps: apps.read_namespaced_deployment_scale("nope", "default"), 404, "NotFound"),
        (
            lambda apps: apps.patch_namespaced_deployment_scale(
                "router", "default", {"spec": {"replicas": -1}}
            ),
            422,
            "Invalid",
        ),
        (
            lambda apps: apps.patch_namespaced_deployment_scale(
                "router", "default", {"spec": {"replicas": "two"}}
            ),
            422,
            "Invalid",
        ),
    ],
)
def test_errors_are_status_objects(
    api: FakeKubeAPI, kube: k8s.ApiClient, call: Any, code: int, reason: str
) -> None:
    api.add_deployment("default", "router", replicas=2)
    with pytest.raises(k8s.ApiException) as exc:
        call(k8s.AppsV1Api(kube))
    status = status_of(exc)
    assert (exc.value.status, status["code"], status["reason"]) == (code, code, reason)
    assert api.replicas(DEPLOYMENTS, "default", "router") == 2


def test_unknown_resource_type_is_not_found(api: FakeKubeAPI, kube: k8s.ApiClient) -> None:
    with pytest.raises(k8s.ApiException) as exc:
        k8s.CustomObjectsApi(kube).get_namespaced_custom_object_scale(
            "nothing.io", "v1", "default", "things", "x"
        )
    assert exc.value.status == 404


def test_lease_create_get_and_update_with_resource_version(
    api: FakeKubeAPI, kube: k8s.ApiClient
) -> None:
    coordination = k8s.CoordinationV1Api(kube)
    lease = k8s.V1Lease(
        metadata=k8s.V1ObjectMeta(name="elastiscale"),
        spec=k8s.V1LeaseSpec(holder_identity="pod-a", lease_duration_seconds=15),
    )
    created = coordination.create_namespaced_lease("default", lease)
    assert created.spec.holder_identity == "pod-a"
    with pytest.raises(k8s.ApiException) as exc:
        coordination.create_namespaced_lease("default", lease)
    assert exc.value.status == 409 and status_of(exc)["reason"] == "Conflict"

    mine = coordination.read_namespaced_lease("elastiscale", "default")
    theirs = coordination.read_namespaced_lease("elastiscale", "default")
    mine.spec.holder_identity = "pod-b"
    coordination.replace_namespaced_lease("elastiscale", "default", mine)
    theirs.spec.holder_identity = "pod-c"
    with pytest.raises(k8s.ApiException) as exc:
        coordination.replace_namespaced_lease("elastiscale", "default", theirs)
    assert exc.value.status == 409
    assert (
        coordination.read_namespaced_lease("elastiscale", "default").spec.holder_identity == "pod-b"
    )


def test_lists_of_hpas_and_scaled_objects(api: FakeKubeAPI, kube: k8s.ApiClient) -> None:
    api.add_hpa("default", "router-hpa", "Deployment", "router")
    api.add_scaled_object("default", "llm-keda", "llm")
    hpas = k8s.AutoscalingV2Api(kube).list_namespaced_horizontal_pod_autoscaler("default")
    assert [h.spec.scale_target_ref.name for h in hpas.items] == ["router"]
    keda = k8s.CustomObjectsApi(kube).list_namespaced_custom_object(
        "keda.sh", "v1alpha1", "default", "scaledobjects"
    )
    assert [s["spec"]["scaleTargetRef"]["name"] for s in keda["items"]] == ["llm"]
    other = k8s.AutoscalingV2Api(kube).list_namespaced_horizontal_pod_autoscaler("elsewhere")
    assert other.items == []


def test_fault_hits_n_times_then_the_path_serves_again(
    api: FakeKubeAPI, kube: k8s.ApiClient
) -> None:
    api.add_deployment("default", "router", replicas=2)
    path = "/apis/apps/v1/namespaces/default/deployments/router/scale"
    fault = api.inject(path, status=500, times=2, method="GET")
    apps = k8s.AppsV1Api(kube)
    for _ in range(2):
        with pytest.raises(k8s.ApiException) as exc:
            apps.read_namespaced_deployment_scale("router", "default")
        assert exc.value.status == 500 and status_of(exc)["reason"] == "InternalError"
    assert apps.read_namespaced_deployment_scale("router", "default").spec.replicas == 2
    assert fault.hits == 2
    assert [r.status for r in api.requests_to(path)] == [500, 500, 200]


def test_injected_latency_trips_the_client_timeout(api: FakeKubeAPI, tmp_path: Path) -> None:
    api.add_deployment("default", "router", replicas=2)
    path = "/apis/apps/v1/namespaces/default/deployments/router/scale"
    slow = api.inject(path, latency_s=2.0, times=None)
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(
        config_file=str(api.write_kubeconfig(tmp_path / "kubeconfig")),
        client_configuration=configuration,
    )
    configuration.retries = False
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        k8s.AppsV1Api(k8s.ApiClient(configuration)).read_namespaced_deployment_scale(
            "router", "default", _request_timeout=0.2
        )
    assert slow.hits == 1  # one try: no retry behind the caller's back


def test_a_wrong_token_is_unauthorized(api: FakeKubeAPI, tmp_path: Path) -> None:
    api.add_deployment("default", "router")
    configuration = k8s.Configuration(host=api.url, api_key={"authorization": "Bearer wrong"})
    with pytest.raises(k8s.ApiException) as exc:
        k8s.AppsV1Api(k8s.ApiClient(configuration)).read_namespaced_deployment_scale(
            "router", "default"
        )
    assert exc.value.status == 401
    assert api.requests[-1].headers["authorization"] == "Bearer wrong"


def test_accepted_sockets_disable_nagle() -> None:
    server = _Server(("127.0.0.1", 0), _Handler)
    probe = socket.create_connection(("127.0.0.1", server.server_address[1]))
    try:
        accepted, _ = server.get_request()
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        accepted.close()
    finally:
        probe.close()
        server.server_close()


def test_version_endpoint_answers_plain_http(api: FakeKubeAPI) -> None:
    request = urllib.request.Request(
        f"{api.url}/version", headers={"Authorization": "Bearer s3cret"}
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert json.load(answer)["major"] == "1"


def test_merge_patch_follows_rfc_7386() -> None:
    target = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2]}
    patch = {"a": None, "b": {"c": 5}, "e": [9], "f": {"g": 1}}
    assert merge_patch(target, patch) == {"b": {"c": 5, "d": 3}, "e": [9], "f": {"g": 1}}
    assert target["a"] == 1  # the input is not changed


def test_json_patch_operations() -> None:
    doc = {"spec": {"replicas": 1, "ports": [80]}, "meta/x": 1}
    out = json_patch(
        doc,
        [
            {"op": "test", "path": "/spec/replicas", "value": 1},
            {"op": "replace", "path": "/spec/replicas", "value": 2},
            {"op": "add", "path": "/spec/ports/-", "value": 443},
            {"op": "remove", "path": "/meta~1x"},
        ],
    )
    assert out == {"spec": {"replicas": 2, "ports": [80, 443]}}
    assert doc["spec"]["replicas"] == 1
