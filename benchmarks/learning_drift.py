"""Learning under drift: `elastiscale` with `learn: true` vs without (priors only) vs `hpa`.

    PYTHONPATH=src nice .venv/bin/python benchmarks/learning_drift.py [--traces FILE ...]
        [--pipeline examples/pipelines/rag.yaml] [--component llm] [--at 1200]

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
- canary: a variant of 0.6x capacity takes 10% of the traffic at `--at`, 50% at 2 x `--at`.
  The simulator serves both variants from one pool, so the truth is the pool's mean capacity
  under the split: 1 / (0.9 + 0.1 / 0.6) = 0.9375x, then 1 / (0.5 + 0.5 / 0.6) = 0.75x.
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


class Recording:
    """Passes every tick through to the policy and keeps one component's proposal details."""

    def __init__(self, inner: ElastiscalePolicy, component: str) -> None:
        self.inner, self.component, self.name = inner, component, inner.name
        self.seen: list[tuple[float, Mapping[str, Any]]] = []

    def propose(self, ctx: TickContext) -> Mapping[str, Proposal]:
        out = self.inner.propose(ctx)
        self.seen.append((ctx.now_s, out[self.component].details))
        return out


def scenarios(
    raw: dict[str, Any], component: str, at_s: float
) -> dict[str, tuple[Config, list[tuple[float, str, float]]]]:
    """Config and truths (change time, detail key, true value) of each scenario."""
    capacity = float(raw["pipeline"]["components"][component]["capacity_per_replica"])
    out: dict[str, tuple[Config, list[tuple[float, str, float]]]] = {}

    def made(drift: list[dict[str, Any]], startup_s: float | None = None) -> Config:
        copy = yaml.safe_load(yaml.safe_dump(raw))
        if startup_s is not None:
            copy["pipeline"]["components"][component]["startup_s"] = startup_s
        if drift:
            copy["scenario"] = {"drift": drift}
        return validate_mapping(copy)

    out["none"] = (made([]), [(0.0, "capacity_in_use", capacity)])
    out["capacity"] = (
        made([{"at_s": at_s, "component": component, "capacity_factor": 0.6}]),
        [(at_s, "capacity_in_use", 0.6 * capacity)],
    )
    out["startup"] = (
        made([{"at_s": at_s, "component": component, "startup_s": 300}], startup_s=120),
        [(at_s, "startup_in_use_s", 300.0)],
    )
    low, high = 1 / (0.9 + 0.1 / 0.6), 1 / (0.5 + 0.5 / 0.6)
    out["canary"] = (
        made(
            [
                {"at_s": at_s, "component": component, "capacity_factor": low},
                {"at_s": 2 * at_s, "component": component, "capacity_factor": high},
            ]
        ),
        [(at_s, "capacity_in_use", low * capacity), (2 * at_s, "capacity_in_use", high * capacity)],
    )
    return out


def time_to_truth(
    seen: list[tuple[float, Mapping[str, Any]]],
    start_s: float,
    truths: list[tuple[float, str, float]],
) -> list[str]:
    """Seconds from each change until the estimate in use is within 10% and stays so until the
    next change (or the end)."""
    out = []
    for k, (at_s, key, truth) in enumerate(truths):
        until_s = truths[k + 1][0] if k + 1 < len(truths) else math.inf
        window = [(t, d) for t, d in seen if start_s + at_s <= t < start_s + until_s]
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
    args = parser.parse_args()
    with open(args.pipeline, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    raw["policies"] = ["hpa"]
    print("| scenario | trace | policy | SLO attainment | avoidable misses | GPU-hours |"
          " time to within 10% |")  # fmt: skip
    print("| --- | --- | --- | ---: | ---: | ---: | --- |")
    for name, (config, truths) in scenarios(raw, args.component, args.at).items():
        for path in args.traces:
            began = time.process_time()
            report = backtest(config, path, ["hpa", "elastiscale", LEARN])
            replay = prepare_trace(path)
            policy = Recording(
                ElastiscalePolicy(config, ElastiscaleParams(learn=True, refit="inline")),
                args.component,
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
