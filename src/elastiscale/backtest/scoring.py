"""Scoring one simulated run: the numbers `report.json` gives for each policy.

Every policy of one backtest is scored over the same window: ingress requests that *arrived* in
[start_s, end_s) (arrival = completion time - latency), and the replica series of steps ending
after `start_s`. A warm-up at the start of the run is simulated for every policy and scored for
none: it is simply left out of the window.

- `slo_attainment`: requests completed within the pipeline's end-to-end SLO
  (`slo.latency_p95_s`) over all scored requests, dropped ones counting as misses. Worked
  numbers: 950 within, 40 late, 10 dropped -> 950 / 1000 = 0.95.
- `p50/p95/p99_latency_s`: exact weighted quantiles of the completed requests' end-to-end
  latency (a dropped request has no latency; it is counted in `dropped_requests`).
- `gpu_hours`: billed replica-seconds (ready + starting + draining) x `gpus_per_replica` / 3600,
  summed over components; `cost` the same with `cost_per_hour`.
- `scaling_actions`: engine decisions that changed a component's replica count, summed over
  components (as the runner counts them; with a warm-up, the changes of the desired count in the
  scored steps).

Dropped requests carry no timestamps in a `SimulationResult`, only a total, so when the window
leaves out a warm-up, the total is apportioned by the share of all components' drops that fell in
the window (exact when nothing drops during the warm-up).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from elastiscale.backtest.model import (
    Array,
    ComponentSeries,
    SimulationResult,
    weighted_quantile,
)
from elastiscale.backtest.token_slo import token_latency
from elastiscale.config import Config

Mask = npt.NDArray[np.bool_]

#: Latency quantiles reported for every policy.
QUANTILES = {"p50_latency_s": 0.50, "p95_latency_s": 0.95, "p99_latency_s": 0.99}


_TOKEN_KEYS = frozenset({"p95_ttft_s", "ttft_slo_attainment", "p95_itl_s", "itl_slo_attainment"})


@dataclass(frozen=True)
class ComponentScore:
    """What one component did under one policy, over the scoring window."""

    replica_hours: float
    gpu_hours: float
    cost: float
    mean_ready_replicas: float
    peak_replicas: int  # most replicas billed at once (ready + starting)
    mean_utilization: float | None  # busy fraction of ready capacity; None without capacity
    max_latency_p95_s: float | None  # worst per-step p95 at this component; None if idle
    arrivals: float
    dropped_requests: float
    scaling_actions: int
    # an LLM component's `slo` (TTFT / ITL, backtest/token_slo.py); None when it names none
    p95_ttft_s: float | None = None
    ttft_slo_attainment: float | None = None
    p95_itl_s: float | None = None
    itl_slo_attainment: float | None = None

    def to_dict(self) -> dict[str, object]:
        """Every field; the TTFT / ITL ones only for a component whose `slo` names them."""
        return {k: v for k, v in asdict(self).items() if v is not None or k not in _TOKEN_KEYS}


@dataclass(frozen=True)
class PolicyScore:
    """One policy's score; the field names are those of `report.json`."""

    slo_attainment: float | None  # None when no request was scored
    p50_latency_s: float | None
    p95_latency_s: float | None
    p99_latency_s: float | None
    gpu_hours: float
    cost: float
    dropped_requests: float
    scaling_actions: int
    scored_requests: float
    per_component: dict[str, ComponentScore]

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            key: value for key, value in asdict(self).items() if key != "per_component"
        }
        out["per_component"] = {name: s.to_dict() for name, s in self.per_component.items()}
        by_objective = self.attainment_by_objective()
        if len(by_objective) > 1:  # only when a component names a TTFT or ITL objective
            out["attainment_by_objective"] = by_objective
        return out

    def attainment_by_objective(self) -> dict[str, float | None]:
        """Attainment per SLO: `end_to_end`, then `<component>.ttft_p95_s` and
        `<component>.itl_p95_s` for the components whose `slo` names them."""
        out: dict[str, float | None] = {"end_to_end": self.slo_attainment}
        for name, comp in self.per_component.items():
            if comp.ttft_slo_attainment is not None:
                out[f"{name}.ttft_p95_s"] = comp.ttft_slo_attainment
            if comp.itl_slo_attainment is not None:
                out[f"{name}.itl_p95_s"] = comp.itl_slo_attainment
        return out


