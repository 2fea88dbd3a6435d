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
    try:
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
