"""Security properties as tests (the run with secrets is tests/chaos/test_secrets.py):

- endpoints listen on loopback unless told otherwise, and none changes state (every method
  but GET is refused), so none needs a token;
- TLS verification is on by default for Prometheus and Kubernetes;
- the shipped Role grants only what the actuator and the leader election send: every request
  they make against the fake API server is allowed by a rule, and every rule is used; every
  client method the adapter's source calls is one the exercise sent (or is named as reached
  only by an option the example leaves off), so a new call cannot bypass the check;
- the sidecar runs as non-root with a read-only root filesystem and no privileges, and the
  image's user is not root.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from elastiscale.adapters.kubernetes.actuator import KubernetesActuator, connect
from elastiscale.adapters.kubernetes.options import KubernetesOptions
from elastiscale.adapters.prometheus.http import ConnectionParams, PrometheusHTTP
from elastiscale.config import validate_mapping
from elastiscale.config.daemon import DaemonConfig, parse_listen
from elastiscale.daemon.http import StatusServer
from elastiscale.daemon.leader import LeaseElector, connect_coordination, resolve_settings
from elastiscale.daemon.status import DaemonStatus
from elastiscale.daemon.telemetry import DaemonMetrics
from elastiscale.testing.kubernetes import LEADER_WORKER_SETS, FakeKubeAPI

REPO = Path(__file__).resolve().parent.parent
KUBE_EXAMPLES = REPO / "examples" / "kubernetes"


def test_the_daemon_listens_on_loopback_by_default() -> None:
    host, _ = parse_listen(DaemonConfig().listen)
    assert host == "127.0.0.1"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_no_endpoint_changes_state(method: str) -> None:
    status = DaemonStatus("p", "me", 60.0)
    server = StatusServer("127.0.0.1", 0, status, DaemonMetrics(status))
    server.start()
    try:
        for path in ("/healthz", "/readyz", "/metrics", "/decisions", "/reload", "/"):
            request = urllib.request.Request(server.url + path, data=b"{}", method=method)
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=5)
            refused.value.close()  # the error holds the answer's connection
            assert refused.value.code == 501, (method, path)
    finally:
        server.stop()


def test_tls_is_verified_by_default() -> None:
    http = PrometheusHTTP(ConnectionParams(url="https://prometheus.example:9090"))
    assert http._session.verify is True
    http.close()


def test_kubernetes_tls_is_verified_by_default(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://k8s.example:6443"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    options = KubernetesOptions.model_construct(
        targets={}, connection="kubeconfig", kubeconfig=str(kubeconfig), context=None
    )
    api_client, _ = connect(options)
    assert api_client.configuration.verify_ssl is True


# --------------------------------------------------------------------------------------------
# RBAC: what is sent against what is granted

_PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)/namespaces/[^/]+/(?P<plural>[^/]+)"
    r"(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?$"
)
_VERBS = {"PATCH": "patch", "PUT": "update", "POST": "create", "DELETE": "delete"}


def _role() -> list[dict[str, Any]]:
    docs = {d["kind"]: d for d in yaml.safe_load_all((KUBE_EXAMPLES / "rbac.yaml").read_text())}
    rules: list[dict[str, Any]] = docs["Role"]["rules"]
    return rules


def _needs(method: str, path: str) -> tuple[str, str, str, str | None]:
    """(apiGroup, resource, verb, resourceName) one request needs."""
    match = _PATH.match(path)
    assert match is not None, path
    resource = match["plural"] + (f"/{match['sub']}" if match["sub"] else "")
    verb = ("get" if match["name"] else "list") if method == "GET" else _VERBS[method]
    return match["group"] or "", resource, verb, match["name"]


def _allows(rule: dict[str, Any], need: tuple[str, str, str, str | None]) -> bool:
    group, resource, verb, name = need
    names = rule.get("resourceNames")
    return (
        group in rule["apiGroups"]
        and resource in rule["resources"]
        and verb in rule["verbs"]
        and (names is None or (verb not in ("create", "list") and name in names))
    )


def _sidecar_requests(tmp_path: Path) -> set[tuple[str, str]]:
    """(method, path) of every request the example's actuator and leader election send."""
    raw = yaml.safe_load((KUBE_EXAMPLES / "pipeline.yaml").read_text())
    assert raw["actuator"]["measure_startup"] is True  # its pod reads are part of what is sent
    with FakeKubeAPI() as api:
        api.add_deployment("serving", "rag-router", replicas=1)
        api.add_statefulset("serving", "rag-retriever", replicas=1)
        api.add_workload(LEADER_WORKER_SETS, "serving", "rag-llm", replicas=2)
        api.add_pod("serving", "rag-router-a", {"app": "rag-router"}, 1e9, 1e9 + 15)
        raw["actuator"].update(
            connection="kubeconfig", kubeconfig=str(api.write_kubeconfig(tmp_path / "k"))
        )
        config = validate_mapping(raw)
        assert config.actuator is not None
        with KubernetesActuator(config, config.actuator.options()) as actuator:
            actuator.read(list(config.pipeline.components))
            for component, replicas in {"router": 2, "retriever": 3, "llm": 4}.items():
                assert actuator.scale(component, replicas).ok
            assert actuator.startups(list(config.pipeline.components))["router"] == [15.0]
        settings = resolve_settings(config, "pod-a")
        coordination, namespace = connect_coordination(settings)
        elector = LeaseElector(coordination, settings.namespace or namespace, settings)
        assert elector.attempt(0.0, 1e9)  # creates the Lease
        assert elector.attempt(5.0, 1e9 + 5)  # renews it
        elector.release(1e9 + 6)
        return {(r.method, r.path) for r in api.requests if r.path != "/version"}


