"""The actuator targets of the fuzzer: Kubernetes, SageMaker and Ray Serve answers."""

from __future__ import annotations

import contextlib
import io
import json
import random
import urllib.error
from collections.abc import Iterator
from email.message import Message
from typing import Any
from unittest import mock

from elastiscale.config import validate_mapping
from elastiscale.errors import ActuatorError
from fuzz_core import ContractError, Target, _one_line, fuzz_pipeline, mutate_text, mutate_tree

# --- kubernetes --------------------------------------------------------------------------------

KUBE_CONFIG: dict[str, Any] = {
    "pipeline": fuzz_pipeline(with_llm=False),
}


def _scale_object(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": "router", "namespace": "default", "resourceVersion": "12"},
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas, "selector": "app=router"},
    }


class _Pool:
    """urllib3's pool manager as the Kubernetes client uses it, answering fuzzed bodies."""

    def __init__(self) -> None:
        self.rng = random.Random(0)
        self.fuzz = False

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        import urllib3

        rng = self.rng
        headers: dict[str, str] = {"Content-Type": "application/json"}
        if not self.fuzz:  # construction: no other autoscalers
            return urllib3.HTTPResponse(
                body=b'{"kind": "List", "items": []}', status=200, headers=headers
            )
        status = rng.choice((200,) * 6 + (409, 429, 500, 503, 404, 403, 422))
        doc: Any = _scale_object(rng.randint(0, 5))
        if status != 200:
            doc = {"kind": "Status", "status": "ContractError", "code": status, "message": "x"}
            if rng.random() < 0.5:
                headers["Retry-After"] = str(rng.choice(("1", "-1", "abc", "1e9", "", "3.5")))
        if rng.random() < 0.8:
            doc = mutate_tree(doc, rng)
        try:
            text = json.dumps(doc)
        except (TypeError, ValueError):
            text = str(doc)
        if rng.random() < 0.2:
            text = mutate_text(text, rng)
        return urllib3.HTTPResponse(
            body=text.encode("utf-8", "replace"), status=status, headers=headers
        )

    def clear(self) -> None:
        """The client's `close()` clears its pools."""


def _check_actuator(actuator: Any, rng: random.Random, component: str) -> None:
    from elastiscale.adapters.base import ActuationResult

    try:
        states = actuator.read([component])
    except ActuatorError as exc:
        _one_line(str(exc), "actuator error")
    else:
        for state in states.values():
            if not (isinstance(state.desired, int) and isinstance(state.ready, int)):
                raise ContractError(f"read gave {state!r}")
            if state.desired < 0 or state.ready < 0:
                raise ContractError(f"read gave negative counts {state!r}")
    result = actuator.scale(component, rng.randint(0, 6))
    if not isinstance(result, ActuationResult):
        raise ContractError(f"scale returned {result!r}")


def kubernetes_target() -> Target:
    import kubernetes.client as k8s

    from elastiscale.adapters.kubernetes import KubernetesActuator

    config = validate_mapping(KUBE_CONFIG)
    configuration = k8s.Configuration()
    configuration.host = "http://kubernetes.fuzz"
    api_client = k8s.ApiClient(configuration)
    pool = _Pool()
    api_client.rest_client.pool_manager = pool
    actuator = KubernetesActuator(
        config,
        {
            "targets": {"router": {"kind": "Deployment", "name": "router"}},
            "settle_timeout_s": 0,
            "conflict_retries": 1,
        },
        api_client=api_client,
        namespace="default",
    )
    pool.fuzz = True

    def run(rng: random.Random) -> None:
        pool.rng = rng
        _check_actuator(actuator, rng, "router")

    return Target("kubernetes", run)


# --- sagemaker ---------------------------------------------------------------------------------

SAGEMAKER_CONFIG: dict[str, Any] = {
    "pipeline": fuzz_pipeline(with_llm=True),
}


