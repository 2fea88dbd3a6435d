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

#: The figures summarized per run, as `results.json` names them, with the range each can
#: take (an interval is cut to it: an attainment above 100% is no figure).
FIGURES = ("slo_attainment", "avoidable_misses", "p95_latency_s", "gpu_seconds")
BOUNDS: dict[str, tuple[float, float]] = {
    "slo_attainment": (0.0, 1.0),
    "avoidable_misses": (-math.inf, math.inf),  # the ceiling run may miss more, by noise
    "p95_latency_s": (0.0, math.inf),
    "gpu_seconds": (0.0, math.inf),
}


def interval(
    values: Sequence[float | None], bounds: tuple[float, float] = (-math.inf, math.inf)
) -> dict[str, Any]:
    """Mean and 95% t-interval of the values given (None: a missing figure, left out), cut to
    `bounds`."""
    xs = np.array([float(v) for v in values if v is not None], dtype=float)
    n = int(xs.size)
    if n == 0:
        return {"n": 0, "mean": None, "low": None, "high": None}
    mean = float(xs.mean())
    if n < 2:
        return {"n": n, "mean": mean, "low": None, "high": None}
    half = float(st.t.ppf(0.975, n - 1) * xs.std(ddof=1) / math.sqrt(n))
    low, high = bounds
    return {"n": n, "mean": mean, "low": max(low, mean - half), "high": min(high, mean + half)}


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
            key: interval(
                [per_run[run].get(key) for per_run in seeds.values() if run in per_run],
                BOUNDS[key],
            )
            for key in FIGURES
        }
        for run in runs
    }


def comparisons(summary: Mapping[str, Mapping[str, Any]], baseline: str) -> dict[str, Any]:
    """For every other run against `baseline`: per figure, whether their intervals separate,
    and the target (`target`)."""
    if baseline not in summary:
        return {}
    return {
        run: {
            **{key: separated(figs[key], summary[baseline][key]) for key in FIGURES},
            "target": target(summary, run, baseline),
        }
        for run, figs in summary.items()
        if run not in (baseline, "ceiling")
    }


def target(summary: Mapping[str, Mapping[str, Any]], run: str, baseline: str) -> dict[str, Any]:
    """The issue's target for `run` against `baseline`, on the means over the seeds: at most
    half the baseline's avoidable misses, at no more GPU-seconds, with the avoidable misses'
    intervals apart. None where a figure or an interval is missing."""
    ours, theirs = summary[run], summary[baseline]
    misses_ours, misses_theirs = (
        ours["avoidable_misses"]["mean"],
        theirs["avoidable_misses"]["mean"],
    )
    gpu_ours, gpu_theirs = ours["gpu_seconds"]["mean"], theirs["gpu_seconds"]["mean"]
    half = None
    if misses_ours is not None and misses_theirs is not None:
        half = bool(misses_ours <= 0.5 * max(misses_theirs, 0.0))
    cheaper = None if None in (gpu_ours, gpu_theirs) else bool(gpu_ours <= gpu_theirs)
    apart = separated(ours["avoidable_misses"], theirs["avoidable_misses"])
    parts = (half, cheaper, apart)
    return {
        "half_the_avoidable_misses": half,
        "no_more_gpu_seconds": cheaper,
        "intervals_apart": apart,
        "met": None if None in parts else all(parts),
    }
