"""The live Ray Serve benchmark (benchmarks/live_ray): its pure parts, and a smoke run.

The smoke run (`run.py --smoke`: seven seconds of load per run of the chain on a Ray cluster
of its own, a Prometheus, the elastiscale daemon, the ceiling run) checks that the harness works
end to end and writes `results.json` in the promised shape, with the host's lag recorded. It
skips without Ray or Prometheus, unless ELASTISCALE_REQUIRE_INTEGRATION is set (as in CI):
then it fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
LIVE = REPO / "benchmarks" / "live_ray"
sys.path.insert(0, str(LIVE))

from calls import call_count, plan_calls  # noqa: E402
from fidelity import fidelity_of, seed_fidelity_table, slice_fidelity_table  # noqa: E402
from load import LiveRun, ReplicaSample, RequestLog, snapshot  # noqa: E402
from measure import live_figures, read_call_log, relative_error, step_p95  # noqa: E402
from scenario import SLICES, Scenario, slots, wall_units  # noqa: E402
from stats import (  # noqa: E402
    avoidable_misses,
    comparisons,
    interval,
    misses,
    separated,
    summarize,
    target,
)

REQUIRE_INTEGRATION = bool(os.environ.get("ELASTISCALE_REQUIRE_INTEGRATION"))
REQUIRED_FIELDS = ("slo_attainment", "p95_latency_s", "gpu_seconds", "scaling_actions")
HOG = [sys.executable, "-c", "while True: pass"]  # one busy-looping process


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            {"startup_s": 120, "capacity_per_replica": 1.0},
            {"startup_s": 12.0, "capacity_per_replica": 10.0},
        ),
        ({"horizons_s": [60, 300]}, {"horizons_s": [6.0, 30.0]}),
        ({"a": {"b": [{"window_s": 30}]}}, {"a": {"b": [{"window_s": 3.0}]}}),
        (
            {"fanout": 3.0, "gpus_per_replica": 2, "initial_s": None},
            {"fanout": 3.0, "gpus_per_replica": 2, "initial_s": None},
        ),
    ],
)
def test_wall_units_divide_times_and_multiply_rates(doc: dict, expected: dict) -> None:
    assert wall_units(doc, 10.0) == expected


@pytest.mark.parametrize(
    ("capacity_rps", "service_time_s", "expected"),
    [(1.0, 2.0, 2), (0.5, 4.0, 2), (50000.0, 0.02, 1000), (0.2, 2.0, 1), (20.0, 0.2, 4)],
)
def test_slots_as_the_simulator_counts_them(
    capacity_rps: float, service_time_s: float, expected: int
) -> None:
    assert slots(capacity_rps, service_time_s) == expected


def test_arrivals_are_the_same_for_a_seed_and_thinned_by_the_rate_scale() -> None:
    def scenario(**kw: float) -> Scenario:
        return Scenario(**{"duration_s": 600.0, "time_scale": 10.0, "rate_scale": 0.2, **kw})

    full = scenario(rate_scale=1.0)
    fifth = scenario()
    a, b = fifth.arrivals(), scenario().arrivals()
    assert np.array_equal(a, b)
    assert not np.array_equal(a, scenario(seed=1).arrivals())
    # 120 s of warm-up then 600 s of trace, 10x faster: 72 wall seconds.
    assert np.all(np.diff(a) >= 0) and a[0] >= 0 and a[-1] < 72.0
    # Binomial thinning: within 4 standard deviations of a fifth of the whole.
    n, p = full.arrivals().size, 0.2
    assert abs(a.size - n * p) < 4 * np.sqrt(n * p * (1 - p))
    replay = fifth.replay()
    assert replay.requests.sum() == a.size and replay.t_s.size == 72
    no_warmup = scenario(warmup_s=0.0).arrivals()
    assert no_warmup.size < a.size and no_warmup[-1] < 60.0


def test_slices_name_their_traces() -> None:
    for name, sl in SLICES.items():
        scenario = Scenario.of(name)
        assert scenario.trace_path == sl.trace_path and scenario.trace_path.exists()
        assert scenario.slice_name == name and scenario.arrivals().size > 0
    assert Scenario.of("bursty", seed=2, rate_scale=0.1).rate_scale == 0.1


def test_star_spec_follows_the_pipeline_in_wall_units(tmp_path: Path) -> None:
    star = Scenario(shape="star", time_scale=10.0)
    comps = star.app_components(tmp_path)["components"]
    assert next(iter(comps)) == "router"  # the ingress first
    planner = {"startup_s": 12.0, "hold_s": 0.4, "slots": 4, "max_ongoing": 4, "edges": []}
    assert comps["planner"] == planner
    assert [e["to"] for e in comps["router"]["edges"]] == ["planner", "retriever", "writer"]
    assert comps["router"]["edges"][0]["distribution"] == "poisson"
    assert not any("via" in e for e in comps["router"]["edges"])
    auto = star.ray_serve_autoscaling()["writer"]
    assert auto["target_ongoing_requests"] == pytest.approx(0.7 * 4)
    assert (auto["upscale_delay_s"], auto["downscale_delay_s"], auto["look_back_period_s"]) == (
        3.0,
        60.0,
        3.0,
    )


def test_chain_spec_hands_the_writer_to_the_planner(tmp_path: Path) -> None:
    comps = Scenario().app_components(tmp_path)["components"]
    assert list(comps) == ["router", "planner", "tools", "writer"]
    assert comps["router"]["edges"] == [
        {"to": "planner", "fanout": 3.0, "distribution": "poisson"},
        {"to": "writer", "fanout": 1.0, "distribution": "fixed", "via": "planner"},
    ]
    assert comps["planner"]["edges"] == [{"to": "tools", "fanout": 1.0, "distribution": "fixed"}]
    # Callers get room for their requests awaiting downstream calls; the others queue at them.
    assert (comps["planner"]["slots"], comps["planner"]["max_ongoing"]) == (4, 16)
    assert (comps["writer"]["slots"], comps["writer"]["max_ongoing"]) == (4, 4)


CHAIN_ROUTER = [
    {"to": "planner", "fanout": 3.0, "distribution": "poisson"},
    {"to": "writer", "fanout": 1.0, "distribution": "fixed", "via": "planner"},
]


def test_the_last_planner_call_makes_the_writer_call() -> None:
    """Per request the writer is called once: by the last planner call, or by the router when
    the request made no planner call; the planner's own tools call comes first."""
    seen_zero = seen_some = False
    for i in range(200):
        seed = f"0-{i}"
        calls = plan_calls(seed, "router", CHAIN_ROUTER, [])
        planners = [p for t, p in calls if t == "planner"]
        n = call_count(f"{seed}/router>planner", 3.0, "poisson")
        assert len(planners) == n
        if n == 0:
            seen_zero = True
            assert calls == [("writer", {"seed": f"{seed}/writer.0"})]
            continue
        seen_some = True
        assert [t for t, _ in calls] == ["planner"] * n  # the router calls no writer itself
        assert all("then" not in p for p in planners[:-1])
        then = planners[-1]["then"]
        assert then == [{"to": "writer", "seeds": [f"{seed}/writer.0"]}]
        tools = [{"to": "tools", "fanout": 1.0, "distribution": "fixed"}]
        last = plan_calls(planners[-1]["seed"], "planner", tools, then)
        assert [t for t, _ in last] == ["tools", "writer"]
    assert seen_zero and seen_some  # Poisson(3) is 0 for 5% of requests


