"""The backtest driver: one policy, one trace, one simulated pipeline.

`simulate` builds a simulator of the requested fidelity, an `Engine` whose metric source and
actuator are the simulator (`backtest.simmetrics`), and alternates `sim.advance_to(t)` with
`engine.step(t)` every `interval_s` on a `FakeClock`, from the trace's start to its end. The
engine is the same one the sidecar daemon runs; only the clock and the adapters differ.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping

from tqdm import tqdm

from elastiscale.backtest.drift import DriftSchedule
from elastiscale.backtest.fluid import FluidSimulator
from elastiscale.backtest.model import SimulationResult, Simulator, service_models
from elastiscale.backtest.simmetrics import SimulatedMetricSource, SimulatorActuator
from elastiscale.clock import FakeClock
from elastiscale.config import Config
from elastiscale.controllers.base import Policy
from elastiscale.engine import Engine
from elastiscale.trace import Trace

#: Fidelity names accepted by `simulate` (and the CLI's --fidelity).
FIDELITIES = ("fast", "discrete-event")


def build_simulator(
    config: Config,
    trace: Trace,
    initial_replicas: Mapping[str, int],
    *,
    fidelity: str = "fast",
    step_s: float | None = None,
    seed: int = 0,
) -> Simulator:
    """A simulator of `fidelity` ("fast": fluid, "discrete-event": per request)."""
    if fidelity == "fast":
        return FluidSimulator(config, trace, initial_replicas, step_s=step_s, seed=seed)
    if fidelity == "discrete-event":
        from elastiscale.backtest.des import DiscreteEventSimulator

        return DiscreteEventSimulator(config, trace, initial_replicas, step_s=step_s, seed=seed)
    raise ValueError(f"fidelity: unknown value {fidelity!r} (expected one of {FIDELITIES})")


def simulate(
    config: Config,
    trace: Trace,
    policy: Policy,
    *,
    fidelity: str = "fast",
    initial_replicas: Mapping[str, int],
    interval_s: float | None = None,
    metrics_delay_s: float = 0.0,
    rate_window_s: float = 60.0,
    seed: int = 0,
    progress: bool = False,
    step_s: float | None = None,
) -> SimulationResult:
    """Replay `trace` into `config`'s pipeline under `policy` and return what happened.

    Every ingress component receives the whole trace. The engine ticks every `interval_s`
    (default: the policy's own `interval_s` attribute, else `config.control.interval_s`) at
    trace.start_s, start + interval, ... before trace.end_s; the simulator runs to the end of
    the trace and then drains what is still queued. `step_s` is the simulator's step (default:
    the trace's bin). `progress` shows a bar on stderr when it is a terminal. A `scenario:`
    in `config` drifts the simulated truth on the way (`backtest.drift`).
    """
    run = SteppedRun(
        config,
        trace,
        policy,
        fidelity=fidelity,
        initial_replicas=initial_replicas,
        interval_s=interval_s,
        metrics_delay_s=metrics_delay_s,
        rate_window_s=rate_window_s,
        seed=seed,
        step_s=step_s,
    )
    show = progress and sys.stderr.isatty()
    bar = tqdm(total=run.ticks, desc=f"{getattr(policy, 'name', 'policy')} ({fidelity})",
               unit="tick", disable=not show, leave=False, mininterval=0.5)  # fmt: skip
    try:
        while run.step():
            bar.update(1)
    finally:
        bar.close()
    return run.finish()


class SteppedRun:
    """One backtest advanced a tick at a time: `step()` until it returns False, then
    `finish()` for the result. `simulate` runs one to its end; a calibration steps its
    candidates side by side (backtest/side_by_side.py), with the same numbers as one by one."""

    def __init__(
        self,
        config: Config,
        trace: Trace,
        policy: Policy,
        *,
        fidelity: str = "fast",
        initial_replicas: Mapping[str, int],
        interval_s: float | None = None,
        metrics_delay_s: float = 0.0,
        rate_window_s: float = 60.0,
        seed: int = 0,
        step_s: float | None = None,
    ) -> None:
        missing = [n for n in config.pipeline.components if n not in initial_replicas]
        if missing:
            raise ValueError(f"initial_replicas: no count for component {missing[0]!r}")
        self.trace = trace
        self.tick_s = _interval(config, policy, interval_s)
        self.sim = build_simulator(
            config, trace, initial_replicas, fidelity=fidelity, step_s=step_s, seed=seed
        )
        self.drift = DriftSchedule(config, service_models(config, trace), trace.start_s)
        self.clock = FakeClock(trace.start_s)
        metrics = SimulatedMetricSource(
            self.sim,
            config,
            self.clock,
            rate_window_s=rate_window_s,
            delay_s=metrics_delay_s,
            has_tokens=trace.has_unit("tokens"),
        )
        self.engine = Engine(
            config, metrics=metrics, actuator=SimulatorActuator(self.sim), policies=[policy]
        )
        self.engine.interval_s = self.tick_s  # policies' lead times use the interval ticked
        #: Engine ticks of the whole run, and how many have run.
        self.ticks = max(1, math.ceil(trace.duration_s / self.tick_s - 1e-9))
        self.done = 0
        self.scaled: dict[str, int] = dict.fromkeys(config.pipeline.components, 0)

    def step(self) -> bool:
        """Run the next tick; False (nothing run) once every tick has."""
        k = self.done
        if k >= self.ticks:
            return False
        now_s = self.trace.start_s + k * self.tick_s
        self.drift.advance(self.sim, now_s)
        self.clock.set(now_s)
        scaled = self.scaled
        for record in self.engine.step(now_s):
            if record.outcome == "scaled":
                scaled[record.component] += 1
        self.done = k + 1
        return True

    def finish(self) -> SimulationResult:
        """Simulate to the trace's end (draining what is queued) and return the result."""
        trace, clock = self.trace, self.clock
        self.drift.advance(self.sim, trace.end_s)
        clock.set(max(clock.now_s(), trace.end_s))
        result = self.sim.result()
        result.scaling_actions = sum(self.scaled.values())
        result.scaling_actions_by_component = self.scaled
        return result


def _interval(config: Config, policy: Policy, interval_s: float | None) -> float:
    if interval_s is None:
        own = getattr(policy, "interval_s", None)
        interval_s = float(own) if own is not None else config.control.interval_s
    if not interval_s > 0:
        raise ValueError(f"interval_s = {interval_s}, must be > 0")
    return float(interval_s)
