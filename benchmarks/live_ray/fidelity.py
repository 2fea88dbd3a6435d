"""How far the simulator's twin of each live run is from it: per run and per deployment.

For every live run with a simulated twin (`SIMULATED`) and every seed: simulated minus
measured, relative to measured, of the p95 latency and GPU-seconds of the whole run and of
each deployment (`measure.py` defines a deployment's p95 the same way on both sides), and of
SLO attainment. The issue's target is within 10% on p95 and GPU-seconds, per run and per
deployment; `fidelity_tables` writes the per-seed tables and, per slice, the mean over the
seeds and the worst seed, and says whether every figure is within the target.
"""

from __future__ import annotations

from typing import Any

from measure import relative_error

#: The fidelity target: |simulated - measured| / measured.
TARGET = 0.10
#: The simulated run each live run is compared with: in Serve or beside it, the same policy.
SIMULATED = {
    "ray-serve": "ray-serve",
    "elastiscale": "elastiscale",
    "elastiscale-in-ray": "elastiscale",
}


def fidelity_of(measured: dict[str, Any], simulated: dict[str, Any]) -> dict[str, Any]:
    """Simulated minus measured, relative to measured: totals, and p95 and GPU-seconds per
    deployment (GPU-seconds of the deployments with GPUs; p95 of those that served calls)."""
    out: dict[str, Any] = {
        key: relative_error(measured, simulated, key)
        for key in ("p95_latency_s", "gpu_seconds", "slo_attainment")
    }
    live_gpu = measured["gpu_seconds_per_deployment"]
    sim_gpu = simulated["gpu_seconds_per_deployment"]
    out["gpu_seconds_per_deployment"] = {
        name: relative_error(live_gpu, sim_gpu, name) for name in live_gpu if live_gpu[name] > 0
    }
    live_p95 = measured.get("p95_latency_s_per_deployment", {})
    sim_p95 = simulated.get("p95_latency_s_per_deployment", {})
    out["p95_latency_s_per_deployment"] = {
        name: relative_error(live_p95, sim_p95, name) for name in live_p95
    }
    return out


def _rel(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.0f}%"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def rows_of(done: dict[str, Any]) -> list[tuple[str, str, dict[str, float | None]]]:
    """(run, deployment or "whole run", {figure: relative error}) of one seed."""
    out: list[tuple[str, str, dict[str, float | None]]] = []
    for run, errors in done["fidelity"].items():
        out.append(
            (run, "whole run", {"p95": errors["p95_latency_s"], "gpu": errors["gpu_seconds"]})
        )
        p95 = errors.get("p95_latency_s_per_deployment", {})
        gpu = errors["gpu_seconds_per_deployment"]
        for name in sorted(set(p95) | set(gpu)):
            out.append((run, name, {"p95": p95.get(name), "gpu": gpu.get(name)}))
    return out


def seed_fidelity_table(done: dict[str, Any], simulated_of: dict[str, str]) -> list[str]:
    """One seed: per run and deployment, the live and simulated p95 and GPU-seconds and the
    relative errors."""
    rows = [
        "Fidelity, simulated minus measured relative to measured (a deployment's p95: the"
        " call-weighted mean of its per-second p95 at the deployment, queue wait + hold):",
        "",
        "| run | deployment | p95 s live | p95 s sim | p95 error | GPU-s live | GPU-s sim"
        " | GPU-s error |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run, name, errors in rows_of(done):
        live = done["runs"][run]
        sim = done["simulated"][simulated_of[run]]
        if name == "whole run":
            figures = (live["p95_latency_s"], sim["p95_latency_s"])
            gpus = (live["gpu_seconds"], sim["gpu_seconds"])
        else:
            figures = (
                live.get("p95_latency_s_per_deployment", {}).get(name),
                sim.get("p95_latency_s_per_deployment", {}).get(name),
            )
            gpus = (
                live["gpu_seconds_per_deployment"].get(name),
                sim["gpu_seconds_per_deployment"].get(name),
            )
        gpu_cells = [f"{g:.0f}" if g else "-" for g in gpus]
        rows.append(
            f"| {run} | {name} | {_s(figures[0])} | {_s(figures[1])} | {_rel(errors['p95'])}"
            f" | {gpu_cells[0]} | {gpu_cells[1]} | {_rel(errors['gpu'])} |"
        )
    return rows


def slice_fidelity_table(per_slice: dict[str, Any]) -> list[str]:
    """Per run and deployment over the seeds: the mean relative error and the worst seed's,
    and whether every seed is within the target."""
    errors: dict[tuple[str, str], dict[str, list[float]]] = {}
    for done in per_slice["seeds"].values():
        for run, name, figures in rows_of(done):
            slot = errors.setdefault((run, name), {"p95": [], "gpu": []})
            for key, value in figures.items():
                if value is not None:
                    slot[key].append(value)
    rows = [
        f"Fidelity over the seeds: mean and worst relative error (target within"
        f" {100 * TARGET:.0f}% on p95 and GPU-seconds, per run and per deployment):",
        "",
        "| run | deployment | p95 mean | p95 worst | GPU-s mean | GPU-s worst | within target |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for (run, name), got in errors.items():
        cells = []
        for key in ("p95", "gpu"):
            values = got[key]
            if values:
                cells += [_rel(sum(values) / len(values)), _rel(max(values, key=abs))]
            else:
                cells += ["-", "-"]
        every = got["p95"] + got["gpu"]
        within = "-" if not every else ("yes" if max(abs(v) for v in every) <= TARGET else "no")
        rows.append(f"| {run} | {name} | {' | '.join(cells)} | {within} |")
    return rows
