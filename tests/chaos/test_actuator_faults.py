"""Faults of the acting side, each a row: a real `elastiscale run` process reading the real
Prometheus, acting on the fake Kubernetes API server in its own process through a fault proxy
(for refused connections and read timeouts) or with faults the fake injects itself (409, 429
with Retry-After, 500, 503); and on SageMaker served by a moto server process, with an
endpoint stuck in `Updating`.

Each row starts at router 45 req/s (5 replicas) and worker 25 req/s (3 replicas); the fault
starts on the router's scale subresource and the router's demand rises to 65 req/s (7): the
daemon tries and fails. While it lasts nothing goes below 5 and 3, the daemon ticks at its
pace with one decision record per component per tick (the worker acts as usual when the fault
is the router's alone), and one log line names the fault. Once the fault ends the router
reaches 7 within the row's number of ticks; then demand goes back to 45 for the next row.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chaos.conftest import kube_actuator, pipeline_config
from chaos.harness import (
    ChaosExporter,
    DaemonProcess,
    FaultProxy,
    KubeProcess,
    Watch,
    journal_agrees,
    scale_path,
    write_kubeconfig,
)
from conftest import wait_for
from elastiscale.testing.prometheus import LocalPrometheus

COMPONENTS = ("router", "worker")
LABELS = {"router": "af-router", "worker": "af-worker"}
FAULT_S = 2.5
MEASURED: dict[str, int] = {}


@dataclass
class Env:
    exporter: ChaosExporter
    kube: KubeProcess
    proxy: FaultProxy
    daemon: DaemonProcess


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory,
    chaos_prom: LocalPrometheus,
    chaos_exporter: ChaosExporter,
) -> Iterator[Env]:
    workdir = tmp_path_factory.mktemp("actuator-faults")
    chaos_exporter.set_demand(LABELS, 45.0)
    kube = KubeProcess(workdir, list(COMPONENTS))
    proxy = FaultProxy(kube.url)
    kubeconfig = write_kubeconfig(workdir / "kubeconfig", proxy.url)
    config = pipeline_config(
        workdir / "p.yaml", chaos_prom.url, LABELS, kube_actuator(kubeconfig, timeout_s=1.0)
    )
    daemon = DaemonProcess(config, workdir, "actuator-faults")
    try:
        daemon.wait_ready()
        yield Env(chaos_exporter, kube, proxy, daemon)
    finally:
        daemon.kill()
        proxy.stop()
        kube.stop()
        if MEASURED:
            print("\nrecovery after actuator faults (ticks):", json.dumps(MEASURED))


def _inject(status: int, **extra: Any) -> Callable[[Env], None]:
    def inject(env: Env) -> None:
        env.kube.inject(scale_path("router"), status=status, times=None, method="PATCH", **extra)

    return inject


def _clear_kube(env: Env) -> None:
    env.kube.clear()


def _clear_proxy(env: Env) -> None:
    env.proxy.clear()
    env.proxy.open()


def _refuse(env: Env) -> None:
    env.proxy.close()


def _slow(env: Env) -> None:
    env.proxy.only = scale_path("router")
    env.proxy.delay_s = 3.0  # the actuator's timeout is 1 s


@dataclass(frozen=True)
class Row:
    name: str
    inject: Callable[[Env], None]
    clear: Callable[[Env], None]
    log: str
    recovery_ticks: int


ROWS = [
    Row(
        "409 stale resourceVersion",
        _inject(409),
        _clear_kube,
        r"scaling router to 7 failed: conflict",
        4,
    ),
    Row(
        "429 with Retry-After: 1",
        _inject(429, retry_after_s=1),
        _clear_kube,
        r"scaling router to 7 failed: throttled",
        12,
    ),
    Row("500", _inject(500), _clear_kube, r"scaling router to 7 failed: unavailable", 12),
    Row("503", _inject(503), _clear_kube, r"scaling router to 7 failed: unavailable", 12),
    Row(
        "connection refused",
        _refuse,
        _clear_proxy,
        r"actuator read failed: .*unreachable: .*[Cc]onnection refused",
        12,
    ),
    Row(
        "read timeout (3 s answer, 1 s timeout)",
        _slow,
        _clear_proxy,
        r"scaling router to 7 failed: unavailable",
        12,
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_actuator_fault(env: Env, row: Row) -> None:
    daemon, kube = env.daemon, env.kube
    env.exporter.set_demand(LABELS, 45.0)
    wait_for(
        lambda: kube.replicas("router") == 5 and kube.replicas("worker") == 3,
        20,
        "at 5 and 3",
    )
    daemon.wait_ticks(2)
    watch = Watch.start(daemon, COMPONENTS)
    row.inject(env)
    try:
        env.exporter.set_demand(LABELS, 65.0)
        seen: list[tuple[int, int]] = []
        deadline = time.monotonic() + FAULT_S
        while time.monotonic() < deadline:
            seen.append((kube.replicas("router"), kube.replicas("worker")))
            time.sleep(0.1)
        daemon.wait_ticks(1)
        assert all(r == 5 for r, _ in seen), f"router moved during the fault: {seen}"
        assert all(w >= 3 for _, w in seen), f"worker scaled down: {seen}"
        watch.assert_ticking()
        named = watch.lines_with(row.log)
        assert len(named) == 1, f"{len(named)} lines naming the fault: {named[:5]}"
    finally:
        ended_tick = daemon.tick()
        row.clear(env)
    watch.assert_one_record_per_component_per_tick()

    # A write that timed out may still land (the server applied it after the client gave up):
    # recovered is the daemon knowing the router at 7, whoever made it so.
    def knows_seven() -> bool:
        (record,) = [r for r in daemon.decisions()["latest"] if r["component"] == "router"]
        return bool(
            kube.replicas("router") == 7
            and (record["current_replicas"] == 7 or record["outcome"] == "scaled")
        )

    wait_for(knows_seven, 30, "router at 7 after the fault")
    ticks = daemon.tick() - ended_tick
    MEASURED[row.name] = ticks
    print(f"{row.name}: recovered in {ticks} ticks")
    assert ticks <= row.recovery_ticks, f"recovered in {ticks} ticks > {row.recovery_ticks}"
    watch.assert_one_record_per_component_per_tick()
    assert daemon.alive()


def test_the_journal_and_the_servers_request_log_agree(env: Env) -> None:
    """After all the rows: every write the server applied is a change the journal announced,
    in the same order; none applied twice, none the journal calls done that was not."""
    entries = env.daemon.entries()
    for component in COMPONENTS:
        applied = [
            r["body"]["spec"]["replicas"]
            for r in env.kube.scale_writes(component)
            if r["status"] == 200
        ]
        journal_agrees(entries, applied, component)


# --------------------------------------------------------------------------------------------
# SageMaker on a moto server: an endpoint stuck in `Updating`


def _updating(path: str, body: bytes) -> bytes:
    """DescribeEndpoint answers `Updating` (moto finishes every update at once)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body
    if isinstance(doc, dict) and "EndpointStatus" in doc:
        doc["EndpointStatus"] = "Updating"
        return json.dumps(doc).encode()
    return body


