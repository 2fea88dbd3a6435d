"""Scoring one simulated run: the numbers `report.json` gives for each policy.

Every policy of one backtest is scored over the same window: ingress requests that *arrived* in
[start_s, end_s) (arrival = completion time - latency), and the replica series of steps ending
after `start_s`. A warm-up at the start of the run is simulated for every policy and scored for
none: it is simply left out of the window.

- `slo_attainment`: requests completed within the pipeline's end-to-end SLO
  (`slo.latency_p95_s`) over all scored requests, dropped ones counting as misses. Worked
  numbers: 950 within, 40 late, 10 dropped -> 950 / 1000 = 0.95. In a fleet unit
  (`pipeline.members`) each request is held to the SLO of the pipeline it entered, and
  `per_pipeline` gives each pipeline's own attainment.
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

from dataclasses import asdict, dataclass, field

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
from elastiscale.pipeline import Pipeline

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
class PipelineScore:
    """One pipeline of a fleet unit under one policy: its requests against its own SLO."""

    latency_slo_s: float
    slo_attainment: float | None  # None when none of its requests was scored
    scored_requests: float
    dropped_requests: float


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
    #: A fleet unit's pipelines (`pipeline.members`): each one's requests against its own SLO.
    per_pipeline: dict[str, PipelineScore] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            key: value
            for key, value in asdict(self).items()
            if key not in ("per_component", "per_pipeline")
        }
        out["per_component"] = {name: s.to_dict() for name, s in self.per_component.items()}
        if self.per_pipeline:
            out["per_pipeline"] = {name: asdict(s) for name, s in self.per_pipeline.items()}
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
    arrival_s = result.completed_at_s - result.latency_s
    scored = (arrival_s >= start_s) & (arrival_s < end_s)
    latency_s = result.latency_s[scored]
    weight = result.weight[scored]
    dropped = _dropped_in_window(result, start_s, end_s)
    completed = float(weight.sum())
    total = completed + dropped
    slo_s = _own_slo_s(result, config)
    ok = latency_s <= (slo_s[scored] if isinstance(slo_s, np.ndarray) else slo_s)
    within = float(weight[ok].sum())
    per_pipeline = _per_pipeline(result, config, scored, ok, dropped)
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
        per_pipeline=per_pipeline,
    )


def _members_by_origin(config: Config) -> list[tuple[str, float]]:
    """(member, its SLO) of each ingress component, in `Pipeline.ingress` order."""
    spec = config.pipeline
    owner = {
        name: (member, m.slo.latency_p95_s)
        for member, m in spec.members.items()
        for name in m.components
        if spec.components[name].ingress
    }
    default = ("", spec.slo.latency_p95_s)
    return [owner.get(name, default) for name in Pipeline(spec).ingress]


def _own_slo_s(result: SimulationResult, config: Config) -> float | Array:
    """The SLO each completed request is held to: its own pipeline's in a fleet unit (when
    the simulator says where each request entered), else the pipeline's."""
    if not config.pipeline.members or result.origin is None:
        return config.pipeline.slo.latency_p95_s
    slos = np.array([slo for _, slo in _members_by_origin(config)], dtype=float)
    own: Array = slos[result.origin]
    return own


def _per_pipeline(
    result: SimulationResult, config: Config, scored: Mask, ok: Mask, dropped: float
) -> dict[str, PipelineScore]:
    """Each member's attainment; the window's drops are apportioned by each ingress's share
    of all drops (as `_dropped_in_window` apportions the total)."""
    if not config.pipeline.members or result.origin is None or result.dropped_by_origin is None:
        return {}
    by_origin = _members_by_origin(config)
    origin = result.origin[scored]
    weight = result.weight[scored]
    all_drops = float(result.dropped_by_origin.sum())
    out: dict[str, PipelineScore] = {}
    for member, m in config.pipeline.members.items():
        mine = np.array([name == member for name, _ in by_origin], dtype=bool)
        rows = mine[origin] if origin.size else np.zeros(0, dtype=bool)
        completed = float(weight[rows].sum())
        own_drops = float(result.dropped_by_origin[mine].sum())
        dropped_m = dropped * own_drops / all_drops if all_drops > 0 else 0.0
        total = completed + dropped_m
        out[member] = PipelineScore(
            latency_slo_s=m.slo.latency_p95_s,
            slo_attainment=float(weight[rows & ok].sum()) / total if total > 0 else None,
            scored_requests=total,
            dropped_requests=dropped_m,
        )
    return out


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
