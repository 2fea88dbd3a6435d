"""Fixtures of the chaos suite: one real Prometheus for the suite (scraping `ChaosExporter`
every 0.25 s; the metric-fault scenarios kill and restart it, on the same port), a fault proxy
in front of it, and the config every daemon of the suite runs.

Every test here is marked `chaos` and `integration`; without the `prometheus` binary they skip,
or fail when ELASTISCALE_REQUIRE_INTEGRATION or ELASTISCALE_REQUIRE_PROMETHEUS is set (CI).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaos.harness import INTERVAL_S, ChaosExporter, FaultProxy
from conftest import require_prometheus
from elastiscale.testing.prometheus import LocalPrometheus

#: Capacity of one replica (requests/s) at target utilization 1.0: demand D needs ceil(D / 10).
CAPACITY_RPS = 10.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.chaos)
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def chaos_exporter() -> Iterator[ChaosExporter]:
    made = ChaosExporter()
    yield made
    made.stop()


@pytest.fixture(scope="session")
def chaos_prom(
    tmp_path_factory: pytest.TempPathFactory, chaos_exporter: ChaosExporter
) -> Iterator[LocalPrometheus]:
    require_prometheus()
    server = LocalPrometheus(tmp_path_factory.mktemp("chaos-prometheus"), scrape_interval_s=0.25)
    server.set_targets({chaos_exporter.address: {}})  # before start: no wait for discovery
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def prom_proxy(chaos_prom: LocalPrometheus) -> Iterator[FaultProxy]:
    proxy = FaultProxy(chaos_prom.url)
    yield proxy
    proxy.stop()


def pipeline_config(
    path: Path,
    prometheus_url: str,
    labels: dict[str, str],
    actuator: dict[str, Any],
    *,
    leader_election: bool = False,
    lease_s: float = 2.0,
    extra: dict[str, Any] | None = None,
) -> Path:
    """router (demand: a gauge) -> worker (demand: rate() of a counter), HPA on each with a
    fast scale-up and no scale-down stabilization, so a bad reading taken for real would show
    at once as a scale-down. `labels`: the exporter's label value of each component."""
    components = {
        name: {
            "capacity_per_replica": CAPACITY_RPS,
            "service_time_s": 0.1,
            "replicas": {"min": 1, "max": 20},
            **({"ingress": True} if name == "router" else {}),
        }
        for name in ("router", "worker")
    }
    raw: dict[str, Any] = {
        "pipeline": {
            "name": "chaos",
            "slo": {"latency_p95_s": 10},
            "target_utilization": 1.0,
            "components": components,
            "edges": [{"from": "router", "to": "worker", "fanout": 1.0}],
        },
        "policies": [
            {
                "name": "hpa",
                "params": {
                    "behavior": {
                        "scale_up": {
                            "policies": [{"type": "percent", "value": 1000, "period_s": 1}]
                        },
                        "scale_down": {
                            "stabilization_window_s": 0,
                            "policies": [{"type": "percent", "value": 100, "period_s": 1}],
                        },
                    }
                },
            }
        ],
        "control": {"interval_s": INTERVAL_S},
        "metrics": {
            "type": "prometheus",
            "url": prometheus_url,
            "timeout_s": 1,
            "label": "component",
            "rate_window_s": 2,
            "staleness_s": 30,
            "components": {
                "router": {
                    "label_value": labels["router"],
                    "queries": {
                        "demand_rps": {
                            "expr": "sum by ($by) (es_chaos_demand_rps{$selector})",
                            "series": "es_chaos_demand_rps{$selector}",
                        }
                    },
                },
                "worker": {
                    "label_value": labels["worker"],
                    "queries": {
                        "demand_rps": {
                            "expr": "sum by ($by) "
                            "(rate(es_chaos_requests_total{$selector}[$window]))",
                            "series": "es_chaos_requests_total{$selector}",
                        }
                    },
                },
            },
        },
        "actuator": actuator,
        "daemon": {
            "metrics_backoff_max_s": 1,
            "leader_election": (
                {"enabled": True, "duration_s": lease_s, "renew_s": lease_s / 4}
                if leader_election
                else {"enabled": False}
            ),
        },
    }
    if extra:
        raw.update(extra)
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def kube_actuator(kubeconfig: Path, timeout_s: float = 2.0) -> dict[str, Any]:
    return {
        "type": "kubernetes",
        "connection": "kubeconfig",
        "kubeconfig": str(kubeconfig),
        "namespace": "default",
        "timeout_s": timeout_s,
        "settle_timeout_s": 0,
        "targets": {
            "router": {"kind": "Deployment", "name": "router"},
            "worker": {"kind": "Deployment", "name": "worker"},
        },
    }


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto server process (skips, or fails in CI, when it cannot start), with this
    process's AWS settings pointed at dummy credentials while it runs."""
    pytest.importorskip("boto3")
    from chaos.sagemaker import sagemaker_env
    from test_sagemaker import moto_process

    with pytest.MonkeyPatch.context() as patch:
        for name, value in sagemaker_env(tmp_path_factory.mktemp("aws")).items():
            patch.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            patch.delenv(name, raising=False)
        with moto_process() as url:
            yield url
