"""One policy, three backends: the pipeline of examples/backends/ wired to Kubernetes (the fake
API server), Ray Serve (the session's local cluster) and SageMaker (a moto server), one engine
tick against each with the same observations, and the same replica counts land on all three.

The Ray and moto parts skip without their servers, unless ELASTISCALE_REQUIRE_INTEGRATION is
set (as in CI): then they fail.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from elastiscale import Engine, SeriesMetricSource
from elastiscale.adapters.kubernetes.actuator import KubernetesActuator
from elastiscale.adapters.ray.actuator import RayServeActuator
from elastiscale.adapters.sagemaker.actuator import SageMakerActuator
from elastiscale.config import Config, validate_mapping
from elastiscale.testing.kubernetes import DEPLOYMENTS, LEADER_WORKER_SETS, FakeKubeAPI
from test_ray_serve import DemandPolicy, ServeCluster, serve_cluster
from test_sagemaker import REGION, boto_client, create_endpoint, moto_process, reset_moto

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "backends"
COMPONENTS = ("router", "retriever", "llm")

#: 5 requests/s at the router: router ceil(5 / (100 x 0.7)) = 1, retriever ceil(5 / 3.5) = 2,
#: llm (fan-out 2) ceil(10 / 3.5) = 3.
DEMAND_RPS = {"router": 5.0, "retriever": 5.0, "llm": 10.0}
EXPECTED = {"router": 1, "retriever": 2, "llm": 3}
#: Where the Kubernetes and SageMaker targets start: every count has to change or hold.
START = {"router": 2, "retriever": 1, "llm": 1}


def example(backend: str, **actuator: Any) -> Config:
    """examples/backends/BACKEND.yaml with its actuator section's connection details replaced
    (the metrics section goes: the test supplies observations itself)."""
    raw = yaml.safe_load((EXAMPLES / f"{backend}.yaml").read_text(encoding="utf-8"))
    raw.pop("metrics", None)
    raw["actuator"].update(actuator)
    return validate_mapping(raw, label=backend)


def one_tick(config: Config, actuator: Any) -> dict[str, int]:
    """One engine tick with the same demand and the same policy; the counts it decided."""
    times = np.array([0.0])
    source = SeriesMetricSource(
        {c: {"demand_rps": (times, np.array([rps]))} for c, rps in DEMAND_RPS.items()}
    )
    engine = Engine(config, metrics=source, actuator=actuator, policies=[DemandPolicy()])
    records = engine.step(now_s=60.0)
    failed = {r.component: r.outcome for r in records if r.outcome.startswith(("failed", "held"))}
    assert not failed, failed
    return {r.component: r.desired_replicas for r in records}


def test_the_three_examples_share_one_pipeline() -> None:
    pipelines = {b: example(b).pipeline for b in ("kubernetes", "ray-serve", "sagemaker")}
    assert pipelines["kubernetes"] == pipelines["ray-serve"] == pipelines["sagemaker"]
    assert {b: example(b).actuator.type for b in pipelines} == {  # type: ignore[union-attr]
        "kubernetes": "kubernetes",
        "ray-serve": "ray-serve",
        "sagemaker": "sagemaker",
    }


def land_on_kubernetes(tmp_path: Path) -> dict[str, int]:
    with FakeKubeAPI() as api:
        api.add_deployment("serving", "rag-router", replicas=START["router"])
        api.add_deployment("serving", "rag-retriever", replicas=START["retriever"])
        api.add_workload(LEADER_WORKER_SETS, "serving", "rag-llm", replicas=START["llm"])
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", namespace="serving")
        config = example("kubernetes", connection="kubeconfig", kubeconfig=str(kubeconfig))
        assert config.actuator is not None
        with KubernetesActuator(config, config.actuator.options()) as actuator:
            decided = one_tick(config, actuator)
        landed = {
            "router": api.replicas(DEPLOYMENTS, "serving", "rag-router"),
            "retriever": api.replicas(DEPLOYMENTS, "serving", "rag-retriever"),
            "llm": api.replicas(LEADER_WORKER_SETS, "serving", "rag-llm"),
        }
    assert landed == decided
    return decided


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto server for this module, and dummy credentials (no user AWS files) while it runs."""
    aws = tmp_path_factory.mktemp("aws")
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            env.delenv(name, raising=False)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_CONFIG_FILE", str(aws / "config"))
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(aws / "credentials"))
        with moto_process() as url:
            yield reset_moto(url)


def land_on_sagemaker(url: str) -> dict[str, int]:
    for component in COMPONENTS:
        create_endpoint(url, f"rag-{component}", instances=START[component])
    config = example("sagemaker", endpoint_url=url, region=REGION)
    assert config.actuator is not None
    decided = one_tick(config, SageMakerActuator(config, config.actuator.options()))
    client = boto_client("sagemaker", url)
    landed = {
        c: client.describe_endpoint(EndpointName=f"rag-{c}")["ProductionVariants"][0][
            "DesiredInstanceCount"
        ]
        for c in COMPONENTS
    }
    assert landed == decided
    return decided


def land_on_ray_serve(cluster: ServeCluster) -> dict[str, int]:
    """On the `ext` application (deployed from examples/backends/serve_external_scaler.yaml);
    put back to one replica each afterwards, as the Ray tests expect."""
    cluster.settle("ext", dict.fromkeys(COMPONENTS, 1))
    config = example(
        "ray-serve",
        address=cluster.dashboard_url,
        application="ext",
        auth_token_file=str(cluster.token_file),
    )
    assert config.actuator is not None
    actuator = RayServeActuator(config, config.actuator.options())
    try:
        decided = one_tick(config, actuator)
        cluster.settle("ext", decided, timeout_s=60)
        return decided
    finally:
        restore = RayServeActuator(config, config.actuator.options())
        for component in COMPONENTS:
            restore.scale(component, 1)
        cluster.settle("ext", dict.fromkeys(COMPONENTS, 1), timeout_s=60)


def assert_same(landed: Mapping[str, Mapping[str, int]]) -> None:
    for backend, counts in landed.items():
        assert dict(counts) == EXPECTED, backend


def test_kubernetes(tmp_path: Path) -> None:
    assert_same({"kubernetes": land_on_kubernetes(tmp_path)})


@pytest.mark.integration
def test_same_counts_land_on_all_three(
    tmp_path: Path,
    moto: str,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    landed = {
        "kubernetes": land_on_kubernetes(tmp_path),
        "sagemaker": land_on_sagemaker(moto),
        "ray-serve": land_on_ray_serve(serve_cluster(request, tmp_path_factory, ["ext"])),
    }
    assert_same(landed)
