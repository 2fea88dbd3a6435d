"""Bad input for every parser an operator's data reaches, counted (see fuzz_targets.py).

    python benchmarks/fuzz.py --count 120000          # split evenly over the six targets
    python benchmarks/fuzz.py --count 5000 --target prometheus --seed 7

Prints, per target, the inputs tried, the failures (contract breaks and uncaught exceptions)
and the first few failures; exits 1 when any target failed. Inputs are reproducible: input i
of a target comes from the seed string "<seed>:<target>:<i>".
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuzz_targets import TARGETS, fuzz


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=6000, help="inputs in all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", action="append", choices=sorted(TARGETS), default=None)
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)  # the adapters log every refusal; only counts matter here
    names = args.target or list(TARGETS)
    per_target = max(1, args.count // len(names))
    total_tried = total_failed = 0
    print(f"{'target':<12} {'tried':>8} {'failures':>9} {'inputs/s':>9}")
    for name in names:
        target = TARGETS[name]()
        started = time.perf_counter()
        try:
            tally = fuzz(target, per_target, args.seed)
        finally:
            target.close()
        elapsed_s = time.perf_counter() - started
        total_tried += tally.tried
        total_failed += tally.failures
        print(f"{name:<12} {tally.tried:>8} {tally.failures:>9} {tally.tried / elapsed_s:>9.0f}")
        for line in tally.first or []:
            print(f"    {line}")
    print(f"{'all':<12} {total_tried:>8} {total_failed:>9}")
    return 1 if total_failed else 0


if __name__ == "__main__":
    sys.exit(main())