def score(
    result: SimulationResult,
    config: Config,
    *,
    start_s: float = -np.inf,
    end_s: float = np.inf,
) -> PolicyScore:
    """Score `result` over requests arriving in [start_s, end_s) and steps ending after start_s
    (and at most end_s)."""
    slo_s = config.pipeline.slo.latency_p95_s
    arrival_s = result.completed_at_s - result.latency_s
    scored = (arrival_s >= start_s) & (arrival_s < end_s)
    latency_s = result.latency_s[scored]
    weight = result.weight[scored]
    dropped = _dropped_in_window(result, start_s, end_s)
    completed = float(weight.sum())
    total = completed + dropped
    within = float(weight[latency_s <= slo_s].sum())
    per_component = {
        name: _component_score(result, config, name, start_s, end_s) for name in result.components
    }
    quantiles = {key: weighted_quantile(latency_s, weight, q) for key, q in QUANTILES.items()}
    return PolicyScore(
        slo_attainment=within / total if total > 0 else None,
        p50_latency_s=quantiles["p50_latency_s"],
        p95_latency_s=quantiles["p95_latency_s"],
        p99_latency_s=quantiles["p99_latency_s"],
        gpu_hours=sum(c.gpu_hours for c in per_component.values()),
        cost=sum(c.cost for c in per_component.values()),
        dropped_requests=dropped,
        scaling_actions=sum(c.scaling_actions for c in per_component.values()),
        scored_requests=total,
        per_component=per_component,
    )


def _steps_in_window(series: ComponentSeries, start_s: float, end_s: float) -> Mask:
    mask: Mask = (series.t_s > start_s) & (series.t_s <= end_s)
    return mask


def _dropped_in_window(result: SimulationResult, start_s: float, end_s: float) -> float:
    total = float(result.dropped_requests)
    if total <= 0:
        return 0.0
    inside = everywhere = 0.0
    for series in result.components.values():
        everywhere += float(series.dropped.sum())
        inside += float(series.dropped[_steps_in_window(series, start_s, end_s)].sum())
    if everywhere <= 0:
        return total
    return total * inside / everywhere


def _changes(desired: Array, mask: Mask) -> int:
    """How many steps in `mask` changed the desired count from the step before."""
    if desired.size < 2:
        return 0
    changed = np.concatenate([[False], np.diff(desired) != 0])
    return int(np.count_nonzero(changed & mask))


def _component_score(
    result: SimulationResult,
    config: Config,
    name: str,
    start_s: float,
    end_s: float,
) -> ComponentScore:
    comp = config.pipeline.components[name]
    series = result.components[name]
    mask = _steps_in_window(series, start_s, end_s)
    ready = series.ready[mask]
    billed = series.billed()[mask]
    replica_hours = float(billed.sum()) * result.step_s / 3600.0
    ready_total = float(ready.sum())
    busy = np.nan_to_num(series.utilization[mask]) * ready
    utilization = float(busy.sum()) / ready_total if ready_total > 0 else None
    if start_s <= result.start_s and name in result.scaling_actions_by_component:
        actions = result.scaling_actions_by_component[name]
    else:
        actions = _changes(series.desired, mask)
    latency = series.latency_p95_s[mask]
    latency = latency[np.isfinite(latency)]
    tokens = token_latency(comp, series, mask, result.step_s)
    return ComponentScore(
        replica_hours=replica_hours,
        gpu_hours=replica_hours * comp.gpus_per_replica,
        cost=replica_hours * comp.cost_per_hour,
        mean_ready_replicas=float(ready.mean()) if ready.size else 0.0,
        peak_replicas=int(billed.max()) if billed.size else 0,
        mean_utilization=utilization,
        max_latency_p95_s=float(latency.max()) if latency.size else None,
        arrivals=float(series.arrivals[mask].sum()),
        dropped_requests=float(series.dropped[mask].sum()),
        scaling_actions=actions,
        p95_ttft_s=tokens.p95_ttft_s,
        ttft_slo_attainment=tokens.ttft_slo_attainment,
        p95_itl_s=tokens.p95_itl_s,
        itl_slo_attainment=tokens.itl_slo_attainment,
    )
