"""A shared GPU pool keeps its members' minimums: the GPUs the members' Deployments take (each
component at the larger of its grant and its `min`, a member that has not ticked yet at its
minimums) never exceed the pool, at the start, while members join, leave and are taken over.

- a pool too small for the sum of its members' minimums is refused at load, in one line naming
  the pool, its size and the sum;
- scenarios on a fake clock: members joining one by one a pool whose first members would take
  everything, with and without the members declared up front (without: the pool's
  Deployments go over it, which is what declaring fixes);
- hypothesis: join, tick, leave and take-over orders never put the Deployments over the pool.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale.clock import FakeClock
from elastiscale.config import Config
from elastiscale.config.fleet import load_fleet
from elastiscale.config.fleet_pools import pool_problems
from elastiscale.controllers import budget
from elastiscale.controllers.budget import Claim, GpuPool
from elastiscale.controllers.division import Need
from elastiscale.controllers.pool_roster import roster
from elastiscale.controllers.pool_store import InProcessPoolStore
from elastiscale.errors import ConfigError

EXPIRY_S = 300.0


# --------------------------------------------------------------------------------------------
# Refused at load


def pipeline(name: str, minimum: int, max_gpus: float, *, gpus: float = 1.0) -> dict[str, Any]:
    """A pipeline file drawing its `llm` from pool `shared` of `max_gpus`."""
    return {
        "pipeline": {
            "name": name,
            "slo": {"latency_p95_s": 2},
            "max_gpus": max_gpus,
            "components": {
                "router": {
                    "capacity_per_replica": 10,
                    "service_time_s": 0.01,
                    "ingress": True,
                    "replicas": {"min": 1, "max": 4},
                },
                "llm": {
                    "capacity_per_replica": 2,
                    "service_time_s": 0.5,
                    "gpus_per_replica": gpus,
                    "replicas": {"min": minimum, "max": 20},
                },
            },
            "edges": [{"from": "router", "to": "llm"}],
        },
        "policies": [{"name": "elastiscale", "params": {"gpu_pool": "shared"}}],
    }


LOAD_CASES = [
    # (case, [(name, min, max_gpus, gpus per replica)], the problem or None)
    ("fits exactly", [("a", 2, 4, 1.0), ("b", 2, 4, 1.0)], None),
    (
        "one GPU short",
        [("a", 2, 4, 1.0), ("b", 3, 4, 1.0)],
        "GPU pool shared: max_gpus = 4 (pipeline.max_gpus of a) is below the sum of its 2 "
        "members' minimums, 5 GPUs",
    ),
    (
        "the smallest max_gpus is the pool's",
        [("a", 1, 10, 2.0), ("b", 2, 5, 2.0)],
        "GPU pool shared: max_gpus = 5 (pipeline.max_gpus of b) is below the sum of its 2 "
        "members' minimums, 6 GPUs",
    ),
    ("no minimum", [("a", 0, 1, 1.0), ("b", 0, 1, 1.0), ("c", 1, 1, 1.0)], None),
]


@pytest.mark.parametrize(("case", "members", "problem"), LOAD_CASES, ids=[c[0] for c in LOAD_CASES])
def test_a_pool_below_the_sum_of_minimums_is_refused_at_load(
    case: str, members: list[tuple[str, int, float, float]], problem: str | None, tmp_path: Path
) -> None:
    configs = [Config.model_validate(pipeline(n, m, g, gpus=s)) for n, m, g, s in members]
    got = pool_problems(configs)
    assert [p.split(" (replicas.min")[0] for p in got] == ([problem] if problem else [])
    files = []
    for name, minimum, max_gpus, gpus in members:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(pipeline(name, minimum, max_gpus, gpus=gpus)))
        files.append(path.name)
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump({"fleet": {"name": "platform", "pipelines": files}}))
    if problem is None:
        assert len(load_fleet(fleet).units) == len(members)
    else:
        with pytest.raises(ConfigError) as caught:
            load_fleet(fleet)
        assert [p.split(" (replicas.min")[0] for p in caught.value.problems] == [problem]


def test_a_unit_without_a_budget_or_a_pool_is_no_member() -> None:
    alone = pipeline("a", 1, 4)
    alone["policies"] = ["elastiscale"]
    unbudgeted = pipeline("b", 1, 4)
    del unbudgeted["pipeline"]["max_gpus"]
    configs = [Config.model_validate(raw) for raw in (alone, unbudgeted)]
    assert roster(configs) == {}
    assert pool_problems(configs) == []


def test_declared_members_reach_pools_built_before_and_after() -> None:
    configs = [Config.model_validate(pipeline(n, 2, 8)) for n in ("a", "b")]
    budget.use_pools(None)
    try:
        before = budget.shared_pool("shared", 8)
        budget.declare_members(roster(configs))
        assert set(before.reserved) == {"a", "b"}
        budget.use_pools(None)  # pools rebuilt (a new store): the declaration stays
        after = budget.shared_pool("shared", 8)
        assert after.reserved["a"] == (Need("llm", 1.0, 2, 2, (0.0,)),)
    finally:
        budget.declare_members({})
        budget.use_pools(None)


# --------------------------------------------------------------------------------------------
# The Deployments against the pool, on a fake clock


@dataclass
class Member:
    name: str
    minimum: int
    gpus: float = 1.0


@dataclass
class Fleet:
    """Members sharing one pool, each member's daemon a view of its own (a process), and the
    replicas each member's Deployment runs: its minimum until its first tick, then the larger
    of its grant and its minimum (the engine's bounds), or its previous count when a scale-down
    is held back."""

    size: float
    members: dict[str, Member]
    declare: bool = True
    clock: FakeClock = field(default_factory=FakeClock)
    store: InProcessPoolStore = field(default_factory=InProcessPoolStore)
    views: dict[str, GpuPool] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)
    peak: float = 0.0
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.runs = {m.name: m.minimum for m in self.members.values()}
        self.peak = self.deployed()

    def view(self, name: str, fresh: bool = False) -> GpuPool:
        """The pool as `name`'s daemon sees it (`fresh`: a new process, a takeover)."""
        if fresh or name not in self.views:
            pool = GpuPool("shared", self.size, self.store, self.clock.now_s, EXPIRY_S)
            if self.declare:
                pool.reserved = {
                    m.name: (Need("llm", m.gpus, m.minimum, m.minimum, (0.0,)),)
                    for m in self.members.values()
                }
            self.views[name] = pool
        return self.views[name]

    def tick(self, name: str, wanted: int, hold_back: bool = False) -> None:
        member = self.members[name]
        wanted = max(wanted, member.minimum)
        current = self.runs[name]
        got = self.view(name).request(
            name,
            [
                Claim(
                    "llm",
                    member.gpus,
                    member.minimum,
                    wanted,
                    demand_rps=float(wanted),
                    served_rps=lambda n: float(n),
                    calls_per_request=1.0,
                    ingress_rps=float(wanted),
                    current=current,
                )
            ],
        )
        if got.note is not None:
            self.notes.append(got.note)
        runs = max(got.granted["llm"], member.minimum)
        self.runs[name] = max(runs, current) if hold_back else runs
        self.peak = max(self.peak, self.deployed())

    def deployed(self) -> float:
        return sum(self.runs[m.name] * m.gpus for m in self.members.values())


def everyone(count: int, minimum: int = 1, gpus: float = 1.0) -> dict[str, Member]:
    return {f"p{i:02d}": Member(f"p{i:02d}", minimum, gpus) for i in range(count)}


# (case, pool size, members, declared, ticks: rounds of (member, wanted); peak over the pool?)
SCENARIOS: list[tuple[str, float, dict[str, Member], bool, list[list[tuple[str, int]]], bool]] = [
    (
        "30 on 34 GPUs, joining one by one, each wanting 4",
        34,
        everyone(30),
        True,
        [[(f"p{i:02d}", 4) for i in range(30)]] * 3,
        False,
    ),
    (
        "the same, the members not declared: the first take it all",
        34,
        everyone(30),
        False,
        [[(f"p{i:02d}", 4) for i in range(30)]] * 3,
        True,
    ),
    (
        "the first member wants the whole pool",
        12,
        everyone(4, minimum=2),
        True,
        [[("p00", 12)], [("p01", 12), ("p00", 12)], [("p02", 3), ("p03", 3), ("p00", 12)]],
        False,
    ),
    (
        "two-GPU replicas, the pool exactly the minimums",
        8,
        everyone(4, gpus=2.0),
        True,
        [[("p03", 9), ("p02", 9), ("p01", 9), ("p00", 9)]] * 2,
        False,
    ),
    (
        "a late member's minimum kept while the others grew",
        20,
        everyone(5, minimum=2),
        True,
        [[("p00", 10), ("p01", 10), ("p02", 10), ("p03", 10)]] * 2 + [[("p04", 10)]],
        False,
    ),
]


@pytest.mark.parametrize(
    ("case", "size", "members", "declared", "rounds", "over"),
    SCENARIOS,
    ids=[s[0] for s in SCENARIOS],
)
def test_the_deployments_stay_within_the_pool_while_members_join(
    case: str,
    size: float,
    members: dict[str, Member],
    declared: bool,
    rounds: list[list[tuple[str, int]]],
    over: bool,
) -> None:
    fleet = Fleet(size, members, declare=declared)
    for round_ in rounds:
        for name, wanted in round_:
            fleet.tick(name, wanted)
            fleet.clock.advance(0.5)
        fleet.clock.advance(15.0)
    assert (fleet.peak > size + 1e-9) is over, (fleet.peak, fleet.runs)
    if declared:  # every member's minimum was granted, never over-committed
        assert fleet.notes == []
        assert store_within(fleet)


def store_within(fleet: Fleet) -> bool:
    """The store reserves every declared member that has not written at its minimums."""
    state = fleet.store.read()
    absent = [m for m in fleet.members.values() if m.name not in state.members]
    return not state.members or (absent == [] and state.granted_gpus() <= fleet.size + 1e-9)


# --------------------------------------------------------------------------------------------
# The invariant: join, tick, leave and take-over orders

NAMES = ("a", "b", "c", "d")

events = st.lists(
    st.tuples(
        st.sampled_from(NAMES),
        st.sampled_from(["tick"] * 6 + ["hold back", "leave", "take over"]),
        st.integers(0, 14),  # wanted
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(
    events=events,
    minimums=st.lists(st.integers(0, 3), min_size=len(NAMES), max_size=len(NAMES)),
    gpus=st.sampled_from([1.0, 2.0]),
    spare=st.sampled_from([0.0, 1.0, 6.0, 20.0]),
)
def test_the_gpus_acted_on_never_exceed_the_pool(
    events: list[tuple[str, str, int]], minimums: list[int], gpus: float, spare: float
) -> None:
    """Members join (their first tick) in any order, tick with any wants, hold a scale-down
    back, leave (stop ticking; their Deployments keep what they run) and come back, or are
    taken over by a new process (no memory of its grants). The pool holds the sum of the
    minimums plus `spare`, as the load check requires. Events are 1 s apart: no grant lapses
    and no member expires (a unit is taken over within lease duration + one tick, far below
    the expiry)."""
    members = {n: Member(n, m, gpus) for n, m in zip(NAMES, minimums, strict=True)}
    size = sum(m.minimum * gpus for m in members.values()) + spare
    if size <= 0:
        return
    fleet = Fleet(size, members)
    for name, what, wanted in events:
        if what == "take over":
            fleet.view(name, fresh=True)
        elif what != "leave":
            fleet.tick(name, wanted, hold_back=what == "hold back")
        assert fleet.deployed() <= size + 1e-9, (name, what, fleet.runs)
        assert fleet.store.read().granted_gpus() <= size + 1e-9
        fleet.clock.advance(1.0)
    assert fleet.notes == []


def test_a_component_without_data_keeps_its_gpus_counted() -> None:
    """A GPU component with no count this tick (its data missing) holds its replicas: the
    member goes on writing its entry with their GPUs, so its entry does not expire while its
    Deployments run them, and no other member grows into them (before, a member with no data
    did not write, and after `expiry_s` the others cut it to its minimums)."""
    from test_feedforward import Driver, make_config

    store, clock = InProcessPoolStore(), FakeClock()

    def view() -> GpuPool:
        return GpuPool("team", 30, store=store, clock=clock.now_s, expiry_s=EXPIRY_S)

    budget.use_pools(lambda name, max_gpus: view())
    try:
        driver = Driver(make_config(max_gpus=30), gpu_pool="team")
        for _ in range(3):
            driver.tick(clock.now_s(), {"router": 20.0, "planner": 80.0, "writer": 20.0})
            clock.advance(15.0)
        held = store.read().members["t"].held_gpus()
        assert held > 2  # grown past the minimums
        other = view()  # another member, in another daemon
        llm = Claim("llm", 1.0, 0, 30, 30.0, lambda n: float(n), 1.0, 30.0, current=0)
        other.request("other", [llm])
        # Taken over by another daemon, which finds no data at all from then on.
        again = Driver(make_config(max_gpus=30), gpu_pool="team")
        again.replicas = dict(driver.replicas)  # what the Deployments run
        for _ in range(int(1.5 * EXPIRY_S / 15)):
            got = again.tick(clock.now_s(), {"router": None, "planner": None, "writer": None})
            assert got["planner"].replicas is None  # no data: it holds
            clock.advance(15.0)
            assert other.request("other", [llm]).gpus_used <= 30 - held
        entry = store.read().members["t"]
        assert entry.held_gpus() == held and not entry.expired
        assert {n.key for n in entry.needs} == {"planner", "writer"}
    finally:
        budget.use_pools(None)


@pytest.mark.parametrize(
    ("policies", "refused"),
    [
        ([{"name": "elastiscale", "params": {"gpu_pool": "shared"}}], False),
        ([{"name": "elastiscale", "params": {"gpu_pool": "shared"}}, {"name": "hpa"}], True),
        ([{"name": "elastiscale"}, {"name": "hpa"}], False),  # no pool: combined as ever
    ],
)
def test_a_pool_member_that_would_combine_policies_does_not_run(
    policies: list[dict[str, Any]], refused: bool
) -> None:
    """The daemon combines every policy's proposal, and only the pool's policy is held to its
    grant: another's (hpa) could scale a GPU component past it."""
    from elastiscale.daemon.runtime import check_runnable

    raw = pipeline("a", 1, 4)
    raw["policies"] = policies
    problems = [p for p in check_runnable(Config.model_validate(raw), True) if "policies" in p]
    assert problems == (
        [
            "policies: elastiscale, hpa would be combined, and only the policy drawing from GPU "
            "pool shared is held to its grant: run that policy alone (the others are for "
            "backtests)"
        ]
        if refused
        else []
    )
