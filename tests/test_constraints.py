"""Constraints, one rule at a time and in their order, on plain `now_s` values.

A scenario is a list of ticks; each tick proposes a count, the chain constrains it, and the
result is committed as applied (unless the tick says the actuation failed), as the engine does.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale.config import ComponentConfig, ConstraintsConfig
from elastiscale.controllers.constraints import (
    ComponentConstraints,
    ConstraintInput,
    RateLimits,
    Stabilization,
    build_constraints,
)
from elastiscale.decision import Clamp
from elastiscale.observations import Observation


@dataclass(frozen=True)
class Tick:
    now_s: float
    proposed: int
    data_ok: bool = True
    applied: bool = True  # False: the actuation failed, the count stays


def component(
    min_replicas: int = 0, max_replicas: int = 100, capacity_unit: str = "requests"
) -> ComponentConfig:
    return ComponentConfig.model_validate(
        {
            "capacity_per_replica": 1.0,
            "capacity_unit": capacity_unit,
            "service_time_s": 1.0,
            "replicas": {"min": min_replicas, "max": max_replicas},
        }
    )


def chain_for(rules: dict[str, Any], min_replicas: int = 0, max_replicas: int = 100) -> Any:
    return build_constraints(
        component(min_replicas, max_replicas), ConstraintsConfig.model_validate(rules)
    )


def observation(now_s: float, ok: bool, signal: str = "demand_rps") -> Observation:
    if ok:
        return Observation("c", now_s, **{signal: 1.0})
    return Observation("c", now_s, missing={signal: "nan"})


def run(
    chain: ComponentConstraints, start: int, ticks: list[Tick]
) -> list[tuple[int, list[Clamp]]]:
    """Drive `chain` through `ticks` from `start` replicas; (desired, clamps) per tick."""
    current = start
    out = []
    for tick in ticks:
        inp = ConstraintInput(
            component="c",
            now_s=tick.now_s,
            current=current,
            ready=current,
            observation=observation(tick.now_s, tick.data_ok),
            data_ok=tick.data_ok,
        )
        desired, clamps = chain.apply(inp, tick.proposed)
        applied = desired if tick.applied else current
        chain.commit("c", tick.now_s, current, applied)
        current = applied
        out.append((desired, clamps))
    return out


def desired_counts(chain: ComponentConstraints, start: int, ticks: list[Tick]) -> list[int]:
    return [d for d, _ in run(chain, start, ticks)]


def ticks(*pairs: tuple[float, int]) -> list[Tick]:
    return [Tick(t, n) for t, n in pairs]


# --------------------------------------------------------------------------------------------
# Which constraints a component gets


@pytest.mark.parametrize(
    ("rules", "names"),
    [
        ({}, ["missing_data", "bounds"]),
        ({"scale_down": {"stabilization_s": 300}}, ["missing_data", "stabilization", "bounds"]),
        (
            {"scale_up": {"rate_limits": [{"type": "pods", "value": 4, "period_s": 60}]}},
            ["missing_data", "rate_limits", "bounds"],
        ),
        ({"scale_down": {"select": "disabled"}}, ["missing_data", "rate_limits", "bounds"]),
        ({"scale_up": {"cooldown_s": 60}}, ["missing_data", "cooldown", "bounds"]),
        (
            {"schedules": [{"cron": "0 9 * * *", "duration_s": 60, "min": 2}]},
            ["missing_data", "scheduled_bounds", "bounds"],
        ),
        (
            {
                "scale_up": {
                    "stabilization_s": 60,
                    "cooldown_s": 30,
                    "rate_limits": [{"type": "percent", "value": 100, "period_s": 15}],
                },
                "schedules": [{"cron": "0 9 * * *", "duration_s": 60, "max": 50}],
            },
            [
                "missing_data",
                "stabilization",
                "rate_limits",
                "cooldown",
                "scheduled_bounds",
                "bounds",
            ],
        ),
    ],
)
def test_chain_holds_only_constraints_that_can_clamp_in_order(
    rules: dict[str, Any], names: list[str]
) -> None:
    assert [c.name for c in chain_for(rules).chain] == names


# --------------------------------------------------------------------------------------------
# Bounds


@pytest.mark.parametrize(
    ("proposed", "expected", "reason"),
    [(0, 2, "min = 2"), (2, 2, None), (7, 7, None), (9, 9, None), (50, 9, "max = 9")],
)
def test_bounds(proposed: int, expected: int, reason: str | None) -> None:
    [(desired, clamps)] = run(chain_for({}, 2, 9), 5, [Tick(0.0, proposed)])
    assert desired == expected
    assert [c.reason for c in clamps] == ([reason] if reason else [])


# --------------------------------------------------------------------------------------------
# Missing data


@pytest.mark.parametrize(
    ("rules", "scenario", "expected"),
    [
        # Missing data holds against scale-down, lets scale-up through, and data coming back
        # frees the scale-down.
        ({}, [(0, 2, False), (15, 9, False), (30, 3, True)], [5, 9, 3]),
        # hold: after fallback_after ticks, still hold.
        (
            {"fallback_after": 2, "fallback": "hold"},
            [(0, 1, False), (15, 1, False), (30, 1, False)],
            [5, 5, 5],
        ),
        # static: exactly fallback_replicas from the fallback_after-th tick, up or down.
        (
            {"fallback_after": 2, "fallback": "static", "fallback_replicas": 8},
            [(0, 1, False), (15, 1, False), (30, 20, False)],
            [5, 8, 8],
        ),
        (
            {"fallback_after": 1, "fallback": "static", "fallback_replicas": 3},
            [(0, 9, False)],
            [3],
        ),
        # current-if-higher: max(current, fallback_replicas), never down.
        (
            {"fallback_after": 1, "fallback": "current-if-higher", "fallback_replicas": 3},
            [(0, 1, False), (15, 1, True), (30, 1, False)],
            [5, 1, 3],
        ),
        (
            {"fallback_after": 1, "fallback": "current-if-higher", "fallback_replicas": 8},
            [(0, 1, False)],
            [8],
        ),
        # The count of consecutive failures restarts when data comes back.
        (
            {"fallback_after": 2, "fallback": "static", "fallback_replicas": 9},
            [(0, 1, False), (15, 5, True), (30, 1, False), (45, 1, False)],
            [5, 5, 5, 9],
        ),
    ],
)
def test_missing_data_rules(
    rules: dict[str, Any], scenario: list[tuple[float, int, bool]], expected: list[int]
) -> None:
    chain = chain_for({"missing_data": rules})
    got = desired_counts(chain, 5, [Tick(t, n, ok) for t, n, ok in scenario])
    assert got == expected


def test_missing_data_reason_names_the_signal_and_why() -> None:
    chain = chain_for({"missing_data": {"staleness_s": 60}})
    [(_, clamps)] = run(chain, 5, [Tick(0.0, 1, data_ok=False)])
    assert clamps == [
        Clamp("missing_data", 1, 5, "no scale-down on missing data (demand_rps: nan)")
    ]
    # A value that is there but old is "stale", with its age.
    stale = ConstraintInput("c", 200.0, 5, 5, Observation("c", 50.0, demand_rps=3.0), False)
    _, clamps = chain.apply(stale, 1)
    assert clamps[0].reason == (
        "no scale-down on missing data (demand_rps: stale, 150 s old > staleness 60 s)"
    )


def test_missing_data_watches_the_token_signal_of_token_bound_components() -> None:
    chain = build_constraints(component(capacity_unit="tokens"), ConstraintsConfig())
    inp = ConstraintInput("c", 0.0, 5, 5, observation(0.0, False, "tokens_per_s"), False)
    _, clamps = chain.apply(inp, 1)
    assert clamps[0].reason == "no scale-down on missing data (tokens_per_s: nan)"


def test_fallback_reason_says_which_fallback_and_after_how_many_ticks() -> None:
    chain = chain_for(
        {"missing_data": {"fallback_after": 2, "fallback": "static", "fallback_replicas": 7}}
    )
    results = run(chain, 3, [Tick(0.0, 3, False), Tick(15.0, 3, False)])
    assert results[1][1][0].reason == (
        "fallback static 7 after 2 ticks without data (demand_rps: nan)"
    )


# --------------------------------------------------------------------------------------------
# Stabilization


@pytest.mark.parametrize(
    ("rules", "start", "scenario", "expected"),
    [
        # The worked example of the docstring: down window 300 s.
        (
            {"scale_down": {"stabilization_s": 300}},
            10,
            [(0, 8), (120, 4), (240, 3), (299.9, 3), (300, 3), (420, 3), (540, 3)],
            [8, 8, 8, 8, 4, 3, 3],
        ),
        # Scale-up goes at once without an up window.
        ({"scale_down": {"stabilization_s": 300}}, 2, [(0, 9), (15, 3)], [9, 9]),
        # Up window 60 s: a scale-up follows the lowest recommendation of the last 60 s.
        (
            {"scale_up": {"stabilization_s": 60}},
            2,
            [(0, 2), (15, 6), (30, 9), (60, 9), (75, 9), (90, 9)],
            [2, 2, 2, 6, 9, 9],
        ),
        # A dip inside the up window restarts the wait; scale-down is free.
        (
            {"scale_up": {"stabilization_s": 30}},
            4,
            [(0, 4), (15, 8), (30, 3), (45, 8), (60, 8)],
            [4, 4, 3, 3, 8],
        ),
        # Both windows: the count stays between the lowest (up) and highest (down) recent.
        (
            {"scale_up": {"stabilization_s": 30}, "scale_down": {"stabilization_s": 30}},
            5,
            [(0, 5), (15, 9), (30, 1), (45, 9), (60, 9), (75, 9), (90, 1), (105, 1)],
            [5, 5, 5, 5, 9, 9, 9, 1],
        ),
    ],
)
def test_stabilization(
    rules: dict[str, Any], start: int, scenario: list[tuple[float, int]], expected: list[int]
) -> None:
    assert desired_counts(chain_for(rules), start, ticks(*scenario)) == expected


def test_stabilization_reasons() -> None:
    chain = chain_for({"scale_up": {"stabilization_s": 60}, "scale_down": {"stabilization_s": 300}})
    results = run(chain, 5, ticks((0, 8), (15, 12), (30, 2)))
    assert results[1][1] == [
        Clamp("stabilization", 12, 8, "scale-up stabilization 60 s: lowest recommendation 8")
    ]
    assert results[2][1] == [
        Clamp("stabilization", 2, 8, "scale-down stabilization 300 s: highest recommendation 12")
    ]


def test_stabilization_forgets_history_when_time_goes_backwards() -> None:
    chain = chain_for({"scale_down": {"stabilization_s": 300}})
    assert desired_counts(chain, 10, ticks((1000, 10), (1015, 2))) == [10, 10]
    assert desired_counts(chain, 10, ticks((0, 2))) == [2]


def _reference_stabilization(
    history: list[tuple[float, int]],
    now_s: float,
    current: int,
    proposed: int,
    up_s: float,
    down_s: float,
) -> int:
    """The HPA's algorithm written plainly: scan every remembered recommendation."""
    low = min([proposed] + [r for t, r in history if t > now_s - up_s])
    high = max([proposed] + [r for t, r in history if t > now_s - down_s])
    return min(max(current, low), high)


