"""The trust of a forecast bin in plain floats is the doubles numpy's formula gives
(controllers/demand.py, `_trust_of`), zeros, infinities and NaN included."""

from __future__ import annotations

import math

import numpy as np

from elastiscale.controllers.demand import _trust_of


def _numpy_trust(model_error: np.ndarray, persistence_error: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = model_error / persistence_error
        trust = np.clip(2.0 - 2.0 * ratio, 0.0, 1.0)
    both_zero = (model_error == 0.0) & (persistence_error == 0.0)
    trust = np.where(both_zero, 1.0, trust)
    return np.where(np.isnan(trust), 0.0, trust)


def test_trust_is_numpys_formula_to_the_bit() -> None:
    rng = np.random.default_rng(0)
    special = [0.0, -0.0, math.nan, math.inf, -math.inf, 0.5, 1.0, 2.0, 1e-300, 5e-324, -1.0]
    for _ in range(2000):
        pool = special + rng.random(5).tolist()
        m = rng.choice(pool, 16)
        p = rng.choice(pool, 16)
        pairs = zip(m.tolist(), p.tolist(), strict=True)
        got = np.array([_trust_of(a, b) for a, b in pairs], dtype=float)
        assert got.tobytes() == _numpy_trust(m, p).tobytes(), (m, p)
