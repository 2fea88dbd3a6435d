"""`kpa`: the Knative Pod Autoscaler's decider, with its stable and panic windows.

Sources, all in knative/serving:
- pkg/autoscaler/scaling/autoscaler.go (`Scale`): desired = ceil(window average / target)
  over the stable and the panic window, kept within [floor(ready / max-scale-down-rate),
  ceil(ready x max-scale-up-rate)]; panic starts when the panic-window count reaches
  panic-threshold x ready replicas, is extended while it stays there, and ends once a whole
  stable window has passed without it; while panicking the count never goes down. A new
  autoscaler facing more than one ready replica starts in panic, so that lost history cannot
  shrink the service. A scale-down delay keeps the highest count of its window.
- pkg/autoscaler/config/config.go (`defaultConfig`, `validate`): stable window 60 s, panic
  window 10 % of it (6 s), panic threshold 200 %, max scale-up rate 1000, max scale-down rate 2,
  target utilization 70 %, scale-to-zero grace period 30 s, scale-down delay 0 s; the bounds
  checked here (stable window 6 s..1 h, panic window 1..100 %, rates > 1).
- pkg/autoscaler/scaling/multiscaler.go: the decider ticks every 2 s.
- pkg/reconciler/autoscaling/kpa/scaler.go (`handleScaleToZero`): the last replica goes only
  when scale-to-zero is enabled and the revision has been idle long enough.

Signals: `concurrency` (the default) is in_flight + queue_length, what Knative's queue-proxy
reports; `rps` is the component's load in its capacity unit. The target per replica is the
load at capacity (capacity_per_replica x service_time_s requests in flight, or
capacity_per_replica per second) times the target utilization, like Knative's
`target x target-utilization-percentage`. Window averages are plain means of the engine's
history over (now - window, now]; a panic window that holds no sample uses the newest one (a
window shorter than the sampling interval still sees the last value).

Scale to zero (only when `replicas.min` is 0 and `enable_scale_to_zero`): the decider asks for
0 only after its stable-window average has been 0 (Knative's own decider behaves the same), and
the last replica is then kept for `scale_to_zero_grace_s` (Knative's scale-to-zero grace
period, 30 s) of continuous zero before it goes. So the last replica leaves no sooner than
60 s + 30 s after the last request. Otherwise the count is floored at 1.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from elastiscale.controllers.base import ParamsModel, PerComponentPolicy, TickContext
from elastiscale.controllers.reactive import (
    ceil_count,
    concurrency_at_capacity,
    floor_count,
    resolve_metric,
    sample,
    why_missing,
    window_samples,
)
from elastiscale.decision import Detail, Proposal
from elastiscale.observations import Observation

if TYPE_CHECKING:
    from elastiscale.config import Config


class KPAParams(ParamsModel):
    """Parameters of `kpa` (defaults: Knative's config-autoscaler defaults)."""

    metric: Literal["concurrency", "rps"] = "concurrency"
    target_per_replica: float | None = Field(
        None, gt=0, description="Knative's `target`; default: the component's load at capacity"
    )
    target_utilization: float | None = Field(
        None, gt=0, le=1, description="default: the component's target utilization (0.7)"
    )
    stable_window_s: float = Field(60.0, ge=6, le=3600)
    panic_window_percentage: float = Field(10.0, ge=1, le=100)
    panic_threshold_percentage: float = Field(200.0, ge=110, le=1000)
    max_scale_up_rate: float = Field(1000.0, gt=1)
    max_scale_down_rate: float = Field(2.0, gt=1)
    scale_down_delay_s: float = Field(0.0, ge=0, le=3600)
    enable_scale_to_zero: bool = True
    scale_to_zero_grace_s: float = Field(30.0, gt=0)
    start_in_panic: bool = Field(
        True, description="start panicking when first seeing more than one ready replica"
    )


@dataclass(slots=True)
class _State:
    """What the decider remembers about one component between ticks."""

    panic_since_s: float | None = None  # last tick at which the panic condition held
    max_panic_pods: int = 0
    zero_since_s: float | None = None
    delayed: deque[tuple[float, int]] | None = None  # scale-down delay window


class KPAPolicy(PerComponentPolicy):
    """Knative's KPA decider per component, ticked every 2 s (Knative's tick interval)."""

    name = "kpa"
    interval_s: float = 2.0
    Params: ClassVar[type[KPAParams]] = KPAParams

    def __init__(self, config: Config, params: KPAParams | None = None) -> None:
        self.config = config
        self.params = params if params is not None else KPAParams()
        self.panic_window_s = (
            self.params.stable_window_s * self.params.panic_window_percentage / 100
        )
        self._states: dict[str, _State] = {}

    def panicking(self, component: str) -> bool:
        state = self._states.get(component)
        return state is not None and state.panic_since_s is not None

    # ----------------------------------------------------------------------------------------

    def propose_component(self, ctx: TickContext, component: str) -> Proposal:
        p = self.params
        now_s = ctx.now_s
        ready_seen = ctx.replicas[component].ready
        state = self._states.get(component)
        if state is None:
            state = self._states[component] = _State()
            if p.start_in_panic and ready_seen > 1:
                state.panic_since_s = now_s
                state.max_panic_pods = ready_seen
        ready = max(1, ready_seen)  # "use 1 if there are zero current pods"

        target = self._target(ctx, component)
        if target is None:
            return Proposal.none(self.name, "no requests-per-second capacity to size concurrency")
        signal = (
            "concurrency" if p.metric == "concurrency" else resolve_metric("load", ctx, component)
        )

        def value_of(obs: Observation) -> float | None:
            return sample(obs, signal)

        samples = window_samples(ctx.history, component, value_of, now_s, p.stable_window_s)
        if not samples:
            why = why_missing(ctx.observations[component], signal)
            return Proposal.none(self.name, f"no data in the {p.stable_window_s:g} s window: {why}")
        panic = [v for at_s, v in samples if at_s > now_s - self.panic_window_s]
        stable_value = math.fsum(v for _, v in samples) / len(samples)
        panic_value = math.fsum(panic) / len(panic) if panic else samples[-1][1]

        # Worked example (defaults): 4 ready, target 7 in flight, stable mean 20, panic mean 60:
        # stable wants ceil(20/7) = 3, panic wants ceil(60/7) = 9; 9 / 4 >= 2 enters panic;
        # bounds are [floor(4/2), ceil(4 x 1000)] = [2, 4000].
        max_up = math.ceil(p.max_scale_up_rate * ready)
        max_down = floor_count(ready / p.max_scale_down_rate)
        stable_pods = ceil_count(stable_value / target)
        panic_pods = ceil_count(panic_value / target)
        desired_stable = min(max(stable_pods, max_down), max_up)
        desired_panic = min(max(panic_pods, max_down), max_up)
        over_threshold = panic_pods / ready >= p.panic_threshold_percentage / 100

        if over_threshold:
            state.panic_since_s = now_s  # enter, or extend the panic
        elif state.panic_since_s is not None and state.panic_since_s + p.stable_window_s < now_s:
            state.panic_since_s = None
            state.max_panic_pods = 0

        desired = desired_stable
        mode = "stable"
        if state.panic_since_s is not None:
            mode = "panic"
            desired = max(desired, desired_panic)
            state.max_panic_pods = max(state.max_panic_pods, desired)
            desired = state.max_panic_pods  # never scale down while panicking
        desired = self._delay_scale_down(state, now_s, desired)
        desired, zero_note = self._scale_to_zero(ctx, component, state, now_s, desired)

        details: dict[str, Detail] = {
            "metric": signal,
            "stable_value": stable_value,
            "panic_value": panic_value,
            "target": target,
            "stable_pods": stable_pods,
            "panic_pods": panic_pods,
            "ready": ready_seen,
            "max_scale_up": max_up,
            "max_scale_down": max_down,
            "panic": mode == "panic",
            "max_panic_pods": state.max_panic_pods,
        }
        reason = (
            f"{mode}: {signal} {stable_value:.4g} over {p.stable_window_s:g} s, "
            f"{panic_value:.4g} over {self.panic_window_s:g} s, target {target:.4g}/replica "
            f"-> {desired}"
        )
        if zero_note:
            reason += f" ({zero_note})"
        return Proposal(self.name, desired, reason, details)

    # ----------------------------------------------------------------------------------------

    def _target(self, ctx: TickContext, component: str) -> float | None:
        """Knative's TargetValue: the per-replica target times the target utilization."""
        p = self.params
        utilization = p.target_utilization or ctx.config.pipeline.utilization_target(component)
        if p.target_per_replica is not None:
            return p.target_per_replica * utilization
        if p.metric == "rps":
            return ctx.pipeline.components[component].capacity_per_replica * utilization
        at_capacity = concurrency_at_capacity(ctx, component)
        return None if at_capacity is None else at_capacity * utilization

    def _delay_scale_down(self, state: _State, now_s: float, desired: int) -> int:
        """Knative's scale-down delay: the highest count asked for within the delay window."""
        delay_s = self.params.scale_down_delay_s
        if delay_s <= 0:
            return desired
        if state.delayed is None:
            state.delayed = deque()
        window = state.delayed
        window.append((now_s, desired))
        while window and window[0][0] <= now_s - delay_s:
            window.popleft()
        return max(count for _, count in window)

    def _scale_to_zero(
        self, ctx: TickContext, component: str, state: _State, now_s: float, desired: int
    ) -> tuple[int, str]:
        if desired > 0:
            state.zero_since_s = None
            return desired, ""
        allowed = ctx.pipeline.components[component].replicas.min == 0
        if not (allowed and self.params.enable_scale_to_zero):
            return 1, "scale to zero not allowed: kept at 1"
        if state.zero_since_s is None:
            state.zero_since_s = now_s
        idle_s = now_s - state.zero_since_s
        grace_s = self.params.scale_to_zero_grace_s
        if idle_s < grace_s:
            return 1, f"idle for {idle_s:g} s of the {grace_s:g} s grace period: kept at 1"
        return 0, f"idle for {idle_s:g} s: scaled to zero"
