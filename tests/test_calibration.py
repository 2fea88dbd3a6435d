"""Self-calibration (controllers/calibration.py, calibrating.py) and warm start of
`elastiscale`, on a fake clock.

The rule (`choose`) table-driven; the schedule; the loop with a stand-in replayer (inline: adopted
in the tick that asked; background: the tick never waits, the result lands later); decision
records carrying the setting in force and its evidence; the reactive floor under any adopted
setting (hypothesis); warm start giving the decisions of a policy that saw the history live;
and one real replay through the simulator.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale.backtest.calibration import replay_candidates
from elastiscale.config import Config
from elastiscale.controllers.calibration import (
    CANDIDATES,
    CalibrationState,
    Evidence,
    ObservedTraffic,
    Replay,
    choose,
    effective_target,
    goal,
)
from elastiscale.observations import Observation
from test_feedforward import TICK_S, Driver, make_config

LABELS = [label for label, _ in CANDIDATES]


def replay(*rows: tuple[str, float, float], ceiling: float = math.nan) -> Replay:
    return Replay(0.0, 3600.0, tuple(Evidence(*r) for r in rows), ceiling)


@pytest.mark.parametrize(
    ("rows", "ceiling", "current", "want"),
    [
        # The cheapest that meets the target.
        ([("a", 0.995, 100), ("b", 0.992, 80), ("c", 0.97, 50)], math.nan, None, "b"),
        # None meets it: the one that attains most.
        ([("a", 0.95, 100), ("b", 0.93, 80), ("c", 0.90, 50)], math.nan, None, "a"),
        # A ceiling below 1 lowers the bar to 0.99 of it: 0.99 x 0.95 = 0.9405.
        ([("a", 0.95, 100), ("b", 0.945, 80), ("c", 0.90, 50)], 0.95, None, "b"),
        # Hysteresis: the setting in force meets the target and the new choice is not 5%
        # cheaper: kept.
        ([("a", 0.995, 100), ("b", 0.992, 97)], math.nan, "a", "a"),
        # ... at 10% cheaper it switches.
        ([("a", 0.995, 100), ("b", 0.992, 90)], math.nan, "a", "b"),
        # The setting in force falls short: switch, whatever the cost.
        ([("a", 0.98, 50), ("b", 0.992, 100)], math.nan, "a", "b"),
    ],
    ids=["cheapest", "none-meets", "ceiling", "hold", "switch", "short"],
)
def test_choose(
    rows: list[tuple[str, float, float]], ceiling: float, current: str | None, want: str
) -> None:
    assert choose(replay(*rows, ceiling=ceiling), 0.99, current) == want


@pytest.mark.parametrize(
    ("reference", "ceiling", "want"),
    [
        (None, 0.9987, 0.99 * 0.9987),  # no reference: the target of the ceiling
        (0.8856, 0.9987, 0.9987 - 0.5 * (0.9987 - 0.8856)),  # the docstring: 0.9421
        (0.991, 0.9987, 0.99 * 0.9987),  # the reference near the target: the target
        (0.8856, math.nan, 0.99),  # no ceiling: the target itself
    ],
    ids=["no-reference", "far-reference", "near-reference", "no-ceiling"],
)
def test_goal_relaxes_to_half_the_reactive_misses_only_when_they_are_large(
    reference: float | None, ceiling: float, want: float
) -> None:
    ref = None if reference is None else Evidence("hpa", reference, 50.0)
    got = goal(Replay(0.0, 3600.0, (), ceiling, ref), 0.99)
    assert got == pytest.approx(want)
    assert got <= effective_target(0.99, ceiling)


@pytest.mark.parametrize(
    ("reference", "want"),
    [
        # hpa misses 11.3 points: half of them (goal 94.2%) is met by the cheaper "b".
        (0.8856, "b"),
        # hpa at 98.5%: the target's bar (98.87%) stands, only "a" meets it.
        (0.985, "a"),
    ],
)
def test_choose_with_a_reactive_reference(reference: float, want: str) -> None:
    rows = (Evidence("a", 0.975 + 0.014, 190.0), Evidence("b", 0.95, 120.0),
            Evidence("c", 0.90, 70.0))  # fmt: skip
    got = choose(Replay(0.0, 3600.0, rows, 0.9987, Evidence("hpa", reference, 100.0)), 0.99,
                 None)  # fmt: skip
    assert got == want


def test_effective_target_worked_numbers() -> None:
    assert effective_target(0.99, 0.9985) == pytest.approx(0.988515)
    assert effective_target(0.99, math.nan) == 0.99


def test_schedule_first_at_min_history_then_doubling_then_periodic() -> None:
    state = CalibrationState(setting="x")
    hour = 3600.0
    assert not state.due(0.0, 3 * hour, 4 * hour, 24 * hour)
    assert state.due(0.0, 4 * hour, 4 * hour, 24 * hour)
    state.last_at_s, state.last_span_s = 0.0, 4 * hour
    assert not state.due(hour, 5 * hour, 4 * hour, 24 * hour)
    assert state.due(4 * hour, 8 * hour, 4 * hour, 24 * hour)  # doubled
    state.last_at_s, state.last_span_s = 20 * hour, 24 * hour  # the window is full
    assert not state.due(30 * hour, 24 * hour, 4 * hour, 24 * hour)
    assert state.due(44 * hour, 24 * hour, 4 * hour, 24 * hour)  # a day later


# --------------------------------------------------------------------------------------------
# The loop, with a stand-in replayer


class FakeReplayer:
    """Returns fixed evidence; records what it was asked; can be held (a slow replay)."""

    def __init__(self, evidence: Mapping[str, tuple[float, float]]) -> None:
        self.evidence = evidence
        self.ceiling = math.nan
        self.calls: list[tuple[ObservedTraffic, list[Mapping[str, Any]]]] = []
        self.references: list[str | None] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(
        self,
        config: Config,
        traffic: ObservedTraffic,
        params: Sequence[Mapping[str, Any]],
        labels: Sequence[str],
        rate_window_s: float,
        /,
        reference: str | None = None,
    ) -> Replay:
        self.release.wait(timeout=30)
        self.calls.append((traffic, list(params)))
        self.references.append(reference)
        rows = tuple(Evidence(label, *self.evidence[label]) for label in labels)
        ref = None if reference is None else Evidence(reference, *self.evidence[reference])
        ceiling = self.ceiling
        return Replay(math.nan, traffic.t_s.size * traffic.bin_s, rows, ceiling, ref)


def calibrating_driver(fake: FakeReplayer, refit: str = "inline", **params: Any) -> Driver:
    params.setdefault("calibration_min_history_s", 1800.0)
    driver = Driver(make_config(), refit=refit, **params)
    assert driver.policy.calibrator is not None
    driver.policy.calibrator._replayer = fake
    return driver


CHEAP_ENOUGH = {"reserve+hold": (0.995, 100.0), "reserve": (0.993, 80.0),
                "quantile+hold": (0.97, 60.0)}  # fmt: skip


def test_inline_calibration_adopts_the_cheapest_that_meets_the_target() -> None:
    fake = FakeReplayer(CHEAP_ENOUGH)
    driver = calibrating_driver(fake)
    # Observed history at a tick at T: rate windows centred from -30 s to T - 30 s, in 30 s
    # bins, so T + 30 s of it; 1800 s are there at T = 1770 s.
    driver.run(0.0, 1770.0, 10.0)
    assert not fake.calls
    got = driver.tick(1770.0, {"router": 10.0, "planner": 40.0, "writer": 10.0})
    assert len(fake.calls) == 1
    traffic, params = fake.calls[0]
    assert traffic.t_s.size * traffic.bin_s >= 1800.0 - 2 * 30.0  # closed bins only
    assert np.nanmax(traffic.rate_rps) == pytest.approx(10.0)
    # Every candidate is replayed without a calibration of its own.
    assert all(p["self_calibration"] is False for p in params)
    assert [p["scale_down_lookback"] for p in params] == ["need", "forecast", "need"]
    details = got["writer"].details
    assert details["calibration_setting"] == "reserve"
    assert "reserve: 99.30% / 80 GPU-h" in str(details["calibration_evidence"])
    assert driver.policy.setting("scale_down_lookback") == "forecast"


def test_background_calibration_never_holds_the_tick() -> None:
    fake = FakeReplayer(CHEAP_ENOUGH)
    fake.release.clear()  # the replay is slow
    driver = calibrating_driver(fake, refit="background")
    try:
        driver.run(0.0, 1770.0, 10.0)
        got = driver.tick(1770.0, {"router": 10.0, "planner": 40.0, "writer": 10.0})
        assert got["writer"].details["calibration_setting"] == "reserve+hold"  # still
        fake.release.set()
        calibrator = driver.policy.calibrator
        assert calibrator is not None and calibrator.state.pending is not None
        calibrator.state.pending.result(timeout=30)
        got = driver.tick(1785.0, {"router": 10.0, "planner": 40.0, "writer": 10.0})
        assert got["writer"].details["calibration_setting"] == "reserve"
    finally:
        driver.policy.close()


def test_a_failed_replay_keeps_the_setting_and_says_why() -> None:
    def broken(*_: Any) -> Replay:
        raise RuntimeError("simulator unavailable")

    driver = calibrating_driver(FakeReplayer(CHEAP_ENOUGH))
    assert driver.policy.calibrator is not None
    driver.policy.calibrator._replayer = broken
    driver.run(0.0, 1815.0, 10.0)
    got = driver.tick(1815.0, {"router": 10.0, "planner": 40.0, "writer": 10.0})
    assert got["writer"].details["calibration_setting"] == "reserve+hold"
    assert "simulator unavailable" in str(got["writer"].details["calibration_failure"])


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from(LABELS),
    st.lists(st.floats(0.0, 80.0), min_size=30, max_size=30),
)
def test_no_adopted_setting_proposes_below_the_reactive_floor(
    label: str, rates: list[float]
) -> None:
    evidence = {name: (0.5, 100.0) for name in LABELS}
    evidence[label] = (0.999, 1.0)  # this one wins
    driver = calibrating_driver(FakeReplayer(evidence), calibration_min_history_s=TICK_S)
    t = 0.0
    for rate in rates:
        got = driver.tick(t, {"router": rate, "planner": 4 * rate, "writer": rate})
        t += TICK_S
        for name, proposal in got.items():
            d = proposal.details
            floor = max(int(d.get("reactive_replicas", 0)), int(d.get("upstream_replicas", 0)))
            bound = driver.config.pipeline.components[name].replicas.max
            assert proposal.replicas is not None
            assert proposal.replicas >= min(floor, bound), (name, d)
    assert driver.policy.setting("burst_reserve") == dict(CANDIDATES)[label]["burst_reserve"]


# --------------------------------------------------------------------------------------------
# Warm start


def _pattern(t_s: float) -> float:
    return 20.0 + 10.0 * math.sin(2 * math.pi * t_s / 3600.0) + (15.0 if t_s % 900 < 60 else 0.0)


def _snapshot(t_s: float) -> dict[str, Observation]:
    rps = _pattern(t_s)
    rates = {"router": rps, "planner": 4 * rps, "writer": rps}
    return {
        n: Observation(component=n, at_s=t_s, demand_rps=r, queue_length=0.0, in_flight=0.0)
        for n, r in rates.items()
    }


def test_warm_start_decides_as_a_policy_that_saw_the_history_live() -> None:
    params = {"refit": "inline", "self_calibration": False, "forecaster": "holt"}
    live = Driver(make_config(), **params)
    warm = Driver(make_config(), **params)
    cold = Driver(make_config(), **params)
    history_end_s = 3 * 3600.0
    times = np.arange(0.0, history_end_s, TICK_S)
    for t in times:
        live.tick(float(t), {n: o.demand_rps for n, o in _snapshot(float(t)).items()})
    warm.policy.warm_start(_snapshot(float(t)) for t in times)
    keys = ("feedforward_rps", "forecast_router_trust", "forecast_router_reserve")
    for t in np.arange(history_end_s, history_end_s + 600.0, TICK_S):
        rates = {n: o.demand_rps for n, o in _snapshot(float(t)).items()}
        want = live.tick(float(t), rates)["writer"].details
        got = warm.tick(float(t), rates)["writer"].details
        fresh = cold.tick(float(t), rates)["writer"].details
        for key in keys:
            assert got.get(key) == want.get(key), key
    assert fresh.get("forecast_router_reserve") != want.get("forecast_router_reserve")


# --------------------------------------------------------------------------------------------
# One real replay


def test_a_real_replay_scores_every_candidate_on_the_observed_traffic() -> None:
    config = make_config()
    step_s = 30.0
    t_s = np.arange(0.0, 2 * 3600.0, step_s)
    rate = np.array([_pattern(float(t)) for t in t_s])
    rate[10] = math.nan  # a missing bin is filled, not zero
    traffic = ObservedTraffic(t_s=t_s, rate_rps=rate, tokens_per_s=None, bin_s=step_s)
    base = {"refit": "inline", "self_calibration": False}
    params = [{**base, **dict(setting)} for _, setting in CANDIDATES]
    got = replay_candidates(config, traffic, params, LABELS, 60.0)
    assert [e.label for e in got.evidence] == LABELS
    assert got.span_s == pytest.approx(2 * 3600.0)
    assert 0.9 <= got.ceiling <= 1.0
    for e in got.evidence:
        assert 0.0 < e.attainment <= 1.0 and e.gpu_hours > 0.0


def test_a_pipeline_of_several_ingresses_says_why_it_does_not_calibrate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A fleet unit of several pipelines has an ingress per pipeline, each with its own
    traffic; a replay sends one trace to every ingress, so it would judge the candidates on
    traffic the unit never had. The policy keeps its configured setting and says why."""
    fake = FakeReplayer(CHEAP_ENOUGH)
    config = make_config(
        components={"planner": {"ingress": True}},
        edges=[{"from": "planner", "to": "writer", "fanout": 0.25}],
    )
    with caplog.at_level("INFO"):
        driver = Driver(config, refit="inline", calibration_min_history_s=1800.0)
    assert driver.policy.calibrator is not None
    driver.policy.calibrator._replayer = fake
    driver.run(0.0, 3600.0, 10.0)
    got = driver.tick(3600.0, {"router": 10.0, "planner": 40.0, "writer": 10.0})
    assert not fake.calls
    off = str(got["writer"].details["calibration_off"])
    assert "2 ingress components (router, planner)" in off, off
    assert got["writer"].details["calibration_setting"] == "reserve+hold"
    assert "self-calibration replays one ingress trace" in caplog.text


