"""Shared component demand adds up: in a merged fleet unit, a shared component's demand is the
sum of what each pipeline alone sends it, every local component gets what it gets alone, and
the shares in the decision record sum to the total (hypothesis over random pipeline graphs)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale.config import DaemonConfig, validate_mapping
from elastiscale.config.fleet_merge import Member, merge_unit
from elastiscale.demand_shares import DemandShares, fractions
from elastiscale.observations import Observation
from elastiscale.pipeline import Pipeline
from elastiscale.pipeline_model import latency_budgets

SHARED = ("s0", "s1", "s2", "s3")


@st.composite
def pipelines(draw: st.DrawFn, index: int) -> dict[str, Any]:
    """A random DAG: one local ingress, some local components and some shared ones, edges
    only from earlier to later nodes of a random order (so it is acyclic)."""
    shared = draw(st.lists(st.sampled_from(SHARED), min_size=1, max_size=4, unique=True))
    local = [f"l{i}" for i in range(draw(st.integers(0, 3)))]
    rest = draw(st.permutations([*shared, *local]))
    order = ["in", *rest]
    edges = []
    for j, target in enumerate(order[1:], start=1):
        # every node gets at least one caller, sometimes more
        callers = draw(st.lists(st.integers(0, j - 1), min_size=1, max_size=2, unique=True))
        for i in callers:
            fanout = draw(st.sampled_from([0.5, 1.0, 2.0, 3.0]))
            edges.append({"from": order[i], "to": target, "fanout": fanout})
    comps = {
        name: {"ingress": name == "in", "capacity_per_replica": 10.0, "service_time_s": 0.1,
               "replicas": {"min": 1, "max": 10}}
        for name in order
    }  # fmt: skip
    return {"pipeline": {"name": f"p{index}", "slo": {"latency_p95_s": 10.0 * (index + 1)},
                         "components": comps, "edges": edges}}  # fmt: skip


@st.composite
def units(draw: st.DrawFn) -> tuple[list[dict[str, Any]], dict[str, float]]:
    count = draw(st.integers(2, 3))
    raws = [draw(pipelines(i)) for i in range(count)]
    rates = {f"p{i}": draw(st.floats(0.0, 100.0)) for i in range(count)}
    return raws, rates


@settings(max_examples=60, deadline=None)
@given(units())
def test_shared_component_demand_adds_up(
    case: tuple[list[dict[str, Any]], dict[str, float]],
) -> None:
    raws, rates = case
    members = [Member(f"{r['pipeline']['name']}.yaml", validate_mapping(r)) for r in raws]
    merged = merge_unit("unit", members, set(SHARED), daemon=DaemonConfig())
    demand = Pipeline(merged.pipeline).propagate({f"{m.name}/in": rates[m.name] for m in members})
    alone = {m.name: Pipeline(m.config.pipeline).propagate({"in": rates[m.name]}) for m in members}
    for m in members:
        for name in m.config.pipeline.components:
            if name not in SHARED:
                assert demand[f"{m.name}/{name}"] == pytest.approx(alone[m.name][name])
    observations = {
        f"{m.name}/in": Observation(f"{m.name}/in", 0.0, demand_rps=rates[m.name]) for m in members
    }
    shares = DemandShares(merged).of(observations)
    for name in SHARED:
        callers = [m for m in members if name in m.config.pipeline.components]
        if not callers:
            continue
        total = sum(alone[m.name][name] for m in callers)
        assert demand[name] == pytest.approx(total, abs=1e-9)
        if len(callers) < 2:
            assert name not in shares
            continue
        assert shares[name] == pytest.approx({m.name: alone[m.name][name] for m in callers})
        got = fractions(shares[name])
        if total > 0:
            assert got is not None and sum(got.values()) == pytest.approx(1.0)
        else:
            assert got is None


@settings(max_examples=30, deadline=None)
@given(units())
def test_a_merged_unit_is_acyclic_and_every_pipeline_keeps_its_own_calls(
    case: tuple[list[dict[str, Any]], dict[str, float]],
) -> None:
    """Each pipeline's requests reach, in the merged graph, exactly the components they reach
    alone (so each local component is held to its own pipeline's budget)."""
    raws, _ = case
    members = [Member(f"{r['pipeline']['name']}.yaml", validate_mapping(r)) for r in raws]
    merged = Pipeline(merge_unit("unit", members, set(SHARED), daemon=DaemonConfig()).pipeline)
    for m in members:
        calls = merged.propagate({f"{m.name}/in": 1.0})
        own = {n if n in SHARED else f"{m.name}/{n}" for n in m.config.pipeline.components}
        assert {n for n, v in calls.items() if v > 0} <= own


@settings(max_examples=30, deadline=None)
@given(units())
def test_per_path_budgets_a_shared_one_the_tightest_and_every_path_adds_up_to_its_slo(
    case: tuple[list[dict[str, Any]], dict[str, float]],
) -> None:
    """A shared component meets the tightest budget of its callers; a local one gets at least
    what it gets alone (the time a shared one leaves unused on its path); every pipeline's
    path adds up to its own SLO."""
    raws, _ = case
    members = [Member(f"{r['pipeline']['name']}.yaml", validate_mapping(r)) for r in raws]
    unit = merge_unit("unit", members, set(SHARED), daemon=DaemonConfig())
    merged = latency_budgets(unit)
    alone = {m.name: latency_budgets(m.config) for m in members}
    graph = Pipeline(unit.pipeline)
    for m in members:
        calls = graph.propagate({f"{m.name}/in": 1.0})
        path_s = sum(calls[n] * merged[n] for n in calls)
        assert path_s == pytest.approx(m.config.pipeline.slo.latency_p95_s)
        for name in m.config.pipeline.components:
            if name not in SHARED:
                assert merged[f"{m.name}/{name}"] >= alone[m.name][name] * (1 - 1e-9)
    for name in SHARED:
        # a pipeline whose requests never reach the component sets no budget for it
        reaching = [
            alone[m.name][name]
            for m in members
            if name in m.config.pipeline.components
            and Pipeline(m.config.pipeline).propagate({"in": 1.0})[name] > 0
        ]
        if len(reaching) > 1:  # one queue for several pipelines: the tightest budget
            assert merged[name] == pytest.approx(min(reaching))
        elif reaching:  # one pipeline's requests only: a local component in all but name
            assert merged[name] >= reaching[0] * (1 - 1e-9)
