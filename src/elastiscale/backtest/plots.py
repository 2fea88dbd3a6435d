"""PNG plots of a backtest (matplotlib, drawn off-screen on the Agg canvas; no display needed).

- `replicas_<component>.png`: the component's demand, drawn as the replicas it needs at its
  target utilization (demand / (capacity_per_replica x target)), against each policy's ready
  replicas over time;
- `latency.png`: end-to-end p95 latency of completed requests over time, per policy, with the SLO;
- `slo_vs_gpu_hours.png`: SLO attainment against GPU-hours, one point per policy (cost in
  dollars when no component uses GPUs).

Long runs are averaged down to at most `MAX_POINTS` points per line so that a month of 10-second
steps still draws in a second.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from elastiscale.backtest.model import Array, SimulationResult, weighted_quantile
from elastiscale.backtest.scoring import PolicyScore

#: Most points drawn per line.
MAX_POINTS = 1500
#: Fewest latency bins; a bin is at least a minute wide.
_LATENCY_BINS = 200
_DPI = 110


class PlottedReport(Protocol):
    """What the plots read of a report (`elastiscale.backtest.report.BacktestReport`, which
    writes them, so this module does not import it back)."""

    @property
    def pipeline(self) -> Mapping[str, Any]: ...
    @property
    def trace(self) -> Mapping[str, Any]: ...
    @property
    def warmup_s(self) -> float: ...
    @property
    def demand(self) -> Mapping[str, tuple[Array, Array]]: ...
    @property
    def results(self) -> Mapping[str, SimulationResult]: ...
    @property
    def policies(self) -> Mapping[str, PolicyScore]: ...


def write_plots(report: PlottedReport, out_dir: Path) -> list[Path]:
    """Draw every plot of `report` into `out_dir`; return the files written."""
    written = [
        plot_component(report, name, out_dir / f"replicas_{_slug(name)}.png")
        for name in report.pipeline["components"]
    ]
    written.append(plot_latency(report, out_dir / "latency.png"))
    written.append(plot_tradeoff(report, out_dir / "slo_vs_gpu_hours.png"))
    return written


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _figure(width_in: float = 9.0, height_in: float = 4.0) -> Figure:
    figure = Figure(figsize=(width_in, height_in), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _downsample(t_s: Array, values: Array, max_points: int = MAX_POINTS) -> tuple[Array, Array]:
    """Means over equal groups of consecutive points, so at most `max_points` remain."""
    group = max(1, int(np.ceil(t_s.size / max_points)))
    if group == 1:
        return t_s, values
    usable = (t_s.size // group) * group
    if usable == 0:
        return t_s, values
    t_out = t_s[:usable].reshape(-1, group)[:, -1]
    v_out = values[:usable].reshape(-1, group).mean(axis=1)
    return t_out, v_out


def _hours_axis(t_s: Array, start_s: float) -> tuple[Array, str]:
    span_s = float(t_s[-1] - start_s) if t_s.size else 0.0
    if span_s > 3 * 3600:
        return (t_s - start_s) / 3600.0, "time since start (h)"
    return (t_s - start_s) / 60.0, "time since start (min)"


def plot_component(report: PlottedReport, component: str, path: Path) -> Path:
    """Demand (as replicas needed at the target utilization) vs ready replicas per policy."""
    figure = _figure()
    axes = figure.add_subplot()
    start_s = float(report.trace["start_s"])
    info = report.pipeline["components"][component]
    label = "time"
    demand = report.demand.get(component)
    if demand is not None:
        t_s, rate = demand
        needed = rate / (info["capacity_per_replica"] * info["target_utilization"])
        t_d, v_d = _downsample(t_s, needed)
        x, label = _hours_axis(t_d, start_s)
        axes.plot(x, v_d, color="black", linewidth=1.0, linestyle="--", label="demand")
    for name, result in report.results.items():
        series = result.components.get(component)
        if series is None or series.t_s.size == 0:
            continue
        t_r, ready = _downsample(series.t_s, series.ready)
        x, label = _hours_axis(t_r, start_s)
        axes.plot(x, ready, linewidth=1.2, label=name, drawstyle="steps-post")
    axes.set_title(
        f"{component}: ready replicas vs demand "
        f"(as replicas at {info['target_utilization']:.0%} utilization)"
    )
    axes.set_xlabel(label)
    axes.set_ylabel("replicas")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize="small", ncols=2)
    figure.savefig(path)
    return path


def _latency_series(
    completed_at_s: Array, latency_s: Array, weight: Array, start_s: float, end_s: float
) -> tuple[Array, Array]:
    """p95 end-to-end latency per time bin of completion (NaN in bins without completions)."""
    width_s = max(60.0, (end_s - start_s) / _LATENCY_BINS)
    edges = np.arange(start_s, end_s + width_s, width_s)
    which = np.digitize(completed_at_s, edges) - 1
    p95 = np.full(edges.size - 1, np.nan)
    for i in range(edges.size - 1):
        inside = which == i
        if inside.any():
            got = weighted_quantile(latency_s[inside], weight[inside], 0.95)
            p95[i] = np.nan if got is None else got
    centers: Array = edges[1:]
    return centers, p95


def plot_latency(report: PlottedReport, path: Path) -> Path:
    """End-to-end p95 latency over time per policy, with the SLO line."""
    figure = _figure()
    axes = figure.add_subplot()
    start_s = float(report.trace["start_s"])
    end_s = float(report.trace["end_s"])
    slo_s = float(report.pipeline["slo_latency_s"])
    label = "time"
    for name, result in report.results.items():
        if result.latency_s.size == 0:
            continue
        t_s, p95 = _latency_series(
            result.completed_at_s, result.latency_s, result.weight, start_s, end_s
        )
        x, label = _hours_axis(t_s, start_s)
        axes.plot(x, p95, linewidth=1.2, label=name, drawstyle="steps-pre")
    axes.axhline(slo_s, color="black", linestyle="--", linewidth=1.0, label=f"SLO {slo_s:g} s")
    if report.warmup_s > 0:
        scale = 3600.0 if label.endswith("(h)") else 60.0
        axes.axvspan(0, report.warmup_s / scale, color="grey", alpha=0.15, label="warm-up")
    axes.set_yscale("log")
    axes.set_title("end-to-end p95 latency of completed requests")
    axes.set_xlabel(label)
    axes.set_ylabel("seconds")
    axes.grid(alpha=0.3, which="both")
    axes.legend(loc="upper left", fontsize="small", ncols=2)
    figure.savefig(path)
    return path


def plot_tradeoff(report: PlottedReport, path: Path) -> Path:
    """SLO attainment against GPU-hours (or cost), one labelled point per policy."""
    figure = _figure(6.5, 4.5)
    axes = figure.add_subplot()
    scores = report.policies
    use_gpu = any(s.gpu_hours > 0 for s in scores.values())
    for name, s in scores.items():
        if s.slo_attainment is None:
            continue
        x = s.gpu_hours if use_gpu else s.cost
        axes.scatter([x], [100.0 * s.slo_attainment], s=40)
        axes.annotate(
            name,
            (x, 100.0 * s.slo_attainment),
            textcoords="offset points",
            xytext=(6, 4),
            fontsize="small",
        )
    axes.set_xlabel("GPU-hours" if use_gpu else "cost ($)")
    axes.set_ylabel("SLO attainment (%)")
    axes.set_title("SLO attainment vs " + ("GPU-hours" if use_gpu else "cost"))
    axes.grid(alpha=0.3)
    axes.margins(x=0.2, y=0.15)
    figure.savefig(path)
    return path
