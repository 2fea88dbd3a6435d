"""Sizing against TTFT and ITL objectives (controllers/slo_sizing.py): table-driven scenarios
naming the objective that binds, a property that the count returned meets every objective
under the queueing model and one replica fewer does not, the budget a TTFT objective takes
from the end-to-end SLO, and the `elastiscale` decision records of the disaggregated example.

The property checks the sizer against an evaluation of the model written here from its
definition (Erlang C, the p95 of the wait), not against the sizer's own tables."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale.backtest.baselines import build_policy
from elastiscale.backtest.runner import simulate
from elastiscale.config import ComponentConfig, load_config
from elastiscale.controllers.slo_sizing import SLOSizer, objectives, slots_for
from elastiscale.decision import Proposal
from elastiscale.pipeline_model import latency_budgets
from elastiscale.trace import load_trace

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples/pipelines/disaggregated.yaml"
BURST_SHARE = 0.75


def component(**given: Any) -> ComponentConfig:
    return ComponentConfig.model_validate(given)


PREFILL = component(
    capacity_per_replica=12000,
    capacity_unit="input_tokens",
    service_time_s=0.4,
    startup_s=240,
    replicas={"min": 1, "max": 64},
    slo={"ttft_p95_s": 2.0},
)


def decode(**slo: float) -> ComponentConfig:
    return component(
        capacity_per_replica=1500,
        capacity_unit="output_tokens",
        service_time_s=7.0,
        startup_s=240,
        replicas={"min": 1, "max": 64},
        slo=slo,
    )


DECODE = decode(itl_p95_s=0.05)


def erlang_c(servers: int, load: float) -> float:
    """P(wait) in M/M/c: Erlang B by its recurrence B(k) = aB(k-1) / (k + aB(k-1)), then
    C = B / (1 - rho (1 - B))."""
    if load >= servers:
        return 1.0
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = load * blocking / (k + load * blocking)
    rho = load / servers
    return blocking / (1.0 - rho * (1.0 - blocking))


def p95_wait_s(comp: ComponentConfig, replicas: int, rate_rps: float, size: float) -> float:
    """The p95 queue wait of `replicas` replicas of `comp` at `rate_rps` calls of `size`."""
    capacity_rps = comp.capacity_per_replica / size
    per_replica = capacity_rps * comp.service_time_s
    servers = max(replicas, round(replicas * per_replica))
    server_rate = replicas * capacity_rps / servers
    if rate_rps >= servers * server_rate:
        return math.inf
    waits = erlang_c(servers, rate_rps / server_rate)
    if waits <= 0.05:
        return 0.0
    return math.log(waits / 0.05) / (servers * server_rate - rate_rps)


def meets(comp: ComponentConfig, budget_s: float, replicas: int, rate: float, size: float) -> bool:
    """Every objective of `comp` met by `replicas` under the model (the random wait within what
    the burst share leaves of each allowance)."""
    wait_s = p95_wait_s(comp, replicas, rate, size)
    allowed = [o.wait_s for o in objectives(comp, budget_s, size)]
    return all(wait_s <= (1.0 - BURST_SHARE) * max(a, 0.0) + 1e-9 for a in allowed)


def sizer_for(comp: ComponentConfig, budget_s: float, size: float) -> SLOSizer:
    return SLOSizer(
        objectives=objectives(comp, budget_s, size),
        capacity_rps=comp.capacity_per_replica / (size if comp.capacity_unit != "requests" else 1),
        service_time_s=comp.service_time_s,
        max_replicas=comp.replicas.max,
        burst_share=BURST_SHARE,
    )


def test_worked_numbers_of_the_docstring() -> None:
    prefill = {o.name: o for o in objectives(PREFILL, 2.0, 1155.0)}
    assert set(prefill) == {"ttft_p95_s"}  # the TTFT is prefill's whole budget
    assert prefill["ttft_p95_s"].wait_s == pytest.approx(2.0 - 4 / 12000 * 1155)
    decode = {o.name: o for o in objectives(DECODE, 18.87, 211.0)}
    assert slots_for(1500 / 211, 7.0) == 50
    assert decode["itl_p95_s"].wait_s == pytest.approx((0.05 - 50 / 1500) * 211)
    assert decode["latency_p95_s"].wait_s == pytest.approx(18.87 - 7.0)


@pytest.mark.parametrize(
    ("comp", "budget_s", "size", "rate_rps", "bound"),
    [
        # Prefill at the Azure mean prompt, 40 calls/s: sized on TTFT alone.
        (PREFILL, 2.0, 1155.0, 40.0, "ttft_p95_s"),
        # Mooncake's long prompts: a call takes a second of the 2 s.
        (PREFILL, 2.0, 12035.0, 18.0, "ttft_p95_s"),
        # Decode at 211 output tokens, 6 calls/s: ITL leaves 3.5 s of waiting, the share 11.9 s.
        (DECODE, 18.87, 211.0, 6.0, "itl_p95_s"),
        # A loose ITL: the end-to-end share binds instead.
        (
            decode(itl_p95_s=0.5),
            9.0,
            211.0,
            6.0,
            "latency_p95_s",
        ),
        # A decode server's TTFT is one token after its wait: tighter than a 0.05 s ITL.
        (
            decode(ttft_p95_s=0.1, itl_p95_s=0.05),
            18.87,
            211.0,
            6.0,
            "ttft_p95_s",
        ),
        # A component sized in requests, TTFT after its whole 4 s call.
        (
            component(
                capacity_per_replica=1.5,
                service_time_s=4.0,
                startup_s=60,
                replicas={"max": 64},
                slo={"ttft_p95_s": 4.5},
            ),
            4.5,
            1.0,
            20.0,
            "ttft_p95_s",
        ),
    ],
    ids=[
        "prefill-azure",
        "prefill-mooncake",
        "decode-itl",
        "decode-share",
        "decode-ttft",
        "requests",
    ],
)
def test_the_count_is_the_binding_objectives(
    comp: ComponentConfig, budget_s: float, size: float, rate_rps: float, bound: str
) -> None:
    sizer = sizer_for(comp, budget_s, size)
    count = sizer.replicas_for(rate_rps)
    counts = sizer.counts(rate_rps)
    assert sizer.binding(rate_rps) == bound
    assert count == counts[bound] == max(counts.values())
    assert 1 < count <= comp.replicas.max
    assert meets(comp, budget_s, count, rate_rps, size)
    assert not meets(comp, budget_s, count - 1, rate_rps, size)
    assert sizer.served_rps(count) >= rate_rps > sizer.served_rps(count - 1)


def test_a_tighter_objective_never_needs_fewer_replicas() -> None:
    counts = [
        sizer_for(decode(itl_p95_s=itl), 18.87, 211.0).replicas_for(6.0)
        for itl in (0.5, 0.05, 0.036, 0.034, 0.0335)
    ]
    assert counts == sorted(counts) and counts[-1] > counts[0]


@settings(max_examples=60, deadline=None)
@given(
    decode=st.booleans(),
    capacity=st.floats(500.0, 20000.0),
    service_s=st.floats(0.2, 10.0),
    size=st.floats(50.0, 5000.0),
    target=st.floats(1.05, 4.0),
    budget_factor=st.floats(1.0, 4.0),
    load=st.floats(0.05, 0.95),
)
def test_the_count_meets_every_objective_and_one_fewer_does_not(
    decode: bool,
    capacity: float,
    service_s: float,
    size: float,
    target: float,
    budget_factor: float,
    load: float,
) -> None:
    """Over random components, call sizes and loads (up to 12 replicas): the count meets the
    model, count - 1 misses it; past the bound, even the max misses it."""
    capacity_rps = capacity / size
    hold_s = slots_for(capacity_rps, service_s) / capacity_rps
    if decode:
        slo = {"itl_p95_s": target * hold_s / size, "ttft_p95_s": target * hold_s}
    else:
        slo = {"ttft_p95_s": target * hold_s}
    comp = component(
        capacity_per_replica=capacity,
        capacity_unit="output_tokens" if decode else "input_tokens",
        service_time_s=service_s,
        startup_s=60,
        replicas={"max": 12},
        slo=slo,
    )
    budget_s = budget_factor * service_s
    rate = load * 12 * capacity_rps
    sizer = sizer_for(comp, budget_s, size)
    count = sizer.replicas_for(rate)
    if count > comp.replicas.max:
        assert not meets(comp, budget_s, comp.replicas.max, rate * (1 + 1e-6), size)
        return
    assert meets(comp, budget_s, count, rate * (1 - 1e-6), size)
    if count > 1:
        assert not meets(comp, budget_s, count - 1, rate * (1 + 1e-6), size)


def test_a_ttft_objective_is_the_prefill_budget_and_the_rest_is_shared() -> None:
    config = load_config(EXAMPLE)
    budgets = latency_budgets(config)
    assert budgets["prefill"] == 2.0
    # The 18 s left of the 20 s SLO is shared by router (0.02 s) and decode (7 s).
    assert budgets["decode"] == pytest.approx(7.0 * 18.0 / 7.02)
    assert budgets["router"] == pytest.approx(0.02 * 18.0 / 7.02)


def test_elastiscale_records_which_objective_bound_each_part() -> None:
    config = load_config(EXAMPLE)
    trace = load_trace(REPO / "examples/traces/azure_llm_2023_conv_1s.csv")
    trace = trace.window(end_s=900.0).scaled(rate_scale=4.0)
    policy = build_policy("elastiscale", config, trace=trace)
    seen: list[dict[str, Proposal]] = []
    propose = policy.propose

    def recording(ctx: Any) -> Any:
        out = propose(ctx)
        seen.append(dict(out))
        return out

    policy.propose = recording  # type: ignore[method-assign]
    initial = {n: c.replicas.min for n, c in config.pipeline.components.items()}
    simulate(config, trace, policy, initial_replicas=initial, metrics_delay_s=15.0)
    sized = [p for p in seen if "slo_bound" in p["prefill"].details]
    assert len(sized) > len(seen) // 2
    for proposals in sized:
        prefill, decode = proposals["prefill"].details, proposals["decode"].details
        assert prefill["slo_bound"] == "ttft_p95_s" and "latency_p95_s_replicas" not in prefill
        assert prefill["need"] == min(max(prefill["ttft_p95_s_replicas"], 1), 32)
        assert decode["slo_bound"] in {"itl_p95_s", "latency_p95_s"}
        assert decode[f"{decode['slo_bound']}_replicas"] >= decode["latency_p95_s_replicas"]
        assert "binds" in proposals["prefill"].reason
    assert "slo_bound" not in sized[-1]["router"].details  # no token objective there
