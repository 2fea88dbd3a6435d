"""The parts `elastiscale` is built from, checked against the worked numbers in their docstrings:
capacity models, the ratio estimator behind measured fan-out, quantile interpolation."""

from __future__ import annotations

import numpy as np
import pytest

from elastiscale.controllers.demand import quantile_between
from elastiscale.controllers.fanout import RatioEstimator
from elastiscale.controllers.queueing import QueueingSizer, TokenSizerCache, UtilizationSizer


def writer() -> QueueingSizer:
    # The agent example's writer: 8 s calls, 1.2 calls/s per replica, a 29.8 s budget.
    return QueueingSizer(
        capacity_rps=1.2, service_time_s=8.0, budget_s=29.8, max_replicas=96, burst_share=0.75
    )


@pytest.mark.parametrize(
    ("replicas", "per_replica_rps"), [(1, 0.883), (2, 1.014), (26, 1.181)], ids=str
)
def test_small_pools_get_headroom_and_large_ones_run_hot(
    replicas: int, per_replica_rps: float
) -> None:
    sizer = writer()
    assert sizer.wait_budget_s == pytest.approx(8.0 + 0.25 * 21.8)
    assert sizer.served_rps(replicas) / replicas == pytest.approx(per_replica_rps, abs=1e-3)


def test_queueing_sizer_inverts_its_table() -> None:
    sizer = writer()
    assert sizer.replicas_for(30.0) == 26  # as the oracle's docstring works out
    assert sizer.replicas_for(0.0) == 0
    assert sizer.replicas_for(1e6) == 97  # none of 1..96 is enough
    for rate in np.linspace(0.1, 100.0, 37):
        n = sizer.replicas_for(float(rate))
        if n <= 96:
            assert sizer.served_rps(n) >= rate * (1 - 1e-9)
            assert n == 1 or sizer.served_rps(n - 1) < rate


def test_utilization_sizer_is_the_hpa_arithmetic() -> None:
    sizer = UtilizationSizer(capacity_rps=1.2, utilization=0.7, max_replicas=96)
    assert sizer.replicas_for(30.0) == 36  # 30 / 0.84 = 35.7
    assert sizer.replicas_for(1e6) == 97


def test_token_sizers_are_cached_per_call_size() -> None:
    cache = TokenSizerCache(
        capacity_tokens_per_s=3000,
        service_time_s=6.0,
        budget_s=15.0,
        max_replicas=64,
        burst_share=0.75,
        queueing=True,
        utilization=0.7,
    )
    sizer = cache.sizer(1500.0)
    assert isinstance(sizer, QueueingSizer)
    assert sizer.capacity_rps == pytest.approx(2.0, rel=0.02)  # 3000 tokens/s / 1500 a call
    assert cache.sizer(1505.0) is sizer  # within the 2% grid
    assert cache.sizer(3000.0) is not sizer


def test_ratio_estimator_worked_numbers() -> None:
    # Prior 3.0 worth 100 requests; 50 s at 10 req/s up and 40 calls/s down.
    ratio = RatioEstimator(3.0, 100.0, 120.0)
    ratio.update(0.0, 40.0, 10.0)  # the first tick only starts the clock
    assert ratio.value == 3.0 and ratio.confidence == 0.0
    ratio.update(50.0, 40.0, 10.0)
    assert ratio.value == pytest.approx(2300 / 600)
    assert ratio.confidence == pytest.approx(500 / 600)


def test_ratio_estimator_forgets_with_its_half_life() -> None:
    ratio = RatioEstimator(None, 0.0, 120.0)
    assert ratio.value is None
    for t in range(0, 1200, 15):
        ratio.update(float(t), 30.0, 10.0)
    assert ratio.value == pytest.approx(3.0)
    for t in range(1200, 1440, 15):  # two half-lives of a new ratio
        ratio.update(float(t), 60.0, 10.0)
    value = ratio.value
    assert value is not None and 5.0 < value < 6.0  # 3 + 3 x (1 - 1/4) = 5.25
    ratio.update(1455.0, 99.0, 0.0)  # no upstream traffic: no evidence either way
    assert ratio.value == pytest.approx(value)


@pytest.mark.parametrize(
    ("quantile", "expected"), [(0.5, 10.0), (0.9, 13.0), (0.95, 14.04), (0.99, 16.0)], ids=str
)
def test_quantile_between_interpolates_in_z(quantile: float, expected: float) -> None:
    got = quantile_between(np.array([10.0]), np.array([13.0]), np.array([16.0]), quantile)
    assert float(got[0]) == pytest.approx(expected, abs=0.01)


BAD_PARAMS = [
    ("elastiscale", {"forecaster": "nope"}, "params: forecaster: unknown forecaster 'nope'"),
    ("elastiscale", {"quantile": 1.5}, "params.quantile: Input should be less than 1"),
    ("elastiscale", {"burst_share": -0.1}, "params.burst_share"),
    ("elastiscale", {"typo": 1}, "params.typo: unknown key"),
    ("predictive", {"forecaster_params": {"step_s": -1}}, "forecaster_params.step_s"),
    ("predictive", {"target_utilization": 0}, "params.target_utilization"),
]


@pytest.mark.parametrize(("policy", "params", "message"), BAD_PARAMS, ids=str)
def test_bad_parameters_are_one_line_errors_naming_the_field(
    policy: str, params: dict[str, object], message: str
) -> None:
    from elastiscale.config import validate_mapping
    from elastiscale.errors import ConfigError

    config = {
        "pipeline": {
            "name": "t",
            "slo": {"latency_p95_s": 10},
            "components": {
                "a": {
                    "ingress": True,
                    "capacity_per_replica": 1,
                    "service_time_s": 1,
                    "replicas": {"max": 3},
                }
            },
        },
        "policies": [{"name": policy, "params": params}],
    }
    with pytest.raises(ConfigError) as caught:
        validate_mapping(config)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith("policies[0].")
    assert message in caught.value.problems[0]
