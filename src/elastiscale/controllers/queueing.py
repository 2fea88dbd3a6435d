"""Capacity models: from a request rate to the replicas that serve it within a latency budget.

Two models, one interface (`served_rps(n)`, `replicas_for(rate_rps)`):

- `QueueingSizer`: n replicas are an M/M/c queue (c = n x concurrency slots per replica) and
  must keep the `quantile` (p95) of the Erlang-C wait within a share of the component's queueing
  slack (latency budget - service time). The table of the highest rate n replicas serve within
  the budget is the oracle's own (`pipeline_model.max_rate_within_budget`), so the policy
  and the reference size with the same arithmetic. Small pools get the headroom they need and
  large ones run hot. Worked numbers, the agent example's writer (8 s calls, 1.2 calls/s per
  replica, 29.8 s budget, so 21.8 s of slack and 5.45 s of it for random waiting): one replica
  serves 0.88 calls/s within budget (74% of its capacity), two 1.01 each (84%), 26 replicas
  1.18 each (98%); 30 calls/s need 26 replicas.
- `UtilizationSizer`: ceil(rate / (capacity x target utilization)), the HPA's arithmetic, kept
  for the ablation that measures what the queueing model buys.

The slack is shared as the oracle shares it: `burst_share` of it is left to the swings of
demand inside the window the rate is measured over (the forecast covers the window's mean, not
the seconds inside it), the rest bounds the random Erlang-C wait.

Bursty arrivals (arrivals.py) wait `variability` times longer than Erlang C says (the
Allen-Cunneen correction, `(c_a^2 + 1) / 2` against M/M/c): the random wait's allowance is
divided by it, so a component whose calls come in batches keeps the free slots a batch needs
(at the limit, the square-root staffing that makes waiting itself rare). Sizers per factor are
cached on a 10% geometric grid (`sizer_for`); a factor of 1 is the sizer as without it.

A token-sized component (capacity in tokens/s) is sized in requests of its current mean size:
3,000 tokens/s per replica at 1,500 tokens a call is 2 calls/s per replica. Tables are cached
per size, on a 2% geometric grid of sizes, so a drifting mean size costs a table now and then.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt

from elastiscale.controllers.reactive import ceil_count
from elastiscale.pipeline_model import max_rate_within_budget

Array = npt.NDArray[np.float64]

#: Tables of a token-sized component are cached per mean call size on this geometric grid.
SIZE_GRID_RATIO = 1.02
#: ... and per arrival variability factor on this one (1 is a point of it).
VARIABILITY_GRID_RATIO = 1.1


def variability_index(factor: float) -> int:
    """The grid point of a variability factor (0 for 1, Poisson)."""
    return max(0, round(math.log(max(factor, 1.0)) / math.log(VARIABILITY_GRID_RATIO)))


class Sizer(Protocol):
    """Replicas for a request rate, and the rate a count serves, for one component."""

    max_replicas: int

    def served_rps(self, replicas: int) -> float:
        """The highest request rate `replicas` serve within the component's budget."""
        ...

    def replicas_for(self, rate_rps: float) -> int:
        """The fewest replicas serving `rate_rps` within budget (max_replicas + 1: none do)."""
        ...


class QueueingSizer:
    """Erlang-C sizing against a latency budget (see the module docstring); `slack_s`, when
    given, is the queue wait the objective allows outright instead of budget - service time;
    `variability` (>= 1) divides the random wait's allowance (bursty arrivals)."""

    def __init__(
        self,
        *,
        capacity_rps: float,
        service_time_s: float,
        budget_s: float,
        max_replicas: int,
        burst_share: float,
        quantile: float = 0.95,
        slack_s: float | None = None,
        variability: float = 1.0,
    ) -> None:
        self.capacity_rps = capacity_rps
        self.service_time_s = service_time_s
        self.budget_s = budget_s
        self.max_replicas = max_replicas
        if slack_s is None:
            slack_s = max(budget_s - service_time_s, 0.0)
            # The random wait may use what the bursts leave of the slack.
            self.wait_budget_s = budget_s - burst_share * slack_s
        else:
            # A wait allowance given outright (slo_sizing.py: TTFT and ITL objectives).
            self.wait_budget_s = service_time_s + (1.0 - burst_share) * slack_s
        if variability > 1.0:
            self.wait_budget_s = (
                service_time_s + max(self.wait_budget_s - service_time_s, 0.0) / variability
            )
        self.variability = variability
        self.quantile = quantile
        self.table: Array = max_rate_within_budget(
            max_replicas, capacity_rps, service_time_s, self.wait_budget_s, quantile
        )
        # The table as floats, for a bisection that costs less than numpy's call per tick.
        self._rates: list[float] = self.table.tolist()

    def served_rps(self, replicas: int) -> float:
        if replicas <= 0:
            return 0.0
        if replicas > self.max_replicas:
            # Beyond the table, each replica adds its capacity (large pools run at capacity).
            extra = replicas - self.max_replicas
            return float(self.table[-1]) + extra * self.capacity_rps
        return float(self.table[replicas])

    def replicas_for(self, rate_rps: float) -> int:
        if rate_rps <= 0.0:
            return 0
        if math.isnan(rate_rps):
            return len(self._rates)  # where `np.searchsorted` places NaN: past the end
        # The table is non-decreasing, so this is `np.searchsorted(table, ..., side="left")`.
        return bisect.bisect_left(self._rates, rate_rps * (1 - 1e-9))