def test_star_router_makes_every_call() -> None:
    edges = [{k: v for k, v in e.items() if k != "via"} for e in CHAIN_ROUTER]
    calls = plan_calls("s", "router", edges, [])
    assert [t for t, _ in calls][-1] == "writer" and all("then" not in p for _, p in calls)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], {"seeds": 3, "slices": "smooth,bursty", "duration": 600.0, "host_check": "enforce"}),
        (["--smoke"], {"seeds": 1, "slices": "smooth", "duration": 120.0, "host_check": "record"}),
        (["--smoke", "--duration", "380", "--host-check", "enforce"], {"duration": 380.0}),
        (["--smoke", "--host-check", "enforce"], {"host_check": "enforce", "warmup": 20.0}),
        (["--seeds", "5", "--shape", "star"], {"seeds": 5, "shape": "star", "time_scale": 20.0}),
        (["--smoke", "--slices", "bursty"], {"seeds": 1, "slices": "bursty"}),
    ],
)
def test_command_line_defaults(argv: list[str], expected: dict[str, object]) -> None:
    import run

    args = vars(run.parse(argv))
    assert {k: args[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--runs", "ray-serve,knative"], "--runs: unknown name 'knative'"),
        (["--slices", "spiky"], "--slices: unknown name 'spiky'"),
        (["--seeds", "0"], "--seeds: must be at least 1, got 0"),
    ],
)
def test_command_line_errors_name_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import run

    with pytest.raises(SystemExit):
        run.parse(argv)
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("values", "mean", "half"),
    [
        # t(0.975, 2) = 4.303, sd 1, n 3: half-width 4.303 / sqrt(3).
        ([1.0, 2.0, 3.0], 2.0, 4.302653 / np.sqrt(3)),
        ([5.0, 5.0], 5.0, 0.0),
        # A missing figure is left out: 2 and 4, sd sqrt(2), t(0.975, 1) = 12.706.
        ([2.0, None, 4.0], 3.0, 12.7062),
    ],
)
def test_interval_is_a_t_interval_on_the_mean(
    values: list[float | None], mean: float, half: float
) -> None:
    got = interval(values)
    assert got["mean"] == pytest.approx(mean)
    assert got["high"] - got["mean"] == pytest.approx(half, rel=1e-4)
    assert got["mean"] - got["low"] == pytest.approx(half, rel=1e-4)


