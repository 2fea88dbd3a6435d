"""The SageMaker actuator through real boto3: endpoints, variants and Application Auto Scaling
against a moto server process; inference components, `Updating`, throttling and other faults
against the wire-level fake (`elastiscale.testing.sagemaker`).

The moto tests skip when moto's server cannot be started, unless ELASTISCALE_REQUIRE_INTEGRATION
is set (as in CI): then they fail.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale import (
    Engine,
    Failure,
    Proposal,
    ReplicaState,
    SeriesMetricSource,
    TickContext,
)
from elastiscale.adapters.contract import InProgressGuard, OtherAutoscalerError
from elastiscale.adapters.sagemaker.actuator import (
    INFERENCE_COMPONENT_DIMENSION,
    VARIANT_DIMENSION,
    SageMakerActuator,
    SageMakerTarget,
)
from elastiscale.adapters.sagemaker.calls import failure_for_error
from elastiscale.config import Config, validate_mapping
from elastiscale.errors import ActuatorError, ConfigError
from elastiscale.testing.lifetime import die_with_parent
from elastiscale.testing.sagemaker import FakeSageMaker

boto3 = pytest.importorskip("boto3")
from botocore.config import Config as BotoConfig  # noqa: E402 (after the skip)

REQUIRE_INTEGRATION = bool(os.environ.get("ELASTISCALE_REQUIRE_INTEGRATION"))
REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/llm:latest"


def pipeline(**actuator: Any) -> dict[str, Any]:
    """router (an endpoint variant) -> llm (an inference component), fan-out 2."""
    raw: dict[str, Any] = {
        "pipeline": {
            "name": "rag",
            "slo": {"latency_p95_s": 20},
            "components": {
                "router": {
                    "ingress": True,
                    "capacity_per_replica": 50,
                    "service_time_s": 0.02,
                    "replicas": {"min": 1, "max": 4},
                },
                "llm": {
                    "capacity_per_replica": 2,
                    "service_time_s": 2,
                    "replicas": {"min": 0, "max": 8},
                },
            },
            "edges": [{"from": "router", "to": "llm", "fanout": 2}],
        }
    }
    if actuator:
        raw["actuator"] = {"type": "sagemaker", **actuator}
    return raw


CONFIG: Config = validate_mapping(pipeline())
TARGETS = {"router": {"endpoint": "rag-router"}, "llm": {"inference_component": "rag-llm-ic"}}


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials and no user AWS files, so nothing here can reach a real account."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))


def boto_client(service: str, url: str) -> Any:
    config = BotoConfig(retries={"total_max_attempts": 1, "mode": "standard"})
    return boto3.client(service, endpoint_url=url, region_name=REGION, config=config)


# --------------------------------------------------------------------------------------------
# Pure pieces


@pytest.mark.parametrize(
    ("code", "message", "status", "expected"),
    [
        ("ThrottlingException", "Rate exceeded", 400, Failure.THROTTLED),
        ("TooManyRequestsException", "", 429, Failure.THROTTLED),
        ("AccessDeniedException", "not authorized", 400, Failure.FORBIDDEN),
        ("UnrecognizedClientException", "bad token", 400, Failure.FORBIDDEN),
        ("ValidationException", 'Could not find endpoint "arn:x".', 400, Failure.NOT_FOUND),
        ("ResourceNotFound", "gone", 400, Failure.NOT_FOUND),
        (
            "ValidationException",
            'Cannot update in-progress endpoint "arn:x".',
            400,
            Failure.IN_PROGRESS,
        ),
        ("ValidationException", "CopyCount must be <= 8", 400, Failure.INVALID),
        ("ResourceLimitExceeded", "account quota", 400, Failure.INVALID),
        ("ConflictException", "changed", 409, Failure.CONFLICT),
        ("InternalFailure", "", 500, Failure.UNAVAILABLE),
        ("SomethingNew", "", 503, Failure.UNAVAILABLE),
    ],
)
def test_aws_errors_in_the_engines_words(
    code: str, message: str, status: int, expected: Failure
) -> None:
    assert failure_for_error(code, message, status) is expected


def test_target_resource_ids_follow_application_auto_scaling() -> None:
    variant = SageMakerTarget(endpoint="rag", variant="blue")
    component = SageMakerTarget(inference_component="llm-ic")
    assert (variant.resource_id, variant.scalable_dimension) == (
        "endpoint/rag/variant/blue",
        VARIANT_DIMENSION,
    )
    assert SageMakerTarget(endpoint="rag").resource_id == "endpoint/rag/variant/AllTraffic"
    assert (component.resource_id, component.scalable_dimension) == (
        "inference-component/llm-ic",
        INFERENCE_COMPONENT_DIMENSION,
    )


@pytest.mark.parametrize(
    ("actuator", "expected"),
    [
        ({"targets": TARGETS, "regoin": "x"}, "actuator.regoin: unknown key"),
        (
            {"targets": {**TARGETS, "llm": {"endpoint": "e", "inference_component": "i"}}},
            "actuator.targets.llm: set either endpoint (and variant) or inference_component",
        ),
        ({"targets": {**TARGETS, "llm": {}}}, "actuator.targets.llm: set either endpoint"),
        ({"targets": {"router": TARGETS["router"]}}, "no target for component 'llm'"),
        ({"targets": {**TARGETS, "rerank": {"endpoint": "r"}}}, "unknown component 'rerank'"),
        ({"targets": TARGETS, "max_attempts": 0}, "actuator.max_attempts: Input should be"),
    ],
)
def test_validate_names_the_bad_field(actuator: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_mapping(pipeline(**actuator))
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_a_valid_section_validates() -> None:
    config = validate_mapping(
        pipeline(targets=TARGETS, region=REGION, allow_other_autoscalers=True)
    )
    assert config.actuator is not None and config.actuator.type == "sagemaker"


# --------------------------------------------------------------------------------------------
# moto: endpoints, variants, Application Auto Scaling


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _moto_command(port: int) -> list[str]:
    script = Path(sys.executable).with_name("moto_server")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "moto.server"]
    return [*head, "-H", "127.0.0.1", "-p", str(port)]


@contextlib.contextmanager
def moto_process() -> Iterator[str]:
    """A moto server process on a free port of 127.0.0.1; yields its URL. Skips (or fails, with
    ELASTISCALE_REQUIRE_INTEGRATION) when it cannot be started."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        proc = subprocess.Popen(
            die_with_parent(_moto_command(port)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError as exc:
        _unavailable(f"cannot start moto_server: {exc}")
    try:
        deadline = time.monotonic() + 20.0
        while True:
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=1.0).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    _unavailable(f"moto_server did not come up on {url}")
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def reset_moto(url: str) -> str:
    """Empty every moto backend (`POST /moto-api/reset`)."""
    request = urllib.request.Request(url + "/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=5.0).close()
    return url


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    """One moto server process for this module."""
    with moto_process() as url:
        yield url


def _unavailable(reason: str) -> None:
    if REQUIRE_INTEGRATION:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def moto(moto_server: str) -> str:
    """The moto server, emptied before each test."""
    return reset_moto(moto_server)


def create_endpoint(url: str, name: str, instances: int = 1, variant: str = "AllTraffic") -> None:
    sagemaker = boto_client("sagemaker", url)
    sagemaker.create_model(
        ModelName=f"{name}-model", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": IMAGE}
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName=f"{name}-config",
        ProductionVariants=[
            {
                "VariantName": variant,
                "ModelName": f"{name}-model",
                "InitialInstanceCount": instances,
                "InstanceType": "ml.g4dn.xlarge",
            }
        ],
    )
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")


def variant_only_config() -> Config:
    raw = pipeline()
    del raw["pipeline"]["components"]["llm"]
    raw["pipeline"]["edges"] = []
    return validate_mapping(raw)


def moto_actuator(url: str, **options: Any) -> SageMakerActuator:
    targets = options.pop("targets", {"router": {"endpoint": "rag-router"}})
    return SageMakerActuator(
        variant_only_config(),
        {"region": REGION, "endpoint_url": url, "targets": targets, **options},
    )


@pytest.mark.integration
def test_moto_variant_read_and_scale(moto: str) -> None:
    create_endpoint(moto, "rag-router", instances=1)
    actuator = moto_actuator(moto)
    assert actuator.read(["router"])["router"] == ReplicaState(1, 1)
    result = actuator.scale("router", 3)
    assert result.ok, result.message
    variant = boto_client("sagemaker", moto).describe_endpoint(EndpointName="rag-router")[
        "ProductionVariants"
    ][0]
    assert variant["DesiredInstanceCount"] == 3
    assert actuator.read(["router"])["router"] == ReplicaState(3, 3)
    assert actuator.scale("router", 3).ok  # idempotent


@pytest.mark.integration
def test_moto_finishes_updates_at_once_so_no_start_up_is_measured(moto: str) -> None:
    """moto applies UpdateEndpointWeightsAndCapacities at once (no `Updating`, no
    VariantStatus, LastModifiedTime unchanged): there is no start-up to measure, and the
    actuator reports none rather than a zero."""
    create_endpoint(moto, "rag-router", instances=1)
    actuator = moto_actuator(moto, measure_startup=True)
    assert actuator.startups(["router"], now_s=0.0) == {"router": []}
    assert actuator.scale("router", 3).ok
    assert actuator.startups(["router"], now_s=15.0) == {"router": []}
    assert actuator.read(["router"])["router"] == ReplicaState(3, 3)


@pytest.mark.integration
def test_moto_missing_endpoint(moto: str) -> None:
    with pytest.raises(ActuatorError, match=r"targets\.router .*Could not find endpoint"):
        moto_actuator(moto)
    actuator = moto_actuator(moto, check_on_start=False)
    assert actuator.read(["router"]) == {}
    result = actuator.scale("router", 2)
    assert result.failure is Failure.NOT_FOUND and "rag-router" in result.message


def register(url: str, policy: bool = False, scheduled: bool = False) -> None:
    autoscaling = boto_client("application-autoscaling", url)
    target = {
        "ServiceNamespace": "sagemaker",
        "ResourceId": "endpoint/rag-router/variant/AllTraffic",
        "ScalableDimension": VARIANT_DIMENSION,
    }
    autoscaling.register_scalable_target(**target, MinCapacity=1, MaxCapacity=4)
    if policy:
        autoscaling.put_scaling_policy(
            PolicyName="invocations-70",
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": 70.0,
                "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
                },
            },
            **target,
        )
    if scheduled:
        autoscaling.put_scheduled_action(
            ScheduledActionName="morning",
            Schedule="cron(0 8 * * ? *)",
            ScalableTargetAction={"MinCapacity": 2},
            **target,
        )


