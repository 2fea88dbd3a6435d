"""A GPU pool shared by several members, with its state in a store: the stored document, writes
only when something changed, holding when the store fails, lapses and expiry on a fake clock,
the invariant (hypothesis: the sum of grants in force never exceeds the pool, whatever the
order of ticks, failures and deaths), and the division equal to one `allocate` over everyone's
claims once every member has ticked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale.clock import FakeClock
from elastiscale.controllers.budget import Claim, GpuPool, allocate
from elastiscale.controllers.division import need_of, rounded
from elastiscale.controllers.pool_store import (
    InProcessPoolStore,
    PoolState,
    PoolStoreError,
    decode_state,
    encode_state,
)

EXPIRY_S = 120.0


def linear(per_replica: float) -> Callable[[int], float]:
    return lambda n: n * per_replica


def claim(key: str, wanted: int, demand: float, calls: float = 1.0, **kw: Any) -> Claim:
    fields: dict[str, Any] = {
        "gpus_per_replica": 1.0,
        "min_replicas": 1,
        "served_rps": linear(1.0),
        "ingress_rps": 10.0,
    }
    fields.update(kw)
    return Claim(key=key, wanted=wanted, demand_rps=demand, calls_per_request=calls, **fields)


class FlakyStore(InProcessPoolStore):
    """The in-process store, failing while `down` is set (an unreachable API server)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.writes = 0

    def transact(self, update: Callable[[PoolState], PoolState | None]) -> PoolState:
        if self.down:
            raise PoolStoreError("ConfigMap default/pool: API server unreachable")

        def counted(state: PoolState) -> PoolState | None:
            new = update(state)
            self.writes += new is not None
            return new

        return super().transact(counted)


def pools(store: FlakyStore, clock: FakeClock, count: int, max_gpus: float = 20) -> list[GpuPool]:
    """`count` views of one pool, as `count` daemon processes see it."""
    return [
        GpuPool("shared", max_gpus, store=store, clock=clock.now_s, expiry_s=EXPIRY_S)
        for _ in range(count)
    ]


# --------------------------------------------------------------------------------------------
# The stored document


def test_the_document_round_trips_exactly() -> None:
    store = InProcessPoolStore()
    pool = GpuPool("p", 10, store=store)
    weird = claim("llm", 12, 11.3, 3.7, served_rps=lambda n: n * 0.9137)
    pool.request("rag", [weird, claim("emb", 2, 1.0, gpus_per_replica=0.5)])
    state = store.read()
    assert decode_state(encode_state(state)) == state  # floats written exactly


BAD_DOCS = [
    ("not JSON", "{", "invalid"),
    ("unknown version", '{"version": 2, "members": {}}', "version 2 is not 1"),
    (
        "curve too short",
        '{"version":1,"members":{"a":{"seq":1,"max_gpus":4,"needs":[{"key":"x",'
        '"gpus_per_replica":1,"min_replicas":1,"wanted":3,"late_rps":[1,0]}],"grants":{}}}}',
        "members.a.needs.0: late_rps has 2 values; min_replicas..wanted needs 3",
    ),
    (
        "grant of nothing",
        '{"version":1,"members":{"a":{"seq":1,"max_gpus":4,"needs":[],"grants":{"x":2}}}}',
        "members.a: grants.x: no need of that key",
    ),
    (
        "negative count",
        '{"version":1,"members":{"a":{"seq":-1,"max_gpus":4,"needs":[],"grants":{}}}}',
        "members.a.seq: Input should be greater than or equal to 0",
    ),
]


@pytest.mark.parametrize(("case", "text", "message"), BAD_DOCS, ids=[c[0] for c in BAD_DOCS])
def test_an_invalid_document_is_refused_in_one_line(case: str, text: str, message: str) -> None:
    with pytest.raises(PoolStoreError) as err:
        decode_state(text)
    assert message in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------------------------
# Writes, holds, lapses, expiry


def test_an_unchanged_entry_is_written_again_only_to_show_the_member_is_alive() -> None:
    store, clock = FlakyStore(), FakeClock()
    (pool,) = pools(store, clock, 1)
    for _ in range(4):  # ticks every 15 s, same counts: one write, then one at expiry / 4
        pool.request("rag", [claim("llm", 5, 5.0)])
        clock.advance(15.0)
    assert store.writes == 2
    pool.request("rag", [claim("llm", 6, 6.0)])
    assert store.writes == 3  # a new count is written at once