def test_interval_is_cut_to_the_figures_range() -> None:
    got = interval([0.99, 0.90], bounds=(0.0, 1.0))  # 0.945 +- 12.706 x 0.045: +- 0.572
    assert got["mean"] == pytest.approx(0.945)
    assert got["high"] == 1.0 and got["low"] == pytest.approx(0.945 - 0.5718, abs=1e-3)


def test_interval_of_one_seed_or_none() -> None:
    assert interval([0.5]) == {"n": 1, "mean": 0.5, "low": None, "high": None}
    assert interval([None]) == {"n": 0, "mean": None, "low": None, "high": None}


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0.0, 1.0), (2.0, 3.0), True),
        ((2.0, 3.0), (0.0, 1.0), True),
        ((0.0, 2.0), (1.0, 3.0), False),
        ((None, None), (1.0, 3.0), None),
    ],
)
def test_separated_intervals(
    a: tuple[float | None, float | None], b: tuple[float, float], expected: bool | None
) -> None:
    got = separated({"low": a[0], "high": a[1]}, {"low": b[0], "high": b[1]})
    assert got is expected


def test_avoidable_misses_are_beyond_the_ceilings() -> None:
    ceiling = {"slo_attainment": 0.99, "requests": 1000}
    assert misses(ceiling) == 10
    assert avoidable_misses({"slo_attainment": 0.95, "requests": 1000}, ceiling) == 40
    assert avoidable_misses({"slo_attainment": 0.995, "requests": 1000}, ceiling) == -5
    assert avoidable_misses({"slo_attainment": 0.95, "requests": 1000}, None) is None
    assert avoidable_misses({"slo_attainment": None, "requests": 10}, ceiling) is None


def test_summary_and_comparison_over_seeds() -> None:
    def figs(attainment: float, gpu_s: float) -> dict[str, float]:
        return {
            "slo_attainment": attainment,
            "avoidable_misses": 0.0,
            "p95_latency_s": 1.0,
            "gpu_seconds": gpu_s,
        }

    seeds = {
        "0": {"ray-serve": figs(0.90, 100.0), "elastiscale": figs(0.99, 101.0)},
        "1": {"ray-serve": figs(0.91, 110.0), "elastiscale": figs(0.98, 109.0)},
        "2": {"ray-serve": figs(0.92, 120.0), "elastiscale": figs(0.99, 121.0), "ceiling": {}},
    }
    summary = summarize(seeds)
    assert list(summary) == ["ray-serve", "elastiscale", "ceiling"]
    assert summary["ray-serve"]["slo_attainment"]["mean"] == pytest.approx(0.91)
    assert summary["ceiling"]["gpu_seconds"]["n"] == 0
    verdicts = comparisons(summary, "ray-serve")
    assert list(verdicts) == ["elastiscale"]  # neither the baseline nor the ceiling
    assert verdicts["elastiscale"]["slo_attainment"] is True
    assert verdicts["elastiscale"]["gpu_seconds"] is False


