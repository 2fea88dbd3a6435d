"""A robust scalar Kalman filter for one proportionality constant that drifts.

Both the capacity of a replica and the service time of a call are such constants:
served requests/s = capacity x busy replicas, and in flight = served requests/s x service time
(Little's law). The state is the constant `theta`, a random walk (it drifts when a model version
rolls out, a node pool changes, prompts grow); one measurement is a pair (x, y) with
y = theta x + noise.

- The measurement noise is relative: its standard deviation is `noise_cv` x the prediction, so a
  busy replica and a quiet one weigh their evidence alike.
- Outliers: a sample whose innovation is beyond `clip` standard deviations does not move the
  estimate at all (clipping it instead, a Huber step, still moves it by `clip` deviations each
  time, and outliers that lean one way, x5 and x20 more often than x0, then bias it by 10% or
  more); it only counts towards a change point.
- Change points: when `change_after` rejected innovations in a row point the same way and agree
  with each other (their ratios y / x lie within the clip's band of their median), the estimate
  restarts at that median, as certain as those samples make it, so a real change is followed
  within a few samples instead of never. A run of outliers that disagree with each other (x20,
  then x5) is not a change: a new level repeats itself, outliers do not.
- Confidence is 1 - variance / prior variance, in [0, 1]; callers use the estimate only above a
  threshold. A missing, NaN or infinite x or y, or x <= 0, is ignored: it never moves the
  estimate.

Worked numbers: prior 1.5 req/s with prior_cv 0.5 has variance 0.5625; measurements with
noise_cv 0.1 at theta ~ 0.9 have variance 0.0081 each, so about three of them bring the
confidence above 0.95.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


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
    _run: int = 0  # rejected innovations in a row with the same sign (signed)
    _run_ratios: list[float] = field(default_factory=list)  # their y / x, latest last

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
        bound = self.clip * math.sqrt(spread)
        if abs(raw) > bound:
            sign = 1 if raw > 0 else -1
            if self._run * sign > 0:
                self._run += sign
            else:
                self._run, self._run_ratios = sign, []
            self._run_ratios = [*self._run_ratios, y / x][-self.change_after :]
            if abs(self._run) >= self.change_after and self._consistent(self._run_ratios):
                # Surprises the same way that agree with each other: a new level, not noise.
                self._restart(sorted(self._run_ratios)[len(self._run_ratios) // 2], now_s)
            else:
                self._touch(now_s)
            return True
        self._run, self._run_ratios = 0, []
        gain = self.variance * x / spread
        self.theta = max(self.theta + gain * raw, 1e-12)
        self.variance = max((1.0 - gain * x) * self.variance, 1e-18)
        self._touch(now_s)
        self.samples += 1
        return True

    def _touch(self, now_s: float) -> None:
        self.updated_s = now_s if self.updated_s is None else max(now_s, self.updated_s)

    def _consistent(self, ratios: list[float]) -> bool:
        """The ratios agree within the clip's band of measurement noise around their median."""
        middle = sorted(ratios)[len(ratios) // 2]
        band = self.clip * self.noise_cv * middle
        return middle > 0 and all(abs(r - middle) <= band for r in ratios)

    def _restart(self, theta: float, now_s: float) -> None:
        """Start again at `theta` (a change point), as certain as the prior and the run's
        `change_after` agreeing samples together make it."""
        self.theta = max(theta, 1e-12)
        sample_variance = (self.noise_cv * self.theta) ** 2
        self.variance = 1.0 / (1.0 / self.prior_variance + self.change_after / sample_variance)
        self._run, self._run_ratios = 0, []
        self._touch(now_s)
        self.samples += 1

    @property
    def relative_std(self) -> float:
        return math.sqrt(self.variance) / self.theta