@pytest.mark.integration
@pytest.mark.parametrize(
    ("policy", "scheduled", "refused"),
    [
        (False, False, None),  # a registered target with nothing driving it is fine
        (True, False, "TargetTrackingScaling policy 'invocations-70'"),
        (False, True, "scheduled action 'morning'"),
    ],
)
def test_moto_refuses_to_fight_application_auto_scaling(
    moto: str, policy: bool, scheduled: bool, refused: str | None
) -> None:
    create_endpoint(moto, "rag-router")
    register(moto, policy=policy, scheduled=scheduled)
    if refused is None:
        assert moto_actuator(moto).read(["router"])["router"] == ReplicaState(1, 1)
        return
    with pytest.raises(OtherAutoscalerError, match=refused) as info:
        moto_actuator(moto)
    assert "endpoint/rag-router/variant/AllTraffic" in str(info.value)


@pytest.mark.integration
def test_moto_allow_other_autoscalers_warns(moto: str, caplog: pytest.LogCaptureFixture) -> None:
    create_endpoint(moto, "rag-router")
    register(moto, policy=True)
    with caplog.at_level(logging.WARNING, logger="elastiscale.adapters.sagemaker"):
        actuator = moto_actuator(moto, allow_other_autoscalers=True)
    assert "invocations-70" in caplog.text
    assert actuator.scale("router", 2).ok


