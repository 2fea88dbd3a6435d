"""The live benchmark's servers: a local Ray cluster with Serve, and a Prometheus scraping the
stand-in models.

- `ServeCluster` starts Ray in this process (token authentication on, as Ray 2.60 defaults to,
  the dashboard on 127.0.0.1) and deploys, inspects and deletes applications through the
  dashboard's REST API, as `serve deploy` and the ray-serve actuator do.
- `Scraper` keeps a `LocalPrometheus` (the package's throwaway Prometheus) pointed at the
  metrics endpoints the replicas announce in a directory, dropping those of processes that
  have exited.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from elastiscale.testing.prometheus import LocalPrometheus, free_port
from elastiscale.testing.ray_serve import RAY_DEFAULT_PORTS

HERE = Path(__file__).resolve().parent


def wait_until(what: str, predicate: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.2)


class ServeCluster:
    """A local Ray cluster with Serve, driven over the dashboard's REST API."""

    def __init__(self, workdir: Path, env: Mapping[str, str]) -> None:
        self.workdir = workdir
        self.token_file = workdir / "ray_auth_token"
        self.token_file.write_text(secrets.token_hex(16), encoding="utf-8")
        self.dashboard_port = free_port(RAY_DEFAULT_PORTS)
        self.http_port = free_port(RAY_DEFAULT_PORTS)
        # The raylet's workers inherit this environment: they import the stand-in models from
        # this directory, and Serve reads its metric push intervals from it. Ray starts its
        # workers (every replica) at nice 15 (`worker_niceness`, so that a node's own daemons
        # come first); on a node that also runs the load generator, Prometheus and the daemon at
        # nice 0, the replicas then get a 28th of a CPU whenever those are busy, and their holds
        # overrun several-fold. The benchmark measures the replicas, so they run at nice 0.
        os.environ.update(
            {
                "RAY_worker_niceness": "0",
                "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN_PATH": str(self.token_file),
                "PYTHONPATH": os.pathsep.join(
                    [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
                ),
                **env,
            }
        )
        os.environ.pop("RAY_AUTH_TOKEN", None)

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        import ray  # after the environment is set: Ray reads RAY_AUTH_MODE on import

        ray.init(
            num_cpus=2,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=self.dashboard_port,
            log_to_driver=False,
            configure_logging=False,
        )
        wait_until("the Ray dashboard", self._answers, timeout_s=90)

    def stop(self) -> None:
        import ray

        ray.shutdown()

    def request(self, method: str, path: str, body: Any = None, timeout_s: float = 30.0) -> Any:
        token = self.token_file.read_text(encoding="utf-8").strip()
        req = urllib.request.Request(
            self.dashboard_url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            text = resp.read().decode()
        return json.loads(text) if text.strip() else None

    def _answers(self) -> bool:
        try:
            self.request("GET", "/api/serve/applications/", timeout_s=5)
        except (OSError, urllib.error.HTTPError):
            return False
        return True

    def applications(self) -> dict[str, Any]:
        found: dict[str, Any] = self.request("GET", "/api/serve/applications/")["applications"]
        return found

    def deploy(self, application: Mapping[str, Any], timeout_s: float = 180.0) -> None:
        """Replace every application by this one and wait until it runs."""
        config = {
            "http_options": {"host": "127.0.0.1", "port": self.http_port},
            "applications": [dict(application)],
        }
        self.request("PUT", "/api/serve/applications/", config)
        name = application["name"]

        def running() -> bool:
            app = self.applications().get(name, {})
            if app.get("status") == "DEPLOY_FAILED":
                raise RuntimeError(f"Serve could not deploy {name}: {app.get('message')}")
            return bool(app.get("status") == "RUNNING")

        wait_until(f"application {name} to run", running, timeout_s)

    def delete_all(self, timeout_s: float = 120.0) -> None:
        """Delete every application and wait until their replicas are gone."""
        self.request("DELETE", "/api/serve/applications/")
        wait_until("applications to be deleted", lambda: not self.applications(), timeout_s)


class Scraper:
    """A Prometheus scraping every live replica's metrics endpoint each `scrape_interval_s`."""

    def __init__(self, workdir: Path, scrape_interval_s: float) -> None:
        self.registry_dir = workdir / "replicas"
        self.registry_dir.mkdir(parents=True, exist_ok=True)
        self.prometheus = LocalPrometheus(
            workdir / "prometheus", scrape_interval_s=scrape_interval_s
        )
        self._targets: dict[str, dict[str, str]] = {}

    @property
    def url(self) -> str:
        return self.prometheus.url

    def start(self) -> None:
        self.prometheus.workdir.mkdir(parents=True, exist_ok=True)
        self.prometheus.start()

    def stop(self) -> None:
        self.prometheus.stop()

    def clear(self) -> None:
        """Forget every announced endpoint and the replicas' call logs (between runs)."""
        for pattern in ("*.json", "calls-*.csv"):
            for path in self.registry_dir.glob(pattern):
                path.unlink(missing_ok=True)
        self.refresh()

    def refresh(self) -> None:
        """Point Prometheus at the endpoints of the replica processes still alive."""
        targets: dict[str, dict[str, str]] = {}
        for path in self.registry_dir.glob("*.json"):
            try:
                entry = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # being written
            if not _alive(int(entry["pid"])):
                path.unlink(missing_ok=True)
                continue
            targets[entry["address"]] = {"replica_pid": str(entry["pid"])}
        if targets != self._targets:
            self.prometheus.set_targets(targets)
            self._targets = targets


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
