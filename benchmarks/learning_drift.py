"""Learning under drift: `elastiscale` with `learn: true` vs without (priors only) vs `hpa`.

    PYTHONPATH=src nice .venv/bin/python benchmarks/learning_drift.py [--traces FILE ...]
        [--pipeline examples/pipelines/rag.yaml] [--component llm] [--at 1200]
        [--scenarios none capacity startup canary]

For each scenario and trace: one backtest (all three policies on the same trace, same start
counts, metrics and seed; the ceiling run for avoidable misses), printing attainment,
avoidable misses and GPU-hours; then the learning policy simulated once more under the same
conditions with its decision records kept, for the time from each change until the estimate
in use is within 10% of the truth and stays there until the next change or the end ("never"
otherwise; ticks without a proposal are skipped).

Scenarios, on `--component` (the pipeline's LLM), drift at `--at` seconds after the start:
- none: no drift, the file's numbers are the truth (what learning costs when nothing changes);
- capacity: a model roll-out at 0.6x capacity per replica (each call holds its slot 1/0.6 as
  long);
- startup: the file says 120 s (the prior), the truth becomes 300 s (a bigger image);
- canary: the component becomes two variants (`variants:`, each its own scale target, the
  file's split 90/10 and the stable's numbers for both), the canary truly at 0.6x capacity; the
  true split is 100/0 until `--at`, 90/10 from `--at`, 50/50 from 2 x `--at`
  (`scenario.traffic`). The policies see the per-variant rates, busy shares and replica counts.
  The time column: the stable's capacity estimate from the start, the canary's from each of
  its traffic steps (it has no traffic before the first), each within 10% of its truth.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from elastiscale.backtest.api import DEFAULT_METRICS_DELAY_S, backtest, prepare_trace
from elastiscale.backtest.baselines import initial_replicas
from elastiscale.backtest.runner import simulate
from elastiscale.config import Config, validate_mapping
from elastiscale.controllers.base import TickContext
from elastiscale.controllers.feedforward import ElastiscalePolicy
from elastiscale.controllers.feedforward_state import ElastiscaleParams
from elastiscale.decision import Proposal

SHARED = Path(__file__).resolve().parents[2] / "shared" / "traces"  # beside the checkout
TRACES = [
    str(SHARED / "azure_llm_2023_conv_1s.csv"),
    str(SHARED / "mooncake_fast25_conversation_1s.csv"),
]
LEARN = {"name": "elastiscale", "params": {"learn": True}}


#: (change time, component, detail key, true value): what an estimate should reach.
Truth = tuple[float, str, str, float]


class Recording:
    """Passes every tick through to the policy and keeps every component's proposal details."""

    def __init__(self, inner: ElastiscalePolicy) -> None:
        self.inner, self.name = inner, inner.name
        self.seen: list[tuple[float, Mapping[str, Mapping[str, Any]]]] = []

    def propose(self, ctx: TickContext) -> Mapping[str, Proposal]:
        out = self.inner.propose(ctx)
        self.seen.append((ctx.now_s, {name: p.details for name, p in out.items()}))
        return out


