"""Security properties as tests (the run with secrets is tests/chaos/test_secrets.py):

- endpoints listen on loopback unless told otherwise, and none changes state (every method
  but GET is refused), so none needs a token;
- TLS verification is on by default for Prometheus and Kubernetes;
- the shipped Role grants only what the actuator and the leader election send: every request
  they make against the fake API server is allowed by a rule, and every rule is used;
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
    r"^/apis/(?P<group>[^/]+)/[^/]+/namespaces/[^/]+/(?P<plural>[^/]+)"
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
    return match["group"], resource, verb, match["name"]


def _allows(rule: dict[str, Any], need: tuple[str, str, str, str | None]) -> bool:
    group, resource, verb, name = need
    names = rule.get("resourceNames")
    return (
        group in rule["apiGroups"]
        and resource in rule["resources"]
        and verb in rule["verbs"]
        and (names is None or (verb not in ("create", "list") and name in names))
    )


def test_the_role_grants_exactly_what_the_sidecar_sends(tmp_path: Path) -> None:
    raw = yaml.safe_load((KUBE_EXAMPLES / "pipeline.yaml").read_text())
    with FakeKubeAPI() as api:
        api.add_deployment("serving", "rag-router", replicas=1)
        api.add_statefulset("serving", "rag-retriever", replicas=1)
        api.add_workload(LEADER_WORKER_SETS, "serving", "rag-llm", replicas=2)
        raw["actuator"].update(
            connection="kubeconfig", kubeconfig=str(api.write_kubeconfig(tmp_path / "k"))
        )
        config = validate_mapping(raw)
        assert config.actuator is not None
        with KubernetesActuator(config, config.actuator.options()) as actuator:
            actuator.read(list(config.pipeline.components))
            for component, replicas in {"router": 2, "retriever": 3, "llm": 4}.items():
                assert actuator.scale(component, replicas).ok
        settings = resolve_settings(config, "pod-a")
        coordination, namespace = connect_coordination(settings)
        elector = LeaseElector(coordination, settings.namespace or namespace, settings)
        assert elector.attempt(0.0, 1e9)  # creates the Lease
        assert elector.attempt(5.0, 1e9 + 5)  # renews it
        elector.release(1e9 + 6)
        sent = {(r.method, r.path) for r in api.requests if r.path != "/version"}
    rules = _role()
    needs = {_needs(method, path) for method, path in sent}
    denied = [n for n in needs if not any(_allows(rule, n) for rule in rules)]
    assert not denied, denied
    unused = [rule for rule in rules if not any(_allows(rule, n) for n in needs)]
    assert not unused, unused
    assert all("*" not in rule["verbs"] and "*" not in rule["resources"] for rule in rules)


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
