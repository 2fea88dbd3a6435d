"""Running cells on Ray: a local Ray (`--ray auto`) or a cluster (`--ray ADDRESS`).

Ray is the optional `ray` extra and is imported only here, only when `--ray` is given. Each cell
is one task running `results.run_cell`; the driver writes rows as tasks finish. On a cluster,
the trace and pipeline paths of the sweep file must exist on every node (a shared file system),
and elastiscale must be installed there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from elastiscale.extras import require
from elastiscale.sweep.results import run_cell
from elastiscale.sweep.spec import Cell


def run_on_ray(
    cells: Sequence[Cell], address: str, workers: int | None
) -> Iterator[dict[str, str]]:
    """Rows of `cells` as their tasks finish. `address` "auto" starts a local Ray with
    `workers` CPUs (default: the machine's); otherwise it is the cluster to join."""
    ray: Any = require("ray", "ray", "elastiscale sweep --ray")
    started = not ray.is_initialized()
    if started:
        options: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
        if address == "auto":
            options["num_cpus"] = workers
        else:
            options["address"] = address
        ray.init(**options)
    task: Any = ray.remote(num_cpus=1, max_retries=0)(run_cell)
    try:
        pending = [task.remote(cell) for cell in cells]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                yield ray.get(ref)
    finally:
        if started:
            ray.shutdown()
