"""Callers that wait for their downstream calls (`caller_waits`, `via`), in both fidelities.

A Ray Serve deployment that awaits a `DeploymentHandle` call keeps its request ongoing, and
Serve's autoscaler counts it: a caller's observed in-flight count is its calls in service plus
its calls awaiting their downstream calls. Scenarios on a fake clock, with replicas to spare
(no queueing), so that Little's law gives the expected counts: arrivals per second x the time
a call spends at the component, its own hold plus the downstream time it waits for.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale.backtest.runner import build_simulator
from elastiscale.backtest.simmetrics import SimulatedMetricSource
from elastiscale.clock import FakeClock
from elastiscale.config import Config, validate_mapping
from elastiscale.errors import ConfigError
from elastiscale.trace import Trace
from test_sim_support import flat_trace

FIDELITIES = ["fast", "discrete-event"]
RATE_RPS = 2.0
DURATION_S = 900.0
# Holds: router 0.05 s, planner 2 s, tools 1 s, writer 4 s (slots = capacity x service time).
COMPONENTS: dict[str, dict[str, Any]] = {
    "router": {"ingress": True, "capacity_per_replica": 100.0, "service_time_s": 0.05},
    "planner": {"capacity_per_replica": 1.0, "service_time_s": 2.0},
    "tools": {"capacity_per_replica": 2.0, "service_time_s": 1.0},
    "writer": {"capacity_per_replica": 0.5, "service_time_s": 4.0},
}
INITIAL = {"router": 2, "planner": 20, "tools": 20, "writer": 20}


def chain(waits: bool, *, handed_over: bool = True, planner_calls: float = 2.0) -> Config:
    """router -> planner (fixed `planner_calls`, one after another), each planner call ->
    tools (one), then the writer: called by the last planner call (`via`) when `handed_over`,
    else by the router; every caller waits for its calls when `waits`."""
    writer_edge: dict[str, Any] = {"from": "router", "to": "writer", "fanout": 1.0}
    if waits:
        writer_edge["caller_waits"] = True
        if handed_over:
            writer_edge["via"] = "planner"
    edges = [
        {"from": "router", "to": "planner", "fanout": planner_calls, "caller_waits": waits},
        {"from": "planner", "to": "tools", "fanout": 1.0, "caller_waits": waits},
        writer_edge,
    ]
    components = {
        name: {**spec, "startup_s": 0.0, "replicas": {"min": 0, "max": 100}}
        for name, spec in COMPONENTS.items()
    }
    return validate_mapping(
        {
            "pipeline": {
                "name": "waits",
                "slo": {"latency_p95_s": 60.0},
                "queue_timeout_s": 30.0,
                "components": components,
                "edges": edges,
            }
        }
    )


def mean_in_flight(fidelity: str, config: Config, seed: int = 0) -> dict[str, float]:
    """Each component's in-flight count as a policy sees it, averaged over the ticks of the
    last two thirds of the run (every 15 s, no metrics delay)."""
    trace = flat_trace(RATE_RPS, DURATION_S)
    sim = build_simulator(config, trace, INITIAL, fidelity=fidelity, seed=seed)
    clock = FakeClock(trace.start_s)
    source = SimulatedMetricSource(sim, config, clock, rate_window_s=60.0)
    seen: dict[str, list[float]] = {name: [] for name in COMPONENTS}
    for now_s in np.arange(300.0, DURATION_S, 15.0):
        sim.advance_to(float(now_s))
        clock.set(float(now_s))
        for name, obs in source.observe(list(COMPONENTS), float(now_s)).items():
            assert obs.in_flight is not None
            seen[name].append(obs.in_flight)
    return {name: float(np.mean(values)) for name, values in seen.items()}


# Expected in flight, by Little's law at 2 requests/s, 2 planner calls per request:
# planner 2 x 2 calls x 2 s = 8 in service; awaiting tools 2 x 2 x 1 s = 4; the last planner
# call awaiting the writer 2 x 4 s = 8. The router holds everything: 0.1 + 8 + 4 + 8 = 20.1.
CASES = [
    # (case, waits, handed over, expected in flight per component)
    ("no caller waits", False, False, {"router": 0.1, "planner": 8, "tools": 4, "writer": 8}),
    ("callers wait", True, False, {"router": 20.1, "planner": 12, "tools": 4, "writer": 8}),
    ("writer via planner", True, True, {"router": 20.1, "planner": 20, "tools": 4, "writer": 8}),
]


@pytest.mark.parametrize("fidelity", FIDELITIES)
@pytest.mark.parametrize(("case", "waits", "handed_over", "expected"), CASES)
def test_a_callers_in_flight_includes_its_downstream_waits(
    fidelity: str, case: str, waits: bool, handed_over: bool, expected: dict[str, float]
) -> None:
    got = mean_in_flight(fidelity, chain(waits, handed_over=handed_over))
    for name, want in expected.items():
        # the discrete-event count at the end of each step: +-0.1 noise on the router's 0.1
        assert got[name] == pytest.approx(want, rel=0.08, abs=0.05), f"{case}: {name}"


@pytest.mark.parametrize("fidelity", FIDELITIES)
def test_a_request_that_made_no_call_to_via_leaves_the_wait_with_its_caller(
    fidelity: str,
) -> None:
    # Poisson(0.5) planner calls: 61% of requests make none, and their writer call is the
    # router's own. Planner: 2 x 0.5 x (2 + 1) s = 3, plus the writer for the 39% that made a
    # planner call: 2 x 0.39 x 4 s = 3.15.
    config = chain(True, planner_calls=0.5)
    edges = [e.model_dump(by_alias=True) for e in config.pipeline.edges]
    edges[0]["fanout_distribution"] = "poisson"
    raw = {"pipeline": {**config.pipeline.model_dump(by_alias=True), "edges": edges}}
    got = mean_in_flight(fidelity, validate_mapping(raw))
    assert got["planner"] == pytest.approx(3.0 + 2.0 * (1 - np.exp(-0.5)) * 4.0, rel=0.1)
    assert got["writer"] == pytest.approx(8.0, rel=0.08)


@pytest.mark.parametrize("fidelity", FIDELITIES)
def test_waiting_changes_what_is_observed_only(fidelity: str) -> None:
    """Latency, completions, billing and drops are those of the same pipeline without
    waiting callers: `caller_waits` moves no work, only who counts it as in flight."""
    trace = flat_trace(RATE_RPS, 300.0)
    plain = build_simulator(chain(False), trace, INITIAL, fidelity=fidelity).result()
    waited = build_simulator(chain(True), trace, INITIAL, fidelity=fidelity).result()
    assert np.array_equal(plain.latency_s, waited.latency_s)
    assert np.array_equal(plain.weight, waited.weight)
    assert plain.dropped_requests == waited.dropped_requests
    for name in COMPONENTS:
        a, b = plain.components[name], waited.components[name]
        assert np.array_equal(a.completions, b.completions)
        assert np.array_equal(a.billed(), b.billed())
        assert np.array_equal(a.queue, b.queue)


def test_the_waits_of_dropped_requests_end_with_them() -> None:
    """No writer replica: every writer call times out (30 s) and drops its request. The load
    stops at 150 s; by the end every call has finished or timed out, so nothing may still
    be counted as waiting (a wait that outlived its dropped request would stay)."""
    config = chain(True)
    trace = flat_trace(RATE_RPS, 300.0)
    trace = Trace(
        name="stops", t_s=trace.t_s, requests=np.where(trace.t_s < 150, RATE_RPS, 0.0), bin_s=1.0
    )
    sim = build_simulator(config, trace, {**INITIAL, "writer": 0}, fidelity="discrete-event")
    result = sim.result()
    assert result.dropped_requests == pytest.approx(result.ingress_requests)
    planner, router = result.components["planner"], result.components["router"]
    # While the load lasts: 2 requests/s wait up to the 30 s timeout at the planner (and its
    # 8 in service and 4 awaiting tools), plus Poisson noise.
    assert 40.0 <= float(np.max(planner.in_flight)) <= 2.0 * 30.0 + 12.0 + 15.0
    assert float(planner.in_flight[-1]) == 0.0
    assert float(router.in_flight[-1]) == 0.0


BAD_EDGES = [
    (
        {"from": "router", "to": "writer", "via": "planner"},
        "pipeline.edges[2].via: needs caller_waits: true",
    ),
    (
        {"from": "router", "to": "writer", "via": "tools", "caller_waits": True},
        "pipeline.edges[2].via: 'tools' is not called by 'router' on an earlier sequential edge",
    ),
    (
        {
            "from": "router",
            "to": "writer",
            "via": "planner",
            "caller_waits": True,
            "mode": "parallel",
        },
        "pipeline.edges[2].via: only a sequential edge can be handed over",
    ),
]


@pytest.mark.parametrize(("edge", "message"), BAD_EDGES)
def test_a_bad_hand_over_is_refused_naming_the_edge(edge: dict[str, Any], message: str) -> None:
    config = chain(True)
    raw = config.pipeline.model_dump(by_alias=True)
    raw["edges"] = [*raw["edges"][:2], edge]
    with pytest.raises(ConfigError) as info:
        validate_mapping({"pipeline": raw})
    assert any(message in line for line in info.value.problems), info.value.problems


@settings(max_examples=25, deadline=None)
@given(
    planner_calls=st.floats(0.0, 3.0),
    distribution=st.sampled_from(["fixed", "poisson", "geometric"]),
    parallel_tools=st.booleans(),
    replicas=st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
    seed=st.integers(0, 2**16),
)
def test_waits_are_never_negative_and_end_with_the_calls(
    planner_calls: float,
    distribution: str,
    parallel_tools: bool,
    replicas: tuple[int, int, int],
    seed: int,
) -> None:
    """Whatever the fan-out, the modes and the drops (few or no replicas), a caller's
    in-flight count is never negative, and once the load has stopped long enough for every
    call to finish or time out, nothing is left waiting (discrete-event, exactly; fast, too)."""
    raw = chain(True, planner_calls=planner_calls).pipeline.model_dump(by_alias=True)
    raw["edges"][0]["fanout_distribution"] = distribution
    if parallel_tools:
        raw["edges"][1]["mode"] = "parallel"
    config = validate_mapping({"pipeline": raw})
    n = 400
    trace = Trace(
        name="stops", t_s=np.arange(n, dtype=float),
        requests=np.where(np.arange(n) < 100, RATE_RPS, 0.0), bin_s=1.0,
    )  # fmt: skip
    planner, tools, writer = replicas
    start = {"router": 2, "planner": planner, "tools": tools, "writer": writer}
    for fidelity in FIDELITIES:
        result = build_simulator(config, trace, start, fidelity=fidelity, seed=seed).result()
        for name in COMPONENTS:
            in_flight = result.components[name].in_flight
            assert float(np.min(in_flight)) >= -1e-9, (fidelity, name)
            # 100 s of load, then 300 s: every hop waits at most its 30 s timeout.
            assert float(in_flight[-1]) == pytest.approx(0.0, abs=1e-6), (fidelity, name)