# --------------------------------------------------------------------------------------------
# The reactive reference, and warming the candidates on the whole history


def test_a_configured_reference_is_replayed_and_relaxes_a_target_out_of_reach() -> None:
    # hpa misses a tenth of the requests in the replay: the 99% target is out of reach of
    # every candidate, and half of hpa's misses (95%) is met by the cheaper "reserve".
    evidence = {"reserve+hold": (0.975, 190.0), "reserve": (0.96, 150.0),
                "quantile+hold": (0.93, 110.0), "hpa": (0.90, 100.0)}  # fmt: skip
    fake = FakeReplayer(evidence)
    fake.ceiling = 1.0
    driver = calibrating_driver(fake, calibration_reference="hpa")
    driver.run(0.0, 1785.0, 10.0)
    assert fake.references == ["hpa"]
    got = driver.tick(1785.0, {"router": 10.0, "planner": 40.0, "writer": 10.0})
    details = got["writer"].details
    assert details["calibration_setting"] == "reserve"
    assert "hpa: 90.00% / 100 GPU-h" in str(details["calibration_evidence"])
    # Without the reference the same evidence buys the most attainment, whatever it costs.
    fake = FakeReplayer(evidence)
    fake.ceiling = 1.0
    driver = calibrating_driver(fake)
    driver.run(0.0, 1785.0, 10.0)
    assert fake.references == [None]
    got = driver.tick(1785.0, {"router": 10.0, "planner": 40.0, "writer": 10.0})
    assert got["writer"].details["calibration_setting"] == "reserve+hold"


