"""The processes and instruments of the chaos suite.

- `KubeProcess`: the wire-level fake Kubernetes API server in a process of its own
  (kube_server.py), driven through its control port.
- `FaultProxy` (proxy.py): an HTTP reverse proxy in the test process, put between the daemon
  and a server (Prometheus, the fake API server, moto) to answer errors, answer slowly,
  rewrite answers or refuse connections.
- `ChaosExporter`: the demand the test sets, served for Prometheus to scrape (a gauge, and a
  counter fed at a set rate for `rate()` queries).
- `DaemonProcess`: `elastiscale run` as a process, read through its endpoints, journal and log.
- `Watch`: what a scenario asserts about the daemon between two moments.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import Counter, Gauge

from chaos.proxy import FaultProxy
from conftest import REPO, WAIT_SLACK, wait_for
from elastiscale.daemon.journal import Journal
from elastiscale.testing.lifetime import die_with_parent
from elastiscale.testing.prometheus import MetricsEndpoint, free_port

HERE = Path(__file__).resolve().parent
INTERVAL_S = 0.5
NAMESPACE = "default"


def child_env() -> dict[str, str]:
    """The environment of child processes: the sources under test first on the path."""
    env = dict(os.environ)
    src = str(REPO / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _get_json(url: str, timeout_s: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as answer:
        return json.loads(answer.read())


def _post_json(url: str, body: Any) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "x/json"}
    )
    with urllib.request.urlopen(request, timeout=5.0) as answer:
        return json.loads(answer.read())


# --------------------------------------------------------------------------------------------
# The fake Kubernetes API server, as a process


class KubeProcess:
    """kube_server.py with one Deployment (1 replica) per name."""

    def __init__(self, workdir: Path, names: list[str], token: str | None = None) -> None:
        ready = workdir / "kube-ready.json"
        env = {**child_env(), **({"KUBE_FAKE_TOKEN": token} if token else {})}
        self.log_path = workdir / "kube.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                die_with_parent([sys.executable, str(HERE / "kube_server.py"), str(ready), *names]),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        wait_for(ready.exists, 20, f"the fake API server process; log: {self._log()}")
        urls = json.loads(ready.read_text())
        self.url: str = urls["api"]
        self.control: str = urls["control"]

    def _log(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:]

    def inject(self, path: str, **fault: Any) -> None:
        _post_json(self.control + "/inject", {"path": path, **fault})

    def clear(self) -> None:
        _post_json(self.control + "/clear", {})

    def requests(self) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = _get_json(self.control + "/requests")
        return got

    def replicas(self, name: str) -> int:
        return int(_get_json(f"{self.control}/replicas?name={name}"))

    def lease_holder(self, name: str) -> str | None:
        holder: str | None = _get_json(f"{self.control}/lease?name={name}")
        return holder

    def scale_writes(self, name: str) -> list[dict[str, Any]]:
        """The PATCH/PUT requests on `name`'s scale subresource, in order."""
        path = scale_path(name)
        return [r for r in self.requests() if r["path"] == path and r["method"] in ("PATCH", "PUT")]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def scale_path(name: str) -> str:
    return f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}/scale"


def write_kubeconfig(path: Path, server: str, token: str | None = None) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "fake", "user": {"token": token} if token else {}}],
        "contexts": [
            {"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": NAMESPACE}}
        ],
        "current-context": "fake",
    }
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# The exporter


