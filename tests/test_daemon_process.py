"""`elastiscale run` as a real process, against a real Prometheus (scraping an exporter the
test sets) and the fake Kubernetes API server (in this process, reached through a kubeconfig):

- it scales a Deployment; Prometheus stopped -> it holds and /readyz goes 503; Prometheus
  back -> it recovers and scales again; SIGTERM -> exit 0 within 5 s;
- SIGHUP with a broken file -> refused, the old config keeps running; a good file -> applied;
- two daemons -> only the Lease holder acts; the other takes over when the first is killed;
- killed mid-change -> the next start reports the change that was in flight.

Ticks every 0.5 s; the Lease lasts 2 s. Without the `prometheus` binary these tests skip, or
fail when ELASTISCALE_REQUIRE_INTEGRATION (CI) or ELASTISCALE_REQUIRE_PROMETHEUS is set.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Gauge

from chaos.harness import DaemonProcess
from conftest import REPO, require_prometheus, wait_for
from elastiscale.daemon.journal import Journal
from elastiscale.testing.kubernetes import DEPLOYMENTS, LEASES, FakeKubeAPI
from elastiscale.testing.prometheus import LocalPrometheus, MetricsEndpoint

pytestmark = pytest.mark.integration

INTERVAL_S = 0.5
LEASE_S = 2.0
RENEW_S = 0.5
SCALE_PATH = "/apis/apps/v1/namespaces/default/deployments/router/scale"


class Exporter:
    """The demand each test sets, served for Prometheus to scrape: a gauge per component
    label value (each test uses its own)."""

    def __init__(self) -> None:
        self.endpoint = MetricsEndpoint()
        self.demand = Gauge(
            "es_daemon_demand_rps", "demand", ["component"], registry=self.endpoint.registry
        )

    @property
    def address(self) -> str:
        return self.endpoint.address


@pytest.fixture(scope="module")
def exporter() -> Iterator[Exporter]:
    made = Exporter()
    yield made
    made.endpoint.stop()


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory, exporter: Exporter) -> Iterator[LocalPrometheus]:
    require_prometheus()
    workdir = tmp_path_factory.mktemp("daemon-prometheus")
    server = LocalPrometheus(workdir, scrape_interval_s=0.25)
    server.set_targets({exporter.address: {}})  # before start: no 5 s wait for discovery
    server.start()
    yield server
    server.stop()


@pytest.fixture
def kube() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as api:
        api.add_deployment("default", "router", replicas=1)
        yield api


def demand(exporter: Exporter, label: str, rps: float) -> None:
    exporter.demand.labels(label).set(rps)


def write_config(
    path: Path, prom: LocalPrometheus, kubeconfig: Path, label: str, capacity: float = 10
) -> Path:
    """One component at `capacity` req/s per replica (utilization target 1.0), so demand D
    needs ceil(D / capacity) replicas; HPA may scale up 10x per second."""
    raw: dict[str, Any] = {
        "pipeline": {
            "name": "daemon-it",
            "slo": {"latency_p95_s": 10},
            "target_utilization": 1.0,
            "components": {
                "router": {
                    "ingress": True,
                    "capacity_per_replica": capacity,
                    "service_time_s": 0.1,
                    "replicas": {"min": 1, "max": 20},
                }
            },
        },
        "policies": [
            {
                "name": "hpa",
                "params": {
                    "behavior": {
                        "scale_up": {
                            "policies": [{"type": "percent", "value": 1000, "period_s": 1}]
                        }
                    }
                },
            }
        ],
        "control": {"interval_s": INTERVAL_S},
        "metrics": {
            "type": "prometheus",
            "url": prom.url,
            "timeout_s": 1,
            "label": "component",
            "queries": {
                "demand_rps": {
                    "expr": "sum by ($by) (es_daemon_demand_rps{$selector})",
                    "series": "es_daemon_demand_rps{$selector}",
                }
            },
            "components": {"router": {"label_value": label}},
        },
        "actuator": {
            "type": "kubernetes",
            "connection": "kubeconfig",
            "kubeconfig": str(kubeconfig),
            "namespace": "default",
            "timeout_s": 6,
            "settle_timeout_s": 0,
            "targets": {"router": {"kind": "Deployment", "name": "router"}},
        },
        "daemon": {
            "metrics_backoff_max_s": 1,
            "leader_election": {"duration_s": LEASE_S, "renew_s": RENEW_S},
        },
    }
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.kill()


def start(
    daemons: list[DaemonProcess], config: Path, workdir: Path, identity: str, ready: bool = True
) -> DaemonProcess:
    daemon = DaemonProcess(config, workdir, identity)
    daemons.append(daemon)
    if ready:
        daemon.wait_ready()
    return daemon


def replicas(kube: FakeKubeAPI) -> int:
    return kube.replicas(DEPLOYMENTS, "default", "router")


def lease_holder(kube: FakeKubeAPI) -> str | None:
    try:
        holder: str = kube.get(LEASES, "default", "elastiscale-daemon-it")["spec"]["holderIdentity"]
    except Exception:
        return None
    return holder


# --------------------------------------------------------------------------------------------


def test_scales_holds_while_prometheus_is_down_recovers_and_stops_on_sigterm(
    prom: LocalPrometheus,
    exporter: Exporter,
    kube: FakeKubeAPI,
    daemons: list[DaemonProcess],
    tmp_path: Path,
) -> None:
    demand(exporter, "outage", 45)
    config = write_config(
        tmp_path / "p.yaml", prom, kube.write_kubeconfig(tmp_path / "k"), "outage"
    )
    daemon = start(daemons, config, tmp_path, "solo")
    wait_for(lambda: replicas(kube) == 5, 20, "scaled to 5")
    # The daemon sets its gauge after the scale call returns: the API can show 5 first.
    desired = 'elastiscale_desired_replicas{component="router"}'
    wait_for(lambda: daemon.metric(desired) == 5, 5, "desired replicas exported")
    assert daemon.metric(desired) == 5
    assert daemon.metric("elastiscale_leader") == 1
    intents = [e for e in daemon.entries() if e["kind"] == "intent"]
    assert intents and (intents[0]["from_replicas"], intents[0]["to_replicas"]) == (1, 5)

    prom.stop()
    try:
        wait_for(lambda: not daemon.ready(), 10, "/readyz 503 with Prometheus down")
        reasons = json.loads(daemon.get("/readyz")[1])["reasons"]
        assert any("metric source unreachable" in r for r in reasons), reasons
        demand(exporter, "outage", 5)  # unseen while the server is down
        ticks = daemon.decisions()["tick"]
        wait_for(lambda: daemon.decisions()["tick"] >= ticks + 3, 10, "ticks during the outage")
        assert replicas(kube) == 5  # held: no scale-down on missing data
        (latest,) = daemon.decisions()["latest"]
        assert latest["desired_replicas"] == 5 and latest["outcome"] == "unchanged"
        assert daemon.metric("elastiscale_metric_source_up") == 0
        assert (daemon.metric('elastiscale_errors_total{kind="metric_source"}') or 0) >= 1
        demand(exporter, "outage", 85)
    finally:
        prom.start()
    wait_for(daemon.ready, 20, "/readyz 200 after Prometheus is back")
    wait_for(lambda: replicas(kube) == 9, 20, "scaled to 9 after recovery")

    code, elapsed_s = daemon.terminate()
    assert code == 0 and elapsed_s < 5.0
    entries = daemon.entries()
    assert entries[-1]["kind"] == "stop" and entries[-1]["reason"] == "SIGTERM"
    assert Journal(daemon.journal).in_flight() == []  # no change left half-made
    assert lease_holder(kube) == ""  # released on the way out


def test_sighup_refuses_a_broken_config_and_applies_a_good_one(
    prom: LocalPrometheus,
    exporter: Exporter,
    kube: FakeKubeAPI,
    daemons: list[DaemonProcess],
    tmp_path: Path,
) -> None:
    demand(exporter, "hup", 45)
    kubeconfig = kube.write_kubeconfig(tmp_path / "k")
    config = write_config(tmp_path / "p.yaml", prom, kubeconfig, "hup")
    daemon = start(daemons, config, tmp_path, "hup")
    wait_for(lambda: replicas(kube) == 5, 20, "scaled to 5")

    raw = yaml.safe_load(config.read_text())
    raw["pipeline"]["components"]["router"]["capacity_per_replica"] = -5
    raw["control"]["intervall_s"] = 1
    config.write_text(yaml.safe_dump(raw))
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "refused" in daemon.log(), 10, "the reload refused")
    log = daemon.log()
    assert "pipeline.components.router.capacity_per_replica" in log
    assert "control.intervall_s: unknown key" in log
    ticks = daemon.decisions()["tick"]
    wait_for(lambda: daemon.decisions()["tick"] >= ticks + 2, 10, "ticks after the refusal")
    assert daemon.alive() and daemon.ready() and replicas(kube) == 5
    assert daemon.metric('elastiscale_config_reloads_total{result="refused"}') == 1

    write_config(config, prom, kubeconfig, "hup", capacity=5)
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: replicas(kube) == 9, 20, "scaled to 9 = 45 / 5 on the new config")
    assert daemon.metric('elastiscale_config_reloads_total{result="ok"}') == 1
    code, elapsed_s = daemon.terminate()
    assert code == 0 and elapsed_s < 5.0


def test_two_daemons_only_the_leader_acts_and_the_other_takes_over(
    prom: LocalPrometheus,
    exporter: Exporter,
    kube: FakeKubeAPI,
    daemons: list[DaemonProcess],
    tmp_path: Path,
) -> None:
    demand(exporter, "pair", 45)
    config = write_config(tmp_path / "p.yaml", prom, kube.write_kubeconfig(tmp_path / "k"), "pair")
    first = start(daemons, config, tmp_path, "first")
    wait_for(lambda: lease_holder(kube) == "first", 10, "first holds the Lease")
    wait_for(lambda: replicas(kube) == 5, 20, "scaled to 5 by the leader")
    second = start(daemons, config, tmp_path, "second")
    ticks = second.decisions()["tick"] or 0
    wait_for(lambda: (second.decisions()["tick"] or 0) >= ticks + 2, 10, "second ticking")

    demand(exporter, "pair", 65)
    wait_for(lambda: replicas(kube) == 7, 20, "scaled to 7 by the leader")
    time.sleep(2 * INTERVAL_S)  # the follower has seen the new demand too
    assert lease_holder(kube) == "first"
    assert second.metric("elastiscale_leader") == 0 and first.metric("elastiscale_leader") == 1
    assert not [e for e in second.entries() if e["kind"] == "intent"]  # it never acted
    assert {r["outcome"] for r in second.decisions()["recent"]} <= {"dry-run"}
    assert [e["to_replicas"] for e in first.entries() if e["kind"] == "intent"] == [5, 7]

    first.kill()  # SIGKILL: no release, the Lease must expire
    killed_at = time.monotonic()
    demand(exporter, "pair", 85)
    wait_for(lambda: lease_holder(kube) == "second", 15, "second takes the Lease")
    took_s = time.monotonic() - killed_at
    assert took_s <= LEASE_S + RENEW_S + 1.5, took_s
    wait_for(lambda: replicas(kube) == 9, 20, "scaled to 9 by the new leader")
    assert [e["to_replicas"] for e in second.entries() if e["kind"] == "intent"] == [9]
    code, _ = second.terminate()
    assert code == 0


def test_a_change_in_flight_at_a_crash_is_reported_at_the_next_start(
    prom: LocalPrometheus,
    exporter: Exporter,
    kube: FakeKubeAPI,
    daemons: list[DaemonProcess],
    tmp_path: Path,
) -> None:
    demand(exporter, "crash", 45)
    config = write_config(tmp_path / "p.yaml", prom, kube.write_kubeconfig(tmp_path / "k"), "crash")
    kube.inject(SCALE_PATH, method="PATCH", latency_s=4.0, times=1)  # a slow API server
    daemon = start(daemons, config, tmp_path, "crash", ready=False)
    wait_for(
        lambda: daemon.journal.exists() and any(e["kind"] == "intent" for e in daemon.entries()),
        20,
        "the intent journaled",
    )
    daemon.kill()  # while the PATCH is still waiting for its answer
    (lost,) = Journal(daemon.journal).in_flight()
    assert (lost.component, lost.from_replicas, lost.to_replicas) == ("router", 1, 5)

    again = start(daemons, config, tmp_path, "crash")
    (reported,) = again.decisions()["in_flight_at_start"]
    assert reported["id"] == lost.id and reported["to_replicas"] == 5
    assert "in flight when the previous run stopped" in again.log()
    wait_for(lambda: replicas(kube) == 5, 20, "at 5 either way")
    code, _ = again.terminate()
    assert code == 0
    assert Journal(again.journal).in_flight() == []


# --------------------------------------------------------------------------------------------
# No servers needed


def run_cli(
    *args: str, cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "elastiscale.cli", "run", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_the_example_runs_once_as_a_dry_run(tmp_path: Path) -> None:
    done = run_cli(
        "examples/daemon/pipeline.yaml", "--once", "--dry-run", "--journal", str(tmp_path / "j")
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["router", "llm"]
    assert all("replicas (" in line for line in lines)
    assert "acting on nothing" in done.stderr


def test_bad_configs_exit_2_naming_the_field(tmp_path: Path) -> None:
    example = yaml.safe_load((REPO / "examples/daemon/pipeline.yaml").read_text())
    example["daemon"]["leader_election"] = {"duration_s": 2, "renew_s": 5}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(example))
    done = run_cli(str(bad), "--once")
    assert done.returncode == 2
    assert "daemon.leader_election: renew_s = 5 must be less than half" in done.stderr

    del example["daemon"]["leader_election"]
    del example["actuator"]
    bad.write_text(yaml.safe_dump(example))
    done = run_cli(str(bad), "--once", "--listen", "127.0.0.1:99999")
    assert done.returncode == 2
    assert "actuator: required by `elastiscale run` (or pass --dry-run)" in done.stderr
    assert "--listen: '127.0.0.1:99999': port 99999 is outside 0..65535" in done.stderr

    done = run_cli("examples/daemon/pipeline.yaml", "--once", env={"ELASTISCALE_LOG_FORMAT": "xml"})
    assert done.returncode == 2
    assert "ELASTISCALE_LOG_FORMAT: 'xml' is not text or json" in done.stderr
