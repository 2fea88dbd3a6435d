"""examples/kubernetes/: the pipeline file validates and scales its workloads on the fake API
server, and the Role grants exactly what the actuator needs, nothing broader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from elastiscale import load_config
from elastiscale.adapters.kubernetes.actuator import KubernetesActuator
from elastiscale.adapters.kubernetes.options import KubernetesTarget, resolve_target
from elastiscale.testing.kubernetes import (
    DEPLOYMENTS,
    LEADER_WORKER_SETS,
    STATEFULSETS,
    FakeKubeAPI,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "kubernetes"


def documents(name: str) -> dict[str, dict[str, Any]]:
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    return {doc["kind"]: doc for doc in yaml.safe_load_all(text)}


def test_pipeline_validates_and_scales_its_workloads(tmp_path: Path) -> None:
    config = load_config(EXAMPLES / "pipeline.yaml")
    assert config.actuator is not None and config.actuator.type == "kubernetes"
    options = config.actuator.options()
    with FakeKubeAPI() as api:
        api.add_deployment("serving", "rag-router", replicas=1)
        api.add_statefulset("serving", "rag-retriever", replicas=1)
        api.add_workload(LEADER_WORKER_SETS, "serving", "rag-llm", replicas=2)
        options.update(
            connection="kubeconfig", kubeconfig=str(api.write_kubeconfig(tmp_path / "k"))
        )
        with KubernetesActuator(config, options) as actuator:
            for component, replicas in {"router": 2, "retriever": 3, "llm": 4}.items():
                assert actuator.scale(component, replicas).ok
        assert api.replicas(DEPLOYMENTS, "serving", "rag-router") == 2
        assert api.replicas(STATEFULSETS, "serving", "rag-retriever") == 3
        assert api.replicas(LEADER_WORKER_SETS, "serving", "rag-llm") == 4


def test_role_grants_get_and_patch_on_each_target_scale_and_nothing_broader() -> None:
    config = load_config(EXAMPLES / "pipeline.yaml")
    assert config.actuator is not None
    options = config.actuator.options()
    rbac = documents("rbac.yaml")
    rules = rbac["Role"]["rules"]
    allowed = {
        ("apps", "deployments/scale"): {"get", "patch"},
        ("apps", "statefulsets/scale"): {"get", "patch"},
        ("leaderworkerset.x-k8s.io", "leaderworkersets/scale"): {"get", "patch"},
        ("coordination.k8s.io", "leases"): {"get", "create", "update"},
        ("autoscaling", "horizontalpodautoscalers"): {"list"},
        ("keda.sh", "scaledobjects"): {"list"},
        ("apps", "deployments"): {"get"},
        ("apps", "statefulsets"): {"get"},
        ("", "pods"): {"list"},
    }
    for rule in rules:
        assert "*" not in str(rule), rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert set(rule["verbs"]) <= allowed[(group, resource)], rule
    for component, target in options["targets"].items():
        resolved = resolve_target(component, KubernetesTarget.model_validate(target), "serving")
        grants = [
            rule
            for rule in rules
            if resolved.group in rule["apiGroups"]
            and f"{resolved.plural}/scale" in rule["resources"]
            and resolved.name in rule.get("resourceNames", [])
        ]
        assert grants and {"get", "patch"} <= set(grants[0]["verbs"]), component
    assert rbac["Role"]["metadata"]["namespace"] == options["namespace"]


def test_sidecar_runs_as_the_bound_service_account_with_the_config() -> None:
    rbac = documents("rbac.yaml")
    pod = documents("sidecar.yaml")["Deployment"]["spec"]["template"]["spec"]
    account = rbac["ServiceAccount"]["metadata"]["name"]
    assert pod["serviceAccountName"] == account
    assert rbac["RoleBinding"]["subjects"][0]["name"] == account
    assert rbac["RoleBinding"]["roleRef"]["name"] == rbac["Role"]["metadata"]["name"]
    container = pod["containers"][0]
    mount = container["volumeMounts"][0]["mountPath"]
    assert container["args"] == ["run", f"{mount}/pipeline.yaml"]