# --------------------------------------------------------------------------------------------
# The wire-level fake: inference components, Updating, faults


@pytest.fixture
def fake() -> Iterator[FakeSageMaker]:
    with FakeSageMaker(region=REGION) as server:
        server.add_endpoint("rag-router", {"AllTraffic": 1})
        server.add_inference_component("rag-llm-ic", endpoint="rag-llm", copies=1)
        yield server


def fake_actuator(fake: FakeSageMaker, **options: Any) -> SageMakerActuator:
    return SageMakerActuator(
        CONFIG, {"region": REGION, "endpoint_url": fake.url, "targets": TARGETS, **options}
    )


def copy_counts(fake: FakeSageMaker) -> list[int]:
    """CopyCount of every UpdateInferenceComponentRuntimeConfig the fake received."""
    return [
        body["DesiredRuntimeConfig"]["CopyCount"]
        for op, body in fake.calls
        if op == "UpdateInferenceComponentRuntimeConfig"
    ]


def test_inference_component_to_zero_and_back(fake: FakeSageMaker) -> None:
    actuator = fake_actuator(fake)
    assert actuator.read(["router", "llm"]) == {
        "router": ReplicaState(1, 1),
        "llm": ReplicaState(1, 1),
    }
    assert actuator.scale("llm", 0).ok
    held = actuator.scale("llm", 2)  # still Updating: wait, send nothing
    assert held.failure is Failure.IN_PROGRESS and "Updating" in held.message
    fake.finish_updates()
    assert actuator.read(["llm"])["llm"] == ReplicaState(0, 0)
    assert actuator.scale("llm", 2).ok
    assert actuator.read(["llm"])["llm"] == ReplicaState(2, 0)  # copies still starting
    fake.finish_updates()
    assert actuator.read(["llm"])["llm"] == ReplicaState(2, 2)
    assert copy_counts(fake) == [0, 2]


