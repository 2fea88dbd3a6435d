"""Each mechanism of the simulators on its own, in both fidelities, on plain `now_s` values:
startup delay, billing of starting and draining replicas, draining, queue timeouts, token-sized
work, fan-out (sequential and parallel), and the invariants that tie them together."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale.backtest.model import SimulationResult, Simulator
from elastiscale.backtest.runner import build_simulator
from elastiscale.config import Config, validate_mapping
from elastiscale.trace import Trace
from test_sim_support import flat_trace, single_config

FIDELITIES = ["fast", "discrete-event"]


def run(
    fidelity: str,
    config: Config,
    trace: Trace,
    initial: dict[str, int],
    commands: Sequence[tuple[float, str, int]] = (),
    seed: int = 0,
) -> tuple[Simulator, SimulationResult]:
    """Advance to each command's time, apply it, then run to the end."""
    sim = build_simulator(config, trace, initial, fidelity=fidelity, seed=seed)
    for at_s, component, replicas in commands:
        sim.advance_to(at_s)
        sim.set_desired(component, replicas)
    return sim, sim.result()


def idle_trace(duration_s: float) -> Trace:
    return flat_trace(0.0, duration_s)


# --------------------------------------------------------------------------------------------
# Replicas: startup, billing, draining


@pytest.mark.parametrize("fidelity", FIDELITIES)
def test_new_replicas_are_ready_startup_s_after_the_request(fidelity: str) -> None:
    config = single_config(startup_s=60)
    sim = build_simulator(config, flat_trace(1.0, 300), {"svc": 1}, fidelity=fidelity)
    sim.advance_to(100)
    sim.set_desired("svc", 3)
    assert (sim.state("svc").desired, sim.state("svc").ready) == (3, 1)
    sim.advance_to(159)
    assert sim.state("svc").ready == 1
    sim.advance_to(160)
    assert sim.state("svc").ready == 3
    series = sim.series("svc")
    # Steps (100, 101] .. (159, 160]: two starting replicas; from then on three ready.
    assert np.allclose(series.starting[100:160], 2.0)
    assert np.allclose(series.ready[99:160], 1.0)
    assert series.starting[160:].size == 0 or np.allclose(series.starting[160:], 0.0)


@pytest.mark.parametrize("fidelity", FIDELITIES)
@pytest.mark.parametrize(
    ("commands", "replica_seconds"),
    [
        ([], 300.0),  # one replica for 300 s
        ([(100, 3), (200, 1)], 300.0 + 2 * 100),  # two more from 100 (starting, then ready)
        ([(100, 3), (130, 1)], 300.0 + 2 * 30),  # cancelled while starting: billed 30 s
        ([(100, 0)], 100.0),  # scaled to zero, idle: nothing to drain
        ([(50, 2), (50.5, 4), (120, 2)], 300 + 250 + 2 * 69.5),  # half-step times
    ],
)
def test_billing_counts_starting_replicas_from_the_request(
    fidelity: str, commands: list[tuple[float, int]], replica_seconds: float
) -> None:
    config = single_config(startup_s=60)
    _, result = run(
        fidelity, config, idle_trace(300), {"svc": 1}, [(t, "svc", n) for t, n in commands]
    )
    assert result.replica_seconds("svc") == pytest.approx(replica_seconds, abs=1e-6)


def test_a_draining_replica_finishes_its_call_and_is_billed_until_then() -> None:
    # One request at t in [0, 1) held 10 s by one of two replicas; at t = 2 scale to zero.
    config = single_config(capacity=0.1, service_time_s=10.0, startup_s=0.0)
    trace = Trace(name="one", t_s=np.arange(20.0), requests=np.eye(1, 20)[0], bin_s=1.0)
    sim, result = run("discrete-event", config, trace, {"svc": 2}, [(2.0, "svc", 0)])
    assert sim.state("svc").ready == 0
    assert result.dropped_requests == 0
    assert result.latency_s.tolist() == pytest.approx([10.0])
    done_s = float(result.completed_at_s[0])
    series = result.components["svc"]
    assert series.draining[3] == 1.0 and series.draining[int(done_s) + 1] == 0.0
    # Two replicas to t = 2, then the busy one until its call is done.
    assert result.replica_seconds("svc") == pytest.approx(2 * 2 + (done_s - 2))


def test_the_fluid_model_bills_a_busy_replica_one_hold_when_it_drains() -> None:
    config = single_config(capacity=1.0, service_time_s=4.0, startup_s=0.0)  # 4 slots, 4 s
    _, busy = run("fast", config, flat_trace(1.0, 100), {"svc": 3}, [(50, "svc", 2)])
    _, idle = run("fast", config, idle_trace(100), {"svc": 3}, [(50, "svc", 2)])
    assert busy.replica_seconds("svc") == pytest.approx(3 * 50 + 2 * 50 + 4.0)
    assert idle.replica_seconds("svc") == pytest.approx(3 * 50 + 2 * 50)


