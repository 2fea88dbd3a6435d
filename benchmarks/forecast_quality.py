"""Forecast quality and cost on the shared public traces.

    .venv/bin/python benchmarks/forecast_quality.py [--traces-dir ../shared/traces]
        [--trace NAME ...] [--model NAME ...] [--out DIR] [--skip-quality] [--skip-speed]

Quality: a rolling-origin evaluation (elastiscale.forecasting.evaluation) of each trace
resampled to 1 minute, at horizons of 1, 5 and 15 minutes, refitting daily on the last 7 days;
prints, per model, the MAE relative to the better of last-value and seasonal-naive, and the
coverage of the p90 and p99 quantiles. Targets: the selected model's rel_mae <= 0.8 at 5 and 15
minutes; p90 coverage between 0.85 and 0.95. For scale, it also prints the rel_mae of a
clairvoyant reference that sees the demand around the target bin (not a forecast: a floor
set by the bins' own noise).

Cost: for each model, one refit on 7 days of 1-minute data (the NASA trace's first week) and
one predict call (three horizons) per component per tick. Targets: refit <= 1 s, predict <= 1 ms.

The traces are read where they are (the Alibaba trace is for study use and is never copied).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from elastiscale.forecasting import Forecast, Forecaster
from elastiscale.forecasting.cli import build_models
from elastiscale.forecasting.evaluation import Evaluation, demand_series, evaluate
from elastiscale.forecasting.intervals import horizon_bins
from elastiscale.trace import load_trace

TRACES = {
    "nasa": "nasa_http_1995_07_10s.csv.gz",  # July 1995, 10 s bins (same counts as the 1 s file)
    "alibaba": "alibaba_gentd26_lora_requests_10s_days00-13.csv.gz",
}
MODELS = ["auto", "ensemble", "ewma", "holt", "holt-winters", "arima"]
HORIZONS_S = [60.0, 300.0, 900.0]
RESAMPLE_S = 60.0
WEEK_BINS = 7 * 1440


def clairvoyant_rel_mae(ev: Evaluation, horizon_s: float, half_width: int = 5) -> float:
    """rel_mae of a forecast no causal model can make: the mean of the target bin's neighbours
    within +-`half_width` bins (the target itself excluded), i.e. knowing the demand level
    around the target and only missing the bin's own noise. A floor for causal forecasts."""
    k = horizon_bins(horizon_s, ev.step_s)
    target = ev.origins + k - 1
    sums = np.convolve(np.nan_to_num(ev.y), np.ones(2 * half_width + 1), mode="same")
    level = (sums[target] - ev.y[target]) / (2 * half_width)
    mae = float(np.nanmean(np.abs(ev.y[target] - level)))
    baseline = ev.summary["baselines"][f"{horizon_s:g}"]["mae"]  # type: ignore[index]
    return mae / float(baseline)


def quality(path: Path, models: list[str], out: Path | None) -> dict[str, Any]:
    trace = load_trace(path)
    t_s, rate = demand_series(trace, RESAMPLE_S)
    began = time.perf_counter()
    ev = evaluate(t_s, rate, build_models(models, RESAMPLE_S, HORIZONS_S, 3.0), HORIZONS_S)
    summary = {"trace": str(path), **ev.summary, "elapsed_s": time.perf_counter() - began}
    summary["clairvoyant_rel_mae"] = {f"{h:g}": clairvoyant_rel_mae(ev, h) for h in HORIZONS_S}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"forecast_{path.name.split('_')[0]}.json").write_text(
            json.dumps(summary, indent=2) + "\n"
        )
    return summary


