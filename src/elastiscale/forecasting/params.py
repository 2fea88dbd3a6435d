"""The settings every forecaster has (`ForecasterParams`, which each forecaster's `Params`
extends), and the horizons a forecaster serves for a pipeline (`lead_times_s`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, model_validator

from elastiscale.forecasting.grid import DAY_S, WEEK_S
from elastiscale.forecasting.intervals import IntervalMode

if TYPE_CHECKING:
    from elastiscale.config import Config

#: At most this many horizons are tracked (each costs a little at every bin).
MAX_TRACKED_HORIZONS = 16


class ForecasterParams(BaseModel):
    """Settings every forecaster has; each forecaster's `Params` extends these."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step_s: PositiveFloat = Field(60.0, description="the model's resolution; input is resampled")
    history_s: PositiveFloat = Field(
        WEEK_S, description="history kept and fitted on (older bins are dropped)"
    )
    horizons_s: tuple[PositiveFloat, ...] = Field(
        (60.0, 300.0, 900.0), description="horizons served: errors are tracked at each"
    )
    window_s: PositiveFloat = Field(
        DAY_S, description="rolling window of the error tracker and of the quantile calibration"
    )
    calibration_s: PositiveFloat = Field(
        DAY_S / 2, description="end of the history replayed out-of-sample after each fit"
    )
    under_weight: PositiveFloat = Field(
        3.0, description="cost of under-forecasting relative to over-forecasting"
    )
    intervals: IntervalMode = Field("relative", description="errors scaled by the forecast or not")
    refit_every_s: PositiveFloat = Field(DAY_S, description="refit_due() after this long")
    auto_refit: bool = Field(False, description="refit inside update() when due (blocking)")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.history_s < 2 * self.step_s:
            raise ValueError(
                f"history_s = {self.history_s:g} must be at least 2 steps "
                f"(step_s = {self.step_s:g})"
            )
        if self.window_s < self.step_s:
            raise ValueError(
                f"window_s = {self.window_s:g} is shorter than step_s = {self.step_s:g}"
            )
        if len(self.horizons_s) > MAX_TRACKED_HORIZONS:
            raise ValueError(
                f"horizons_s has {len(self.horizons_s)} entries, at most {MAX_TRACKED_HORIZONS}"
            )
        return self


def lead_times_s(config: Config | None) -> set[float]:
    """Every component's lead time (startup + control interval + actuation delay), seconds."""
    if config is None:
        return set()
    control = config.control
    return {
        c.startup_s + control.interval_s + control.actuation_delay_s
        for c in config.pipeline.components.values()
    }