@settings(max_examples=150, deadline=None)
@given(
    up_s=st.sampled_from([0.0, 15.0, 45.0, 120.0]),
    down_s=st.sampled_from([0.0, 30.0, 300.0]),
    steps=st.lists(
        st.tuples(st.sampled_from([0.0, 5.0, 15.0, 60.0]), st.integers(0, 30)),
        min_size=1,
        max_size=40,
    ),
    start=st.integers(0, 30),
)
def test_stabilization_matches_a_plain_scan_of_the_hpa_algorithm(
    up_s: float, down_s: float, steps: list[tuple[float, int]], start: int
) -> None:
    constraint = Stabilization(up_s, down_s)
    history: list[tuple[float, int]] = []
    now_s, current = 0.0, start
    for gap_s, proposed in steps:
        now_s += gap_s
        expected = _reference_stabilization(history, now_s, current, proposed, up_s, down_s)
        inp = ConstraintInput("c", now_s, current, current, observation(now_s, True), True)
        got, _ = constraint.apply(inp, proposed)
        assert got == expected
        # between the current count and the proposal, never beyond either
        assert min(current, proposed) <= got <= max(current, proposed)
        history.append((now_s, proposed))
        current = got


# --------------------------------------------------------------------------------------------
# Rate limits


def limits(*specs: tuple[str, float, float]) -> list[dict[str, Any]]:
    return [{"type": k, "value": v, "period_s": p} for k, v, p in specs]