def test_the_role_grants_exactly_what_the_sidecar_sends(tmp_path: Path) -> None:
    sent = _sidecar_requests(tmp_path)
    rules = _role()
    needs = {_needs(method, path) for method, path in sent}
    denied = [n for n in needs if not any(_allows(rule, n) for rule in rules)]
    assert not denied, denied
    unused = [rule for rule in rules if not any(_allows(rule, n) for n in needs)]
    assert not unused, unused
    assert all("*" not in rule["verbs"] and "*" not in rule["resources"] for rule in rules)


#: Client methods of the adapter reached only with an option examples/kubernetes leaves off
#: (their rules are the commented ones in rbac.yaml).
_OPTIONAL_METHODS = {
    "get_namespaced_custom_object": "ready_from: workload",
    "read_namespaced_config_map": "daemon.gpu_pools: {store: kubernetes}",
    "create_namespaced_config_map": "daemon.gpu_pools: {store: kubernetes}",
    "replace_namespaced_config_map": "daemon.gpu_pools: {store: kubernetes}",
}
#: The client's names of the kinds the adapter reads (plural -> snake-case kind).
_KINDS = {
    "deployments": "deployment",
    "statefulsets": "stateful_set",
    "pods": "pod",
    "leases": "lease",
    "horizontalpodautoscalers": "horizontal_pod_autoscaler",
}
_TYPED_GROUPS = ("", "apps", "autoscaling", "coordination.k8s.io")


def _client_method(method: str, path: str) -> str:
    """The official client's method that sends this request: typed APIs (read_namespaced_pod,
    patch_namespaced_deployment_scale) for built-in groups, custom objects otherwise."""
    group, resource, verb, _ = _needs(method, path)
    plural, _, sub = resource.partition("/")
    suffix = f"_{sub}" if sub else ""
    if group in _TYPED_GROUPS:
        action = {"get": "read", "update": "replace"}.get(verb, verb)
        return f"{action}_namespaced_{_KINDS[plural]}{suffix}"
    return f"{verb}_namespaced_custom_object{suffix}"


def test_every_client_call_in_the_adapter_is_checked_against_the_role(tmp_path: Path) -> None:
    """The client methods named in the Kubernetes adapter and the leader election's source,
    against those the RBAC exercise above sent: a new call must be exercised (and so granted)
    there, or be listed as optional with the option that reaches it."""
    sources = [*(REPO / "src/elastiscale/adapters/kubernetes").glob("*.py"),
               REPO / "src/elastiscale/daemon/leader.py"]  # fmt: skip
    call = re.compile(r"\.((?:read|get|list|watch|create|replace|patch|delete)_namespaced_\w+)\b")
    named = {m for source in sources for m in call.findall(source.read_text())}
    assert "list_namespaced_pod" in named  # the scan finds the calls it is about
    sent = {_client_method(method, path) for method, path in _sidecar_requests(tmp_path)}
    unchecked = sorted(named - sent - set(_OPTIONAL_METHODS))
    assert not unchecked, f"calls not exercised against rbac.yaml: {unchecked}"
    assert not (sent - named), sent - named  # the mapping back to methods is right


# --------------------------------------------------------------------------------------------
# The container


def test_the_sidecar_runs_unprivileged_on_a_read_only_root() -> None:
    docs = list(yaml.safe_load_all((KUBE_EXAMPLES / "sidecar.yaml").read_text()))
    (deployment,) = [d for d in docs if d and d.get("kind") == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    (container,) = [c for c in pod["containers"] if c["name"] == "elastiscale"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    # what it writes (the journal) goes to a mounted volume, the config is mounted read-only
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/elastiscale"]["readOnly"] is True
    listen = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert "ELASTISCALE_JOURNAL" not in listen or listen["ELASTISCALE_JOURNAL"].startswith(
        "/var/lib/elastiscale"
    )


def test_the_image_user_is_not_root() -> None:
    users = re.findall(r"^USER\s+(\S+)", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("0", "root")
