"""The fidelity cross-check: the fast (fluid) simulator against the discrete-event reference.

Small cases (steady, ramp, burst, overload, cold start from the minimum) on the pipeline
router -> retriever (parallel, Poisson fan-out 2) -> llm (sequential, fan-out 1.5, a GPU that
starts in 90 s), both fidelities driven by the same policy through the same engine. Each
fidelity is run with six seeds and its requests pooled: one discrete-event run's p95 moves by up
to a third from seed to seed in these transients, six pooled runs by about 5%, so the 10% bound
measures the model and not the dice. The bound is the issue's: the fast p95 and SLO attainment
within 10% of the discrete-event ones.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from elastiscale.backtest.model import SimulationResult, latency_quantile, slo_attainment
from elastiscale.backtest.runner import simulate
from elastiscale.config import Config
from test_sim_support import TargetPolicy, pipeline_config, poisson_trace, pooled

DURATION_S = 1800
SEEDS = range(6)
SLO_S = 20.0
_t = np.arange(DURATION_S)

#: name -> (arrival rate per second, starting replicas, llm max replicas)
CASES: dict[str, tuple[np.ndarray, dict[str, int], int]] = {
    "steady": (np.full(DURATION_S, 4.0), {"router": 1, "retriever": 1, "llm": 12}, 64),
    "ramp": (1.0 + 5.0 * _t / DURATION_S, {"router": 1, "retriever": 1, "llm": 3}, 64),
    "burst": (
        np.where((_t >= 600) & (_t < 900), 6.0, 3.0),
        {"router": 1, "retriever": 1, "llm": 9},
        64,
    ),
    # 6 req/s make 18 llm calls/s; 10 replicas serve 15.
    "overload": (np.full(DURATION_S, 6.0), {"router": 1, "retriever": 1, "llm": 10}, 10),
    "cold-start": (np.full(DURATION_S, 4.0), {"router": 1, "retriever": 1, "llm": 1}, 64),
}


def _run(
    config: Config, rates: np.ndarray, initial: Mapping[str, int], fidelity: str
) -> SimulationResult:
    trace = poisson_trace(rates)
    return pooled(
        [
            simulate(
                config,
                trace,
                TargetPolicy(),
                fidelity=fidelity,
                initial_replicas=initial,
                seed=seed,
            )
            for seed in SEEDS
        ]
    )


@pytest.mark.parametrize("case", list(CASES))
def test_fast_p95_and_attainment_are_within_10_percent_of_discrete_event(case: str) -> None:
    rates, initial, llm_max = CASES[case]
    config = pipeline_config(llm_max=llm_max)
    fast = _run(config, rates, initial, "fast")
    reference = _run(config, rates, initial, "discrete-event")
    p95_fast, p95_ref = latency_quantile(fast, 0.95), latency_quantile(reference, 0.95)
    att_fast, att_ref = slo_attainment(fast, SLO_S), slo_attainment(reference, SLO_S)
    assert p95_fast is not None and p95_ref is not None
    assert att_fast is not None and att_ref is not None
    summary = (
        f"{case}: p95 fast {p95_fast:.2f} s vs {p95_ref:.2f} s; "
        f"attainment fast {att_fast:.4f} vs {att_ref:.4f}"
    )
    assert abs(p95_fast / p95_ref - 1) <= 0.10, summary
    assert abs(att_fast / att_ref - 1) <= 0.10, summary
