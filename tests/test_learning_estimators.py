"""The online estimators: convergence on noisy metrics with outliers, priors without data, and
missing or NaN metrics that never move an estimate."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale.learning import (
    ReadinessTracker,
    ScalarKalman,
    ServiceEstimator,
    ServiceSample,
    StartupEstimator,
)

BAD = [None, math.nan, math.inf, -math.inf]


@settings(max_examples=40, deadline=None)
@given(
    truth=st.floats(0.2, 50.0),
    prior_ratio=st.floats(0.4, 2.5),
    noise_cv=st.floats(0.0, 0.1),  # within the filter's own noise_cv
    outlier_share=st.floats(0.0, 0.1),
    seed=st.integers(0, 10_000),
)
def test_kalman_converges_on_noisy_samples_with_outliers(
    truth: float, prior_ratio: float, noise_cv: float, outlier_share: float, seed: int
) -> None:
    # Outliers are isolated (a level that repeats itself is a change, tested below); they lean
    # upwards (x5, x20 twice as often as x0), which biases an estimator that only clips them.
    rng = random.Random(seed)
    kf = ScalarKalman(truth * prior_ratio)
    previous_outlier = False
    for k in range(200):
        x = rng.uniform(1.0, 20.0)
        y = truth * x * (1.0 + rng.gauss(0.0, noise_cv))
        outlier = not previous_outlier and rng.random() < outlier_share
        if outlier:
            y *= rng.choice([0.0, 5.0, 20.0])
        previous_outlier = outlier
        kf.update(15.0 * k, x, max(y, 0.0))
    assert kf.theta == pytest.approx(truth, rel=0.1)
    assert kf.confidence > 0.9


def test_kalman_takes_outliers_that_disagree_for_noise_and_a_repeated_level_for_a_change() -> None:
    kf = ScalarKalman(2.0)
    for k in range(40):
        kf.update(15.0 * k, 5.0, 10.0)
    for k, factor in enumerate([20.0, 5.0, 5.0], start=40):  # three surprises, not one level
        kf.update(15.0 * k, 5.0, 10.0 * factor)
    assert kf.theta == pytest.approx(2.0, rel=1e-6)
    for k in range(43, 46):  # the same new level three times: a change
        kf.update(15.0 * k, 5.0, 15.0)
    assert kf.theta == pytest.approx(3.0, rel=1e-6)


def test_kalman_follows_a_step_change_within_minutes() -> None:
    rng = random.Random(3)
    kf = ScalarKalman(1.5)
    for k in range(100):
        kf.update(15.0 * k, 6.0, 1.5 * 6.0 * (1 + rng.gauss(0, 0.05)))
    assert kf.theta == pytest.approx(1.5, rel=0.05)
    within = None
    for k in range(100, 200):
        kf.update(15.0 * k, 6.0, 0.9 * 6.0 * (1 + rng.gauss(0, 0.05)))
        if within is None and abs(kf.theta - 0.9) <= 0.09:
            within = (k - 100) * 15.0
    assert within is not None and within <= 120.0


@pytest.mark.parametrize("x", [*BAD, 0.0, -1.0])
@pytest.mark.parametrize("y", [*BAD, 3.0])
def test_kalman_ignores_missing_or_nan(x: float | None, y: float | None) -> None:
    kf = ScalarKalman(2.0)
    kf.update(0.0, 1.0, 2.0)
    before = (kf.theta, kf.variance, kf.samples)
    if x is not None and math.isfinite(x) and x > 0 and y is not None and math.isfinite(y):
        pytest.skip("a valid pair")
    assert kf.update(15.0, x, y) is False
    assert (kf.theta, kf.variance, kf.samples) == before


def test_kalman_refuses_bad_prior() -> None:
    with pytest.raises(ValueError, match="prior = 0"):
        ScalarKalman(0.0)


def test_startup_prior_until_measured_then_upper_quantile() -> None:
    est = StartupEstimator(120.0)
    assert est.value_s == 120.0 and est.measured_s is None and est.confidence == 0.0
    for duration_s in (290.0, 300.0, 310.0):
        est.add(duration_s)
    assert est.value_s == pytest.approx(310.0)
    assert est.measured_s == 310.0
    assert est.confidence > 0.5


@settings(max_examples=40, deadline=None)
@given(
    truth_s=st.floats(5.0, 600.0),
    prior_s=st.floats(5.0, 600.0),
    spread=st.floats(0.0, 0.2),
    seed=st.integers(0, 10_000),
)
def test_startup_quantile_converges(
    truth_s: float, prior_s: float, spread: float, seed: int
) -> None:
    """After 30 starts the prior is forgotten and one start of 10x the others (five starts
    ago) is not the 0.9 quantile: the estimate is within the measured spread of the truth."""
    rng = random.Random(seed)
    est = StartupEstimator(prior_s)
    for k in range(30):
        d = truth_s * (1 + rng.uniform(-spread, spread))
        if k == 25:
            d = truth_s * 10
        est.add(d)
    assert truth_s * (1 - spread) - 1e-9 <= est.value_s <= truth_s * (1 + spread) + 1e-9


@pytest.mark.parametrize("bad", [*BAD, -5.0])
def test_startup_ignores_bad_samples(bad: float | None) -> None:
    est = StartupEstimator(60.0)
    assert est.add(bad) is False
    assert est.value_s == 60.0 and not est.samples_s


@pytest.mark.parametrize(
    ("looks", "expected"),
    [
        # (t, desired, ready): 2 requested at the tick t=0 (seen at 15), ready between 120 and 135.
        ([(0, 1, 1), (15, 3, 1), (120, 3, 1), (135, 3, 3)], [127.5, 127.5]),
        # One cancelled before ready: only one start measured.
        ([(0, 1, 1), (15, 3, 1), (30, 2, 1), (135, 2, 2)], [82.5]),
        # Missing counts are skipped, time never goes back.
        ([(0, 1, 1), (15, None, 1), (15, 2, 1), (10, 2, 2), (60, 2, 2)], [37.5]),
        # Replicas already starting at the first look are never measured.
        ([(0, 3, 1), (60, 3, 3)], []),
    ],
)
def test_readiness_tracker(
    looks: list[tuple[float, int | None, int | None]], expected: list[float]
) -> None:
    tracker = ReadinessTracker()
    got: list[float] = []
    for t, desired, ready in looks:
        got.extend(tracker.look(t, desired, ready))
    assert got == pytest.approx(expected)


def _sample(
    at_s: float,
    rps: float,
    util: float | None,
    ready: int | None,
    in_flight: float | None,
    queue: float | None = 0.0,
) -> ServiceSample:
    return ServiceSample(at_s, rps, rps, util, ready, in_flight, queue)


@settings(max_examples=30, deadline=None)
@given(
    capacity=st.floats(0.5, 40.0),
    service_s=st.floats(0.05, 10.0),
    noise=st.floats(0.0, 0.1),
    seed=st.integers(0, 10_000),
)
def test_service_estimator_converges(
    capacity: float, service_s: float, noise: float, seed: int
) -> None:
    rng = random.Random(seed)
    est = ServiceEstimator(capacity_prior=capacity * 1.6, service_time_prior_s=service_s * 0.5)
    for k in range(200):
        ready = rng.randint(1, 10)
        util = rng.uniform(0.3, 0.95)
        rps = capacity * util * ready * (1 + rng.gauss(0, noise))
        if rng.random() < 0.05:
            rps *= 4  # an outlier scrape
        in_flight = rps * service_s * (1 + rng.gauss(0, noise))
        est.update(_sample(15.0 * k, max(rps, 0.0), util, ready, max(in_flight, 0.0)))
    assert est.capacity.theta == pytest.approx(capacity, rel=0.1)
    assert est.service_time.theta == pytest.approx(service_s, rel=0.1)


def test_service_estimator_saturated_uses_queue_growth() -> None:
    """At utilization 1 arrivals exceed what is served; the queue's growth says by how much."""
    est = ServiceEstimator(capacity_prior=1.5, service_time_prior_s=4.0)
    queue = 0.0
    for k in range(80):
        queue += (10.0 - 0.9 * 8) * 15.0  # 10 req/s arrive, 8 replicas of 0.9 serve 7.2
        est.update(_sample(15.0 * k, 10.0, 1.0, 8, 8 * 0.9 * 6.67, queue))
    assert est.capacity.theta == pytest.approx(0.9, rel=0.1)


