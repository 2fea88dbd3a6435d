"""`static-budget`: the prior static deployment at equal cost, and the static split search it
shares with `elastiscale capacity`.

static-budget
    Fixed replicas per component, all the time, spending at most the GPU-hours that another
    policy of the same backtest spent (`match`, default `elastiscale`): the comparison "what
    would the same money buy as a static deployment". It is the seed study's "prior static
    deployment" at equal cost, where `static-peak` is the one sized for the peak whatever it
    costs. The budget is counted in GPU-hours; a pipeline without GPU components counts cost
    instead. Components that the budget does not count (CPU ones, which spend no GPU-hours) keep
    `static-peak`'s counts.

    The budget, B GPU-hours over the scored T hours, allows B / T GPUs on average, so the
    replicas n_c (for components with g_c GPUs each) must satisfy sum n_c x g_c <= B / T. Of the
    splits that fit, the one with the highest attainment is wanted (ties: the lower p95). Which
    one that is depends on where the requests wait, so candidates are evaluated with the
    simulator itself, under the backtest's conditions (`RunContext.evaluate`):

    1. two starts: `static-peak`'s counts and the counts the trace's mean demand needs at the
       target utilization, each scaled down (or up) by the largest common factor that fits,
       then filled one replica at a time with what is left (the component furthest below its
       share first); the better one is kept;
    2. moves: take `step` replicas from one component and give another as many as then fit
       (`step` starts at a quarter of the largest count and halves when no move improves);
       every improving move is kept, until `step` 1 improves nothing or `max_evaluations`
       simulations have run.

    Worked numbers (the agent pipeline, planner 1 GPU, writer 2 GPUs): `elastiscale` spending
    79.5 GPU-hours over an hour allows 79.5 GPUs; static-peak's 33 planners and 41 writers
    (115 GPUs) scale by 0.69 to 22 and 28 (78 GPUs), plus one planner (79 GPUs).

    A search on a 1-hour trace with two GPU components takes 10 to 25 simulations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from elastiscale.backtest.baselines import (
    StaticPeakPolicy,
    component_demand,
    replicas_at_utilization,
)
from elastiscale.backtest.scoring import PolicyScore
from elastiscale.config import Config
from elastiscale.controllers.base import TickContext
from elastiscale.decision import Proposal
from elastiscale.errors import RegistryError
from elastiscale.trace import Trace

if TYPE_CHECKING:
    from elastiscale.backtest.context import RunContext

Counts = dict[str, int]


class FixedPolicy:
    """Proposes the same counts at every tick (a static deployment)."""

    def __init__(self, name: str, counts: Mapping[str, int], reason: str) -> None:
        self.name = name
        self.counts = dict(counts)
        self._reason = reason

    def propose(self, ctx: TickContext) -> dict[str, Proposal]:
        return {
            name: Proposal(policy=self.name, replicas=count, reason=self._reason)
            for name, count in self.counts.items()
        }


def budget_weights(config: Config) -> tuple[dict[str, float], str]:
    """What one replica of each component spends per hour, and in what: GPUs when any
    component has GPUs, else cost per hour."""
    comps = config.pipeline.components
    if any(c.gpus_per_replica > 0 for c in comps.values()):
        return {n: c.gpus_per_replica for n, c in comps.items()}, "gpu_hours"
    return {n: c.cost_per_hour for n, c in comps.items()}, "cost"


def objective(got: PolicyScore) -> tuple[float, float]:
    """Higher is better: attainment first, then the lower p95."""
    attainment = -1.0 if got.slo_attainment is None else got.slo_attainment
    p95 = math.inf if got.p95_latency_s is None else got.p95_latency_s
    return attainment, -p95


def _spend(counts: Mapping[str, int], weight: Mapping[str, float]) -> float:
    return sum(counts[n] * weight[n] for n in counts)


def _fit(
    shares: Mapping[str, float],
    budget: float,
    weight: Mapping[str, float],
    bounds: Mapping[str, tuple[int, int]],
    fixed: Mapping[str, int],
) -> Counts:
    """Scale `shares` (replicas per weighted component) by the largest factor that fits the
    budget after rounding down, then fill what is left one replica at a time, the component
    furthest below its share first."""
    names = [n for n in shares if weight[n] > 0]

    def counts_at(factor: float) -> Counts:
        out = dict(fixed)
        for n in names:
            low, high = bounds[n]
            out[n] = min(max(math.floor(shares[n] * factor + 1e-9), low), high)
        return out

    low_f, high_f = 0.0, 1.0
    while _spend(counts_at(high_f), weight) <= budget and high_f < 1e6:
        low_f, high_f = high_f, high_f * 2.0
    for _ in range(50):
        mid = (low_f + high_f) / 2.0
        low_f, high_f = (mid, high_f) if _spend(counts_at(mid), weight) <= budget else (low_f, mid)
    counts = counts_at(low_f)
    while True:
        left = budget - _spend(counts, weight)
        room = [n for n in names if weight[n] <= left + 1e-9 and counts[n] < bounds[n][1]]
        if not room:
            return counts
        best = min(room, key=lambda n: counts[n] / max(shares[n], 1e-9))
        counts[best] += 1


def best_static_split(
    context: RunContext,
    budget: float,
    *,
    name: str = "static-budget",
    max_evaluations: int = 40,
) -> tuple[Counts, PolicyScore, int]:
    """The static split with the highest attainment among those spending at most `budget`
    (GPUs, or cost per hour for a pipeline without GPUs) per hour, found as the module
    docstring says. Returns the counts, their score and the simulations used."""
    config, trace = context.config, context.trace
    weight, _ = budget_weights(config)
    comps = config.pipeline.components
    bounds = {n: (c.replicas.min, c.replicas.max) for n, c in comps.items()}
    peak = StaticPeakPolicy(config, trace=trace).replicas
    fixed = {n: peak[n] for n in comps if weight[n] <= 0}
    demand = component_demand(config, trace)
    mean = {
        n: float(
            replicas_at_utilization(
                float(np.mean(demand[n])),
                c.capacity_per_replica,
                config.pipeline.utilization_target(n),
            )
        )
        for n, c in comps.items()
    }
    weighted = [n for n in comps if weight[n] > 0]
    used = 0
    seen: dict[tuple[int, ...], PolicyScore] = {}

    def judge(counts: Counts) -> PolicyScore:
        nonlocal used
        key = tuple(counts[n] for n in comps)
        if key not in seen:
            used += 1
            reason = f"static split within {budget:.4g}/h"
            seen[key] = context.evaluate(FixedPolicy(name, counts, reason))
        return seen[key]

    starts = [
        _fit({n: float(max(peak[n], 1)) for n in weighted}, budget, weight, bounds, fixed),
        _fit({n: max(mean[n], 1.0) for n in weighted}, budget, weight, bounds, fixed),
    ]
    best = max(starts, key=lambda c: objective(judge(c)))
    best_score = judge(best)
    step = max(1, max((best[n] for n in weighted), default=1) // 4)
    while step >= 1 and used < max_evaluations:
        improved = False
        for give in weighted:
            for take in weighted:
                if give == take or used >= max_evaluations:
                    continue
                cand = dict(best)
                cand[give] = max(cand[give] - step, bounds[give][0])
                if cand[give] == best[give]:
                    continue
                left = budget - _spend(cand, weight)
                extra = math.floor((left + 1e-9) / weight[take])
                cand[take] = min(cand[take] + max(extra, 0), bounds[take][1])
                if cand[take] == best[take] or _spend(cand, weight) > budget + 1e-9:
                    continue
                got = judge(cand)
                if objective(got) > objective(best_score):
                    best, best_score, improved = cand, got, True
        if not improved:
            step //= 2
    return best, best_score, used


class StaticBudgetParams(BaseModel):
    """Parameters of `static-budget`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: str = Field(
        "elastiscale", min_length=1, description="spend what this policy of the run spent"
    )
    max_evaluations: int = Field(40, ge=2, description="simulations the split search may use")


