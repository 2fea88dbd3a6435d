"""The weighted ensemble's weights of all horizons at once are the same doubles as horizon by
horizon (forecasting/members.py, `MemberSet._weight_table`)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from elastiscale.forecasting.members import MemberSet


def _member_set(errors: dict[int, list[float]], members: int) -> MemberSet:
    """A member set whose members' errors per horizon are `errors` (no models needed)."""
    ms = object.__new__(MemberSet)
    ms._combined = list(range(members))
    ms._weight_tables = {}
    ms._weights_cache = {}
    ms._errors = {}
    ms.error_list = lambda k, with_combined=False: errors[k]  # type: ignore[method-assign]
    return ms


@pytest.mark.parametrize("members", [2, 3, 5, 7, 8, 9])
def test_weight_table_is_the_columns_of_weights(members: int) -> None:
    rng = np.random.default_rng(members)
    for _ in range(200):
        ks = np.arange(1, 17, dtype=np.int64)
        errors = {}
        for k in ks.tolist():
            row = (rng.random(members) * 10.0 ** rng.uniform(-4, 2, members)).tolist()
            if rng.random() < 0.2:
                row[int(rng.integers(members))] = math.nan
            if rng.random() < 0.05:
                row[0] = 0.0
            errors[k] = row
        got = _member_set(errors, members)._weight_table(ks)
        ms = _member_set(errors, members)
        want = np.column_stack([ms._weights(k) for k in ks.tolist()])
        assert got.shape == want.shape
        assert got.tobytes() == want.tobytes()
