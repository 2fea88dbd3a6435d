"""Start-up times measured from readiness transitions, and their upper quantile.

A lead time must cover slow starts, not the average one, so the estimate in use is a quantile
(`quantile`, default 0.9) of the measured start-up times, with the configured `startup_s` as a
prior counted as `prior_weight` samples older than the first measurement. Recent starts weigh
more (weights halve every `half_life_samples` samples, the prior's too), so a bigger image or a
slower node pool is followed within a few starts. Worked numbers: prior 120 s and three measured
starts of 300 s, half-life 4: weights 1, 0.84, 0.71 and 2 x 0.59 = 1.19 for the prior; the 0.9
quantile is 300 s; confidence 2.55 / 3.74 = 0.68.

`ReadinessTracker` turns replica counts seen over time (desired and ready, as an actuator or a
metric source reports them) into start-up samples: each rise of the starting count (desired -
ready) opens one pending start per replica at the time of the previous look (when the request
was made, at the latest); each rise of the ready count closes the oldest pending starts at the
midpoint between the two looks; a fall of the starting count without as many replicas ready
cancels the newest pending starts (a scale-down cancels starting replicas first). A platform
that says when the change in progress began (SageMaker's update time) passes it as `started_s`,
which then opens the pending starts instead of the previous look. Platforms that report exact
times (a pod's creation and Ready transition) call `StartupEstimator.add` directly.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class StartupEstimator:
    """The upper quantile of measured start-up times, with the configured one as the prior."""

    prior_s: float
    quantile: float = 0.9
    prior_weight: float = 2.0
    half_life_samples: float = 4.0
    window: int = 32
    samples_s: deque[float] = field(default_factory=deque)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.prior_s) and self.prior_s >= 0):
            raise ValueError(f"startup prior = {self.prior_s}, must be a finite number >= 0")
        if not 0 < self.quantile < 1:
            raise ValueError(f"quantile = {self.quantile}, must be in (0, 1)")

    def add(self, duration_s: float | None) -> bool:
        """One measured start-up; a missing, NaN, infinite or negative one is ignored."""
        if duration_s is None or not math.isfinite(duration_s) or duration_s < 0:
            return False
        self.samples_s.append(float(duration_s))
        while len(self.samples_s) > self.window:
            self.samples_s.popleft()
        return True

    def _weighted(self) -> list[tuple[float, float]]:
        n = len(self.samples_s)
        decay = 0.5 ** (1.0 / self.half_life_samples)
        pairs = [(s, decay ** (n - 1 - i)) for i, s in enumerate(self.samples_s)]
        pairs.append((self.prior_s, self._prior_weight_now))
        return sorted(pairs)

    @property
    def _prior_weight_now(self) -> float:
        # The prior is the oldest evidence: it fades with every measured start as they do.
        return float(self.prior_weight * 0.5 ** (len(self.samples_s) / self.half_life_samples))

    @property
    def measured_weight(self) -> float:
        decay = 0.5 ** (1.0 / self.half_life_samples)
        return float(sum(decay**k for k in range(len(self.samples_s))))

    @property
    def confidence(self) -> float:
        """Weight of the measurements over all weight, 0 without any."""
        measured = self.measured_weight
        return measured / (measured + self._prior_weight_now)

    @property
    def measured_s(self) -> float | None:
        """The quantile of the measurements alone (None before the first)."""
        if not self.samples_s:
            return None
        return _quantile(sorted(self.samples_s), self.quantile)

    @property
    def value_s(self) -> float:
        """The start-up time to plan with: the weighted quantile of prior and measurements."""
        pairs = self._weighted()
        total = sum(w for _, w in pairs)
        target = self.quantile * total
        running = 0.0
        for value, weight in pairs:
            running += weight
            if running >= target - 1e-12:
                return value
        return pairs[-1][0]


def _quantile(values: list[float], q: float) -> float:
    index = min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))
    return values[index]


@dataclass(slots=True)
class ReadinessTracker:
    """Start-up samples from replica counts seen over time (see the module docstring)."""

    pending_s: deque[float] = field(default_factory=deque)
    last_s: float | None = None
    last_ready: int | None = None

    def look(
        self, now_s: float, desired: int | None, ready: int | None, started_s: float | None = None
    ) -> list[float]:
        """Counts seen at `now_s`; returns the start-up times completed since the last look.
        `started_s`: when the platform says the change in progress began (SageMaker's update
        time), which replaces the previous look as the start of replicas opened now."""
        if desired is None or ready is None or not math.isfinite(now_s):
            return []
        if self.last_s is not None and now_s <= self.last_s:
            return []
        done: list[float] = []
        starting = max(0, desired - ready)
        if self.last_s is None or self.last_ready is None:
            # The first look: replicas already starting began at an unknown time.
            self.last_s, self.last_ready = now_s, ready
            return []
        rose = max(0, ready - self.last_ready)
        ready_at_s = 0.5 * (self.last_s + now_s)
        for _ in range(min(rose, len(self.pending_s))):
            done.append(max(0.0, ready_at_s - self.pending_s.popleft()))
        while len(self.pending_s) > starting:
            self.pending_s.pop()  # cancelled: the newest first
        opened_s = self.last_s
        if started_s is not None and math.isfinite(started_s) and started_s <= now_s:
            opened_s = started_s
        while len(self.pending_s) < starting:
            self.pending_s.append(opened_s)
        self.last_s, self.last_ready = now_s, ready
        return done