@pytest.mark.parametrize(
    ("rules", "start", "scenario", "expected"),
    [
        # The docstring's example: 4 pods per 60 s, counted from the period's start.
        (
            {"scale_up": {"rate_limits": limits(("pods", 4, 60))}},
            10,
            [(0, 12), (30, 40), (59, 40), (60, 40), (61, 40)],
            [12, 14, 14, 16, 16],
        ),
        # 100% per 15 s doubles at each period; percent rounds up (HPA).
        (
            {"scale_up": {"rate_limits": limits(("percent", 100, 15))}},
            3,
            [(0, 50), (15, 50), (30, 50)],
            [6, 12, 24],
        ),
        ({"scale_up": {"rate_limits": limits(("percent", 10, 60))}}, 3, [(0, 50)], [4]),
        # From zero a percent limit counts one replica, else it could never start.
        ({"scale_up": {"rate_limits": limits(("percent", 100, 60))}}, 0, [(0, 9)], [2]),
        # select max: the limit allowing the most change (HPA's default pair).
        (
            {
                "scale_up": {
                    "rate_limits": limits(("pods", 4, 15), ("percent", 100, 15)),
                    "select": "max",
                }
            },
            2,
            [(0, 50), (15, 50), (30, 50)],
            [6, 12, 24],
        ),
        # select min: the limit allowing the least.
        (
            {
                "scale_up": {
                    "rate_limits": limits(("pods", 4, 15), ("percent", 100, 15)),
                    "select": "min",
                }
            },
            2,
            [(0, 50), (15, 50), (30, 50)],
            [4, 8, 12],
        ),
        # Scale-down: 50% per 60 s rounds down (HPA); 1 pod per 30 s.
        (
            {"scale_down": {"rate_limits": limits(("percent", 50, 60))}},
            5,
            [(0, 0), (30, 0), (60, 0), (120, 0)],
            [2, 2, 1, 0],
        ),
        (
            {"scale_down": {"rate_limits": limits(("pods", 1, 30))}},
            5,
            [(0, 0), (15, 0), (30, 0), (31, 0)],
            [4, 4, 3, 3],
        ),
        # select max going down: the lowest count wins.
        (
            {
                "scale_down": {
                    "rate_limits": limits(("pods", 1, 60), ("percent", 50, 60)),
                    "select": "max",
                }
            },
            10,
            [(0, 0)],
            [5],
        ),
        (
            {
                "scale_down": {
                    "rate_limits": limits(("pods", 1, 60), ("percent", 50, 60)),
                    "select": "min",
                }
            },
            10,
            [(0, 0)],
            [9],
        ),
        # disabled: no change in that direction at all; the other is free.
        ({"scale_down": {"select": "disabled"}}, 5, [(0, 1), (15, 9), (30, 1)], [5, 9, 9]),
        ({"scale_up": {"select": "disabled"}}, 5, [(0, 9), (15, 1), (30, 9)], [5, 1, 1]),
        # Changes in both directions count: after 10 -> 6 at t=0, the period started at 10, so
        # a scale-up at t=30 may reach 10 + 2 = 12.
        (
            {"scale_up": {"rate_limits": limits(("pods", 2, 60))}},
            10,
            [(0, 6), (30, 20), (45, 20), (90, 20)],
            [6, 12, 12, 14],
        ),
        # After 10 -> 5 -> 12, at t=61 the period started at 5, so the limit is 7: below the
        # current 12. A used-up limit holds the count, it never turns a scale-up into a
        # scale-down (HPA does the same).
        (
            {"scale_up": {"rate_limits": limits(("pods", 2, 60))}},
            10,
            [(0, 5), (15, 20), (61, 20), (76, 20)],
            [5, 12, 12, 14],
        ),
        # A failed actuation is not a change: the budget is still there.
        (
            {"scale_up": {"rate_limits": limits(("pods", 2, 60))}},
            4,
            [(0, 9, False), (15, 9)],
            [6, 6],
        ),
    ],
)
def test_rate_limits(
    rules: dict[str, Any], start: int, scenario: list[tuple[Any, ...]], expected: list[int]
) -> None:
    steps = [Tick(s[0], s[1], applied=s[2] if len(s) > 2 else True) for s in scenario]
    assert desired_counts(chain_for(rules), start, steps) == expected


