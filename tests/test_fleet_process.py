"""Sharded `elastiscale run` as real processes: three replicas of one fleet (six pipeline files
of two components, Deployments on the fake API server in this process, reached through the
official client) split the units; SIGKILL of one has its units held and stepped by the others
within lease duration + one tick (plus scheduling slack on a loaded host, well under twice the
lease duration, which a takeover that waited a second full duration would take): the retry
period configured above the tick runs as one tick; a SIGTERM'd replica releases its Leases, so
its units move within a few retry periods.
Each unit is stepped by one replica at a time: its stepper (journal `tick` entries) changes no
more often than its Lease's holder.

On a host this loaded a replica may stall longer than the lease duration before the kill; the
others then take its units legitimately and hand them back: the checks allow that (the last
stepper before the kill is the victim, none after; a change of stepper is a Lease transition),
not two steppers at once."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import AZURE_TRACE, REPO, wait_for
from elastiscale.daemon.journal import Journal
from elastiscale.daemon.shards import rendezvous_owner, unit_lease_name
from elastiscale.testing.fleet import pipeline_name, write_fleet
from elastiscale.testing.kubernetes import LEASES, FakeKubeAPI
from elastiscale.testing.lifetime import die_with_parent

pytestmark = pytest.mark.integration

UNITS = [pipeline_name(i) for i in range(6)]
INTERVAL_S = 0.5
DURATION_S = 6.0
DEADLINE_S = 4.0
RETRY_S = 1.5  # above the tick: runs as INTERVAL_S, which the bound below needs
#: Process scheduling on a shared host (the machine runs other work): added to the bound.
SLACK_S = 1.5


class Replica:
    def __init__(self, paths: list[Path], workdir: Path, identity: str) -> None:
        self.identity = identity
        self.journal = workdir / f"{identity}.jsonl"
        self.log_path = workdir / f"{identity}.log"
        command = [sys.executable, "-m", "elastiscale.cli", "run", *map(str, paths)]
        command += ["--listen", "127.0.0.1:0", "--journal", str(self.journal)]
        command += ["--identity", identity]
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                die_with_parent(command), stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env
            )

    def ticks(self) -> list[dict[str, Any]]:
        if not self.journal.exists():
            return []
        return [e for e in Journal(self.journal).entries() if e.get("kind") == "tick"]

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[FakeKubeAPI, list[Path]]]:
    with FakeKubeAPI() as api:
        paths = write_fleet(
            tmp_path,
            api,
            pipelines=len(UNITS),
            components=2,
            trace=AZURE_TRACE,
            interval_s=INTERVAL_S,
            lease_duration_s=DURATION_S,
            renew_deadline_s=DEADLINE_S,
            retry_period_s=RETRY_S,
        )
        yield api, paths


def holders(api: FakeKubeAPI) -> dict[str, str]:
    """unit -> holder of its Lease ("" when released or absent)."""
    out = {}
    for unit in UNITS:
        try:
            lease = api.get(LEASES, "default", unit_lease_name("fleet", unit))
        except Exception:
            out[unit] = ""
            continue
        out[unit] = lease["spec"].get("holderIdentity") or ""
    return out


def settled(api: FakeKubeAPI, members: list[str]) -> bool:
    return holders(api) == {u: rendezvous_owner(u, members) for u in UNITS}


def steps_by_unit(replicas: list[Replica], since_s: float) -> dict[str, list[tuple[float, str]]]:
    """unit -> [(time, replica)] of every step after `since_s`, in time order."""
    out: dict[str, list[tuple[float, str]]] = {u: [] for u in UNITS}
    for replica in replicas:
        for entry in replica.ticks():
            if entry["at_s"] >= since_s:
                for unit in entry["units"]:
                    out[unit].append((entry["at_s"], replica.identity))
    return {u: sorted(v) for u, v in out.items()}


def transitions(api: FakeKubeAPI, unit: str) -> int:
    lease = api.get(LEASES, "default", unit_lease_name("fleet", unit))
    return int(lease["spec"].get("leaseTransitions") or 0)


def assert_stepper_changes_only_with_the_lease(
    api: FakeKubeAPI, steps: dict[str, list[tuple[float, str]]]
) -> None:
    """A unit's stepper changes only when its Lease changes hands: two replicas stepping it
    at once would alternate in the journals without the Lease's `leaseTransitions` moving."""
    for unit, seq in steps.items():
        changes = sum(1 for (_, a), (_, b) in itertools.pairwise(seq) if a != b)
        assert changes <= transitions(api, unit), (unit, changes, seq)


def test_sigkill_of_a_replica_has_its_units_taken_over_within_the_bound(
    fleet: tuple[FakeKubeAPI, list[Path]], tmp_path: Path
) -> None:
    api, paths = fleet
    replicas = {name: Replica(paths, tmp_path, name) for name in ("a", "b", "c")}
    try:
        wait_for(lambda: settled(api, ["a", "b", "c"]), 90, "three replicas split the units")
        stable_s = time.time()
        time.sleep(4 * INTERVAL_S)
        owned = holders(api)
        victim = max("abc", key=lambda n: sum(h == n for h in owned.values()))
        moved = [u for u, h in owned.items() if h == victim]
        survivors = [n for n in "abc" if n != victim]
        replicas[victim].process.send_signal(signal.SIGKILL)
        killed_s = time.time()
        replicas[victim].process.wait(10)
        bound_s = DURATION_S + INTERVAL_S + SLACK_S  # lease duration + one tick
        wait_for(lambda: settled(api, survivors), 3 * DURATION_S, "the survivors took over")
        held_s = time.time() - killed_s

        def stepped_by_survivors() -> bool:
            steps = steps_by_unit([replicas[n] for n in survivors], killed_s)
            return all(steps[u] for u in moved)

        wait_for(stepped_by_survivors, 3 * DURATION_S, "the moved units stepped again")
        steps = steps_by_unit(list(replicas.values()), stable_s)
        first_step_s = max(min(t for t, who in steps[u] if who != victim) for u in moved)
        takeover_s = first_step_s - killed_s
        assert DEADLINE_S <= takeover_s <= bound_s, (held_s, takeover_s)
        for name in "abc":
            assert f"retry every {INTERVAL_S:g} s" in replicas[name].log()
        assert_stepper_changes_only_with_the_lease(api, steps_by_unit(list(replicas.values()), 0))
        for unit in moved:  # the victim stepped them until it died, the survivors after
            before = [who for t, who in steps[unit] if t < killed_s]  # none: a starved victim
            assert not before or before[-1] == victim, (unit, steps[unit])
            assert all(who != victim for t, who in steps[unit] if t >= killed_s)

        # A clean stop releases: the last survivor's partner's units move within a few
        # retry periods, far sooner than the lease duration.
        leaving, staying = survivors
        replicas[leaving].process.send_signal(signal.SIGTERM)
        assert replicas[leaving].process.wait(15) == 0
        stopped_s = time.time()
        wait_for(lambda: settled(api, [staying]), 2 * DURATION_S, "the last replica holds all")
        assert time.time() - stopped_s < DURATION_S, "a released Lease waited for its expiry"
        assert "released by " + leaving in replicas[leaving].log()
    finally:
        for replica in replicas.values():
            if replica.process.poll() is None:
                replica.process.kill()
                replica.process.wait(10)
