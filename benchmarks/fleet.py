"""A sharded fleet at scale: `--pipelines` pipelines of `--components` components on
`--daemons` `elastiscale run` processes (one fleet, daemon.sharding on), every component a
Deployment on the fake Kubernetes API server in this process, reached through the official
client; demand replayed from the Azure trace in a loop.

    .venv/bin/python benchmarks/fleet.py [--pipelines 100] [--components 8] [--daemons 4]
        [--interval 15] [--ticks 6] [--after 4] [--lease 15 --deadline 10 --retry 2]

Prints:
- per daemon over `--ticks` steady ticks: units held, the pass's CPU and wall time (p50, p99;
  a pass steps every unit the daemon holds), and the host's load average beside them (the
  machine may run other work: CPU seconds are the figure to compare);
- API calls per daemon tick and per unit tick, by kind (Lease list, Lease writes, scale reads,
  scale writes, other), counted at the fake server over the steady window;
- failover: the daemon holding the most units is SIGKILLed; seconds until all its units'
  Leases are held by the others, and until each was stepped by its new holder (the bound is
  lease duration + retry period, the retry period at most one tick: a unit taken over is
  stepped at once), then `--after` ticks of the survivors as above;
- with `--gpus N`: every pipeline runs `elastiscale` drawing its GPU component from one pool
  of N GPUs kept in a ConfigMap (`daemon.gpu_pools: {store: kubernetes}`); checked every
  second over the whole run (start, steady, failover): the grants in force it records and the
  GPUs the Deployments' counts take, each against N;
- that no unit was stepped by two daemons at once: a unit's stepper (the journals' `tick`
  entries) changes no more often than its Lease's holder (`leaseTransitions`).
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from elastiscale.controllers.pool_store import decode_state
from elastiscale.daemon.journal import Journal
from elastiscale.daemon.shards import rendezvous_owner, unit_lease_name
from elastiscale.testing.fleet import POOL, component_name, pipeline_name, write_fleet
from elastiscale.testing.kubernetes import (
    CONFIG_MAPS,
    DEPLOYMENTS,
    LEASES,
    FakeKubeAPI,
    RecordedRequest,
)

REPO = Path(__file__).resolve().parent.parent
TRACE = REPO / "examples" / "traces" / "azure_llm_2023_conv_1s.csv"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Replica:
    def __init__(self, paths: list[Path], workdir: Path, identity: str) -> None:
        self.identity = identity
        self.journal = workdir / f"{identity}.jsonl"
        command = [sys.executable, "-m", "elastiscale.cli", "run", *map(str, paths)]
        command += ["--listen", "127.0.0.1:0", "--journal", str(self.journal)]
        command += ["--identity", identity]
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        self.log = (workdir / f"{identity}.log").open("ab")
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir, env=env
        )

    def ticks(self, start_s: float, end_s: float) -> list[dict[str, Any]]:
        if not self.journal.exists():
            return []
        return [
            e
            for e in Journal(self.journal).entries()
            if e.get("kind") == "tick" and start_s <= e["at_s"] < end_s
        ]


def holders(api: FakeKubeAPI, units: list[str], fleet: str) -> dict[str, str]:
    out = {}
    for unit in units:
        try:
            spec = api.get(LEASES, "default", unit_lease_name(fleet, unit))["spec"]
        except Exception:
            spec = {}
        out[unit] = spec.get("holderIdentity") or ""
    return out


def wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise SystemExit(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - started


def kind_of(request: RecordedRequest) -> str:
    if "/leases" in request.path:
        return (
            "lease list"
            if request.method == "GET" and request.path.endswith("/leases")
            else ("lease read" if request.method == "GET" else "lease write")
        )
    if "/configmaps" in request.path:
        return "pool read" if request.method == "GET" else "pool write"
    if request.path.endswith("/scale"):
        return "scale read" if request.method == "GET" else "scale write"
    return "other"


def report_ticks(replicas: list[Replica], start_s: float, end_s: float) -> tuple[int, int]:
    """Print one line per daemon; return (daemon passes, unit steps) in the window."""
    passes = steps = 0
    load = os.getloadavg()
    print(f"  host: {os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} (1/5 min)")
    print("  daemon  units  passes  CPU p50 / p99 ms  wall p50 / p99 ms")
    for replica in replicas:
        # scheduled passes (an early pass steps only units just taken over)
        entries = [e for e in replica.ticks(start_s, end_s) if e["units"] and e["scheduled"]]
        cpu = [e["cpu_s"] * 1000 for e in entries]
        wall = [e["wall_s"] * 1000 for e in entries]
        units = max((len(e["units"]) for e in entries), default=0)
        passes += len(entries)
        steps += sum(len(e["units"]) for e in entries)
        print(
            f"  {replica.identity:6}  {units:5}  {len(entries):6}  "
            f"{percentile(cpu, 0.5):7.1f} / {percentile(cpu, 0.99):6.1f}  "
            f"{percentile(wall, 0.5):8.1f} / {percentile(wall, 0.99):6.1f}"
        )
    return passes, steps


def report_calls(requests: list[RecordedRequest], passes: int, steps: int, span_s: float) -> None:
    counts = Counter(kind_of(r) for r in requests)
    total = sum(counts.values())
    print(f"  API calls: {total} in {span_s:.0f} s ({total / span_s:.0f}/s)")
    print("  kind         per daemon tick  per unit tick")
    kinds = ("lease list", "lease read", "lease write", "scale read", "scale write")
    for kind in (*kinds, "pool read", "pool write", "other"):
        n = counts.get(kind, 0)
        print(f"  {kind:12} {n / max(passes, 1):15.1f}  {n / max(steps, 1):13.2f}")
    print(f"  {'all':12} {total / max(passes, 1):15.1f}  {total / max(steps, 1):13.2f}")


def stepper_changes_without_transition(
    api: FakeKubeAPI, replicas: list[Replica], units: list[str], fleet: str
) -> int:
    """Units whose stepper (journal `tick` entries, the whole run) changed more often than
    their Lease's holder (`leaseTransitions`): two daemons stepping a unit at once would
    alternate without the Lease moving. 0 expected."""
    seq: dict[str, list[tuple[float, str]]] = {u: [] for u in units}
    for replica in replicas:
        for entry in replica.ticks(0.0, float("inf")):
            for unit in entry["units"]:
                seq[unit].append((entry["at_s"], replica.identity))
    bad = 0
    for unit, steps in seq.items():
        ordered = sorted(steps)
        changes = sum(1 for (_, a), (_, b) in itertools.pairwise(ordered) if a != b)
        lease = api.get(LEASES, "default", unit_lease_name(fleet, unit))
        bad += changes > int(lease["spec"].get("leaseTransitions") or 0)
    return bad


class BudgetWatch:
    """Checks the shared GPU pool every `every_s` from the start to the end of the run (at
    least once a tick of every daemon): the GPUs granted in force in its ConfigMap, and the GPUs
    the Deployments' replica counts actually take (each pipeline's GPU component, one GPU a
    replica), against the pool's size. With `explain`, each sample over the pool prints the
    pipelines whose grant differs from their replicas."""

    def __init__(
        self,
        api: FakeKubeAPI,
        gpus: float,
        targets: dict[str, str],
        every_s: float,
        explain: bool = False,
    ) -> None:
        self.api, self.gpus, self.targets, self.every_s = api, gpus, targets, every_s
        self.explain = explain
        self.samples = 0
        self.granted_over = self.used_over = 0
        #: The part of the run (start, steady, failover): over-pool samples are kept by part.
        self.phase = "start"
        self.over_by_phase: Counter[str] = Counter()
        self.granted_peak = self.used_peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _grants(self) -> dict[str, float]:
        try:
            cm = self.api.get(CONFIG_MAPS, "default", f"elastiscale-gpu-pool-{POOL}")
        except Exception:
            return {}  # not written yet
        state = decode_state(cm["data"]["pool.json"])
        return {member: entry.gpus() for member, entry in state.members.items()}

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            counts = {
                m: self.api.replicas(DEPLOYMENTS, "default", t) for m, t in self.targets.items()
            }
            grants = self._grants()
            used, granted = float(sum(counts.values())), sum(grants.values())
            self.samples += 1
            self.granted_peak = max(self.granted_peak, granted)
            self.used_peak = max(self.used_peak, used)
            self.granted_over += granted > self.gpus + 1e-9
            if used > self.gpus + 1e-9:
                self.used_over += 1
                self.over_by_phase[self.phase] += 1
                if self.explain:
                    differ = {
                        m: (grants.get(m), n) for m, n in counts.items() if grants.get(m) != n
                    }
                    print(f"over ({self.phase}): {used:g} GPUs; (grant, replicas): {differ}")

    def report(self) -> None:
        print(
            f"GPU pool of {self.gpus:g}: {self.samples} checks; granted in force peak "
            f"{self.granted_peak:g}, over the pool {self.granted_over} times; Deployments' GPUs "
            f"peak {self.used_peak:g}, over the pool {self.used_over} times "
            f"({dict(self.over_by_phase) or 'never'} by part of the run)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipelines", type=int, default=100)
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--daemons", type=int, default=4)
    parser.add_argument("--interval", type=float, default=15.0, help="control.interval_s")
    parser.add_argument("--ticks", type=int, default=6, help="steady ticks measured")
    parser.add_argument("--after", type=int, default=4, help="ticks measured after the kill")
    parser.add_argument("--lease", type=float, default=15.0, help="lease_duration_s")
    parser.add_argument("--deadline", type=float, default=10.0, help="renew_deadline_s")
    parser.add_argument("--retry", type=float, default=2.0, help="retry_period_s")
    parser.add_argument("--policy", action="append", help="policies (default: hpa)")
    parser.add_argument(
        "--gpus",
        type=float,
        default=None,
        help="a GPU pool of this size shared by every pipeline (policy elastiscale, kept in "
        "a ConfigMap), checked every second",
    )
    parser.add_argument(
        "--explain", action="store_true", help="print every check over the pool, per pipeline"
    )
    args = parser.parse_args()
    units = [pipeline_name(i) for i in range(args.pipelines)]
    names = [f"d{i}" for i in range(args.daemons)]
    with tempfile.TemporaryDirectory() as tmp, FakeKubeAPI() as api:
        workdir = Path(tmp)
        paths = write_fleet(
            workdir,
            api,
            pipelines=args.pipelines,
            components=args.components,
            trace=TRACE,
            interval_s=args.interval,
            lease_duration_s=args.lease,
            renew_deadline_s=args.deadline,
            retry_period_s=args.retry,
            policies=args.policy or ["hpa"],
            gpu_pool_gpus=args.gpus,
        )
        watch: BudgetWatch | None = None
        if args.gpus is not None:
            last = component_name(args.components - 1)
            targets = {u: f"{u}-{last}" for u in units}
            every_s = min(1.0, args.interval / 2)
            watch = BudgetWatch(api, args.gpus, targets, every_s, args.explain)
            watch.start()
        policy = "elastiscale, GPU pool" if args.gpus else ", ".join(args.policy or ["hpa"])
        print(
            f"[{policy}] {args.pipelines} pipelines x {args.components} components on "
            f"{args.daemons} daemons; ticks every {args.interval:g} s; Leases {args.lease:g} / "
            f"{args.deadline:g} / {args.retry:g} s (duration / renew deadline / retry)"
        )
        replicas = {name: Replica(paths, workdir, name) for name in names}
        try:
            took = wait(
                lambda: (
                    holders(api, units, "fleet") == {u: rendezvous_owner(u, names) for u in units}
                ),
                600,
                "the daemons to split the units",
            )
            print(f"units split as the hashing assigns them {took:.1f} s after the start")
            time.sleep(args.interval)  # one tick for every daemon with its final units
            if watch is not None:
                watch.phase = "steady"
            api.clear_requests()
            start_s, started = time.time(), time.monotonic()
            time.sleep(args.ticks * args.interval)
            end_s = time.time()
            requests = api.requests
            print(f"steady, {args.ticks} ticks:")
            passes, steps = report_ticks(list(replicas.values()), start_s, end_s)
            report_calls(requests, passes, steps, time.monotonic() - started)

            owned = holders(api, units, "fleet")
            victim = max(names, key=lambda n: sum(h == n for h in owned.values()))
            moved = [u for u, h in owned.items() if h == victim]
            survivors = [n for n in names if n != victim]
            replicas[victim].process.send_signal(signal.SIGKILL)
            killed_s = time.time()
            if watch is not None:
                watch.phase = "failover"
            replicas[victim].process.wait(30)
            wanted = {u: rendezvous_owner(u, survivors) for u in units}
            held_s = wait(
                lambda: holders(api, units, "fleet") == wanted, 10 * args.lease, "the takeover"
            )

            def first_steps() -> dict[str, float]:
                firsts: dict[str, float] = {}
                for name in survivors:
                    for entry in replicas[name].ticks(killed_s, float("inf")):
                        for unit in entry["units"]:
                            if unit in moved and unit not in firsts:
                                firsts[unit] = entry["at_s"]
                return firsts

            wait(
                lambda: len(first_steps()) == len(moved), 10 * args.lease, "the moved units' steps"
            )
            stepped_s = max(first_steps().values()) - killed_s
            retry_s = min(args.retry, args.interval)  # the retry period runs as at most a tick
            print(
                f"failover: {victim} (holding {len(moved)} units) SIGKILLed; all its units' Leases "
                f"held by the others after {held_s:.2f} s, every one stepped by its new holder "
                f"after {stepped_s:.2f} s (bound: lease + retry = {args.lease + retry_s:g} s, "
                f"within lease + one tick = {args.lease + args.interval:g} s)"
            )
            time.sleep(args.interval)
            api.clear_requests()
            start_s, started = time.time(), time.monotonic()
            time.sleep(args.after * args.interval)
            end_s = time.time()
            requests = api.requests
            print(f"after the failover, {args.after} ticks:")
            rest = [replicas[n] for n in survivors]
            passes, steps = report_ticks(rest, start_s, end_s)
            report_calls(requests, passes, steps, time.monotonic() - started)
            bad = stepper_changes_without_transition(api, list(replicas.values()), units, "fleet")
            print(f"units whose stepper changed without their Lease: {bad} (of {len(units)})")
            if watch is not None:
                watch.stop()
                watch.report()
        finally:
            for replica in replicas.values():
                if replica.process.poll() is None:
                    replica.process.send_signal(signal.SIGTERM)
            for replica in replicas.values():
                try:
                    replica.process.wait(30)
                except subprocess.TimeoutExpired:
                    replica.process.kill()


if __name__ == "__main__":
    main()
