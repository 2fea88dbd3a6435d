"""Several models fitted on the same bins and tracked side by side: the common part of the
ensemble and of automatic selection.

Members are named like any forecaster (a registry name, or `package.module:attr`) with their own
parameters. They share the composite's grid and served horizons (`step_s`, `history_s`,
`horizons_s`, `window_s`, `under_weight` are imposed), so their forecasts line up bin for bin.
Each member keeps its own `ErrorTracker`: at every bin it issues forecasts for the served
horizons, and their errors, resolved as the bins close, say which member has been doing well.
A member that cannot be fitted (too little history, no seasonality) sits out until the next
fit, and the reason is kept in `notes`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from elastiscale.forecasting.grid import (
    Array,
    FitRefusedError,
    GridContext,
    GridModel,
    IntArray,
    NotEnoughHistoryError,
)
from elastiscale.forecasting.params import ForecasterParams
from elastiscale.forecasting.quality import ErrorTracker

if TYPE_CHECKING:
    from elastiscale.config import Config

#: Parameters a member inherits from its composite (they must agree for forecasts to line up).
SHARED = ("step_s", "history_s", "horizons_s", "window_s", "under_weight")


class MemberSpec(BaseModel):
    """A member forecaster by name, with its own parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(..., min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _no_shared(self) -> MemberSpec:
        clash = sorted(set(self.params) & set(SHARED))
        if clash:
            raise ValueError(
                f"member {self.name!r}: {', '.join(clash)} is set by the ensemble, not per member"
            )
        return self


def build_models(
    specs: Sequence[MemberSpec], config: Config | None, common: ForecasterParams
) -> list[tuple[str, GridModel]]:
    """(label, unfitted model) of each member, built through the registry."""
    from elastiscale import registry
    from elastiscale.forecasting.base import Forecaster

    shared = {name: getattr(common, name) for name in SHARED}
    out: list[tuple[str, GridModel]] = []
    names = [spec.name for spec in specs]
    for i, spec in enumerate(specs):
        member = registry.build("forecaster", spec.name, config, {**spec.params, **shared})
        if not isinstance(member, Forecaster):
            raise TypeError(f"member {spec.name!r} is not a Forecaster")
        label = spec.name if names.count(spec.name) == 1 else f"{spec.name}#{i + 1}"
        out.append((label, member.new_model()))
    return out


Combine = Literal["mean", "median", "max", "weighted"]


def combine_forecasts(forecasts: Array, how: Combine, weights: Array | None = None) -> Array:
    """Combine member forecasts (one row per member, one column per horizon).

    `weighted` needs `weights` with one row per member and one column per horizon, each column
    summing to 1.
    """
    if how == "mean":
        return np.asarray(forecasts.mean(axis=0), dtype=float)
    if how == "median":
        return np.asarray(np.median(forecasts, axis=0), dtype=float)
    if how == "max":
        return np.asarray(forecasts.max(axis=0), dtype=float)
    assert weights is not None
    return np.asarray((weights * forecasts).sum(axis=0), dtype=float)


def inverse_error_weights(errors: Array) -> Array:
    """Weights proportional to 1 / error, summing to 1; equal while any error is unknown.

    Worked example: errors 0.2, 0.4, 0.8 give 1/0.2 : 1/0.4 : 1/0.8 = 4 : 2 : 1.
    """
    n = errors.size
    if n == 0 or np.isnan(errors).any():
        return np.full(n, 1.0 / max(n, 1))
    inverse = 1.0 / np.maximum(errors, 1e-9)
    return np.asarray(inverse / inverse.sum(), dtype=float)


class MemberSet:
    """Models fitted on the same bins, each with its own error tracker.

    With `combine`, the set also has a combined member (label `ensemble-<how>`) made of the
    members named in `combine_members` (default: all): its forecasts are computed from theirs,
    so it costs no fit, and it is tracked like any member.
    """

    def __init__(
        self,
        members: Sequence[tuple[str, GridModel]],
        window_bins: int,
        under_weight: float,
        combine: Combine | None = None,
        combine_members: Sequence[str] | None = None,
    ) -> None:
        if not members:
            raise ValueError("a member set needs at least one member")
        self._all = list(members)
        self.window_bins = window_bins
        self.under_weight = under_weight
        self.combine = combine
        self.combine_members = None if combine_members is None else set(combine_members)
        self.labels: list[str] = []
        self.models: list[GridModel] = []
        self.trackers: list[ErrorTracker] = []
        self.notes: dict[str, str] = {}
        self.ks: IntArray = np.empty(0, dtype=np.int64)
        self.latest = -1
        self.step_s = 0.0
        self._combined: list[int] = []  # indexes of the members in the combination
        self._combo_tracker: ErrorTracker | None = None
        self._errors: dict[tuple[int, bool], Array] = {}
        #: tracked horizon -> the members' errors there (NaN: unknown), until the next bin
        #: or fit: the choice of candidate and the combination's weights both read them.
        self._member_errors: dict[int, list[float]] = {}
        self._weights_cache: dict[int, Array] = {}
        self._weight_tables: dict[bytes, Array] = {}  # horizons -> `_weight_table`
        #: (generation, horizons, member rows, combined row) of the last `_issue`.
        self._issued: tuple[int, bytes, Array, Array | None] | None = None
        self._nearest: dict[int, int] = {}
        #: Counts the changes of the members' errors (a fit, a new bin): what is computed
        #: from `errors` holds while this stays the same.
        self.generation = 0

    @property
    def combo_label(self) -> str | None:
        return None if self._combo_tracker is None else f"ensemble-{self.combine}"

    @property
    def candidates(self) -> list[str]:
        """Labels of every member, the combined one last."""
        combo = self.combo_label
        return self.labels + ([combo] if combo is not None else [])

    def _new_tracker(self, ks: Sequence[int]) -> ErrorTracker:
        tracker = ErrorTracker(self.window_bins, self.under_weight)
        for k in ks:
            tracker.track(k)
        return tracker

    def fit(self, y: Array, ctx: GridContext) -> None:
        """Fit every member; raise when none can be fitted."""
        self.labels, self.models, self.trackers, self.notes = [], [], [], {}
        self._errors.clear()
        self._member_errors.clear()
        self.generation += 1
        self._weights_cache.clear()
        self._weight_tables.clear()
        self._nearest.clear()
        self.ks = np.asarray(ctx.horizons, dtype=np.int64)
        self.latest = ctx.first_bin + y.size - 1
        self.step_s = ctx.step_s
        shortest: NotEnoughHistoryError | None = None
        for label, model in self._all:
            try:
                model.fit(y, ctx)
            except NotEnoughHistoryError as exc:
                self.notes[label] = f"not enough history: {exc}"
                if shortest is None or exc.need_bins < shortest.need_bins:
                    shortest = exc
                continue
            except FitRefusedError as exc:
                self.notes[label] = str(exc)
                continue
            except Exception as exc:  # one member failing must not take the others down
                self.notes[label] = f"fit failed: {type(exc).__name__}: {exc}"
                continue
            self.labels.append(label)
            self.models.append(model)
            self.trackers.append(self._new_tracker(ctx.horizons))
        if not self.models:
            if shortest is not None:
                raise shortest
            raise FitRefusedError("no member could be fitted: " + "; ".join(self.notes.values()))
        wanted = self.combine_members
        self._combined = [
            i for i, label in enumerate(self.labels) if wanted is None or label in wanted
        ]
        self._combo_tracker = None
        if self.combine is not None and len(self._combined) >= 2:
            self._combo_tracker = self._new_tracker(ctx.horizons)
        self._issue()

    def _issue(self) -> None:
        horizons = tuple(int(k) for k in self.ks)
        rows = []
        for model, tracker in zip(self.models, self.trackers, strict=True):
            row = model.forecast(self.ks)
            tracker.issue(self.latest, horizons, row)
            rows.append(row)
        stacked = np.vstack(rows)
        combo: Array | None = None
        if self._combo_tracker is not None:
            combo = self._combine(stacked, self.ks)
            self._combo_tracker.issue(self.latest, horizons, combo)
        # What `forecasts(self.ks)` returns until the next bin or fit (the models are the same).
        self._issued = (self.generation, self.ks.tobytes(), stacked, combo)

    def append(self, value: float) -> None:
        self.latest += 1
        self._errors.clear()
        self._member_errors.clear()
        self.generation += 1
        self._weights_cache.clear()
        self._weight_tables.clear()
        for model, tracker in zip(self.models, self.trackers, strict=True):
            tracker.resolve(self.latest, value)
            model.append(value)
        if self._combo_tracker is not None:
            self._combo_tracker.resolve(self.latest, value)
        self._issue()

    def _combine(self, member_rows: Array, ks: IntArray) -> Array:
        assert self.combine is not None
        rows = member_rows[self._combined]
        weights = None
        if self.combine == "weighted":
            weights = self._weight_table(ks)
        return combine_forecasts(rows, self.combine, weights)

    def _weight_table(self, ks: IntArray) -> Array:
        """`_weights(k)` of every horizon of `ks`, one column each (cached until the next
        bin): with fewer than 8 combined members the columns are computed at once, the same
        doubles (numpy adds a column of fewer than 8 in order, as it sums one such array),
        in a few numpy calls instead of a few per horizon."""
        key = ks.tobytes()
        cached = self._weight_tables.get(key)
        if cached is not None:
            return cached
        combined = self._combined
        n = len(combined)
        horizons = ks.tolist()
        if n >= 8 or not horizons:
            table = np.column_stack([self._weights(int(k)) for k in horizons])
        else:
            lists = [self.error_list(int(k)) for k in horizons]
            errors = np.array([[errs[i] for errs in lists] for i in combined], dtype=float)
            inverse = 1.0 / np.maximum(errors, 1e-9)
            table = inverse / inverse.sum(axis=0)
            unknown = np.isnan(errors).any(axis=0)
            if unknown.any():
                table[:, unknown] = 1.0 / n  # equal while any error is unknown
        self._weight_tables[key] = table
        return table

    def _weights(self, k: int) -> Array:
        """Inverse-error weights of the combined members at horizon k (cached until the next
        bin, like the errors they come from)."""
        cached = self._weights_cache.get(k)
        if cached is None:
            cached = inverse_error_weights(self.errors(k)[self._combined])
            self._weights_cache[k] = cached
        return cached

    def forecasts(self, ks: IntArray) -> Array:
        """Forecasts of the fitted members (one row each), then the combined one if any."""
        issued = self._issued
        if (
            issued is not None
            and issued[0] == self.generation
            and ks.dtype == np.int64
            and issued[1] == ks.tobytes()
        ):
            # The rows this bin issued, for the same horizons: the same numbers.
            _, _, stacked, combo = issued
            return stacked.copy() if combo is None else np.vstack([stacked, combo])
        rows = np.vstack([model.forecast(ks) for model in self.models])
        if self._combo_tracker is None:
            return rows
        return np.vstack([rows, self._combine(rows, ks)])

    def combined(self, ks: IntArray) -> Array:
        """The combined forecast (every member's when there is no combination)."""
        rows = np.vstack([model.forecast(ks) for model in self.models])
        if self.combine is None or len(self._combined) < 2:
            return np.asarray(rows[self._combined].mean(axis=0), dtype=float)
        return self._combine(rows, ks)

    def nearest_tracked(self, k: int) -> int:
        """The tracked horizon closest to k (ties: the longer one)."""
        nearest = self._nearest.get(k)
        if nearest is None:
            tracked = self.ks.tolist()
            nearest = min(tracked, key=lambda t: (abs(t - k), -t)) if tracked else k
            self._nearest[k] = nearest
        return nearest

    def errors(self, k: int, with_combined: bool = False) -> Array:
        """Each member's recent asymmetric error at horizon k (NaN: not known yet); the
        combined member's last when `with_combined`. Cached until the next bin."""
        key = (k, with_combined)
        cached = self._errors.get(key)
        if cached is not None:
            return cached
        errors = np.array(self.error_list(k, with_combined))
        self._errors[key] = errors
        return errors

    def error_list(self, k: int, with_combined: bool = False) -> list[float]:
        """`errors(k, with_combined)` as a new list of floats (for a caller that keeps what
        it makes of them); the members' part is read off their trackers once per bin."""
        tracked = self.nearest_tracked(k)
        members = self._member_errors.get(tracked)
        if members is None:
            got = [tracker.asymmetric_error(tracked) for tracker in self.trackers]
            members = [math.nan if e is None else e for e in got]
            self._member_errors[tracked] = members
        if with_combined and self._combo_tracker is not None:
            combo = self._combo_tracker.asymmetric_error(tracked)
            return [*members, math.nan if combo is None else combo]
        return list(members)
