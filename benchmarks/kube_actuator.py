"""Cost of the Kubernetes actuator's API calls, through the official client, against the fake
API server on 127.0.0.1.

    .venv/bin/python benchmarks/kube_actuator.py [--calls 300] [--components 3]

Prints, in milliseconds (median and p95 over `--calls`):
- one GET of a scale subresource, with the fake's accepted sockets in TCP_NODELAY (as shipped)
  and with Nagle's algorithm left on, which is what TCP_NODELAY buys;
- one `read` of every component plus one `scale` of every component to a new count: the API
  work of one engine tick that changes everything (`--components` Deployments).
These are client and loopback costs; a real API server adds its own latency and network.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from elastiscale import load_config
from elastiscale.adapters.kubernetes.actuator import KubernetesActuator
from elastiscale.testing.kubernetes import FakeKubeAPI


def timed_ms(action: Callable[[], object], calls: int) -> tuple[float, float]:
    """Median and p95 of `calls` runs of `action`, in milliseconds (after 10 warm-up runs)."""
    for _ in range(10):
        action()
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000.0)
    samples.sort()
    return statistics.median(samples), samples[int(0.95 * (len(samples) - 1))]


def scale_get(tcp_nodelay: bool, calls: int, workdir: Path) -> tuple[float, float]:
    with FakeKubeAPI(tcp_nodelay=tcp_nodelay) as api:
        api.add_deployment("default", "router", replicas=2)
        configuration = k8s.Configuration()
        k8s_config.load_kube_config(
            config_file=str(api.write_kubeconfig(workdir / f"kc-{tcp_nodelay}")),
            client_configuration=configuration,
        )
        apps = k8s.AppsV1Api(k8s.ApiClient(configuration))
        return timed_ms(lambda: apps.read_namespaced_deployment_scale("router", "default"), calls)


def tick(components: int, calls: int, workdir: Path) -> tuple[float, float]:
    names = [f"c{i}" for i in range(components)]
    spec = {"capacity_per_replica": 10, "service_time_s": 0.1, "replicas": {"max": 100}}
    raw = {
        "pipeline": {
            "name": "bench",
            "slo": {"latency_p95_s": 10},
            "components": {n: {**spec, "ingress": i == 0} for i, n in enumerate(names)},
            "edges": [{"from": names[0], "to": n} for n in names[1:]],
        },
        "actuator": {"type": "kubernetes", "targets": {n: {"name": n} for n in names}},
    }
    config = load_config(raw)
    with FakeKubeAPI() as api:
        for name in names:
            api.add_deployment("default", name, replicas=1)
        options = {
            "targets": raw["actuator"]["targets"],  # type: ignore[index]
            "kubeconfig": str(api.write_kubeconfig(workdir / "kc-tick")),
            "connection": "kubeconfig",
        }
        with KubernetesActuator(config, options) as actuator:
            counter = [1]

            def one_tick() -> None:
                counter[0] = counter[0] % 50 + 1
                actuator.read(names)
                for name in names:
                    result = actuator.scale(name, counter[0])
                    assert result.ok, result.message

            return timed_ms(one_tick, calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--components", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for nodelay in (True, False):
            median, p95 = scale_get(nodelay, args.calls, workdir)
            label = "TCP_NODELAY" if nodelay else "Nagle on   "
            print(f"GET scale, {label}: median {median:6.2f} ms  p95 {p95:6.2f} ms")
        median, p95 = tick(args.components, max(1, args.calls // 5), workdir)
        print(
            f"read + scale of {args.components} Deployments: "
            f"median {median:6.2f} ms  p95 {p95:6.2f} ms"
        )


if __name__ == "__main__":
    main()
