"""What the references cost: the `oracle` search and `static-budget`'s split search, against
the rest of one backtest.

    .venv/bin/python benchmarks/reference_cost.py [--end-s S]

For the agent pipeline on each bundled trace (Azure x 4, Mooncake conversation x 6; the whole
hour unless `--end-s`), one backtest of every built-in policy. Prints, per trace, the CPU
seconds (`time.process_time`, so other work on a shared machine does not count) of the other
policies together, of `static-budget` (its search and its run) and of `oracle` (its search,
including the `static-peak` run it reuses, and its run), and the simulations each search used.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from elastiscale.backtest import baselines
from elastiscale.backtest.api import buildable_builtins, prepare_trace
from elastiscale.backtest.context import RunContext
from elastiscale.config import PolicySpec, load_config

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "azure x 4": (ROOT / "examples/traces/azure_llm_2023_conv_1s.csv", 4.0),
    "mooncake x 6": (ROOT / "examples/traces/mooncake_fast25_conversation_1s.csv", 6.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--end-s", type=float, default=None)
    args = parser.parse_args()
    config = load_config(ROOT / "examples/pipelines/agent.yaml")
    print("| trace | other policies, CPU s | static-budget, CPU s (simulations) |"
          " oracle, CPU s (simulations) | oracle / others |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, (path, scale) in CASES.items():
        trace = prepare_trace(path, rate_scale=scale, end_s=args.end_s)
        context = RunContext(config, trace, baselines.initial_replicas(config, trace),
                             metrics_delay_s=15.0, specs=[])  # fmt: skip
        cpu: dict[str, float] = {}
        sims: dict[str, int] = {}
        for name in buildable_builtins():
            before, began = context.evaluations, time.process_time()
            context.run_of(PolicySpec(name=name))
            cpu[name] = time.process_time() - began
            sims[name] = context.evaluations - before
        others = sum(v for k, v in cpu.items() if k not in ("oracle", "static-budget"))
        print(
            f"| {label} | {others:.1f} | {cpu['static-budget']:.1f} ({sims['static-budget']})"
            f" | {cpu['oracle']:.1f} ({sims['oracle']}) | {cpu['oracle'] / others:.1f}x |"
        )


if __name__ == "__main__":
    main()