def test_figures_of_a_live_run() -> None:
    """Three requests (one too slow, one failed), replicas sampled at 0, 1 and 3 s of a 4 s run."""
    config = Scenario(shape="star", time_scale=10.0).wall_config
    requests = RequestLog(
        sent_s=np.array([0.0, 0.5, 1.0]),
        latency_s=np.array([1.0, 5.0, np.nan]),
        status=np.array([200, 200, 0]),
    )
    samples = [
        ReplicaSample(
            0.0, {"planner": 2, "writer": 1}, {"planner": {"RUNNING": 2}, "writer": {"RUNNING": 1}}
        ),
        ReplicaSample(
            1.0,
            {"planner": 3, "writer": 1},
            {"planner": {"RUNNING": 2, "STARTING": 1}, "writer": {"RUNNING": 1}},
        ),
        ReplicaSample(
            3.0,
            {"planner": 2, "writer": 1},
            {"planner": {"RUNNING": 2, "STOPPING": 1}, "writer": {"RUNNING": 1}},
        ),
    ]
    got = live_figures(LiveRun(requests, samples, duration_s=4.0), config)
    assert got["slo_attainment"] == pytest.approx(1 / 3)  # SLO 4.5 s: one of three
    assert got["failed_requests"] == 1
    # planner: 2 x 1 + 3 x 2 + 3 x 1 = 11 replica-seconds; writer 4; GPUs 1 and 2 each.
    assert got["replica_seconds"] == {
        "router": 0.0,
        "planner": 11.0,
        "retriever": 0.0,
        "writer": 4.0,
    }
    assert got["gpu_seconds"] == pytest.approx(11.0 + 8.0)
    assert got["scaling_actions"] == 2  # planner 2 -> 3 -> 2
    # Scored from 0.75 s: the first request and the first sample are warm-up.
    later = live_figures(LiveRun(requests, samples, duration_s=4.0), config, scored_from_s=0.75)
    assert later["requests"] == 1 and later["slo_attainment"] == 0.0  # only the failed one
    assert later["replica_seconds"]["planner"] == 3 * 2 + 3 * 1
    assert later["scaling_actions"] == 1


def test_step_p95_is_the_call_weighted_mean_of_each_seconds_p95() -> None:
    # Second 1: 20 calls of 1..20 s (p95: the 19th smallest, 19 s); second 2: 1 call of 2 s;
    # second 0 is warm-up and the call at 3.0 is past the end.
    end_s = np.array([0.5, *([1.5] * 20), 2.2, 3.0])
    latency_s = np.array([99.0, *range(1, 21), 2.0, 99.0])
    assert step_p95(end_s, latency_s, from_s=1.0, until_s=3.0) == pytest.approx(
        (19.0 * 20 + 2.0) / 21
    )
    assert step_p95(end_s, latency_s, from_s=5.0, until_s=9.0) is None


def test_call_log_is_read_per_deployment(tmp_path: Path) -> None:
    (tmp_path / "calls-1.csv").write_text("planner,100.5,0.4\nwriter,101.0,0.8\n")
    (tmp_path / "calls-2.csv").write_text("planner,102.0,0.5\nplanner,10")  # a torn line
    got = read_call_log(tmp_path, start_unix=100.0)
    assert got["planner"][0].tolist() == [0.5, 2.0] and got["planner"][1].tolist() == [0.4, 0.5]
    assert got["writer"][0].tolist() == [1.0]


def _figures(p95: float, gpu: float, per_p95: dict, per_gpu: dict) -> dict:
    return {
        "p95_latency_s": p95,
        "gpu_seconds": gpu,
        "slo_attainment": 1.0,
        "p95_latency_s_per_deployment": per_p95,
        "gpu_seconds_per_deployment": per_gpu,
    }


def test_fidelity_per_run_and_deployment_and_its_tables() -> None:
    live = _figures(
        10.0, 200.0, {"planner": 2.0, "writer": 4.0}, {"planner": 100.0, "writer": 100.0}
    )
    sim = _figures(10.5, 190.0, {"planner": 2.4, "writer": 4.0}, {"planner": 95.0, "writer": 95.0})
    got = fidelity_of(live, sim)
    assert got["p95_latency_s"] == pytest.approx(0.05)
    assert got["p95_latency_s_per_deployment"] == pytest.approx({"planner": 0.2, "writer": 0.0})
    assert got["gpu_seconds_per_deployment"] == pytest.approx({"planner": -0.05, "writer": -0.05})
    done = {
        "runs": {"ray-serve": live},
        "simulated": {"ray-serve": sim},
        "fidelity": {"ray-serve": got},
    }
    seed_rows = seed_fidelity_table(done, {"ray-serve": "ray-serve"})
    assert "| ray-serve | planner | 2.00 | 2.40 | +20% | 100 | 95 | -5% |" in seed_rows
    assert "| ray-serve | whole run | 10.00 | 10.50 | +5% | 200 | 190 | -5% |" in seed_rows
    slice_rows = slice_fidelity_table({"seeds": {"0": done, "1": done}})
    assert "| ray-serve | planner | +20% | +20% | -5% | -5% | no |" in slice_rows  # p95 past 10%
    assert "| ray-serve | writer | +0% | +0% | -5% | -5% | yes |" in slice_rows


