"""Rolling-origin evaluation of forecasters on a demand series.

The series is split at `train_s`: everything before is history only. From there on, every bin
is a forecast origin. At origin i (time t_i, the start of bin i) each forecaster has seen bins
0..i-1 and forecasts the horizons; the forecast at horizon h is scored against the bin that
ends at or after t_i + h (with 60 s bins, h = 300 s is bin i + 4). Then bin i is given to the
forecaster as an update, as it would be in production. Every `refit_every_s` the forecaster is
refitted on the `history_s` before the origin, and the fit is timed. Nothing a forecaster
uses at origin i comes from bin i or later, so the scores are honest for every model,
automatic selection included.

Scores per model and horizon, over the same origins for every model:
- `rel_mae`: MAE / MAE of the baseline, the better (lower MAE) of last-value and
  seasonal-naive at that horizon; 1.0 means no better than the baseline;
- `asymmetric_error`: see quality.py (under-forecasting weighted `under_weight` times);
- `p90_coverage`, `p99_coverage`: the fraction of actuals at or below the quantile.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from elastiscale.errors import TraceError
from elastiscale.forecasting.base import Forecaster
from elastiscale.forecasting.grid import DAY_S, WEEK_S
from elastiscale.forecasting.intervals import horizon_bins
from elastiscale.forecasting.quality import asymmetric_error
from elastiscale.forecasting.results import Forecast
from elastiscale.forecasting.selection import AutoSelect
from elastiscale.trace import Trace

log = logging.getLogger("elastiscale.forecasting")

Array = npt.NDArray[np.float64]

BASELINES = ("last-value", "seasonal-naive")


def demand_series(trace: Trace, resample_s: float, column: str = "requests") -> tuple[Array, Array]:
    """A trace's demand as (bin start times, rate per second) at `resample_s` bins.

    `column` is a capacity unit of the trace: requests, tokens (input + output) or one column.
    Raises `TraceError` when `resample_s` is not a whole multiple of the trace's bin.
    """
    ratio = resample_s / trace.bin_s
    factor = round(ratio)
    if factor < 1 or abs(ratio - factor) > 1e-9 * max(1.0, ratio):
        raise TraceError(
            f"{trace.name}: resample_s = {resample_s:g} is not a whole multiple of the "
            f"trace's {trace.bin_s:g} s bins"
        )
    work = trace.work(column)
    n = (len(trace) // factor) * factor
    if n == 0:
        raise TraceError(f"{trace.name}: shorter than one {resample_s:g} s bin")
    sums = work[:n].reshape(-1, factor).sum(axis=1)
    return trace.t_s[:n:factor].astype(float), sums / resample_s


@dataclass
class ModelRun:
    """Everything one model produced over the evaluation: forecasts per origin and horizon."""

    name: str
    mean: Array
    p90: Array
    p99: Array
    fallback: npt.NDArray[np.bool_]
    fit_s: list[float] = field(default_factory=list)
    predict_s: list[float] = field(default_factory=list)
    update_s: list[float] = field(default_factory=list)
    choices: dict[str, dict[str, int]] = field(default_factory=dict)
    fallback_reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class Evaluation:
    """The outcome of `evaluate`: raw runs and the scores written to forecast.json."""

    t_s: Array
    y: Array
    origins: npt.NDArray[np.int64]
    horizons_s: tuple[float, ...]
    step_s: float
    runs: dict[str, ModelRun]
    summary: dict[str, object]

    def actual(self, horizon_s: float) -> Array:
        """Actual demand of the bin each origin's forecast at `horizon_s` is scored against."""
        k = horizon_bins(horizon_s, self.step_s)
        target = self.origins + k - 1
        return self.y[target]


