"""The four calls of KEDA's `externalscaler.ExternalScaler`, answered from the board.

A ScaledObject trigger names what it scales in its metadata:

    triggers:
      - type: external                    # or external-push (StreamIsActive)
        metadata:
          scalerAddress: elastiscale-keda.elastiscale.svc:9465
          component: llm                  # required: a component of the pipeline
          pipeline: support-agent         # optional: refused when it is not this daemon's
          targetSize: "1"                 # optional: the per-replica target (default 1)

- `GetMetricSpec`: one metric, `elastiscale-<component>`, with target `targetSize`.
- `GetMetrics`: desired replicas x `targetSize`. KEDA's HPA treats it as an AverageValue
  target, desired = ceil(value / target) = elastiscale's count exactly (worked example: 7
  replicas, target 1 -> value 7 -> 7 replicas; target 0.5 -> value 3.5 -> ceil(3.5 / 0.5) = 7).
- `IsActive` / `StreamIsActive`: false only when elastiscale decided zero replicas, so KEDA
  scales to zero (or `idleReplicaCount`) exactly when elastiscale does.

Before the first decision for a component, `GetMetrics` fails with UNAVAILABLE (KEDA then
applies the ScaledObject's `fallback`; the HPA does not scale on a failed metric) and
`IsActive` answers true: no decision is never a reason to scale to zero. Bad metadata fails
with INVALID_ARGUMENT and a message naming the key.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from typing import Any, Final

import grpc

from elastiscale.keda import externalscaler_pb2 as pb
from elastiscale.keda.board import DesiredReplicas

log = logging.getLogger("elastiscale.keda")

#: How often a StreamIsActive call looks whether its client went away or the server stops.
STREAM_POLL_S: Final = 1.0


def metric_name(component: str) -> str:
    """The metric KEDA names in its HPA for `component` (lower-case, '-' for '_')."""
    return "elastiscale-" + component.lower().replace("_", "-")


class ExternalScaler:
    """The servicer: `grpc` calls these with the request and its `ServicerContext`."""

    def __init__(self, board: DesiredReplicas, pipeline_name: str) -> None:
        self.board = board
        self.pipeline_name = pipeline_name
        self.stopping = threading.Event()

    # --- the interface --------------------------------------------------------------------

    def IsActive(self, request: pb.ScaledObjectRef, context: Any) -> pb.IsActiveResponse:  # noqa: N802
        component, _ = self._target(request, context)
        return pb.IsActiveResponse(result=self._active(component))

    def StreamIsActive(  # noqa: N802
        self, request: pb.ScaledObjectRef, context: Any
    ) -> Iterator[pb.IsActiveResponse]:
        component, _ = self._target(request, context)
        version = self.board.version
        active = self._active(component)
        yield pb.IsActiveResponse(result=active)
        while context.is_active() and not self.stopping.is_set():
            version = self.board.wait_for_change(version, STREAM_POLL_S)
            now_active = self._active(component)
            if now_active != active:
                active = now_active
                yield pb.IsActiveResponse(result=active)

    def GetMetricSpec(  # noqa: N802
        self, request: pb.ScaledObjectRef, context: Any
    ) -> pb.GetMetricSpecResponse:
        component, target = self._target(request, context)
        spec = pb.MetricSpec(
            metricName=metric_name(component),
            targetSize=max(1, round(target)),
            targetSizeFloat=target,
        )
        return pb.GetMetricSpecResponse(metricSpecs=[spec])

    def GetMetrics(  # noqa: N802
        self, request: pb.GetMetricsRequest, context: Any
    ) -> pb.GetMetricsResponse:
        component, target = self._target(request.scaledObjectRef, context)
        desired = self.board.get(component)
        if desired is None:
            context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"component {component!r}: no decision yet (the first tick has not run)",
            )
        assert desired is not None
        value = desired * target
        name = request.metricName or metric_name(component)
        metric = pb.MetricValue(
            metricName=name, metricValue=math.ceil(value), metricValueFloat=value
        )
        return pb.GetMetricsResponse(metricValues=[metric])

    # --- helpers ----------------------------------------------------------------------------

    def _active(self, component: str) -> bool:
        desired = self.board.get(component)
        return desired is None or desired > 0

    def _target(self, ref: pb.ScaledObjectRef, context: Any) -> tuple[str, float]:
        """The component and per-replica target a ScaledObject's metadata names."""
        meta = dict(ref.scalerMetadata)
        who = f"ScaledObject {ref.namespace}/{ref.name}"
        problem = self._metadata_problem(meta)
        if problem is not None:
            log.warning("%s: %s", who, problem)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{who}: {problem}")
        return meta["component"], float(meta.get("targetSize", "1"))

    def _metadata_problem(self, meta: dict[str, str]) -> str | None:
        components = self.board.components
        component = meta.get("component")
        if not component:
            return "metadata.component: required (the pipeline component this object scales)"
        if component not in components:
            return (
                f"metadata.component: unknown component {component!r} "
                f"(components: {', '.join(components)})"
            )
        pipeline = meta.get("pipeline")
        if pipeline is not None and pipeline != self.pipeline_name:
            return (
                f"metadata.pipeline: {pipeline!r} is not this daemon's pipeline "
                f"{self.pipeline_name!r}"
            )
        raw = meta.get("targetSize", "1")
        try:
            target = float(raw)
        except ValueError:
            return f"metadata.targetSize: {raw!r} is not a number"
        if not (target > 0 and math.isfinite(target)):
            return f"metadata.targetSize: {raw!r} must be a positive number"
        return None