def test_rate_limit_reasons() -> None:
    chain = chain_for(
        {
            "scale_up": {"rate_limits": limits(("pods", 4, 60), ("percent", 100, 60))},
            "scale_down": {"rate_limits": limits(("pods", 1, 30))},
        }
    )
    results = run(chain, 3, ticks((0, 20), (60, 1)))
    assert results[0][1] == [
        Clamp(
            "rate_limits",
            20,
            7,
            "scale-up rate limit 4 pods per 60 s from 3 at the period's start (select max)",
        )
    ]
    assert results[1][1] == [
        Clamp(
            "rate_limits", 1, 6, "scale-down rate limit 1 pod per 30 s from 7 at the period's start"
        )
    ]
    disabled = chain_for({"scale_up": {"select": "disabled"}})
    [(_, clamps)] = run(disabled, 3, [Tick(0.0, 9)])
    assert clamps[0].reason == "scale-up disabled (select: disabled)"


def test_rate_limit_history_is_trimmed_to_the_longest_period() -> None:
    chain = chain_for({"scale_up": {"rate_limits": limits(("pods", 1, 60))}})
    limiter = chain.chain[1]
    assert isinstance(limiter, RateLimits)
    run(chain, 0, [Tick(15.0 * i, 1000) for i in range(100)])
    assert len(limiter._changes) <= 4  # changes of the last 60 s at 15 s ticks