# --------------------------------------------------------------------------------------------
# Queue timeout and drops


@pytest.mark.parametrize("fidelity", FIDELITIES)
def test_with_no_replica_every_request_times_out_and_is_dropped(fidelity: str) -> None:
    config = single_config(queue_timeout_s=30)
    _, result = run(fidelity, config, flat_trace(1.0, 100), {"svc": 0})
    assert result.ingress_requests == pytest.approx(100)
    assert result.dropped_requests == pytest.approx(100)
    assert result.completed_requests == pytest.approx(0)
    drops = result.components["svc"].dropped
    # A request that arrived in [0, 1) is dropped 30 s later, not before.
    assert drops[:29].sum() == 0 and drops[29:32].sum() > 0


@pytest.mark.parametrize("fidelity", FIDELITIES)
def test_a_request_that_waits_less_than_the_timeout_is_served(fidelity: str) -> None:
    # No replica until t = 20 (ready at once), then plenty: the first requests waited < 30 s.
    config = single_config(capacity=10.0, service_time_s=1.0, startup_s=0.0, queue_timeout_s=30)
    _, result = run(fidelity, config, flat_trace(1.0, 100), {"svc": 0}, [(20, "svc", 5)])
    assert result.dropped_requests == pytest.approx(0)
    assert result.completed_requests == pytest.approx(100)
    longest = float(np.max(result.latency_s))
    assert 19.0 < longest <= 21.0 + 1e-9


@pytest.mark.parametrize("fidelity", FIDELITIES)
def test_a_drop_anywhere_drops_the_ingress_request(fidelity: str) -> None:
    config = two_stage_config(mode="sequential", fanout=1.0, llm_min=0)
    _, result = run(fidelity, config, flat_trace(1.0, 100), {"router": 1, "llm": 0})
    assert result.dropped_requests == pytest.approx(100)
    assert result.components["router"].dropped.sum() == 0


# --------------------------------------------------------------------------------------------
# Work in tokens


@pytest.mark.parametrize("fidelity", FIDELITIES)
def test_token_sized_requests_hold_a_slot_in_proportion_to_their_tokens(fidelity: str) -> None:
    # 3000 tokens/s, 4 s for the mean request of 1000 tokens: 12 slots, a request holds
    # 12 x tokens / 3000 s: 2 s for 500 tokens, 6 s for 1500.
    config = single_config(capacity=3000.0, service_time_s=4.0, startup_s=0.0, unit="tokens")
    half = 200
    requests = np.full(2 * half, 0.5)
    tokens = np.concatenate([np.full(half, 500.0), np.full(half, 1500.0)]) * requests
    trace = Trace(
        name="tokens",
        t_s=np.arange(2.0 * half),
        requests=requests,
        bin_s=1.0,
        columns={"input_tokens": tokens * 0.75, "output_tokens": tokens * 0.25},
    )
    _, result = run(fidelity, config, trace, {"svc": 4})
    arrived = result.completed_at_s - result.latency_s
    first, second = arrived < half - 10, arrived >= half + 10
    assert np.median(result.latency_s[first]) == pytest.approx(2.0, rel=0.02)
    assert np.median(result.latency_s[second]) == pytest.approx(6.0, rel=0.02)
    series = result.components["svc"]
    assert series.work_arrivals.sum() == pytest.approx(tokens.sum(), rel=0.01)


# --------------------------------------------------------------------------------------------
# Fan-out


def two_stage_config(
    *,
    mode: str,
    fanout: float,
    distribution: str = "fixed",
    llm_min: int = 1,
    timeout_s: float = 60.0,
) -> Config:
    """router (hold 0.01 s) -> llm (20 slots of 2 s) with one edge."""
    return validate_mapping(
        {
            "pipeline": {
                "name": "two",
                "slo": {"latency_p95_s": 30},
                "queue_timeout_s": timeout_s,
                "components": {
                    "router": {
                        "ingress": True,
                        "capacity_per_replica": 100,
                        "service_time_s": 0.01,
                        "replicas": {"min": 1, "max": 5},
                    },
                    "llm": {
                        "capacity_per_replica": 10,
                        "service_time_s": 2.0,
                        "startup_s": 120,
                        "gpus_per_replica": 1,
                        "replicas": {"min": llm_min, "max": 20},
                    },
                },
                "edges": [
                    {
                        "from": "router",
                        "to": "llm",
                        "fanout": fanout,
                        "fanout_distribution": distribution,
                        "mode": mode,
                    }
                ],
            }
        }
    )


@pytest.mark.parametrize("fidelity", FIDELITIES)
@pytest.mark.parametrize(
    ("mode", "latency_s"), [("sequential", 0.01 + 3 * 2.0), ("parallel", 2.01)]
)
def test_sequential_calls_add_up_and_parallel_ones_overlap(
    fidelity: str, mode: str, latency_s: float
) -> None:
    config = two_stage_config(mode=mode, fanout=3.0)
    _, result = run(fidelity, config, flat_trace(0.5, 300), {"router": 1, "llm": 4})
    assert float(np.median(result.latency_s)) == pytest.approx(latency_s, rel=0.01)
    series = result.components
    assert series["llm"].arrivals.sum() == pytest.approx(
        3 * series["router"].arrivals.sum(), rel=0.02
    )