def test_setting_the_current_count_sends_nothing(fake: FakeSageMaker) -> None:
    actuator = fake_actuator(fake)
    before = len(fake.calls)
    assert actuator.scale("llm", 1).ok and actuator.scale("router", 1).ok
    assert [op for op, _ in fake.calls[before:]] == [
        "DescribeInferenceComponent",
        "DescribeEndpoint",
    ]


def test_endpoint_variant_waits_while_updating(fake: FakeSageMaker) -> None:
    fake.endpoints["rag-router"].status = "Updating"
    actuator = fake_actuator(fake)
    result = actuator.scale("router", 3)
    assert result.failure is Failure.IN_PROGRESS and "Updating" in result.message
    assert "UpdateEndpointWeightsAndCapacities" not in fake.operations()
    fake.finish_updates()
    assert actuator.scale("router", 3).ok
    update = [b for op, b in fake.calls if op == "UpdateEndpointWeightsAndCapacities"]
    assert update == [
        {
            "EndpointName": "rag-router",
            "DesiredWeightsAndCapacities": [
                {"VariantName": "AllTraffic", "DesiredInstanceCount": 3}
            ],
        }
    ]


@pytest.mark.parametrize(
    ("operation", "code", "status", "expected"),
    [
        ("UpdateInferenceComponentRuntimeConfig", "ThrottlingException", 400, Failure.THROTTLED),
        ("DescribeInferenceComponent", "ThrottlingException", 400, Failure.THROTTLED),
        ("UpdateInferenceComponentRuntimeConfig", "AccessDeniedException", 400, Failure.FORBIDDEN),
        ("UpdateInferenceComponentRuntimeConfig", "ResourceLimitExceeded", 400, Failure.INVALID),
        ("DescribeInferenceComponent", "InternalFailure", 500, Failure.UNAVAILABLE),
        ("UpdateInferenceComponentRuntimeConfig", "ServiceUnavailable", 503, Failure.UNAVAILABLE),
    ],
)
def test_faults_become_typed_failures(
    fake: FakeSageMaker, operation: str, code: str, status: int, expected: Failure
) -> None:
    actuator = fake_actuator(fake)
    fake.fail(operation, code, status=status)
    result = actuator.scale("llm", 3)
    assert result.failure is expected and code in result.message
    assert actuator.scale("llm", 3).ok  # the fault was one call; boto3 did not retry it
    assert copy_counts(fake) == ([3, 3] if operation.startswith("Update") else [3])


def test_slow_answer_is_unavailable_after_timeout(fake: FakeSageMaker) -> None:
    actuator = fake_actuator(fake, timeout_s=0.2)
    fake.slow("DescribeInferenceComponent", 1.0)
    started = time.monotonic()
    result = actuator.scale("llm", 2)
    assert result.failure is Failure.UNAVAILABLE
    assert time.monotonic() - started < 0.9  # one attempt, cut at the timeout
    fake.slow("DescribeInferenceComponent", 0.0)


def test_unreachable_sagemaker() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(ActuatorError, match=r"targets\.router"):
        SageMakerActuator(CONFIG, {"region": REGION, "endpoint_url": url, "targets": TARGETS})
    actuator = SageMakerActuator(
        CONFIG, {"region": REGION, "endpoint_url": url, "targets": TARGETS, "check_on_start": False}
    )
    with pytest.raises(ActuatorError, match="sagemaker"):
        actuator.read(["router", "llm"])
    assert actuator.scale("llm", 2).failure is Failure.UNAVAILABLE


def test_policy_on_an_inference_component_is_detected(fake: FakeSageMaker) -> None:
    fake.add_scaling_policy(
        "inference-component/rag-llm-ic", INFERENCE_COMPONENT_DIMENSION, "copies-per-invocation"
    )
    with pytest.raises(OtherAutoscalerError, match=r"targets\.llm .*copies-per-invocation"):
        fake_actuator(fake)


