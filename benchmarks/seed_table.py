"""The seed study's three comparisons, on every shared trace (agent pipeline).

    .venv/bin/python benchmarks/seed_table.py [--only NAME] [--out DIR]   # one JSON per trace
    .venv/bin/python benchmarks/seed_table.py --report [--out DIR]        # the Markdown tables

Per trace, the agent pipeline (`examples/pipelines/agent.yaml`) at the rate scale of
`policy_quality.py`'s rule (the busiest GPU stage at 25 replicas on average, or its 60 s peak at
80% of its max), over the whole trace when it is at most an hour long, else a slice of
`--slice-days` (3) days whose first `--warmup-days` (1) are a warm-up (simulated for every
policy, scored for none):

1. ONE backtest of `static-peak`, `elastiscale`, `static-budget` (match `elastiscale`) and
   `oracle`: P95 of `elastiscale` against `static-budget` at equal GPU-hours (seed: -50%), and
   GPU-hours of `elastiscale` against `static-peak` (seed: 30-40% fewer at equal attainment),
   with every attainment and the ceiling beside them;
2. `elastiscale capacity` on the same slice with N = the GPUs `static-peak` holds in (1): the
   highest rate scale (to 2%) at which `elastiscale` and the best static split of N GPUs still
   meet `slo.attainment_target` (0.99) with at most N GPUs in use (seed: up to 3.9x).

Traces are read in place from `--traces-dir` (default ../shared/traces, beside the checkout); the
NASA trace at 10 s bins (the 1 s file is the same log).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from elastiscale.backtest.api import backtest
from elastiscale.backtest.capacity import capacity
from elastiscale.config import load_config
from elastiscale.trace import load_trace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from policy_quality import rate_scale  # noqa: E402

AGENT = ROOT / "examples" / "pipelines" / "agent.yaml"
TRACES = {
    "azure_llm_2023_conv": ("azure_llm_2023_conv_1s.csv", None),
    "mooncake_fast25_conversation": ("mooncake_fast25_conversation_1s.csv", None),
    "mooncake_fast25_synthetic": ("mooncake_fast25_synthetic_1s.csv", None),
    # first day of the slice, counted from the trace's start (0.4: from 09:36 of that day)
    "nasa_http": ("nasa_http_1995_07_10s.csv.gz", 7.4),  # day 7: a Saturday
    "alibaba_gentd26_lora_requests": ("alibaba_gentd26_lora_requests_10s_days00-13.csv.gz", 10.4),
}
DAY_S = 86400.0
POLICIES = ["static-peak", "elastiscale", "static-budget", "oracle"]
KEYS = ("slo_attainment", "p95_latency_s", "p99_latency_s", "gpu_hours", "avoidable_misses")
KEYS = ("slo_attainment", "p95_latency_s", "p99_latency_s", "gpu_hours", "avoidable_misses")


def run_one(
    name: str, traces_dir: Path, slice_days: float = 3.0, warmup_days: float = 1.0
) -> dict[str, Any]:
    file, first_day = TRACES[name]
    path = traces_dir / file
    config = load_config(AGENT)
    scale = rate_scale(AGENT, path)
    start_s: float | None = None
    end_s: float | None = None
    if first_day is not None:
        start_s = load_trace(path).start_s + first_day * DAY_S
        end_s = start_s + slice_days * DAY_S
    warmup_s = warmup_days * DAY_S if first_day is not None else 0.0
    began = time.process_time()
    report = backtest(
        config, path, POLICIES, rate_scale=scale, warmup_s=warmup_s, start_s=start_s, end_s=end_s
    )
    backtest_cpu_s = time.process_time() - began
    data = report.to_dict()
    peak_gpus = sum(
        c.peak_replicas * config.pipeline.components[n].gpus_per_replica
        for n, c in report.policies["static-peak"].per_component.items()
    )
    began = time.process_time()
    trace = load_trace(path).scaled(rate_scale=scale)
    found = capacity(config, trace, float(peak_gpus), ["static-peak", "elastiscale"],
                     warmup_s=warmup_s, start_s=start_s, end_s=end_s)  # fmt: skip
    capacity_cpu_s = time.process_time() - began
    return {
        "trace": name,
        "rate_scale": scale,
        "window": [start_s, end_s],
        "warmup_s": warmup_s,
        "ceiling_attainment": data["ceiling_attainment"],
        "policies": {n: {k: p[k] for k in KEYS} for n, p in data["policies"].items()},
        "gpus": peak_gpus,
        "capacity": {n: r.to_dict() for n, r in found.items()},
        "backtest_cpu_s": backtest_cpu_s,
        "capacity_cpu_s": capacity_cpu_s,
    }


def report(out: Path) -> None:
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    order = list(TRACES)
    rows.sort(key=lambda r: order.index(r["trace"]))
    print(
        "| trace | x rate | ceiling | elastiscale | static-budget | P95 elastiscale vs"
        " static-budget | static-peak | GPU-h elastiscale vs static-peak | oracle |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        p = r["policies"]
        e, b, s, o = p["elastiscale"], p["static-budget"], p["static-peak"], p["oracle"]

        def cell(x: dict[str, Any]) -> str:
            return f"{x['slo_attainment']:.2%} / {x['p95_latency_s']:.1f} s / {x['gpu_hours']:.0f}"

        print(f"| {r['trace']} | {r['rate_scale']:g} | {r['ceiling_attainment']:.2%} | {cell(e)}"
              f" | {cell(b)} | {e['p95_latency_s'] / b['p95_latency_s'] - 1:+.0%} | {cell(s)}"
              f" | {e['gpu_hours'] / s['gpu_hours'] - 1:+.0%} | {cell(o)} |")  # fmt: skip
    print()
    print(
        "| trace | GPUs | static (best split), max x rate | elastiscale, max x rate |"
        " elastiscale / static |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        c = r["capacity"]
        st, el = c["static-peak"]["max_rate_scale"], c["elastiscale"]["max_rate_scale"]
        ratio = f"{el / st:.2f}x" if st and el else "n/a"
        print(f"| {r['trace']} | {r['gpus']:g} | {st or 0:.3g} | {el or 0:.3g} | {ratio} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=list(TRACES), action="append")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "seed_table")
    parser.add_argument("--traces-dir", type=Path, default=ROOT.parent / "shared" / "traces")
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--slice-days", type=float, default=3.0, help="multi-day traces")
    parser.add_argument("--warmup-days", type=float, default=1.0, help="of the slice")
    args = parser.parse_args()
    if args.report:
        report(args.out)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only or list(TRACES):
        row = run_one(name, args.traces_dir, args.slice_days, args.warmup_days)
        (args.out / f"{name}.json").write_text(json.dumps(row, indent=2) + "\n")
        print(f"{name}: backtest {row['backtest_cpu_s']:.0f} s, capacity "
              f"{row['capacity_cpu_s']:.0f} s CPU", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
