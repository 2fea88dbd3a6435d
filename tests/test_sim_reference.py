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
from elastiscale.backtest import stepcolumn

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


@pytest.mark.parametrize("chunk", [7, 50])
def test_flushing_and_sealing_often_changes_nothing(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference cases are shorter than a chunk (`stepcolumn.CHUNK`, 4096 steps), so above
    the step logs are flushed and the arrival records sealed once, at the end. With chunks of
    7 and 50 steps they are many times during the run (the metric source then reads the last
    steps from runs and dense arrays, and the latency table is built from sealed stretches):
    the same bits."""
    monkeypatch.setattr(stepcolumn, "CHUNK", chunk)
    for name in ("agent-azure-fast", "rag-mooncake-fast", "agent-azure-discrete-event"):
        want = STORED["backtests"][name]
        got = ref.compute_backtest(name)
        for policy in want:
            assert got[policy]["digest"] == want[policy]["digest"], f"{name}: {policy} arrays"
    for name, (*_, policies) in sorted(ref.REPLAYS.items()):
        for policy in policies:
            want = STORED["replays"][name][policy]
            got_replay = ref.replay(name, want["commands"])
            assert got_replay == {k: want[k] for k in ("observations", "result")}, name
