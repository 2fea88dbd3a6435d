"""The surge floor (controllers/surge.py): arrivals from a growing queue, the backlog at the time
new replicas are ready, and `elastiscale` ordering a surge's capacity sooner with it."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from elastiscale.backtest.runner import simulate
from elastiscale.config import Config, validate_mapping
from elastiscale.controllers.base import TickContext
from elastiscale.controllers.feedforward import ElastiscalePolicy
from elastiscale.controllers.feedforward_state import ElastiscaleParams
from elastiscale.controllers.surge import (
    QueueTrend,
    floor_rps,
    is_surge,
    surge_arrivals_rps,
    surge_floor_rps,
)
from elastiscale.decision import Proposal
from elastiscale.trace import Trace
from test_sim_support import single_config

BASE = {"startup_s": 180.0, "drain_s": 194.0, "slack_s": 14.0, "span_s": 15.0}


def test_the_docstrings_worked_numbers() -> None:
    got = surge_floor_rps(
        demand_rps=12.0, queue=460.0, growth_rps=14.0, served_rps=6.0, starting_rps=9.0, **BASE
    )
    assert got == pytest.approx(20.0 + 2170.0 / 194.0)
    quarter = floor_rps(20.0, 12.0, 460.0, 14.0, 9.0, 180.0, 194.0, 194.0 / 4)
    assert quarter == pytest.approx(20.0 + 2170.0 / 48.5)
    assert round(quarter, 1) == 64.7


@pytest.mark.parametrize(
    ("case", "queue", "growth", "starting", "want"),
    [
        ("no queue: the ordinary floor", 0.0, 5.0, 0.0, 12.0),
        ("a queue that does not grow: demand + queue / drain", 97.0, 0.0, 0.0, 12.5),
        # 6 requests/s serve a queue of 50 within the 14 s slack, and 15 more in 15 s is less
        # than 3 x sqrt(2 x 12 x 15) = 57: a swing, not a surge
        ("a swing of a queue served within the slack", 50.0, 1.0, 0.0, 12.0 + 50.0 / 194.0),
        # 75 more in 15 s is more than 57: a surge; backlog 50 + 5 x 180 = 950
        ("a small queue growing fast", 50.0, 5.0, 0.0, 12.0 + 950.0 / 194.0),
        # arrivals max(12, 6 + 2) = 12; the replicas starting outrun the growth: backlog 97
        ("growth the starting replicas cover", 97.0, 2.0, 9.0, 12.5),
        # arrivals 6 + 10 = 16; backlog 97 + (10 - 0) x 180 = 1,897
        ("growth with nothing starting", 97.0, 10.0, 0.0, 16.0 + 1897.0 / 194.0),
    ],
)
def test_floor_table(case: str, queue: float, growth: float, starting: float, want: float) -> None:
    got = surge_floor_rps(
        demand_rps=12.0,
        queue=queue,
        growth_rps=growth,
        served_rps=6.0,
        starting_rps=starting,
        **BASE,
    )
    assert got == pytest.approx(want), case


@pytest.mark.parametrize(
    ("case", "queue", "growth", "want"),
    [
        # a surge's backlog (1,897, as above) over the surge's drain time of 48.5 s
        ("a surge drains over its own time", 97.0, 10.0, 16.0 + 1897.0 / 48.5),
        # no surge: the ordinary queue term keeps the whole drain time
        ("no surge: the ordinary drain", 97.0, 0.0, 12.5),
    ],
)
def test_surge_drain_time(case: str, queue: float, growth: float, want: float) -> None:
    arrivals = surge_arrivals_rps(12.0, queue, growth, 6.0, 14.0, 15.0)
    got = floor_rps(arrivals, 12.0, queue, growth, 0.0, 180.0, 194.0, 48.5)
    assert got == pytest.approx(want), case


@pytest.mark.parametrize(
    ("case", "queue", "growth", "dispersion", "want"),
    [
        # 6 requests/s served, 14 s slack: a queue past 84 is not served within it
        ("past the slack: a surge, unmeasured", 100.0, 1.0, None, True),
        ("past the slack: a surge, whatever the noise", 100.0, 1.0, 30.0, True),
        # demand 12/s over 15 s: Poisson noise 3 x sqrt(2 x 12 x 15) = 57 requests;
        # growth 5/s x 15 s = 75 is past it
        ("unmeasured: Poisson noise", 30.0, 5.0, None, True),
        ("Poisson: growth past the noise", 30.0, 5.0, 1.0, True),
        ("a dispersion below Poisson's is Poisson's", 30.0, 5.0, 0.4, True),
        # dispersion 30: noise 57 x sqrt(30) = 312
        ("bursty: the same growth within the noise", 30.0, 5.0, 30.0, False),
        ("bursty: growth past the noise", 30.0, 25.0, 30.0, True),
        ("no growth, no surge", 100.0, 0.0, 1.0, False),
    ],
)
def test_surge_test_table(
    case: str, queue: float, growth: float, dispersion: float | None, want: bool
) -> None:
    got = is_surge(12.0, queue, growth, 15.0, 6.0, 14.0, dispersion)
    assert got is want, case


@given(
    demand=st.floats(0.0, 1e4),
    queue=st.floats(0.0, 1e5),
    growth=st.floats(0.0, 1e3),
    served=st.floats(0.0, 1e4),
    starting=st.floats(0.0, 1e4),
    more=st.floats(0.0, 1e3),
)
def test_never_below_the_ordinary_floor_and_rising_with_growth(
    demand: float, queue: float, growth: float, served: float, starting: float, more: float
) -> None:
    def floor(g: float) -> float:
        return surge_floor_rps(
            demand_rps=demand,
            queue=queue,
            growth_rps=g,
            served_rps=served,
            starting_rps=starting,
            **BASE,
        )

    ordinary = demand + queue / 194.0
    assert floor(growth) >= ordinary * (1.0 - 1e-12)
    assert floor(growth + more) >= floor(growth) * (1.0 - 1e-12)


def test_queue_trend_readings() -> None:
    trend = QueueTrend()
    assert trend.observe(0.0, 50.0) == 0.0  # a first reading shows no growth
    assert trend.observe(15.0, 200.0) == pytest.approx(10.0)
    assert trend.observe(15.0, 900.0) == pytest.approx(10.0)  # the same data time: kept
    assert trend.observe(30.0, 100.0) == 0.0  # shrinking is no growth
    assert trend.observe(45.0, 130.0) == pytest.approx(2.0)


class Recording:
    """Passes every call through, keeping the proposal for `component` by time."""

    def __init__(self, inner: ElastiscalePolicy, component: str = "svc") -> None:
        self.inner = inner
        self.name = inner.name
        self.component = component
        self.seen: list[tuple[float, Proposal]] = []

    def propose(self, ctx: TickContext) -> Mapping[str, Proposal]:
        out = self.inner.propose(ctx)
        self.seen.append((ctx.now_s, out[self.component]))
        return out


def first_at(rec: Recording, replicas: int) -> float:
    """The first tick that proposed at least `replicas`."""
    return min(t for t, p in rec.seen if (p.replicas or 0) >= replicas)


def step_trace(low_rps: float, high_rps: float, at_s: float, duration_s: float) -> Trace:
    t_s = np.arange(0.0, duration_s, 10.0)
    requests = np.where(t_s < at_s, low_rps, high_rps) * 10.0
    return Trace(name="step", t_s=t_s, requests=requests, bin_s=10.0)


def run(surge_floor: bool) -> Recording:
    config = single_config(capacity=2.0, service_time_s=1.0, startup_s=120.0)
    params = ElastiscaleParams(refit="inline", self_calibration=False, surge_floor=surge_floor)
    policy = Recording(ElastiscalePolicy(config, params))
    trace = step_trace(3.0, 15.0, 1800.0, 2400.0)
    simulate(config, trace, policy, initial_replicas={"svc": 3})
    return policy


def test_a_surge_is_ordered_sooner_and_steady_traffic_sized_as_before() -> None:
    on, off = run(True), run(False)
    assert [p.replicas for _, p in on.seen if _ < 1800] == [
        p.replicas for _, p in off.seen if _ < 1800
    ]

    # 15 requests/s at 2 a replica needs at least 8; the windowed demand reading reaches 15
    # only a minute after the step, the queue's growth shows it at the first tick.
    assert first_at(on, 8) == 1815.0
    assert first_at(off, 8) > 1815.0
    growth = [p.details.get("queue_growth_rps") for t, p in on.seen if 1800 <= t < 1900]
    assert max(g or 0.0 for g in growth) > 0.0
    # Once the backlog is gone the two agree again.
    assert [p.replicas for t, p in on.seen if t >= 2070] == [
        p.replicas for t, p in off.seen if t >= 2070
    ]


def chain_config() -> Config:
    """a (the ingress) -> b, both GPU stages of 2 requests/s a replica that start in 120 s."""
    stage = {
        "capacity_per_replica": 2.0,
        "service_time_s": 1.0,
        "startup_s": 120.0,
        "gpus_per_replica": 1,
        "replicas": {"min": 1, "max": 50},
        "cost_per_hour": 3.6,
    }
    return validate_mapping(
        {
            "pipeline": {
                "name": "chain",
                "slo": {"latency_p95_s": 10},
                "queue_timeout_s": 30.0,
                "components": {"a": {"ingress": True, **stage}, "b": stage},
                "edges": [{"from": "a", "to": "b"}],
            }
        }
    )


def test_a_surge_above_is_carried_to_the_stage_below() -> None:
    config = chain_config()

    def run_chain(surge_floor: bool) -> Recording:
        params = ElastiscaleParams(refit="inline", self_calibration=False, surge_floor=surge_floor)
        policy = Recording(ElastiscalePolicy(config, params), "b")
        trace = step_trace(3.0, 15.0, 1800.0, 2400.0)
        simulate(config, trace, policy, initial_replicas={"a": 3, "b": 3})
        return policy

    on, off = run_chain(True), run_chain(False)

    # b sees no queue of its own while a holds the surge back; what a's queue shows reaches it.
    assert first_at(on, 8) == 1815.0
    assert first_at(off, 8) > 1815.0
    carried = [p.details.get("surge_carried_rps") for t, p in on.seen if t == 1815.0]
    assert carried[0] == pytest.approx(15.0, rel=0.25)


def pulse(**params: object) -> Recording:
    """A 5-minute surge from 3 to 15 requests/s and back, at 2 requests/s a replica that
    starts in 120 s, with `params` over the defaults."""
    config = single_config(capacity=2.0, service_time_s=1.0, startup_s=120.0)
    merged = {"refit": "inline", "self_calibration": False, **params}
    policy = Recording(ElastiscalePolicy(config, ElastiscaleParams.model_validate(merged)))
    t_s = np.arange(0.0, 3000.0, 10.0)
    rate = np.where((t_s >= 1800.0) & (t_s < 2100.0), 15.0, 3.0)
    simulate(config, Trace("pulse", t_s, rate * 10.0, 10.0), policy, initial_replicas={"svc": 3})
    return policy


def replica_ticks(rec: Recording, after_s: float) -> int:
    """The sum of the proposals from `after_s` on: replicas x ticks."""
    return sum(p.replicas or 0 for t, p in rec.seen if t >= after_s)


def test_the_window_holds_less_of_a_surge_the_less_it_remembers() -> None:
    modes = ("all", "arrivals", "confirmed", "none")
    held = {mode: pulse(surge_hold=mode) for mode in modes}
    before = {mode: [p.replicas for t, p in r.seen if t < 1800] for mode, r in held.items()}
    assert before["all"] == before["arrivals"] == before["confirmed"] == before["none"]
    spent = {mode: replica_ticks(r, 1800.0) for mode, r in held.items()}
    assert spent["none"] <= spent["confirmed"] <= spent["arrivals"] <= spent["all"]
    assert spent["none"] < spent["all"]
    # the surge is ordered at its first sign whatever the window remembers
    assert {first_at(r, 8) for r in held.values()} == {1815.0}


def test_a_shorter_surge_drain_orders_more_and_only_in_a_surge() -> None:
    whole, quarter = pulse(surge_drain_share=1.0), pulse(surge_drain_share=0.25)
    assert [p.replicas for t, p in whole.seen if t < 1800] == [
        p.replicas for t, p in quarter.seen if t < 1800
    ]
    peak = {
        name: max(p.replicas or 0 for _, p in r.seen)
        for name, r in (("whole", whole), ("quarter", quarter))
    }
    assert peak["quarter"] > peak["whole"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("surge_drain_share", 0.0),
        ("surge_drain_share", 1.5),
        ("surge_hold", "some"),
        ("surge_hold_s", -1.0),
        ("surge_noise", "gaussian"),
    ],
)
def test_bad_surge_settings_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        ElastiscaleParams.model_validate({field: value})


def test_a_surge_is_held_for_surge_hold_s_after_its_queue_stops_growing() -> None:
    plain, kept = pulse(), pulse(surge_hold_s=600.0)
    assert [p.replicas for t, p in plain.seen if t < 1800] == [
        p.replicas for t, p in kept.seen if t < 1800
    ]
    surged = [t for t, p in kept.seen if "surge_arrivals_rps" in p.details]
    assert surged and min(surged) == 1815.0
    last_s = max(surged)
    # 15 requests/s at 2 a replica: the surge's arrivals need 8 or more, kept for 600 s after
    # its last tick (the ordinary window, start-up + interval, holds 135 s after the pulse).
    window = [(t, p.replicas or 0) for t, p in kept.seen if last_s <= t <= last_s + 600.0 - 15.0]
    assert min(r for _, r in window) >= 8
    after = [p.replicas or 0 for t, p in kept.seen if t >= last_s + 600.0 + 30.0]
    assert after and max(after) < 8  # and then let go
    plain_window = [p.replicas or 0 for t, p in plain.seen if last_s <= t <= last_s + 585.0]
    assert min(plain_window) < 8
    assert replica_ticks(kept, 1800.0) > replica_ticks(plain, 1800.0)


def batches_then_step(surge_noise: str) -> Recording:
    """An hour and a half of Poisson arrivals at 3/s with batches of about 40 every 30 s at 1 s
    bins (seeded), then a step to 30 requests/s, at 2 requests/s a replica that starts in
    120 s, and an SLO of 60 s (so the batches' queues are served within the slack: only the
    growth test can take them for surges)."""
    config = single_config(capacity=2.0, service_time_s=1.0, startup_s=120.0)
    config = validate_mapping(
        {"pipeline": {**config.pipeline.model_dump(), "slo": {"latency_p95_s": 60}}}
    )
    params = ElastiscaleParams(refit="inline", self_calibration=False, surge_noise=surge_noise)
    policy = Recording(ElastiscalePolicy(config, params))
    rng = np.random.default_rng(5)
    t_s = np.arange(0.0, 6000.0, 1.0)
    counts = rng.poisson(3.0, t_s.size).astype(float)
    starts = rng.random(t_s.size) < 1.0 / 30.0
    counts[starts] += rng.geometric(1.0 / 40.0, int(starts.sum()))
    counts[t_s >= 5400.0] = rng.poisson(30.0, int((t_s >= 5400.0).sum()))
    simulate(config, Trace("batches", t_s, counts, 1.0), policy, initial_replicas={"svc": 3})
    return policy


def test_batches_are_no_surge_where_the_arrivals_are_measured_bursty() -> None:
    measured, poisson = batches_then_step("measured"), batches_then_step("poisson")

    def surges(rec: Recording, start_s: float, end_s: float) -> int:
        return sum(
            1 for t, p in rec.seen if start_s <= t < end_s and "surge_arrivals_rps" in p.details
        )

    # after the dispersion's first 40 pairs (10 minutes), batches stop counting as surges
    assert surges(poisson, 900.0, 5400.0) >= 10
    assert surges(measured, 900.0, 5400.0) <= surges(poisson, 900.0, 5400.0) // 3
    assert replica_ticks(measured, 900.0) < replica_ticks(poisson, 900.0)
    # the decision records carry it: batches of about 40 make it several times Poisson's
    seen = [p.details.get("typical_dispersion") for t, p in measured.seen if t >= 900.0]
    assert all(d is not None and d > 3.0 for d in seen[:300])
    # a real step is still a surge at its first tick, bursty arrivals or not
    assert (
        min(t for t, p in measured.seen if t >= 5400.0 and "surge_arrivals_rps" in p.details)
        == 5415.0
    )


def batch_once(surge_hold: str) -> Recording:
    """3 requests/s with one batch of 150 requests in a 10 s bin at 1800 s."""
    config = single_config(capacity=2.0, service_time_s=1.0, startup_s=120.0)
    params = ElastiscaleParams(refit="inline", self_calibration=False, surge_hold=surge_hold)
    policy = Recording(ElastiscalePolicy(config, params))
    t_s = np.arange(0.0, 2700.0, 10.0)
    requests = np.full(t_s.size, 30.0)
    requests[t_s == 1800.0] += 150.0
    simulate(config, Trace("batch", t_s, requests, 10.0), policy, initial_replicas={"svc": 3})
    return policy


def test_a_surge_one_reading_showed_is_not_held_once_confirmed_ones_are() -> None:
    confirmed, arrivals = batch_once("confirmed"), batch_once("arrivals")
    surged = [t for t, p in confirmed.seen if "surge_arrivals_rps" in p.details]
    assert len(surged) == 1  # the queue grew over one reading only
    at = surged[0]
    by_t = {t: p.replicas for t, p in confirmed.seen}
    held = {t: p.replicas for t, p in arrivals.seen}
    assert by_t[at] == held[at]  # ordered at its first sign either way
    # the window keeps the arrivals the batch seemed to show (9 replicas)
    # where any surge is held, and nothing of it unconfirmed (the ordinary floor: 4)
    assert held[at + 30.0] == 9
    assert by_t[at + 30.0] == 4
    assert replica_ticks(confirmed, at) < replica_ticks(arrivals, at)
