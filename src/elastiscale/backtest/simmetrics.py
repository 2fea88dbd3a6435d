"""What policies see in a backtest: a `MetricSource` and an `Actuator` backed by a simulator.

`SimulatedMetricSource` reports what a Prometheus scraping the simulated pipeline would have
shown at `now - delay_s`:

- demand_rps, tokens_per_s: arrivals over the rate window ending at `now - delay_s` divided by
  its length (what `rate(x[1m])` shows). tokens_per_s is in the component's capacity unit when
  that is a token unit, else input + output tokens when the trace has them, else missing;
- in_flight, queue_length: requests in service and waiting, at the end of the last step;
- utilization: busy slot-seconds / ready slot-seconds over the rate window (a CPU-style
  average); missing when no replica was ready;
- latency_p95_s: the completion-weighted mean of the steps' p95 latency at the component over
  the window; missing when nothing completed;
- ready_replicas, desired_replicas: at the end of the last step.

Data exist only for whole simulated steps: `Observation.at_s` is the end of the last step used,
so the observation's age is the delay plus up to one step. Everything is O(1) per signal: the
step logs keep running sums. Asking for data after the runner's clock (or past what has been
simulated) raises `FutureDataError`: no policy can see the future.

`SimulatorActuator` is the platform: reads are the simulator's current replica counts, and a
scale call is `Simulator.set_desired` at the simulator's `now_s`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from elastiscale.adapters.base import ActuationResult
from elastiscale.backtest.model import Simulator
from elastiscale.backtest.steplog import StepLog
from elastiscale.clock import FakeClock
from elastiscale.config import Config
from elastiscale.errors import FutureDataError
from elastiscale.observations import Observation, ReplicaState

_TOLERANCE_S = 1e-9
_CA, _CW, _CT = StepLog.T_ARRIVALS, StepLog.T_WORK, StepLog.T_TOKENS
_CB, _CC = StepLog.T_BUSY, StepLog.T_CAPACITY
_CN, _CL = StepLog.T_COMPLETIONS, StepLog.T_LATENCY_WEIGHTED


class SimulatedMetricSource:
    """A `MetricSource` reading a simulator's step logs (see the module docstring)."""

    def __init__(
        self,
        simulator: Simulator,
        config: Config,
        clock: FakeClock,
        *,
        rate_window_s: float = 60.0,
        delay_s: float = 0.0,
        has_tokens: bool = False,
    ) -> None:
        if not rate_window_s > 0:
            raise ValueError(f"rate_window_s = {rate_window_s}, must be > 0")
        if delay_s < 0:
            raise ValueError(f"metrics_delay_s = {delay_s}, must be >= 0")
        self.simulator = simulator
        self.clock = clock
        self.rate_window_s = rate_window_s
        self.delay_s = delay_s
        self.step_s = simulator.step_s
        # Whole steps in the rate window, at least one: 60 s over 10 s steps is 6 steps.
        self._window_steps = max(1, round(rate_window_s / simulator.step_s))
        #: The components whose capacity is in tokens (their load is the work, not requests).
        self._token_units = {
            n for n, c in config.pipeline.components.items() if c.capacity_unit != "requests"
        }
        self._has_tokens = has_tokens
        # The steps a window reaches back from the last step read: the window and the delay.
        lookback = self._window_steps + math.ceil(delay_s / simulator.step_s) + 2
        for name in config.pipeline.components:
            simulator.steps(name).keep_lookback(lookback)
        self._logs: dict[str, StepLog] = {}

    def _check_time(self, t_s: float) -> None:
        now_s = self.clock.now_s()
        if t_s > now_s + _TOLERANCE_S:
            raise FutureDataError(f"asked for data at {t_s:g} s, after now = {now_s:g} s")
        if t_s > self.simulator.now_s + _TOLERANCE_S:
            raise FutureDataError(
                f"asked for data at {t_s:g} s, past the simulated time {self.simulator.now_s:g} s"
            )

    def steps_until(self, component: str, t_s: float) -> tuple[StepLog, int]:
        """The component's log and how many of its steps end at or before `t_s`."""
        self._check_time(t_s)
        log = self.simulator.steps(component)
        done = math.floor((t_s - log.t0_s) / self.step_s + 1e-9)
        return log, max(0, min(done, len(log)))

    def observe(self, components: Sequence[str], now_s: float) -> dict[str, Observation]:
        self._check_time(now_s)
        cutoff_s = now_s - self.delay_s
        observe_one = self._observe_one
        return {name: observe_one(name, cutoff_s) for name in components}

    def _observe_one(self, name: str, cutoff_s: float) -> Observation:
        log = self._logs.get(name)
        if log is None:  # a simulator's step log is one object for the whole run
            log = self._logs[name] = self.simulator.steps(name)
        i = math.floor((cutoff_s - log.t0_s) / self.step_s + 1e-9)
        rows = log.steps  # len(log)
        if i > rows:
            i = rows
        if i <= 0:
            return Observation.unavailable(name, cutoff_s, "no data")
        lo = i - self._window_steps
        # The step before the window (none when the window reaches back before the start: then
        # the rate is over what exists), and the last step.
        window_s = (i - (lo if lo > 0 else 0)) * self.step_s  # (i - max(lo, 0)) steps
        start: tuple[float, ...] | None
        if lo >= 1:
            start, end = log.tail_span(lo - 1, i - 1)
        else:
            start, end = None, log.tail_values(i - 1)
        # The last step's row, in the order of StepLog's T_ fields: running sums, then its own
        # ready count, queue, calls in flight and desired count.
        (arrivals, work, tokens, busy, capacity, completions, latency_sum,
         ready_end, queue, in_flight, desired) = end  # fmt: skip
        if start is not None:
            arrivals -= start[_CA]
            work -= start[_CW]
            tokens -= start[_CT]
            busy -= start[_CB]
            capacity -= start[_CC]
            completions -= start[_CN]
            latency_sum -= start[_CL]
        missing: dict[str, str] = {}
        tokens_per_s: float | None
        if name in self._token_units:
            tokens_per_s = work / window_s
        elif self._has_tokens:
            tokens_per_s = tokens / window_s
        else:
            tokens_per_s = None
            missing["tokens_per_s"] = "no token data"
        utilization: float | None = None
        if capacity > 0:
            busy_share = busy / capacity
            # min(1.0, busy_share) without the call (NaN gives 1.0 there too)
            utilization = busy_share if busy_share < 1.0 else 1.0
        else:
            missing["utilization"] = "no ready replicas"
        latency: float | None = None
        if completions > 0:
            latency = latency_sum / completions
        else:
            missing["latency_p95_s"] = "no completions"
        # positional, in the fields' order (component, at_s, demand_rps, tokens_per_s,
        # in_flight, queue_length, utilization, latency_p95_s, ttft_p95_s, itl_p95_s,
        # ready_replicas, desired_replicas, missing): cheaper than keywords, once per
        # component and tick
        return Observation(
            name,
            log.t0_s + i * self.step_s,
            arrivals / window_s,
            tokens_per_s,
            in_flight,
            queue,
            utilization,
            latency,
            None,
            None,
            round(ready_end),
            round(desired),
            missing,
        )


class SimulatorActuator:
    """The simulated platform: reads and sets replica counts on a simulator at its `now_s`."""

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator
        self.calls = 0

    def read(self, components: Sequence[str]) -> Mapping[str, ReplicaState]:
        return {name: self.simulator.state(name) for name in components}

    def scale(self, component: str, replicas: int) -> ActuationResult:
        self.calls += 1
        self.simulator.set_desired(component, replicas)
        return ActuationResult.success(component, replicas)
