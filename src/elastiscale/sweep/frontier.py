"""Trade-off frontiers of a sweep: `frontier_<trace>_<pipeline>.png` and `summary.md`.

A policy's points on one trace and pipeline are its cells (SLO attainment against GPU-hours,
averaged over seeds for each knob value). Its Pareto points are those no other point of the
same policy beats on both (more attainment for no more GPU-hours). Between two Pareto points the
frontier is the straight line (a knob between two swept values lands near it); beyond the last
one it stays level.

- Policy A's frontier *dominates* B's when at the GPU-hours of each of B's Pareto points, A's
  frontier reaches at least B's attainment (A never needs more GPU-hours for the same
  attainment). Below A's cheapest point A has no figure, so a B point cheaper than all of A's
  is not dominated.
- The GPU-hours a policy needs to reach the attainment target: where its frontier first
  crosses the target, interpolated between the two Pareto points around it; "not reached"
  when no point reaches it.

The target is the sweep file's `attainment_target`, else the pipeline's `slo.attainment_target`
(0.99 unless the pipeline file sets it).
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from elastiscale.extras import require
from elastiscale.sweep.spec import DEFAULT_ATTAINMENT_TARGET, SweepSpec

Point = tuple[float, float]  # (gpu_hours, slo_attainment)
_TOLERANCE = 1e-9


def policy_points(rows: Sequence[dict[str, str]]) -> dict[tuple[str, str], dict[str, list[Point]]]:
    """(trace, pipeline) -> policy -> its points, one per knob value (mean over seeds), in
    the order the rows give; failed cells and cells without an attainment are left out."""
    sums: dict[tuple[str, str, str, str], list[float]] = {}
    for row in rows:
        if row["error"] or not row["slo_attainment"] or not row["gpu_hours"]:
            continue
        key = (row["trace"], row["pipeline"], row["policy"], row["params"])
        acc = sums.setdefault(key, [0.0, 0.0, 0.0])
        acc[0] += float(row["gpu_hours"])
        acc[1] += float(row["slo_attainment"])
        acc[2] += 1.0
    out: dict[tuple[str, str], dict[str, list[Point]]] = defaultdict(dict)
    for (trace, pipeline, policy, _), (gpu, att, n) in sums.items():
        out[(trace, pipeline)].setdefault(policy, []).append((gpu / n, att / n))
    return dict(out)


def pareto(points: Sequence[Point]) -> list[Point]:
    """The points not beaten on both axes, cheapest first (attainment rising)."""
    best: list[Point] = []
    for gpu, att in sorted(points, key=lambda p: (p[0], -p[1])):
        if not best or att > best[-1][1] + _TOLERANCE:
            best.append((gpu, att))
    return best


def attainment_at(front: Sequence[Point], gpu_hours: float) -> float | None:
    """The frontier's attainment at `gpu_hours` (None below its cheapest point)."""
    if not front or gpu_hours < front[0][0] - _TOLERANCE:
        return None
    for (g0, a0), (g1, a1) in itertools.pairwise(front):
        if gpu_hours <= g1:
            return a0 + (a1 - a0) * (gpu_hours - g0) / (g1 - g0) if g1 > g0 else a1
    return front[-1][1]


def gpu_hours_to_reach(front: Sequence[Point], target: float) -> float | None:
    """GPU-hours where the frontier first reaches `target` (None if it never does)."""
    if not front or front[-1][1] < target - _TOLERANCE:
        return None
    if front[0][1] >= target - _TOLERANCE:
        return front[0][0]
    for (g0, a0), (g1, a1) in itertools.pairwise(front):
        if a1 >= target - _TOLERANCE:
            return g0 + (g1 - g0) * (target - a0) / (a1 - a0)
    return None  # pragma: no cover - the last point reaches the target


def dominates(a: Sequence[Point], b: Sequence[Point]) -> tuple[bool, Point | None]:
    """Whether frontier `a` dominates frontier `b`, and else one point of `b` above `a`."""
    for gpu, att in b:
        reached = attainment_at(a, gpu)
        if reached is None or reached < att - _TOLERANCE:
            return False, (gpu, att)
    return True, None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def target_for(spec: SweepSpec, pipeline_path: str | None) -> float:
    if spec.attainment_target is not None:
        return spec.attainment_target
    if pipeline_path is not None:
        from elastiscale.config import load_config

        slo = load_config(pipeline_path).pipeline.slo
        own = getattr(slo, "attainment_target", None)
        if own is not None:
            return float(own)
    return DEFAULT_ATTAINMENT_TARGET


