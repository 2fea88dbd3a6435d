"""`sorted_quantile` gives the very double `numpy.quantile` gives (method "linear")."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale.forecasting.order_stats import sorted_quantile


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


@pytest.mark.parametrize(
    ("values", "q", "want"),
    [
        ([1.0, 2.0, 10.0], 0.9, 8.4),  # the docstring's worked numbers
        ([5.0], 0.99, 5.0),  # one value: the last, whatever q
        ([0.0, 1.0], 0.5, 0.5),  # from the upper end at g = 0.5
        ([-1.0, -0.0], 1.0, 0.0),  # -0.0 taken twice past the end: numpy's lerp gives 0.0
        ([-0.0, -0.0, -0.0], 0.9, -0.0),
        ([3.0, 3.0, 3.0, 7.0], 1.0, 7.0),  # q = 1: past the end
    ],
)
def test_worked_values(values: list[float], q: float, want: float) -> None:
    a = np.asarray(values, dtype=float)
    got = sorted_quantile(a, q)
    assert got == pytest.approx(want)
    assert bits(got) == bits(float(np.quantile(a, q)))


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
sizes = st.integers(min_value=1, max_value=300)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(finite | st.sampled_from([0.0, 1.0, -1.0]), min_size=1, max_size=300),
    st.sampled_from([0.5, 0.9, 0.95, 0.99, 0.999, 1.0, 0.0]) | st.floats(0.0, 1.0),
)
def test_the_same_bits_as_numpy(values: list[float], q: float) -> None:
    """Any sample without -0.0 (with both zeros, which of them numpy's partition puts first
    is its own business: the sign of a zero result can differ, never its value)."""
    values = [0.0 if v == 0 else v for v in values]
    a = np.sort(np.asarray(values, dtype=float))
    want = float(np.quantile(a, q))
    got = sorted_quantile(a, q)
    assert bits(got) == bits(want) or (math.isnan(got) and math.isnan(want))


@settings(max_examples=200, deadline=None)
@given(sizes, st.integers(0, 2**32 - 1))
def test_random_samples_and_subsets(n: int, seed: int) -> None:
    """The use in `DemandForecast`: quantiles of a masked subset of one sorted sample."""
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.standard_normal(n) * rng.choice([1e-9, 1.0, 1e6]))
    mask = rng.random(n) < 0.5
    subset = sample[mask] if mask.any() else sample
    for q in (0.9, 0.99):
        assert bits(sorted_quantile(subset, q)) == bits(float(np.quantile(subset, q)))
