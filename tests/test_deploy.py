"""deploy/: the Kustomize base and overlays render with `kubectl kustomize`, every object is a
valid Kubernetes object by the official client's models (no field unknown to them), the config
each overlay mounts validates and can run in its mode; and every Grafana panel queries a metric
the daemon exports, with labels it has.

Without `kubectl` the rendering tests skip, or fail when ELASTISCALE_REQUIRE_INTEGRATION is set
(as in CI)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from elastiscale.clock import FakeClock
from elastiscale.config import load_config
from elastiscale.daemon.runner import Daemon, RunOptions
from elastiscale.daemon.runtime import check_runnable
from elastiscale.keda.board import DesiredReplicas
from elastiscale.keda.scaler import ExternalScaler

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
OVERLAYS = ("base", "overlays/standalone", "overlays/sidecar", "overlays/keda")
MODELS = {
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Service"): "V1Service",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("rbac.authorization.k8s.io/v1", "Role"): "V1Role",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "V1RoleBinding",
}


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        message = "kubectl not installed (it renders deploy/ with `kubectl kustomize`)"
        if os.environ.get("ELASTISCALE_REQUIRE_INTEGRATION"):
            pytest.fail(message + "; ELASTISCALE_REQUIRE_INTEGRATION is set")
        pytest.skip(message)
    return found


def render(overlay: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [kubectl(), "kustomize", str(DEPLOY / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d is not None]


def _strip_empty(value: Any) -> Any:
    if isinstance(value, dict):
        out = {k: _strip_empty(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_strip_empty(v) for v in value]
    return value


def as_model(doc: dict[str, Any]) -> Any:
    """The client's model of `doc`; fails naming a field the model does not have."""
    api = client.ApiClient()
    name = MODELS[(doc["apiVersion"], doc["kind"])]
    model = api._ApiClient__deserialize(doc, name)  # the client's own JSON -> model path
    back = _strip_empty(api.sanitize_for_serialization(model))
    assert back == _strip_empty(doc), f"{doc['kind']} {doc['metadata']['name']}: fields lost"
    return model


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_renders_to_valid_kubernetes_objects(overlay: str, tmp_path: Path) -> None:
    docs = render(overlay)
    for doc in docs:
        assert doc["metadata"].get("namespace") == "serving", doc["metadata"]["name"]
        if (doc["apiVersion"], doc["kind"]) in MODELS:
            as_model(doc)
        else:
            assert (doc["apiVersion"], doc["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    # the mounted config validates, and runs in this overlay's mode
    (config_map,) = by_kind(docs, "ConfigMap")
    path = tmp_path / "pipeline.yaml"
    path.write_text(config_map["data"]["pipeline.yaml"])
    config = load_config(path)
    (deployment,) = [
        d
        for d in by_kind(docs, "Deployment")
        if any(c["name"] == "elastiscale" for c in d["spec"]["template"]["spec"]["containers"])
    ]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "elastiscale"]
    keda = "--keda-listen" in container["args"]
    assert check_runnable(config, dry_run=False, keda=keda) == []
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounted = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert (
        volumes[mounted["/etc/elastiscale"]]["configMap"]["name"] == config_map["metadata"]["name"]
    )
    assert pod["serviceAccountName"] == "elastiscale"
    # the Service reaches the pods carrying the daemon
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for service in by_kind(docs, "Service"):
        assert service["spec"]["selector"].items() <= labels.items(), service["metadata"]["name"]


def test_overlays_differ_where_they_should() -> None:
    standalone, sidecar, keda = (render(f"overlays/{o}") for o in ("standalone", "sidecar", "keda"))
    (daemon,) = by_kind(standalone, "Deployment")
    assert daemon["spec"]["replicas"] == 2  # two replicas, one leader
    (router,) = by_kind(sidecar, "Deployment")
    containers = [c["name"] for c in router["spec"]["template"]["spec"]["containers"]]
    assert router["metadata"]["name"] == "rag-router"
    assert sorted(containers) == ["elastiscale", "router"]
    # scaling rights only where the daemon scales; KEDA mode has no Role at all
    assert by_kind(standalone, "Role") and by_kind(sidecar, "Role") and not by_kind(keda, "Role")
    (binding,) = by_kind(standalone, "RoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "elastiscale", "namespace": "serving"}
    ]


def test_the_keda_overlay_points_its_scaled_objects_at_its_service() -> None:
    docs = render("overlays/keda")
    (config_map,) = by_kind(docs, "ConfigMap")
    config = load_config(yaml.safe_load(config_map["data"]["pipeline.yaml"]))
    scaler = ExternalScaler(DesiredReplicas(config.pipeline.components), config.pipeline.name)
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    (daemon,) = by_kind(docs, "Deployment")
    ports = {
        p["name"]: p["containerPort"]
        for p in daemon["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    seen = set()
    for scaled in by_kind(docs, "ScaledObject"):
        (trigger,) = scaled["spec"]["triggers"]
        assert scaler._metadata_problem(trigger["metadata"]) is None
        host, port = trigger["metadata"]["scalerAddress"].rsplit(":", 1)
        service = services[host.split(".")[0]]
        assert host == f"{service['metadata']['name']}.serving.svc.cluster.local"
        (service_port,) = [p for p in service["spec"]["ports"] if p["port"] == int(port)]
        assert ports[service_port["targetPort"]] == int(port)
        seen.add(trigger["metadata"]["component"])
    assert seen == set(config.pipeline.components)


# --------------------------------------------------------------------------------------------
# Grafana


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def exported(tmp_path: Path) -> dict[str, set[str]]:
    """Metric name -> label names, as the daemon serves them after ten minutes of the example
    daemon (two policies, an edge, forecasts)."""
    raw = yaml.safe_load((REPO / "examples/daemon/pipeline.yaml").read_text())
    raw["metrics"]["path"] = str(REPO / raw["metrics"]["path"])
    raw["daemon"]["journal_path"] = str(tmp_path / "journal.jsonl")
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw))
    daemon = Daemon(load_config(path), RunOptions(config_path=path), clock=FakeClock(0.0))
    daemon.start(serve_http=False)
    try:
        for i in range(120):  # 10 minutes: forecast errors at a 45 s horizon are known
            daemon.tick(1_700_000_000.0 + 5.0 * i)
        assert daemon.reload()  # SIGHUP's path: elastiscale_config_reloads_total{result="ok"}
        # `elastiscale_leader` is served only when a leader is elected (Kubernetes actuator or
        # leader_election.enabled); this is what an elected daemon's status holds
        daemon.status.leader = True
        text = generate_latest(daemon.metrics.registry).decode()
    finally:
        daemon.shutdown()
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


_SELECTOR = re.compile(r"(elastiscale_[a-z0-9_]+)(\{([^}]*)\})?")
_BY = re.compile(r"by \(([^)]*)\)")
#: Labels Prometheus adds at scrape time, not the daemon.
_TARGET_LABELS = {"job", "instance"}


def test_every_grafana_panel_queries_metrics_the_daemon_exports(tmp_path: Path) -> None:
    metrics = exported(tmp_path)
    dashboard = json.loads((REPO / "examples/grafana/elastiscale-dashboard.json").read_text())
    checked = 0
    for panel in _panels(dashboard["panels"]):
        if panel.get("type") == "row":
            continue
        exprs = [t["expr"] for t in panel.get("targets", [])]
        assert exprs, f"panel {panel.get('title')!r} has no query"
        for expr in exprs:
            selectors = _SELECTOR.findall(expr)
            assert selectors, f"panel {panel['title']!r}: {expr!r} reads no elastiscale metric"
            for name, _, matchers in selectors:
                assert name in metrics, f"panel {panel['title']!r}: {name} is not exported"
                used = {m.split("=")[0].strip(" !~") for m in matchers.split(",") if m.strip()}
                missing = used - metrics[name] - _TARGET_LABELS
                assert not missing, f"panel {panel['title']!r}: {name} has no label {missing}"
                for group in _BY.findall(expr):
                    labels = {g.strip() for g in group.split(",")}
                    assert labels <= metrics[name] | {"le"}, (panel["title"], name, labels)
                checked += 1
    assert checked >= 15


def test_the_model_check_names_a_field_the_client_does_not_know() -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 1, "targetPrt": "http"}]},
    }
    with pytest.raises(AssertionError, match="Service x: fields lost"):
        as_model(doc)
