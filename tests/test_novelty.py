"""Novel ingress (controllers/novelty.py): the self-calibration's setting stands only for
traffic like the history it was chosen on; far above it, the safest candidate is in force
until a calibration covers the new level."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale.controllers.novelty import NoveltyWatch, busiest_mean
from test_calibration import CHEAP_ENOUGH, FakeReplayer, calibrating_driver


@pytest.mark.parametrize(
    ("rates", "window_s", "expected"),
    [
        ([1, 1, 3, 3, 1], 120.0, 2.0),  # the docstring's worked numbers
        ([1, 1, 3], 120.0, 5 / 3),  # less than a window but more than half: all of it
        ([1], 120.0, None),  # under half a window
        ([math.nan, math.nan, math.nan, 4, 1], 120.0, 2.5),  # half observed windows count
        ([math.nan, math.nan, math.nan, 4, math.nan], 120.0, None),  # under half: none do
        ([0, 0, 0, 0], 60.0, 0.0),
    ],
)
def test_busiest_mean(rates: list[float], window_s: float, expected: float | None) -> None:
    t_s = 30.0 * np.arange(len(rates), dtype=float)
    got = busiest_mean(t_s, np.asarray(rates, dtype=float), window_s)
    assert got == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(
    ("covered", "recent", "novel"),
    [(1.5, 3.9, True), (1.5, 2.8, False), (1.5, 3.0, False), (0.0, 0.1, True), (0.0, 0.0, False)],
)
def test_novel_means_above_twice_the_covered_level(
    covered: float, recent: float, novel: bool
) -> None:
    watch = NoveltyWatch(2.0, window_s=3600.0)
    watch.covered_rps = covered
    for k in range(121):  # 30 s apart: one hour and one more reading
        watch.observe(30.0 * k, recent)
    assert watch.recent_rps() == pytest.approx(recent)
    assert watch.novel() is novel


def test_no_judgement_before_half_a_window_or_a_calibration() -> None:
    watch = NoveltyWatch(2.0, window_s=3600.0)
    for k in range(30):  # 14.5 minutes of readings
        watch.observe(30.0 * k, 50.0)
    assert not watch.novel()  # nothing covered yet
    watch.covered_rps = 1.0
    assert watch.recent_rps() is None and not watch.novel()  # under half an hour seen
    assert not NoveltyWatch(None).novel()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 1e4), min_size=2, max_size=300))
def test_recent_mean_is_the_mean_of_the_last_window(rates: list[float]) -> None:
    watch = NoveltyWatch(2.0, window_s=600.0)
    for k, r in enumerate(rates):
        watch.observe(10.0 * k, r)
        watch.observe(10.0 * k, 1e9)  # the same data time again is ignored
    last = rates[-60:]  # readings newer than 600 s before the last one
    got = watch.recent_rps()
    if 10.0 * (len(last) - 1) < 300.0:
        assert got is None
    else:
        assert got == pytest.approx(sum(last) / len(last), rel=1e-9, abs=1e-6)


LOAD = {"router": 10.0, "planner": 40.0, "writer": 10.0}


def _at(rate: float) -> dict[str, float]:
    return {name: rate * value / 10.0 for name, value in LOAD.items()}


def test_a_level_far_above_the_history_brings_the_safest_setting_then_a_calibration() -> None:
    fake = FakeReplayer(CHEAP_ENOUGH)
    driver = calibrating_driver(fake, calibration_window_s=3600.0, calibration_min_history_s=3600.0)
    driver.run(0.0, 3570.0, 10.0)
    got = driver.tick(3570.0, LOAD)
    assert got["writer"].details["calibration_setting"] == "reserve"  # cheapest on calm days
    calibrator = driver.policy.calibrator
    assert calibrator is not None
    assert calibrator.novelty.covered_rps == pytest.approx(10.0)
    # Three times the level: novel once the last hour's mean passes 20 requests/s.
    t, fell_back_at = 3585.0, None
    while t < 9000.0:
        got = driver.tick(t, _at(30.0))
        if fell_back_at is None and got["writer"].details["calibration_setting"] != "reserve":
            fell_back_at = t
            assert got["writer"].details["calibration_setting"] == "reserve+hold"
            assert got["writer"].details["calibration_novel_since_s"] == pytest.approx(t)
            assert driver.policy.setting("scale_down_lookback") == "need"
            assert len(fake.calls) == 1  # no replay yet: it would not hold the new level
        if len(fake.calls) == 2:
            break
        t += 15.0
    assert fell_back_at is not None and fell_back_at < 3570.0 + 3600.0
    # Half a window (1800 s) after the fall-back the replay's scored half is the new level.
    assert len(fake.calls) == 2 and t == pytest.approx(fell_back_at + 1800.0, abs=15.0)
    traffic, _ = fake.calls[1]
    assert np.nanmax(traffic.rate_rps) == pytest.approx(30.0)
    assert got["writer"].details["calibration_setting"] == "reserve"  # its evidence again
    assert "calibration_novel_since_s" not in got["writer"].details
    assert calibrator.novelty.covered_rps == pytest.approx(30.0, rel=0.05)


@pytest.mark.parametrize(("factor", "rate"), [(2.0, 19.0), (None, 30.0)])
def test_traffic_within_the_factor_or_without_the_rule_keeps_the_setting(
    factor: float | None, rate: float
) -> None:
    fake = FakeReplayer(CHEAP_ENOUGH)
    driver = calibrating_driver(
        fake,
        calibration_window_s=3600.0,
        calibration_min_history_s=3600.0,
        calibration_novelty_factor=factor,
    )
    driver.run(0.0, 3570.0, 10.0)
    driver.tick(3570.0, LOAD)
    t = 3585.0
    while t < 7155.0:  # before the history has doubled (the next calibration)
        got = driver.tick(t, _at(rate))
        assert got["writer"].details["calibration_setting"] == "reserve"
        assert "calibration_novel_since_s" not in got["writer"].details
        t += 15.0