def _run(
    forecaster: Forecaster,
    t_s: Array,
    y: Array,
    origins: npt.NDArray[np.int64],
    horizons_s: Sequence[float],
    refit_bins: int,
) -> ModelRun:
    n_o, n_h = origins.size, len(horizons_s)
    run = ModelRun(
        name=forecaster.name,
        mean=np.full((n_o, n_h), np.nan),
        p90=np.full((n_o, n_h), np.nan),
        p99=np.full((n_o, n_h), np.nan),
        fallback=np.zeros(n_o, dtype=bool),
    )
    history_bins = max(1, math.ceil(forecaster.params.history_s / (t_s[1] - t_s[0])))
    horizons = np.asarray(horizons_s, dtype=float)
    start = int(origins[0])
    for j, i in enumerate(origins.tolist()):
        if (i - start) % refit_bins == 0:
            lo = max(0, i - history_bins)
            began = time.perf_counter()
            forecaster.fit(t_s[lo:i], y[lo:i], now_s=float(t_s[i]))
            run.fit_s.append(time.perf_counter() - began)
        began = time.perf_counter()
        forecaster.advance(float(t_s[i]))
        run.update_s.append(time.perf_counter() - began)
        began = time.perf_counter()
        result = forecaster.predict(horizons)
        run.predict_s.append(time.perf_counter() - began)
        if isinstance(result, Forecast):
            run.mean[j], run.p90[j], run.p99[j] = result.mean, result.p90, result.p99
            if result.fallback_reason is not None:
                run.fallback[j] = True
                key = result.fallback_reason.split(":")[0]
                run.fallback_reasons[key] = run.fallback_reasons.get(key, 0) + 1
        if isinstance(forecaster, AutoSelect):
            for h_s, label in forecaster.choices().items():
                counts = run.choices.setdefault(f"{h_s:g}", {})
                counts[label] = counts.get(label, 0) + 1
        began = time.perf_counter()
        forecaster.update(float(t_s[i]), float(y[i]))
        run.update_s[-1] += time.perf_counter() - began
    return run


def _score(
    actual: Array, run: ModelRun, h: int, mask: npt.NDArray[np.bool_], under_weight: float
) -> dict[str, float | None]:
    a, f = actual[mask], run.mean[mask, h]
    if not a.size:
        return {"mae": None}
    asym = asymmetric_error(a, f, under_weight)
    return {
        "mae": float(np.mean(np.abs(a - f))),
        "bias": float(np.mean(f - a)),
        "asymmetric_error": asym,
        "p90_coverage": float(np.mean(a <= run.p90[mask, h])),
        "p99_coverage": float(np.mean(a <= run.p99[mask, h])),
    }


def evaluate(
    t_s: Array,
    y: Array,
    models: Mapping[str, Forecaster],
    horizons_s: Sequence[float] = (60.0, 300.0, 900.0),
    *,
    train_s: float | None = None,
    refit_every_s: float = DAY_S,
    under_weight: float = 3.0,
) -> Evaluation:
    """Rolling-origin evaluation of `models` (name -> unfitted forecaster) on a dense series.

    `t_s` are bin start times at a constant step; `y` the demand rate of each bin (NaN:
    missing). `train_s` defaults to half the series, at most 7 days. Baselines (last-value
    and seasonal-naive) are run too when not among `models`.
    """
    if t_s.size < 4:
        raise ValueError(f"the series has {t_s.size} bins; at least 4 are needed")
    step_s = float(t_s[1] - t_s[0])
    span_s = float(t_s[-1] - t_s[0] + step_s)
    train = min(WEEK_S, span_s / 2) if train_s is None else train_s
    first = math.ceil(train / step_s - 1e-9)
    k_max = max(horizon_bins(h, step_s) for h in horizons_s)
    last = t_s.size - k_max
    if first < 1 or first > last:
        raise ValueError(
            f"train_s = {train:g} leaves no origin: the series spans {span_s:g} s and the longest "
            f"horizon needs {k_max * step_s:g} s after each origin"
        )
    origins = np.arange(first, last + 1, dtype=np.int64)
    refit_bins = max(1, round(refit_every_s / step_s))
    from elastiscale import registry

    everything: dict[str, Forecaster] = dict(models)
    for name in BASELINES:
        if name not in everything:
            base_params = {"step_s": step_s, "horizons_s": tuple(horizons_s)}
            everything[name] = registry.build("forecaster", name, None, base_params)
    runs: dict[str, ModelRun] = {}
    for name, forecaster in everything.items():
        log.info("evaluating %s over %d origins", name, origins.size)
        runs[name] = _run(forecaster, t_s, y, origins, horizons_s, refit_bins)
        runs[name].name = name
    evaluation = Evaluation(t_s, y, origins, tuple(horizons_s), step_s, runs, {})
    evaluation.summary = _summarize(evaluation, list(models), under_weight, train, refit_every_s)
    return evaluation


