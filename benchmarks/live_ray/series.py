"""What the live runs looked like, read back from the benchmark's Prometheus: per component
series over a run (plots) and the stand-ins' hold windows (the host monitor's hold overrun)."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any


def _range(
    prometheus_url: str, query: str, start_unix_s: float, end_unix_s: float
) -> dict[str, Any]:
    """One range query at 1 s steps, as {component: {"t_s": [...], "value": [...]}}."""
    params = urllib.parse.urlencode(
        {"query": query, "start": start_unix_s, "end": end_unix_s, "step": 1}
    )
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/query_range?{params}", timeout=30) as r:
        body = json.load(r)
    out: dict[str, Any] = {}
    for series in body["data"]["result"]:
        values = series["values"]
        out[series["metric"].get("component", "?")] = {
            "t_s": [float(t) - start_unix_s for t, _ in values],
            "value": [float(v) for _, v in values],
        }
    return out


def component_series(
    prometheus_url: str, start_unix_s: float, end_unix_s: float, window_s: float
) -> dict[str, Any]:
    """What each component saw over the run, from Prometheus: its call rate (demand), calls
    holding a slot (busy) and calls waiting for one (queued: outstanding minus busy minus
    those past their hold awaiting their own downstream calls)."""
    window = f"{max(window_s, 2.0):g}s"
    queries = {
        "demand_rps": f"sum by (component) (rate(live_calls_total[{window}]))",
        "busy": "sum by (component) (live_busy)",
        "queued": (
            "sum by (component) (live_outstanding) - sum by (component) (live_busy)"
            " - sum by (component) (live_downstream)"
        ),
    }
    return {
        key: _range(prometheus_url, query, start_unix_s, end_unix_s)
        for key, query in queries.items()
    }


def _instant(prometheus_url: str, query: str, timeout_s: float) -> dict[str, float]:
    params = urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/query?{params}", timeout=timeout_s) as r:
        body = json.load(r)
    return {s["metric"].get("component", "?"): float(s["value"][1]) for s in body["data"]["result"]}


def hold_seconds(
    prometheus_url: str, window_s: float, timeout_s: float = 2.0
) -> tuple[dict[str, float], dict[str, float]]:
    """Per component, seconds of slot holds over the last `window_s` as measured and as
    nominal (`hold_s` per call), from the stand-ins' counters."""
    window = f"{window_s:g}s"
    measured = _instant(
        prometheus_url,
        f"sum by (component) (increase(live_hold_seconds_total[{window}]))",
        timeout_s,
    )
    nominal = _instant(
        prometheus_url,
        f"sum by (component) (increase(live_hold_nominal_seconds_total[{window}]))",
        timeout_s,
    )
    return measured, nominal
