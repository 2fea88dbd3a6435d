"""`elastiscale import FILE... --out pipeline.yaml [--pipeline BASE.yaml] [--name NAME]`

Reads Kubernetes HPAs (autoscaling/v2), KEDA ScaledObjects and Ray Serve configs and writes a
pipeline file whose `hpa` or `ray-serve` policy reproduces them (see `elastiscale.importer`).
Every field not carried over, and every placeholder, is one line on stderr (and a comment at
the top of the file). Then "what we run today" against elastiscale is one command:

    elastiscale backtest pipeline.yaml --prometheus URL --ingress-query QUERY \\
        --start now-7d --end now --policy hpa --policy elastiscale

Exit codes: 0 written; 2 a file cannot be imported (one line naming the file, document and
field) or the result does not validate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from elastiscale.config.loading import _read_yaml
from elastiscale.errors import ConfigError
from elastiscale.importer.model import ImportRefusedError
from elastiscale.importer.writer import build, gather, render


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="autoscaler YAML")
    parser.add_argument("--out", type=Path, required=True, metavar="PIPELINE.yaml")
    parser.add_argument(
        "--pipeline",
        type=Path,
        metavar="BASE.yaml",
        help="a pipeline file to lay the imported autoscalers over (components by name)",
    )
    parser.add_argument("--name", help="the pipeline's name (default: the base's, or imported)")


def run(args: argparse.Namespace) -> int:
    try:
        base = None
        if args.pipeline is not None:
            raw = _read_yaml(args.pipeline)
            if not isinstance(raw, dict):
                raise ImportRefusedError(f"{args.pipeline}: expected a mapping")
            base = raw
        components = gather(args.files)
        config, notes = build(components, base, args.name)
    except ConfigError as exc:
        print(f"{exc.source}: {'; '.join(exc.problems)}", file=sys.stderr)
        return 2
    except ImportRefusedError as exc:
        print(f"import: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"import: {note}", file=sys.stderr)
    args.out.write_text(render(config, args.files, notes), encoding="utf-8")
    policy = config["policies"][0]["name"]
    print(
        f"wrote {args.out} ({len(components)} imported, policy {policy}); compare with: "
        f"elastiscale backtest {args.out} --prometheus URL --ingress-query QUERY --start now-7d "
        f"--end now (or --trace HISTORY.csv) --policy {policy} --policy elastiscale",
        file=sys.stderr,
    )
    return 0