def test_snapshot_counts_states() -> None:
    app = {
        "deployments": {
            "llm": {
                "target_num_replicas": 3,
                "replicas": [{"state": "RUNNING"}, {"state": "STARTING"}, {"state": "RUNNING"}],
            }
        }
    }
    assert snapshot(app) == ({"llm": 3}, {"llm": {"RUNNING": 2, "STARTING": 1}})


@pytest.mark.parametrize(
    ("measured", "simulated", "expected"),
    [(2.0, 2.4, 0.2), (2.0, 1.0, -0.5), (0.0, 1.0, None), (None, 1.0, None)],
)
def test_relative_error(measured: float | None, simulated: float, expected: float | None) -> None:
    got = relative_error({"x": measured}, {"x": simulated}, "x")
    assert got == (None if expected is None else pytest.approx(expected))


def test_call_counts_are_drawn_from_the_seed_alone() -> None:
    draws = [call_count(f"s-{i}", 3.0, "poisson") for i in range(4000)]
    assert draws == [call_count(f"s-{i}", 3.0, "poisson") for i in range(4000)]
    assert np.mean(draws) == pytest.approx(3.0, abs=0.1)
    assert np.var(draws) == pytest.approx(3.0, abs=0.3)
    fixed = [call_count(f"s-{i}", 1.5, "fixed") for i in range(4000)]
    assert set(fixed) == {1, 2} and np.mean(fixed) == pytest.approx(1.5, abs=0.05)


