"""Live benchmark: the agent pipeline on a real local Ray Serve, driven by real traces, scaled
by Ray Serve's own autoscaling and by elastiscale (its sidecar daemon, and inside Serve), beside
a ceiling run with every deployment at its maximum, and the same runs predicted by the backtest
simulator; several seeds per slice of trace, summarized with 95% confidence intervals.

    make bench-live
    .venv/bin/python benchmarks/live_ray/run.py [--smoke] [--out DIR] [--shape chain|star]
        [--seeds N] [--slices smooth,bursty] [--runs ray-serve,...] [--host-check enforce|record]

Writes DIR/results.json (default benchmarks/live_ray/out):
    {"slices": {SLICE: {"seeds": {SEED: {"runs": {RUN: M}, "simulated": {...},
                                         "fidelity": {...}, "ceiling_attainment": x}},
                        "summary": {RUN: {FIGURE: {"n", "mean", "low", "high"}}},
                        "comparisons": {RUN: {FIGURE: separated-from-ray-serve}}}},
     "scenario": {...}}
and DIR/results.md with the tables, DIR/<slice>_*.png with the plots of each slice's first
seed; after each seed, DIR/partial.json and DIR/partial.md hold the seeds done so far (removed
once the run completes). `--smoke` checks that the harness works end to end in about two
minutes: one seed of two minutes of the smooth slice, 20x faster, at a quarter of its rate,
with the host check recording instead of refusing.

The runs (deploy.py), on one Ray cluster, one after another, each on a freshly deployed
application that starts from the same replica counts. While each run's load runs, the host
monitor (host.py) measures the harness's own lag; past its thresholds the benchmark stops,
writes DIR/refused.json and DIR/refused.md with the reason, and exits 3 without scoring.
See docs/results.md for the figures and docs/simulator.md for what the simulator assumes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cluster import Scraper, ServeCluster, wait_until  # noqa: E402
from deploy import APP, RUNS, Daemon, application, daemon_config  # noqa: E402
from fidelity import SIMULATED, fidelity_of  # noqa: E402
from host import (  # noqa: E402
    HostMonitor,
    HostOverloadedError,
    hold_windows,
    refusal,
    refusal_markdown,
    timeline_csv,
)
from load import LiveRun, Watch, replay  # noqa: E402
from measure import live_figures, read_call_log, simulated_figures, step_p95  # noqa: E402
from memory import PeakMemory  # noqa: E402
from scenario import PIPELINES, SLICES, Scenario  # noqa: E402
from series import component_series, hold_seconds  # noqa: E402
from stats import avoidable_misses, comparisons, summarize  # noqa: E402

import elastiscale  # noqa: E402
from elastiscale.testing.prometheus import free_port  # noqa: E402
from elastiscale.testing.ray_serve import RAY_DEFAULT_PORTS  # noqa: E402

#: The scenario of `--smoke`.
SMOKE = {"duration_s": 120.0, "time_scale": 20.0, "warmup_s": 20.0}
SMOKE_RATE = 0.25  # of the slice's own rate scale
#: Exit status of a run the host monitor refused to score.
REFUSED = 3


def _holds(scraper: Scraper, scenario: Scenario) -> Callable[[], dict[str, tuple[float, float]]]:
    """The host monitor's hold windows, read from Prometheus."""
    hold_s = {
        name: comp.service_time_s for name, comp in scenario.wall_config.pipeline.components.items()
    }
    window_s = max(5.0, 4 * scraper.prometheus.scrape_interval_s)

    def read() -> dict[str, tuple[float, float]]:
        measured, nominal = hold_seconds(scraper.url, window_s)
        return hold_windows(measured, nominal, hold_s)

    return read


def live_run(
    run: str,
    scenario: Scenario,
    cluster: ServeCluster,
    scraper: Scraper,
    workdir: Path,
    memory: PeakMemory,
    enforce: bool,
) -> tuple[LiveRun, dict[str, Any]]:
    """Deploy, (start the daemon,) replay, and tear down one run. Raises `HostOverloadedError`."""
    workdir.mkdir(parents=True, exist_ok=True)
    scraper.clear()
    began = time.monotonic()
    cluster.deploy(application(scenario, run, scraper.registry_dir))
    scraper.refresh()
    daemon = None
    if run == "elastiscale":
        port = free_port(RAY_DEFAULT_PORTS)
        path = workdir / "daemon.yaml"
        doc = daemon_config(scenario, scraper.url, cluster, workdir, port)
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        daemon = Daemon(path, port, workdir / "daemon.log")
        wait_until("the elastiscale daemon", daemon.ready, timeout_s=60)
    deploy_s = time.monotonic() - began
    config = scenario.wall_config
    start_unix = time.time()
    print(f"{scenario.slice_name} seed {scenario.seed}: {run}: load", flush=True)
    monitor = HostMonitor()
    watch = Watch(
        read_app=lambda: cluster.applications().get(APP, {}),
        tick=lambda: (scraper.refresh(), memory.sample(time.monotonic())),
        monitor=monitor,
        read_holds=_holds(scraper, scenario),
        enforce=enforce,
    )
    try:
        live = replay(
            f"{cluster.proxy_url}/",
            scenario.arrivals(),
            seed=scenario.seed,
            timeout_s=4 * config.pipeline.slo.latency_p95_s,
            watch=watch,
            tail_s=0.0,
        )
    except HostOverloadedError as error:
        error.run = run
        raise
    finally:
        if daemon is not None:
            daemon.stop()
        (workdir / "host_timeline.csv").write_text(timeline_csv(monitor.timeline), encoding="utf-8")
    end_unix = time.time()
    series = component_series(scraper.url, start_unix, end_unix, scenario.rate_window_s)
    calls = read_call_log(scraper.registry_dir, start_unix)
    cluster.delete_all()
    until_s = (scenario.warmup_s + scenario.duration_s) / scenario.time_scale
    p95 = {
        name: step_p95(end_s, latency_s, scenario.warmup_wall_s, until_s)
        for name, (end_s, latency_s) in calls.items()
    }
    return live, {"deploy_s": deploy_s, "series": series, "p95_per_deployment": p95}


