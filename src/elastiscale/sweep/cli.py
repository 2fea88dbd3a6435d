"""`elastiscale sweep SPEC.yaml --out DIR [--workers N] [--ray auto|ADDRESS]`

Runs every cell of the sweep file (trace x pipeline x policy x knob values x seed, one backtest
each) that `DIR/results.csv` does not have yet, then writes `DIR/frontier_<trace>_<pipeline>.png`
and `DIR/summary.md` from all its rows. Run it again to resume after an interruption.

Exit codes: 0 done (failed cells are reported in their rows and on stderr); 1 Ray could not be
used; 2 a bad sweep file, refused whole with one line per bad field.
"""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC.yaml", help="sweep file (traces, pipelines, ...)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="processes of the local pool, or CPUs of a local Ray (default: the core count)",
    )
    parser.add_argument(
        "--ray",
        default=None,
        metavar="auto|ADDRESS",
        help="run cells on Ray: 'auto' starts a local Ray, an address joins a cluster "
        "(needs the ray extra)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from elastiscale.extras import MissingExtraError
    from elastiscale.sweep.runner import run_sweep
    from elastiscale.sweep.spec import SpecError, load_spec

    if args.workers is not None and args.workers < 1:
        print(f"elastiscale sweep: --workers = {args.workers}, must be >= 1", file=sys.stderr)
        return 2
    try:
        spec = load_spec(args.spec)
    except SpecError as exc:
        for problem in exc.problems:
            print(f"{args.spec}: {problem}", file=sys.stderr)
        return 2
    try:
        outcome = run_sweep(
            spec,
            args.out,
            workers=args.workers,
            ray_address=args.ray,
            progress=False if args.no_progress else None,
        )
    except MissingExtraError as exc:
        print(exc, file=sys.stderr)
        return 1
    if outcome.failed:
        print(
            f"elastiscale sweep: {outcome.failed} cell(s) failed; see the error column of "
            f"{args.out}/results.csv",
            file=sys.stderr,
        )
    print(
        f"{outcome.ran} cells run, {outcome.skipped} already in results.csv; wrote "
        f"{len(outcome.written)} files to {args.out}/"
    )
    return 0
