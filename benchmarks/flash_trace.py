"""A synthetic multi-day trace at 10 s bins with flash spikes, for judging a policy on rises no
forecast of the history can see: a daily cycle of a social stream, plus sudden surges (a post
going viral) a few times a day that reach several times the current rate within minutes and
decay over tens of minutes. None of the shared traces has more than one such surge.

    .venv/bin/python benchmarks/flash_trace.py --out out/traces/flash_spikes_10s.csv
    PYTHONPATH=src .venv/bin/python benchmarks/policy_quality.py --traces-dir out/traces \\
        --trace flash_spikes_10s.csv --pipeline rag --pipeline custom --no-ablation \\
        --reactive-curve --skip-policy predictive --skip-policy static-peak

Arrivals: Poisson around a base of 4 requests/s that swings +-50% over the day (peak in the
evening) and 10% over the week; surges arrive as a Poisson process (on average `--spikes-per-day`,
default 2), each multiplying the base by a lognormal factor (median 5, at most 20), rising
linearly over 1 to 5 minutes and decaying exponentially with a time constant of 10 to 60
minutes (`--factor-median`, `--rise-s`, `--decay-s` change those three). Input and output
tokens per request are gamma-distributed (means 1,200 and 300), summed per bin. Seeded, so
the file is the same on every machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

BIN_S = 10
DAYS = 8
SEED = 11
BASE_RPS = 4.0


def surge_profile(
    n_bins: int,
    rng: np.random.Generator,
    spikes_per_day: float,
    factor_median: float = 5.0,
    rise_s: tuple[float, float] = (60.0, 300.0),
    decay_s: tuple[float, float] = (600.0, 3600.0),
) -> np.ndarray:
    """The multiplier (1 outside surges) of every bin: surges summed where they overlap."""
    t_s = np.arange(n_bins) * float(BIN_S)
    extra = np.zeros(n_bins)
    n_spikes = rng.poisson(spikes_per_day * n_bins * BIN_S / 86400.0)
    for start_s in np.sort(rng.uniform(0.0, n_bins * BIN_S, n_spikes)):
        factor = min(20.0, float(rng.lognormal(np.log(factor_median), 0.5)))
        up_s = float(rng.uniform(*rise_s))
        down_s = float(rng.uniform(*decay_s))
        since_s = t_s - start_s
        rising = (since_s >= 0.0) & (since_s < up_s)
        falling = since_s >= up_s
        extra[rising] += (factor - 1.0) * since_s[rising] / up_s
        extra[falling] += (factor - 1.0) * np.exp(-(since_s[falling] - up_s) / down_s)
    return 1.0 + extra


def flash_trace(
    days: float = DAYS,
    seed: int = SEED,
    spikes_per_day: float = 2.0,
    factor_median: float = 5.0,
    rise_s: tuple[float, float] = (60.0, 300.0),
    decay_s: tuple[float, float] = (600.0, 3600.0),
) -> list[tuple[int, int, float, float]]:
    """Rows (t_seconds, requests, input_tokens, output_tokens) of the module docstring."""
    rng = np.random.default_rng(seed)
    n_bins = int(days * 86400 / BIN_S)
    t_s = np.arange(n_bins) * float(BIN_S)
    daily = 1.0 + 0.5 * np.sin(2.0 * np.pi * (t_s / 86400.0 - 0.5))
    weekly = 1.0 + 0.1 * np.sin(2.0 * np.pi * t_s / (7 * 86400.0))
    surges = surge_profile(n_bins, rng, spikes_per_day, factor_median, rise_s, decay_s)
    rate_rps = BASE_RPS * daily * weekly * surges
    counts = rng.poisson(rate_rps * BIN_S)
    # The sum of n gamma(2, s) draws is gamma(2n, s).
    tokens_in = np.where(counts > 0, rng.gamma(2.0 * np.maximum(counts, 1), 600.0), 0.0)
    tokens_out = np.where(counts > 0, rng.gamma(2.0 * np.maximum(counts, 1), 150.0), 0.0)
    return [
        (int(t), int(n), float(a), float(b))
        for t, n, a, b in zip(t_s, counts, tokens_in, tokens_out, strict=True)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/traces/flash_spikes_10s.csv"))
    parser.add_argument("--days", type=float, default=DAYS)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--spikes-per-day", type=float, default=2.0)
    parser.add_argument("--factor-median", type=float, default=5.0, help="surge height's median")
    parser.add_argument(
        "--rise-s", type=float, nargs=2, default=(60.0, 300.0), metavar=("MIN", "MAX")
    )
    parser.add_argument(
        "--decay-s", type=float, nargs=2, default=(600.0, 3600.0), metavar=("MIN", "MAX")
    )
    args = parser.parse_args(argv)
    rows = flash_trace(
        args.days,
        args.seed,
        args.spikes_per_day,
        args.factor_median,
        tuple(args.rise_s),
        tuple(args.decay_s),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as f:
        f.write("t_seconds,requests,input_tokens,output_tokens\n")
        for t_s, n, tokens_in, tokens_out in rows:
            f.write(f"{t_s},{n},{tokens_in:.0f},{tokens_out:.0f}\n")
    per_s = np.array([r[1] for r in rows], dtype=float) / BIN_S
    print(
        f"{args.out}: {len(rows)} bins of {BIN_S} s, mean {per_s.mean():.2f} req/s, "
        f"peak/mean {per_s.max() / per_s.mean():.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
