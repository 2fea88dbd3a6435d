"""Sizing an LLM component against its own time to first token (TTFT) and inter-token latency
(ITL) objectives, beside its share of the end-to-end budget.

A component with `slo: {ttft_p95_s, itl_p95_s}` is sized so that every objective it carries is
met; the count is the largest any of them needs, and the decision record names the one that
set it (`slo_bound`). Each objective is the same Erlang-C queue (queueing.py: n replicas of
`slots` concurrent slots each, `quantile` of the wait), with a different allowance for the
wait, in the terms `backtest/token_slo.py` scores:

- `ttft_p95_s`: TTFT = wait + the time to the first token. A prefill server (`capacity_unit:
  input_tokens`, or one sized in requests or total tokens) emits it when the prompt is done,
  after the hold of a call of the current mean size, `hold_s`; a decode server
  (`output_tokens`) after one token, `hold_s / tokens`. The wait may take TTFT - that.
- `itl_p95_s` (decode servers): ITL = per-token time + wait / output tokens, so the wait may
  take (ITL - per-token time) x output tokens. The per-token time is a slot's at full batch,
  `slots / capacity_per_replica` (a replica sustains its capacity with all its slots busy, so
  each sequence gets capacity / slots tokens/s); a lighter batch runs faster in practice, so
  the model is conservative there, and the batch grows with load through the queue, which is
  where ITL moves once every slot is busy.
- `latency_p95_s`: the component's share of the end-to-end SLO, as without token objectives.
  A prefill-like component whose TTFT is its whole call takes that TTFT as its share
  (`pipeline_model.ttft_budget_s`), so there the two are one objective and only TTFT is sized.

As everywhere in the sizer, `burst_share` of each wait allowance is left to swings of demand
inside the rate window and the rest bounds the random wait. The model takes calls of the
current mean size with exponential service; a wide spread of prompt sizes makes real waits
longer than it says (docs/results.md shows where). With `queueing: false` (the ablation) the
component is sized by utilization and its objectives are only scored.

Semantics beside the planners users know: NVIDIA Dynamo's SLA planner sizes prefill replicas as
the predicted prompt tokens/s over the per-GPU prefill throughput that profiling found within
the TTFT target, and decode replicas as the predicted output tokens/s over the throughput at
the largest in-flight batch whose measured ITL stays within the ITL target, each pool on its
own. Here the same two quantities come from the component's capacity and slots rather than a
profile, the queueing wait is modelled rather than left to a correction factor, and both pools
are fed by the one ingress forecast carried down the graph, so they scale together.

Worked numbers (the disaggregated example on the Azure trace, 1,155 prompt and 211 output
tokens per request): prefill, 12,000 prompt tokens/s and 0.4 s per replica, holds 4 slots, so a
mean prompt takes 4 / 12,000 x 1,155 = 0.385 s and the 2 s TTFT leaves 1.615 s of waiting;
decode, 1,500 output tokens/s and 7 s, holds 50 slots, 0.0333 s a token, so the 0.05 s ITL
leaves (0.05 - 0.0333) x 211 = 3.5 s of waiting, tighter than its 11.9 s share of the 20 s
end-to-end budget: ITL binds decode.
"""

from __future__ import annotations

from elastiscale.controllers.queueing import QueueingSizer
from elastiscale.decision import Detail
from elastiscale.pipeline_model import OBJECTIVES, Objective, objectives, slots_for

__all__ = ["OBJECTIVES", "Objective", "SLOSizer", "note_binding", "objectives", "slots_for"]


class SLOSizer:
    """The fewest replicas meeting every objective of a component (see the module docstring).

    `served_rps(n)` is the least any objective lets n replicas serve; `replicas_for(rate)` the
    most any objective needs; `binding(rate)` names which one that is.
    """

    def __init__(
        self,
        *,
        objectives: list[Objective],
        capacity_rps: float,
        service_time_s: float,
        max_replicas: int,
        burst_share: float,
        quantile: float = 0.95,
    ) -> None:
        if not objectives:
            raise ValueError("SLOSizer needs at least one objective")
        self.objectives = {o.name: o for o in objectives}
        self.max_replicas = max_replicas
        self.capacity_rps = capacity_rps
        self.sizers = {
            o.name: QueueingSizer(
                capacity_rps=capacity_rps,
                service_time_s=service_time_s,
                budget_s=o.target_s,
                max_replicas=max_replicas,
                burst_share=burst_share,
                quantile=quantile,
                slack_s=max(o.wait_s, 0.0),
            )
            for o in objectives
        }

    def served_rps(self, replicas: int) -> float:
        return min(s.served_rps(replicas) for s in self.sizers.values())

    def replicas_for(self, rate_rps: float) -> int:
        return max(s.replicas_for(rate_rps) for s in self.sizers.values())

    def counts(self, rate_rps: float) -> dict[str, int]:
        """Replicas each objective needs for `rate_rps`."""
        return {name: s.replicas_for(rate_rps) for name, s in self.sizers.items()}

    def binding(self, rate_rps: float) -> str:
        """The objective that needs the most replicas for `rate_rps` (ties: OBJECTIVES order)."""
        counts = self.counts(rate_rps)
        top = max(counts.values())
        return next(n for n in OBJECTIVES if counts.get(n) == top)


def note_binding(sizer: object, rate_rps: float, details: dict[str, Detail]) -> str:
    """For an `SLOSizer`, put the replicas each objective needs for `rate_rps` and the one that
    binds (`slo_bound`) into `details`, and return a clause for the reason ("" otherwise)."""
    if not isinstance(sizer, SLOSizer):
        return ""
    for name, count in sizer.counts(rate_rps).items():
        details[f"{name}_replicas"] = count
    bound = sizer.binding(rate_rps)
    details["slo_bound"] = bound
    return f" ({bound} {sizer.objectives[bound].target_s:g} s binds)"
