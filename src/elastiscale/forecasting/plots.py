"""Forecast against actual demand, one panel per horizon (matplotlib, off-screen Agg canvas).

Each panel shows, over the last `window_s` of the evaluation, the actual demand of every
scored bin, the model's point forecast for it (made `horizon` earlier), and the band up to its
p90, with the p99 as a dotted line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from elastiscale.forecasting.evaluation import Evaluation
from elastiscale.forecasting.grid import DAY_S
from elastiscale.forecasting.intervals import horizon_bins

_DPI = 110


def plot_forecast(
    evaluation: Evaluation, model: str, path: Path, window_s: float = 2 * DAY_S
) -> Path:
    """Draw `model`'s forecasts against the actual demand into `path` (PNG)."""
    ev = evaluation
    run = ev.runs[model]
    n_h = len(ev.horizons_s)
    fig = Figure(figsize=(11, 2.6 * n_h + 0.6), dpi=_DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_h, 1, sharex=True, squeeze=False)[:, 0]
    end_s = float(ev.t_s[ev.origins[-1]])
    keep = ev.t_s[ev.origins] >= end_s - window_s
    for h, horizon_s in enumerate(ev.horizons_s):
        k = horizon_bins(horizon_s, ev.step_s)
        target = ev.origins[keep] + k - 1
        hours = (ev.t_s[target] - ev.t_s[ev.origins[0]]) / 3600.0
        ax = axes[h]
        ax.plot(hours, ev.y[target], color="0.55", lw=0.6, label="actual")
        ax.fill_between(
            hours,
            run.mean[keep, h],
            run.p90[keep, h],
            color="tab:blue",
            alpha=0.2,
            lw=0,
            label="mean to p90",
        )
        ax.plot(hours, run.mean[keep, h], color="tab:blue", lw=1.0, label="forecast (mean)")
        ax.plot(hours, run.p99[keep, h], color="tab:blue", lw=0.6, ls=":", label="p99")
        ax.set_ylabel("demand / s")
        ax.set_title(f"{model}, horizon {horizon_s:g} s", fontsize=9, loc="left")
        # Clip the rare spike so that the bulk of the day stays readable.
        top = max(np.nanpercentile(ev.y[target], 99.5), np.nanpercentile(run.p99[keep, h], 99.5))
        if np.isfinite(top) and top > 0:
            ax.set_ylim(0.0, float(top) * 1.1)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper right", fontsize=8, ncol=4)
    axes[-1].set_xlabel("hours since the first forecast origin")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
