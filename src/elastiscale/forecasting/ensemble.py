"""Ensemble: several forecasters combined bin by bin.

Combinations:
- `mean` and `median`: the plain average / middle of the members' forecasts;
- `max`: the most pessimistic member (for capacity, the safe one; it over-provisions);
- `weighted`: each member weighted by the inverse of its recent asymmetric error at that
  horizon, so a member that has been under-forecasting lately counts for less. Worked example:
  recent errors 0.2, 0.4 and 0.8 give weights 1/0.2 : 1/0.4 : 1/0.8 = 4 : 2 : 1, i.e. 4/7, 2/7
  and 1/7. Until the members have `quality.MIN_ERRORS` resolved forecasts the weights are equal.

Averaging helps when the members' errors differ in kind, e.g. a smoother that lags a ramp and
a seasonal model that anticipates it from yesterday's shape.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator

from elastiscale.decision import Detail
from elastiscale.forecasting.base import Forecaster
from elastiscale.forecasting.grid import Array, GridContext, GridModel, IntArray
from elastiscale.forecasting.members import Combine, MemberSet, MemberSpec, build_models
from elastiscale.forecasting.params import ForecasterParams


class EnsembleModel(GridModel):
    """Members' forecasts combined by `combine`."""

    def __init__(self, members: MemberSet) -> None:
        self.members = members
        self.label = f"ensemble-{members.combine}"

    def fit(self, y: Array, ctx: GridContext) -> None:
        self.members.fit(y, ctx)

    def append(self, value: float) -> None:
        self.members.append(value)

    def forecast(self, ks: IntArray) -> Array:
        return self.members.combined(ks)

    def describe(self) -> dict[str, Detail]:
        out: dict[str, Detail] = {"members": ",".join(self.members.labels)}
        for label, note in self.members.notes.items():
            out[f"left_out_{label}"] = note
        return out


class Ensemble(Forecaster):
    """Several forecasters combined by mean, median, max, or weighted by recent error."""

    name: ClassVar[str] = "ensemble"

    class Params(ForecasterParams):
        members: tuple[MemberSpec, ...] = Field(
            (MemberSpec(name="ewma"), MemberSpec(name="holt"), MemberSpec(name="holt-winters")),
            description="member forecasters: names, or {name, params}",
        )
        combine: Combine = "weighted"

        @field_validator("members", mode="before")
        @classmethod
        def _names(cls, value: Any) -> Any:
            if isinstance(value, str):
                return [value]
            return value

        @field_validator("members")
        @classmethod
        def _not_empty(cls, value: tuple[MemberSpec, ...]) -> tuple[MemberSpec, ...]:
            if not value:
                raise ValueError("an ensemble needs at least one member")
            return value

    def new_model(self) -> GridModel:
        assert isinstance(self.params, Ensemble.Params)
        models = build_models(self.params.members, self.config, self.params)
        members = MemberSet(
            models, self._window_bins, self.params.under_weight, combine=self.params.combine
        )
        return EnsembleModel(members)