def test_the_fake_requires_a_signed_request(fake: FakeSageMaker) -> None:
    request = urllib.request.Request(
        fake.url,
        data=json.dumps({"EndpointName": "rag-router"}).encode(),
        headers={"X-Amz-Target": "SageMaker.DescribeEndpoint"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5.0)
    assert info.value.code == 403
    assert json.loads(info.value.read())["__type"] == "MissingAuthenticationTokenException"


# --------------------------------------------------------------------------------------------
# The engine on top: waiting out an update, backing off after throttling


class FixedPolicy:
    """Proposes fixed counts."""

    name = "fixed"

    def __init__(self, counts: Mapping[str, int]) -> None:
        self.counts = dict(counts)

    def propose(self, ctx: TickContext) -> dict[str, Proposal]:
        return {n: Proposal(self.name, r, "fixed") for n, r in self.counts.items()}


def constant_demand(components: Sequence[str], rps: float) -> SeriesMetricSource:
    import numpy as np

    times = np.array([0.0])
    series = {c: {"demand_rps": (times, np.array([rps]))} for c in components}
    return SeriesMetricSource(series)


def test_engine_waits_for_updating_then_scales(fake: FakeSageMaker) -> None:
    fake.inference_components["rag-llm-ic"].status = "Updating"
    engine = Engine(
        CONFIG,
        metrics=constant_demand(["router", "llm"], 10.0),
        actuator=fake_actuator(fake),
        policies=[FixedPolicy({"router": 1, "llm": 3})],
    )
    first = {r.component: r.outcome for r in engine.step(now_s=15.0)}
    assert first == {"router": "unchanged", "llm": "failed: in progress"}
    fake.finish_updates()
    second = {r.component: r.outcome for r in engine.step(now_s=30.0)}
    assert second["llm"] == "scaled"
    assert copy_counts(fake) == [3]


def test_engine_backs_off_after_throttling(fake: FakeSageMaker) -> None:
    engine = Engine(
        CONFIG,
        metrics=constant_demand(["router", "llm"], 10.0),
        actuator=fake_actuator(fake),
        policies=[FixedPolicy({"router": 1, "llm": 4})],
    )
    fake.fail("UpdateInferenceComponentRuntimeConfig", "ThrottlingException")
    assert engine.step(now_s=15.0)[1].outcome == "failed: throttled"
    calls = len(fake.calls)
    assert engine.step(now_s=16.0)[1].outcome.startswith("held: backing off after throttled")
    # Only the engine's read of both components: no attempt to scale.
    assert fake.operations()[calls:] == ["DescribeEndpoint", "DescribeInferenceComponent"]
    # The first backoff is one interval (15 s) times a jitter in [0.5, 1): over by t = 30 s.
    assert engine.step(now_s=30.0)[1].outcome == "scaled"
    assert copy_counts(fake) == [4, 4]


# --------------------------------------------------------------------------------------------
# Invariant: one change at a time


@pytest.fixture(scope="module")
def shared_fake() -> Iterator[tuple[FakeSageMaker, SageMakerActuator]]:
    """One fake and one actuator for the many examples of the invariant below (building boto3
    clients costs more than the whole example)."""
    with FakeSageMaker(region=REGION) as server:
        server.add_endpoint("rag-router", {"AllTraffic": 1})
        server.add_inference_component("rag-llm-ic", endpoint="rag-llm", copies=1)
        config = {"region": REGION, "endpoint_url": server.url, "targets": TARGETS}
        with pytest.MonkeyPatch.context() as env:
            env.setenv("AWS_ACCESS_KEY_ID", "testing")
            env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            yield server, SageMakerActuator(CONFIG, config)


@settings(max_examples=30, deadline=None)
@given(
    steps=st.lists(
        st.one_of(st.integers(min_value=0, max_value=8), st.just("finish")),
        min_size=1,
        max_size=12,
    )
)
def test_never_two_changes_in_flight(
    shared_fake: tuple[FakeSageMaker, SageMakerActuator], steps: list[int | str]
) -> None:
    """Whatever counts are asked for and whenever updates complete, no update is sent while
    another is in flight, and the last accepted count is what SageMaker ends with."""
    fake, actuator = shared_fake
    fake.add_inference_component("rag-llm-ic", endpoint="rag-llm", copies=1)
    fake.calls.clear()
    actuator.guard = InProgressGuard(actuator.params.settle_timeout_s)
    accepted = 1
    sent_since_finish = 0
    for step in steps:
        if step == "finish":
            fake.finish_updates()
            sent_since_finish = 0
            continue
        assert isinstance(step, int)
        before = len(copy_counts(fake))
        result = actuator.scale("llm", step)
        sent_since_finish += len(copy_counts(fake)) - before
        assert sent_since_finish <= 1, "a second change was sent while one was in progress"
        if result.ok:
            accepted = step
        else:
            assert result.failure is Failure.IN_PROGRESS, result.message
    fake.finish_updates()
    assert actuator.read(["llm"])["llm"] == ReplicaState(accepted, accepted)
