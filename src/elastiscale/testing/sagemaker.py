"""A wire-level fake of the few SageMaker and Application Auto Scaling calls elastiscale makes.

moto covers endpoints, variants and Application Auto Scaling, but has no inference components
and finishes every update at once, so it never shows `Updating`. This fake fills both gaps: a
real HTTP server on 127.0.0.1 speaking the AWS JSON 1.1 protocol (`POST /`, the operation in
the `X-Amz-Target` header, JSON bodies, errors as `{"__type": ..., "message": ...}`), so tests
drive it through real boto3 and exercise botocore's serialization, signing and error parsing.

Operations:
- SageMaker: DescribeEndpoint, UpdateEndpointWeightsAndCapacities, DescribeInferenceComponent,
  UpdateInferenceComponentRuntimeConfig;
- Application Auto Scaling: DescribeScalingPolicies, DescribeScheduledActions.

An accepted update leaves its target `Updating` (desired count set, current unchanged, the
update's time from `clock` as LastModifiedTime and, for a variant, as the StartTime of its
`Updating` VariantStatus) until `finish_updates()`; while it is, a further update is refused
with a ValidationException about the update in progress, as SageMaker does. With
`finish_at_once=True` updates complete at once.
Faults are injected per operation (`fail`: an error code and status for the next N calls;
`slow`: added latency), and every call is recorded in `calls`.

    with FakeSageMaker() as fake:
        fake.add_inference_component("llm-ic", endpoint="rag", copies=1)
        client = boto3.client("sagemaker", endpoint_url=fake.url, region_name=fake.region, ...)
        client.update_inference_component_runtime_config(
            InferenceComponentName="llm-ic", DesiredRuntimeConfig={"CopyCount": 0})
        assert fake.inference_components["llm-ic"].desired == 0

Accepted sockets disable Nagle's algorithm, so a request costs well under a millisecond rather
than a delayed-ACK wait of about 40 ms.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from elastiscale.testing.server import FakeServer, LocalServer, QuietHandler

JSON = dict[str, Any]

#: The statuses of endpoints and inference components that take an update.
_ACCEPTING = "InService"


class FakeError(Exception):
    """An AWS error the fake answers with: HTTP `status`, `__type` = `code`."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass
class FakeVariant:
    name: str
    desired: int
    current: int
    weight: float = 1.0


@dataclass
class FakeEndpoint:
    name: str
    variants: dict[str, FakeVariant]
    status: str = "InService"
    created_s: float = field(default_factory=time.time)
    modified_s: float = field(default_factory=time.time)


@dataclass
class FakeInferenceComponent:
    name: str
    endpoint: str
    variant: str
    desired: int
    current: int
    status: str = "InService"
    created_s: float = field(default_factory=time.time)
    modified_s: float = field(default_factory=time.time)


@dataclass
class _Fault:
    error: FakeError
    remaining: int


