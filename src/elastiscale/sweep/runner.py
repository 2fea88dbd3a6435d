"""`run_sweep`: every cell of a sweep not yet in `DIR/results.csv`, then the frontiers.

Cells run in a local process pool (`workers` processes, default the core count; 1 runs them in
this process) or on Ray (`ray_address`). A progress bar counts cells. Resuming is running the
same command again: cells whose row is already in results.csv (finished or failed) are skipped;
delete a row to run its cell again.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from elastiscale.sweep.results import ResultsFile, key_of, run_cell
from elastiscale.sweep.spec import Cell, SweepSpec, cells


@dataclass(frozen=True)
class SweepOutcome:
    """What one invocation did: cells run now, cells skipped (already done), failed rows."""

    ran: int
    skipped: int
    failed: int
    written: list[Path]


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_sweep(
    spec: SweepSpec,
    out_dir: str | Path,
    *,
    workers: int | None = None,
    ray_address: str | None = None,
    progress: bool | None = None,
) -> SweepOutcome:
    """Run the cells of `spec` missing from `out_dir/results.csv`; write the frontier PNGs and
    summary.md from all rows. `progress` None shows the bar when stderr is a terminal."""
    from elastiscale.sweep.frontier import write_frontiers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = ResultsFile(out / "results.csv")
    todo_all = cells(spec)
    done = {key_of(r) for r in results.rows}
    todo = [c for c in todo_all if c.key not in done]
    skipped = len(todo_all) - len(todo)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=len(todo_all), initial=skipped, desc="sweep", unit="cell", disable=not show)
    failed = 0
    try:
        for row in _rows(todo, workers, ray_address):
            results.append(row)
            failed += bool(row["error"])
            bar.update(1)
    finally:
        bar.close()
        results.close([c.key for c in todo_all])
    written = [out / "results.csv", *write_frontiers(results.rows, spec, out)]
    return SweepOutcome(ran=len(todo), skipped=skipped, failed=failed, written=written)


def _rows(
    todo: Sequence[Cell], workers: int | None, ray_address: str | None
) -> Iterator[dict[str, str]]:
    if not todo:
        return
    if ray_address is not None:
        from elastiscale.sweep.ray_pool import run_on_ray

        yield from run_on_ray(todo, ray_address, workers)
        return
    count = workers if workers is not None else default_workers()
    if count <= 1:
        for cell in todo:
            yield run_cell(cell)
        return
    with ProcessPoolExecutor(max_workers=min(count, len(todo))) as pool:
        futures = [pool.submit(run_cell, cell) for cell in todo]
        for future in as_completed(futures):
            yield future.result()
