"""Scale Amazon SageMaker endpoints through boto3 (the `sagemaker` actuator).

Two kinds of target, one per pipeline component:

- an endpoint's production variant (`{endpoint: NAME, variant: AllTraffic}`): its instance
  count, read from `DescribeEndpoint` and set with `UpdateEndpointWeightsAndCapacities`
  (`DesiredInstanceCount`);
- an inference component (`{inference_component: NAME}`): its copy count, read from
  `DescribeInferenceComponent` and set with `UpdateInferenceComponentRuntimeConfig`
  (`DesiredRuntimeConfig.CopyCount`), down to zero and back.

    actuator:
      type: sagemaker
      region: us-east-1
      targets:
        router: {endpoint: rag-router, variant: AllTraffic}
        llm: {inference_component: rag-llm-ic}

Waiting: an endpoint or inference component that is `Creating` or `Updating` takes no change;
`scale` answers IN_PROGRESS and the engine asks again at its next tick. After a successful write
further changes to that target are held until SageMaker shows it applied (in service, current
count = desired) or `settle_timeout_s` has passed.

Throttling (`ThrottlingException` and kin) is THROTTLED, which the engine retries after a capped,
jittered backoff; boto3's own retries are off by default (`max_attempts: 1`) so that a tick never
hangs in a retry loop the engine cannot see.

Not fighting Application Auto Scaling: at construction the actuator looks for scaling policies
and scheduled actions on each target (resource `endpoint/E/variant/V`, dimension
`sagemaker:variant:DesiredInstanceCount`; or `inference-component/I`,
`sagemaker:inference-component:DesiredCopyCount`) and refuses to start when there are any,
unless `allow_other_autoscalers: true`.

boto3 is imported only when an actuator is built (`pip install 'elastiscale[sagemaker]'`), so
`elastiscale validate` checks this section without it.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field, NonNegativeFloat, model_validator

from elastiscale.adapters.base import ActuationResult, Failure
from elastiscale.adapters.contract import (
    ActuatorOptions,
    InProgressGuard,
    OtherAutoscalerError,
    TargetSpec,
)
from elastiscale.adapters.sagemaker.calls import SageMakerCallError, classify
from elastiscale.errors import ActuatorError
from elastiscale.learning import ReadinessTracker
from elastiscale.observations import ReplicaState

if TYPE_CHECKING:
    from elastiscale.clock import Clock
    from elastiscale.config import Config

log = logging.getLogger("elastiscale.adapters.sagemaker")

VARIANT_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
INFERENCE_COMPONENT_DIMENSION = "sagemaker:inference-component:DesiredCopyCount"

#: Statuses in which SageMaker is still applying an earlier change.
BUSY_STATUSES = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack"})
#: Statuses in which the target will take no change at all.
BROKEN_STATUSES = frozenset({"Failed", "OutOfService", "UpdateRollbackFailed"})


class SageMakerTarget(TargetSpec):
    """An endpoint variant (`endpoint`, `variant`) or an inference component."""

    endpoint: str | None = Field(None, min_length=1)
    variant: str | None = Field(None, min_length=1)
    inference_component: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_kind(self) -> SageMakerTarget:
        if (self.endpoint is None) == (self.inference_component is None):
            raise ValueError("set either endpoint (and variant) or inference_component")
        if self.inference_component is not None and self.variant is not None:
            raise ValueError("variant goes with endpoint, not with inference_component")
        return self

    @property
    def variant_name(self) -> str:
        return self.variant or "AllTraffic"

    @property
    def resource_id(self) -> str:
        """The Application Auto Scaling resource id of this target."""
        if self.inference_component is not None:
            return f"inference-component/{self.inference_component}"
        return f"endpoint/{self.endpoint}/variant/{self.variant_name}"

    @property
    def scalable_dimension(self) -> str:
        if self.inference_component is not None:
            return INFERENCE_COMPONENT_DIMENSION
        return VARIANT_DIMENSION

    def __str__(self) -> str:
        return self.resource_id


class SageMakerParams(ActuatorOptions[SageMakerTarget]):
    """The `actuator:` section of a config with `type: sagemaker`."""

    region: str | None = Field(None, description="AWS region (default: boto3's configuration)")
    profile: str | None = Field(None, description="AWS credentials profile")
    endpoint_url: str | None = Field(None, description="SageMaker API URL (a VPC endpoint...)")
    autoscaling_endpoint_url: str | None = Field(
        None, description="Application Auto Scaling API URL (default: endpoint_url)"
    )
    max_attempts: int = Field(
        1, ge=1, le=10, description="boto3 attempts per call, the first included"
    )
    settle_timeout_s: NonNegativeFloat = Field(
        1800.0, description="longest hold of further changes after a write that does not settle"
    )
    check_on_start: bool = Field(
        True, description="check at construction that targets exist and no policy drives them"
    )
    measure_startup: bool = Field(
        False, description="report start-ups: an update's start time to its count rising"
    )


# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TargetState:
    """What SageMaker shows of one target."""

    status: str
    desired: int
    current: int
    #: When the change in progress began (None: settled, or not said): a variant's `Updating`
    #: VariantStatus StartTime, else LastModifiedTime while the target is busy.
    changed_s: float | None = None

    @property
    def settled(self) -> bool:
        return self.status == "InService" and self.current == self.desired


class SageMakerActuator:
    """Reads and sets instance counts of endpoint variants and copy counts of inference
    components."""

    Params = SageMakerParams

    def __init__(
        self,
        config: Config,
        options: SageMakerParams | Mapping[str, Any],
        clock: Clock | None = None,
    ) -> None:
        params = SageMakerParams.for_config(options, config)
        self.params = params
        self.sagemaker, self.autoscaling = _clients(params)
        self.guard = InProgressGuard(params.settle_timeout_s, clock)
        self._trackers: dict[str, ReadinessTracker] = {}
        if params.check_on_start:
            self.check()

    # ----------------------------------------------------------------------------------------

    def check(self) -> None:
        """Raise `ActuatorError` naming targets that cannot be read, and `OtherAutoscalerError`
        when an Application Auto Scaling policy or scheduled action drives one (a warning
        instead with `allow_other_autoscalers: true`)."""
        problems: list[str] = []
        others: list[str] = []
        for component, target in self.params.targets.items():
            where = f"actuator.targets.{component} ({target})"
            try:
                self._describe(target)
                others.extend(f"{where}: {d}" for d in self._autoscalers(target))
            except SageMakerCallError as exc:
                problems.append(f"{where}: {exc}")
        if problems:
            raise ActuatorError("; ".join(problems))
        if others and not self.params.allow_other_autoscalers:
            raise OtherAutoscalerError(
                "; ".join(others) + " (remove them, or set allow_other_autoscalers: true)"
            )
        for line in others:
            log.warning("%s; scaling it anyway (allow_other_autoscalers)", line)

    def _autoscalers(self, target: SageMakerTarget) -> list[str]:
        """Application Auto Scaling policies and scheduled actions on `target`, described."""
        query = {
            "ServiceNamespace": "sagemaker",
            "ResourceId": target.resource_id,
            "ScalableDimension": target.scalable_dimension,
        }
        found: list[str] = []
        try:
            policies = self.autoscaling.describe_scaling_policies(**query)
            actions = self.autoscaling.describe_scheduled_actions(**query)
        except Exception as exc:  # botocore raises many types; all are classified
            raise classify(exc, "Application Auto Scaling") from None
        for policy in policies.get("ScalingPolicies", []):
            kind = policy.get("PolicyType", "scaling")
            found.append(f"Application Auto Scaling {kind} policy {policy.get('PolicyName')!r}")
        for action in actions.get("ScheduledActions", []):
            found.append(
                f"Application Auto Scaling scheduled action {action.get('ScheduledActionName')!r}"
            )
        return found

    # ----------------------------------------------------------------------------------------

    def _describe(
        self, target: SageMakerTarget, endpoints: dict[str, Any] | None = None
    ) -> TargetState:
        """Status, desired and current count of one target; `endpoints` caches
        `DescribeEndpoint` answers within one `read`. An answer of an unexpected shape (a
        count that is not a number, a list where a mapping belongs) is INVALID, named."""
        try:
            state = self._describe_answer(target, endpoints)
        except (AttributeError, KeyError, TypeError, ValueError, OverflowError) as exc:
            message = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
            raise SageMakerCallError(
                Failure.INVALID, f"{target}: unexpected answer ({message})"
            ) from None
        if state.desired < 0 or state.current < 0:
            raise SageMakerCallError(
                Failure.INVALID,
                f"{target}: negative count in the answer ({state.desired}, {state.current})",
            )
        return state

    def _describe_answer(
        self, target: SageMakerTarget, endpoints: dict[str, Any] | None
    ) -> TargetState:
        if target.inference_component is not None:
            try:
                got = self.sagemaker.describe_inference_component(
                    InferenceComponentName=target.inference_component
                )
            except Exception as exc:
                what = f"DescribeInferenceComponent {target.inference_component}"
                raise classify(exc, what) from None
            runtime = got.get("RuntimeConfig") or {}
            desired = runtime.get("DesiredCopyCount")
            if desired is None:
                raise SageMakerCallError(
                    Failure.INVALID, f"{target}: no copy count reported (RuntimeConfig missing)"
                )
            status = str(got.get("InferenceComponentStatus", "Unknown"))
            return TargetState(
                status=status,
                desired=int(desired),
                current=int(runtime.get("CurrentCopyCount") or 0),
                changed_s=_stamp(got.get("LastModifiedTime")) if status in BUSY_STATUSES else None,
            )
        assert target.endpoint is not None
        endpoint = None if endpoints is None else endpoints.get(target.endpoint)
        if endpoint is None:
            try:
                endpoint = self.sagemaker.describe_endpoint(EndpointName=target.endpoint)
            except Exception as exc:
                raise classify(exc, f"DescribeEndpoint {target.endpoint}") from None
            if endpoints is not None:
                endpoints[target.endpoint] = endpoint
        for variant in endpoint.get("ProductionVariants") or []:
            if variant.get("VariantName") == target.variant_name:
                desired = variant.get("DesiredInstanceCount")
                if desired is None:
                    raise SageMakerCallError(
                        Failure.INVALID,
                        f"{target}: no instance count (a serverless variant cannot be scaled)",
                    )
                status = str(endpoint.get("EndpointStatus", "Unknown"))
                changes = [s.get("StartTime") for s in variant.get("VariantStatus") or []
                           if s.get("Status") == "Updating"]  # fmt: skip
                busy = endpoint.get("LastModifiedTime") if status in BUSY_STATUSES else None
                return TargetState(
                    status=status,
                    desired=int(desired),
                    current=int(variant.get("CurrentInstanceCount") or 0),
                    changed_s=_stamp(changes[0] if changes else busy),
                )
        names = ", ".join(
            str(v.get("VariantName")) for v in endpoint.get("ProductionVariants") or []
        )
        raise SageMakerCallError(
            Failure.NOT_FOUND,
            f"endpoint {target.endpoint!r} has no variant {target.variant_name!r} (has: {names})",
        )

    def read(self, components: Sequence[str]) -> dict[str, ReplicaState]:
        """Desired and current counts of each component that could be read. A component whose
        call failed is left out (and logged); `ActuatorError` when no call got through because
        SageMaker is unreachable."""
        out: dict[str, ReplicaState] = {}
        endpoints: dict[str, Any] = {}
        unreachable: list[str] = []
        for name in components:
            target = self.params.targets.get(name)
            if target is None:
                continue
            try:
                state = self._describe(target, endpoints)
            except SageMakerCallError as exc:
                log.warning("sagemaker: cannot read %s: %s", name, exc)
                if exc.failure is Failure.UNAVAILABLE:
                    unreachable.append(str(exc))
                continue
            out[name] = ReplicaState(desired=state.desired, ready=state.current)
        if unreachable and not out:
            raise ActuatorError(f"sagemaker: {unreachable[0]}")
        return out

    def startups(
        self, components: Sequence[str], now_s: float | None = None
    ) -> dict[str, list[float]]:
        """Start-ups completed since the last call, looked at `now_s`, with `measure_startup:
        true`: from an update's start (exact, SageMaker's time) to the look that saw the
        count risen (within half a look; `learning.ReadinessTracker`)."""
        if not self.params.measure_startup or now_s is None:
            return {}
        out: dict[str, list[float]] = {}
        for name in (n for n in components if n in self.params.targets):
            try:
                state = self._describe(self.params.targets[name])
            except SageMakerCallError as exc:
                log.debug("sagemaker: start-ups of %s: %s", name, exc)
                continue
            tracker = self._trackers.setdefault(name, ReadinessTracker())
            out[name] = tracker.look(now_s, state.desired, state.current, state.changed_s)
        return out

    def scale(self, component: str, replicas: int) -> ActuationResult:
        """Set the component's instance or copy count (idempotent; waits out updates)."""
        target = self.params.targets.get(component)
        if target is None:
            return ActuationResult.failed(
                component, replicas, Failure.NOT_FOUND, "no target for this component"
            )
        if replicas < 0:
            return ActuationResult.failed(
                component, replicas, Failure.INVALID, f"replicas = {replicas} < 0"
            )
        try:
            state = self._describe(target)
            if state.desired == replicas:
                return ActuationResult.success(component, replicas)
            if state.status in BUSY_STATUSES:
                return ActuationResult.failed(
                    component, replicas, Failure.IN_PROGRESS, f"{target} is {state.status}"
                )
            if state.status in BROKEN_STATUSES or state.status == "Deleting":
                failure = Failure.NOT_FOUND if state.status == "Deleting" else Failure.UNAVAILABLE
                return ActuationResult.failed(
                    component, replicas, failure, f"{target} is {state.status}"
                )
            waiting = self.guard.pending(str(target), settled=state.settled)
            if waiting is not None:
                return ActuationResult.failed(
                    component, replicas, Failure.IN_PROGRESS, f"{target}: {waiting}"
                )
            self._write(target, replicas)
        except SageMakerCallError as exc:
            return ActuationResult.failed(component, replicas, exc.failure, str(exc))
        self.guard.wrote(str(target), replicas)
        log.info("scaled %s (%s) from %d to %d", component, target, state.desired, replicas)
        return ActuationResult.success(component, replicas)

    def _write(self, target: SageMakerTarget, replicas: int) -> None:
        try:
            if target.inference_component is not None:
                self.sagemaker.update_inference_component_runtime_config(
                    InferenceComponentName=target.inference_component,
                    DesiredRuntimeConfig={"CopyCount": replicas},
                )
            else:
                self.sagemaker.update_endpoint_weights_and_capacities(
                    EndpointName=target.endpoint,
                    DesiredWeightsAndCapacities=[
                        {"VariantName": target.variant_name, "DesiredInstanceCount": replicas}
                    ],
                )
        except Exception as exc:
            raise classify(exc, f"update {target}") from None


