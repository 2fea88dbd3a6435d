"""The live benchmark's table (results.md) and plots (replicas.png, latency.png)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from fidelity import SIMULATED, seed_fidelity_table, slice_fidelity_table
from scenario import Scenario


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} GiB (PSS)"


def _rel(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.0f}%"


def _ci(figure: dict[str, Any], fmt: Any) -> str:
    if figure.get("mean") is None:
        return "-"
    if figure.get("low") is None:
        return fmt(figure["mean"])
    return f"{fmt(figure['mean'])} [{fmt(figure['low'])}, {fmt(figure['high'])}]"


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _separated(value: bool | None) -> str:
    return {True: "outside", False: "inside", None: "-"}[value]


FORMATS = {
    "slo_attainment": _pct,
    "avoidable_misses": _n,
    "p95_latency_s": _s,
    "gpu_seconds": lambda v: f"{v:.0f}",
}


def summary_table(per_slice: dict[str, Any]) -> list[str]:
    """One row per run: each figure's mean over the seeds and its 95% interval."""
    rows = [
        "| run | SLO attainment | avoidable misses | p95 s | GPU-s |",
        "|---|---:|---:|---:|---:|",
    ]
    for run, figs in per_slice["summary"].items():
        cells = " | ".join(_ci(figs[key], fmt) for key, fmt in FORMATS.items())
        rows.append(f"| {run} | {cells} |")
    if per_slice.get("comparisons"):
        rows += [
            "",
            "Against `ray-serve`, whether the 95% intervals separate (outside) or overlap:",
            "",
            "| run | SLO attainment | avoidable misses | p95 | GPU-s |",
            "|---|---|---|---|---|",
        ]
        for run, verdicts in per_slice["comparisons"].items():
            cells = " | ".join(_separated(verdicts[key]) for key in FORMATS)
            rows.append(f"| {run} | {cells} |")
        rows += [
            "",
            "The target (at most half of `ray-serve`'s avoidable misses at no more GPU-seconds,"
            " the avoidable misses' intervals apart):",
            "",
            "| run | half the avoidable misses | no more GPU-s | intervals apart | met |",
            "|---|---|---|---|---|",
        ]
        for run, verdicts in per_slice["comparisons"].items():
            t = verdicts["target"]
            cells = " | ".join(
                _yes(t[k])
                for k in ("half_the_avoidable_misses", "no_more_gpu_seconds", "intervals_apart")
            )
            rows.append(f"| {run} | {cells} | {_yes(t['met'])} |")
    return rows


def _yes(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "-"}[value]


def seed_table(seed: str, done: dict[str, Any]) -> list[str]:
    rows = [
        f"Seed {seed} ({done['requests']} scored requests, ceiling attainment"
        f" {_pct(done['ceiling_attainment'])}):",
        "",
        "| run | SLO attainment | avoidable misses | p50 s | p95 s | p99 s | GPU-s | replica-s"
        " | scaling actions | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in ("runs", "simulated"):
        for name, m in done[kind].items():
            label = name if kind == "runs" else f"{name} (simulated)"
            avoidable = m.get("avoidable_misses")
            rows.append(
                f"| {label} | {_pct(m['slo_attainment'])}"
                f" | {'-' if avoidable is None else avoidable}"
                f" | {_s(m['p50_latency_s'])} | {_s(m['p95_latency_s'])} | {_s(m['p99_latency_s'])}"
                f" | {m['gpu_seconds']:.0f} | {sum(m['replica_seconds'].values()):.0f}"
                f" | {m['scaling_actions']} | {m['failed_requests']:g} |"
            )
    rows += ["", *seed_fidelity_table(done, SIMULATED)]
    host = [
        "",
        "Host lag, each measure's worst 5 s window (host.py; limits: send error and loop lag"
        " p95 0.05 s, hold overrun 0.10, steal 0.10, foreign runnable processes per CPU 1;"
        " the load average is recorded only):",
        "",
        "| run | measures |",
        "|---|---|",
    ]
    for name, m in done["runs"].items():
        worst = ", ".join(f"{k} {v:.3g}" for k, v in sorted(m.get("host", {}).items()))
        host.append(f"| {name} | {worst or '-'} |")
    return rows + host


def table(results: dict[str, Any]) -> str:
    sc = results["scenario"]
    partial = "" if sc.get("complete", True) else " **Partial: the seeds done so far.**"
    lines = [
        f"Live, the {sc['shape']} shape (`{sc['pipeline']}`), {sc['seeds']} seed(s) per slice;"
        f" whole command {sc['elapsed_s'] / 60:.1f} min, peak memory"
        f" {_gib(sc.get('peak_memory_gib'))}; host check: {sc['host_check']}."
        " Times are wall seconds. Intervals: mean [95% t-interval] over the seeds; avoidable"
        " misses: misses beyond the ceiling run's on the same requests." + partial,
        "",
    ]
    for name, per_slice in results["slices"].items():
        d = per_slice["scenario"]
        lines += [
            f"## Slice `{name}`: `{d['trace']}` seconds {d['start_s']:g} to"
            f" {d['start_s'] + d['duration_s']:g} (after {d['warmup_s']:g} s of unscored"
            f" warm-up), {d['time_scale']:g}x faster, rate x {d['rate_scale']:g}",
            "",
            *summary_table(per_slice),
            "",
            *slice_fidelity_table(per_slice),
            "",
        ]
        for seed, done in per_slice["seeds"].items():
            lines += [*seed_table(seed, done), ""]
    return "\n".join(lines)


def plots(series: dict[str, Any], scenario: Scenario, out: Path, prefix: str = "") -> list[Path]:
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
    replicas_png = out / f"{prefix}replicas.png"
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
    latency_png = out / f"{prefix}latency.png"
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
    queues_png = out / f"{prefix}queues.png"
    fig.savefig(queues_png, dpi=110)
    plt.close(fig)
    return [replicas_png, latency_png, queues_png]


def write_plots(plotted: dict[str, tuple[dict[str, Any], Scenario]], out: Path) -> None:
    """The plots of each slice's first seed (`<slice>_replicas.png`, ...)."""
    for name, (series, scenario) in plotted.items():
        plots(series, scenario, out, prefix=f"{name}_")
