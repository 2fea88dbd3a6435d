"""In-memory twins of the adapters, shipped for users' own tests and for dry runs.

- `SeriesMetricSource` replays tables of series (or a trace propagated through the pipeline)
  as observations, with an optional reporting delay.
- `RecordingActuator` keeps replica counts in a dict and records every call.
- `DryRunActuator` reads from another actuator (or its own table) and only logs changes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from elastiscale.adapters.base import ActuationResult, Actuator, MetricSource
from elastiscale.observations import SIGNALS, Observation, ReplicaState
from elastiscale.trace import Trace, load_trace

if TYPE_CHECKING:
    from elastiscale.config import Config
    from elastiscale.pipeline import Pipeline

log = logging.getLogger("elastiscale.adapters.memory")

Array = npt.NDArray[np.float64]
_INT_SIGNALS = ("ready_replicas", "desired_replicas")


class SeriesMetricSource:
    """Observations read from series: `series[component][signal] = (times_s, values)`.

    At `now_s` each signal takes its latest point at or before `now_s - delay_s`. A component or
    signal without such a point is missing ("no data"); a NaN value is missing ("nan").
    """

    def __init__(
        self, series: Mapping[str, Mapping[str, tuple[Array, Array]]], delay_s: float = 0.0
    ) -> None:
        for component, signals in series.items():
            for signal, (times, values) in signals.items():
                if signal not in SIGNALS:
                    raise ValueError(f"series[{component!r}]: unknown signal {signal!r}")
                if np.shape(times) != np.shape(values):
                    raise ValueError(f"series[{component!r}][{signal!r}]: lengths differ")
        self._series = {
            c: {
                s: (np.asarray(t, dtype=float), np.asarray(v, dtype=float))
                for s, (t, v) in sig.items()
            }
            for c, sig in series.items()
        }
        self.delay_s = delay_s

    @classmethod
    def from_trace(
        cls, trace: Trace, pipeline: Pipeline, window_s: float = 60.0, delay_s: float = 0.0
    ) -> SeriesMetricSource:
        """Demand of every component from an ingress trace, through the configured fan-outs.

        Each ingress component receives the whole trace. The reported rate at the end of bin i
        is the mean over the bins of the last `window_s` (what `rate(x[1m])` shows), for both
        requests and, when the trace has them, tokens.
        """
        bins = max(1, round(window_s / trace.bin_s))
        times = trace.t_s + trace.bin_s
        per_signal: dict[str, dict[str, Array]] = {
            "demand_rps": pipeline.propagate_series(
                {n: _rolling_mean(trace.rate_rps(), bins) for n in pipeline.ingress}
            )
        }
        if trace.has_unit("tokens"):
            tokens = _rolling_mean(trace.work("tokens") / trace.bin_s, bins)
            per_signal["tokens_per_s"] = pipeline.propagate_series(
                {n: tokens for n in pipeline.ingress}
            )
        series = {
            name: {signal: (times, values[name]) for signal, values in per_signal.items()}
            for name in pipeline.order
        }
        return cls(series, delay_s=delay_s)

    def observe(self, components: Sequence[str], now_s: float) -> dict[str, Observation]:
        cutoff_s = now_s - self.delay_s
        out: dict[str, Observation] = {}
        for name in components:
            values: dict[str, Any] = {}
            missing: dict[str, str] = {}
            stamps: list[float] = []
            for signal, (times, series) in self._series.get(name, {}).items():
                i = int(np.searchsorted(times, cutoff_s, side="right")) - 1
                if i < 0:
                    missing[signal] = "no data"
                    continue
                value = float(series[i])
                if np.isnan(value):
                    missing[signal] = "nan"
                    continue
                values[signal] = round(value) if signal in _INT_SIGNALS else value
                stamps.append(float(times[i]))
            for signal in SIGNALS:
                if signal not in values:
                    missing.setdefault(signal, "no data")
            at_s = min(stamps) if stamps else now_s
            out[name] = Observation(component=name, at_s=at_s, missing=missing, **values)
        return out


def _rolling_mean(values: Array, bins: int) -> Array:
    """Mean of the last `bins` values at each index (fewer at the start)."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    idx = np.arange(1, values.size + 1)
    lo = np.maximum(idx - bins, 0)
    means: Array = (sums[idx] - sums[lo]) / (idx - lo)
    return means


def table_states(table: Mapping[str, int], components: Sequence[str]) -> dict[str, ReplicaState]:
    """The counts of `components` kept in `table`, as a platform would report them with every
    replica it was asked for ready (a component not in the table is unknown: left out)."""
    return {n: ReplicaState(desired=table[n], ready=table[n]) for n in components if n in table}


