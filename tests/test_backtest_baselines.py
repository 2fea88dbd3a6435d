"""The trace-built baselines: static-peak sizing, the oracle's queueing model, lead time and
bounds, latency budgets, starting replica counts, and their refusal outside a backtest."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale import RegistryError, load_config, registry
from elastiscale.backtest.baselines import (
    OraclePolicy,
    StaticPeakPolicy,
    build_policy,
    initial_replicas,
    replicas_at_utilization,
)
from elastiscale.config import Config
from elastiscale.controllers.base import TickContext
from elastiscale.history import MetricHistory
from elastiscale.pipeline import Pipeline
from elastiscale.pipeline_model import _erlang_c, latency_budgets, max_rate_within_budget
from elastiscale.trace import Trace


def make_config(**llm: Any) -> Config:
    llm_spec: dict[str, Any] = {
        "capacity_per_replica": 1.5,
        "service_time_s": 4.0,
        "startup_s": 120,
        "gpus_per_replica": 1,
        "replicas": {"min": 1, "max": 64},
    }
    llm_spec.update(llm)
    return load_config(
        {
            "pipeline": {
                "name": "t",
                "slo": {"latency_p95_s": 30},
                "components": {
                    "router": {
                        "ingress": True,
                        "capacity_per_replica": 50,
                        "service_time_s": 0.05,
                        "replicas": {"min": 1, "max": 20},
                    },
                    "llm": llm_spec,
                },
                "edges": [{"from": "router", "to": "llm", "fanout": 3.0}],
            },
            "control": {"interval_s": 15},
        }
    )


def make_trace(rate_rps: list[float] | np.ndarray, bin_s: float = 1.0) -> Trace:
    rates = np.asarray(rate_rps, dtype=float)
    return Trace(
        name="t.csv",
        t_s=np.arange(rates.size) * bin_s,
        requests=rates * bin_s,
        bin_s=bin_s,
    )


def context(config: Config, now_s: float) -> TickContext:
    return TickContext(
        now_s=now_s,
        config=config,
        pipeline=Pipeline(config.pipeline),
        observations={},
        replicas={},
        history=MetricHistory(60.0),
        interval_s=config.control.interval_s,
    )


# ------------------------------------------------------------------------------------------
# Sizing arithmetic


@pytest.mark.parametrize(
    ("demand", "capacity", "utilization", "replicas"),
    [
        (30.0, 1.5, 0.7, 29),  # 30 / 1.05 = 28.6
        (21.0, 1.5, 0.7, 20),  # exactly 20, no float creep to 21
        (0.0, 1.5, 0.7, 0),
        (10.0, 50.0, 0.7, 1),
    ],
)
def test_replicas_at_utilization(
    demand: float, capacity: float, utilization: float, replicas: int
) -> None:
    assert replicas_at_utilization(demand, capacity, utilization) == replicas


def _erlang_c_reference(servers: int, load: float) -> float:
    top = load**servers / math.factorial(servers) * servers / (servers - load)
    bottom = sum(load**k / math.factorial(k) for k in range(servers)) + top
    return top / bottom


@pytest.mark.parametrize(("servers", "load"), [(1, 0.5), (2, 1.0), (10, 8.0), (40, 35.0)])
def test_erlang_c_matches_the_textbook_sum(servers: int, load: float) -> None:
    got = float(_erlang_c(np.array([float(servers)]), np.array([load]))[0])
    assert got == pytest.approx(_erlang_c_reference(servers, load), rel=1e-9)


def test_erlang_c_two_servers_half_loaded_is_one_third() -> None:
    assert float(_erlang_c(np.array([2.0]), np.array([1.0]))[0]) == pytest.approx(1 / 3)


def test_one_single_slot_replica_rate_limit_is_the_exponential_tail() -> None:
    # One replica of one slot (capacity 1/s, service 1 s) is M/M/1: P(wait > t) =
    # rho exp(-(1 - rho) t). With 4 s of slack the p95 holds while
    # rho exp(-(1 - rho) 4) <= 0.05, i.e. up to rho = 0.5646 (solved numerically).
    limits = max_rate_within_budget(1, 1.0, 1.0, 5.0, 0.95)
    rho = limits[1]
    assert rho * math.exp(-(1 - rho) * 4.0) == pytest.approx(0.05, rel=1e-6)
    assert limits[0] == 0.0


@settings(max_examples=40, deadline=None)
@given(
    capacity=st.floats(0.5, 200.0),
    service_s=st.floats(0.01, 10.0),
    slack=st.floats(0.0, 5.0),
    quantile=st.floats(0.5, 0.99),
)
def test_rate_limits_grow_with_replicas_and_stay_below_capacity(
    capacity: float, service_s: float, slack: float, quantile: float
) -> None:
    limits = max_rate_within_budget(30, capacity, service_s, service_s * (1 + slack), quantile)
    assert np.all(np.diff(limits) >= 0)
    assert np.all(limits[1:] < np.arange(1, 31) * capacity)
    assert np.all(limits[1:] > 0)


# ------------------------------------------------------------------------------------------
# Budgets and starting counts


def test_latency_budget_split_in_proportion_to_service_time() -> None:
    # The path takes 0.05 + 3 x 4 = 12.05 s; each call may take 30 / 12.05 = 2.49 times its
    # service time.
    budgets = latency_budgets(make_config())
    assert budgets["router"] == pytest.approx(0.05 * 30 / 12.05)
    assert budgets["llm"] == pytest.approx(4.0 * 30 / 12.05)


def test_explicit_latency_budget_is_kept_and_the_rest_shared() -> None:
    # llm takes 3 x 8 = 24 s of the 30; the router gets the remaining 6 s.
    budgets = latency_budgets(make_config(latency_budget_s=8.0))
    assert budgets == {"router": pytest.approx(6.0), "llm": 8.0}


def test_initial_replicas_from_the_first_minutes_at_the_target_utilization() -> None:
    # 10 req/s for the first 300 s gives the llm 30 calls/s: 30 / (1.5 x 0.7) -> 29.
    trace = make_trace([10.0] * 300 + [100.0] * 300)
    assert initial_replicas(make_config(), trace) == {"router": 1, "llm": 29}


def test_initial_replicas_prefers_the_configured_initial() -> None:
    config = make_config(replicas={"min": 1, "max": 64, "initial": 7})
    assert initial_replicas(config, make_trace([10.0] * 600))["llm"] == 7


def test_initial_replicas_respect_bounds() -> None:
    config = make_config(replicas={"min": 1, "max": 8})
    assert initial_replicas(config, make_trace([10.0] * 600))["llm"] == 8


# ------------------------------------------------------------------------------------------
# static-peak


def test_static_peak_sizes_for_the_peak_minute() -> None:
    # A 10 req/s trace with one 60 s burst at 20 req/s: the llm's peak minute is 60 calls/s,
    # 60 / 1.05 = 57.1 -> 58 replicas; the router's 20 / 35 = 0.57 -> 1. The same at every tick.
    rates = [10.0] * 600 + [20.0] * 60 + [10.0] * 600
    config = make_config()
    policy = StaticPeakPolicy(config, {}, trace=make_trace(rates))
    for now_s in (0.0, 615.0, 1200.0):
        proposals = policy.propose(context(config, now_s))
        assert proposals["llm"].replicas == 58
        assert proposals["router"].replicas == 1


def test_static_peak_one_second_spike_does_not_set_the_size() -> None:
    rates = [10.0] * 600
    rates[300] = 200.0  # one second: raises the minute's mean by 190 / 60 = 3.2 req/s
    policy = StaticPeakPolicy(make_config(), {}, trace=make_trace(rates))
    # (10 + 3.17) x 3 = 39.5 calls/s -> 39.5 / 1.05 = 37.6 -> 38
    assert policy.replicas["llm"] == 38


def test_edge_spikes_are_averaged_over_full_windows() -> None:
    # A 200 req/s second at the very start and at the very end: neither stands alone.
    rates = [10.0] * 600
    rates[0] = rates[-1] = 200.0
    trace = make_trace(rates)
    assert StaticPeakPolicy(make_config(), {}, trace=trace).replicas["llm"] == 38
    oracle = OraclePolicy(make_config(), {"rate_window_s": 60.0}, trace=trace)
    # The last full minute holds 59 x 10 + 200 = 790 requests: 13.2 req/s, 39.5 calls/s -> 28
    # replicas (a one-second window would ask for 600 calls/s: the max of 64).
    assert oracle.need["llm"][-1] == oracle.need["llm"][-60] == 28


def test_static_peak_target_utilization_parameter() -> None:
    policy = StaticPeakPolicy(
        make_config(), {"target_utilization": 0.5}, trace=make_trace([10.0] * 120)
    )
    assert policy.replicas["llm"] == 40  # 30 / 0.75


# ------------------------------------------------------------------------------------------
# oracle


def test_oracle_asks_for_replicas_exactly_one_lead_time_ahead() -> None:
    # 1 req/s, then 10 req/s from t = 600. lead = startup 120 + interval 15 = 135 s, so the
    # tick at 465 s is the first whose window [now, now + 135] reaches the step.
    config = make_config()
    rates = [1.0] * 600 + [10.0] * 600
    oracle = OraclePolicy(config, {"rate_window_s": 1.0}, trace=make_trace(rates))
    low = oracle.propose(context(config, 464.0))["llm"].replicas
    high = oracle.propose(context(config, 465.0))["llm"].replicas
    assert low is not None and high is not None
    assert low < high
    assert high == int(oracle.need["llm"][600])


def test_oracle_scales_down_once_the_peak_leaves_its_window() -> None:
    config = make_config()
    rates = [10.0] * 600 + [1.0] * 600
    oracle = OraclePolicy(config, {"rate_window_s": 1.0}, trace=make_trace(rates))
    at_peak = oracle.propose(context(config, 599.0))["llm"].replicas
    after = oracle.propose(context(config, 600.0))["llm"].replicas
    assert at_peak is not None and after is not None
    assert after < at_peak  # scale-downs act at once, so no lead is needed


@pytest.mark.parametrize("burst_share", [0.0, 0.5, 0.75, 1.0])
def test_oracle_need_is_the_smallest_count_within_the_random_wait_slack(
    burst_share: float,
) -> None:
    # Steady 30 calls/s at the llm: bursts take burst_share of the slack, the Erlang-C p95 wait
    # must fit in the rest.
    config = make_config()
    oracle = OraclePolicy(config, {"burst_share": burst_share}, trace=make_trace([10.0] * 300))
    need = int(oracle.need["llm"][0])
    budget_s = latency_budgets(config)["llm"]
    rest_s = budget_s - burst_share * (budget_s - 4.0)
    limits = max_rate_within_budget(64, 1.5, 4.0, rest_s, 0.95)
    assert limits[need - 1] < 30.0 <= limits[need]
    # Static sizing at 0.7 needs 29; Erlang-C sizing for 30 calls/s of 6-slot replicas sits
    # just above the 20 replicas that 100% busy would take.
    assert 21 <= need <= 25


def test_oracle_averages_demand_over_its_rate_window() -> None:
    oracle = OraclePolicy(make_config(), {}, trace=make_trace([10.0] * 60))
    assert oracle.window_s["llm"] == 20.0
    fixed = OraclePolicy(make_config(), {"rate_window_s": 30.0}, trace=make_trace([10.0] * 60))
    assert fixed.window_s["llm"] == 30.0
    # At least one bin: a 10 s trace bin cannot be averaged over 1 s.
    coarse = OraclePolicy(
        make_config(), {"rate_window_s": 1.0}, trace=make_trace([10.0] * 60, bin_s=10.0)
    )
    assert coarse.window_s["llm"] == 10.0


def test_oracle_rides_out_a_burst_shorter_than_its_window() -> None:
    # A 2 s burst at 3x inside a 30 s window raises that window's mean by 2 x 20 / 30 = 1.3
    # req/s, not by 20.
    rates = [10.0] * 300
    rates[100:102] = [30.0, 30.0]
    trace = make_trace(rates)
    smooth = OraclePolicy(make_config(), {"rate_window_s": 30.0}, trace=trace)
    sharp = OraclePolicy(make_config(), {"rate_window_s": 1.0}, trace=trace)
    assert smooth.need["llm"].max() < sharp.need["llm"].max()


def test_oracle_holds_bounds_and_says_when_demand_exceeds_max() -> None:
    config = make_config(replicas={"min": 3, "max": 10})
    oracle = OraclePolicy(config, {}, trace=make_trace([0.0] * 300 + [100.0] * 300))
    quiet = oracle.propose(context(config, 0.0))["llm"]
    busy = oracle.propose(context(config, 400.0))["llm"]
    assert quiet.replicas == 3
    assert busy.replicas == 10
    assert "more than max replicas" in busy.reason


def test_oracle_sizes_token_components_in_requests_of_mean_size() -> None:
    # 2 req/s of 1,000 tokens = 2,000 tokens/s; a replica does 1,500 tokens/s = 1.5 req/s.
    config = make_config(capacity_per_replica=1500, capacity_unit="tokens")
    rates = np.full(300, 2.0)
    trace = Trace(
        name="t.csv",
        t_s=np.arange(300.0),
        requests=rates,
        bin_s=1.0,
        columns={"input_tokens": rates * 900, "output_tokens": rates * 100},
    )
    by_tokens = OraclePolicy(config, {}, trace=trace).need["llm"]
    by_requests = OraclePolicy(make_config(), {}, trace=make_trace(rates)).need["llm"]
    assert np.array_equal(by_tokens, by_requests)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.0, 40.0), min_size=30, max_size=120), st.floats(0.0, 200.0))
def test_more_future_demand_never_gives_fewer_replicas(rates: list[float], now_s: float) -> None:
    config = make_config()
    base = np.asarray(rates)
    ctx = context(config, now_s)
    less = OraclePolicy(config, {"rate_window_s": 5.0}, trace=make_trace(base)).propose(ctx)
    more = OraclePolicy(config, {"rate_window_s": 5.0}, trace=make_trace(base * 1.5)).propose(ctx)
    for name in ("router", "llm"):
        low, high = less[name].replicas, more[name].replicas
        assert low is not None and high is not None
        assert low <= high
        assert low >= 1 and high <= config.pipeline.components[name].replicas.max


# ------------------------------------------------------------------------------------------
# Outside a backtest


@pytest.mark.parametrize("name", ["static-peak", "oracle"])
def test_registry_build_refuses_trace_baselines_with_a_clear_message(name: str) -> None:
    with pytest.raises(RegistryError) as info:
        registry.build("policy", name, make_config())
    message = str(info.value)
    assert name in message and "only in a backtest" in message
    assert "\n" not in message


def test_build_policy_hands_the_trace_to_trace_baselines() -> None:
    policy = build_policy("static-peak", make_config(), {}, trace=make_trace([10.0] * 120))
    assert isinstance(policy, StaticPeakPolicy)
    assert policy.replicas["llm"] == 29


def test_build_policy_validates_params() -> None:
    with pytest.raises(ValueError, match="quantile"):
        build_policy("oracle", make_config(), {"quantile": 2.0}, trace=make_trace([1.0] * 60))
