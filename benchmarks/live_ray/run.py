"""Live benchmark: the agent pipeline on a real local Ray Serve, driven by a real trace, scaled
once by Ray Serve's own autoscaling and once by elastiscale's sidecar daemon, and the same runs
predicted by the backtest simulator.

    make bench-live                                    # under 10 minutes
    .venv/bin/python benchmarks/live_ray/run.py [--smoke] [--out DIR] [--runs ray-serve,...]

Writes DIR/results.json (default benchmarks/live_ray/out):
    {"runs": {"ray-serve": M, "elastiscale": M, "elastiscale-in-ray": M},
     "simulated": {"ray-serve": M, "elastiscale": M}, "fidelity": {...}, "scenario": {...}}
and DIR/results.md with the table, DIR/*.png with the plots. `--smoke` checks that the harness
works end to end in about two minutes: two minutes of trace, 20x faster, at a quarter of the rate
(six seconds of load per run, a few replicas).

The runs, on one Ray cluster, one after another, each on a freshly deployed application that
starts from the same replica counts:
- `ray-serve`: Serve's default autoscaling policy with its documented defaults divided by the
  time scale, `target_ongoing_requests` at 0.7 of each replica's `max_ongoing_requests`;
- `elastiscale`: the application deployed with `external_scaler_enabled`, scaled by
  `elastiscale run` (the sidecar daemon) through the ray-serve actuator's external-scaler REST
  path, reading the replicas' metrics from Prometheus as in production;
- `elastiscale-in-ray`: elastiscale inside Serve's controller as the application's autoscaling
  policy (`elastiscale.adapters.ray.policy`), reading what Serve gives it: ongoing requests and
  each replica's reported arrival rate.
See docs/results.md for the figures and docs/simulator.md for what the simulator assumes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cluster import Scraper, ServeCluster, wait_until  # noqa: E402
from load import LiveRun, replay  # noqa: E402
from measure import live_figures, relative_error, simulated_figures  # noqa: E402
from memory import PeakMemory  # noqa: E402
from scenario import Scenario  # noqa: E402

import elastiscale  # noqa: E402
from elastiscale.testing.prometheus import free_port  # noqa: E402

APP = "live"
RUNS = ("ray-serve", "elastiscale", "elastiscale-in-ray")
#: The simulated run each live run is compared with: in Serve or beside it, the same policy.
SIMULATED = {
    "ray-serve": "ray-serve",
    "elastiscale": "elastiscale",
    "elastiscale-in-ray": "elastiscale",
}
#: The scenario of `--smoke`.
SMOKE = {"duration_s": 120.0, "time_scale": 20.0, "rate_scale": 0.05, "warmup_s": 20.0}

#: The signals the daemon reads, from the stand-ins' own metrics (see app.py).
QUERIES = {
    "demand_rps": "sum by ($by) (rate(live_calls_total{$selector}[$window]))",
    "in_flight": "sum by ($by) (live_busy{$selector})",
    "queue_length": (
        "clamp_min(sum by ($by) (live_outstanding{$selector})"
        " - sum by ($by) (live_busy{$selector}), 0)"
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
        if run == "ray-serve" and comp.replicas.min != comp.replicas.max:
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
            "policy_function": "elastiscale.adapters.ray.policy:ElastiscaleApplicationPolicy",
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


def _range(
    prometheus_url: str, query: str, start_unix_s: float, end_unix_s: float
) -> dict[str, Any]:
    """One range query at 1 s steps, as {component: {"t_s": [...], "value": [...]}}."""
    params = urllib.parse.urlencode(
        {"query": query, "start": start_unix_s, "end": end_unix_s, "step": 1}
    )
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/query_range?{params}", timeout=30) as r:
        body = json.load(r)
    out: dict[str, Any] = {}
    for series in body["data"]["result"]:
        values = series["values"]
        out[series["metric"].get("component", "?")] = {
            "t_s": [float(t) - start_unix_s for t, _ in values],
            "value": [float(v) for _, v in values],
        }
    return out


def component_series(
    prometheus_url: str, start_unix_s: float, end_unix_s: float, window_s: float
) -> dict[str, Any]:
    """What each component saw over the run, from Prometheus: its call rate (demand), calls
    holding a slot (busy) and calls waiting for one (queued: outstanding minus busy)."""
    window = f"{max(window_s, 2.0):g}s"
    queries = {
        "demand_rps": f"sum by (component) (rate(live_calls_total[{window}]))",
        "busy": "sum by (component) (live_busy)",
        "queued": "sum by (component) (live_outstanding) - sum by (component) (live_busy)",
    }
    return {
        key: _range(prometheus_url, query, start_unix_s, end_unix_s)
        for key, query in queries.items()
    }


def live_run(
    run: str,
    scenario: Scenario,
    cluster: ServeCluster,
    scraper: Scraper,
    workdir: Path,
    memory: PeakMemory,
) -> tuple[LiveRun, dict[str, Any]]:
    """Deploy, (start the daemon,) replay, and tear down one run."""
    workdir.mkdir(parents=True, exist_ok=True)
    scraper.clear()
    began = time.monotonic()
    cluster.deploy(application(scenario, run, scraper.registry_dir))
    scraper.refresh()
    daemon = None
    if run == "elastiscale":
        port = free_port()
        path = workdir / "daemon.yaml"
        doc = daemon_config(scenario, scraper.url, cluster, workdir, port)
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        daemon = Daemon(path, port, workdir / "daemon.log")
        wait_until("the elastiscale daemon", daemon.ready, timeout_s=60)
    deploy_s = time.monotonic() - began
    config = scenario.wall_config
    start_unix = time.time()
    try:
        live = replay(
            f"{cluster.proxy_url}/",
            scenario.arrivals(),
            seed=scenario.seed,
            timeout_s=4 * config.pipeline.slo.latency_p95_s,
            read_app=lambda: cluster.applications().get(APP, {}),
            tick=lambda: (scraper.refresh(), memory.sample(time.monotonic())),
            tail_s=0.0,
        )
    finally:
        if daemon is not None:
            daemon.stop()
    end_unix = time.time()
    series = component_series(scraper.url, start_unix, end_unix, scenario.rate_window_s)
    cluster.delete_all()
    extra = {"deploy_s": deploy_s, "series": series}
    return live, extra


def simulate(scenario: Scenario, workdir: Path, fidelity: str) -> dict[str, Any]:
    """Both policies in one backtest on the replayed arrivals, in wall units."""
    trace = scenario.write_replay(workdir / "replay.csv")
    config = scenario.wall_config
    report = elastiscale.backtest(
        config,
        trace,
        [
            {"name": "ray-serve", "params": scenario.ray_serve_policy_params()},
            {"name": "elastiscale", "params": scenario.elastiscale_params()},
        ],
        fidelity=fidelity,  # type: ignore[arg-type]
        warmup_s=scenario.warmup_wall_s,
        metrics_delay_s=scenario.metrics_delay_s,
        rate_window_s=scenario.rate_window_s,
        seed=scenario.seed,
    )
    return {label: simulated_figures(report, label) for label in report.runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "out")
    parser.add_argument("--smoke", action="store_true", help="a two-minute check of the harness")
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated live runs")
    parser.add_argument("--start", type=float, default=Scenario.start_s, help="trace second")
    parser.add_argument("--duration", type=float, default=Scenario.duration_s, help="trace s")
    parser.add_argument(
        "--warmup", type=float, default=Scenario.warmup_s, help="trace s before --start, unscored"
    )
    parser.add_argument("--time-scale", type=float, default=Scenario.time_scale)
    parser.add_argument("--rate-scale", type=float, default=Scenario.rate_scale)
    parser.add_argument("--seed", type=int, default=Scenario.seed)
    parser.add_argument("--fidelity", default="discrete-event", choices=["fast", "discrete-event"])
    args = parser.parse_args(argv)
    runs = [r for r in args.runs.split(",") if r]
    unknown = [r for r in runs if r not in RUNS]
    if unknown:
        parser.error(f"--runs: unknown run {unknown[0]!r} (runs: {', '.join(RUNS)})")
    scenario = Scenario(
        start_s=args.start,
        duration_s=SMOKE["duration_s"] if args.smoke else args.duration,
        time_scale=SMOKE["time_scale"] if args.smoke else args.time_scale,
        rate_scale=SMOKE["rate_scale"] if args.smoke else args.rate_scale,
        warmup_s=SMOKE["warmup_s"] if args.smoke else args.warmup,
        seed=args.seed,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="elastiscale-live-"))
    began = time.monotonic()
    scraper = Scraper(workdir, scrape_interval_s=10.0 / scenario.time_scale)
    cluster = ServeCluster(workdir, scenario.ray_serve_env())
    results: dict[str, Any] = {"runs": {}, "simulated": {}}
    memory = PeakMemory()
    series: dict[str, Any] = {}
    try:
        scraper.start()
        cluster.start()
        for run in runs:
            print(f"live run: {run}", flush=True)
            live, extra = live_run(run, scenario, cluster, scraper, workdir / run, memory)
            results["runs"][run] = live_figures(
                live, scenario.wall_config, scored_from_s=scenario.warmup_wall_s
            )
            results["runs"][run]["deploy_s"] = extra["deploy_s"]
            series[run] = {"live": live, **extra["series"]}
    finally:
        cluster.stop()
        scraper.stop()
    print("simulating", flush=True)
    results["simulated"] = simulate(scenario, workdir, args.fidelity)
    results["fidelity"] = {
        run: {
            key: relative_error(results["runs"][run], results["simulated"][SIMULATED[run]], key)
            for key in ("p95_latency_s", "gpu_seconds", "slo_attainment")
        }
        for run in results["runs"]
    }
    results["scenario"] = describe(scenario, args.fidelity, time.monotonic() - began)
    peak = memory.peak_bytes
    results["scenario"]["peak_memory_gib"] = None if peak is None else peak / 2**30
    (args.out / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    from report import write_report

    write_report(results, series, scenario, args.out)
    traces = {run: {k: v for k, v in data.items() if k != "live"} for run, data in series.items()}
    (args.out / "series.json").write_text(json.dumps(traces), encoding="utf-8")
    print((args.out / "results.md").read_text(encoding="utf-8"))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def describe(scenario: Scenario, fidelity: str, elapsed_s: float) -> dict[str, Any]:
    return {
        "pipeline": str(scenario.pipeline_path.relative_to(HERE.parent.parent)),
        "trace": str(scenario.trace_path.relative_to(HERE.parent.parent)),
        "start_s": scenario.start_s,
        "duration_s": scenario.duration_s,
        "warmup_s": scenario.warmup_s,
        "time_scale": scenario.time_scale,
        "rate_scale": scenario.rate_scale,
        "seed": scenario.seed,
        "requests": int(np.count_nonzero(scenario.arrivals() >= scenario.warmup_wall_s)),
        "simulator_fidelity": fidelity,
        "elapsed_s": elapsed_s,
    }


if __name__ == "__main__":
    sys.exit(main())