# --------------------------------------------------------------------------------------------
# Cooldown


@pytest.mark.parametrize(
    ("rules", "start", "scenario", "expected"),
    [
        # 60 s after a scale-up, no other scale-up; exactly 60 s later it is allowed.
        (
            {"scale_up": {"cooldown_s": 60}},
            2,
            [(0, 4), (30, 8), (59.9, 8), (60, 8)],
            [4, 4, 4, 8],
        ),
        # The other direction is not held.
        ({"scale_up": {"cooldown_s": 60}}, 2, [(0, 4), (15, 1), (30, 2)], [4, 1, 1]),
        (
            {"scale_down": {"cooldown_s": 120}},
            9,
            [(0, 5), (60, 2), (90, 7), (120, 3)],
            [5, 5, 7, 3],
        ),
        # A failed actuation starts no cooldown.
        ({"scale_up": {"cooldown_s": 60}}, 2, [(0, 4, False), (15, 4)], [4, 4]),
    ],
)
def test_cooldown(
    rules: dict[str, Any], start: int, scenario: list[tuple[Any, ...]], expected: list[int]
) -> None:
    steps = [Tick(s[0], s[1], applied=s[2] if len(s) > 2 else True) for s in scenario]
    assert desired_counts(chain_for(rules), start, steps) == expected


def test_cooldown_reason() -> None:
    chain = chain_for({"scale_up": {"cooldown_s": 60}})
    results = run(chain, 2, ticks((0, 4), (20, 8)))
    assert results[1][1] == [
        Clamp("cooldown", 8, 4, "scale-up cooldown 60 s: last scale-up 20 s ago")
    ]


