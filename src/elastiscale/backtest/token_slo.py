"""Time to first token (TTFT) and inter-token latency (ITL) of an LLM component, from the
per-step series both simulators write (docs/simulator.md, "Time to first token and
inter-token latency").

Per step, the wait in the component's queue is Little's law on that step, W = L / lambda: the
requests waiting at the end of the step over the completion rate in it (no completion with a
queue: the wait is unbounded, a miss). Then, with `hold` the seconds a request holds a slot per
unit of its work (`ServiceModel`: slots / capacity_per_replica) and `work` the step's mean work
per request in the component's unit:

- TTFT = W + the time to the first token: a prefill server (`input_tokens`) emits it when its
  whole service ends, hold x work; a decode server (`output_tokens`) after one token, hold; a
  component sized in requests or total tokens also after its whole service (it cannot tell
  prompt from answer), an upper bound.
- ITL (decode servers only) = hold + W / work: the per-token time of a slot, plus the queue
  wait spread over the request's output tokens (the wait delays its tokens as much as a
  longer gap would).

Worked numbers: a decode server of 2,000 output tokens/s with 40 slots holds a slot 0.02 s per
token; a step with 10 requests waiting and 5 completing per second waits 2 s; at 200 output
tokens per request, ITL = 0.02 + 2 / 200 = 0.03 s.

The p95 is the completions-weighted quantile over the scored steps (every request of a step
is taken to see that step's wait); attainment is the completions in steps meeting the target
over completions plus the requests the component dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from elastiscale.backtest.model import Array, ComponentSeries, weighted_quantile
from elastiscale.config import ComponentConfig

Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class TokenLatency:
    """One component's p95 TTFT / ITL and the attainment of its `slo` (None: not asked)."""

    p95_ttft_s: float | None = None
    ttft_slo_attainment: float | None = None
    p95_itl_s: float | None = None
    itl_slo_attainment: float | None = None


def token_latency(
    comp: ComponentConfig, series: ComponentSeries, mask: Mask, step_s: float
) -> TokenLatency:
    """The TTFT and ITL figures `comp.slo` asks for, over the steps of `mask`."""
    if comp.slo is None:
        return TokenLatency()
    completions = series.completions[mask]
    queue = series.queue[mask]
    arrivals = float(series.arrivals[mask].sum())
    work = float(series.work_arrivals[mask].sum()) / arrivals if arrivals > 0 else 1.0
    hold_s = _hold_per_work_s(comp, work)
    with np.errstate(divide="ignore", invalid="ignore"):
        wait_s = np.where(
            completions > 0,
            queue * step_s / np.where(completions > 0, completions, 1.0),
            np.where(queue > 0, np.inf, 0.0),
        )
    dropped = float(series.dropped[mask].sum())
    out: dict[str, float | None] = {}
    if comp.slo.ttft_p95_s is not None:
        first_token_s = hold_s if comp.capacity_unit == "output_tokens" else hold_s * work
        ttft = wait_s + first_token_s
        out["p95_ttft_s"], out["ttft_slo_attainment"] = _p95_and_attainment(
            ttft, completions, dropped, comp.slo.ttft_p95_s
        )
    if comp.slo.itl_p95_s is not None:
        itl = hold_s + wait_s / max(work, 1.0)
        out["p95_itl_s"], out["itl_slo_attainment"] = _p95_and_attainment(
            itl, completions, dropped, comp.slo.itl_p95_s
        )
    return TokenLatency(**out)


def _hold_per_work_s(comp: ComponentConfig, work: float) -> float:
    """`ServiceModel.hold_per_work_s` with the window's mean work per request."""
    concurrency = comp.capacity_per_replica / max(work, 1e-9) * comp.service_time_s
    slots = max(1, math.floor(concurrency + 0.5))
    return slots / comp.capacity_per_replica


def _p95_and_attainment(
    values: Array, weights: Array, dropped: float, target: float
) -> tuple[float | None, float | None]:
    total = float(weights.sum())
    if total <= 0:
        return None, None
    finite = np.isfinite(values) & (weights > 0)
    p95 = weighted_quantile(values[finite], weights[finite], 0.95) if finite.any() else math.inf
    met = float(weights[(values <= target) & (weights > 0)].sum())
    return (None if p95 is None else round(float(p95), 6)), round(met / (total + dropped), 6)
