"""The shared GPU budget and the invariants of `elastiscale`: table-driven cases of the
allocation, and hypothesis properties (the budget holds; propagation never lowers a component
below its reactive proposal)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elastiscale.controllers.budget import Claim, GpuPool, allocate, late_requests
from elastiscale.controllers.queueing import QueueingSizer
from test_feedforward import Driver, make_config


def linear(per_replica: float) -> Any:
    return lambda n: n * per_replica


def claim(key: str, wanted: int, demand: float, calls: float, **kw: Any) -> Claim:
    fields: dict[str, Any] = {
        "gpus_per_replica": 1.0,
        "min_replicas": 1,
        "served_rps": linear(1.0),
        "ingress_rps": 10.0,
    }
    fields.update(kw)
    return Claim(key=key, wanted=wanted, demand_rps=demand, calls_per_request=calls, **fields)


def test_late_requests_compound_over_calls() -> None:
    # 10% short: one call per request -> 10% late; four calls -> 1 - 0.9^4 = 34.4% late.
    once = claim("a", 10, 10.0, 1.0)
    four = claim("b", 10, 10.0, 4.0)
    assert late_requests(once, 9) == pytest.approx(1.0)
    assert late_requests(four, 9) == pytest.approx(10 * (1 - 0.9**4))
    assert late_requests(once, 10) == 0.0


# (case, claims, max_gpus, expected grants)
CASES = [
    ("fits: everyone gets what it wants", [claim("a", 5, 5.0, 1.0), claim("b", 5, 5.0, 4.0)],
     10, {"a": 5, "b": 5}),
    ("binding: the component called 4 times per request first",
     [claim("a", 10, 10.0, 1.0), claim("b", 10, 10.0, 4.0)], 15, {"a": 5, "b": 10}),
    ("binding: a 2-GPU replica saves half as much per GPU",
     [claim("a", 10, 10.0, 1.0, gpus_per_replica=2.0), claim("b", 10, 10.0, 1.0)], 20,
     {"a": 5, "b": 10}),
    ("minimums first, even when they are all that fits",
     [claim("a", 10, 10.0, 1.0, min_replicas=4), claim("b", 10, 10.0, 4.0, min_replicas=4)], 8,
     {"a": 4, "b": 4}),
    ("replicas that save nothing are left free",
     [claim("a", 10, 2.0, 1.0), claim("b", 10, 10.0, 1.0)], 15, {"a": 2, "b": 10}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "claims", "max_gpus", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_allocation(
    case: str, claims: list[Claim], max_gpus: float, expected: dict[str, int]
) -> None:
    got = allocate(claims, max_gpus)
    assert got.granted == expected
    assert got.gpus_used <= max_gpus + 1e-9


def test_minimums_that_do_not_fit_are_flagged() -> None:
    got = allocate([claim("a", 10, 10.0, 1.0, min_replicas=6)], 4)
    assert got.infeasible and got.granted == {"a": 6}


def test_a_pool_shared_by_two_pipelines_never_exceeds_its_size() -> None:
    pool = GpuPool("test", 20)
    first = pool.request("p1", [claim("llm", 15, 15.0, 1.0)])
    assert first.granted == {"llm": 15}
    # The second pipeline gets only what the first leaves, until the first ticks again.
    second = pool.request("p2", [claim("llm", 15, 15.0, 4.0)])
    assert pool.granted_gpus() <= 20
    assert second.granted["llm"] <= 5
    again = pool.request("p1", [claim("llm", 15, 15.0, 1.0)])
    assert pool.granted_gpus() <= 20
    assert again.granted["llm"] < 15  # p2's requests weigh more: p1 gives way
    later = pool.request("p2", [claim("llm", 15, 15.0, 4.0)])
    assert pool.granted_gpus() <= 20
    assert later.granted["llm"] > second.granted["llm"]


def test_the_policy_divides_a_binding_budget_by_slo_impact() -> None:
    # Planner (1 GPU, 4 calls per request) and writer (2 GPUs, 1 call): 30 GPUs for both.
    driver = Driver(make_config(max_gpus=30))
    got: dict[str, Any] = {}
    for i in range(40):
        got = driver.tick(i * 15.0, {"router": 20.0, "planner": 80.0, "writer": 20.0})
    planner, writer = got["planner"], got["writer"]
    used = planner.replicas * 1 + writer.replicas * 2
    assert used <= 30
    assert planner.details["budget_granted"] == planner.replicas
    assert writer.details.get("clamp") == "gpu_budget"
    # The planner is served first: each of its GPUs saves four times a writer call's worth.
    assert planner.replicas == planner.details["budget_wanted"]


# --------------------------------------------------------------------------------------------
# Properties


@st.composite
def claims_strategy(draw: Any) -> list[Claim]:
    count = draw(st.integers(1, 5))
    out = []
    for i in range(count):
        minimum = draw(st.integers(0, 3))
        out.append(
            Claim(
                key=f"c{i}",
                gpus_per_replica=draw(st.sampled_from([0.5, 1.0, 2.0, 4.0])),
                min_replicas=minimum,
                wanted=draw(st.integers(minimum, 40)),
                demand_rps=draw(st.floats(0.0, 100.0)),
                served_rps=QueueingSizer(
                    capacity_rps=draw(st.floats(0.5, 10.0)),
                    service_time_s=2.0,
                    budget_s=10.0,
                    max_replicas=50,
                    burst_share=0.75,
                ).served_rps,
                calls_per_request=draw(st.floats(0.1, 8.0)),
                ingress_rps=draw(st.floats(0.1, 50.0)),
            )
        )
    return out


@settings(max_examples=60, deadline=None)
@given(claims=claims_strategy(), max_gpus=st.floats(1.0, 200.0))
def test_the_budget_holds(claims: list[Claim], max_gpus: float) -> None:
    got = allocate(claims, max_gpus)
    minimums = sum(c.min_replicas * c.gpus_per_replica for c in claims)
    for c in claims:
        assert c.min_replicas <= got.granted[c.key] <= max(c.wanted, c.min_replicas)
    if minimums <= max_gpus:
        assert sum(got.granted[c.key] * c.gpus_per_replica for c in claims) <= max_gpus + 1e-9
    else:
        assert got.infeasible


rates = st.floats(0.0, 60.0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ticks=st.lists(st.tuples(rates, rates, rates, st.floats(0.0, 500.0)), min_size=1, max_size=12)
)
def test_propagation_never_lowers_a_component_below_its_reactive_proposal(
    ticks: list[tuple[float, float, float, float]],
) -> None:
    driver = Driver(make_config())
    for i, (router, planner, writer, queue) in enumerate(ticks):
        got = driver.tick(
            i * 15.0,
            {"router": router, "planner": planner, "writer": writer},
            queues={"planner": queue},
        )
        for name, proposal in got.items():
            bounds = driver.config.pipeline.components[name].replicas
            reactive = proposal.details.get("reactive_replicas")
            assert proposal.replicas is not None and isinstance(reactive, int)
            assert proposal.replicas >= min(reactive, bounds.max)
