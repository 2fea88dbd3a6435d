"""What a forecaster answers: a forecast, no forecast and why, and what it is running on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from elastiscale.decision import Detail

Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Forecast:
    """Demand forecast at several horizons, from data up to `origin_s`.

    `mean`, `p90` and `p99` are aligned with `horizons_s`, in the series' unit (requests/s or
    tokens/s), with 0 <= mean <= p90 <= p99. `model` names the model that produced it; when it
    is a fallback, `fallback_reason` says why the configured one was not used.
    """

    origin_s: float
    horizons_s: Array
    mean: Array
    p90: Array
    p99: Array
    model: str
    fallback_reason: str | None = None

    @property
    def is_fallback(self) -> bool:
        return self.fallback_reason is not None

    def details(self, index: int = 0, prefix: str = "forecast") -> dict[str, Detail]:
        """Flat key/values of horizon `index` for a `Proposal`'s details (decision records)."""
        head = f"{prefix}_{self.horizons_s[index]:g}s"
        return {
            f"{prefix}_model": self.model,
            f"{head}_mean": round(float(self.mean[index]), 6),
            f"{head}_p90": round(float(self.p90[index]), 6),
            f"{head}_p99": round(float(self.p99[index]), 6),
            f"{prefix}_fallback": self.fallback_reason,
        }

    def to_dict(self) -> dict[str, object]:
        return {
            "origin_s": self.origin_s,
            "horizons_s": self.horizons_s.tolist(),
            "mean": self.mean.tolist(),
            "p90": self.p90.tolist(),
            "p99": self.p99.tolist(),
            "model": self.model,
            "fallback_reason": self.fallback_reason,
        }


@dataclass(frozen=True, slots=True)
class NoForecast:
    """No forecast can be made (no observation at all); `reason` says why."""

    model: str
    reason: str


ForecastResult = Forecast | NoForecast


@dataclass(frozen=True, slots=True)
class FitStatus:
    """What a forecaster is running on: its model, or the fallback and why."""

    forecaster: str
    model: str | None
    fallback_reason: str | None
    history_bins: int
    observed_bins: int
    fitted_at_s: float | None
    parameters: Mapping[str, Detail] = field(default_factory=dict)