# --------------------------------------------------------------------------------------------
# Scheduled bounds


def unix(zone: str, *parts: int) -> float:
    """Unix seconds of a wall-clock time in `zone`."""
    return dt.datetime(*parts, tzinfo=ZoneInfo(zone)).timestamp()


def utc(*parts: int) -> float:
    return dt.datetime(*parts, tzinfo=dt.UTC).timestamp()


NY = "America/New_York"
BERLIN = "Europe/Berlin"


@pytest.mark.parametrize(
    ("schedule", "now_s", "expected"),
    [
        # Weekdays 09:00 New York for an hour, min 10. 2024-03-08 is a Friday (EST, UTC-5).
        ({"cron": "0 9 * * 1-5", "timezone": NY}, utc(2024, 3, 8, 13, 59), 2),
        ({"cron": "0 9 * * 1-5", "timezone": NY}, utc(2024, 3, 8, 14, 0), 10),
        ({"cron": "0 9 * * 1-5", "timezone": NY}, utc(2024, 3, 8, 14, 59, 59), 10),
        ({"cron": "0 9 * * 1-5", "timezone": NY}, utc(2024, 3, 8, 15, 0), 2),
        # Saturday: no firing that day.
        ({"cron": "0 9 * * 1-5", "timezone": NY}, utc(2024, 3, 9, 14, 30), 2),
        # After the spring-forward of 2024-03-10 (EDT, UTC-4), 09:00 is 13:00 UTC.
        ({"cron": "0 9 * * 1-5", "timezone": NY}, utc(2024, 3, 11, 12, 59), 2),
        ({"cron": "0 9 * * 1-5", "timezone": NY}, utc(2024, 3, 11, 13, 0), 10),
        ({"cron": "0 9 * * 1-5", "timezone": NY}, utc(2024, 3, 11, 14, 0), 2),
        # The same expression in UTC does not move.
        ({"cron": "0 9 * * 1-5", "timezone": "UTC"}, utc(2024, 3, 11, 9, 30), 10),
        ({"cron": "0 9 * * 1-5", "timezone": "UTC"}, utc(2024, 3, 11, 13, 30), 2),
        # Fall-back in Berlin on 2024-10-27: 08:00 is 06:00 UTC before (CEST), 07:00 after (CET).
        ({"cron": "0 8 * * *", "timezone": BERLIN}, utc(2024, 10, 26, 6, 30), 10),
        ({"cron": "0 8 * * *", "timezone": BERLIN}, utc(2024, 10, 27, 6, 30), 2),
        ({"cron": "0 8 * * *", "timezone": BERLIN}, utc(2024, 10, 27, 7, 30), 10),
        # duration_s is elapsed time, not wall-clock hours: midnight EST (05:00 UTC) on the
        # night of the spring-forward plus 6 h ends at 11:00 UTC, which is 07:00 EDT.
        (
            {"cron": "0 0 * * *", "timezone": NY, "duration_s": 6 * 3600},
            unix(NY, 2024, 3, 10, 6, 30),
            10,
        ),
        (
            {"cron": "0 0 * * *", "timezone": NY, "duration_s": 6 * 3600},
            unix(NY, 2024, 3, 10, 7, 0),
            2,
        ),
    ],
)
def test_scheduled_min_follows_the_wall_clock_of_its_zone(
    schedule: dict[str, Any], now_s: float, expected: int
) -> None:
    spec = {"duration_s": 3600, "min": 10, **schedule}
    chain = chain_for({"schedules": [spec]})
    assert desired_counts(chain, 2, [Tick(now_s, 2)]) == [expected]


