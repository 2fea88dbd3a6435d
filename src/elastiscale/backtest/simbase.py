"""What both simulators (`fluid`, `des`) do the same way, written once.

`SimulatorFrame` holds the frame of a simulation: the pipeline and its components' service
models, the grid of steps over the trace (`step_s`, `n_steps`, default step the trace's bin),
the components' initial replica counts (validated), the ingress arrivals re-binned into steps,
the time checks of `advance_to`, and the per-component step logs the simulated metric source
reads. Each fidelity adds its own model of what happens inside a step.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from elastiscale.backtest.model import ComponentSeries, ServiceModel, service_models
from elastiscale.backtest.steplog import StepLog
from elastiscale.config import Config
from elastiscale.pipeline import Pipeline
from elastiscale.trace import Trace

Array = npt.NDArray[np.float64]

_EPS = 1e-9


def per_step(trace: Trace, values: Array, t0_s: float, step_s: float, n: int) -> Array:
    """Per-bin counts re-binned into `n` steps of `step_s` from `t0_s` (linear within a bin)."""
    edges = np.append(trace.t_s, trace.t_s[-1] + trace.bin_s)
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    at = t0_s + step_s * np.arange(n + 1, dtype=float)
    return np.diff(np.interp(at, edges, cumulative))


def _floats(values: Array) -> array[float]:
    """A float64 numpy array as an `array('d')` (the same doubles, indexed without numpy's
    per-item cost in the simulators' inner loops)."""
    out = array("d")
    out.frombytes(np.ascontiguousarray(values, dtype=np.float64).tobytes())
    return out


class ComponentFrame:
    """What both simulators keep of one component: its place in the topological order, its
    `ServiceModel` (and the fields of it read in inner loops), and its step log."""

    __slots__ = ("hold_per_work", "index", "log", "model", "name", "slots", "timeout", "unit")

    def __init__(
        self, index: int, model: ServiceModel, t0_s: float, step_s: float, steps: int = 0
    ) -> None:
        """`steps`: how many steps the simulator will record, when it knows (0: unknown)."""
        self.index = index
        self.name = model.name
        self.model = model
        self.unit = model.unit
        self.slots = model.slots
        self.hold_per_work = model.hold_per_work_s
        self.timeout = model.timeout_s
        self.log = StepLog(t0_s, step_s, capacity=steps)


class SimulatorFrame:
    """The shared frame of a simulator (see the module docstring); subclasses fill `_parts`
    with one object per component, in topological order, each with its `log`."""

    fidelity = ""

    def __init__(self, config: Config, trace: Trace, step_s: float | None) -> None:
        self.config = config
        self.pipeline = Pipeline(config.pipeline)
        self.models = service_models(config, trace)
        self.step_s = float(step_s if step_s is not None else trace.bin_s)
        if not self.step_s > 0:
            raise ValueError(f"step_s = {self.step_s}, must be > 0")
        self.start_s = trace.start_s
        self.end_s = trace.end_s
        self.n_steps = max(1, math.ceil(trace.duration_s / self.step_s - 1e-9))
        self._index = {name: i for i, name in enumerate(self.pipeline.order)}
        self._now_s = self.start_s
        self._parts: Sequence[ComponentFrame] = []

    def initial_counts(self, initial_replicas: Mapping[str, int]) -> list[int]:
        """The initial replica count of each component, in topological order."""
        counts = []
        for name in self.pipeline.order:
            start = initial_replicas.get(name)
            if start is None:
                raise ValueError(f"initial_replicas: no count for component {name!r}")
            if start < 0:
                raise ValueError(f"initial_replicas[{name!r}] = {start}, must be >= 0")
            counts.append(int(start))
        return counts

    def arrivals(
        self, trace: Trace
    ) -> tuple[array[float], array[float] | None, array[float] | None]:
        """Ingress requests per step, and input and output tokens per step (None without
        token columns), as flat float arrays (a list of 2.7 million floats costs 86 MB, the
        array 22 MB)."""
        n = self.n_steps
        req = _floats(per_step(trace, trace.requests, self.start_s, self.step_s, n))
        if not trace.has_unit("tokens"):
            return req, None, None
        tin = per_step(trace, trace.columns["input_tokens"], self.start_s, self.step_s, n)
        tout = per_step(trace, trace.columns["output_tokens"], self.start_s, self.step_s, n)
        return req, _floats(tin), _floats(tout)

    @property
    def now_s(self) -> float:
        return self._now_s

    def check_advance(self, t_s: float) -> None:
        """`advance_to(t_s)` may not go back in time."""
        if t_s < self._now_s - _EPS:
            raise ValueError(f"advance_to({t_s}): before the simulation's time {self._now_s}")

    def steps(self, component: str) -> StepLog:
        return self._parts[self._index[component]].log

    def series(self, component: str) -> ComponentSeries:
        return ComponentSeries.from_steps(self.steps(component))
