"""The simulators give bit-identical results to the stored reference (`sim_reference.py`).

Speed work on the simulators, the simulated metric source and the policies they drive must not
change a single number: every case of `tests/data/sim_reference.json` is recomputed here and
compared exactly (scores field by field, every array by its sha256).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import sim_reference as ref

STORED: dict[str, Any] = json.loads(ref.DATA.read_text())


@pytest.mark.parametrize("name", sorted(ref.BACKTESTS))
def test_backtest_matches_the_stored_reference(name: str) -> None:
    got = ref.compute_backtest(name)
    want = STORED["backtests"][name]
    assert sorted(got) == sorted(want)
    for policy in want:
        assert got[policy]["score"] == want[policy]["score"], f"{name}: {policy} score"
        assert got[policy]["digest"] == want[policy]["digest"], f"{name}: {policy} arrays"


@pytest.mark.parametrize(
    ("name", "policy"),
    [(name, policy) for name, (*_, policies) in sorted(ref.REPLAYS.items()) for policy in policies],
)
def test_replayed_commands_match_the_stored_reference(name: str, policy: str) -> None:
    want = STORED["replays"][name][policy]
    assert want["commands"], "a replay without scaling commands pins nothing"
    got = ref.replay(name, want["commands"])
    assert got["observations"] == want["observations"], f"{name}: {policy} observations"
    assert got["result"] == want["result"], f"{name}: {policy} result"
