"""One cell's backtest, and `results.csv`: one row per cell, appended as cells finish.

`run_cell` is a plain function of a `Cell` (no Ray, no pool), so the local process pool and Ray
workers run exactly the same code. A cell that fails is a row too, with the failure in `error`
and its figures empty; it does not stop the sweep.

Every cell is a backtest of one policy: its figures are those the same policy gets in a
backtest of several policies on the same trace (the same initial counts, seeds and scoring
window: `elastiscale.backtest`'s fair-comparison rules do not depend on which policies share
the run).
"""

from __future__ import annotations

import csv
import functools
import io
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from elastiscale.sweep.spec import Cell

#: The columns of results.csv, in order.
COLUMNS = (
    "trace",
    "pipeline",
    "policy",
    "params",
    "seed",
    "slo_attainment",
    "ceiling_attainment",
    "gpu_hours",
    "p95_s",
    "elapsed_s",
    "error",
)
KEY_COLUMNS = COLUMNS[:5]


@functools.lru_cache(maxsize=8)
def _trace(path: str) -> Any:
    """Traces are read once per worker process (a 31-day trace takes a second to parse)."""
    from elastiscale.trace import load_trace

    return load_trace(path)


def run_cell(cell: Cell) -> dict[str, str]:
    """Backtest one cell; its results.csv row (figures as text, the failure in `error`)."""
    from elastiscale.backtest.api import backtest

    began = time.perf_counter()
    row = dict(zip(KEY_COLUMNS, cell.key, strict=True))
    try:
        report = backtest(
            cell.pipeline,
            _trace(cell.trace.path),
            [{"name": cell.policy, "params": cell.params}],
            fidelity=cell.fidelity,  # type: ignore[arg-type]
            time_scale=cell.trace.time_scale,
            rate_scale=cell.trace.rate_scale,
            start_s=cell.trace.start_s,
            end_s=cell.trace.end_s,
            warmup_s=cell.trace.warmup_s,
            interval_s=cell.interval_s,
            seed=cell.seed,
        )
        (run,) = report.runs.values()
        score = run.score
        row.update(
            slo_attainment=_number(score.slo_attainment),
            ceiling_attainment=_number(report.to_dict().get("ceiling_attainment")),
            gpu_hours=_number(score.gpu_hours),
            p95_s=_number(score.p95_latency_s),
            error="",
        )
    except Exception as exc:  # one failed cell is reported in its row, not fatal
        row.update(
            dict.fromkeys(("slo_attainment", "ceiling_attainment", "gpu_hours", "p95_s"), "")
        )
        row["error"] = " ".join(f"{type(exc).__name__}: {exc}".split())
    row["elapsed_s"] = f"{time.perf_counter() - began:.3f}"
    return {c: row[c] for c in COLUMNS}


def _number(value: Any) -> str:
    """A figure as results.csv writes it: repr of the float (round trips exactly); empty when
    the report has none (no request scored, or a field this version does not compute)."""
    if value is None:
        return ""
    number = float(value)
    return repr(number) if math.isfinite(number) else ""


def key_of(row: dict[str, str]) -> tuple[str, ...]:
    return tuple(row[c] for c in KEY_COLUMNS)


def read_rows(path: Path) -> list[dict[str, str]]:
    """The complete rows of a results.csv (a line cut short by a kill is left out)."""
    if not path.exists():
        return []
    text = path.read_text()
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        if None in row or any(row.get(c) is None for c in COLUMNS):
            continue
        rows.append({c: row[c] for c in COLUMNS})
    return rows


def _line(values: Iterable[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(list(values))
    return out.getvalue()


class ResultsFile:
    """results.csv opened for appending: each finished cell is one whole line, flushed, so a
    killed sweep loses at most the cells that were running."""

    def __init__(self, path: Path) -> None:
        self.path = path
        done = read_rows(path)
        # Rewrite what survived (drops a torn last line; keeps the header first).
        self.path.write_text(_line(COLUMNS) + "".join(_line(r.values()) for r in done))
        self.rows = done
        self._file = path.open("a")

    def append(self, row: dict[str, str]) -> None:
        self._file.write(_line(row[c] for c in COLUMNS))
        self._file.flush()
        self.rows.append(row)

    def close(self, order: list[tuple[str, ...]]) -> None:
        """Close, rewriting the rows in cell order (rows of cells no longer in the sweep file
        go last, in the order they were written)."""
        self._file.close()
        rank = {key: i for i, key in enumerate(order)}
        rows = sorted(self.rows, key=lambda r: rank.get(key_of(r), len(rank)))
        self.path.write_text(_line(COLUMNS) + "".join(_line(r.values()) for r in rows))
