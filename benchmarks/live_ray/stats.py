"""Figures over seeds: mean and 95% confidence interval, avoidable misses, and whether two
runs differ by more than their intervals.

A seed is one thinning of a slice of trace with its own fan-out draws; every run of a seed
replays the same requests, so a seed's runs are compared with each other (the ceiling's misses
are that seed's unavoidable ones). Across seeds the figures are treated as independent draws:
the interval is Student's t at 95% on the seeds' mean (scipy), none with a single seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as st

#: The figures summarized per run, as `results.json` names them.
FIGURES = ("slo_attainment", "avoidable_misses", "p95_latency_s", "gpu_seconds")


def interval(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean and 95% t-interval of the values given (None: a missing figure, left out)."""
    xs = np.array([float(v) for v in values if v is not None], dtype=float)
    n = int(xs.size)
    if n == 0:
        return {"n": 0, "mean": None, "low": None, "high": None}
    mean = float(xs.mean())
    if n < 2:
        return {"n": n, "mean": mean, "low": None, "high": None}
    half = float(st.t.ppf(0.975, n - 1) * xs.std(ddof=1) / math.sqrt(n))
    return {"n": n, "mean": mean, "low": mean - half, "high": mean + half}


def misses(figures: Mapping[str, Any]) -> int | None:
    """Scored requests that missed the SLO (failed ones included)."""
    attainment, requests = figures.get("slo_attainment"), figures.get("requests")
    if attainment is None or requests is None:
        return None
    return round((1.0 - float(attainment)) * int(requests))


def avoidable_misses(figures: Mapping[str, Any], ceiling: Mapping[str, Any] | None) -> int | None:
    """Misses beyond the ceiling run's on the same requests (can be negative: the ceiling run
    is itself one draw of the host's noise); None without a ceiling run."""
    own = misses(figures)
    base = None if ceiling is None else misses(ceiling)
    if own is None or base is None:
        return None
    return own - base


def separated(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool | None:
    """Whether two intervals do not overlap (None where either has none)."""
    if None in (a.get("low"), a.get("high"), b.get("low"), b.get("high")):
        return None
    return bool(a["high"] < b["low"] or b["high"] < a["low"])


def summarize(seeds: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """Per run, each figure's interval over the seeds: `seeds` is {seed: {run: figures}} with
    `avoidable_misses` already in each run's figures."""
    runs: list[str] = []
    for per_run in seeds.values():
        runs += [r for r in per_run if r not in runs]
    return {
        run: {
            key: interval([per_run[run].get(key) for per_run in seeds.values() if run in per_run])
            for key in FIGURES
        }
        for run in runs
    }


def comparisons(summary: Mapping[str, Mapping[str, Any]], baseline: str) -> dict[str, Any]:
    """For every other run against `baseline`: per figure, whether their intervals separate."""
    if baseline not in summary:
        return {}
    return {
        run: {key: separated(figs[key], summary[baseline][key]) for key in FIGURES}
        for run, figs in summary.items()
        if run not in (baseline, "ceiling")
    }