class UtilizationSizer:
    """ceil(rate / (capacity x utilization)): the HPA's sizing, for comparison."""

    def __init__(self, *, capacity_rps: float, utilization: float, max_replicas: int) -> None:
        self.capacity_rps = capacity_rps
        self.utilization = utilization
        self.max_replicas = max_replicas

    def served_rps(self, replicas: int) -> float:
        return max(replicas, 0) * self.capacity_rps * self.utilization

    def replicas_for(self, rate_rps: float) -> int:
        if rate_rps <= 0.0:
            return 0
        return min(self.max_replicas + 1, ceil_count(rate_rps / self.served_rps(1)))


class TokenSizerCache:
    """Sizers of one token-sized component, per mean call size (tokens per request); `factory`
    builds the sizer for a size when the component has TTFT/ITL objectives (slo_sizing.py)."""

    def __init__(
        self,
        *,
        capacity_tokens_per_s: float,
        service_time_s: float,
        budget_s: float,
        max_replicas: int,
        burst_share: float,
        queueing: bool,
        utilization: float,
        factory: Callable[[float], Sizer] | None = None,
    ) -> None:
        self.capacity_tokens_per_s = capacity_tokens_per_s
        self.service_time_s = service_time_s
        self.budget_s = budget_s
        self.max_replicas = max_replicas
        self.burst_share = burst_share
        self.queueing = queueing
        self.utilization = utilization
        self.factory = factory  # the sizer for a call size, when not the budget's own
        self._cache: dict[tuple[int, int], Sizer] = {}

    def sizer(self, tokens_per_request: float, variability: float = 1.0) -> Sizer:
        """The sizer for calls of `tokens_per_request` (snapped to the 2% grid) arriving with
        `variability` (snapped to the 10% grid; only the Erlang-C sizer uses it)."""
        index = round(math.log(max(tokens_per_request, 1e-9)) / math.log(SIZE_GRID_RATIO))
        spread = variability_index(variability) if self.queueing and self.factory is None else 0
        cached = self._cache.get((index, spread))
        if cached is not None:
            return cached
        size = SIZE_GRID_RATIO**index
        capacity_rps = self.capacity_tokens_per_s / size
        made: Sizer
        if self.factory is not None:
            made = self.factory(size)
        elif self.queueing:
            made = QueueingSizer(
                capacity_rps=capacity_rps,
                service_time_s=self.service_time_s,
                budget_s=self.budget_s,
                max_replicas=self.max_replicas,
                burst_share=self.burst_share,
                variability=VARIABILITY_GRID_RATIO**spread,
            )
        else:
            made = UtilizationSizer(
                capacity_rps=capacity_rps,
                utilization=self.utilization,
                max_replicas=self.max_replicas,
            )
        self._cache[(index, spread)] = made
        return made


class VariabilitySizers:
    """The Erlang-C sizers of one request-sized component per arrival variability factor
    (snapped to the 10% grid); the factor 1 is `base` itself."""

    def __init__(self, base: QueueingSizer, burst_share: float) -> None:
        self.base = base
        self.burst_share = burst_share
        self._cache: dict[int, QueueingSizer] = {0: base}

    def sizer_for(self, variability: float) -> QueueingSizer:
        spread = variability_index(variability)
        cached = self._cache.get(spread)
        if cached is None:
            cached = QueueingSizer(
                capacity_rps=self.base.capacity_rps,
                service_time_s=self.base.service_time_s,
                budget_s=self.base.budget_s,
                max_replicas=self.base.max_replicas,
                burst_share=self.burst_share,
                quantile=self.base.quantile,
                variability=VARIABILITY_GRID_RATIO**spread,
            )
            self._cache[spread] = cached
        return cached
