"""`elastiscale validate CONFIG.yaml`: exit 0, or exit 2 with one line per problem."""

from __future__ import annotations

import argparse
import sys

from elastiscale.config import load_config
from elastiscale.errors import ConfigError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="pipeline or daemon YAML file")


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{args.config}: {problem}", file=sys.stderr)
        return 2
    names = ", ".join(config.pipeline.components)
    print(f"{args.config}: ok (pipeline {config.pipeline.name}: {names})")
    return 0