class StaticBudgetPolicy:
    """Static replicas spending at most the matched policy's GPU-hours, split across the
    components for the highest attainment (see the module docstring)."""

    name = "static-budget"
    needs_trace: ClassVar[bool] = True
    needs_backtest: ClassVar[bool] = True
    Params = StaticBudgetParams

    def __init__(
        self,
        config: Config,
        params: StaticBudgetParams | Mapping[str, Any] | None = None,
        trace: Trace | None = None,
        backtest: RunContext | None = None,
    ) -> None:
        if trace is None or backtest is None:
            raise RegistryError(
                f"policy {self.name!r} is built from the replayed trace and runs only in a "
                "backtest (elastiscale backtest, or elastiscale.backtest())"
            )
        self.params = (
            params
            if isinstance(params, StaticBudgetParams)
            else StaticBudgetParams.model_validate(dict(params or {}))
        )
        if self.params.match == self.name:
            raise RegistryError(f"policy {self.name!r}: match = {self.name!r} matches itself")
        matched = backtest.run_of(self.params.match)
        _, unit = budget_weights(config)
        spent = matched.score.gpu_hours if unit == "gpu_hours" else matched.score.cost
        hours = backtest.scored_hours
        self.budget_unit = unit
        self.budget = spent
        per_hour = spent / hours if hours > 0 else 0.0
        self.replicas, self.search_score, self.evaluations = best_static_split(
            backtest, per_hour, name=self.name, max_evaluations=self.params.max_evaluations
        )

    def propose(self, ctx: TickContext) -> dict[str, Proposal]:
        reason = (
            f"static split of {self.params.match}'s {self.budget:.4g} "
            f"{self.budget_unit.replace('_', '-')}"
        )
        return {
            name: Proposal(
                policy=self.name,
                replicas=count,
                reason=reason,
                details={"budget": self.budget, "budget_unit": self.budget_unit},
            )
            for name, count in self.replicas.items()
        }
