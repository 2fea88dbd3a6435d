"""What each live run deploys: its Serve application, and for the daemon run, `elastiscale run`.

- `ray-serve`: Serve's default autoscaling policy with its documented defaults divided by the
  time scale, `target_ongoing_requests` at 0.7 of each replica's slots;
- `elastiscale`: the application deployed with `external_scaler_enabled`, scaled by
  `elastiscale run` (the sidecar daemon, `Daemon`) through the ray-serve actuator's
  external-scaler REST path, reading the replicas' metrics from Prometheus as in production;
- `elastiscale-in-ray`: elastiscale inside Serve's controller as the application's autoscaling
  policy, reading what Serve gives it: ongoing requests and each replica's reported arrival rate;
- `ceiling`: every deployment at its maximum replicas, all started before the load: what no
  autoscaler can beat on this host, the reference of the avoidable misses.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from cluster import ServeCluster
from scenario import Scenario

APP = "live"
RUNS = ("ray-serve", "elastiscale", "elastiscale-in-ray", "ceiling")
#: The elastiscale policy inside Serve's controller.
RAY_POLICY = "elastiscale.adapters.ray.policy:ElastiscaleApplicationPolicy"

#: The signals the daemon reads, from the stand-ins' own metrics (see app.py).
QUERIES = {
    "demand_rps": "sum by ($by) (rate(live_calls_total{$selector}[$window]))",
    "in_flight": "sum by ($by) (live_busy{$selector})",
    "queue_length": (
        "clamp_min(sum by ($by) (live_outstanding{$selector})"
        " - sum by ($by) (live_busy{$selector})"
        " - sum by ($by) (live_downstream{$selector}), 0)"
    ),
    "ready_replicas": "sum by ($by) (live_ready{$selector})",
}


def application(scenario: Scenario, run: str, registry_dir: Path) -> dict[str, Any]:
    """The Serve application of one run (`import_path` resolves in app.py)."""
    config = scenario.wall_config
    app: dict[str, Any] = {
        "name": APP,
        "route_prefix": "/",
        "import_path": "app:build",
        "args": scenario.app_components(registry_dir),
    }
    deployments = []
    autoscaling = scenario.ray_serve_autoscaling()
    for name, comp in config.pipeline.components.items():
        initial = comp.replicas.initial
        if run == "ceiling":
            deployments.append({"name": name, "num_replicas": comp.replicas.max})
        elif run == "ray-serve" and comp.replicas.min != comp.replicas.max:
            deployments.append({"name": name, "autoscaling_config": autoscaling[name]})
        elif run == "elastiscale-in-ray":
            # Serve still applies these bounds and delays over the policy's decisions: zero
            # delays leave the smoothing to elastiscale's own constraints.
            bounds = {k: autoscaling[name][k] for k in ("min_replicas", "max_replicas")}
            deployments.append(
                {
                    "name": name,
                    "autoscaling_config": {
                        **bounds,
                        "initial_replicas": initial,
                        "upscale_delay_s": 0,
                        "downscale_delay_s": 0,
                        "look_back_period_s": scenario.rate_window_s,
                        "metrics_interval_s": autoscaling[name]["metrics_interval_s"],
                    },
                }
            )
        else:
            deployments.append({"name": name, "num_replicas": initial})
    app["deployments"] = deployments
    if run == "elastiscale":
        app["external_scaler_enabled"] = True
    if run == "elastiscale-in-ray":
        doc = scenario.wall_doc()
        doc["policies"] = [{"name": "elastiscale", "params": scenario.elastiscale_params()}]
        app["autoscaling_policy"] = {
            "policy_function": RAY_POLICY,
            "policy_kwargs": {"config": doc, "demand_metric": "demand_rps"},
        }
    return app


def daemon_config(
    scenario: Scenario, prometheus_url: str, cluster: ServeCluster, workdir: Path, port: int
) -> dict[str, Any]:
    """`elastiscale run`'s config: the wall-unit pipeline, Prometheus in, Serve out."""
    doc = scenario.wall_doc()
    doc["policies"] = [{"name": "elastiscale", "params": scenario.elastiscale_params()}]
    doc["metrics"] = {
        "type": "prometheus",
        "url": prometheus_url,
        "label": "component",
        "rate_window_s": scenario.rate_window_s,
        "timeout_s": 2.0,
        "queries": QUERIES,
    }
    doc["actuator"] = {
        "type": "ray-serve",
        "address": cluster.dashboard_url,
        "application": APP,
        "mode": "external-scaler",
        "auth_token_file": str(cluster.token_file),
        "settle_timeout_s": 600.0 / scenario.time_scale,
        "targets": {name: name for name in doc["pipeline"]["components"]},
    }
    doc["daemon"] = {
        "listen": f"127.0.0.1:{port}",
        "journal_path": str(workdir / "journal.jsonl"),
        "log_format": "text",
    }
    return doc


class Daemon:
    """`elastiscale run` in a child process."""

    def __init__(self, config_path: Path, port: int, log_path: Path) -> None:
        self.port = port
        self.log = log_path.open("w", encoding="utf-8")
        exe = Path(sys.executable).with_name("elastiscale")
        self.process = subprocess.Popen(
            [str(exe), "run", str(config_path)], stdout=self.log, stderr=subprocess.STDOUT
        )

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"elastiscale run exited with {self.process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