def test_scheduled_bounds_move_with_time_on_one_chain() -> None:
    """One chain over a week of 15-minute ticks crossing the US spring-forward: the cached
    firing must follow the clock, the scheduled min holding exactly 09:00-10:00 local on
    weekdays."""
    spec = {"cron": "0 9 * * 1-5", "timezone": NY, "duration_s": 3600, "min": 10}
    chain = chain_for({"schedules": [spec]})
    zone = ZoneInfo(NY)
    start_s = unix(NY, 2024, 3, 7, 0, 0)
    steps = [Tick(start_s + 900 * i, 2, applied=False) for i in range(7 * 96)]
    for tick, (desired, _) in zip(steps, run(chain, 2, steps), strict=True):
        local = dt.datetime.fromtimestamp(tick.now_s, zone)
        in_force = local.weekday() < 5 and local.hour == 9
        assert desired == (10 if in_force else 2), local.isoformat()


@pytest.mark.parametrize(
    ("schedules", "proposed", "expected", "reason_start"),
    [
        # max caps a proposal; min raises one
        ([{"max": 4}], 9, 4, "max = 4 by schedule '0 * * * *' UTC"),
        ([{"min": 6}], 1, 6, "min = 6 by schedule '0 * * * *' UTC"),
        ([{"min": 2, "max": 4}], 3, 3, None),
        # several in force: highest min, lowest max
        ([{"min": 3}, {"min": 6}], 1, 6, "min = 6"),
        ([{"max": 8}, {"max": 5}], 9, 5, "max = 5"),
        # crossing bounds: the min wins
        ([{"min": 7}, {"max": 5}], 9, 7, "min = 7"),
        ([{"min": 7}, {"max": 5}], 1, 7, "min = 7"),
        # a schedule out of force does nothing
        ([{"min": 7, "cron": "30 * * * *"}], 1, 1, None),
    ],
)
def test_several_schedules_combine(
    schedules: list[dict[str, Any]], proposed: int, expected: int, reason_start: str | None
) -> None:
    specs = [{"cron": "0 * * * *", "duration_s": 600, **s} for s in schedules]
    chain = chain_for({"schedules": specs})
    [(desired, clamps)] = run(chain, proposed, [Tick(utc(2024, 1, 1, 12, 5), proposed)])
    assert desired == expected
    if reason_start is None:
        assert clamps == []
    else:
        assert clamps[0].constraint == "scheduled_bounds"
        assert clamps[0].reason.startswith(reason_start)
        assert "in force 600 s" in clamps[0].reason


def test_schedule_reason_gives_the_local_firing_time() -> None:
    chain = chain_for(
        {"schedules": [{"cron": "0 9 * * *", "timezone": NY, "duration_s": 3600, "min": 10}]}
    )
    [(_, clamps)] = run(chain, 2, [Tick(utc(2024, 3, 11, 13, 30), 2)])
    assert clamps[0].reason == (
        "min = 10 by schedule '0 9 * * *' America/New_York fired 2024-03-11T09:00-04:00, "
        "in force 3600 s"
    )


# --------------------------------------------------------------------------------------------
# The order of the chain


NOON = utc(2024, 1, 1, 12, 0)
ALL_RULES: dict[str, Any] = {
    "scale_up": {
        "stabilization_s": 60,
        "rate_limits": limits(("pods", 5, 60)),
        "cooldown_s": 30,
    },
    "scale_down": {"stabilization_s": 300},
    "missing_data": {"fallback_after": 2, "fallback": "static", "fallback_replicas": 40},
}
COOLDOWN_ONLY: dict[str, Any] = {"scale_up": {"cooldown_s": 30}}


