"""The latency model of a pipeline, shared by the policies and the backtest's oracle.

Both the `elastiscale` policy and the `oracle` baseline size a component against its share of
the end-to-end SLO with the same arithmetic, so it lives below both.

Latency budgets (`latency_budgets`)
    A component's `latency_budget_s`, else its share of the end-to-end SLO in proportion to its
    service time: every call may take SLO / E[path service time] times its service time, where
    E[path service time] sums, over components, the expected calls per ingress request times
    `service_time_s` (minus what components with explicit budgets use). Worked numbers: router
    (0.05 s, 1 call) -> llm (4 s, 3 calls), SLO 30 s: the path takes 0.05 + 12 = 12.05 s, so each
    call may take 30 / 12.05 = 2.49 times its service time: 0.12 s at the router, 9.96 s per llm
    call. A component whose time to first token is its whole call (a prefill server: any
    capacity unit but `output_tokens`) with `slo.ttft_p95_s` and no `latency_budget_s` takes
    that TTFT as its budget (`ttft_budget_s`), and the others share the rest.

Sizing within a budget (`max_rate_within_budget`)
    n replicas are an M/M/c queue with c = max(n, round(n x k)) servers, where k =
    capacity_per_replica x service_time_s is one replica's concurrency (Little's law); the
    `quantile` of the Erlang-C wait must stay within the queueing slack (budget - service time).

Objectives of an LLM component (`objectives`)
    Its time to first token and inter-token latency objectives, and its share of the end-to-end
    SLO, each as the queue wait it allows a call (controllers/slo_sizing.py explains them).

`OracleParams`
    The quantile met, and the share of the slack left to demand swings inside a rate window
    (`burst_share`): the oracle's parameters, whose defaults the `elastiscale` policy shares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat
from scipy.special import gammaincc, gammaln

from elastiscale.config import ComponentConfig, Config
from elastiscale.pipeline import Pipeline

Array = npt.NDArray[np.float64]


def ttft_budget_s(comp: ComponentConfig) -> float | None:
    """The TTFT objective that is `comp`'s whole per-call budget: set when the component has
    `slo.ttft_p95_s`, no `latency_budget_s`, and emits its first token when its call ends
    (every capacity unit but `output_tokens`); else None."""
    if comp.latency_budget_s is not None or comp.slo is None or comp.slo.ttft_p95_s is None:
        return None
    if comp.capacity_unit == "output_tokens":
        return None
    return comp.slo.ttft_p95_s


def _fixed_budget_s(comp: ComponentConfig) -> float | None:
    return comp.latency_budget_s if comp.latency_budget_s is not None else ttft_budget_s(comp)


def latency_budgets(config: Config) -> dict[str, float]:
    """Each component's per-call latency budget, seconds (see the module docstring; a merged
    fleet unit: `_unit_budgets`)."""
    spec = config.pipeline
    pipeline = Pipeline(spec)
    fixed = {n: _fixed_budget_s(c) for n, c in spec.components.items()}
    if spec.members:
        return _unit_budgets(config, pipeline, fixed)
    slo_s = spec.slo.latency_p95_s
    budgets: dict[str, float] = {}
    factor = math.inf
    for ingress in pipeline.ingress:
        calls = pipeline.propagate({ingress: 1.0})
        fixed_s = sum(calls[n] * b for n, b in fixed.items() if b is not None)
        shared_s = sum(
            calls[n] * c.service_time_s for n, c in spec.components.items() if fixed[n] is None
        )
        if shared_s > 0:
            factor = min(factor, max(slo_s - fixed_s, 0.0) / shared_s)
    for name, comp in spec.components.items():
        budget = fixed[name]
        if budget is not None:
            budgets[name] = budget
        else:
            budgets[name] = comp.service_time_s * (factor if math.isfinite(factor) else 1.0)
    return budgets


def _unit_budgets(
    config: Config, pipeline: Pipeline, fixed: dict[str, float | None]
) -> dict[str, float]:
    """Per-path budgets of a merged fleet unit (`pipeline.members`): requests entering at a
    pipeline's ingress are held to that pipeline's SLO.

    1. A component the requests of several pipelines reach is one queue, so it must meet the
       tightest of their budgets: its service time times the smallest of their factors
       (each factor as for a pipeline alone: SLO over the path's service time).
    2. With those budgets fixed, each pipeline's SLO is split again over the components only
       its own requests reach, so the time a shared component leaves unused on a looser
       pipeline's path goes to that pipeline's own components.

    Every pipeline's path then adds up to its SLO. Worked numbers (examples/fleet): rag-qa
    (20 s) alone gives its LLM calls 19.34 s, support-agent (60 s) 25.39 s; shared, the LLM
    takes 19.34 s for both, and support-agent's own components (router, planner, tools,
    retriever: 8.12 s of service a request) share the 6.05 s its one LLM call no longer
    uses, a factor of 4.98 instead of 4.23 on their service times."""
    spec = config.pipeline
    service = {n: c.service_time_s for n, c in spec.components.items()}
    owner = {
        name: member
        for member, m in spec.members.items()
        for name in m.components
        if spec.components[name].ingress
    }
    calls = {i: pipeline.propagate({i: 1.0}) for i in pipeline.ingress}
    callers = {
        n: {owner.get(i, "") for i in pipeline.ingress if calls[i][n] > 0} for n in spec.components
    }

    def factors(given: dict[str, float]) -> dict[str, float]:
        """Per ingress: the SLO left after `given` budgets, over the rest's service time."""
        out = {}
        for i in pipeline.ingress:
            member = spec.members.get(owner.get(i, ""))
            slo_s = member.slo.latency_p95_s if member is not None else spec.slo.latency_p95_s
            used_s = sum(calls[i][n] * b for n, b in given.items())
            free_s = sum(calls[i][n] * service[n] for n in spec.components if n not in given)
            out[i] = max(slo_s - used_s, 0.0) / free_s if free_s > 0 else math.inf
        return out

    def budget_at(name: str, of: dict[str, float]) -> float:
        reaching = [f for i, f in of.items() if calls[i][name] > 0]
        factor = min(reaching, default=min(of.values(), default=math.inf))
        return service[name] * (factor if math.isfinite(factor) else 1.0)

    budgets = {n: b for n, b in fixed.items() if b is not None}
    first = factors(budgets)
    for name in spec.components:
        if name not in budgets and len(callers[name]) > 1:
            budgets[name] = budget_at(name, first)
    second = factors(budgets)
    for name in spec.components:
        if name not in budgets:
            budgets[name] = budget_at(name, second)
    return {n: budgets[n] for n in spec.components}


