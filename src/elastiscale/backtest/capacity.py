"""Throughput at a fixed GPU budget: for each policy, the highest `rate_scale` at which it still
meets `slo.attainment_target` with at most N GPUs in use at any time.

This is the seed study's "max throughput at a fixed budget": the same trace, multiplied by more
and more, into the same pipeline on the same N GPUs, until a policy can no longer hold the
target. A run at one rate scale *holds* when

- its SLO attainment over the scored window is at least `slo.attainment_target`, and
- the GPUs it held (ready + starting + draining replicas x `gpus_per_replica`, summed over
  components, per simulator step) never exceeded N.

Every run sets `pipeline.max_gpus = N`, so a policy that divides a GPU budget (`elastiscale`)
knows it; the others are held to it only by the check. The starting replica counts are the
backtest's (sized from the first minutes of the scaled trace), scaled down to fit in N GPUs when
they do not. Static deployments (`static-peak`, `static-budget`) are replaced by the best static
split of N GPUs (`static_budget.best_static_split`: the most attainment, then the lowest p95),
searched afresh at each rate scale.

The search on the rate scale: from 1, doubled while the runs hold (halved while they do not)
to bracket the limit, then bisected until the bracket is within `precision` (2%) of its lower
end. The answer is the lower end: the highest scale seen to hold. Holding is assumed to be
monotone in the rate (more load never makes a run hold that failed); it is how the bisection
reads the runs, not something it checks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from elastiscale.backtest.api import PolicyRef, _spec, prepare_trace
from elastiscale.backtest.baselines import initial_replicas
from elastiscale.backtest.context import RunContext
from elastiscale.backtest.model import SimulationResult
from elastiscale.backtest.scoring import PolicyScore
from elastiscale.backtest.static_budget import best_static_split
from elastiscale.config import Config
from elastiscale.trace import Trace

#: Policies replaced by the best static split of the GPUs.
STATIC_POLICIES = ("static-peak", "static-budget")
#: Policies compared when none is named.
DEFAULT_POLICIES = ("static-peak", "hpa", "elastiscale")
#: Bracketing stops at these rate scales.
MIN_SCALE, MAX_SCALE = 1.0 / 1024.0, 1024.0


@dataclass(frozen=True)
class Probe:
    """One run at one rate scale."""

    rate_scale: float
    holds: bool
    slo_attainment: float | None
    gpu_hours: float
    peak_gpus: float


@dataclass
class PolicyCapacity:
    """The answer for one policy, and every run that led to it."""

    name: str
    max_rate_scale: float | None  # None: not even the smallest scale held
    slo_attainment: float | None
    gpu_hours: float | None
    probes: list[Probe] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_rate_scale": self.max_rate_scale,
            "slo_attainment": self.slo_attainment,
            "gpu_hours": self.gpu_hours,
        }


def peak_gpus(result: SimulationResult, config: Config, start_s: float, end_s: float) -> float:
    """Most GPUs held at once (billed replicas x gpus_per_replica) in steps ending in the
    window."""
    total: Any = 0.0
    for name, series in result.components.items():
        gpus = config.pipeline.components[name].gpus_per_replica
        if gpus <= 0:
            continue
        mask = (series.t_s > start_s) & (series.t_s <= end_s)
        total = total + series.billed()[mask] * gpus
    return float(np.max(total)) if np.size(total) else 0.0


def with_gpu_budget(config: Config, gpus: float) -> Config:
    """`config` with `pipeline.max_gpus = gpus`."""
    raw = config.model_dump(by_alias=True, exclude_unset=True)
    raw["pipeline"]["max_gpus"] = gpus
    return Config.model_validate(raw)


def fit_initial(config: Config, counts: Mapping[str, int], gpus: float) -> dict[str, int]:
    """Starting counts scaled down (GPU components only, not below their min) to fit `gpus`."""
    comps = config.pipeline.components
    out = dict(counts)
    used = sum(out[n] * c.gpus_per_replica for n, c in comps.items())
    if used <= gpus + 1e-9:
        return out
    factor = gpus / used
    for name, comp in comps.items():
        if comp.gpus_per_replica > 0:
            out[name] = max(comp.replicas.min, math.floor(out[name] * factor))
    return out


def capacity(
    config: Config,
    trace: Trace | str,
    gpus: float,
    policies: Sequence[PolicyRef] | None = None,
    *,
    precision: float = 0.02,
    fidelity: str = "fast",
    start_s: float | None = None,
    end_s: float | None = None,
    warmup_s: float = 0.0,
    metrics_delay_s: float = 15.0,
    rate_window_s: float = 60.0,
    seed: int = 0,
) -> dict[str, PolicyCapacity]:
    """For each policy, the highest rate scale holding the target on `gpus` GPUs (see the
    module docstring). Raises `ValueError` on a bad `gpus` or `precision`."""
    if not gpus > 0:
        raise ValueError(f"gpus = {gpus:g}, must be > 0")
    if not 0 < precision < 1:
        raise ValueError(f"precision = {precision:g}, must be in (0, 1)")
    comps = config.pipeline.components
    if not any(c.gpus_per_replica > 0 for c in comps.values()):
        raise ValueError("pipeline.components: no component has gpus_per_replica > 0")
    cfg = with_gpu_budget(config, gpus)
    target = cfg.pipeline.slo.attainment_target
    base = prepare_trace(trace, start_s=start_s, end_s=end_s)
    specs = [_spec(p) for p in (policies or DEFAULT_POLICIES)]

    def probe(spec_name: str, spec: Any, scale: float) -> Probe:
        replay = base.scaled(rate_scale=scale)
        context = RunContext(
            config=cfg,
            trace=replay,
            initial_replicas=fit_initial(cfg, initial_replicas(cfg, replay), gpus),
            fidelity=fidelity,
            metrics_delay_s=metrics_delay_s,
            rate_window_s=rate_window_s,
            seed=seed,
            scored_from_s=replay.start_s + warmup_s,
        )
        if spec_name in STATIC_POLICIES:
            # deployed before the trace starts: it holds its own GPUs, no more
            counts, got, _ = best_static_split(context, gpus, name=spec_name)
            most = sum(counts[n] * c.gpus_per_replica for n, c in comps.items())
        else:
            run = context.run_of(spec)
            got, most = run.score, peak_gpus(run.result, cfg, *context.scored_window)
        return _probe(scale, got, most, gpus, target)

    out: dict[str, PolicyCapacity] = {}
    for spec in specs:
        label = spec.name if spec.name not in out else f"{spec.name}#{len(out) + 1}"
        out[label] = _search(lambda s, spec=spec: probe(spec.name, spec, s), label, precision)
    return out


def _probe(scale: float, got: PolicyScore, most: float, gpus: float, target: float) -> Probe:
    attained = got.slo_attainment
    holds = attained is not None and attained >= target - 1e-12 and most <= gpus + 1e-6
    return Probe(scale, holds, attained, got.gpu_hours, most)


def _search(run: Any, name: str, precision: float) -> PolicyCapacity:
    probes: list[Probe] = []

    def at(scale: float) -> Probe:
        got: Probe = run(scale)
        probes.append(got)
        return got

    first = at(1.0)
    low: Probe | None = first if first.holds else None
    high: Probe | None = None if first.holds else first
    while low is None and first.rate_scale > MIN_SCALE:
        got = at(first.rate_scale / 2.0)
        first = got
        if got.holds:
            low = got
        else:
            high = got
    while high is None and low is not None and low.rate_scale < MAX_SCALE:
        got = at(low.rate_scale * 2.0)
        if got.holds:
            low = got
        else:
            high = got
    if low is None:
        return PolicyCapacity(name, None, None, None, probes)
    while high is not None and (high.rate_scale - low.rate_scale) > precision * low.rate_scale:
        got = at(math.sqrt(low.rate_scale * high.rate_scale))
        if got.holds:
            low = got
        else:
            high = got
    return PolicyCapacity(name, low.rate_scale, low.slo_attainment, low.gpu_hours, probes)


def to_json_dict(gpus: float, results: Mapping[str, PolicyCapacity]) -> dict[str, Any]:
    """The content of capacity.json."""
    return {"gpus": gpus, "policies": {name: r.to_dict() for name, r in results.items()}}


def markdown(
    config: Config, trace_name: str, gpus: float, results: Mapping[str, PolicyCapacity]
) -> str:
    """capacity.md: the table, the runs behind it, and how to read it."""
    target = config.pipeline.slo.attainment_target
    lines = [
        f"# Capacity: {config.pipeline.name} on {gpus:g} GPUs",
        "",
        f"Trace `{trace_name}`; the highest rate scale at which each policy still meets the"
        f" attainment target {target:.2%} (SLO {config.pipeline.slo.latency_p95_s:g} s) with at"
        f" most {gpus:g} GPUs in use at any time (bisection to 2%; static deployments: the best"
        " static split of the GPUs).",
        "",
        "| policy | max rate scale | SLO attainment | GPU-hours | x static-peak |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    reference = results.get("static-peak")
    ref = reference.max_rate_scale if reference is not None else None
    for name, r in results.items():
        ratio = f"{r.max_rate_scale / ref:.2f}x" if ref and r.max_rate_scale else "n/a"
        lines.append(
            f"| {name} | {_fmt(r.max_rate_scale, '{:.3g}')} | {_fmt(r.slo_attainment, '{:.2%}')}"
            f" | {_fmt(r.gpu_hours, '{:.1f}')} | {ratio} |"
        )
    lines += ["", "## Runs", "", "| policy | rate scale | holds | SLO attainment | GPU-hours |"
              " peak GPUs |", "| --- | ---: | --- | ---: | ---: | ---: |"]  # fmt: skip
    for name, r in results.items():
        for p in r.probes:
            lines.append(
                f"| {name} | {p.rate_scale:.4g} | {'yes' if p.holds else 'no'} |"
                f" {_fmt(p.slo_attainment, '{:.2%}')} | {p.gpu_hours:.1f} | {p.peak_gpus:.1f} |"
            )
    return "\n".join(lines) + "\n"


def _fmt(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)
