"""The `scenario:` section: what changes in the simulated pipeline during a backtest.

A backtest normally simulates the pipeline exactly as its file describes it, so a policy that
plans with the file's numbers is planning with the truth. A scenario makes the truth drift
while the policies keep seeing only metrics: at `at_s` seconds after the replayed trace's
start, a component's true capacity per replica, service time or start-up time changes. Only the
simulator reads this section (the daemon ignores it).

```yaml
scenario:
  name: llm-rollout
  drift:
    - {at_s: 3600, component: llm, capacity_factor: 0.6}   # a slower model version
    - {at_s: 7200, component: llm, startup_s: 300}         # a bigger image
```

A component split between variants (`variants:`, `config.variants`) may change its true split
over time, while the policies keep the file's percents as their prior and see only the
per-variant rates:

```yaml
scenario:
  traffic:
    - {at_s: 0, component: llm, percent: {stable: 100, canary: 0}}
    - {at_s: 1200, component: llm, percent: {stable: 90, canary: 10}}
    - {at_s: 2400, component: llm, percent: {stable: 50, canary: 50}}
  drift:
    - {at_s: 0, component: llm-canary, capacity_factor: 0.6}  # the canary is slower
```

A replica keeps its concurrent slots, so a lower capacity means each call holds its slot
longer: `capacity_factor: 0.6` of 1.5 req/s at 4 s (6 slots) is 0.9 req/s at 6.67 s, what a
slower model on the same GPUs does. For the same reason a change gives at most one of
`capacity_per_replica`, `capacity_factor` and `service_time_s`; `startup_s` may come with any.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, model_validator


class StrictModel(BaseModel):
    """Unknown keys are errors, instances immutable (as every config model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DriftEvent(StrictModel):
    """One change of a component's true service at `at_s` (see the module docstring)."""

    at_s: NonNegativeFloat = Field(..., description="seconds after the replayed trace's start")
    component: str
    capacity_per_replica: PositiveFloat | None = None
    capacity_factor: PositiveFloat | None = Field(
        None, description="the configured capacity_per_replica times this"
    )
    service_time_s: PositiveFloat | None = None
    startup_s: NonNegativeFloat | None = None

    @model_validator(mode="after")
    def _one_service_change(self) -> DriftEvent:
        given = [
            n
            for n in ("capacity_per_replica", "capacity_factor", "service_time_s")
            if getattr(self, n) is not None
        ]
        if len(given) > 1:
            raise ValueError(f"give at most one of {', '.join(given)} (a replica keeps its slots)")
        if not given and self.startup_s is None:
            raise ValueError(
                "changes nothing: give capacity_per_replica, capacity_factor, service_time_s "
                "or startup_s"
            )
        return self


class TrafficEvent(StrictModel):
    """The true split of a component's traffic between its variants from `at_s` on, in
    percent per variant (they add up to 100, as in the file's `variants:`)."""

    at_s: NonNegativeFloat = Field(..., description="seconds after the replayed trace's start")
    component: str = Field(..., description="the component whose `variants:` share its traffic")
    percent: dict[str, Annotated[float, Field(ge=0, le=100)]]

    @model_validator(mode="after")
    def _adds_up(self) -> TrafficEvent:
        total = sum(self.percent.values())
        if abs(total - 100.0) > 1e-6:
            raise ValueError(f"percent: the percents add up to {total:g}, must be 100")
        return self


class Scenario(StrictModel):
    """Drift of the simulated pipeline's truth during a backtest."""

    name: str = "scenario"
    drift: tuple[DriftEvent, ...] = ()
    traffic: tuple[TrafficEvent, ...] = ()
