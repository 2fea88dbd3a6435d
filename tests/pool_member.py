"""One member of a shared GPU pool in its own process, for tests/test_pool_kubernetes.py:
`python pool_member.py KUBECONFIG MEMBER SEED ROUNDS MAX_GPUS` requests `ROUNDS` times with
claims drawn from `SEED`, through a ConfigMap on the API server of KUBECONFIG, and prints one
JSON line per request (its grants, GPUs and note). It first prints `ready` and waits for a line
on stdin, so that the members' requests overlap however long each took to start."""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Mapping
from typing import Any

from elastiscale.config import Config
from elastiscale.config.daemon import GpuPoolsConfig
from elastiscale.controllers.budget import Claim

#: The pipeline of every member: one ingress component of 1 to 10 replicas.
PIPELINE: dict[str, Any] = {
    "name": "rag",
    "slo": {"latency_p95_s": 30},
    "components": {
        "llm": {
            "ingress": True,
            "capacity_per_replica": 1,
            "service_time_s": 1,
            "startup_s": 10,
            "replicas": {"min": 1, "max": 10},
        }
    },
}


def member_config(name: str, gpu_pools: Mapping[str, Any]) -> Config:
    """`PIPELINE` named `name`, with `gpu_pools` as its `daemon.gpu_pools` section."""
    return Config.model_validate(
        {"pipeline": {**PIPELINE, "name": name}, "daemon": {"gpu_pools": dict(gpu_pools)}}
    )


def main(kubeconfig: str, member: str, seed: int, rounds: int, max_gpus: float) -> None:
    from elastiscale.adapters.kubernetes.pool_store import connect_core, pool_factory

    settings = GpuPoolsConfig(
        store="kubernetes", connection="kubeconfig", kubeconfig=kubeconfig, conflict_retries=20
    )
    config = member_config(member, settings.model_dump())
    pool = pool_factory(config, connect=connect_core, clock=time.monotonic)("shared", max_gpus)
    print("ready", flush=True)  # started and connected: the test starts every member at once
    sys.stdin.readline()
    rng = random.Random(seed)
    for _ in range(rounds):
        claims = []
        for key in ("llm", "emb"):
            minimum = rng.randint(0, 1)
            wanted = rng.randint(minimum, 10)
            claims.append(
                Claim(
                    key=key,
                    gpus_per_replica=rng.choice([0.5, 1.0, 2.0]),
                    min_replicas=minimum,
                    wanted=wanted,
                    demand_rps=float(wanted),
                    served_rps=lambda n: float(n),
                    calls_per_request=rng.uniform(1.0, 4.0),
                    ingress_rps=10.0,
                )
            )
        got = pool.request(member, claims)
        line = {"granted": got.granted, "gpus": got.gpus_used, "note": got.note}
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
