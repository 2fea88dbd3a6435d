"""A custom policy, loaded from a pipeline file by its import path.

examples/pipelines/custom.yaml names it `custom_policy:HalfCapacityPolicy`; with this directory
on the import path, `elastiscale validate`, `elastiscale run` and `elastiscale backtest` find it:

    PYTHONPATH=examples elastiscale backtest examples/pipelines/custom.yaml \\
        --trace examples/traces/azure_llm_2023_conv_1s.csv --rate-scale 4

Run as a script, it backtests that file through the Python API against the HPA and the oracle.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import elastiscale
from elastiscale import PerComponentPolicy, Proposal, TickContext


class HalfCapacityPolicy(PerComponentPolicy):
    """Keep every component at 50% of its capacity for the demand it sees now."""

    name = "half-capacity"

    def __init__(self, config: Any, params: Any) -> None:  # registry factories get both
        self.utilization = 0.5

    def propose_component(self, ctx: TickContext, component: str) -> Proposal:
        load = ctx.load(component)  # requests/s or tokens/s; None when the metric is missing
        if load is None:
            return Proposal.none(self.name, "no demand data")
        capacity = ctx.pipeline.components[component].capacity_per_replica
        return Proposal(self.name, math.ceil(load / (capacity * self.utilization)), "50% busy")


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    report = elastiscale.backtest(
        here / "pipelines" / "custom.yaml",
        here / "traces" / "azure_llm_2023_conv_1s.csv",
        policies=["custom_policy:HalfCapacityPolicy", "hpa", "oracle"],
        rate_scale=4,
        end_s=1200,
    )
    print(report.table())
