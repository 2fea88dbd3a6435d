"""`ray-serve`: Ray Serve's default autoscaling policy, with its defaults.

Sources, all in Ray 2.60.0 (python/ray/serve/):
- autoscaling_policy.py: `replica_queue_length_autoscaling_policy` and
  `_core_replica_queue_length_policy` (desired = running x total / (target x running), i.e.
  total ongoing requests / `target_ongoing_requests`; with no running replica the current target
  is kept), `_apply_scaling_factors` (the gain on the change from the running count, and the
  nudge of one replica when a scale-down would otherwise be stuck), `_apply_delay_logic` (the
  upscale / downscale delays, measured from the first decision of an unbroken run in one
  direction; 1 -> 0 uses `downscale_to_zero_delay_s`; other scale-downs stop at 1) and
  `_get_cold_start_scale_up_replicas` (from 0 running replicas with requests waiting: at least
  ceil(upscaling_factor) at once, no delay);
- config.py, `AutoscalingConfig`: target_ongoing_requests 2, look_back_period_s 30,
  upscale_delay_s 30, downscale_delay_s 600, downscale_to_zero_delay_s unset (then
  downscale_delay_s), upscaling / downscaling factors unset (then smoothing_factor, 1.0),
  aggregation_function mean;
- _private/autoscaling_state.py: what is counted (`get_total_num_requests`: requests running at
  replicas plus those queued at handles), how it is reduced over the look-back window
  (`_merge_and_aggregate_timeseries`, with `metrics_utils.time_weighted_average`: a
  time-weighted mean of a step function whose last sample holds until now), which counts the
  policy compares (running replicas for the gain, the deployment's target count for the delays)
  and `apply_bounds` (min_replicas, max_replicas);
- _private/constants.py: the controller decides every CONTROL_LOOP_INTERVAL_S (0.1 s); handles
  and replicas record samples every look_back_period_s x 0.2 (6 s) and push them every 10 s.

Our signals as Ray's: ongoing requests = `in_flight + queue_length` (both needed: a missing
queue is not an empty queue); running replicas = `ready`; the target count = `desired`;
min/max = the component's `replicas`. The default `target_ongoing_requests` is what a Ray user
would size for the component: its concurrency at capacity times the target utilization,
`capacity_per_replica x service_time_s x 0.7` (1.5 req/s at 4 s: 6 x 0.7 = 4.2 per replica).

What differs, on purpose:
- The look-back window holds the observations of the engine's history stamped within it (at
  the observation's own time, so a delayed metric holds until now, as Ray's last pushed sample
  does). A tick whose window holds no sample proposes nothing and breaks the run of decisions
  that the delays time, where Ray would read the missing total as 0.
- It decides at the engine's tick, not every 0.1 s, so a delay is served at the first tick at
  or after it expires (a 30 s delay ticked every 15 s acts at the third tick of the run).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

import numpy as np
from pydantic import AliasChoices, Field, model_validator

from elastiscale.controllers.base import ParamsModel, PerComponentPolicy, TickContext
from elastiscale.controllers.reactive import (
    ceil_count,
    concurrency_at_capacity,
    sample,
    why_missing,
    window_samples,
)
from elastiscale.decision import Detail, Proposal
from elastiscale.observations import Observation

if TYPE_CHECKING:
    from elastiscale.config import Config

Aggregation = Literal["mean", "max", "min"]
Direction = Literal["up", "down"]

#: Slack on "has the delay elapsed" (Ray's _DELAY_ELAPSED_EPS_S): 400.0 - 0.1 in binary floats
#: can fall a hair short of 399.9, and a delay must not slip a whole tick because of it.
DELAY_SLACK_S: Final = 1e-6

#: How long the newest sample is taken to hold when it is stamped `now` (Ray's 1e-3 s floor on
#: `last_window_s`): with nothing after it, it weighs next to nothing in a mean.
MIN_LAST_HOLD_S: Final = 1e-3


class RayServeParams(ParamsModel):
    """Parameters of `ray-serve` (defaults: Ray Serve's `AutoscalingConfig`), in Ray's own names:
    a pasted `autoscaling_config` works, with Ray's older names
    (`target_num_ongoing_requests_per_replica`, `upscale_smoothing_factor`,
    `downscale_smoothing_factor`) and `smoothing_factor` as the default of both factors; its
    bounds (`min_replicas`...) are refused with a hint naming the component's `replicas`."""

    @model_validator(mode="before")
    @classmethod
    def _smoothing_factor(cls, data: Any) -> Any:
        """Ray: `upscaling_factor` and `downscaling_factor` default to `smoothing_factor`."""
        if isinstance(data, dict) and "smoothing_factor" in data:
            data = dict(data)
            factor = data.pop("smoothing_factor")
            for ours, older in (
                ("upscaling_factor", "upscale_smoothing_factor"),
                ("downscaling_factor", "downscale_smoothing_factor"),
            ):
                if ours not in data and older not in data:
                    data[ours] = factor
        return data

    target_ongoing_requests: float | None = Field(
        None,
        validation_alias=AliasChoices(
            "target_ongoing_requests", "target_num_ongoing_requests_per_replica"
        ),
        gt=0,
        description="ongoing requests per replica; default: the component's concurrency at "
        "capacity x the target utilization",
    )
    target_utilization: float | None = Field(
        None,
        gt=0,
        le=1,
        description="sizes the default target_ongoing_requests; default: the component's (0.7)",
    )
    look_back_period_s: float = Field(30.0, gt=0)
    aggregation_function: Aggregation = "mean"
    upscale_delay_s: float = Field(30.0, ge=0)
    downscale_delay_s: float = Field(600.0, ge=0)
    downscale_to_zero_delay_s: float | None = Field(
        None, ge=0, description="delay of 1 -> 0; default: downscale_delay_s"
    )
    upscaling_factor: float = Field(
        1.0, gt=0, validation_alias=AliasChoices("upscaling_factor", "upscale_smoothing_factor")
    )
    downscaling_factor: float = Field(
        1.0,
        gt=0,
        validation_alias=AliasChoices("downscaling_factor", "downscale_smoothing_factor"),
    )
    interval_s: float | None = Field(
        None, gt=0, description="backtest tick; default: the pipeline's control.interval_s"
    )


@dataclass(slots=True)
class _State:
    """What the policy remembers of one component: the run of same-direction decisions (Ray's
    decision counter sign and first-decision timestamp)."""

    direction: Direction | None = None
    since_s: float | None = None

    def reset_run(self) -> None:
        self.direction = None
        self.since_s = None


@dataclass(frozen=True, slots=True)
class _Decision:
    """A count and how it was reached, for the proposal's reason and details."""

    replicas: int
    note: str
    waited_s: float | None = None


def window_total(
    samples: Sequence[tuple[float, float]], now_s: float, aggregation: Aggregation
) -> float | None:
    """Ongoing requests over the look-back samples (oldest first), or None with none.

    `mean` is time-weighted: each sample holds until the next, the newest until `now_s`.
    Samples 4 at 0 s, 8 at 10 s, 12 at 20 s, now 25 s: (4 x 10 + 8 x 10 + 12 x 5) / 25 = 7.2.
    `max` and `min` take the extreme sample.
    """
    if not samples:
        return None
    times = np.fromiter((t for t, _ in samples), dtype=float, count=len(samples))
    values = np.fromiter((v for _, v in samples), dtype=float, count=len(samples))
    if aggregation == "max":
        return float(values.max())
    if aggregation == "min":
        return float(values.min())
    last_hold_s = now_s - times[-1]
    holds = np.append(np.diff(times), last_hold_s if last_hold_s > 0 else MIN_LAST_HOLD_S)
    return float(np.average(values, weights=holds))


def apply_scaling_factors(
    desired: float, running: int, upscaling_factor: float, downscaling_factor: float
) -> int:
    """Ray's gain on the change from the running count.

    Running 4, desired 12, upscaling 0.5: ceil(4 + 0.5 x 8) = 8. Running 10, desired 2,
    downscaling 0.1: ceil(10 - 0.8) = 10 would never move, so one replica goes: 9.
    From 0 running the gain means nothing: ceil(desired).
    """
    if running == 0:
        return ceil_count(desired)
    delta = desired - running
    factor = upscaling_factor if delta > 0 else downscaling_factor
    scaled = ceil_count(running + factor * delta)
    if ceil_count(desired) < running and scaled == running:
        scaled -= 1
    return scaled


def _ongoing(obs: Observation) -> float | None:
    """Ray's ongoing requests: in service plus queued (`concurrency`; missing if either is)."""
    return sample(obs, "concurrency")


class RayServePolicy(PerComponentPolicy):
    """Ray Serve's default (request-based) autoscaler per component, one deployment each."""

    name = "ray-serve"
    Params: ClassVar[type[RayServeParams]] = RayServeParams

    def __init__(self, config: Config, params: RayServeParams | None = None) -> None:
        self.config = config
        self.params = params if params is not None else RayServeParams()
        # None: the runner ticks at the pipeline's control.interval_s.
        self.interval_s: float | None = self.params.interval_s
        self._states: dict[str, _State] = {}

    # ----------------------------------------------------------------------------------------

    def propose_component(self, ctx: TickContext, component: str) -> Proposal:
        p = self.params
        now_s = ctx.now_s
        state = self._states.setdefault(component, _State())
        obs = ctx.observations[component]
        samples = window_samples(ctx.history, component, _ongoing, now_s, p.look_back_period_s)
        total = window_total(samples, now_s, p.aggregation_function)
        if total is None:
            state.reset_run()
            return Proposal.none(
                self.name,
                f"no ongoing-request sample in the {p.look_back_period_s:g} s look-back: "
                f"{why_missing(obs, 'concurrency')}",
            )
        target = self._target_ongoing(ctx, component)
        if target is None:
            state.reset_run()
            return Proposal.none(
                self.name, "no requests-per-second capacity to size target_ongoing_requests"
            )

        counts = ctx.replicas[component]
        running, current = counts.ready, counts.desired
        bounds = ctx.pipeline.components[component].replicas
        wanted: float | None = None
        if running == 0 and total > 0:
            # Cold start: requests wait and nothing runs. Ray starts at least
            # ceil(1 x upscaling_factor) replicas at once, never fewer than already asked for.
            decision = _Decision(
                max(ceil_count(p.upscaling_factor), current), "cold start: no delay"
            )
        else:
            # The core policy: running x total / (target x running) = total / target; with
            # nothing running (and nothing waiting) it keeps the current target count.
            wanted = total / target if running > 0 else float(current)
            scaled = apply_scaling_factors(
                wanted, running, p.upscaling_factor, p.downscaling_factor
            )
            if running == 0 and scaled > 0:
                decision = _Decision(scaled, "nothing running: target count kept")
            else:
                decision = self._delay(state, now_s, max(0, scaled), current)
        bounded = max(bounds.min, min(bounds.max, decision.replicas))

        details: dict[str, Detail] = {
            "ongoing": total,
            "samples": len(samples),
            "target_ongoing_requests": target,
            "running": running,
            "current": current,
            "wanted": wanted,
            "decision": decision.replicas,
            "direction": state.direction,
            "waited_s": decision.waited_s,
        }
        reason = (
            f"ongoing {total:.4g} ({p.aggregation_function} over {p.look_back_period_s:g} s, "
            f"{len(samples)} samples) vs {target:.4g}/replica"
        )
        if wanted is not None:
            reason += f" wants {wanted:.4g}"
        reason += f"; {decision.note} -> {bounded}"
        if bounded != decision.replicas:
            reason += f" (bounds {bounds.min}..{bounds.max})"
        return Proposal(self.name, bounded, reason, details)

    # ----------------------------------------------------------------------------------------

    def _target_ongoing(self, ctx: TickContext, component: str) -> float | None:
        """The explicit target, else concurrency at capacity x the target utilization."""
        p = self.params
        if p.target_ongoing_requests is not None:
            return p.target_ongoing_requests
        at_capacity = concurrency_at_capacity(ctx, component)
        if at_capacity is None:
            return None
        utilization = p.target_utilization or ctx.config.pipeline.utilization_target(component)
        return at_capacity * utilization

    def _delay(self, state: _State, now_s: float, desired: int, current: int) -> _Decision:
        """Ray's delays: a change is made once it has been wanted, in the same direction, at
        every tick for the direction's delay; the run restarts when the direction flips,
        when the desired count equals the current one, and after each change.

        E.g. upscale_delay_s 30 ticked every 15 s: wanted at 0, 15 and 30 s, acted on at 30 s.
        """
        p = self.params
        if desired == current:
            state.reset_run()
            return _Decision(current, "at the target count")
        direction: Direction = "up" if desired > current else "down"
        if state.direction != direction:
            state.reset_run()
            state.direction = direction
        if direction == "up":
            delay_s = p.upscale_delay_s
            what = "scale-up"
        elif current == 1:  # Ray scales to zero only from 1, after its own delay
            delay_s = (
                p.downscale_delay_s
                if p.downscale_to_zero_delay_s is None
                else p.downscale_to_zero_delay_s
            )
            what = "scale to zero"
        else:  # other scale-downs stop at 1
            delay_s = p.downscale_delay_s
            desired = max(1, desired)
            what = "scale-down"
        if state.since_s is None:
            state.since_s = now_s
        waited_s = now_s - state.since_s
        if waited_s + DELAY_SLACK_S >= delay_s:
            state.reset_run()
            return _Decision(desired, f"{what} wanted for {waited_s:g} s of {delay_s:g}", waited_s)
        return _Decision(
            current,
            f"{what} to {desired} wanted for {waited_s:g} s of {delay_s:g}: held",
            waited_s,
        )