def test_an_unreachable_store_holds_the_last_grant_and_never_grows() -> None:
    store, clock = FlakyStore(), FakeClock()
    (pool,) = pools(store, clock, 1)
    assert pool.request("rag", [claim("llm", 8, 8.0)]).granted == {"llm": 8}
    store.down = True
    clock.advance(15.0)
    grown = pool.request("rag", [claim("llm", 12, 12.0)])
    assert grown.granted == {"llm": 8}
    assert grown.note is not None and "unreachable" in grown.note
    assert "holding the last grant" in grown.note
    shrunk = pool.request("rag", [claim("llm", 3, 3.0)])
    assert shrunk.granted == {"llm": 3}  # shrinking is always allowed


def test_a_member_with_no_grant_holds_its_current_replicas() -> None:
    store, clock = FlakyStore(), FakeClock()
    (pool,) = pools(store, clock, 1)
    store.down = True
    got = pool.request("rag", [claim("llm", 9, 9.0, current=4)])
    assert got.granted == {"llm": 4}
    assert got.note is not None and "no grant yet" in got.note


def test_a_grant_lapses_to_the_minimums_before_others_may_take_it() -> None:
    store, clock = FlakyStore(), FakeClock()
    a, b = pools(store, clock, 2)
    assert a.request("a", [claim("llm", 15, 15.0, min_replicas=2)]).granted == {"llm": 15}
    assert b.request("b", [claim("llm", 15, 15.0)]).granted == {"llm": 5}
    cut_off = FlakyStore()  # `a` loses the store: its view fails from now on
    cut_off.down = True
    a.store = cut_off
    for _ in range(3):  # 45 s: holding
        clock.advance(15.0)
        assert a.request("a", [claim("llm", 15, 15.0, min_replicas=2)]).granted == {"llm": 15}
        b.request("b", [claim("llm", 15, 15.0)])
        assert store.read().granted_gpus() <= 20
    clock.advance(15.0)  # 60 s = expiry / 2 since a's last write started: lapsed
    lapsed = a.request("a", [claim("llm", 15, 15.0, min_replicas=2)])
    assert lapsed.granted == {"llm": 2}
    assert lapsed.note is not None and "lapsed" in lapsed.note
    for _ in range(3):  # b saw a's entry first at 0 s: not before 120 s does it grow
        clock.advance(15.0)
        assert b.request("b", [claim("llm", 15, 15.0)]).granted == {"llm": 5}
    clock.advance(15.0)  # 120 s: a's entry expires, cut to its minimum, which stays reserved
    assert b.request("b", [claim("llm", 15, 15.0)]).granted == {"llm": 15}
    entry = store.read().members["a"]
    assert entry.expired and dict(entry.grants) == {"llm": 2}
    assert store.read().granted_gpus() == 17


def test_a_unit_taken_over_by_another_daemon_keeps_its_entry() -> None:
    store, clock = FlakyStore(), FakeClock()
    first, other, second = pools(store, clock, 3)
    first.request("rag", [claim("llm", 10, 10.0)])
    other.request("agent", [claim("llm", 10, 10.0)])
    clock.advance(17.0)  # the shard moves: lease duration + one tick
    again = second.request("rag", [claim("llm", 10, 10.0)])
    assert again.granted == {"llm": 10}
    assert store.read().members["rag"].seq == 2  # the same member, refreshed


def test_a_full_pool_grants_an_undeclared_newcomer_what_is_left_and_makes_room_next_tick() -> None:
    """A member no daemon declared (test_pool_minimums.py: declared ones are reserved)."""
    store, clock = FlakyStore(), FakeClock()
    a, b = pools(store, clock, 2, max_gpus=10)
    assert a.request("a", [claim("llm", 10, 10.0)]).granted == {"llm": 10}
    newcomer = b.request("b", [claim("llm", 10, 10.0, min_replicas=3)])
    assert newcomer.granted == {"llm": 0}
    assert newcomer.note is not None and "over-committed" in newcomer.note
    assert a.request("a", [claim("llm", 10, 10.0)]).granted["llm"] <= 7
    assert b.request("b", [claim("llm", 10, 10.0, min_replicas=3)]).granted["llm"] >= 3


# --------------------------------------------------------------------------------------------
# The same division as one allocation over everyone's claims