def test_the_harness_imports_without_ray() -> None:
    """Importing Ray in the test process before the Ray tests set the authentication mode
    breaks their cluster: the pure parts of the harness must not import it."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "import calls, deploy, fidelity, host, load, measure, memory, report, run, scenario, "
        "series, stats; "
        "assert 'ray' not in sys.modules, 'ray imported'"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(LIVE)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]


def _needs_ray_and_prometheus() -> None:
    missing = [b for b in ("prometheus", "promtool") if shutil.which(b) is None]
    if importlib.util.find_spec("ray") is None:
        missing.append("ray[serve]")
    if missing:
        reason = f"the live benchmark needs {', '.join(missing)}"
        if REQUIRE_INTEGRATION:
            pytest.fail(reason + "; ELASTISCALE_REQUIRE_INTEGRATION is set")
        pytest.skip(reason)


@pytest.mark.integration
@pytest.mark.slow
def test_the_harness_refuses_to_score_beside_a_cpu_hog(tmp_path: Path) -> None:
    """The smoke's first run, with 20 s of load and the host check enforced, and four
    busy-looping processes per CPU started beside it once its load begins: exit 3,
    refused.json names the run and the measures past their limits, and nothing is scored."""
    _needs_ray_and_prometheus()
    command = [sys.executable, str(LIVE / "run.py"), "--smoke", "--host-check", "enforce"]
    command += ["--runs", "ray-serve", "--duration", "380", "--out", str(tmp_path)]
    hogs: list[subprocess.Popen[bytes]] = []
    output: list[str] = []
    with subprocess.Popen(  # its pipe closed on the way out
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as bench:
        try:
            assert bench.stdout is not None
            for line in bench.stdout:
                output.append(line)
                if "ray-serve: load" in line and not hogs:
                    n = 4 * (os.cpu_count() or 1)
                    busy_loop = [sys.executable, "-c", "while True: pass"]
                    hogs = [subprocess.Popen(busy_loop) for _ in range(n)]
            status = bench.wait(timeout=600)
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
            if bench.poll() is None:
                bench.kill()
    assert hogs, "the run never started: " + "".join(output)[-3000:]
    assert status == 3, "".join(output)[-3000:]
    refused = json.loads((tmp_path / "refused.json").read_text(encoding="utf-8"))
    assert refused["refused"] is True and refused["run"] == "ray-serve"
    assert refused["readings"]
    assert all(r["value"] > r["limit"] for r in refused["readings"])
    assert "Not scored" in (tmp_path / "refused.md").read_text(encoding="utf-8")
    assert not (tmp_path / "results.json").exists()


@pytest.mark.integration
@pytest.mark.slow
def test_smoke_run_writes_results_in_the_promised_shape(tmp_path: Path) -> None:
    _needs_ray_and_prometheus()
    done = subprocess.run(
        [sys.executable, str(LIVE / "run.py"), "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert results["scenario"]["shape"] == "chain"
    assert results["scenario"]["host_check"] == "record"
    assert set(results["slices"]) == {"smooth"}
    smooth = results["slices"]["smooth"]
    seed = smooth["seeds"]["0"]
    assert set(seed["runs"]) == {"ray-serve", "elastiscale", "elastiscale-in-ray", "ceiling"}
    assert set(seed["simulated"]) == {"ray-serve", "elastiscale"}
    for kind in ("runs", "simulated"):
        for figures in seed[kind].values():
            for field in REQUIRED_FIELDS:
                assert figures[field] is not None, (kind, field)
    for run in seed["runs"].values():
        assert run["requests"] == seed["requests"] > 0
        assert run["failed_requests"] == 0
        assert run["gpu_seconds"] > 0
        assert run["avoidable_misses"] is not None
        assert {"send_error_s", "loop_lag_s"} <= set(run["host"])  # the host was measured
    assert seed["ceiling_attainment"] is not None
    assert seed["runs"]["ceiling"]["avoidable_misses"] == 0
    assert set(seed["fidelity"]["ray-serve"]["gpu_seconds_per_deployment"]) >= {"writer"}
    for kind in ("runs", "simulated"):  # every deployment served calls, so has a p95
        for figures in seed[kind].values():
            per = figures["p95_latency_s_per_deployment"]
            assert set(per) == {"router", "planner", "tools", "writer"}, (kind, per)
            assert all(v is not None and v > 0 for v in per.values()), (kind, per)
    p95_errors = seed["fidelity"]["ray-serve"]["p95_latency_s_per_deployment"]
    assert set(p95_errors) == {"router", "planner", "tools", "writer"}
    assert smooth["summary"]["ray-serve"]["slo_attainment"]["n"] == 1
    assert (tmp_path / "smooth_replicas.png").stat().st_size > 0
    assert (tmp_path / "smooth_latency.png").stat().st_size > 0
    md = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert "## Slice `smooth`" in md
    assert "Fidelity over the seeds" in md and "| ray-serve | planner |" in md
    assert not (tmp_path / "partial.json").exists()  # the run completed


def _summary(misses: tuple[float, float, float], gpu_s: float) -> dict[str, dict[str, object]]:
    mean, low, high = misses
    return {
        "avoidable_misses": {"mean": mean, "low": low, "high": high},
        "gpu_seconds": {"mean": gpu_s, "low": gpu_s, "high": gpu_s},
    }


@pytest.mark.parametrize(
    ("ours", "theirs", "expected"),
    [
        # 4 misses against 10, cheaper, intervals apart: met.
        (_summary((4, 2, 6), 90), _summary((10, 8, 12), 100), (True, True, True, True)),
        # Half the misses but more GPU-seconds.
        (_summary((4, 2, 6), 110), _summary((10, 8, 12), 100), (True, False, True, False)),
        # Fewer misses, not half.
        (_summary((6, 5, 7), 90), _summary((10, 8, 12), 100), (False, True, True, False)),
        # Half, but inside the spread.
        (_summary((4, 0, 9), 90), _summary((10, 7, 13), 100), (True, True, False, False)),
        # One seed: no interval, no verdict.
        (_summary((4, None, None), 90), _summary((10, None, None), 100), (True, True, None, None)),
        # The baseline avoided every miss too: only zero is half of zero.
        (_summary((0, 0, 0), 90), _summary((-1, -2, 0), 100), (True, True, False, False)),
    ],
)
def test_the_target_against_ray_serve(
    ours: dict, theirs: dict, expected: tuple[bool | None, ...]
) -> None:
    got = target({"elastiscale": ours, "ray-serve": theirs}, "elastiscale", "ray-serve")
    keys = ("half_the_avoidable_misses", "no_more_gpu_seconds", "intervals_apart", "met")
    assert tuple(got[k] for k in keys) == expected
