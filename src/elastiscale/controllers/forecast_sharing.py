"""One ingress forecaster for several policies stepped side by side, tick by tick.

A self-calibration replays the same observed ingress under a few candidate settings
(calibration.py). The candidates see the same ingress observations at the same ticks and ask
the same of their ingress forecasts, so their forecasters go through the same updates, refits
and forecasts: one forecaster can serve them all, if the candidates take turns tick by tick,
the first (the leader) before the others (the followers). A follower's call then finds the
forecaster where its own would be, and only reads it.

That only holds while a follower asks exactly what the leader asked in the same tick: the same
observations, in the same order, and outlooks of the same bins. A `ForecastShare` records the
leader's calls of the current round and checks each follower's against them; any difference
raises `DivergedError` (the replay then runs the candidates one by one, each with its own
forecaster, from the start: backtest/side_by_side.py). So sharing never changes a number.
"""

from __future__ import annotations

from typing import Any

#: A recorded call: ("observe", at_s, rate) or ("outlook", bins).
Call = tuple[object, ...]


class DivergedError(RuntimeError):
    """A follower asked its shared forecast for something the leader had not asked."""


class Turns:
    """Whose turn it is: `lead()` starts a round (the leader's tick), `follow()` each
    follower's tick of it."""

    def __init__(self) -> None:
        self.leading = True
        self.round = 0
        self.turn = 0

    def lead(self) -> None:
        self.leading = True
        self.round += 1
        self.turn += 1

    def follow(self) -> None:
        self.leading = False
        self.turn += 1


def _same(a: Call, b: Call) -> bool:
    """Equal calls (a NaN rate equals a NaN rate)."""
    if len(a) != len(b):
        return False
    return all(x == y or (x != x and y != y) for x, y in zip(a, b, strict=True))  # NaN != NaN


class ForecastShare:
    """The leader's calls on one shared forecast in the current round, and how far the
    follower whose turn it is has matched them."""

    def __init__(self, turns: Turns, leader: Any) -> None:
        # `leader` is the leader's demand.DemandForecast, untyped here: demand.py imports
        # this module, and the layer rules allow no import circle, not even for types.
        self.turns = turns
        #: The leader's forecast; a follower holds either this very object or a forecast of
        #: its own on `leader.forecaster`.
        self.leader = leader
        self._calls: list[tuple[Call, Any]] = []
        self._calls_round = -1
        self._turn = -1
        self._cursor = 0
        #: What the leader's call that a follower matched last left for it (an outlook's
        #: result and what it read off the forecaster).
        self.last: Any = None

    def record(self, call: Call, result: Any = None) -> None:
        """A call in the leader's turn, and what it leaves for the followers."""
        if self._calls_round != self.turns.round:
            self._calls_round = self.turns.round
            self._calls = []
        self._calls.append((call, result))

    def follows(self, call: Call) -> bool:
        """False in the leader's turn; in a follower's, True when `call` is the leader's next
        one of this round (its result in `last`), else `DivergedError`."""
        turns = self.turns
        if turns.leading:
            return False
        if self._turn != turns.turn:
            self._turn, self._cursor = turns.turn, 0
        i = self._cursor
        calls = self._calls if self._calls_round == turns.round else []
        if i >= len(calls) or not _same(calls[i][0], call):
            raise DivergedError(f"a follower's {call!r} is not the leader's call {i} of the tick")
        self._cursor = i + 1
        self.last = calls[i][1]
        return True

    def end_turn(self) -> None:
        """After a follower's tick: it must have made every call the leader made."""
        turns = self.turns
        made = self._cursor if self._turn == turns.turn else 0
        expected = len(self._calls) if self._calls_round == turns.round else 0
        if made != expected:
            raise DivergedError(f"a follower made {made} of the leader's {expected} calls")
