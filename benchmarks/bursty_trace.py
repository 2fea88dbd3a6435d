"""A synthetic one-hour LLM trace at 1 s bins with batch arrivals inside a minute, for judging a
policy on traffic far burstier than the shared one-hour traces (none of which has peak/mean
above 10 at 1 s).

    .venv/bin/python benchmarks/bursty_trace.py --out out/traces/bursty_batches_1s.csv
    PYTHONPATH=src .venv/bin/python benchmarks/policy_quality.py --traces-dir out/traces \\
        --trace bursty_batches_1s.csv --no-ablation --reactive-curve

Arrivals: Poisson at 2 requests/s (a slow +-30% swing, period about an hour), plus a batch on
average every 40 s whose size is geometric with mean 40 (a client flushing a queue); input and
output tokens per request gamma-distributed (means 1,200 and 300). Seeded, so the file is the
same on every machine: mean 2.8 requests/s, peak/mean 50 at 1 s.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SECONDS = 3600
SEED = 7


def bursty_trace(seed: int = SEED) -> list[tuple[int, int, float, float]]:
    """Rows (t_seconds, requests, input_tokens, output_tokens) of the module docstring."""
    rng = np.random.default_rng(seed)
    t = np.arange(SECONDS)
    base = 2.0 * (1.0 + 0.3 * np.sin(t / 600.0))
    requests = rng.poisson(base)
    batch = rng.random(SECONDS) < 1.0 / 40.0
    requests = requests + np.where(batch, rng.geometric(1.0 / 40.0, SECONDS), 0)
    counts = [int(n) for n in requests]
    tokens_in = [float(rng.gamma(2.0, 600.0, n).sum()) if n else 0.0 for n in counts]
    tokens_out = [float(rng.gamma(2.0, 150.0, n).sum()) if n else 0.0 for n in counts]
    return list(zip(range(SECONDS), counts, tokens_in, tokens_out, strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/traces/bursty_batches_1s.csv"))
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    rows = bursty_trace(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as f:
        f.write("t_seconds,requests,input_tokens,output_tokens\n")
        for t_s, n, tokens_in, tokens_out in rows:
            f.write(f"{t_s},{n},{tokens_in:.0f},{tokens_out:.0f}\n")
    counts = np.array([r[1] for r in rows], dtype=float)
    print(
        f"{args.out}: mean {counts.mean():.2f} req/s, peak/mean {counts.max() / counts.mean():.0f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