@pytest.mark.parametrize(("timeout_s", "learnt"), [(None, 10.0 / 8), (40.0, 0.9)])
def test_service_estimator_skips_a_queue_that_drops_unseen_work(
    timeout_s: float | None, learnt: float
) -> None:
    """A queue held at 400 requests by its timeout (10 req/s arrive, 7.2 are served, the rest
    time out unseen): load minus queue growth says 10 req/s served. With the queue timeout
    known, those samples are skipped (400 / (0.9 x 8) = 56 s of queue > half of 40 s); the
    quiet samples before them teach the truth."""
    est = ServiceEstimator(capacity_prior=0.9, service_time_prior_s=6.67, timeout_s=timeout_s)
    for k in range(40):  # 8 replicas of 0.9 at utilization 0.5, no queue
        est.update(_sample(15.0 * k, 3.6, 0.5, 8, 3.6 * 6.67, 0.0))
    for k in range(40, 120):
        est.update(_sample(15.0 * k, 10.0, 1.0, 8, 8 * 0.9 * 6.67, 400.0))
    assert est.capacity.theta == pytest.approx(learnt, rel=0.05)


@pytest.mark.parametrize(
    "sample",
    [
        _sample(15.0, math.nan, 0.5, 4, 10.0),
        _sample(15.0, 3.0, None, 4, 10.0),
        _sample(15.0, 3.0, math.nan, 4, 10.0),
        _sample(15.0, 3.0, 0.5, None, 10.0),
        _sample(15.0, 3.0, 0.5, 0, 10.0),
        _sample(15.0, 3.0, 0.5, 4, 10.0, None),
        _sample(15.0, 3.0, 0.05, 4, 10.0),  # idle: says nothing
    ],
)
def test_service_estimator_ignores_missing(sample: ServiceSample) -> None:
    est = ServiceEstimator(capacity_prior=1.5, service_time_prior_s=4.0)
    assert est.update(sample) is False
    assert est.capacity.theta == 1.5 and est.capacity.samples == 0
    assert est.service_time.theta == 4.0 and est.service_time.samples == 0