def test_sagemaker_endpoint_stuck_updating(
    tmp_path: Path,
    chaos_prom: LocalPrometheus,
    chaos_exporter: ChaosExporter,
    moto_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chaos.sagemaker import create_endpoint, instance_count, sagemaker_env

    labels = {"router": "sm-router", "worker": "sm-worker"}
    chaos_exporter.set_demand(labels, 25.0, 15.0)
    for name in ("chaos-router", "chaos-worker"):
        create_endpoint(moto_url, name)
    proxy = FaultProxy(moto_url)
    actuator = {
        "type": "sagemaker",
        "region": "us-east-1",
        "endpoint_url": proxy.url,
        "targets": {
            "router": {"endpoint": "chaos-router"},
            "worker": {"endpoint": "chaos-worker"},
        },
    }
    config = pipeline_config(tmp_path / "p.yaml", chaos_prom.url, labels, actuator)
    daemon = DaemonProcess(config, tmp_path, "sagemaker", env=sagemaker_env(tmp_path))
    try:
        daemon.wait_ready()
        wait_for(lambda: instance_count(moto_url, "chaos-router") == 3, 20, "router at 3")
        wait_for(lambda: instance_count(moto_url, "chaos-worker") == 2, 20, "worker at 2")
        daemon.wait_ticks(2)
        watch = Watch.start(daemon, COMPONENTS)
        proxy.transform = _updating
        chaos_exporter.gauge.labels(labels["router"]).set(55.0)
        chaos_exporter.set_rate(labels["worker"], 5.0)  # would be 1 instance, if it were seen
        time.sleep(FAULT_S)
        daemon.wait_ticks(1)
        assert instance_count(moto_url, "chaos-router") == 3
        assert instance_count(moto_url, "chaos-worker") == 2
        watch.assert_ticking()
        named = watch.lines_with(r"scaling router to 6 failed: in progress")
        assert len(named) == 1, named
        watch.assert_one_record_per_component_per_tick()
        ended_tick = daemon.tick()
        proxy.clear()
        chaos_exporter.set_rate(labels["worker"], 15.0)
        wait_for(lambda: instance_count(moto_url, "chaos-router") == 6, 20, "router at 6")
        ticks = daemon.tick() - ended_tick
        MEASURED["sagemaker endpoint Updating"] = ticks
        print(f"sagemaker endpoint Updating: recovered in {ticks} ticks")
        assert ticks <= 4
        code, _ = daemon.terminate()
        assert code == 0
    finally:
        daemon.kill()
        proxy.stop()
