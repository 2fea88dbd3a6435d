"""A synthetic fleet for tests and benchmarks of sharded daemons: N pipeline files of K
components each (a router fanning into a chain), demand replayed from a trace file in a loop,
every component a Deployment on a `FakeKubeAPI`, and `daemon.sharding` on.

    with FakeKubeAPI() as api:
        paths = write_fleet(tmp_path, api, pipelines=6, components=3, trace=TRACE)
        # `elastiscale run *paths` in each replica process

Pipelines differ in their capacity per replica, so their decisions differ. The last component
of each takes one GPU per replica (the others none), so a shared GPU pool can bind them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from elastiscale.testing.kubernetes import FakeKubeAPI

#: The name of the shared GPU pool (its ConfigMap: `elastiscale-gpu-pool-shared`).
POOL = "shared"


def pipeline_name(index: int) -> str:
    return f"p{index:03d}"


def component_name(index: int) -> str:
    return "router" if index == 0 else f"stage{index}"


def fleet_pipeline(
    index: int,
    components: int,
    *,
    trace: str | Path,
    kubeconfig: str | Path,
    fleet: str,
    interval_s: float,
    lease_duration_s: float,
    renew_deadline_s: float,
    retry_period_s: float,
    policies: list[Any],
    namespace: str = "default",
    gpu_pool_gpus: float | None = None,
) -> dict[str, Any]:
    """The raw config of pipeline `index` (see the module docstring). With `gpu_pool_gpus`,
    the policy is `elastiscale` drawing from pool `shared` of that many GPUs, kept in a
    ConfigMap on the same API server (`daemon.gpu_pools: {store: kubernetes}`)."""
    name = pipeline_name(index)
    capacity = 2.0 + (index % 7)
    parts: dict[str, Any] = {}
    targets: dict[str, Any] = {}
    for c in range(components):
        component = component_name(c)
        parts[component] = {
            "capacity_per_replica": capacity * (1 + c % 3),
            "service_time_s": 0.05,
            "startup_s": 5,
            "replicas": {"min": 1, "max": 50},
            "gpus_per_replica": 1 if c == components - 1 else 0,
        }
        targets[component] = {"kind": "Deployment", "name": f"{name}-{component}"}
    parts[component_name(0)]["ingress"] = True
    edges = [
        {"from": component_name(c), "to": component_name(c + 1)} for c in range(components - 1)
    ]
    raw: dict[str, Any] = {
        "pipeline": {
            "name": name,
            "slo": {"latency_p95_s": 5},
            "components": parts,
            "edges": edges,
        },
        "policies": policies,
        "control": {"interval_s": interval_s},
        "metrics": {"type": "trace", "path": str(trace), "window_s": 60, "loop": True},
        "actuator": {
            "type": "kubernetes",
            "connection": "kubeconfig",
            "kubeconfig": str(kubeconfig),
            "namespace": namespace,
            "timeout_s": 5,
            "settle_timeout_s": 0,
            "targets": targets,
        },
        "daemon": {
            "journal_fsync": False,
            "sharding": {
                "enabled": True,
                "name": fleet,
                "lease_duration_s": lease_duration_s,
                "renew_deadline_s": renew_deadline_s,
                "retry_period_s": retry_period_s,
            },
        },
    }
    if gpu_pool_gpus is not None:
        raw["pipeline"]["max_gpus"] = gpu_pool_gpus
        raw["policies"] = [{"name": "elastiscale", "params": {"gpu_pool": POOL}}]
        raw["daemon"]["gpu_pools"] = {
            "store": "kubernetes",
            "connection": "kubeconfig",
            "kubeconfig": str(kubeconfig),
            "namespace": namespace,
        }
    return raw


def write_fleet(
    directory: Path,
    api: FakeKubeAPI,
    *,
    pipelines: int,
    components: int,
    trace: str | Path,
    fleet: str = "fleet",
    interval_s: float = 1.0,
    lease_duration_s: float = 3.0,
    renew_deadline_s: float = 2.0,
    retry_period_s: float = 0.5,
    policies: list[Any] | None = None,
    gpu_pool_gpus: float | None = None,
) -> list[Path]:
    """Write the pipeline files into `directory`, add their Deployments (1 replica each) to
    `api`, and return the files' paths (`gpu_pool_gpus`: see `fleet_pipeline`)."""
    directory.mkdir(parents=True, exist_ok=True)
    kubeconfig = api.write_kubeconfig(directory / "kubeconfig")
    paths = []
    for index in range(pipelines):
        raw = fleet_pipeline(
            index,
            components,
            trace=trace,
            kubeconfig=kubeconfig,
            fleet=fleet,
            interval_s=interval_s,
            lease_duration_s=lease_duration_s,
            renew_deadline_s=renew_deadline_s,
            retry_period_s=retry_period_s,
            policies=policies or ["hpa"],
            gpu_pool_gpus=gpu_pool_gpus,
        )
        for target in raw["actuator"]["targets"].values():
            api.add_deployment("default", target["name"], replicas=1)
        path = directory / f"{pipeline_name(index)}.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
        paths.append(path)
    return paths
