"""What policies see in a backtest: the simulated metric source (rates over a window ending at
now - delay, gauges, missing data) and that it refuses to show the future."""

from __future__ import annotations

import numpy as np
import pytest

from elastiscale.backtest.model import Simulator
from elastiscale.backtest.runner import build_simulator
from elastiscale.backtest.simmetrics import SimulatedMetricSource, SimulatorActuator
from elastiscale.clock import FakeClock
from elastiscale.config import Config
from elastiscale.errors import FutureDataError
from elastiscale.trace import Trace
from test_sim_support import flat_trace, single_config


def step_trace(with_tokens: bool = False) -> Trace:
    """1 request/s before t = 100, 5 after, 300 s (400 tokens per request when asked)."""
    requests = np.where(np.arange(300) < 100, 1.0, 5.0)
    columns = (
        {"input_tokens": requests * 300.0, "output_tokens": requests * 100.0} if with_tokens else {}
    )
    return Trace(name="step", t_s=np.arange(300.0), requests=requests, bin_s=1.0, columns=columns)


def source_at(
    now_s: float,
    *,
    delay_s: float = 0.0,
    window_s: float = 60.0,
    replicas: int = 10,
    fidelity: str = "fast",
    trace: Trace | None = None,
    config: Config | None = None,
) -> tuple[SimulatedMetricSource, Simulator]:
    trace = trace if trace is not None else step_trace()
    config = config or single_config(startup_s=0.0)
    sim = build_simulator(config, trace, {"svc": replicas}, fidelity=fidelity)
    clock = FakeClock(trace.start_s)
    source = SimulatedMetricSource(
        sim,
        config,
        clock,
        rate_window_s=window_s,
        delay_s=delay_s,
        has_tokens=trace.has_unit("tokens"),
    )
    sim.advance_to(now_s)
    clock.set(now_s)
    return source, sim


@pytest.mark.parametrize(
    ("now_s", "delay_s", "window_s", "at_s", "demand_rps"),
    [
        (150, 0, 60, 150, (10 * 1 + 50 * 5) / 60),  # window (90, 150]
        (150, 30, 60, 120, (40 * 1 + 20 * 5) / 60),  # window (60, 120]: 30 s old
        (150, 0, 10, 150, 5.0),
        (30, 0, 60, 30, 1.0),  # only 30 s exist yet: the rate over what exists
        (100.5, 0, 60, 100, 1.0),  # data exist for whole steps only
    ],
)
def test_demand_is_the_rate_over_the_window_ending_delay_before_now(
    now_s: float, delay_s: float, window_s: float, at_s: float, demand_rps: float
) -> None:
    source, _ = source_at(now_s, delay_s=delay_s, window_s=window_s)
    obs = source.observe(["svc"], now_s)["svc"]
    assert obs.at_s == at_s
    assert obs.demand_rps == pytest.approx(demand_rps)
    assert obs.age_s(now_s) == pytest.approx(now_s - at_s)


def test_gauges_and_utilization_of_a_steady_component() -> None:
    # 10 replicas of 2 slots held 1 s; 5 req/s: 5 in flight, 25% busy, latency 1 s.
    source, _ = source_at(200)
    obs = source.observe(["svc"], 200)["svc"]
    assert obs.in_flight == pytest.approx(5.0)
    assert obs.queue_length == 0.0
    assert obs.utilization == pytest.approx(0.25)
    assert obs.latency_p95_s == pytest.approx(1.0, abs=0.01)
    assert (obs.ready_replicas, obs.desired_replicas) == (10, 10)
    assert obs.tokens_per_s is None and obs.why_missing("tokens_per_s") == "no token data"


def test_tokens_are_reported_when_the_trace_has_them() -> None:
    source, _ = source_at(200, trace=step_trace(with_tokens=True))
    obs = source.observe(["svc"], 200)["svc"]
    assert obs.tokens_per_s == pytest.approx(5 * 400.0)


def test_a_token_sized_component_reports_its_own_unit() -> None:
    config = single_config(capacity=3000, service_time_s=4, unit="input_tokens", startup_s=0)
    source, _ = source_at(200, trace=step_trace(with_tokens=True), config=config)
    assert source.observe(["svc"], 200)["svc"].tokens_per_s == pytest.approx(5 * 300.0)


def test_before_any_data_every_signal_is_missing() -> None:
    source, _ = source_at(0)
    obs = source.observe(["svc"], 0)["svc"]
    assert obs.demand_rps is None and obs.why_missing("demand_rps") == "no data"
    source, _ = source_at(20, delay_s=30)
    assert source.observe(["svc"], 20)["svc"].demand_rps is None


def test_without_ready_replicas_utilization_is_missing_not_zero() -> None:
    source, _ = source_at(100, replicas=0)
    obs = source.observe(["svc"], 100)["svc"]
    assert obs.utilization is None
    assert obs.why_missing("utilization") == "no ready replicas"
    assert obs.queue_length is not None and obs.queue_length > 0


@pytest.mark.parametrize("fidelity", ["fast", "discrete-event"])
def test_asking_for_the_future_raises(fidelity: str) -> None:
    source, sim = source_at(150, fidelity=fidelity)
    with pytest.raises(FutureDataError, match="after now = 150"):
        source.observe(["svc"], 151)
    with pytest.raises(FutureDataError):
        source.steps_until("svc", 150.5)
    source.clock.set(200)  # the clock moved on but the simulation did not
    with pytest.raises(FutureDataError, match="past the simulated time 150"):
        source.observe(["svc"], 200)
    assert sim.now_s == 150


def test_discrete_event_metrics_count_the_simulated_requests() -> None:
    source, sim = source_at(150, fidelity="discrete-event")
    obs = source.observe(["svc"], 150)["svc"]
    arrivals = sim.series("svc").arrivals
    assert obs.at_s == 150
    assert obs.demand_rps == pytest.approx(arrivals[90:150].sum() / 60)
    assert obs.demand_rps == pytest.approx((10 + 250) / 60, abs=0.05)


@pytest.mark.parametrize("fidelity", ["fast", "discrete-event"])
def test_the_actuator_reads_and_sets_the_simulated_platform(fidelity: str) -> None:
    _, sim = source_at(50, fidelity=fidelity, config=single_config(startup_s=30))
    actuator = SimulatorActuator(sim)
    assert actuator.scale("svc", 12).ok
    state = actuator.read(["svc"])["svc"]
    assert (state.desired, state.ready) == (12, 10)
    sim.advance_to(80)
    assert actuator.read(["svc"])["svc"].ready == 12


def test_a_bad_window_or_delay_is_named() -> None:
    config = single_config()
    sim = build_simulator(config, flat_trace(1.0, 10), {"svc": 1})
    with pytest.raises(ValueError, match="rate_window_s = 0"):
        SimulatedMetricSource(sim, config, FakeClock(), rate_window_s=0)
    with pytest.raises(ValueError, match="metrics_delay_s = -1"):
        SimulatedMetricSource(sim, config, FakeClock(), delay_s=-1)