def simulate(scenario: Scenario, workdir: Path, fidelity: str) -> dict[str, Any]:
    """Both policies in one backtest on the replayed arrivals, in wall units."""
    workdir.mkdir(parents=True, exist_ok=True)
    trace = scenario.write_replay(workdir / "replay.csv")
    report = elastiscale.backtest(
        scenario.wall_config,
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


def one_seed(
    scenario: Scenario,
    runs: list[str],
    servers: tuple[ServeCluster, Scraper],
    workdir: Path,
    memory: PeakMemory,
    args: argparse.Namespace,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every live run of one seed, its simulated twins and the comparison of both."""
    cluster, scraper = servers
    figures: dict[str, Any] = {}
    series: dict[str, Any] = {}
    for run in runs:
        print(f"{scenario.slice_name} seed {scenario.seed}: live run {run}", flush=True)
        live, extra = live_run(
            run, scenario, cluster, scraper, workdir / run, memory, args.host_check == "enforce"
        )
        scored_from_s = scenario.warmup_wall_s
        figures[run] = live_figures(live, scenario.wall_config, scored_from_s=scored_from_s)
        figures[run]["deploy_s"] = extra["deploy_s"]
        figures[run]["p95_latency_s_per_deployment"] = extra["p95_per_deployment"]
        figures[run]["host"] = live.host
        series[run] = {"live": live, **extra["series"]}
    ceiling = figures.get("ceiling")
    for figs in figures.values():
        figs["avoidable_misses"] = avoidable_misses(figs, ceiling)
    simulated = simulate(scenario, workdir / "sim", args.fidelity)
    result = {
        "runs": figures,
        "simulated": simulated,
        "fidelity": {
            run: fidelity_of(figures[run], simulated[SIMULATED[run]])
            for run in figures
            if run in SIMULATED
        },
        "ceiling_attainment": None if ceiling is None else ceiling["slo_attainment"],
        "requests": int(np.count_nonzero(scenario.arrivals() >= scenario.warmup_wall_s)),
    }
    return result, series


def scenarios(args: argparse.Namespace) -> list[list[Scenario]]:
    """Per slice, the scenario of each seed."""
    out = []
    for name in args.slices.split(","):
        base = SLICES[name]
        settings = {
            "shape": args.shape,
            "duration_s": args.duration,
            "time_scale": args.time_scale,
            "warmup_s": args.warmup,
            "rate_scale": base.rate_scale * (SMOKE_RATE if args.smoke else 1.0),
        }
        seeds = range(args.seed, args.seed + args.seeds)
        out.append([Scenario.of(name, seed=seed, **settings) for seed in seeds])
    return out


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "out")
    parser.add_argument("--smoke", action="store_true", help="a two-minute check of the harness")
    parser.add_argument("--shape", default="chain", choices=sorted(PIPELINES))
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated live runs")
    parser.add_argument(
        "--slices", help=f"comma-separated slices (default {','.join(SLICES)}; smoke: smooth)"
    )
    parser.add_argument("--seeds", type=int, help="thinnings of each slice (default 3; smoke: 1)")
    parser.add_argument("--seed", type=int, default=Scenario.seed, help="the first seed")
    parser.add_argument("--duration", type=float, help=f"trace s (default {Scenario.duration_s:g})")
    parser.add_argument(
        "--warmup", type=float, help=f"trace s before each slice (default {Scenario.warmup_s:g})"
    )
    parser.add_argument("--time-scale", type=float, help=f"default {Scenario.time_scale:g}")
    parser.add_argument("--fidelity", default="discrete-event", choices=["fast", "discrete-event"])
    parser.add_argument(
        "--host-check",
        choices=["enforce", "record"],
        help="refuse to score an overloaded host (enforce, the default), or only record its lag"
        " (the default of --smoke)",
    )
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = 1 if args.smoke else 3
    if args.slices is None:
        args.slices = "smooth" if args.smoke else ",".join(SLICES)
    # The smoke's settings, where not given explicitly; else the scenario's defaults.
    for key, flag in (
        ("duration_s", "duration"),
        ("time_scale", "time_scale"),
        ("warmup_s", "warmup"),
    ):
        if getattr(args, flag) is None:
            setattr(args, flag, SMOKE[key] if args.smoke else getattr(Scenario, key))
    if args.host_check is None:
        args.host_check = "record" if args.smoke else "enforce"
    for flag, given, known in (("--runs", args.runs, RUNS), ("--slices", args.slices, SLICES)):
        unknown = [r for r in given.split(",") if r not in known]
        if unknown or not given:
            parser.error(f"{flag}: unknown name {unknown[0] if unknown else ''!r}")
    if args.seeds < 1:
        parser.error(f"--seeds: must be at least 1, got {args.seeds}")
    return args


def _summarize(per_slice: dict[str, Any], first: Scenario, fidelity: str) -> None:
    by_seed = {s: d["runs"] for s, d in per_slice["seeds"].items()}
    per_slice["summary"] = summarize(by_seed)
    per_slice["comparisons"] = comparisons(per_slice["summary"], "ray-serve")
    per_slice["scenario"] = describe(first, fidelity)


def _write(out: Path, name: str, results: dict[str, Any]) -> None:
    """`name`.json and `name`.md (the tables) in `out`."""
    from report import table

    (out / f"{name}.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    (out / f"{name}.md").write_text(table(results), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    runs = args.runs.split(",")
    plan = scenarios(args)
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in ("refused", "partial"):
        for ext in ("json", "md"):
            (args.out / f"{stale}.{ext}").unlink(missing_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="elastiscale-live-"))
    began = time.monotonic()
    first = plan[0][0]
    scraper = Scraper(workdir, scrape_interval_s=10.0 / first.time_scale)
    cluster = ServeCluster(workdir, first.ray_serve_env())
    memory = PeakMemory()
    results: dict[str, Any] = {"slices": {}}
    plotted: dict[str, tuple[dict[str, Any], Scenario]] = {}
    at: dict[str, Any] = {}  # where the benchmark is, for a refusal's report

    def scenario_doc(complete: bool) -> dict[str, Any]:
        peak = memory.peak_bytes
        return {
            "shape": args.shape,
            "pipeline": str(first.pipeline_path.relative_to(HERE.parent.parent)),
            "seeds": args.seeds,
            "runs": runs,
            "host_check": args.host_check,
            "complete": complete,
            "elapsed_s": time.monotonic() - began,
            "peak_memory_gib": None if peak is None else peak / 2**30,
        }

    try:
        scraper.start()
        cluster.start()
        for seeds in plan:
            per_slice: dict[str, Any] = {"seeds": {}}
            results["slices"][seeds[0].slice_name] = per_slice
            for scenario in seeds:
                at.update(slice=scenario.slice_name, seed=scenario.seed)
                where = workdir / scenario.slice_name / str(scenario.seed)
                done, series = one_seed(scenario, runs, (cluster, scraper), where, memory, args)
                per_slice["seeds"][str(scenario.seed)] = done
                plotted.setdefault(scenario.slice_name, (series, scenario))
                # Every seed so far, each scored on a host that kept up: kept if a later run
                # is refused, never presented as the full run's result.
                _summarize(per_slice, seeds[0], args.fidelity)
                _write(args.out, "partial", {**results, "scenario": scenario_doc(False)})
    except HostOverloadedError as error:
        context = {**at, "shape": args.shape, "elapsed_s": round(time.monotonic() - began, 1)}
        doc = refusal(error, context)
        (args.out / "refused.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
        (args.out / "refused.md").write_text(refusal_markdown(doc), encoding="utf-8")
        print(f"not scored: {error}", file=sys.stderr, flush=True)
        return REFUSED
    finally:
        cluster.stop()
        scraper.stop()
    results["scenario"] = scenario_doc(True)
    _write(args.out, "results", results)
    for ext in ("json", "md"):
        (args.out / f"partial.{ext}").unlink(missing_ok=True)
    from report import write_plots

    write_plots(plotted, args.out)
    print((args.out / "results.md").read_text(encoding="utf-8"))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def describe(scenario: Scenario, fidelity: str) -> dict[str, Any]:
    return {
        "trace": str(scenario.trace_path.relative_to(HERE.parent.parent)),
        "start_s": scenario.start_s,
        "duration_s": scenario.duration_s,
        "warmup_s": scenario.warmup_s,
        "time_scale": scenario.time_scale,
        "rate_scale": scenario.rate_scale,
        "simulator_fidelity": fidelity,
    }


if __name__ == "__main__":
    sys.exit(main())
