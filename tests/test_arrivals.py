"""The arrival variability estimator (controllers/arrivals.py) and the sizing it changes.

Rates are built as a metric source reports them (a trailing 60 s mean, read every 15 s) from
seeded count streams whose index of dispersion is known: Poisson (1), batches of geometric size
B (about 2B - 1), and a Poisson stream multiplied by k (k)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale.controllers.arrivals import ArrivalVariability, TypicalDispersion
from elastiscale.controllers.queueing import QueueingSizer, VariabilitySizers

WINDOW_S = 60
TICK_S = 15


def _readings(counts: np.ndarray, tick_s: int = TICK_S) -> list[tuple[float, float]]:
    total = np.concatenate([[0], np.cumsum(counts)])
    return [
        (float(t), float(total[t] - total[t - WINDOW_S]) / WINDOW_S)
        for t in range(WINDOW_S, counts.size + 1, tick_s)
    ]


def _dispersion(counts: np.ndarray) -> float | None:
    est = ArrivalVariability(window_s=WINDOW_S)
    for at_s, rate in _readings(counts):
        est.update(at_s, rate)
    return est.dispersion


def _batches(rng: np.random.Generator, n_s: int, batch: float, per_s: float) -> np.ndarray:
    starts = rng.poisson(per_s, n_s)
    return np.array([rng.geometric(1.0 / batch, k).sum() if k else 0 for k in starts])


@pytest.mark.parametrize(
    ("case", "make", "low", "high"),
    [
        ("poisson 5/s", lambda r: r.poisson(5.0, 10_800), 0.85, 1.2),
        ("poisson 0.5/s", lambda r: r.poisson(0.5, 10_800), 0.85, 1.2),
        ("poisson x4 (a scaled trace)", lambda r: 4 * r.poisson(1.0, 10_800), 3.3, 4.7),
        ("batches of 10", lambda r: _batches(r, 10_800, 10.0, 0.2), 14.0, 24.0),
        ("batches of 40", lambda r: _batches(r, 10_800, 40.0, 0.05), 55.0, 105.0),
    ],
)
def test_dispersion_of_known_streams(case: str, make, low: float, high: float) -> None:
    got = _dispersion(make(np.random.default_rng(7)))
    assert got is not None, case
    assert low <= got <= high, f"{case}: {got:.2f} not in [{low}, {high}]"


def test_nothing_is_reported_before_min_pairs_and_poisson_until_then() -> None:
    est = ArrivalVariability(window_s=WINDOW_S, min_pairs=20)
    readings = _readings(np.random.default_rng(1).poisson(40.0, 20 * TICK_S + WINDOW_S))
    for at_s, rate in readings[:20]:
        est.update(at_s, rate)
    assert est.dispersion is None
    assert est.wait_factor() == 1.0
    est.update(*readings[20])
    assert est.dispersion is not None


def test_a_missing_reading_breaks_the_pair_and_is_never_a_zero() -> None:
    est = ArrivalVariability(window_s=WINDOW_S, min_pairs=1)
    est.update(0.0, 10.0)
    est.update(15.0, None)
    est.update(30.0, 10.0)  # no pair with 0.0's reading across the gap, none with "zero"
    assert est.dispersion is None
    est.update(45.0, 10.0)
    assert est.dispersion == 0.0


def test_a_gap_in_the_data_is_not_read_as_one_long_change() -> None:
    est = ArrivalVariability(window_s=WINDOW_S, min_pairs=1)
    est.update(0.0, 1.0)
    est.update(15.0, 1.0)
    est.update(600.0, 50.0)  # ten minutes later: a new level, not a burst
    assert est.dispersion == 0.0


def test_bursts_that_stop_are_forgotten_within_hours() -> None:
    rng = np.random.default_rng(3)
    counts = np.concatenate([_batches(rng, 3600, 40.0, 0.05), rng.poisson(2.0, 4 * 3600)])
    est = ArrivalVariability(window_s=WINDOW_S, half_life_s=1800.0)
    seen = []
    for at_s, rate in _readings(counts):
        est.update(at_s, rate)
        seen.append(est.dispersion)
    assert seen[200] is not None and seen[200] > 30
    assert seen[-1] is not None and seen[-1] < 3


def test_wait_factor_is_allen_cunneen_and_never_below_poisson() -> None:
    est = ArrivalVariability(window_s=WINDOW_S, min_pairs=1)
    est.update(0.0, 10.0)
    est.update(15.0, 10.0)
    assert est.wait_factor() == 1.0  # dispersion 0 (a deterministic stream): Erlang C as is
    est = ArrivalVariability(window_s=WINDOW_S, min_pairs=1)
    est.update(0.0, 10.0)
    est.update(15.0, 12.0)  # 60^2 x 2^2 / (2 x 15) / 11 = 43.6
    assert est.wait_factor() == pytest.approx((3600 * 4 / 30 / 11 + 1) / 2)


def _sizer(variability: float = 1.0) -> QueueingSizer:
    return QueueingSizer(
        capacity_rps=1.2,
        service_time_s=8.0,
        budget_s=29.8,
        max_replicas=60,
        burst_share=0.25,
        variability=variability,
    )


def test_a_factor_of_one_is_the_erlang_c_sizer_itself() -> None:
    base = _sizer()
    assert VariabilitySizers(base, 0.25).sizer_for(1.0) is base
    assert VariabilitySizers(base, 0.25).sizer_for(0.3) is base
    assert np.array_equal(_sizer(1.0).table, base.table)


def test_bursty_arrivals_keep_free_replicas_in_large_pools() -> None:
    """The writer of the agent example at 30 calls/s: 26 replicas with Poisson arrivals (98%
    busy); batches of about 40 (factor 40) leave it no random wait, which square-root staffing
    of 25 erlangs of slots answers with about a fifth more."""
    sizers = VariabilitySizers(_sizer(), 0.25)
    poisson = sizers.sizer_for(1.0).replicas_for(30.0)
    bursty = sizers.sizer_for(40.0).replicas_for(30.0)
    assert poisson == 26
    assert 28 <= bursty <= 34


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(0.01, 60.0),
    low=st.floats(1.0, 50.0),
    more=st.floats(0.0, 50.0),
)
def test_more_variability_never_needs_fewer_replicas(rate: float, low: float, more: float) -> None:
    sizers = VariabilitySizers(_sizer(), 0.25)
    assert sizers.sizer_for(low + more).replicas_for(rate) >= sizers.sizer_for(low).replicas_for(
        rate
    )


def _typical(counts: np.ndarray, **kw: int) -> list[float | None]:
    est = TypicalDispersion(window_s=WINDOW_S, **kw)
    seen = []
    for at_s, rate in _readings(counts):
        est.update(at_s, rate)
        seen.append(est.dispersion)
    return seen


@pytest.mark.parametrize(
    ("case", "make", "low", "high"),
    [
        ("poisson 5/s", lambda r: r.poisson(5.0, 10_800), 0.6, 1.4),
        ("poisson x8 (a scaled trace)", lambda r: 8 * r.poisson(1.0, 10_800), 6.0, 10.5),
        # the median of a batch stream's changes is below their mean: still far from Poisson
        ("batches of 40", lambda r: _batches(r, 10_800, 40.0, 0.05), 15.0, 105.0),
    ],
)
def test_typical_dispersion_of_known_streams(case: str, make, low: float, high: float) -> None:
    got = _typical(make(np.random.default_rng(7)))[-1]
    assert got is not None, case
    assert low <= got <= high, f"{case}: {got:.2f} not in [{low}, {high}]"


def test_rare_surges_move_the_mean_dispersion_not_the_typical_one() -> None:
    """Poisson 5/s with a 2-minute surge to 25/s each hour: the surges are what the surge test
    must see, so they must not raise the noise it compares against."""
    rng = np.random.default_rng(11)
    rate = np.full(4 * 3600, 5.0)
    for hour in range(4):
        rate[hour * 3600 + 1800 : hour * 3600 + 1920] = 25.0
    counts = rng.poisson(rate)
    mean = _dispersion(counts)
    typical = _typical(counts)[-1]
    assert mean is not None and mean > 3.0
    assert typical is not None and 0.6 <= typical <= 1.4


def test_typical_dispersion_waits_for_min_pairs_and_a_missing_reading_is_no_zero() -> None:
    est = TypicalDispersion(window_s=WINDOW_S, min_pairs=3, every=1)
    for at_s, rate in [(0.0, 10.0), (15.0, 10.0), (30.0, None), (45.0, 12.0), (60.0, 12.0)]:
        est.update(at_s, rate)
    assert est.dispersion is None  # pairs: 0-15 and 45-60; none across the missing reading
    est.update(75.0, 12.0)
    assert est.dispersion == 0.0  # three pairs without a change
