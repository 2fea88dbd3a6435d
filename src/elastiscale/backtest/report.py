"""`BacktestReport`: the outcome of one backtest, as `report.json`, `report.md` and plots.

`to_dict()` is exactly what `report.json` holds:

    {
      "pipeline": {"name", "slo_latency_s", "ingress", "components"} (a component with TTFT/ITL
                   objectives also carries its `slo`),
      "trace": {"name", "bin_s", "start_s", "end_s", "duration_s", "requests",
                "time_scale", "rate_scale"},
      "elapsed_s": wall time of the whole backtest, seconds,
      "warmup_s": the simulated but unscored start, seconds,
      "settings": {"fidelity", "interval_s", "metrics_delay_s", "rate_window_s", "seed",
                   "initial_replicas", "scored_from_s", "scored_to_s"},
      "ceiling_attainment": attainment with every component at its max replicas, ready from
                            the start (`backtest.ceiling`); null when not computed,
      "policies": {name: {"slo_attainment", "avoidable_misses", "p50_latency_s",
                          "p95_latency_s", "p99_latency_s", "gpu_hours", "cost",
                          "dropped_requests", "scaling_actions", "scored_requests",
                          "elapsed_s", "interval_s", "per_component": {component: {...}}}}
    }

`avoidable_misses` is `ceiling_attainment - slo_attainment`: the share of requests late under
the policy that the ceiling serves in time (null without a ceiling). When a component names a
TTFT or ITL objective, each policy also has `attainment_by_objective` (end_to_end,
`<component>.ttft_p95_s`, `<component>.itl_p95_s`), the report `ceiling_by_objective` and each
policy `avoidable_misses_by_objective`, the same subtraction per SLO.

Missing values (no request scored, a component that never had capacity) are `null`, never 0.
The simulation results themselves stay in memory (`results`) for plots and further analysis.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elastiscale.backtest.ceiling import avoidable_misses
from elastiscale.backtest.model import Array, SimulationResult
from elastiscale.backtest.scoring import PolicyScore
from elastiscale.extras import require

#: Columns of the comparison table: (heading, report.json key, format).
TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("SLO attainment", "slo_attainment", "{:.2%}"),
    ("avoidable misses", "avoidable_misses", "{:.2%}"),
    ("p50 s", "p50_latency_s", "{:.2f}"),
    ("p95 s", "p95_latency_s", "{:.2f}"),
    ("p99 s", "p99_latency_s", "{:.2f}"),
    ("GPU-hours", "gpu_hours", "{:.1f}"),
    ("cost $", "cost", "{:.2f}"),
    ("dropped", "dropped_requests", "{:.0f}"),
    ("scaling actions", "scaling_actions", "{:d}"),
)


@dataclass
class PolicyRun:
    """One policy's run: its score, its simulation, and how long it took."""

    name: str
    score: PolicyScore
    result: SimulationResult
    elapsed_s: float
    interval_s: float | None = None  # the control interval this policy was ticked at


