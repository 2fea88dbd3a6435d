"""A run configured with secrets leaks none of them: a real `elastiscale run` reading the real
Prometheus with an inline bearer token, acting on the fake API server (its own process) that
demands a token of its own, with AWS keys in its environment. The run scales, meets refused
credentials on both sides, and refuses a reload whose token field is malformed; then every
output is searched: the log, the journal, /metrics, /decisions, /readyz, /healthz, and what
`elastiscale validate` prints for the malformed file.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import yaml

from chaos.conftest import kube_actuator, pipeline_config
from chaos.harness import (
    ChaosExporter,
    DaemonProcess,
    FaultProxy,
    KubeProcess,
    child_env,
    scale_path,
    write_kubeconfig,
)
from conftest import wait_for

PROM_TOKEN = "prom-3f9c1e7a-bearer-SECRET"
KUBE_TOKEN = "kube-8d2b4c6e-token-SECRET"
AWS_KEY_ID = "AKIAZ7Y6X5W4V3U2T1S0"
AWS_SECRET = "aws9x8y7z6SECRETw5v4u3t2s1r0q+p/o"
SECRETS = (PROM_TOKEN, KUBE_TOKEN, AWS_KEY_ID, AWS_SECRET)
LABELS = {"router": "sec-router", "worker": "sec-worker"}


def test_no_secret_in_any_output(
    tmp_path: Path, chaos_exporter: ChaosExporter, prom_proxy: FaultProxy
) -> None:
    chaos_exporter.set_demand(LABELS, 45.0, 25.0)
    kube = KubeProcess(tmp_path, ["router", "worker"], token=KUBE_TOKEN)
    daemon: DaemonProcess | None = None
    try:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube.url, token=KUBE_TOKEN)
        path = pipeline_config(
            tmp_path / "p.yaml", prom_proxy.url, LABELS, kube_actuator(kubeconfig)
        )
        raw = yaml.safe_load(path.read_text())
        raw["metrics"]["auth"] = {"bearer_token": PROM_TOKEN}
        path.write_text(yaml.safe_dump(raw))
        env = {"AWS_ACCESS_KEY_ID": AWS_KEY_ID, "AWS_SECRET_ACCESS_KEY": AWS_SECRET}
        daemon = DaemonProcess(path, tmp_path, "secrets", env=env)
        daemon.wait_ready()
        wait_for(lambda: kube.replicas("router") == 5, 20, "router at 5")

        # credentials refused on both sides, for a few ticks
        prom_proxy.status = 401
        kube.inject(scale_path("worker"), status=401, times=None)
        chaos_exporter.set_rate(LABELS["worker"], 45.0)
        daemon.wait_ticks(4)
        prom_proxy.clear()
        daemon.wait_ticks(4)
        kube.clear()

        # a reload whose token field is malformed (a list), and `validate` of that file
        raw["metrics"]["auth"] = {"bearer_token": [PROM_TOKEN]}
        raw["metrics"]["timeout_s"] = -1
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump(raw))
        path.write_text(bad.read_text())
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: "refused" in daemon.log(), 10, "the reload refused")  # type: ignore[union-attr]
        validated = subprocess.run(
            [sys.executable, "-m", "elastiscale.cli", "validate", str(bad)],
            capture_output=True,
            text=True,
            env={**child_env(), **env},
            timeout=60,
            check=False,
        )
        assert validated.returncode == 2, validated.stderr
        assert "metrics.auth.bearer_token" in validated.stdout + validated.stderr

        outputs = {
            "log": daemon.log(),
            "journal": "".join(p.read_text() for p in tmp_path.glob("secrets.jsonl*")),
            "/metrics": daemon.get("/metrics")[1],
            "/decisions": daemon.get("/decisions?limit=1000")[1],
            "/readyz": daemon.get("/readyz")[1],
            "/healthz": daemon.get("/healthz")[1],
            "validate": validated.stdout + validated.stderr,
        }
        code, _ = daemon.terminate()
        assert code == 0
        outputs["log"] = daemon.log()
    finally:
        if daemon is not None:
            daemon.kill()
        kube.stop()
    assert "credentials refused" in outputs["log"]  # the faults were met and said
    assert "401" in outputs["log"]
    assert (
        '"decision"' in outputs["journal"] and "elastiscale_desired_replicas" in outputs["/metrics"]
    )
    leaks = [(where, s) for where, text in outputs.items() for s in SECRETS if s in text]
    assert not leaks, leaks
