"""Figures of one run, live or simulated, in the shape `results.json` reports them.

Every figure is in wall seconds. Live replica-seconds integrate the replicas Serve lists for a
deployment, whatever their state (starting, running or stopping), over the samples taken while
the load ran: the simulator bills the same way, from the request for a replica until it has
drained.

A deployment's p95 latency (`p95_latency_s_per_deployment`) is the same statistic on both
sides: per 1 s step, the 95th percentile of the latency at the deployment (queue wait + hold:
from the caller's send to the end of the hold live, app.py's call log) of the calls whose hold
ended in the step, averaged over the scored steps weighted by their calls. That is what the
simulators record per step (and what a policy's `latency_p95_s` reads); it is not the p95 of
the pooled calls, which the simulators do not keep.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from load import LiveRun

from elastiscale.backtest.api import BacktestReport
from elastiscale.config import Config


def _quantile(latency_s: np.ndarray, q: float) -> float | None:
    return float(np.quantile(latency_s, q)) if latency_s.size else None


def live_figures(run: LiveRun, config: Config, scored_from_s: float = 0.0) -> dict[str, Any]:
    """SLO attainment, latency quantiles, replica- and GPU-seconds and scaling actions of the
    requests sent, and the time, from `scored_from_s` on (wall seconds from the start)."""
    slo_s = config.pipeline.slo.latency_p95_s
    req = run.requests
    scored = ~(req.sent_s < scored_from_s)  # a request never sent (NaN) counts: it failed
    ok = scored & (req.status == 200) & np.isfinite(req.latency_s)
    latency = req.latency_s[ok]
    met = int(np.count_nonzero(latency <= slo_s))
    n_scored = int(np.count_nonzero(scored))
    samples = [s for s in run.samples if s.t_s >= scored_from_s]
    t_s = np.array([s.t_s for s in samples] + [run.duration_s])
    dt_s = np.diff(t_s)
    replica_seconds: dict[str, float] = {}
    actions = 0
    for name in config.pipeline.components:
        counts = np.array([sum(s.states.get(name, {}).values()) for s in samples], dtype=float)
        replica_seconds[name] = float(np.sum(counts * dt_s)) if samples else 0.0
        targets = [s.target[name] for s in samples if name in s.target]
        actions += sum(1 for a, b in itertools.pairwise(targets) if a != b)
    gpus = {n: c.gpus_per_replica for n, c in config.pipeline.components.items()}
    return {
        "slo_attainment": met / n_scored if n_scored else None,
        "p50_latency_s": _quantile(latency, 0.50),
        "p95_latency_s": _quantile(latency, 0.95),
        "p99_latency_s": _quantile(latency, 0.99),
        "requests": n_scored,
        "failed_requests": n_scored - int(np.count_nonzero(ok)),
        "gpu_seconds": sum(replica_seconds[n] * gpus[n] for n in replica_seconds),
        "replica_seconds": replica_seconds,
        "gpu_seconds_per_deployment": {n: replica_seconds[n] * gpus[n] for n in replica_seconds},
        "scaling_actions": actions,
        "duration_s": run.duration_s - scored_from_s,
    }


def simulated_figures(report: BacktestReport, label: str) -> dict[str, Any]:
    """The same figures from one policy of a backtest report."""
    run = report.runs[label]
    score = run.score
    replica_seconds = {
        name: comp.replica_hours * 3600.0 for name, comp in score.per_component.items()
    }
    gpu_seconds = {name: comp.gpu_hours * 3600.0 for name, comp in score.per_component.items()}
    return {
        "slo_attainment": score.slo_attainment,
        "p50_latency_s": score.p50_latency_s,
        "p95_latency_s": score.p95_latency_s,
        "p99_latency_s": score.p99_latency_s,
        "requests": score.scored_requests,
        "failed_requests": score.dropped_requests,
        "gpu_seconds": score.gpu_hours * 3600.0,
        "replica_seconds": replica_seconds,
        "gpu_seconds_per_deployment": gpu_seconds,
        "scaling_actions": score.scaling_actions,
        "p95_latency_s_per_deployment": simulated_step_p95(report, label, report.warmup_s),
    }


def relative_error(
    measured: Mapping[str, Any], simulated: Mapping[str, Any], key: str
) -> float | None:
    """(simulated - measured) / measured, or None where either is missing or zero."""
    m, s = measured.get(key), simulated.get(key)
    if m is None or s is None or m == 0:
        return None
    return (float(s) - float(m)) / float(m)


def read_call_log(
    registry_dir: Path, start_unix: float
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every call the replicas logged (app.py): per deployment, the end of each call's hold in
    seconds from `start_unix` and its latency at the deployment. A torn last line is skipped."""
    ends: dict[str, list[float]] = {}
    latencies: dict[str, list[float]] = {}
    for path in sorted(registry_dir.glob("calls-*.csv")):
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split(",")
            if len(parts) != 3:
                continue
            try:
                end, latency = float(parts[1]), float(parts[2])
            except ValueError:
                continue
            ends.setdefault(parts[0], []).append(end - start_unix)
            latencies.setdefault(parts[0], []).append(latency)
    return {name: (np.array(ends[name]), np.array(latencies[name])) for name in ends}


def step_p95(
    end_s: np.ndarray, latency_s: np.ndarray, from_s: float, until_s: float
) -> float | None:
    """The completion-weighted mean over 1 s steps in [from_s, until_s) of each step's p95 of
    the latencies of the calls ending in it (the discrete-event simulator's rank rule: the
    ceil(0.95 n)-th smallest); None without calls."""
    keep = (end_s >= from_s) & (end_s < until_s)
    if not np.any(keep):
        return None
    steps = np.floor(end_s[keep]).astype(np.int64)
    values = latency_s[keep]
    total = weight = 0.0
    for step in np.unique(steps):
        got = np.sort(values[steps == step])
        total += float(got[max(0, math.ceil(0.95 * got.size) - 1)]) * got.size
        weight += got.size
    return total / weight


def simulated_step_p95(
    report: BacktestReport, label: str, from_s: float
) -> dict[str, float | None]:
    """The same statistic from the simulator's per-step series, over steps from `from_s`."""
    out: dict[str, float | None] = {}
    result = report.runs[label].result
    for name, series in result.components.items():
        step_s = result.step_s
        keep = (series.t_s - step_s >= from_s - 1e-9) & (series.completions > 0)
        keep &= np.isfinite(series.latency_p95_s)
        weight = float(np.sum(series.completions[keep]))
        out[name] = (
            float(np.sum(series.latency_p95_s[keep] * series.completions[keep]) / weight)
            if weight > 0
            else None
        )
    return out