#: botocore's loader of service models, shared by every actuator of this process: it parses the
#: SageMaker model (megabytes of JSON) once instead of at every construction.
_LOADER: Any = None


def _clients(params: SageMakerParams) -> tuple[Any, Any]:
    """boto3 clients for SageMaker and Application Auto Scaling, with the configured endpoint
    URLs, timeouts and retry count."""
    global _LOADER
    try:
        import boto3
        import botocore.session
        from botocore.config import Config as BotoConfig
        from botocore.exceptions import BotoCoreError
        from botocore.loaders import create_loader
    except ImportError:
        raise ActuatorError(
            "actuator.type: sagemaker needs boto3 (pip install 'elastiscale[sagemaker]')"
        ) from None
    boto_config = BotoConfig(
        connect_timeout=params.timeout_s,
        read_timeout=params.timeout_s,
        retries={"total_max_attempts": params.max_attempts, "mode": "standard"},
    )
    if _LOADER is None:
        _LOADER = create_loader()
    try:
        core = botocore.session.get_session()
        core.register_component("data_loader", _LOADER)
        session = boto3.session.Session(
            botocore_session=core, profile_name=params.profile, region_name=params.region
        )
        sagemaker = session.client(
            "sagemaker", endpoint_url=params.endpoint_url, config=boto_config
        )
        autoscaling = session.client(
            "application-autoscaling",
            endpoint_url=params.autoscaling_endpoint_url or params.endpoint_url,
            config=boto_config,
        )
    except BotoCoreError as exc:
        raise ActuatorError(f"actuator: cannot set up boto3 clients: {exc}") from None
    return sagemaker, autoscaling


def _stamp(value: Any) -> float | None:
    """A time in an answer (boto3 gives datetimes) as Unix seconds; None when absent."""
    if isinstance(value, _dt.datetime):
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
