"""`elastiscale forecast-eval --trace FILE [--horizon-s 60 300 900] [--resample-s 60]
[--model NAME ...] [--out DIR]`

Rolling-origin evaluation of forecasters on a trace (evaluation.py): writes `DIR/forecast.json`
and `DIR/forecast.png` (the selected model's forecasts against the actual demand) and prints a
table. `forecast.json`:

    {"selected": NAME, "baseline": NAME,
     "models": {NAME: {"horizons": {"300": {"rel_mae": x, "asymmetric_error": y,
                                            "p90_coverage": z, "p99_coverage": w, ...}},
                       "fit_s": f, "predict_ms": g, ...}},
     "baselines": {"300": {"name": NAME, "mae": m, ...}}, "trace": FILE, ...}

`selected` is the model policies use by default (`auto` when evaluated). Every model runs at
the evaluation's resolution, except one that refuses so fine a step (arima) which runs at its
own. Exit codes: 0 done, 2 bad input (trace, options, unknown model), one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from elastiscale import registry
from elastiscale.errors import RegistryError, TraceError
from elastiscale.extras import MissingExtraError, require
from elastiscale.forecasting.base import Forecaster
from elastiscale.forecasting.grid import DAY_S

log = logging.getLogger("elastiscale.forecasting")

DEFAULT_OUT = "out/forecast"
DEFAULT_HORIZONS_S = (60.0, 300.0, 900.0)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trace", required=True, metavar="FILE", help="trace CSV (or .csv.gz)")
    parser.add_argument(
        "--horizon-s",
        type=float,
        nargs="+",
        default=list(DEFAULT_HORIZONS_S),
        metavar="S",
        help="forecast horizons in seconds (default: 60 300 900)",
    )
    parser.add_argument(
        "--resample-s", type=float, default=60.0, metavar="S", help="evaluation bin (60)"
    )
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="NAME",
        help="forecaster to evaluate (repeatable; default: every built-in one)",
    )
    parser.add_argument(
        "--out", default=DEFAULT_OUT, metavar="DIR", help=f"output directory ({DEFAULT_OUT})"
    )
    parser.add_argument(
        "--column",
        default="requests",
        help="demand to forecast: requests, tokens (input + output) or a trace column",
    )
    parser.add_argument(
        "--train-s",
        type=float,
        default=None,
        metavar="S",
        help="history before the first origin (default: half the trace, at most 7 days)",
    )
    parser.add_argument(
        "--refit-s", type=float, default=DAY_S, metavar="S", help="refit period (86400)"
    )
    parser.add_argument(
        "--under-weight",
        type=float,
        default=3.0,
        metavar="R",
        help="cost of under-forecasting relative to over-forecasting (3)",
    )
    parser.add_argument("--no-plot", action="store_true", help="skip forecast.png")


def _fail(message: str) -> int:
    print(f"elastiscale forecast-eval: {message}", file=sys.stderr)
    return 2


def build_models(
    names: list[str], resample_s: float, horizons_s: list[float], under_weight: float
) -> dict[str, Forecaster]:
    """Each named forecaster at the evaluation's resolution (or its own, when it refuses)."""
    models: dict[str, Forecaster] = {}
    for name in names:
        shared: dict[str, Any] = {"horizons_s": tuple(horizons_s), "under_weight": under_weight}
        try:
            model = registry.build("forecaster", name, None, {**shared, "step_s": resample_s})
        except ValidationError as exc:
            if not any(err["loc"][:1] == ("step_s",) for err in exc.errors()):
                raise
            model = registry.build("forecaster", name, None, shared)
            log.info("%s runs at its own step of %g s", name, model.step_s)
        if not isinstance(model, Forecaster):
            raise RegistryError(f"forecaster {name!r} does not build a Forecaster")
        models[name] = model
    return models


def run(args: argparse.Namespace) -> int:
    from elastiscale.forecasting.evaluation import demand_series, evaluate
    from elastiscale.trace import load_trace

    began = time.perf_counter()
    if not args.no_plot:
        try:
            require("matplotlib", "plots", "forecast-eval plots (or pass --no-plot)")
        except MissingExtraError as exc:
            return _fail(str(exc))
    horizons = [float(h) for h in args.horizon_s]
    if any(not h > 0 for h in horizons):
        return _fail(f"--horizon-s {' '.join(f'{h:g}' for h in horizons)}: horizons must be > 0")
    if not args.resample_s > 0:
        return _fail(f"--resample-s {args.resample_s:g}: must be > 0")
    if not args.under_weight > 0:
        return _fail(f"--under-weight {args.under_weight:g}: must be > 0")
    names = args.models or registry.names("forecaster")
    try:
        trace = load_trace(args.trace)
        t_s, demand = demand_series(trace, args.resample_s, args.column)
        models = build_models(names, args.resample_s, horizons, args.under_weight)
        evaluation = evaluate(
            t_s,
            demand,
            models,
            horizons,
            train_s=args.train_s,
            refit_every_s=args.refit_s,
            under_weight=args.under_weight,
        )
    except (TraceError, RegistryError) as exc:
        return _fail(str(exc))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        return _fail(f"{exc.title}: {where}: {err['msg']}")
    except ValueError as exc:
        return _fail(str(exc))
    summary: dict[str, Any] = {
        "trace": str(args.trace),
        "column": args.column,
        **evaluation.summary,
        "elapsed_s": round(time.perf_counter() - began, 3),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "forecast.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if not args.no_plot:
        from elastiscale.forecasting.plots import plot_forecast

        plot_forecast(evaluation, summary["selected"], out / "forecast.png")
    print(format_table(summary))
    print(f"wrote {out / 'forecast.json'}")
    return 0


def format_table(summary: dict[str, Any]) -> str:
    """A plain-text table: one row per model, rel_mae and p90 coverage per horizon."""
    horizons = [f"{h:g}" for h in summary["horizons_s"]]
    head = f"{'model':<16}" + "".join(f"{'rel_mae@' + h:>14}{'p90@' + h:>10}" for h in horizons)
    head += f"{'fit_s':>8}{'predict_ms':>12}"
    lines = [head]
    for name, entry in summary["models"].items():
        mark = "*" if name == summary["selected"] else " "
        row = f"{mark}{name:<15}"
        for h in horizons:
            cell = entry["horizons"].get(h, {})
            row += f"{_fmt(cell.get('rel_mae')):>14}{_fmt(cell.get('p90_coverage')):>10}"
        row += f"{_fmt(entry['fit_s']):>8}{_fmt(entry['predict_ms']):>12}"
        lines.append(row)
    lines.append(f"* selected; baseline: {summary['baseline']} (rel_mae 1.0 = no better)")
    return "\n".join(lines)


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"
