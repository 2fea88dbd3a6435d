"""The `elastiscale` command. Each subcommand lives beside the code it drives, in a module
with `configure(parser)` and `run(args) -> exit code`; this file only dispatches.

Exit codes: 0 success, 1 failure while running, 2 bad input (config, trace, arguments).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

#: Subcommand name -> (module, one-line help).
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("elastiscale.validate_cmd", "check a config file; exit 2 naming every problem"),
    "backtest": ("elastiscale.backtest.cli", "replay a trace through policies and compare them"),
    "sweep": ("elastiscale.sweep.cli", "run many backtests (local pool or Ray); frontiers"),
    "capacity": (
        "elastiscale.backtest.capacity_cli",
        "the highest load each policy holds on N GPUs (bisection on the rate scale)",
    ),
    "forecast-eval": ("elastiscale.forecasting.cli", "rolling-origin evaluation of forecasters"),
    "export-trace": ("elastiscale.adapters.prometheus.cli", "write Prometheus history as a trace"),
    "run": ("elastiscale.daemon.cli", "run the sidecar daemon"),
    "demo": ("elastiscale.demo", "backtest the bundled agent pipeline on a bundled real trace"),
    "import": (
        "elastiscale.importer.cli",
        "an HPA, KEDA ScaledObject or Ray Serve config as a pipeline",
    ),
}


def _load(module_name: str) -> ModuleType | None:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None  # this subcommand is not part of this build
        raise


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    parser = argparse.ArgumentParser(
        prog="elastiscale",
        description="Autoscaling control plane for compound AI pipelines.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules: dict[str, ModuleType] = {}
    for name, (module_name, help_text) in COMMANDS.items():
        module = _load(module_name)
        if module is None:
            continue
        modules[name] = module
        module.configure(sub.add_parser(name, help=help_text, description=help_text))
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    code: int = modules[args.command].run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