DIVISIONS = [
    ("fits", {"a": [claim("llm", 5, 5.0)], "b": [claim("llm", 5, 5.0, 4.0)]}, 10),
    ("binding by calls", {"a": [claim("llm", 10, 10.0)], "b": [claim("llm", 10, 10.0, 4.0)]}, 15),
    (
        "several components and GPU sizes",
        {
            "a": [claim("planner", 10, 10.0, 4.0), claim("writer", 6, 6.0, gpus_per_replica=2.0)],
            "b": [claim("llm", 12, 12.0, 2.0, min_replicas=2)],
            "c": [claim("llm", 8, 4.0, 1.0, served_rps=linear(0.5))],
        },
        24,
    ),
    (
        "minimums only",
        {"a": [claim("llm", 9, 9.0, min_replicas=4)], "b": [claim("llm", 9, 9.0, min_replicas=4)]},
        8,
    ),
]


def expected_division(members: dict[str, list[Claim]], max_gpus: float) -> dict[str, Any]:
    pooled = [replace(c, key=f"{who}/{c.key}") for who in sorted(members) for c in members[who]]
    granted = allocate(pooled, max_gpus).granted
    return {who: {c.key: granted[f"{who}/{c.key}"] for c in cs} for who, cs in members.items()}


@pytest.mark.parametrize(("case", "members", "max_gpus"), DIVISIONS, ids=[c[0] for c in DIVISIONS])
def test_three_rounds_reach_the_division_of_all_claims(
    case: str, members: dict[str, list[Claim]], max_gpus: float
) -> None:
    store, clock = FlakyStore(), FakeClock()
    views = dict(zip(members, pools(store, clock, len(members), max_gpus), strict=True))
    got: dict[str, Any] = {}
    for _ in range(3):
        for who in members:
            got[who] = views[who].request(who, members[who]).granted
            assert store.read().granted_gpus() <= max_gpus + 1e-9
        clock.advance(15.0)
    assert got == expected_division(members, max_gpus)


# --------------------------------------------------------------------------------------------
# The invariant


MEMBERS = ("a", "b", "c")


@st.composite
def member_claims(draw: Any) -> list[Claim]:
    out = []
    for key in draw(st.lists(st.sampled_from(["llm", "emb", "rr"]), min_size=1, unique=True)):
        minimum = draw(st.integers(0, 1))
        out.append(
            claim(
                key,
                draw(st.integers(minimum, 12)),
                draw(st.floats(0.0, 12.0)),
                draw(st.floats(0.5, 6.0)),
                min_replicas=minimum,
                gpus_per_replica=draw(st.sampled_from([0.5, 1.0, 2.0])),
                current=draw(st.integers(0, 12)),
            )
        )
    return out


# One event: (member, what happens, its claims, seconds until the next event).
events = st.lists(
    st.tuples(
        st.sampled_from(MEMBERS),
        st.sampled_from(["tick"] * 5 + ["cut off"] * 2 + ["reconnect", "die"]),
        member_claims(),
        st.sampled_from([0.0, 15.0, 29.0]),
    ),
    max_size=50,
)


@settings(max_examples=80, deadline=None)
@given(events=events, max_gpus=st.sampled_from([4.0, 10.0, 24.0]))
def test_grants_in_force_never_exceed_the_pool(
    events: list[tuple[str, str, list[Claim], float]], max_gpus: float
) -> None:
    """Members tick, lose the store, come back and die in any order; each member acts on what
    its last request returned. Members tick at most 44 s apart (under expiry / 2); a dead
    member acts on nothing (its unit was removed)."""
    store, clock = InProcessPoolStore(), FakeClock()
    views = {m: GpuPool("shared", max_gpus, store=store, clock=clock.now_s, expiry_s=EXPIRY_S)
             for m in MEMBERS}  # fmt: skip
    good = views["a"].store
    down = FlakyStore()
    down.down = True
    acting: dict[str, float] = {}
    last_claims: dict[str, list[Claim]] = {}
    registered: set[str] = set()
    dead: set[str] = set()

    last_tick_s: dict[str, float] = {}

    def tick(member: str, claims: list[Claim]) -> None:
        if member not in registered and views[member].store is down:
            return  # a member that never registered holds replicas the pool cannot count
        got = views[member].request(member, claims)
        acting[member] = got.gpus_used
        last_claims[member] = claims
        last_tick_s[member] = clock.now_s()
        if views[member].store is good:
            registered.add(member)
        assert store.read().granted_gpus() <= max_gpus + 1e-9
        assert sum(acting.values()) <= max_gpus + 1e-9, (member, acting)

    for member, what, claims, gap_s in events:
        if member in dead:
            continue
        if what == "die":
            dead.add(member)
            acting.pop(member, None)
        elif what == "cut off":
            views[member].store = down
        elif what == "reconnect":
            views[member].store = good
        else:
            tick(member, claims)
        # Every live member ticks again once 15 s have passed (so at most 44 s apart).
        clock.advance(gap_s)
        for other in MEMBERS:
            due = other in last_claims and clock.now_s() - last_tick_s[other] >= 15.0
            if other not in dead and due:
                tick(other, last_claims[other])