@pytest.mark.parametrize("fidelity", FIDELITIES)
@pytest.mark.parametrize("distribution", ["fixed", "poisson", "geometric"])
def test_downstream_arrivals_follow_the_mean_fanout(fidelity: str, distribution: str) -> None:
    # 6000 requests: the sum of their geometric counts (variance 8.75 each) is within 1.5% of
    # 15000 one time in three; 6% is four of those.
    config = two_stage_config(mode="parallel", fanout=2.5, distribution=distribution)
    _, result = run(fidelity, config, flat_trace(2.0, 3000), {"router": 1, "llm": 6})
    router, llm = result.components["router"], result.components["llm"]
    assert llm.arrivals.sum() / router.completions.sum() == pytest.approx(2.5, rel=0.06)


# --------------------------------------------------------------------------------------------
# Invariants


@settings(max_examples=15, deadline=None)
@given(
    rates=st.lists(st.floats(0.0, 6.0), min_size=20, max_size=60),
    replicas=st.integers(0, 3),
    seed=st.integers(0, 1000),
)
def test_every_discrete_event_request_completes_or_is_dropped(
    rates: list[float], replicas: int, seed: int
) -> None:
    config = two_stage_config(mode="sequential", fanout=1.7, distribution="poisson", llm_min=0)
    trace = Trace(name="h", t_s=np.arange(float(len(rates))), requests=np.array(rates), bin_s=1.0)
    _, result = run("discrete-event", config, trace, {"router": 1, "llm": replicas}, seed=seed)
    assert result.latency_s.size + result.dropped_requests == result.ingress_requests
    assert result.ingress_requests == pytest.approx(np.floor(sum(rates) + 1e-6), abs=1)
    assert np.all(result.latency_s >= 0.01 - 1e-9)


@settings(max_examples=15, deadline=None)
@given(
    rates=st.lists(st.floats(0.0, 8.0), min_size=20, max_size=60),
    replicas=st.integers(0, 4),
)
def test_in_the_fluid_model_more_replicas_never_mean_more_drops_or_queueing(
    rates: list[float], replicas: int
) -> None:
    config = single_config(capacity=2.0, service_time_s=1.0, queue_timeout_s=10)
    trace = Trace(name="h", t_s=np.arange(float(len(rates))), requests=np.array(rates), bin_s=1.0)
    _, fewer = run("fast", config, trace, {"svc": replicas})
    _, more = run("fast", config, trace, {"svc": replicas + 1})
    assert more.dropped_requests <= fewer.dropped_requests + 1e-6
    assert more.completed_requests >= fewer.completed_requests - 1e-6
    assert np.all(more.components["svc"].queue <= fewer.components["svc"].queue + 1e-9)


@settings(max_examples=25, deadline=None)
@given(
    commands=st.lists(st.tuples(st.floats(0.0, 299.0), st.integers(0, 6)), min_size=0, max_size=8),
    startup_s=st.sampled_from([0.0, 7.5, 60.0]),
)
def test_both_fidelities_bill_the_same_replica_seconds(
    commands: list[tuple[float, int]], startup_s: float
) -> None:
    config = single_config(startup_s=startup_s)
    ordered = [(t, "svc", n) for t, n in sorted(commands)]
    _, fast = run("fast", config, idle_trace(300), {"svc": 2}, ordered)
    _, reference = run("discrete-event", config, idle_trace(300), {"svc": 2}, ordered)
    assert fast.replica_seconds("svc") == pytest.approx(reference.replica_seconds("svc"))
    assert np.allclose(fast.components["svc"].ready, reference.components["svc"].ready)


def test_reads_between_steps_are_not_billed_again_at_the_next_change() -> None:
    # 10 s steps, counts read at 15 s, 45 s, ... (mid-step, as a 15 s control loop reads them)
    # and one change at 205 s: billing stays 2 replicas until then, 3 after, never more.
    config = single_config(startup_s=0)
    trace = Trace(name="idle", t_s=np.arange(0.0, 300.0, 10.0), requests=np.zeros(30),
                  bin_s=10.0)  # fmt: skip
    sim = build_simulator(config, trace, {"svc": 2}, fidelity="fast")
    for at_s in np.arange(15.0, 300.0, 30.0):
        sim.advance_to(float(at_s))
        sim.state("svc")
        if at_s == 195.0:
            sim.advance_to(205.0)
            sim.set_desired("svc", 3)
    result = sim.result()
    series = result.components["svc"]
    assert series.billed().max() <= 3.0 + 1e-9
    assert result.replica_seconds("svc") == pytest.approx(2 * 205 + 3 * 95, abs=1e-6)
