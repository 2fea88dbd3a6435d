"""The live benchmark's table (results.md) and plots (replicas.png, latency.png)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scenario import Scenario


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} GiB (PSS)"


def _rel(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.0f}%"


def table(results: dict[str, Any]) -> str:
    rows = [
        "| run | SLO attainment | p50 s | p95 s | p99 s | GPU-s | replica-s | scaling actions"
        " | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in ("runs", "simulated"):
        for name, m in results[kind].items():
            label = name if kind == "runs" else f"{name} (simulated)"
            rows.append(
                f"| {label} | {_pct(m['slo_attainment'])} | {_s(m['p50_latency_s'])}"
                f" | {_s(m['p95_latency_s'])} | {_s(m['p99_latency_s'])}"
                f" | {m['gpu_seconds']:.0f} | {sum(m['replica_seconds'].values()):.0f}"
                f" | {m['scaling_actions']} | {m['failed_requests']:g} |"
            )
    fidelity = [
        "",
        "Simulated minus measured, relative to measured:",
        "",
        "| run | p95 latency | GPU-seconds | SLO attainment |",
        "|---|---:|---:|---:|",
    ]
    for name, errors in results.get("fidelity", {}).items():
        fidelity.append(
            f"| {name} | {_rel(errors['p95_latency_s'])} | {_rel(errors['gpu_seconds'])}"
            f" | {_rel(errors['slo_attainment'])} |"
        )
    sc = results["scenario"]
    head = (
        f"Live: `{sc['pipeline']}` on `{sc['trace']}` seconds {sc['start_s']:g} to"
        f" {sc['start_s'] + sc['duration_s']:g} (after {sc['warmup_s']:g} s of unscored warm-up),"
        f" {sc['time_scale']:g}x faster, rate x"
        f" {sc['rate_scale']:g}: {sc['requests']} requests; seed {sc['seed']}; whole command"
        f" {sc['elapsed_s'] / 60:.1f} min, peak memory {_gib(sc.get('peak_memory_gib'))}."
        f" Times are wall seconds (trace seconds / {sc['time_scale']:g}).\n\n"
    )
    return head + "\n".join(rows + fidelity) + "\n"


def plots(series: dict[str, Any], scenario: Scenario, out: Path) -> list[Path]:
    """Demand and replicas per deployment over time (one column per run), and latency."""
    config = scenario.wall_config
    names = list(config.pipeline.components)
    runs = list(series)
    if not runs:
        return []
    fig, axes = plt.subplots(
        len(names),
        len(runs),
        figsize=(5.5 * len(runs), 2.2 * len(names)),
        squeeze=False,
        sharex=True,
    )
    for col, run in enumerate(runs):
        live = series[run]["live"]
        demand = series[run]["demand_rps"]
        t = np.array([s.t_s for s in live.samples])
        for row, name in enumerate(names):
            ax = axes[row][col]
            counts = [sum(s.states.get(name, {}).values()) for s in live.samples]
            running = [s.states.get(name, {}).get("RUNNING", 0) for s in live.samples]
            ax.step(t, counts, where="post", label="replicas (all states)", color="tab:blue")
            ax.step(t, running, where="post", label="running", color="tab:green", alpha=0.7)
            ax.set_ylabel(f"{name}\nreplicas")
            comp = config.pipeline.components[name]
            if name in demand:
                twin = ax.twinx()
                needed = np.array(demand[name]["value"]) / comp.capacity_per_replica
                twin.plot(
                    demand[name]["t_s"], needed, color="tab:red", lw=0.8, label="demand / capacity"
                )
                twin.set_ylim(bottom=0)
                if col == len(runs) - 1:
                    twin.set_ylabel("demand\n(replicas' worth)")
            if row == 0:
                ax.set_title(run)
                ax.legend(loc="upper left", fontsize=7)
        axes[-1][col].set_xlabel("wall seconds")
    fig.tight_layout()
    replicas_png = out / "replicas.png"
    fig.savefig(replicas_png, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 3.5))
    slo_s = config.pipeline.slo.latency_p95_s
    for run in runs:
        req = series[run]["live"].requests
        ok = np.isfinite(req.latency_s)
        ax.plot(req.sent_s[ok], req.latency_s[ok], ".", ms=2, alpha=0.5, label=run)
    ax.axhline(slo_s, color="k", ls="--", lw=0.8, label=f"SLO {slo_s:g} s")
    ax.axvline(scenario.warmup_wall_s, color="grey", ls=":", lw=0.8, label="end of warm-up")
    ax.set_xlabel("wall seconds")
    ax.set_ylabel("end-to-end latency, s")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    latency_png = out / "latency.png"
    fig.savefig(latency_png, dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 3), squeeze=False, sharey=True)
    for col, run in enumerate(runs):
        ax = axes[0][col]
        for name, data in sorted(series[run].get("queued", {}).items()):
            ax.plot(data["t_s"], data["value"], lw=0.9, label=name)
        ax.set_title(f"{run}: calls waiting for a slot")
        ax.set_xlabel("wall seconds")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("calls queued at the caller")
    fig.tight_layout()
    queues_png = out / "queues.png"
    fig.savefig(queues_png, dpi=110)
    plt.close(fig)
    return [replicas_png, latency_png, queues_png]


def write_report(
    results: dict[str, Any], series: dict[str, Any], scenario: Scenario, out: Path
) -> None:
    (out / "results.md").write_text(table(results), encoding="utf-8")
    plots(series, scenario, out)
