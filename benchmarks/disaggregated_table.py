"""The per-part table of the prefill/decode backtests in docs/results.md, from their report.json.

    elastiscale backtest examples/pipelines/disaggregated.yaml \\
        --trace ../shared/traces/azure_llm_2023_conv_1s.csv --rate-scale 4 --out out/disagg-azure
    .venv/bin/python benchmarks/disaggregated_table.py out/disagg-azure/report.json

One row per policy of that one run: end-to-end attainment; per part (prefill: TTFT, decode:
ITL) its GPU-hours, p95, attainment of its objective and the avoidable misses against the
ceiling's attainment of the same objective (every component at its max replicas, ready from
the start); then the total GPU-hours. A part's objective is whichever `slo:` it names.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _parts(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(component, objective key) of every TTFT/ITL objective, in report order."""
    ceilings = report.get("ceiling_by_objective") or {}
    return [tuple(k.split(".", 1)) for k in ceilings if k != "end_to_end"]  # type: ignore[misc]


def table(report: dict[str, Any]) -> str:
    """The Markdown table of one report.json (see the module docstring)."""
    parts = _parts(report)
    ceilings = report["ceiling_by_objective"]
    head = ["policy", "end-to-end SLO"]
    for comp, key in parts:
        label = "TTFT" if key.startswith("ttft") else "ITL"
        target = report["pipeline"]["components"][comp].get("slo", {}).get(key)
        within = f"within {target:g} s" if target is not None else "attainment"
        head += [f"{comp} GPU-h", f"p95 {label} s", f"{label} {within}", f"{label} avoidable"]
    head.append("GPU-hours")
    rows = [head, ["---"] + ["---:"] * (len(head) - 1)]
    for name, entry in report["policies"].items():
        row = [name, _pct(entry["slo_attainment"])]
        avoidable = entry.get("avoidable_misses_by_objective") or {}
        for comp, key in parts:
            part = entry["per_component"][comp]
            p95 = part.get("p95_ttft_s" if key.startswith("ttft") else "p95_itl_s")
            digits = 2 if key.startswith("ttft") else 4
            row += [
                f"{part['gpu_hours']:.1f}",
                "n/a" if p95 is None else f"{p95:.{digits}f}",
                _pct(entry["attainment_by_objective"].get(f"{comp}.{key}")),
                _pct(avoidable.get(f"{comp}.{key}")),
            ]
        row.append(f"{entry['gpu_hours']:.1f}")
        rows.append(row)
    lines = ["| " + " | ".join(r) + " |" for r in rows]
    ceiling = ", ".join(f"{k} {_pct(v)}" for k, v in ceilings.items())
    return "\n".join([*lines, "", f"Ceiling per objective: {ceiling}."])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="report.json of a backtest")
    args = parser.parse_args()
    for path in args.reports:
        report = json.loads(path.read_text())
        if "ceiling_by_objective" not in report:
            raise SystemExit(f"{path}: no ceiling_by_objective (run without --no-ceiling)")
        print(f"{report['trace']['name']}:\n\n{table(report)}\n")


if __name__ == "__main__":
    main()