class _SageMaker:
    """The boto3 SageMaker client's calls the actuator makes, answering fuzzed dicts."""

    def __init__(self) -> None:
        self.rng = random.Random(0)

    def _answer(self, doc: dict[str, Any], operation: str) -> Any:
        from botocore.exceptions import ClientError

        rng = self.rng
        if rng.random() < 0.25:
            error: Any = {
                "Error": {
                    "Code": rng.choice(("ValidationException", "ThrottlingException", "X")),
                    "Message": rng.choice(("Cannot update in-progress endpoint", "", "gone")),
                },
                "ResponseMetadata": {"HTTPStatusCode": rng.choice((400, 429, 500, 503))},
            }
            raise ClientError(mutate_tree(error, rng) if rng.random() < 0.5 else error, operation)
        return mutate_tree(doc, rng) if rng.random() < 0.8 else doc

    def describe_endpoint(self, **kwargs: Any) -> Any:
        variant = {
            "VariantName": "AllTraffic",
            "CurrentInstanceCount": 2,
            "DesiredInstanceCount": 2,
        }
        doc = {"EndpointStatus": "InService", "ProductionVariants": [variant]}
        return self._answer(doc, "DescribeEndpoint")

    def describe_inference_component(self, **kwargs: Any) -> Any:
        doc = {
            "InferenceComponentStatus": "InService",
            "RuntimeConfig": {"CurrentCopyCount": 1, "DesiredCopyCount": 1},
        }
        return self._answer(doc, "DescribeInferenceComponent")

    def update_endpoint_weights_and_capacities(self, **kwargs: Any) -> Any:
        return self._answer({"EndpointArn": "arn:x"}, "UpdateEndpointWeightsAndCapacities")

    def update_inference_component_runtime_config(self, **kwargs: Any) -> Any:
        return self._answer({"InferenceComponentArn": "arn:x"}, "UpdateInferenceComponent")


def sagemaker_target() -> Target:
    from elastiscale.adapters.sagemaker import SageMakerActuator

    config = validate_mapping(SAGEMAKER_CONFIG)
    with _aws_dummy():
        actuator = SageMakerActuator(
            config,
            {
                "region": "us-east-1",
                "check_on_start": False,
                "settle_timeout_s": 0,
                "targets": {
                    "router": {"endpoint": "fuzz-router"},
                    "llm": {"inference_component": "fuzz-llm"},
                },
            },
        )
    fake = _SageMaker()
    actuator.sagemaker = fake

    def run(rng: random.Random) -> None:
        fake.rng = rng
        _check_actuator(actuator, rng, rng.choice(("router", "llm")))

    return Target("sagemaker", run)


@contextlib.contextmanager
def _aws_dummy() -> Iterator[None]:
    with mock.patch.dict(
        "os.environ",
        {
            "AWS_ACCESS_KEY_ID": "fuzz",
            "AWS_SECRET_ACCESS_KEY": "fuzz",
            "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        },
    ):
        yield


# --- ray ---------------------------------------------------------------------------------------

RAY_CONFIG: dict[str, Any] = {
    "pipeline": fuzz_pipeline(with_llm=False),
}


def _applications() -> dict[str, Any]:
    replica = {"replica_id": "r1", "state": "RUNNING"}
    deployment = {
        "name": "Router",
        "status": "HEALTHY",
        "target_num_replicas": 2,
        "replicas": [replica, dict(replica, replica_id="r2")],
        "deployment_config": {"name": "Router", "num_replicas": 2},
    }
    app = {
        "name": "default",
        "status": "RUNNING",
        "deployments": {"Router": deployment},
        "deployed_app_config": {"name": "default", "deployments": [{"name": "Router"}]},
    }
    return {"applications": {"default": app}}


class _Response(io.BytesIO):
    def __enter__(self) -> _Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Dashboard:
    """`urllib.request.urlopen` as the Ray Serve actuator calls it, answering fuzzed bodies."""

    def __init__(self) -> None:
        self.rng = random.Random(0)

    def __call__(self, request: Any, timeout: float | None = None) -> _Response:
        rng = self.rng
        doc: Any = _applications() if request.get_method() == "GET" else None
        if rng.random() < 0.8 and doc is not None:
            doc = mutate_tree(doc, rng)
        try:
            text = json.dumps(doc) if doc is not None else ""
        except (TypeError, ValueError):
            text = str(doc)
        if rng.random() < 0.2:
            text = mutate_text(text, rng)
        body = text.encode("utf-8", "replace")
        if rng.random() < 0.15:
            headers = Message()
            headers["Retry-After"] = rng.choice(("1", "x", "-3", ""))
            code = rng.choice((400, 404, 429, 500, 503))
            raise urllib.error.HTTPError(request.full_url, code, "x", headers, io.BytesIO(body))
        return _Response(body)


def ray_target() -> Target:
    from elastiscale.adapters.ray.actuator import RayServeActuator

    config = validate_mapping(RAY_CONFIG)
    dashboard = _Dashboard()
    actuator = RayServeActuator(
        config,
        {
            "address": "http://ray.fuzz:8265",
            "check_on_start": False,
            "settle_timeout_s": 0,
            "targets": {"router": {"deployment": "Router"}},
        },
    )
    patch = mock.patch("urllib.request.urlopen", dashboard)
    patch.start()

    def run(rng: random.Random) -> None:
        dashboard.rng = rng
        _check_actuator(actuator, rng, "router")

    return Target("ray", run, patch.stop)