def scenarios(
    raw: dict[str, Any], component: str, at_s: float
) -> dict[str, tuple[Config, list[Truth]]]:
    """Config and truths of each scenario."""
    capacity = float(raw["pipeline"]["components"][component]["capacity_per_replica"])
    out: dict[str, tuple[Config, list[Truth]]] = {}

    def made(drift: list[dict[str, Any]], startup_s: float | None = None, **extra: Any) -> Config:
        copy = yaml.safe_load(yaml.safe_dump(raw))
        comp = copy["pipeline"]["components"][component]
        if startup_s is not None:
            comp["startup_s"] = startup_s
        if "variants" in extra:
            comp["variants"] = extra.pop("variants")
        scenario = {k: v for k, v in (("drift", drift), *extra.items()) if v}
        if scenario:
            copy["scenario"] = scenario
        return validate_mapping(copy)

    c = component
    out["none"] = (made([]), [(0.0, c, "capacity_in_use", capacity)])
    out["capacity"] = (
        made([{"at_s": at_s, "component": c, "capacity_factor": 0.6}]),
        [(at_s, c, "capacity_in_use", 0.6 * capacity)],
    )
    out["startup"] = (
        made([{"at_s": at_s, "component": c, "startup_s": 300}], startup_s=120),
        [(at_s, c, "startup_in_use_s", 300.0)],
    )
    stable, canary = f"{c}-stable", f"{c}-canary"
    lower = max(1, int(raw["pipeline"]["components"][c]["replicas"].get("min", 1)) // 2)
    upper = int(raw["pipeline"]["components"][c]["replicas"]["max"])
    variants = {
        "stable": {"percent": 90},
        "canary": {"percent": 10, "replicas": {"min": lower, "max": upper}},
    }
    split = [
        {"at_s": 0, "component": c, "percent": {"stable": 100, "canary": 0}},
        {"at_s": at_s, "component": c, "percent": {"stable": 90, "canary": 10}},
        {"at_s": 2 * at_s, "component": c, "percent": {"stable": 50, "canary": 50}},
    ]
    out["canary"] = (
        made(
            [{"at_s": 0, "component": canary, "capacity_factor": 0.6}],
            variants=variants,
            traffic=split,
        ),
        [(0.0, stable, "capacity_in_use", capacity),
         (at_s, canary, "capacity_in_use", 0.6 * capacity),
         (2 * at_s, canary, "capacity_in_use", 0.6 * capacity)],
    )  # fmt: skip
    return out


def time_to_truth(
    seen: list[tuple[float, Mapping[str, Mapping[str, Any]]]],
    start_s: float,
    truths: list[Truth],
) -> list[str]:
    """Seconds from each change until the component's estimate in use is within 10% and stays
    so until the component's next change (or the end)."""
    out = []
    for k, (at_s, component, key, truth) in enumerate(truths):
        later = [t[0] for t in truths[k + 1 :] if t[1] == component]
        until_s = later[0] if later else math.inf
        window = [(t, d.get(component, {})) for t, d in seen
                  if start_s + at_s <= t < start_s + until_s]  # fmt: skip
        entered: float | None = None
        for t, details in window:
            value = details.get(key)
            if value is None:
                continue  # a tick without a proposal (no data yet) says nothing
            close = isinstance(value, int | float) and abs(value - truth) <= 0.1 * truth
            if close and entered is None:
                entered = t
            elif not close:
                entered = None
        out.append("never" if entered is None else f"{entered - start_s - at_s:.0f} s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--traces", nargs="+", default=TRACES)
    parser.add_argument("--pipeline", default="examples/pipelines/rag.yaml")
    parser.add_argument("--component", default="llm")
    parser.add_argument("--at", type=float, default=1200.0, help="seconds after the start")
    parser.add_argument("--scenarios", nargs="+", default=["none", "capacity", "startup", "canary"])
    args = parser.parse_args()
    with open(args.pipeline, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    raw["policies"] = ["hpa"]
    print("| scenario | trace | policy | SLO attainment | avoidable misses | GPU-hours |"
          " time to within 10% |")  # fmt: skip
    print("| --- | --- | --- | ---: | ---: | ---: | --- |")
    for name, (config, truths) in scenarios(raw, args.component, args.at).items():
        if name not in args.scenarios:
            continue
        for path in args.traces:
            began = time.process_time()
            report = backtest(config, path, ["hpa", "elastiscale", LEARN])
            replay = prepare_trace(path)
            policy = Recording(
                ElastiscalePolicy(config, ElastiscaleParams(learn=True, refit="inline"))
            )
            simulate(config, replay, policy, initial_replicas=initial_replicas(config, replay),
                     metrics_delay_s=DEFAULT_METRICS_DELAY_S)  # fmt: skip
            to_truth = ", ".join(time_to_truth(policy.seen, replay.start_s, truths))
            labels = {"hpa": "hpa", "elastiscale": "priors only", "elastiscale#2": "learning"}
            trace = path.rsplit("/", 1)[-1]
            for label, shown in labels.items():
                s = report.runs[label].score
                misses = (
                    report.ceiling_attainment - s.slo_attainment
                    if report.ceiling_attainment is not None
                    else math.nan
                )
                extra = to_truth if label == "elastiscale#2" else ""
                print(f"| {name} | {trace} | {shown} | {s.slo_attainment:.2%} | {misses:.2%} |"
                      f" {s.gpu_hours:.1f} | {extra} |")  # fmt: skip
            print(f"<!-- {name} {trace}: {time.process_time() - began:.0f} s CPU -->", flush=True)


if __name__ == "__main__":
    main()
