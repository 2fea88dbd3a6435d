"""The ceiling of one backtest: what attainment the pipeline reaches with unlimited foresight
and no cost limit, the structural floor of misses that no policy can remove.

The same requests are simulated (same trace, fidelity, seed and scoring window) with every
component at its `replicas.max`, all ready from the start, and no control loop. What is still
late there is late for reasons no replica count fixes: a request with many sequential calls, a
call whose service time alone exceeds its share of the SLO, a replica bound below what a burst
needs. A policy's *avoidable misses* are `ceiling_attainment - slo_attainment`: the share of
requests that were late under it and on time at the ceiling.

Worked numbers: an agent request with 8 sequential planner calls of 3 s each against a 20 s
SLO is late on idle replicas; if 2% of requests are like that, the ceiling is 0.98 and a policy
at 0.95 has 3 points of avoidable misses, not 5.

With a random fidelity (fan-out draws, the discrete-event service times) the ceiling is one
draw of the same seed as the policies' runs, so a policy that happens to sit on it may show a
few hundredths of a point of negative avoidable misses; they are reported as computed.
"""

from __future__ import annotations

from elastiscale.backtest.scoring import PolicyScore, score
from elastiscale.config import Config
from elastiscale.trace import Trace


def max_replicas(config: Config) -> dict[str, int]:
    """Every component at its `replicas.max`."""
    return {name: comp.replicas.max for name, comp in config.pipeline.components.items()}


def ceiling_score(
    config: Config,
    trace: Trace,
    *,
    fidelity: str = "fast",
    seed: int = 0,
    start_s: float,
    end_s: float,
) -> PolicyScore:
    """Score of the run with every component at its max replicas, ready from the start, scored
    over [start_s, end_s) like the policies of the same backtest."""
    from elastiscale.backtest.drift import DriftSchedule
    from elastiscale.backtest.model import service_models
    from elastiscale.backtest.runner import build_simulator

    sim = build_simulator(config, trace, max_replicas(config), fidelity=fidelity, seed=seed)
    DriftSchedule(config, service_models(config, trace), trace.start_s).advance(sim, trace.end_s)
    return score(sim.result(), config, start_s=start_s, end_s=end_s)


def avoidable_misses(ceiling: float | None, attainment: float | None) -> float | None:
    """`ceiling - attainment`, None when either is unknown."""
    if ceiling is None or attainment is None:
        return None
    return ceiling - attainment