def _summarize(
    ev: Evaluation, names: list[str], under_weight: float, train_s: float, refit_every_s: float
) -> dict[str, object]:
    models: dict[str, dict[str, object]] = {}
    baselines: dict[str, dict[str, object]] = {}
    per_horizon: dict[str, dict[str, dict[str, float | None]]] = {n: {} for n in ev.runs}
    baseline_names: list[str] = []
    for h, horizon_s in enumerate(ev.horizons_s):
        key = f"{horizon_s:g}"
        actual = ev.actual(horizon_s)
        mask = np.isfinite(actual)
        for run in ev.runs.values():
            mask &= np.isfinite(run.mean[:, h])
        scores = {name: _score(actual, run, h, mask, under_weight) for name, run in ev.runs.items()}
        base_maes = {b: scores[b]["mae"] for b in BASELINES}
        known = {b: m for b, m in base_maes.items() if m is not None}
        best = min(known, key=lambda b: known[b]) if known else BASELINES[0]
        base_mae = base_maes[best]
        baseline_names.append(best)
        baselines[key] = {"name": best, "mae": base_mae, "origins": int(mask.sum())}
        for b in BASELINES:
            baselines[key][f"{b}_mae"] = base_maes[b]
        for name, score in scores.items():
            mae = score["mae"]
            rel = None if mae is None or not base_mae else mae / base_mae
            per_horizon[name][key] = {"rel_mae": rel, **score}
    for name in names:
        run = ev.runs[name]
        entry: dict[str, object] = {
            "horizons": per_horizon[name],
            "fit_s": _mean(run.fit_s),
            "fit_s_max": max(run.fit_s) if run.fit_s else None,
            "fits": len(run.fit_s),
            "predict_ms": _mean_ms(run.predict_s),
            "update_ms": _mean_ms(run.update_s),
            "fallback_fraction": float(run.fallback.mean()) if run.fallback.size else 0.0,
        }
        if run.fallback_reasons:
            entry["fallback_reasons"] = dict(run.fallback_reasons)
        if run.choices:
            entry["choices"] = run.choices
        models[name] = entry
    return {
        "selected": _selected(names, per_horizon),
        "baseline": max(set(baseline_names), key=lambda b: (baseline_names.count(b), b)),
        "baselines": baselines,
        "models": models,
        "resample_s": ev.step_s,
        "horizons_s": list(ev.horizons_s),
        "train_s": train_s,
        "refit_every_s": refit_every_s,
        "under_weight": under_weight,
        "origins": int(ev.origins.size),
        "eval_start_s": float(ev.t_s[ev.origins[0]]),
        "eval_end_s": float(ev.t_s[ev.origins[-1]] + ev.step_s),
    }


def _selected(
    names: list[str], per_horizon: Mapping[str, Mapping[str, Mapping[str, object]]]
) -> str:
    """The model policies use by default: `auto` when evaluated, else the lowest mean
    asymmetric error over the horizons."""
    if "auto" in names:
        return "auto"

    def mean_error(name: str) -> float:
        values = [h.get("asymmetric_error") for h in per_horizon[name].values()]
        known = [float(v) for v in values if isinstance(v, int | float)]
        return sum(known) / len(known) if known else math.inf

    return min(names, key=mean_error)


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _mean_ms(values: list[float]) -> float | None:
    return float(np.mean(values) * 1000.0) if values else None