@dataclass(frozen=True, slots=True)
class ScaleCall:
    """One `scale` call: the component and the count it was asked for."""

    component: str
    replicas: int


class RecordingActuator:
    """Replica counts kept in memory; scale-ups are ready at once. Records every `scale` call."""

    def __init__(self, initial: Mapping[str, int]) -> None:
        self.replicas: dict[str, int] = dict(initial)
        self.calls: list[ScaleCall] = []

    @classmethod
    def for_config(cls, config: Config) -> RecordingActuator:
        """Start every component at `replicas.initial`, else `replicas.min`."""
        start = {}
        for name, comp in config.pipeline.components.items():
            start[name] = (
                comp.replicas.initial if comp.replicas.initial is not None else comp.replicas.min
            )
        return cls(start)

    def read(self, components: Sequence[str]) -> dict[str, ReplicaState]:
        return table_states(self.replicas, components)

    def scale(self, component: str, replicas: int) -> ActuationResult:
        self.calls.append(ScaleCall(component, replicas))
        self.replicas[component] = replicas
        return ActuationResult.success(component, replicas)


class DryRunActuator:
    """Reads from `inner` (or keeps its own table); logs what it would change, changes nothing."""

    def __init__(
        self, inner: Actuator | None = None, initial: Mapping[str, int] | None = None
    ) -> None:
        self.inner = inner
        self._table = dict(initial or {})
        self.would_scale: list[ScaleCall] = []

    def read(self, components: Sequence[str]) -> Mapping[str, ReplicaState]:
        if self.inner is not None:
            return self.inner.read(components)
        return table_states(self._table, components)

    def scale(self, component: str, replicas: int) -> ActuationResult:
        log.info("dry run: would scale %s to %d", component, replicas)
        self.would_scale.append(ScaleCall(component, replicas))
        return ActuationResult.success(component, replicas)


# Registry factories: `factory(config, options)`.


class TraceSourceParams(BaseModel):
    """`metrics: {type: trace, path: FILE, window_s: 60, delay_s: 0}`."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(..., min_length=1, description="trace CSV (optionally gzipped)")
    window_s: float = Field(60.0, gt=0, description="rate window, like rate(x[1m])")
    delay_s: float = Field(0.0, ge=0, description="reporting delay")
    loop: bool = Field(False, description="repeat the trace forever (for `elastiscale run`)")


class LoopingSource:
    """Replays `inner`, whose data covers [start_s, start_s + period_s], over and over: at
    `now_s` it observes `inner` at the same phase of the period (counted from time 0, the Unix
    epoch) and dates the observations in `now_s`'s time. So a trace with times from 0 serves a
    daemon on the system clock. Worked example, a 3,600 s trace from 0: at now_s =
    1,700,000,100 the phase is 1,700,000,100 mod 3,600 = 800 s into the trace."""

    def __init__(self, inner: MetricSource, start_s: float, period_s: float) -> None:
        if period_s <= 0:
            raise ValueError(f"period_s = {period_s}, must be > 0")
        self.inner = inner
        self.start_s = start_s
        self.period_s = period_s

    def observe(self, components: Sequence[str], now_s: float) -> dict[str, Observation]:
        phase_s = self.start_s + (now_s - self.start_s) % self.period_s
        shift_s = now_s - phase_s
        got = self.inner.observe(components, phase_s)
        return {name: replace(obs, at_s=obs.at_s + shift_s) for name, obs in got.items()}


def trace_metric_source(
    config: Config, options: TraceSourceParams
) -> SeriesMetricSource | LoopingSource:
    """Replay a trace file as the metrics of every component (for dry runs and demos); with
    `loop`, forever and on any clock (see `LoopingSource`)."""
    from elastiscale.pipeline import Pipeline

    trace = load_trace(options.path)
    source = SeriesMetricSource.from_trace(
        trace, Pipeline(config.pipeline), window_s=options.window_s, delay_s=options.delay_s
    )
    if not options.loop:
        return source
    # Rates are stamped at bin ends: the first at start_s + bin_s, the last at end_s.
    return LoopingSource(source, trace.start_s + trace.bin_s, trace.duration_s)


trace_metric_source.Params = TraceSourceParams  # type: ignore[attr-defined]


def recording_actuator(config: Config, options: Mapping[str, Any]) -> RecordingActuator:
    return RecordingActuator.for_config(config)


def dry_run_actuator(config: Config, options: Mapping[str, Any]) -> DryRunActuator:
    start = RecordingActuator.for_config(config).replicas
    return DryRunActuator(initial=start)
