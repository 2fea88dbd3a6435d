"""How dispersed each trace's ingress arrivals are, as the surge test of `elastiscale` measures
them (controllers/arrivals.py, `TypicalDispersion`): the trace at a pipeline's rate scale (the
rule of policy_quality.py), read as a metric source reports it (a trailing 60 s rate every
15 s), fed to the estimator, and its value sampled every hour and at the end.

    PYTHONPATH=src .venv/bin/python benchmarks/arrival_noise.py
    PYTHONPATH=src .venv/bin/python benchmarks/arrival_noise.py --traces-dir out/traces \\
        --trace bursty_batches_1s.csv --trace flash_spikes_10s.csv

Prints, per trace, the rate scale and the 10th, 50th and 90th percentiles of the hourly values
(1 is Poisson; a trace scaled by k has about k times its own dispersion).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from elastiscale.backtest.api import prepare_trace
from elastiscale.controllers.arrivals import TypicalDispersion
from policy_quality import TRACES, rate_scale

WINDOW_S = 60.0
TICK_S = 15.0
PIPELINE = Path(__file__).resolve().parent.parent / "examples" / "pipelines" / "custom.yaml"


def hourly_dispersion(path: Path, scale: float) -> list[float]:
    """The estimator's value at the end of every hour of the scaled trace."""
    trace = prepare_trace(path, 1.0, scale, None, None)
    per_s = np.repeat(trace.requests / trace.bin_s, max(1, round(trace.bin_s)))
    total = np.concatenate([[0.0], np.cumsum(per_s)])
    est = TypicalDispersion(window_s=WINDOW_S)
    seen: list[float] = []
    window, tick = int(WINDOW_S), int(TICK_S)
    for t in range(window, per_s.size + 1, tick):
        est.update(float(t), float(total[t] - total[t - window]) / WINDOW_S)
        last = t + tick > per_s.size
        if (t % 3600 == 0 or last) and est.dispersion is not None:
            seen.append(est.dispersion)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces-dir", type=Path, default=Path("/work/shared/traces"))
    parser.add_argument("--trace", action="append", help="a file in --traces-dir (default: all)")
    parser.add_argument("--pipeline", type=Path, default=PIPELINE, help="for the rate scale")
    args = parser.parse_args()
    names = args.trace or list(TRACES)
    print(f"{'trace':50s} {'x rate':>7s} {'hours':>6s} {'p10':>7s} {'p50':>7s} {'p90':>7s}")
    for name in names:
        path = args.traces_dir / name
        scale = rate_scale(args.pipeline, path)
        got = hourly_dispersion(path, scale)
        if not got:
            print(f"{name:50s} {scale:7g} {0:6d}   (shorter than an hour)")
            continue
        p10, p50, p90 = np.percentile(got, [10, 50, 90])
        print(f"{name:50s} {scale:7g} {len(got):6d} {p10:7.1f} {p50:7.1f} {p90:7.1f}")


if __name__ == "__main__":
    main()
