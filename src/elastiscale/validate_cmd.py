"""`elastiscale validate CONFIG.yaml`: exit 0, or exit 2 with one line per problem."""

from __future__ import annotations

import argparse
import sys

from elastiscale.config import load_config
from elastiscale.errors import ConfigError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="pipeline or daemon YAML file")
    parser.add_argument(
        "--check-sources",
        action="store_true",
        help="also run each metric query once against its server (one line per bad query)",
    )


def run(args: argparse.Namespace) -> int:
    from elastiscale.config.fleet import is_fleet_file

    try:
        if is_fleet_file(args.config):
            return _run_fleet(args)
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{args.config}: {problem}", file=sys.stderr)
        return 2
    if getattr(args, "check_sources", False):
        from elastiscale.adapters.source_check import check_sources

        problems = check_sources(config)
        for problem in problems:
            print(f"{args.config}: {problem}", file=sys.stderr)
        if problems:
            return 2
    names = ", ".join(config.pipeline.components)
    print(f"{args.config}: ok (pipeline {config.pipeline.name}: {names})")
    return 0


def _run_fleet(args: argparse.Namespace) -> int:
    """A fleet file: every pipeline file it names, and every unit merged; one line per unit."""
    from elastiscale.config.fleet import load_fleet

    fleet = load_fleet(args.config)  # ConfigError: printed by `run`
    problems: list[str] = []
    if getattr(args, "check_sources", False):
        from elastiscale.adapters.source_check import check_sources

        for unit in fleet.units:
            problems.extend(f"unit {unit.name}: {p}" for p in check_sources(unit.config))
    for problem in problems:
        print(f"{args.config}: {problem}", file=sys.stderr)
    if problems:
        return 2
    for name in fleet.unshared():
        print(f"{args.config}: note: fleet.shared names {name}, which only one pipeline has")
    for unit in fleet.units:
        names = ", ".join(unit.config.pipeline.components)
        shared = [
            n
            for n in unit.config.pipeline.components
            if n in fleet.shared and len(unit.pipelines) > 1
        ]
        also = f"; shared: {', '.join(shared)}" if shared else ""
        print(
            f"{args.config}: ok (fleet {fleet.name}, unit {unit.name}: "
            f"pipelines {', '.join(unit.pipelines)}{also}; components {names})"
        )
    return 0
