"""The dependency graph: topological order, propagation of demand through fan-out, shared
components, series propagation and paths from ingress."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale.config import validate_mapping
from elastiscale.pipeline import Pipeline


def component(ingress: bool = False) -> dict[str, Any]:
    return {
        "ingress": ingress,
        "capacity_per_replica": 1.0,
        "service_time_s": 1.0,
        "replicas": {"min": 0, "max": 10},
    }


def pipeline(
    names: list[str], edges: list[tuple[str, str, float]], ingress: tuple[str, ...] = ()
) -> Pipeline:
    """A pipeline of `names` (declared in that order); the first is ingress unless told."""
    entry = ingress or (names[0],)
    raw = {
        "pipeline": {
            "name": "p",
            "slo": {"latency_p95_s": 10},
            "components": {n: component(n in entry) for n in names},
            "edges": [{"from": a, "to": b, "fanout": f} for a, b, f in edges],
        }
    }
    return Pipeline(validate_mapping(raw).pipeline)


def docstring_example() -> Pipeline:
    """router -> planner (fan-out 4) -> retriever (1.5), router -> retriever (1)."""
    return pipeline(
        ["router", "planner", "retriever"],
        [("router", "planner", 4.0), ("planner", "retriever", 1.5), ("router", "retriever", 1.0)],
    )


# --------------------------------------------------------------------------------------------
# Order


@pytest.mark.parametrize(
    ("names", "edges", "order"),
    [
        # declared out of order: the graph decides
        (["llm", "router"], [("router", "llm", 1.0)], ("router", "llm")),
        (
            ["retriever", "llm", "router"],
            [("router", "retriever", 1.0), ("retriever", "llm", 1.0)],
            ("router", "retriever", "llm"),
        ),
        # ties go to the component declared first, even when it becomes ready later
        (
            ["a", "b", "c", "d"],
            [("a", "d", 1.0), ("b", "c", 1.0)],
            ("a", "b", "c", "d"),
        ),
        (
            ["router", "tools", "planner", "writer"],
            [("router", "planner", 1.0), ("planner", "tools", 1.0), ("router", "writer", 1.0)],
            ("router", "planner", "tools", "writer"),
        ),
        # a diamond
        (
            ["router", "left", "right", "join"],
            [
                ("router", "left", 1.0),
                ("router", "right", 1.0),
                ("left", "join", 1.0),
                ("right", "join", 1.0),
            ],
            ("router", "left", "right", "join"),
        ),
    ],
)
def test_topological_order(
    names: list[str], edges: list[tuple[str, str, float]], order: tuple[str, ...]
) -> None:
    ingress = ("router",) if "router" in names else ("a", "b")
    assert pipeline(names, edges, ingress).order == order


def test_neighbours_and_prior_fanouts() -> None:
    p = docstring_example()
    assert p.ingress == ("router",)
    assert p.upstream("retriever") == ["planner", "router"]
    assert p.downstream("router") == ["planner", "retriever"]
    assert p.upstream("router") == []
    assert [e.fanout for e in p.incoming("retriever")] == [1.5, 1.0]
    assert p.prior_fanouts() == {
        ("router", "planner"): 4.0,
        ("planner", "retriever"): 1.5,
        ("router", "retriever"): 1.0,
    }


# --------------------------------------------------------------------------------------------
# Propagation


@pytest.mark.parametrize(
    ("external", "fanout", "expected"),
    [
        # the docstring's worked example: 40 x 1.5 + 10 = 70 at the shared retriever
        ({"router": 10.0}, None, {"router": 10.0, "planner": 40.0, "retriever": 70.0}),
        ({"router": 0.0}, None, {"router": 0.0, "planner": 0.0, "retriever": 0.0}),
        # measured fan-out overrides the configured one on its edge only: 10 x 2 x 1.5 + 10
        (
            {"router": 10.0},
            {("router", "planner"): 2.0},
            {"router": 10.0, "planner": 20.0, "retriever": 40.0},
        ),
        # external demand at a non-ingress component adds to what flows in
        (
            {"router": 10.0, "retriever": 5.0},
            None,
            {"router": 10.0, "planner": 40.0, "retriever": 75.0},
        ),
        # nothing given: nothing flows
        ({}, None, {"router": 0.0, "planner": 0.0, "retriever": 0.0}),
    ],
)
def test_propagate(
    external: dict[str, float],
    fanout: dict[tuple[str, str], float] | None,
    expected: dict[str, float],
) -> None:
    assert docstring_example().propagate(external, fanout) == pytest.approx(expected)


def test_shared_components_add_up_over_every_branch() -> None:
    """Two ingresses and a retriever shared by a planner and a writer."""
    p = pipeline(
        ["chat", "batch", "planner", "writer", "retriever"],
        [
            ("chat", "planner", 3.0),
            ("batch", "writer", 2.0),
            ("planner", "retriever", 2.0),
            ("writer", "retriever", 1.0),
            ("chat", "retriever", 1.0),
        ],
        ingress=("chat", "batch"),
    )
    demand = p.propagate({"chat": 4.0, "batch": 10.0})
    # 4 x 3 x 2 (via planner) + 10 x 2 x 1 (via writer) + 4 x 1 (direct) = 24 + 20 + 4
    assert demand["retriever"] == pytest.approx(48.0)
    assert demand["planner"] == pytest.approx(12.0)
    assert demand["writer"] == pytest.approx(20.0)


def test_propagate_series_of_the_worked_example() -> None:
    p = docstring_example()
    out = p.propagate_series({"router": np.array([0.0, 10.0, 20.0])})
    np.testing.assert_allclose(out["planner"], [0.0, 40.0, 80.0])
    np.testing.assert_allclose(out["retriever"], [0.0, 70.0, 140.0])
    np.testing.assert_allclose(out["router"], [0.0, 10.0, 20.0])


@st.composite
def graphs_and_series(
    draw: st.DrawFn,
) -> tuple[Pipeline, dict[str, np.ndarray[Any, np.dtype[np.float64]]]]:
    """A random DAG (edges only from earlier to later positions of a shuffled order), some
    ingress components, and a demand series per ingress."""
    size = draw(st.integers(1, 7))
    names = [f"c{i}" for i in range(size)]
    rank = draw(st.permutations(names))  # the hidden topological order
    pairs = [(rank[i], rank[j]) for i in range(size) for j in range(i + 1, size)]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True)) if pairs else []
    fanouts = st.floats(0.0, 10.0, allow_nan=False)
    edges = [(a, b, draw(fanouts)) for a, b in chosen]
    ingress = tuple(draw(st.lists(st.sampled_from(names), min_size=1, unique=True)))
    length = draw(st.integers(1, 20))
    values = st.floats(0.0, 1000.0, allow_nan=False)
    series = {
        n: np.array(draw(st.lists(values, min_size=length, max_size=length))) for n in ingress
    }
    return pipeline(names, edges, ingress), series


@settings(max_examples=150, deadline=None)
@given(graphs_and_series())
def test_propagate_series_equals_propagate_at_every_point(
    case: tuple[Pipeline, dict[str, np.ndarray[Any, np.dtype[np.float64]]]],
) -> None:
    p, series = case
    out = p.propagate_series(series)
    assert set(out) == set(p.order)
    length = next(iter(series.values())).size
    for t in range(length):
        pointwise = p.propagate({n: float(s[t]) for n, s in series.items()})
        for name in p.order:
            assert out[name][t] == pytest.approx(pointwise[name], rel=1e-9, abs=1e-6)


@settings(max_examples=150, deadline=None)
@given(graphs_and_series())
def test_order_puts_every_upstream_first_and_demand_is_monotone(
    case: tuple[Pipeline, dict[str, np.ndarray[Any, np.dtype[np.float64]]]],
) -> None:
    p, series = case
    position = {n: i for i, n in enumerate(p.order)}
    assert sorted(p.order) == sorted(p.components)
    for edge in p.edges:
        assert position[edge.source] < position[edge.target]
    # more demand at any ingress never means less anywhere downstream
    low = p.propagate({n: float(s[0]) for n, s in series.items()})
    high = p.propagate({n: float(s[0]) + 1.0 for n, s in series.items()})
    for name in p.order:
        assert high[name] >= low[name]


def test_propagate_series_with_some_ingress_missing_counts_it_as_zero() -> None:
    p = pipeline(
        ["chat", "batch", "llm"],
        [("chat", "llm", 2.0), ("batch", "llm", 1.0)],
        ingress=("chat", "batch"),
    )
    out = p.propagate_series({"chat": np.array([1.0, 2.0])})
    np.testing.assert_allclose(out["llm"], [2.0, 4.0])
    np.testing.assert_allclose(out["batch"], [0.0, 0.0])


# --------------------------------------------------------------------------------------------
# Paths


def test_paths_from_ingress() -> None:
    p = docstring_example()
    assert sorted(p.paths_from_ingress("retriever")) == [
        ["router", "planner", "retriever"],
        ["router", "retriever"],
    ]
    assert p.paths_from_ingress("planner") == [["router", "planner"]]
    assert p.paths_from_ingress("router") == [["router"]]


def test_paths_through_a_diamond_and_a_second_ingress() -> None:
    p = pipeline(
        ["router", "left", "right", "join", "side"],
        [
            ("router", "left", 1.0),
            ("router", "right", 1.0),
            ("left", "join", 1.0),
            ("right", "join", 1.0),
            ("side", "join", 1.0),
        ],
        ingress=("router", "side"),
    )
    assert sorted(p.paths_from_ingress("join")) == [
        ["router", "left", "join"],
        ["router", "right", "join"],
        ["side", "join"],
    ]


def test_an_ingress_with_upstreams_is_also_a_path_of_its_own() -> None:
    p = pipeline(
        ["router", "agent"],
        [("router", "agent", 2.0)],
        ingress=("router", "agent"),
    )
    assert sorted(p.paths_from_ingress("agent")) == [["agent"], ["router", "agent"]]
