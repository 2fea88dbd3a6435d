"""A robust scalar Kalman filter for one proportionality constant that drifts.

Both the capacity of a replica and the service time of a call are such constants:
served requests/s = capacity x busy replicas, and in flight = served requests/s x service time
(Little's law). The state is the constant `theta`, a random walk (it drifts when a model version
rolls out, a node pool changes, prompts grow); one measurement is a pair (x, y) with
y = theta x + noise.

- The measurement noise is relative: its standard deviation is `noise_cv` x the prediction, so a
  busy replica and a quiet one weigh their evidence alike.
- Outliers: the innovation is clipped at `clip` standard deviations before the update (a Huber
  step), so one wild sample moves the estimate by at most a bounded amount.
- Change points: when `change_after` clipped innovations in a row point the same way, the
  uncertainty is inflated back to the prior's, so a real change is followed within a few samples
  instead of at the clip's pace.
- Confidence is 1 - variance / prior variance, in [0, 1]; callers use the estimate only above a
  threshold. A missing, NaN or infinite x or y, or x <= 0, is ignored: it never moves the
  estimate.

Worked numbers: prior 1.5 req/s with prior_cv 0.5 has variance 0.5625; measurements with
noise_cv 0.1 at theta ~ 0.9 have variance 0.0081 each, so about three of them bring the
confidence above 0.95.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


@dataclass(slots=True)
class ScalarKalman:
    """y = theta x + noise, theta a random walk (see the module docstring)."""

    prior: float
    prior_cv: float = 0.5
    noise_cv: float = 0.1
    drift_per_sqrt_s: float = 0.003  # relative random-walk step per sqrt(second)
    clip: float = 3.0
    change_after: int = 3
    theta: float = math.nan
    variance: float = math.nan
    updated_s: float | None = None
    samples: int = 0
    _run: int = 0  # clipped innovations in a row with the same sign (signed)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.prior) and self.prior > 0):
            raise ValueError(f"prior = {self.prior}, must be a positive finite number")
        if not self.prior_cv > 0:
            raise ValueError(f"prior_cv = {self.prior_cv}, must be > 0")
        if not self.noise_cv > 0:
            raise ValueError(f"noise_cv = {self.noise_cv}, must be > 0")
        self.theta = self.prior
        self.variance = self.prior_variance

    @property
    def prior_variance(self) -> float:
        return (self.prior_cv * self.prior) ** 2

    @property
    def confidence(self) -> float:
        """1 - variance / prior variance: 0 with no evidence, towards 1 with much."""
        return max(0.0, 1.0 - self.variance / self.prior_variance)

    def update(self, now_s: float, x: float | None, y: float | None) -> bool:
        """Fold in one measurement y ~ theta x taken at `now_s`; False when it was unusable."""
        if not (_finite(x) and _finite(y) and _finite(now_s)):
            return False
        assert x is not None and y is not None
        if x <= 0 or y < 0:
            return False
        if self.updated_s is not None and now_s > self.updated_s:
            step = self.drift_per_sqrt_s * self.theta
            self.variance += step * step * (now_s - self.updated_s)
            self.variance = min(self.variance, self.prior_variance)
        predicted = self.theta * x
        noise = (self.noise_cv * max(predicted, 1e-12)) ** 2
        spread = self.variance * x * x + noise
        raw = y - predicted
        innovation = raw
        bound = self.clip * math.sqrt(spread)
        if abs(raw) > bound:
            sign = 1 if raw > 0 else -1
            self._run = self._run + sign if self._run * sign > 0 else sign
            if abs(self._run) >= self.change_after:
                # A run of surprises the same way is a change, not noise: forget the certainty.
                self.variance = self.prior_variance
                self._run = 0
                spread = self.variance * x * x + noise
                bound = self.clip * math.sqrt(spread)
            innovation = max(-bound, min(bound, raw))
        else:
            self._run = 0
        gain = self.variance * x / spread
        self.theta = max(self.theta + gain * innovation, 1e-12)
        self.variance = max((1.0 - gain * x) * self.variance, 1e-18)
        self.updated_s = max(now_s, self.updated_s) if self.updated_s is not None else now_s
        self.samples += 1
        return True

    @property
    def relative_std(self) -> float:
        return math.sqrt(self.variance) / self.theta
