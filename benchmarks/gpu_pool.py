"""A GPU pool shared across daemon processes through its ConfigMap: `--processes` processes,
each the daemon of `--members` pool members (units), request grants for every member once per
round, back to back (the most contention the pool meets), against the fake Kubernetes API
server in this process, through the official client.

    .venv/bin/python benchmarks/gpu_pool.py [--processes 4] [--members 25] [--rounds 8]
        [--max-gpus 200] [--max-replicas 64]

Each member has two GPU components whose wanted counts walk at random between 1 and
`--max-replicas` (a new count at every round, so every request writes). Prints:
- per request: wall time p50 / p99 and CPU (one GET, one PUT, and a re-read and retry per 409);
- API calls per request and 409s per landed write, counted at the fake server;
- the stored object's size with every member in it;
- the budget check: the grants of every version the server accepted sum to at most the pool.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from elastiscale.adapters.kubernetes.pool_store import DATA_KEY, connect_core, pool_factory
from elastiscale.config import Config
from elastiscale.controllers.budget import Claim
from elastiscale.controllers.pool_store import decode_state
from elastiscale.controllers.queueing import QueueingSizer
from elastiscale.testing.kubernetes import FakeKubeAPI

POOL = "shared"
PATH_PREFIX = "/api/v1/namespaces/default/configmaps"


def member_config(kubeconfig: str) -> Config:
    component = {
        "ingress": True,
        "capacity_per_replica": 1,
        "service_time_s": 1,
        "startup_s": 10,
        "replicas": {"min": 1, "max": 10},
    }
    return Config.model_validate(
        {
            "pipeline": {
                "name": "bench",
                "slo": {"latency_p95_s": 30},
                "components": {"llm": component},
            },
            "daemon": {
                "gpu_pools": {
                    "store": "kubernetes",
                    "connection": "kubeconfig",
                    "kubeconfig": kubeconfig,
                    "conflict_retries": 50,
                }
            },
        }
    )


def run_process(kubeconfig: str, index: int, members: int, rounds: int, args: Any) -> None:
    """One daemon process: every member requests once per round; one JSON line of figures."""
    pool = pool_factory(member_config(kubeconfig), connect=connect_core)(POOL, args.max_gpus)
    sizer = QueueingSizer(
        capacity_rps=1.5, service_time_s=4.0, budget_s=30.0, max_replicas=args.max_replicas,
        burst_share=0.75,
    )  # fmt: skip
    rng = random.Random(index)
    names = [f"unit-{index}-{m}" for m in range(members)]
    wanted = {(n, k): rng.randint(1, args.max_replicas) for n in names for k in ("llm", "rr")}
    walls, cpus, holds = [], [], 0
    for _ in range(rounds):
        for name in names:
            claims = []
            for key in ("llm", "rr"):
                step = rng.choice([-3, -1, 1, 3])
                count = min(max(wanted[(name, key)] + step, 1), args.max_replicas)
                wanted[(name, key)] = count
                demand = sizer.served_rps(count)
                claims.append(
                    Claim(
                        key,
                        1.0,
                        1,
                        count,
                        demand,
                        sizer.served_rps,
                        4.0 if key == "llm" else 1.0,
                        demand / 4.0,
                    )
                )
            wall0, cpu0 = time.perf_counter(), time.process_time()
            got = pool.request(name, claims)
            walls.append(time.perf_counter() - wall0)
            cpus.append(time.process_time() - cpu0)
            holds += got.note is not None and "store failed" in got.note
    print(json.dumps({"walls": walls, "cpus": cpus, "holds": holds}), flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--members", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--max-gpus", type=float, default=200.0)
    parser.add_argument("--max-replicas", type=int, default=64)
    parser.add_argument("--child", nargs=2, metavar=("KUBECONFIG", "INDEX"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_process(args.child[0], int(args.child[1]), args.members, args.rounds, args)
        return
    with FakeKubeAPI() as api, tempfile.TemporaryDirectory() as tmp:
        kubeconfig = str(api.write_kubeconfig(Path(tmp) / "kubeconfig"))
        command = [sys.executable, __file__, "--members", str(args.members), "--rounds",
                   str(args.rounds), "--max-gpus", str(args.max_gpus), "--max-replicas",
                   str(args.max_replicas)]  # fmt: skip
        started = time.perf_counter()
        procs = [
            subprocess.Popen(
                [*command, "--child", kubeconfig, str(i)], stdout=subprocess.PIPE, text=True
            )
            for i in range(args.processes)
        ]
        outputs = [json.loads(p.communicate()[0]) for p in procs]
        elapsed_s = time.perf_counter() - started
        requests = [r for r in api.requests if r.path.startswith(PATH_PREFIX)]
    walls = [w for o in outputs for w in o["walls"]]
    cpus = [c for o in outputs for c in o["cpus"]]
    calls = len(walls)
    landed = [r for r in requests if r.method in ("PUT", "POST") and r.status in (200, 201)]
    conflicts = [r for r in requests if r.status == 409]
    gets = [r for r in requests if r.method == "GET"]
    states = [decode_state(r.body["data"][DATA_KEY]) for r in landed]
    worst = max(s.granted_gpus() for s in states)
    size = len(landed[-1].body["data"][DATA_KEY])
    print(f"{args.processes} processes x {args.members} members x {args.rounds} rounds: "
          f"{calls} requests in {elapsed_s:.1f} s")  # fmt: skip
    print(f"request wall p50 / p99: {percentile(walls, 0.5) * 1e3:.1f} / "
          f"{percentile(walls, 0.99) * 1e3:.1f} ms; CPU p50 / p99: "
          f"{percentile(cpus, 0.5) * 1e3:.1f} / {percentile(cpus, 0.99) * 1e3:.1f} ms")  # fmt: skip
    print(f"API calls per request: {len(requests) / calls:.2f} ({len(gets) / calls:.2f} GET, "
          f"{(len(requests) - len(gets)) / calls:.2f} writes); 409s per landed write: "
          f"{len(conflicts) / max(len(landed), 1):.2f}; holds: "
          f"{sum(o['holds'] for o in outputs)}")  # fmt: skip
    print(f"stored object: {size} bytes for {len(states[-1].members)} members")
    print(
        f"budget: the most any of {len(states)} accepted versions granted: {worst:g} of "
        f"{args.max_gpus:g} GPUs ({'held' if worst <= args.max_gpus + 1e-9 else 'EXCEEDED'})"
    )


if __name__ == "__main__":
    main()