def print_quality(name: str, summary: dict[str, Any]) -> None:
    days = (summary["eval_end_s"] - summary["eval_start_s"]) / 86400
    history_days = summary["train_s"] / 86400
    print(
        f"\n{name}: {summary['origins']} origins ({days:.1f} days) after {history_days:.1f}"
        f" days of history; baseline {summary['baseline']}; {summary['elapsed_s']:.0f} s"
    )
    keys = [f"{h:g}" for h in summary["horizons_s"]]
    print(f"  {'model':<15}" + "".join(f"{'rel_mae@' + k:>13}" for k in keys) + "   p90 / p99 @300")
    for model, entry in summary["models"].items():
        mark = "*" if model == summary["selected"] else " "
        cells = "".join(f"{entry['horizons'][k]['rel_mae']:>13.3f}" for k in keys)
        mid = entry["horizons"]["300"]
        cover = f"   {mid['p90_coverage']:.3f} / {mid['p99_coverage']:.3f}"
        print(f" {mark}{model:<15}{cells}{cover}")
    selected = summary["models"][summary["selected"]]["horizons"]
    worst90 = [selected[k]["p90_coverage"] for k in keys]
    floor = "".join(f"{summary['clairvoyant_rel_mae'][k]:>13.3f}" for k in keys)
    print(f"  {'(clairvoyant)':<16}{floor}   <- +-5 bins around the target, not a forecast")
    print(
        f"  selected {summary['selected']}: rel_mae 5 min {selected['300']['rel_mae']:.3f}, "
        f"15 min {selected['900']['rel_mae']:.3f} (target <= 0.8); p90 coverage "
        f"{min(worst90):.3f}..{max(worst90):.3f} (target 0.85..0.95)"
    )


def speed(path: Path, models: list[str], repeats: int, ticks: int) -> None:
    trace = load_trace(path)
    t_s, rate = demand_series(trace, RESAMPLE_S)
    week_t, week_y = t_s[:WEEK_BINS], rate[:WEEK_BINS]
    print(f"\ncost on {path.name}, 7 days of 1-minute bins ({WEEK_BINS} bins):")
    print(
        f"  {'model':<15}{'refit_s (median)':>18}{'predict_ms p50':>16}{'p99':>8}{'update_ms':>11}"
    )
    for name, forecaster in build_models(models, RESAMPLE_S, HORIZONS_S, 3.0).items():
        fits = []
        for _ in range(repeats):
            fc: Forecaster = forecaster.clone()
            began = time.perf_counter()
            fc.fit(week_t, week_y, now_s=float(t_s[WEEK_BINS]))
            fits.append(time.perf_counter() - began)
        predicts, updates = [], []
        for i in range(WEEK_BINS, WEEK_BINS + ticks):
            began = time.perf_counter()
            fc.update(float(t_s[i]), float(rate[i]))
            fc.advance(float(t_s[i + 1]))
            updates.append(time.perf_counter() - began)
            began = time.perf_counter()
            result = fc.predict(HORIZONS_S)
            predicts.append(time.perf_counter() - began)
            assert isinstance(result, Forecast)
        p = np.percentile(np.array(predicts) * 1000, [50, 99])
        print(
            f"  {name:<15}{statistics.median(fits):>18.3f}{p[0]:>16.3f}{p[1]:>8.3f}"
            f"{statistics.median(updates) * 1000:>11.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    shared = Path(__file__).resolve().parents[2] / "shared" / "traces"  # beside the checkout
    parser.add_argument("--traces-dir", default=shared, type=Path)
    parser.add_argument("--trace", action="append", choices=sorted(TRACES), dest="traces")
    parser.add_argument("--model", action="append", dest="models")
    parser.add_argument("--out", type=Path, default=None, help="also write forecast_*.json here")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="refits timed per model")
    parser.add_argument("--ticks", type=int, default=1000, help="predict calls timed per model")
    args = parser.parse_args()
    models = args.models or MODELS
    if not args.skip_quality:
        for name in args.traces or sorted(TRACES, reverse=True):
            print_quality(name, quality(args.traces_dir / TRACES[name], models, args.out))
    if not args.skip_speed:
        speed(args.traces_dir / TRACES["nasa"], models, args.repeats, args.ticks)


if __name__ == "__main__":
    main()