@settings(max_examples=40, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.floats(0.3, 0.95), st.integers(1, 10), st.floats(0.5, 1.5)),
        min_size=5,
        max_size=40,
    ),
    holes=st.lists(st.integers(0, 39), max_size=15),
    bad=st.sampled_from([math.nan, math.inf, None]),
)
def test_bad_samples_between_good_ones_change_nothing(
    data: list[tuple[float, int, float]], holes: list[int], bad: float | None
) -> None:
    """The same good samples with missing or NaN ones slipped in give exactly the same
    estimates as without them (queue growth is taken between the good samples either way)."""
    clean = ServiceEstimator(capacity_prior=2.0, service_time_prior_s=1.0)
    holed = ServiceEstimator(capacity_prior=2.0, service_time_prior_s=1.0)
    t = 0.0
    for k, (util, ready, noise) in enumerate(data):
        t += 15.0
        rps = 1.5 * util * ready * noise
        good = _sample(t, rps, util, ready, rps * 0.8, 0.0)
        if k in holes:
            holed.update(ServiceSample(t - 7.5, bad, bad, bad, None, bad, bad))
        clean.update(good)
        holed.update(good)
    for a, b in ((clean.capacity, holed.capacity), (clean.service_time, holed.service_time)):
        assert (a.theta, a.variance, a.samples) == (b.theta, b.variance, b.samples)