class ChaosExporter:
    """`es_chaos_demand_rps{component}` (a gauge) and `es_chaos_requests_total{component}` (a
    counter a thread advances at `rate_rps[component]` per second), served for scraping."""

    def __init__(self) -> None:
        self.endpoint = MetricsEndpoint()
        registry = self.endpoint.registry
        self.gauge = Gauge("es_chaos_demand_rps", "demand", ["component"], registry=registry)
        self.counter = Counter("es_chaos_requests", "requests", ["component"], registry=registry)
        self.rate_rps: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return self.endpoint.address

    def _feed(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(0.05):
            now = time.monotonic()
            with self._lock:
                for component, rps in self.rate_rps.items():
                    self.counter.labels(component).inc(rps * (now - last))
            last = now

    def set_rate(self, component: str, rps: float) -> None:
        with self._lock:
            self.rate_rps[component] = rps

    def set_demand(
        self, labels: dict[str, str], router_rps: float, worker_rps: float = 25.0
    ) -> None:
        """The demand of a router and worker pair (`labels`: their label values): the
        router's as the gauge, the worker's as the counter's rate."""
        self.gauge.labels(labels["router"]).set(router_rps)
        self.set_rate(labels["worker"], worker_rps)

    def reset_counter(self, component: str) -> None:
        """The counter starts again from 0 (a restarted server)."""
        with self._lock:
            self.counter.remove(component)
            self.counter.labels(component)

    def stop(self) -> None:
        self._stop.set()
        self.endpoint.stop()


# --------------------------------------------------------------------------------------------
# The daemon


class DaemonProcess:
    """`python -m elastiscale.cli run CONFIG` with its own port, journal, identity and log."""

    def __init__(
        self,
        config: Path,
        workdir: Path,
        identity: str,
        env: dict[str, str] | None = None,
        journal: Path | None = None,
    ) -> None:
        self.config = config
        self.workdir = workdir
        self.identity = identity
        self.port = free_port()
        self.journal = journal or workdir / f"{identity}.jsonl"
        self.log_path = workdir / f"{identity}.log"
        self.env = {**child_env(), **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        command = [sys.executable, "-m", "elastiscale.cli", "run", str(self.config)]
        command += ["--listen", f"127.0.0.1:{self.port}", "--journal", str(self.journal)]
        command += ["--identity", self.identity]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                die_with_parent(command),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=self.env,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=3) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def wait_ready(self, timeout_s: float = 30) -> None:
        wait_for(self.ready, timeout_s, f"{self.identity} ready; log: {self.log()[-3000:]}")

    def decisions(self) -> dict[str, Any]:
        code, body = self.get("/decisions")
        assert code == 200, body
        got: dict[str, Any] = json.loads(body)
        return got

    def tick(self) -> int:
        return int(self.decisions()["tick"] or 0)

    def wait_ticks(self, count: int, timeout_s: float | None = None) -> int:
        """Wait until `count` more ticks have finished; the tick number then."""
        start = self.tick()
        wait_for(
            lambda: self.tick() >= start + count,
            timeout_s or count * INTERVAL_S * 2 + 5,
            f"{count} ticks of {self.identity}; log: {self.log()[-2000:]}",
        )
        return self.tick()

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics, keyed by its name and labels as printed."""
        out: dict[str, float] = {}
        for line in self.get("/metrics")[1].splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def metric(self, sample: str) -> float | None:
        """One sample of /metrics by its name and labels as printed (None when absent)."""
        return self.metrics().get(sample)

    def entries(self) -> list[dict[str, Any]]:
        return list(Journal(self.journal).entries()) if self.journal.exists() else []

    def intents(self) -> list[dict[str, Any]]:
        return [e for e in self.entries() if e["kind"] == "intent"]

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def terminate(self) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds to exit)."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=15 * WAIT_SLACK)
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


# --------------------------------------------------------------------------------------------
# What a scenario asserts


def journal_agrees(entries: list[dict[str, Any]], applied: list[int], component: str) -> None:
    """The journal's changes of `component` against the writes the server applied (in the
    order it finished them): every change whose outcome is ok was applied, in order (none
    lost); every other write applied is one whose outcome the journal does not know (no answer
    in time, or the process died with it in flight), landed late; nothing was applied that the
    journal does not announce. Writes set a count, so a late landing of the same count changes
    nothing."""
    outcomes = {e["id"]: e for e in entries if e["kind"] == "outcome"}
    made: list[int] = []
    unknown: list[int] = []
    for intent in (e for e in entries if e["kind"] == "intent" and e["component"] == component):
        outcome = outcomes.get(intent["id"])
        if outcome is not None and outcome["ok"]:
            made.append(intent["to_replicas"])
        elif outcome is None or "no answer within" in (outcome.get("message") or ""):
            unknown.append(intent["to_replicas"])
    left = list(made)
    for replicas in applied:
        if left and left[0] == replicas:
            left.pop(0)
        elif replicas in unknown:
            unknown.remove(replicas)
        else:
            raise AssertionError(f"{component}: {replicas} applied but never announced")
    assert not left, f"{component}: journal says done, server never applied: {left}"


def decisions_per_component(metrics: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in metrics.items():
        match = re.match(r'elastiscale_decisions_total\{component="([^"]+)"', key)
        if match:
            out[match[1]] = out.get(match[1], 0.0) + value
    return out


def ticks_total(metrics: dict[str, float]) -> float:
    return sum(v for k, v in metrics.items() if k.startswith("elastiscale_ticks_total"))


@dataclass
class Watch:
    """The daemon's counters and log at the start of a scenario, to compare with later."""

    daemon: DaemonProcess
    components: tuple[str, ...]
    log_offset: int = 0
    ticks: float = 0.0
    decisions: dict[str, float] = field(default_factory=dict)
    tick_no: int = 0
    started_mono_s: float = 0.0

    @classmethod
    def start(cls, daemon: DaemonProcess, components: tuple[str, ...]) -> Watch:
        metrics = daemon.metrics()
        return cls(
            daemon,
            components,
            log_offset=len(daemon.log()),
            ticks=ticks_total(metrics),
            decisions=decisions_per_component(metrics),
            tick_no=daemon.tick(),
            started_mono_s=time.monotonic(),
        )

    def new_log(self) -> str:
        return self.daemon.log()[self.log_offset :]

    def lines_with(self, pattern: str) -> list[str]:
        return [line for line in self.new_log().splitlines() if re.search(pattern, line)]

    def assert_one_record_per_component_per_tick(self) -> float:
        """Each component's decision count grew exactly as the tick count; the ticks run."""
        metrics = self.daemon.metrics()
        ran = ticks_total(metrics) - self.ticks
        grown = decisions_per_component(metrics)
        for component in self.components:
            got = grown.get(component, 0.0) - self.decisions.get(component, 0.0)
            assert got == ran, f"{component}: {got} decision records in {ran} ticks"
        return ran

    def assert_ticking(self) -> None:
        """The process is alive, and ticked at its pace (no burst, no stall) since the start."""
        assert self.daemon.alive(), self.daemon.log()[-3000:]
        elapsed_s = time.monotonic() - self.started_mono_s
        ran = ticks_total(self.daemon.metrics()) - self.ticks
        most = math.floor(elapsed_s / INTERVAL_S) + 2
        assert ran <= most, f"{ran} ticks in {elapsed_s:.1f} s: a burst"
        assert ran >= 1, f"no tick in {elapsed_s:.1f} s"


__all__ = [
    "ChaosExporter",
    "DaemonProcess",
    "FaultProxy",
    "KubeProcess",
    "Watch",
    "child_env",
    "journal_agrees",
    "scale_path",
    "write_kubeconfig",
]