@dataclass
class BacktestReport:
    """What one backtest found; `policies` keeps the order in which they ran."""

    pipeline: dict[str, Any]
    trace: dict[str, Any]
    settings: dict[str, Any]
    warmup_s: float
    elapsed_s: float
    runs: dict[str, PolicyRun] = field(default_factory=dict)
    #: Demand of each component as (t_s, work per second) through the configured fan-outs: the
    #: same for every policy, drawn in the plots; not part of report.json.
    demand: dict[str, tuple[Array, Array]] = field(default_factory=dict, repr=False)
    #: Attainment with every component at its max replicas, ready from the start.
    ceiling_attainment: float | None = None
    #: The same per SLO (`PolicyScore.attainment_by_objective`) when a component names TTFT/ITL.
    ceiling_by_objective: dict[str, float | None] | None = None

    @property
    def policies(self) -> dict[str, PolicyScore]:
        return {name: run.score for name, run in self.runs.items()}

    @property
    def results(self) -> dict[str, SimulationResult]:
        return {name: run.result for name, run in self.runs.items()}

    def to_dict(self) -> dict[str, Any]:
        """The content of `report.json` (JSON types only; missing values are None)."""
        policies: dict[str, Any] = {}
        for name, run in self.runs.items():
            entry = self._entry(run)
            entry["elapsed_s"] = run.elapsed_s
            entry["interval_s"] = run.interval_s
            policies[name] = entry
        out = {
            "pipeline": self.pipeline,
            "trace": self.trace,
            "elapsed_s": self.elapsed_s,
            "warmup_s": self.warmup_s,
            "settings": self.settings,
            "ceiling_attainment": self.ceiling_attainment,
            "policies": policies,
        }
        if self.ceiling_by_objective is not None:
            out["ceiling_by_objective"] = self.ceiling_by_objective
        cleaned: dict[str, Any] = _json_safe(out)
        return cleaned

    def _entry(self, run: PolicyRun) -> dict[str, Any]:
        """One policy's score with its avoidable misses, as report.json and the table show."""
        entry = run.score.to_dict()
        entry["avoidable_misses"] = avoidable_misses(
            self.ceiling_attainment, run.score.slo_attainment
        )
        ceilings = self.ceiling_by_objective
        if ceilings is not None:
            by_objective = run.score.attainment_by_objective()
            entry["avoidable_misses_by_objective"] = {
                key: avoidable_misses(ceilings.get(key), value)
                for key, value in by_objective.items()
            }
        return entry

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def table(self) -> str:
        """The comparison table, one row per policy, as Markdown (readable as plain text)."""
        head = ["policy", *(c[0] for c in TABLE_COLUMNS)]
        rows = [head, ["---"] + ["---:"] * len(TABLE_COLUMNS)]
        for name, run in self.runs.items():
            values = self._entry(run)
            rows.append([name, *(_cell(values[key], fmt) for _, key, fmt in TABLE_COLUMNS)])
        widths = [max(len(r[i]) for r in rows if r[i].strip("-:")) for i in range(len(head))]
        lines = []
        for row in rows:
            cells = []
            for i, cell in enumerate(row):
                if set(cell) <= {"-", ":"}:
                    cells.append(cell[0] + "-" * (widths[i] - 2) + cell[-1])
                elif i == 0:
                    cells.append(cell.ljust(widths[i]))
                else:
                    cells.append(cell.rjust(widths[i]))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def summary(self) -> str:
        """One paragraph saying what was replayed into what, and how it was scored."""
        t, s = self.trace, self.settings
        slo = f"end-to-end SLO {self.pipeline['slo_latency_s']:g} s"
        members = self.pipeline.get("members")
        if members:  # a fleet unit: each pipeline's requests against its own SLO
            slo = "end-to-end SLOs " + ", ".join(
                f"{name} {m['slo_latency_s']:g} s" for name, m in members.items()
            )
        return (
            f"Pipeline `{self.pipeline['name']}` ({slo}) on `{t['name']}`: {t['duration_s']:g} s"
            f" of trace, {t['requests']:.0f} requests"
            f" (time scale {t['time_scale']:g}, rate scale {t['rate_scale']:g}); {s['fidelity']}"
            f" simulation, control interval {s['interval_s']:g} s{self._own_intervals()},"
            f" metrics delay"
            f" {s['metrics_delay_s']:g} s, warm-up {self.warmup_s:g} s (simulated, not scored)."
        )

    def ceiling_line(self) -> str:
        """One line saying where the ceiling is and what "avoidable misses" means."""
        if self.ceiling_attainment is None:
            return "Ceiling attainment: not computed (avoidable misses: n/a)."
        return (
            f"Ceiling attainment: {self.ceiling_attainment:.2%} (every component at its max"
            " replicas, ready from the start); avoidable misses = ceiling - SLO attainment."
        )

    def _own_intervals(self) -> str:
        own = [
            f"{name} {run.interval_s:g} s"
            for name, run in self.runs.items()
            if run.interval_s is not None and run.interval_s != self.settings["interval_s"]
        ]
        return f" ({', '.join(own)})" if own else ""

    def markdown(self, plot_files: list[str] | None = None) -> str:
        """The whole `report.md`: summary, comparison table, per-component details, plots."""
        parts = [
            f"# Backtest: {self.pipeline['name']}",
            "",
            self.summary(),
            "",
            self.ceiling_line(),
            "",
            self.table(),
            "",
            "## Per component",
            "",
            self._component_table(),
        ]
        pipelines = self._pipeline_table()
        if pipelines:
            parts += ["", "## Per pipeline", "", pipelines]
        tokens = self._token_table()
        if tokens:
            parts += ["", "## Time to first token and inter-token latency", "", tokens]
        if plot_files:
            parts += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plot_files]
        parts += ["", f"Backtest wall time: {self.elapsed_s:.1f} s.", ""]
        return "\n".join(parts)

    def _pipeline_table(self) -> str:
        """A fleet unit's pipelines: each one's attainment against its own SLO ("" else)."""
        lines = [
            "| policy | pipeline | SLO s | SLO attainment | scored requests | dropped |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for name, run in self.runs.items():
            for pipeline, p in run.score.per_pipeline.items():
                lines.append(
                    f"| {name} | {pipeline} | {p.latency_slo_s:g} | "
                    f"{_cell(p.slo_attainment, '{:.2%}')} | {p.scored_requests:.0f} | "
                    f"{p.dropped_requests:.0f} |"
                )
        return "\n".join(lines) if len(lines) > 2 else ""

    def _component_table(self) -> str:
        lines = [
            "| policy | component | replica-hours | GPU-hours | cost $ | mean ready | peak |"
            " mean utilization | dropped | scaling actions |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, run in self.runs.items():
            for comp, c in run.score.per_component.items():
                lines.append(
                    f"| {name} | {comp} | {c.replica_hours:.1f} | {c.gpu_hours:.1f} |"
                    f" {c.cost:.2f} | {c.mean_ready_replicas:.1f} | {c.peak_replicas} |"
                    f" {_cell(c.mean_utilization, '{:.0%}')} | {c.dropped_requests:.0f} |"
                    f" {c.scaling_actions} |"
                )
        return "\n".join(lines)

    def _token_table(self) -> str:
        """p95 TTFT / ITL and their attainment, for the components whose `slo` names them."""
        lines = []
        for name, run in self.runs.items():
            for comp, c in run.score.per_component.items():
                if c.ttft_slo_attainment is None and c.itl_slo_attainment is None:
                    continue
                lines.append(
                    f"| {name} | {comp} | {_cell(c.p95_ttft_s, '{:.3f}')} |"
                    f" {_cell(c.ttft_slo_attainment, '{:.2%}')} | {_cell(c.p95_itl_s, '{:.4f}')} |"
                    f" {_cell(c.itl_slo_attainment, '{:.2%}')} |"
                )
        if not lines:
            return ""
        head = [
            "| policy | component | p95 TTFT s | TTFT SLO attainment | p95 ITL s |"
            " ITL SLO attainment |",
            "|---|---|---:|---:|---:|---:|",
        ]
        if self.ceiling_by_objective is not None:
            ceilings = ", ".join(
                f"{key} {_cell(value, '{:.2%}')}"
                for key, value in self.ceiling_by_objective.items()
            )
            lines.append(f"\nCeiling per SLO (every component at its max replicas): {ceilings}.")
        return "\n".join(head + lines)

    def write(self, out_dir: str | Path, *, plots: bool = True) -> list[Path]:
        """Write `report.json`, `report.md` and (unless `plots` is False) the PNG plots into
        `out_dir` (created if needed); return the paths written."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        if plots:
            require("matplotlib", "plots", "backtest plots (or write with plots=False)")
            from elastiscale.backtest.plots import write_plots

            written += write_plots(self, out)
        json_path = out / "report.json"
        json_path.write_text(self.to_json(), encoding="utf-8")
        md_path = out / "report.md"
        md_path.write_text(self.markdown([p.name for p in written]), encoding="utf-8")
        return [json_path, md_path, *written]


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a"
    if fmt == "{:d}":
        return fmt.format(int(value))
    return fmt.format(value)


def _json_safe(value: Any) -> Any:
    """Plain JSON types: numpy numbers to Python ones, non-finite floats to None."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None
    return str(value)