class FakeSageMaker(FakeServer):
    """The fake's state and HTTP server. Thread-safe; use as a context manager or call
    `start()` and `stop()`."""

    def __init__(
        self,
        region: str = "us-east-1",
        account: str = "123456789012",
        finish_at_once: bool = False,
        require_signature: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock  # when an update is accepted (LastModifiedTime, StartTime)
        self.region = region
        self.account = account
        self.finish_at_once = finish_at_once
        self.require_signature = require_signature
        self.endpoints: dict[str, FakeEndpoint] = {}
        self.inference_components: dict[str, FakeInferenceComponent] = {}
        #: (resource id, scalable dimension) -> policy names / scheduled action names
        self.scaling_policies: dict[tuple[str, str], list[str]] = {}
        self.scheduled_actions: dict[tuple[str, str], list[str]] = {}
        #: every call: (operation, request body)
        self.calls: list[tuple[str, JSON]] = []
        self._faults: dict[str, deque[_Fault]] = {}
        self._delays_s: dict[str, float] = {}
        self._lock = threading.RLock()

    # ----------------------------------------------------------------------------------------
    # Set-up and inspection

    def add_endpoint(
        self, name: str, variants: dict[str, int] | None = None, status: str = "InService"
    ) -> FakeEndpoint:
        """An endpoint with variants `{name: instance count}` (default one `AllTraffic` of 1)."""
        counts = {"AllTraffic": 1} if variants is None else variants
        endpoint = FakeEndpoint(
            name,
            {v: FakeVariant(v, desired=n, current=n) for v, n in counts.items()},
            status=status,
        )
        with self._lock:
            self.endpoints[name] = endpoint
        return endpoint

    def add_inference_component(
        self,
        name: str,
        endpoint: str,
        copies: int = 1,
        variant: str = "AllTraffic",
        status: str = "InService",
    ) -> FakeInferenceComponent:
        """An inference component with `copies` copies (its endpoint is added if absent)."""
        with self._lock:
            if endpoint not in self.endpoints:
                self.add_endpoint(endpoint, {variant: 1})
            component = FakeInferenceComponent(
                name, endpoint, variant, desired=copies, current=copies, status=status
            )
            self.inference_components[name] = component
        return component

    def add_scaling_policy(self, resource_id: str, dimension: str, name: str) -> None:
        with self._lock:
            self.scaling_policies.setdefault((resource_id, dimension), []).append(name)

    def add_scheduled_action(self, resource_id: str, dimension: str, name: str) -> None:
        with self._lock:
            self.scheduled_actions.setdefault((resource_id, dimension), []).append(name)

    def finish_updates(self) -> None:
        """Complete every update in flight: current = desired, status InService."""
        with self._lock:
            for endpoint in self.endpoints.values():
                if endpoint.status == "Updating":
                    endpoint.status = "InService"
                    for variant in endpoint.variants.values():
                        variant.current = variant.desired
            for component in self.inference_components.values():
                if component.status == "Updating":
                    component.status = "InService"
                    component.current = component.desired

    def fail(
        self, operation: str, code: str, status: int = 400, times: int = 1, message: str = ""
    ) -> None:
        """Answer the next `times` calls of `operation` with error `code` (HTTP `status`)."""
        error = FakeError(code, message or f"injected {code}", status)
        with self._lock:
            self._faults.setdefault(operation, deque()).append(_Fault(error, times))

    def slow(self, operation: str, delay_s: float) -> None:
        """Delay every answer to `operation` by `delay_s` seconds (0 to stop)."""
        with self._lock:
            self._delays_s[operation] = delay_s

    def operations(self) -> list[str]:
        """The operations called so far, in order."""
        with self._lock:
            return [op for op, _ in self.calls]

    # ----------------------------------------------------------------------------------------
    # Server

    def _make_server(self) -> _Server:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        return server

    # ----------------------------------------------------------------------------------------
    # Dispatch

    def handle(self, target: str, body: JSON) -> JSON:
        """Answer one call; raises `FakeError` for an AWS error answer."""
        service, _, operation = target.partition(".")
        with self._lock:
            self.calls.append((operation, body))
            delay_s = self._delays_s.get(operation, 0.0)
            fault: _Fault | None = None
            faults = self._faults.get(operation)
            if faults:
                fault = faults[0]
                fault.remaining -= 1
                if fault.remaining <= 0:
                    faults.popleft()
        if delay_s > 0:
            time.sleep(delay_s)
        if fault is not None:
            raise fault.error
        handlers = _SAGEMAKER if service == "SageMaker" else _AUTOSCALING
        if service not in ("SageMaker", "AnyScaleFrontendService") or operation not in handlers:
            raise FakeError("UnknownOperationException", f"unknown operation {target!r}")
        with self._lock:
            return handlers[operation](self, body)

    def _arn(self, kind: str, name: str) -> str:
        return f"arn:aws:sagemaker:{self.region}:{self.account}:{kind}/{name.lower()}"

    def _endpoint(self, name: str) -> FakeEndpoint:
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            arn = self._arn("endpoint", name)
            raise FakeError("ValidationException", f'Could not find endpoint "{arn}".')
        return endpoint

    def _component(self, name: str) -> FakeInferenceComponent:
        component = self.inference_components.get(name)
        if component is None:
            arn = self._arn("inference-component", name)
            raise FakeError("ValidationException", f'Could not find inference component "{arn}".')
        return component

    # SageMaker ----------------------------------------------------------------------------

    def _describe_endpoint(self, body: JSON) -> JSON:
        endpoint = self._endpoint(_required(body, "EndpointName"))
        return {
            "EndpointName": endpoint.name,
            "EndpointArn": self._arn("endpoint", endpoint.name),
            "EndpointConfigName": f"{endpoint.name}-config",
            "ProductionVariants": [
                {
                    "VariantName": v.name,
                    "CurrentWeight": v.weight,
                    "DesiredWeight": v.weight,
                    "CurrentInstanceCount": v.current,
                    "DesiredInstanceCount": v.desired,
                    # As SageMaker says it while a variant is being updated.
                    **(
                        {
                            "VariantStatus": [
                                {"Status": "Updating", "StartTime": endpoint.modified_s}
                            ]
                        }
                        if endpoint.status == "Updating" and v.current != v.desired
                        else {}
                    ),
                }
                for v in endpoint.variants.values()
            ],
            "EndpointStatus": endpoint.status,
            "CreationTime": endpoint.created_s,
            "LastModifiedTime": endpoint.modified_s,
        }

    def _update_endpoint(self, body: JSON) -> JSON:
        endpoint = self._endpoint(_required(body, "EndpointName"))
        if endpoint.status != _ACCEPTING:
            arn = self._arn("endpoint", endpoint.name)
            raise FakeError("ValidationException", f'Cannot update in-progress endpoint "{arn}".')
        changes = body.get("DesiredWeightsAndCapacities") or []
        for change in changes:
            name = change.get("VariantName")
            if name not in endpoint.variants:
                raise FakeError(
                    "ValidationException",
                    f'The variant name(s) "{name}" is/are not present within endpoint '
                    f'configuration "{endpoint.name}-config".',
                )
        for change in changes:
            variant = endpoint.variants[change["VariantName"]]
            if change.get("DesiredInstanceCount") is not None:
                variant.desired = int(change["DesiredInstanceCount"])
            if change.get("DesiredWeight") is not None:
                variant.weight = float(change["DesiredWeight"])
        endpoint.modified_s = self.clock()
        endpoint.status = "Updating"
        if self.finish_at_once:
            self.finish_updates()
        return {"EndpointArn": self._arn("endpoint", endpoint.name)}

    def _describe_component(self, body: JSON) -> JSON:
        component = self._component(_required(body, "InferenceComponentName"))
        return {
            "InferenceComponentName": component.name,
            "InferenceComponentArn": self._arn("inference-component", component.name),
            "EndpointName": component.endpoint,
            "EndpointArn": self._arn("endpoint", component.endpoint),
            "VariantName": component.variant,
            "RuntimeConfig": {
                "DesiredCopyCount": component.desired,
                "CurrentCopyCount": component.current,
            },
            "InferenceComponentStatus": component.status,
            "CreationTime": component.created_s,
            "LastModifiedTime": component.modified_s,
        }

    def _update_component(self, body: JSON) -> JSON:
        component = self._component(_required(body, "InferenceComponentName"))
        copies = (body.get("DesiredRuntimeConfig") or {}).get("CopyCount")
        if not isinstance(copies, int) or copies < 0:
            raise FakeError("ValidationException", f"CopyCount = {copies!r} is not an integer >= 0")
        if component.status != _ACCEPTING:
            raise FakeError(
                "ValidationException",
                f"Inference component {component.name} has an update in progress "
                f"(status {component.status}).",
            )
        component.desired = copies
        component.modified_s = self.clock()
        component.status = "Updating"
        if self.finish_at_once:
            self.finish_updates()
        return {"InferenceComponentArn": self._arn("inference-component", component.name)}

    # Application Auto Scaling ---------------------------------------------------------------

    def _describe_policies(self, body: JSON) -> JSON:
        _namespace(body)
        policies = []
        for (resource, dimension), names in self.scaling_policies.items():
            if _matches(body, resource, dimension):
                policies += [
                    {
                        "PolicyName": name,
                        "PolicyARN": f"arn:aws:autoscaling:{self.region}:{self.account}:"
                        f"scalingPolicy:{resource}:policyName/{name}",
                        "ServiceNamespace": "sagemaker",
                        "ResourceId": resource,
                        "ScalableDimension": dimension,
                        "PolicyType": "TargetTrackingScaling",
                        "CreationTime": time.time(),
                    }
                    for name in names
                ]
        return {"ScalingPolicies": policies}

    def _describe_actions(self, body: JSON) -> JSON:
        _namespace(body)
        actions = []
        for (resource, dimension), names in self.scheduled_actions.items():
            if _matches(body, resource, dimension):
                actions += [
                    {
                        "ScheduledActionName": name,
                        "ScheduledActionARN": f"arn:aws:autoscaling:{self.region}:"
                        f"{self.account}:scheduledAction:{resource}:scheduledActionName/{name}",
                        "ServiceNamespace": "sagemaker",
                        "Schedule": "cron(0 8 * * ? *)",
                        "ResourceId": resource,
                        "ScalableDimension": dimension,
                        "CreationTime": time.time(),
                    }
                    for name in names
                ]
        return {"ScheduledActions": actions}


def _required(body: JSON, key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise FakeError("ValidationException", f"1 validation error detected: {key} is required")
    return value


def _namespace(body: JSON) -> None:
    if body.get("ServiceNamespace") != "sagemaker":
        raise FakeError(
            "ValidationException",
            f"this fake serves ServiceNamespace sagemaker only, got "
            f"{body.get('ServiceNamespace')!r}",
        )


def _matches(body: JSON, resource: str, dimension: str) -> bool:
    wanted = body.get("ResourceId")
    if wanted is None and body.get("ResourceIds"):
        return resource in body["ResourceIds"]
    if wanted is not None and wanted != resource:
        return False
    return body.get("ScalableDimension") in (None, dimension)


_SAGEMAKER: dict[str, Callable[[FakeSageMaker, JSON], JSON]] = {
    "DescribeEndpoint": FakeSageMaker._describe_endpoint,
    "UpdateEndpointWeightsAndCapacities": FakeSageMaker._update_endpoint,
    "DescribeInferenceComponent": FakeSageMaker._describe_component,
    "UpdateInferenceComponentRuntimeConfig": FakeSageMaker._update_component,
}
_AUTOSCALING: dict[str, Callable[[FakeSageMaker, JSON], JSON]] = {
    "DescribeScalingPolicies": FakeSageMaker._describe_policies,
    "DescribeScheduledActions": FakeSageMaker._describe_actions,
}


class _Server(LocalServer):
    fake: FakeSageMaker


class _Handler(QuietHandler):
    server: _Server

    def _serve(self, method: str) -> None:
        if method != "POST":
            super()._serve(method)
            return
        raw = self.read_body()
        fake = self.server.fake
        try:
            if fake.require_signature and not self.headers.get("Authorization", "").startswith(
                "AWS4-HMAC-SHA256"
            ):
                raise FakeError(
                    "MissingAuthenticationTokenException", "Missing Authentication Token", 403
                )
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                raise FakeError("SerializationException", "body is not JSON") from None
            answer = fake.handle(self.headers.get("X-Amz-Target", ""), body)
            self._send(200, answer)
        except FakeError as exc:
            self._send(exc.status, {"__type": exc.code, "message": exc.message})

    def _send(self, status: int, payload: JSON) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", f"fake-{threading.get_ident()}-{time.time_ns()}")
        self.end_headers()
        self.wfile.write(data)