@settings(max_examples=30, deadline=None)
@given(claims=st.dictionaries(st.sampled_from(MEMBERS), member_claims(), min_size=1))
def test_the_store_holds_what_the_members_were_granted(claims: dict[str, list[Claim]]) -> None:
    store = InProcessPoolStore()
    pool = GpuPool("shared", 10, store=store)
    for member, cs in claims.items():
        got = pool.request(member, cs)
        entry = store.read().members[member]
        assert dict(entry.grants) == got.granted
        assert entry.needs == tuple(rounded(need_of(c)) for c in cs)


def test_a_member_that_does_not_act_reads_the_pool_without_writing() -> None:
    store, clock = FlakyStore(), FakeClock()
    leader, standby = pools(store, clock, 2)
    leader.request("rag", [claim("llm", 15, 15.0)])
    other = standby.request("agent", [claim("llm", 15, 15.0)], write=False)
    assert other.granted == {"llm": 5}  # what it would get
    assert set(store.read().members) == {"rag"} and store.writes == 1


def test_a_dry_run_engine_tells_its_policies_it_does_not_act() -> None:
    from elastiscale.adapters.memory import RecordingActuator
    from elastiscale.decision import Proposal
    from elastiscale.engine import Engine
    from test_engine import Source, make_config

    seen: list[bool] = []

    class Spy:
        name = "spy"

        def propose(self, ctx: Any) -> dict[str, Proposal]:
            seen.append(ctx.acting)
            return {n: Proposal.none("spy", "watching") for n in ctx.pipeline.order}

    for dry_run in (False, True):
        engine = Engine(
            make_config(),
            metrics=Source({"router": 5, "llm": 10}),
            actuator=RecordingActuator({"router": 1, "llm": 2}),
            policies=[Spy()],
            dry_run=dry_run,
        )
        engine.step(0.0)
    assert seen == [True, False]


def test_the_decision_record_says_why_the_pool_held() -> None:
    from elastiscale.controllers import budget
    from test_feedforward import Driver, make_config

    store = FlakyStore()
    store.down = True
    budget.use_pools(lambda name, max_gpus: GpuPool(name, max_gpus, store=store))
    try:
        driver = Driver(make_config(max_gpus=30), gpu_pool="team")
        got = driver.tick(0.0, {"router": 20.0, "planner": 80.0, "writer": 20.0})
    finally:
        budget.use_pools(None)
    planner = got["planner"]
    note = planner.details["budget_note"]
    assert isinstance(note, str) and "GPU pool team store failed" in note
    assert "no grant yet: holding the current replicas" in planner.reason
    assert planner.replicas == 1  # its current count: a pool it cannot reach never grows it


def test_a_scale_down_held_back_keeps_its_gpus_counted_until_it_has_shrunk() -> None:
    store, clock = FlakyStore(), FakeClock()
    a, b = pools(store, clock, 2)
    assert a.request("a", [claim("llm", 15, 15.0, current=1)]).granted == {"llm": 15}
    # a now wants 5, but its stabilization window keeps 15 running: b gets only the rest.
    assert a.request("a", [claim("llm", 5, 5.0, current=15)]).granted == {"llm": 5}
    assert b.request("b", [claim("llm", 15, 15.0, current=1)]).granted == {"llm": 5}
    assert store.read().members["a"].held_gpus() == 15
    assert a.request("a", [claim("llm", 5, 5.0, current=5)]).granted == {"llm": 5}  # shrunk
    assert b.request("b", [claim("llm", 15, 15.0, current=5)]).granted == {"llm": 15}