def write_frontiers(rows: Sequence[dict[str, str]], spec: SweepSpec, out: Path) -> list[Path]:
    """The PNG of every (trace, pipeline) with points, and summary.md."""
    grouped = policy_points(rows)
    paths = {Path(p).stem: p for p in spec.pipelines}
    written = []
    sections = []
    for (trace, pipeline), policies in sorted(grouped.items()):
        target = target_for(spec, paths.get(pipeline))
        png = out / f"frontier_{_slug(trace)}_{_slug(pipeline)}.png"
        _plot(png, trace, pipeline, policies, target)
        written.append(png)
        sections.append(_section(trace, pipeline, policies, target, png.name))
    failed = [r for r in rows if r["error"]]
    summary = out / "summary.md"
    head = [
        "# Sweep summary",
        "",
        f"{len(rows)} cells in results.csv, {len(failed)} failed. SLO attainment against "
        "GPU-hours per policy; a policy's frontier joins its Pareto points.",
        "",
    ]
    if failed:
        head += ["Failed cells:", ""]
        head += [f"- {r['trace']} / {r['pipeline']} / {r['policy']} {r['params']} seed "
                 f"{r['seed']}: {r['error']}" for r in failed]  # fmt: skip
        head.append("")
    summary.write_text("\n".join(head + sections))
    written.append(summary)
    return written


def _section(
    trace: str, pipeline: str, policies: dict[str, list[Point]], target: float, png: str
) -> str:
    fronts = {name: pareto(points) for name, points in policies.items()}
    lines = [f"## {trace} x {pipeline}", "", f"![frontier]({png})", ""]
    ours = fronts.get("elastiscale")
    if ours is None:
        lines += ["No elastiscale cell: no dominance to judge.", ""]
    else:
        lines += ["Does elastiscale's frontier dominate?", ""]
        for name, front in fronts.items():
            if name == "elastiscale":
                continue
            ok, where = dominates(ours, front)
            if ok:
                lines.append(f"- {name}: yes")
            else:
                assert where is not None
                there = (
                    "above elastiscale's frontier there"
                    if attainment_at(ours, where[0]) is not None
                    else "cheaper than any elastiscale cell"
                )
                lines.append(
                    f"- {name}: no ({name} reaches {where[1]:.2%} at {where[0]:.6g} GPU-hours, "
                    f"{there})"
                )
        lines.append("")
    lines += [
        f"GPU-hours to reach {target:.2%} SLO attainment (interpolated on each frontier):",
        "",
        "| policy | GPU-hours | Pareto points (GPU-hours, attainment) |",
        "| --- | ---: | --- |",
    ]
    for name, front in fronts.items():
        need = gpu_hours_to_reach(front, target)
        cell = "not reached" if need is None else f"{need:.6g}"
        shown = ", ".join(f"({g:.6g}, {a:.2%})" for g, a in front)
        lines.append(f"| {name} | {cell} | {shown} |")
    lines.append("")
    return "\n".join(lines)


def _plot(
    path: Path, trace: str, pipeline: str, policies: dict[str, list[Point]], target: float
) -> None:
    matplotlib = require("matplotlib", "plots", "sweep frontier plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, points in policies.items():
        front = pareto(points)
        line = ax.plot([g for g, _ in front], [a for _, a in front], label=name, linewidth=1.5)
        colour = line[0].get_color()
        ax.scatter([g for g, _ in points], [a for _, a in points], color=colour, s=14,
                   alpha=0.5)  # fmt: skip
        ax.scatter([g for g, _ in front], [a for _, a in front], color=colour, s=40,
                   edgecolors="black", linewidths=0.6, zorder=3)  # fmt: skip
    ax.axhline(target, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("GPU-hours")
    ax.set_ylabel("SLO attainment")
    ax.set_title(f"{trace} x {pipeline}: attainment vs GPU-hours (Pareto points outlined)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
