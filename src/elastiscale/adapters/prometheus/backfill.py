"""The metric history that already exists, read back from Prometheus for a policy's warm start.

A daemon that starts (or restarts) beside a running service need not learn from nothing: the
load its metric source would have read over the last `control.history_s` is in Prometheus.
`observed_history` evaluates each component's load queries (`demand_rps`, and `tokens_per_s`
where it has one) as range queries every `step_s`, in chunks of at most `max_points` points as
`export-trace` does (history.py), and returns one mapping per step of what a tick at that time
would have read. A step without data is an observation with that signal missing (never zero).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from elastiscale.adapters.prometheus.history import MAX_POINTS_PER_QUERY, bin_count, fetch_values
from elastiscale.adapters.prometheus.http import PrometheusHTTP
from elastiscale.adapters.prometheus.promql import ComponentQueries, SignalQuery, plan_queries
from elastiscale.observations import Observation

#: The signals a warm start learns from.
HISTORY_SIGNALS = ("demand_rps", "tokens_per_s")


def observed_history(
    http: PrometheusHTTP,
    specs: Sequence[ComponentQueries],
    rate_window_s: float,
    start_s: float,
    end_s: float,
    step_s: float,
    *,
    max_points: int = MAX_POINTS_PER_QUERY,
) -> list[dict[str, Observation]]:
    """Per step from `start_s + step_s` to `end_s` (Unix seconds), every component's
    observation of `HISTORY_SIGNALS` as of that time. Raises what the HTTP client raises."""
    points = bin_count(start_s, end_s, step_s)
    first_s = start_s + step_s
    values: dict[tuple[str, str], np.ndarray] = {}
    for spec in specs:
        # The value only: the sample-time half of a live query dates one instant, and a range
        # query dates every point itself.
        queries = {
            s: SignalQuery(spec.queries[s].expr) for s in HISTORY_SIGNALS if s in spec.queries
        }
        alone = ComponentQueries(spec.component, spec.label, spec.value, spec.selector, queries)
        for planned in plan_queries([alone], rate_window_s, batch=False):
            got = fetch_values(http, planned.promql, first_s, points, step_s, max_points=max_points)
            values[(spec.component, planned.signal)] = got
    out: list[dict[str, Observation]] = []
    for k in range(points):
        at_s = first_s + k * step_s
        snapshot: dict[str, Observation] = {}
        for spec in specs:
            signals: dict[str, float | None] = {}
            missing: dict[str, str] = {}
            for signal in HISTORY_SIGNALS:
                series = values.get((spec.component, signal))
                value = float(series[k]) if series is not None else math.nan
                if math.isfinite(value) and value >= 0.0:
                    signals[signal] = value
                else:
                    missing[signal] = "no data in the history" if series is not None else "no query"
            snapshot[spec.component] = Observation(
                component=spec.component,
                at_s=at_s,
                demand_rps=signals.get("demand_rps"),
                tokens_per_s=signals.get("tokens_per_s"),
                missing=missing,
            )
        out.append(snapshot)
    return out
