"""Packaging of the daemon: the Grafana dashboard queries only metrics the daemon exports, the
sidecar manifest and the image agree with the daemon's endpoints and flags, the systemd unit
reloads with SIGHUP and does not restart on a config error, and the example config runs the
trace source with the dry-run actuator."""

from __future__ import annotations

import configparser
import json
import re
from pathlib import Path
from typing import Any

import yaml

from elastiscale.config import load_config
from elastiscale.config.daemon import parse_listen
from elastiscale.daemon.status import DaemonStatus, TickSnapshot
from elastiscale.daemon.telemetry import DaemonMetrics
from elastiscale.decision import DecisionRecord, Proposal
from elastiscale.observations import Observation

REPO = Path(__file__).resolve().parent.parent


def exported_sample_names() -> set[str]:
    """Every sample name the daemon's registry can produce (a tick with every kind of value)."""
    status = DaemonStatus("p", "me", stall_after_s=60)
    status.leader = True
    metrics = DaemonMetrics(status)
    details = {"forecast_demand": 5.0, "forecast_60s_asym_err": 0.1}
    records = tuple(
        DecisionRecord(
            at_s=1.0,
            component=name,
            observation=Observation(name, 1.0, demand_rps=2.0, tokens_per_s=9.0),
            current_replicas=1,
            proposals=(Proposal("hpa", 2, "x", details),),
            combined_replicas=2,
            clamps=(),
            desired_replicas=2,
            outcome="scaled",
        )
        for name in ("a", "b")
    )
    snapshot = TickSnapshot(
        1, 1.0, 0.01, True, True, records, {"a": 1}, (("a", "b"),), {"a": 0, "b": 1}
    )
    status.publish(snapshot, True, None, None)
    metrics.record_tick(snapshot)
    metrics.reloads.labels("ok").inc()
    return {sample.name for family in metrics.registry.collect() for sample in family.samples}


def test_the_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads((REPO / "examples/grafana/elastiscale-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    used = {name for expr in exprs for name in re.findall(r"\belastiscale_[a-z_]+", expr)}
    exported = exported_sample_names()
    assert used - exported == set()
    panels = {p["title"] for p in dashboard["panels"]}
    for wanted in ("Desired and ready replicas", "Proposals by policy", "Forecast error"):
        assert wanted in panels
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def documents(path: Path) -> dict[str, Any]:
    return {d["kind"]: d for d in yaml.safe_load_all(path.read_text())}


def test_the_sidecar_probes_scrapes_and_journals_where_it_can() -> None:
    pod = documents(REPO / "examples/kubernetes/sidecar.yaml")["Deployment"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    host, port = parse_listen(env["ELASTISCALE_LISTEN"])
    assert host == "0.0.0.0"
    assert container["ports"][0]["containerPort"] == port
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    writable = [m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")]
    assert any(env["ELASTISCALE_JOURNAL"].startswith(path + "/") for path in writable)
    assert pod["spec"]["terminationGracePeriodSeconds"] > 5  # the daemon stops within 5 s
    assert "POD_NAME" in env  # the Lease identity


def test_the_image_runs_the_command_the_manifest_gives() -> None:
    text = (REPO / "Dockerfile").read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1))  # type: ignore[union-attr]
    cmd = json.loads(re.search(r"^CMD (.+)$", text, re.M).group(1))  # type: ignore[union-attr]
    pod = documents(REPO / "examples/kubernetes/sidecar.yaml")["Deployment"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert entrypoint == ["elastiscale"]
    assert cmd == container["args"]
    user = re.search(r"^USER (\d+):", text, re.M)
    assert user is not None and int(user.group(1)) == pod["spec"]["securityContext"]["runAsUser"]
    assert "/healthz" in text and "STOPSIGNAL SIGTERM" in text


def test_the_systemd_unit_reloads_with_sighup_and_stops_on_config_errors() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(REPO / "examples/systemd/elastiscale.service")
    service = unit["Service"]
    assert service["ExecStart"].split()[1:] == ["run", "/etc/elastiscale/pipeline.yaml"]
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillSignal"] == "SIGTERM" and int(service["TimeoutStopSec"]) > 5
    assert service["RestartPreventExitStatus"] == "2"  # exit 2: a bad config
    assert service["StateDirectory"] == "elastiscale"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_the_example_config_replays_a_trace_into_the_dry_run_actuator() -> None:
    config = load_config(REPO / "examples/daemon/pipeline.yaml")
    assert config.metrics is not None and config.metrics.type == "trace"
    assert config.metrics.options()["loop"] is True
    assert config.actuator is not None and config.actuator.type == "dry-run"
    assert parse_listen(config.daemon.listen)[0] == "127.0.0.1"
