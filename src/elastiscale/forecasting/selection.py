"""Automatic selection: at each horizon, the candidate with the lowest recent asymmetric error.

Selection is a rolling-origin evaluation that never stops. At fit time every candidate is
fitted on the history except its last `window_s`, then that window is replayed bin by bin: at
every bin (an origin) each candidate forecasts the served horizons using only the bins before
it, and the forecasts are scored when their bins close. From then on the same happens online at
every new bin. Whenever a forecast is asked for, each horizon goes to the candidate whose
forecasts at that horizon had the lowest asymmetric error (under-forecasting weighted
`under_weight` times over-forecasting, quality.py) over the last `window_s`. So the choice made
at any origin rests on data before that origin only, and it can differ by horizon: a smoother
at 1 minute, a seasonal model at 15.

Until the candidates have `quality.MIN_ERRORS` scored forecasts, the first fitted candidate in
the list is used. Recent errors are kept as running sums, so choosing costs O(candidates).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, field_validator

from elastiscale.decision import Detail
from elastiscale.forecasting.base import Forecaster
from elastiscale.forecasting.grid import Array, GridContext, GridModel, IntArray
from elastiscale.forecasting.members import Combine, MemberSet, MemberSpec, build_models
from elastiscale.forecasting.params import ForecasterParams

DEFAULT_CANDIDATES = ("ewma", "holt", "holt-winters", "seasonal-naive", "last-value")
#: Candidates whose combination is a candidate too (the naive ones add noise to an average).
DEFAULT_COMBINED = ("ewma", "holt", "holt-winters")


class AutoSelectModel(GridModel):
    """Per-horizon choice among candidates by their recent asymmetric error."""

    label = "auto"

    def __init__(self, members: MemberSet) -> None:
        self.members = members
        # horizon -> (the members' error generation it was chosen in, the choice):
        # `MemberSet.errors` returns the same array until the next bin or fit, and the
        # choice holds with it
        self._chosen: dict[int, tuple[int, int]] = {}
        # the horizons asked for -> (the members' error generation, the choice at each): a
        # forecast is asked for two or three times a bin with the same horizons
        self._choices: dict[bytes, tuple[int, IntArray]] = {}

    def fit(self, y: Array, ctx: GridContext) -> None:
        self.members.fit(y, ctx)

    def append(self, value: float) -> None:
        self.members.append(value)

    def chosen(self, k: int) -> int:
        """Index (in `members.candidates`) of the candidate serving horizon k (bins ahead)."""
        generation = self.members.generation
        cached = self._chosen.get(k)
        if cached is not None and cached[0] == generation:
            return cached[1]
        choice = _first_lowest(self.members.error_list(k, with_combined=True))
        self._chosen[k] = (generation, choice)
        return choice

    def forecast(self, ks: IntArray) -> Array:
        key = ks.dtype.str.encode() + ks.tobytes()
        generation = self.members.generation
        cached = self._choices.get(key)
        if cached is not None and cached[0] == generation:
            choice = cached[1]
        else:
            choice = np.array([self.chosen(int(k)) for k in ks.tolist()])
            self._choices[key] = (generation, choice)
        if choice.size and (choice == choice[0]).all() and choice[0] < len(self.members.models):
            return self.members.models[int(choice[0])].forecast(ks)
        rows = self.members.forecasts(ks)
        return np.asarray(rows[choice, np.arange(ks.size)], dtype=float)

    def choices(self) -> dict[int, str]:
        """The candidate serving each tracked horizon (bins ahead -> label)."""
        labels = self.members.candidates
        return {int(k): labels[self.chosen(int(k))] for k in self.members.ks}

    def describe(self) -> dict[str, Detail]:
        step_s = self.members.step_s
        out: dict[str, Detail] = {
            f"chosen_{k * step_s:g}s": label for k, label in self.choices().items()
        }
        for label, note in self.members.notes.items():
            out[f"left_out_{label}"] = note
        return out


def _first_lowest(errors: list[float]) -> int:
    """Index of the lowest error that is not NaN, the first of equal ones (0: all NaN); the
    choice `np.argmin` makes over the known ones, without numpy's cost on a handful."""
    best = -1
    for i, error in enumerate(errors):
        if not math.isnan(error) and (best < 0 or error < errors[best]):
            best = i
    return max(best, 0)


class AutoSelect(Forecaster):
    """Picks, per horizon, the candidate with the lowest recent asymmetric error."""

    name: ClassVar[str] = "auto"

    class Params(ForecasterParams):
        candidates: tuple[MemberSpec, ...] = Field(
            tuple(MemberSpec(name=n) for n in DEFAULT_CANDIDATES),
            description="candidate forecasters, in order of preference while untested",
        )
        combine: Combine | None = Field(
            "weighted", description="also try this combination of `combined` (None: do not)"
        )
        combined: tuple[str, ...] = Field(
            DEFAULT_COMBINED, description="labels of the candidates in the combination"
        )

        @field_validator("candidates", mode="before")
        @classmethod
        def _names(cls, value: Any) -> Any:
            if isinstance(value, str):
                return [value]
            return value

        @field_validator("candidates")
        @classmethod
        def _not_empty(cls, value: tuple[MemberSpec, ...]) -> tuple[MemberSpec, ...]:
            if not value:
                raise ValueError("auto needs at least one candidate")
            names = [c.name for c in value]
            if "auto" in names:
                raise ValueError("auto cannot be a candidate of itself")
            return value

    def new_model(self) -> GridModel:
        assert isinstance(self.params, AutoSelect.Params)
        models = build_models(self.params.candidates, self.config, self.params)
        members = MemberSet(
            models,
            self._window_bins,
            self.params.under_weight,
            combine=self.params.combine,
            combine_members=self.params.combined,
        )
        return AutoSelectModel(members)

    def choices(self) -> dict[float, str]:
        """The candidate serving each tracked horizon (seconds -> name), when fitted."""
        model = self._model
        if not isinstance(model, AutoSelectModel):
            return {}
        return {k * self.step_s: label for k, label in model.choices().items()}
