"""Costs of the Ray Serve and SageMaker adapters.

    .venv/bin/python benchmarks/ray_sagemaker_actuators.py [--calls 300] [--ray]

1. `ElastiscaleApplicationPolicy.__call__`, the in-Serve policy, on a three-deployment
   application: Serve's controller calls it every 0.1 s, and it runs the engine once per control
   interval, so both the calls between ticks and the calls that tick matter.
2. The SageMaker actuator through boto3 against the wire-level fake on 127.0.0.1: one `read`
   of three components (three Describe calls), a no-op `scale` (one Describe) and a `scale`
   that writes (Describe + Update).
3. With `--ray` (starts a local Ray cluster, about 20 s): the Ray Serve actuator's `read` and
   no-op `scale`, each one `GET /api/serve/applications/` to the dashboard.

Prints the median and p95 of each, in milliseconds. Loopback and client costs only: a real
SageMaker endpoint or a remote dashboard adds its network latency.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from elastiscale import Proposal, TickContext, registry
from elastiscale.adapters.ray.policy import ElastiscaleApplicationPolicy
from elastiscale.adapters.sagemaker.actuator import SageMakerActuator
from elastiscale.config import validate_mapping
from elastiscale.testing.sagemaker import FakeSageMaker

PIPELINE: dict[str, Any] = {
    "name": "rag",
    "slo": {"latency_p95_s": 10},
    "components": {
        "router": {
            "ingress": True,
            "capacity_per_replica": 100,
            "service_time_s": 0.01,
            "replicas": {"min": 1, "max": 8},
        },
        "retriever": {"capacity_per_replica": 5, "service_time_s": 0.2, "replicas": {"max": 16}},
        "llm": {"capacity_per_replica": 5, "service_time_s": 4.0, "replicas": {"max": 32}},
    },
    "edges": [
        {"from": "router", "to": "retriever", "fanout": 1},
        {"from": "retriever", "to": "llm", "fanout": 2},
    ],
}


class FeedForward:
    """Ingress demand through the graph, divided by capacity at the target utilization."""

    name = "bench-feed-forward"

    def __init__(self, config: Any = None, params: Any = None) -> None:
        pass

    def propose(self, ctx: TickContext) -> dict[str, Proposal]:
        ingress = {n: ctx.load(n) for n in ctx.pipeline.ingress}
        if any(v is None for v in ingress.values()):
            return {}
        demand = ctx.pipeline.propagate({n: float(v or 0.0) for n, v in ingress.items()})
        out = {}
        for name, rps in demand.items():
            spec = ctx.pipeline.components[name]
            per_replica = spec.capacity_per_replica * ctx.config.pipeline.utilization_target(name)
            out[name] = Proposal(self.name, math.ceil(rps / per_replica), "")
        return out


def timed(fn: Callable[[], Any], calls: int, warmup: int = 10) -> tuple[float, float]:
    """Median and p95 of `fn`'s duration in milliseconds."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000.0)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(0.95 * len(samples)))]


def report(what: str, figures: tuple[float, float]) -> None:
    print(f"{what:<62} median {figures[0]:8.3f} ms   p95 {figures[1]:8.3f} ms")


def bench_policy(calls: int) -> None:
    registry.register("policy", FeedForward.name, FeedForward)
    policy = ElastiscaleApplicationPolicy(
        {"pipeline": PIPELINE, "policies": [FeedForward.name], "control": {"interval_s": 15}}
    )
    clock = {"now_s": 1000.0}

    def contexts(step_s: float) -> dict[str, SimpleNamespace]:
        clock["now_s"] += step_s
        return {
            name: SimpleNamespace(
                deployment_name=name,
                current_num_replicas=2,
                target_num_replicas=2,
                total_num_requests=3.0,
                total_queued_requests=0.0,
                aggregated_metrics={"demand_rps": {"r1": 4.0, "r2": 5.0}},
                current_time=clock["now_s"],
            )
            for name in ("router", "retriever", "llm")
        }

    report("in-Serve policy, a call between ticks", timed(lambda: policy(contexts(0.1)), calls))
    report(
        "in-Serve policy, a call that runs the engine", timed(lambda: policy(contexts(15.0)), calls)
    )