@pytest.mark.parametrize(
    ("rules", "schedules", "max_replicas", "scenario", "expected_last", "constraints_last"),
    [
        # stabilization (lowest of 30, 40) -> rate limit (10 + 5) -> schedule max 13 -> max 11
        (
            ALL_RULES,
            [{"max": 13}],
            11,
            [(NOON - 30, 30, True, False), (NOON, 40, True, True)],
            11,
            ["stabilization", "rate_limits", "scheduled_bounds", "bounds"],
        ),
        # missing data (static fallback 40) -> rate limit (10 + 5): the fallback is rate-limited
        (
            ALL_RULES,
            [],
            100,
            [(NOON - 90, 10, False, False), (NOON, 10, False, True)],
            15,
            ["missing_data", "rate_limits"],
        ),
        # cooldown holds 12 after a scale-up; a scheduled min after it still raises to 14
        (
            COOLDOWN_ONLY,
            [{"min": 14}],
            100,
            [(NOON - 10, 12, True, True), (NOON, 13, True, True)],
            14,
            ["cooldown", "scheduled_bounds"],
        ),
        (
            COOLDOWN_ONLY,
            [{"min": 11}],
            100,
            [(NOON - 10, 12, True, True), (NOON, 13, True, True)],
            12,
            ["cooldown"],
        ),
    ],
)
def test_constraints_apply_in_order(
    rules: dict[str, Any],
    schedules: list[dict[str, Any]],
    max_replicas: int,
    scenario: list[tuple[float, int, bool, bool]],
    expected_last: int,
    constraints_last: list[str],
) -> None:
    specs = [{"cron": "0 12 * * *", "duration_s": 600, **s} for s in schedules]
    chain = chain_for({**rules, "schedules": specs}, 0, max_replicas)
    steps = [Tick(t, n, ok, applied) for t, n, ok, applied in scenario]
    desired, clamps = run(chain, 10, steps)[-1]
    assert desired == expected_last
    assert [c.constraint for c in clamps] == constraints_last
    # each clamp starts where the previous one ended
    for first, second in itertools.pairwise(clamps):
        assert first.after == second.before


def test_missing_data_comes_before_stabilization() -> None:
    """A proposal held up on missing data is what stabilization remembers: the low proposal
    made without data must not drag the count down once data returns."""
    chain = chain_for({"scale_down": {"stabilization_s": 300}})
    steps = [Tick(0.0, 2, data_ok=False), Tick(15.0, 2, data_ok=True)]
    assert desired_counts(chain, 10, steps) == [10, 10]


def test_hard_bounds_have_the_last_word_over_schedules() -> None:
    spec = {"cron": "0 12 * * *", "duration_s": 600, "min": 50}
    chain = chain_for({"schedules": [spec]}, 0, 20)
    [(desired, clamps)] = run(chain, 5, [Tick(NOON, 5)])
    assert desired == 20
    assert [c.constraint for c in clamps] == ["scheduled_bounds", "bounds"]


# --------------------------------------------------------------------------------------------
# Invariants of the whole chain


@st.composite
def scaling_rules(draw: st.DrawFn) -> dict[str, Any]:
    rate_limits = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["pods", "percent"]),
                st.sampled_from([1, 2, 5, 50, 100]),
                st.sampled_from([15, 30, 60]),
            ),
            max_size=2,
        )
    )
    return {
        "stabilization_s": draw(st.sampled_from([0, 30, 120])),
        "rate_limits": limits(*rate_limits),
        "select": draw(st.sampled_from(["max", "min", "disabled"])),
        "cooldown_s": draw(st.sampled_from([0, 15, 45])),
    }


@settings(max_examples=100, deadline=None)
@given(
    up=scaling_rules(),
    down=scaling_rules(),
    min_replicas=st.integers(0, 3),
    span=st.integers(0, 20),
    steps=st.lists(st.tuples(st.integers(0, 40), st.booleans()), min_size=1, max_size=30),
)
def test_chain_result_is_within_bounds_and_missing_data_never_lowers(
    up: dict[str, Any],
    down: dict[str, Any],
    min_replicas: int,
    span: int,
    steps: list[tuple[int, bool]],
) -> None:
    max_replicas = min_replicas + span
    chain = chain_for({"scale_up": up, "scale_down": down}, min_replicas, max(1, max_replicas))
    current = min_replicas
    for i, (proposed, data_ok) in enumerate(steps):
        [(desired, clamps)] = run(chain, current, [Tick(15.0 * i, proposed, data_ok)])
        assert min_replicas <= desired <= max(1, max_replicas)
        if not data_ok:
            assert desired >= current
        if desired != proposed:
            assert clamps and clamps[-1].after == desired and all(c.reason for c in clamps)
        current = desired