@pytest.mark.parametrize(
    ("warmup", "scored_bins"),
    [
        ("half", None),  # the 900 s window only; its second half scored
        ("history", 15),  # all the history; the window's second half (450 s) scored
    ],
)
def test_history_warmup_replays_all_the_history_and_scores_the_window_half(
    warmup: str, scored_bins: int | None
) -> None:
    fake = FakeReplayer(CHEAP_ENOUGH)
    driver = calibrating_driver(
        fake,
        calibration_warmup=warmup,
        calibration_window_s=900.0,
        calibration_min_history_s=900.0,
        calibration_every_s=1800.0,
    )
    driver.run(0.0, 3600.0, _pattern)
    assert len(fake.calls) == 2  # at 900 s of history, then 1800 s later
    traffic, _ = fake.calls[1]
    assert traffic.scored_bins == scored_bins
    span_s = traffic.t_s.size * traffic.bin_s
    if warmup == "half":
        assert span_s <= 900.0 + 1e-6
    else:  # about 2700 s of history seen by then, all of it replayed
        assert span_s >= 2700.0 - 2 * traffic.bin_s


def test_a_real_replay_with_history_warmup_and_a_reference() -> None:
    config = make_config()
    step_s = 30.0
    t_s = np.arange(0.0, 3 * 3600.0, step_s)
    rate = np.array([_pattern(float(t)) for t in t_s])
    traffic = ObservedTraffic(t_s, rate, None, step_s, scored_bins=120)  # the last hour
    base = {"refit": "inline", "self_calibration": False}
    params = [{**base, **dict(setting)} for _, setting in CANDIDATES]
    got = replay_candidates(config, traffic, params, LABELS, 60.0, "hpa")
    assert [e.label for e in got.evidence] == LABELS
    assert got.reference is not None and got.reference.label == "hpa"
    assert 0.0 < got.reference.attainment <= 1.0 and got.reference.gpu_hours > 0.0
    # Only the last hour is scored: GPU-hours of at most an hour of max replicas.
    most = sum(c.replicas.max * c.gpus_per_replica for c in config.pipeline.components.values())
    for e in (*got.evidence, got.reference):
        assert e.gpu_hours <= most * 1.0 + 1e-6