#: Objective names, in the order a tie is reported (the component's own first).
OBJECTIVES = ("ttft_p95_s", "itl_p95_s", "latency_p95_s")


@dataclass(frozen=True, slots=True)
class Objective:
    """One latency objective of a component, as a wait allowance in its queue."""

    name: str  # ttft_p95_s, itl_p95_s or latency_p95_s
    target_s: float  # the objective (for latency_p95_s: the component's budget)
    wait_s: float  # the queue wait the target leaves a request (< 0: unattainable)


def slots_for(capacity_rps: float, service_time_s: float) -> int:
    """A replica's slots for calls of `capacity_rps`, as the simulators count them."""
    return max(1, math.floor(capacity_rps * service_time_s + 0.5))


def objectives(
    comp: ComponentConfig, budget_s: float, tokens_per_request: float
) -> list[Objective]:
    """The objectives `comp` is sized against, for calls of `tokens_per_request` tokens in its
    capacity unit (1 for a component sized in requests); see controllers/slo_sizing.py."""
    size = tokens_per_request if comp.capacity_unit != "requests" else 1.0
    size = max(size, 1e-9)
    capacity_rps = comp.capacity_per_replica / size
    hold_s = slots_for(capacity_rps, comp.service_time_s) / capacity_rps
    per_token_s = hold_s / size
    decode = comp.capacity_unit == "output_tokens"
    out: list[Objective] = []
    slo = comp.slo
    if slo is not None and slo.ttft_p95_s is not None:
        first_token_s = per_token_s if decode else hold_s
        out.append(Objective("ttft_p95_s", slo.ttft_p95_s, slo.ttft_p95_s - first_token_s))
    if slo is not None and slo.itl_p95_s is not None:
        out.append(Objective("itl_p95_s", slo.itl_p95_s, (slo.itl_p95_s - per_token_s) * size))
    if ttft_budget_s(comp) is None:
        out.append(Objective("latency_p95_s", budget_s, budget_s - comp.service_time_s))
    return out


def _erlang_c(servers: Array, offered_load: Array) -> Array:
    """Probability that an arrival waits in an M/M/c queue (Erlang C), elementwise.

    Erlang B is the Poisson ratio pmf(c; a) / cdf(c; a), computed in log space so that hundreds
    of servers do not overflow; Erlang C = B / (1 - rho (1 - B)) with rho = a / c.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_pmf = servers * np.log(offered_load) - offered_load - gammaln(servers + 1.0)
        blocking = np.exp(log_pmf) / gammaincc(servers + 1.0, offered_load)
        blocking = np.where(offered_load > 0, blocking, 0.0)
        rho = offered_load / servers
        waiting: Array = np.where(rho < 1.0, blocking / (1.0 - rho * (1.0 - blocking)), 1.0)
    return np.clip(waiting, 0.0, 1.0)


def max_rate_within_budget(
    max_replicas: int,
    capacity_rps: float,
    service_time_s: float,
    budget_s: float,
    quantile: float = 0.95,
) -> Array:
    """rate_max[n]: the highest request rate n replicas serve within `budget_s` at `quantile`.

    Entry 0 is 0 (no replica serves nothing). Found by bisection on the rate, for every n at
    once; the result is made non-decreasing in n so that `searchsorted` inverts it.
    """
    n = np.arange(1, max_replicas + 1, dtype=float)
    per_replica_slots = capacity_rps * service_time_s
    servers = np.maximum(n, np.round(n * per_replica_slots))
    server_rate = n * capacity_rps / servers
    slack_s = max(budget_s - service_time_s, 0.0)
    miss = 1.0 - quantile
    low = np.zeros_like(n)
    high = n * capacity_rps
    for _ in range(60):
        rate = (low + high) / 2.0
        waits = _erlang_c(servers, rate / server_rate)
        headroom = servers * server_rate - rate
        with np.errstate(divide="ignore", invalid="ignore"):
            wait_q_s = np.where(
                waits <= miss, 0.0, np.log(waits / miss) / np.maximum(headroom, 1e-300)
            )
        ok = (headroom > 0) & (wait_q_s <= slack_s)
        low = np.where(ok, rate, low)
        high = np.where(ok, high, rate)
    rates: Array = np.maximum.accumulate(np.concatenate([[0.0], low]))
    return rates


class OracleParams(BaseModel):
    """Parameters of `oracle`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quantile: float = Field(0.95, gt=0.0, lt=1.0, description="latency quantile to meet")
    burst_share: float = Field(
        0.75, ge=0.0, le=1.0, description="share of the queueing slack left to demand swings"
    )
    rate_window_s: PositiveFloat = Field(20.0, description="future demand averaged over this")
