"""`elastiscale demo [--out DIR]`: the README's first backtest, from the installed package.

The example agent pipeline and the Azure LLM conversation trace ship as package data
(`elastiscale/data/`, copies of examples/pipelines/agent.yaml and
examples/traces/azure_llm_2023_conv_1s.csv), so the demo runs from a wheel outside the
checkout: every built-in policy on the trace at 4x its arrival rate, as `make demo` does.
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path
from typing import Final

from elastiscale.backtest import cli as backtest_cli

PIPELINE: Final = "agent.yaml"
TRACE: Final = "azure_llm_2023_conv_1s.csv"
RATE_SCALE: Final = 4.0


def data_path(name: str) -> Path:
    """A file of the package's `data/` directory, on disk (wheels install it unzipped)."""
    return Path(str(resources.files("elastiscale") / "data" / name))


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/demo", metavar="DIR", help="output (out/demo)")
    parser.add_argument(
        "--policy", action="append", dest="policies", metavar="NAME", help="as in backtest"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def run(args: argparse.Namespace) -> int:
    pipeline, trace = data_path(PIPELINE), data_path(TRACE)
    argv = [str(pipeline), "--trace", str(trace), "--rate-scale", f"{RATE_SCALE:g}"]
    argv += ["--out", str(args.out)]
    argv += [f"--policy={name}" for name in args.policies or ()]
    argv += ["--no-plots"] if args.no_plots else []
    parser = argparse.ArgumentParser(prog="elastiscale backtest")
    backtest_cli.configure(parser)
    print(f"demo: elastiscale backtest {' '.join(argv)}")
    return backtest_cli.run(parser.parse_args(argv))