def bench_sagemaker(calls: int) -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    config = validate_mapping({"pipeline": PIPELINE})
    targets = {
        "router": {"endpoint": "rag-router"},
        "retriever": {"endpoint": "rag-retriever"},
        "llm": {"inference_component": "rag-llm-ic"},
    }
    with FakeSageMaker(finish_at_once=True) as fake:
        fake.add_endpoint("rag-router")
        fake.add_endpoint("rag-retriever")
        fake.add_inference_component("rag-llm-ic", endpoint="rag-llm")
        options = {"region": "us-east-1", "endpoint_url": fake.url, "targets": targets}
        report(
            "SageMaker actuator built (boto3 clients + start-up checks)",
            timed(lambda: SageMakerActuator(config, options), max(10, calls // 10), warmup=2),
        )
        actuator = SageMakerActuator(config, options)
        names = ["router", "retriever", "llm"]
        report(
            "SageMaker read of 3 components (3 Describe calls)",
            timed(lambda: actuator.read(names), calls),
        )
        report(
            "SageMaker scale to the current count (1 Describe)",
            timed(lambda: actuator.scale("llm", 1), calls),
        )
        count = {"n": 1}

        def change() -> None:
            count["n"] = 3 - count["n"]  # 1, 2, 1, 2...
            result = actuator.scale("llm", count["n"])
            assert result.ok, result.message

        report("SageMaker scale to a new count (Describe + Update)", timed(change, calls))


def bench_ray(calls: int) -> None:
    import json
    import secrets
    import tempfile
    import urllib.request
    from pathlib import Path

    from elastiscale.adapters.ray.actuator import RayServeActuator

    token_file = Path(tempfile.mkdtemp()) / "token"
    token_file.write_text(secrets.token_hex(16))
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file))
    os.environ["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent / "examples/backends")
    import ray

    from elastiscale.testing.prometheus import free_port
    from elastiscale.testing.ray_serve import RAY_DEFAULT_PORTS

    port = free_port(RAY_DEFAULT_PORTS)
    ray.init(num_cpus=2, include_dashboard=True, dashboard_port=port, log_to_driver=False)
    url = f"http://127.0.0.1:{port}"
    try:
        headers = {"Authorization": f"Bearer {token_file.read_text()}"}
        body = {
            "http_options": {"host": "127.0.0.1", "port": free_port()},
            "applications": [
                {"name": "rag", "import_path": "ray_serve_app:app", "external_scaler_enabled": True}
            ],
        }
        for _ in range(300):  # the dashboard takes a few seconds to answer
            try:
                req = urllib.request.Request(
                    url + "/api/serve/applications/",
                    data=json.dumps(body).encode(),
                    method="PUT",
                    headers={**headers, "Content-Type": "application/json"},
                )
                urllib.request.urlopen(req, timeout=10).close()
                break
            except OSError:
                time.sleep(0.2)
        config = validate_mapping({"pipeline": PIPELINE})
        options = {
            "address": url,
            "application": "rag",
            "targets": {"router": "router", "retriever": "retriever", "llm": "llm"},
            "check_on_start": False,
        }
        actuator = RayServeActuator(config, options)
        for _ in range(600):
            if actuator.read(["router"]):
                break
            time.sleep(0.2)
        names = ["router", "retriever", "llm"]
        report(
            "Ray Serve read of 3 deployments (1 GET)", timed(lambda: actuator.read(names), calls)
        )
        report(
            "Ray Serve scale to the current count (1 GET)",
            timed(lambda: actuator.scale("llm", 1), calls),
        )
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--ray", action="store_true", help="also time the Ray Serve actuator")
    args = parser.parse_args()
    bench_policy(args.calls)
    bench_sagemaker(args.calls)
    if args.ray:
        bench_ray(args.calls)


if __name__ == "__main__":
    main()
