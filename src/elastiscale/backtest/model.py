"""The shapes shared by the simulators, the runner and the report.

A simulator advances a pipeline under an ingress trace in fixed steps of `step_s` seconds. The
runner alternates `advance_to(t)` with `Engine.step(t)`; the engine's actuator calls
`set_desired`, and its metric source reads `series` (never past `now_s`). At the end `result()`
gives what scoring needs: end-to-end latency of every ingress request (or of groups of requests
with equal latency, as weights), drops, and per-component series.

Arrays in `ComponentSeries` are indexed by simulation step; entry i covers the interval
(t_s[i] - step_s, t_s[i]].

Scoring helpers live here too (`weighted_quantile`, `slo_attainment`, `latency_quantile`) so
that the cross-check of the two fidelities and the backtest report compute them the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from elastiscale.backtest.seriesfield import OptionalSeriesField, SeriesField
from elastiscale.config import Config
from elastiscale.observations import ReplicaState
from elastiscale.trace import Trace

if TYPE_CHECKING:
    from elastiscale.backtest.steplog import StepLog

Array = npt.NDArray[np.float64]


@dataclass
class ComponentSeries:
    """Per-step series of one component, up to the simulator's current step.

    Each field reads as a float array; a simulator may give one as `Runs` of equal doubles
    (`backtest.seriesfield`: a month's replica counts in a few KB), expanded when first read.
    """

    t_s: SeriesField = SeriesField()  # end of each step, seconds
    arrivals: SeriesField = SeriesField()  # requests arrived during the step
    work_arrivals: SeriesField = SeriesField()  # work arrived in the capacity unit
    completions: SeriesField = SeriesField()  # requests completed during the step
    dropped: SeriesField = SeriesField()  # requests dropped (queue timeout) during the step
    queue: SeriesField = SeriesField()  # requests waiting at the end of the step
    in_flight: SeriesField = SeriesField()  # requests being served at the end of the step
    ready: SeriesField = SeriesField()  # ready replicas during the step (time average)
    starting: SeriesField = SeriesField()  # replicas requested, not yet ready (billed)
    desired: SeriesField = SeriesField()  # desired replicas at the end of the step
    #: busy fraction of ready capacity during the step, 0..1 (NaN if none)
    utilization: SeriesField = SeriesField()
    #: p95 latency at this component of requests completing (NaN if none)
    latency_p95_s: SeriesField = SeriesField()
    #: replicas draining (billed) during the step; empty when the simulator has none
    draining: OptionalSeriesField = OptionalSeriesField()

    def billed(self) -> Array:
        """Billed replicas during each step: ready + starting + draining (time averages)."""
        total: Array = self.ready + self.starting
        if self.draining.size == total.size:
            total = total + self.draining
        return total

    @classmethod
    def from_steps(cls, log: StepLog, t_s: Array | None = None) -> ComponentSeries:
        """A step log's columns as series (`t_s`: the steps' end times, when the caller shares
        one array of them between components): of a frozen log, views of its dense columns
        and the runs of the others."""
        n = len(log)
        if t_s is None or t_s.size != n:
            t_s = log.t0_s + log.step_s * np.arange(1, n + 1, dtype=float)
        col = log.compact
        busy, capacity = log.column("busy"), log.column("capacity")
        with np.errstate(invalid="ignore", divide="ignore"):
            utilization = np.where(capacity > 0, busy / np.where(capacity > 0, capacity, 1), np.nan)
        del busy, capacity
        return cls(
            t_s=t_s,
            arrivals=col("arrivals"),
            work_arrivals=col("work"),
            completions=col("completions"),
            dropped=col("dropped"),
            queue=col("queue"),
            in_flight=col("in_flight"),
            ready=col("ready"),
            starting=col("starting"),
            desired=col("desired"),
            utilization=np.minimum(utilization, 1.0),
            latency_p95_s=col("latency_p95_s"),
            draining=col("draining"),
        )


@dataclass
class SimulationResult:
    """Everything a simulation produced, for scoring and plots.

    `latency_s[i]` is the end-to-end latency of `weight[i]` ingress requests that completed at
    `completed_at_s[i]`. The discrete-event fidelity has one entry per request (weight 1); the
    fast one has a few weighted samples per step. Requests dropped anywhere along their path are
    in `dropped_requests`, not in `latency_s`.
    """

    step_s: float
    latency_s: Array  # end-to-end latency of completed ingress requests (or groups)
    weight: Array  # requests each entry of `latency_s` stands for
    completed_at_s: Array  # when each entry of `latency_s` completed (for latency-over-time plots)
    dropped_requests: float  # ingress requests dropped anywhere along their path
    components: dict[str, ComponentSeries] = field(default_factory=dict)
    scaling_actions: int = 0  # engine decisions with outcome "scaled", all components
    scaling_actions_by_component: dict[str, int] = field(default_factory=dict)
    fidelity: str = ""
    start_s: float = 0.0  # start of the simulated window (the trace's start)
    end_s: float = 0.0  # end of the simulated window (the trace's end)
    ingress_requests: float = 0.0  # ingress requests that arrived (completed + dropped)
    #: The ingress component (index into `Pipeline.ingress`) each entry of `latency_s` entered
    #: at, and the requests dropped per ingress: each request is held to its own pipeline's
    #: SLO in a fleet unit (`pipeline.members`). None when the simulator does not track them.
    origin: npt.NDArray[np.int64] | None = None
    dropped_by_origin: Array | None = None

    def replica_seconds(self, component: str) -> float:
        """Billed replica-seconds: ready plus starting plus draining replicas, over time."""
        return float(np.sum(self.components[component].billed()) * self.step_s)

    @property
    def completed_requests(self) -> float:
        return float(np.sum(self.weight))


@dataclass(frozen=True, slots=True)
class ServiceModel:
    """How one component serves work, shared by both fidelities (docs/simulator.md).

    A replica has `slots` concurrent slots (Little's law: capacity x service time, rounded to the
    nearest whole slot, at least 1). A request holds a slot for `hold_per_work_s` x its work, so
    one replica's throughput is exactly `capacity_per_replica` whatever the rounding. Worked
    numbers: an LLM of 1.5 req/s and 4 s has 6 slots and holds each request 6 / 1.5 = 4 s; a
    router of 50 req/s and 0.05 s has 2.5 -> 3 slots and holds 3 / 50 = 0.06 s.

    For a token-sized component the work of a request is its tokens, and the slot count uses the
    trace's mean tokens per request: 3000 tokens/s, 4 s, 1000 tokens on average -> 12 slots; a
    500-token request holds a slot 12 x 500 / 3000 = 2 s.
    """

    name: str
    unit: str  # capacity unit: requests, tokens, input_tokens, output_tokens
    capacity: float  # work per second one replica sustains
    slots: int  # concurrent requests one replica serves
    hold_per_work_s: float  # seconds a request holds a slot per unit of its work
    mean_work_per_request: float  # 1 for requests; the trace's mean tokens otherwise
    timeout_s: float  # queue timeout: a request waiting longer is dropped
    startup_s: float

    @property
    def mean_hold_s(self) -> float:
        return self.hold_per_work_s * self.mean_work_per_request


def service_models(config: Config, trace: Trace) -> dict[str, ServiceModel]:
    """The `ServiceModel` of every component under `trace` (token units need token columns)."""
    spec = config.pipeline
    out: dict[str, ServiceModel] = {}
    total_requests = float(np.sum(trace.requests))
    for name, comp in spec.components.items():
        unit = comp.capacity_unit
        if unit == "requests":
            mean_work = 1.0
        else:
            if not trace.has_unit(unit):
                raise ValueError(
                    f"pipeline.components.{name}.capacity_unit: {unit!r} needs token columns "
                    f"the trace {trace.name} does not have (columns: "
                    f"{', '.join(['t_seconds', 'requests', *trace.columns])})"
                )
            work = float(np.sum(trace.work(unit)))
            mean_work = work / total_requests if total_requests > 0 and work > 0 else 1.0
        concurrency = comp.capacity_per_replica / mean_work * comp.service_time_s
        slots = max(1, math.floor(concurrency + 0.5))
        out[name] = ServiceModel(
            name=name,
            unit=unit,
            capacity=comp.capacity_per_replica,
            slots=slots,
            hold_per_work_s=slots / comp.capacity_per_replica,
            mean_work_per_request=mean_work,
            timeout_s=spec.queue_timeout(name),
            startup_s=comp.startup_s,
        )
    return out


def work_per_request(unit: str, input_tokens: float, output_tokens: float) -> float:
    """Work of one request in `unit` given its tokens."""
    if unit == "requests":
        return 1.0
    if unit == "tokens":
        return input_tokens + output_tokens
    if unit == "input_tokens":
        return input_tokens
    return output_tokens


def draw_fanout(
    rng: np.random.Generator, mean: float, distribution: str, size: int
) -> npt.NDArray[np.int64]:
    """`size` call counts of one edge, with mean `mean`.

    fixed: floor(mean), plus one more with probability frac(mean) (2.4 -> 2 or 3, 60/40);
    poisson: Poisson(mean); geometric: failures before a success, P(n) = p (1 - p)^n with
    p = 1 / (1 + mean), so the mean is `mean` and 0 calls is the most likely count.
    """
    if mean <= 0:
        return np.zeros(size, dtype=np.int64)
    if distribution == "fixed":
        whole = math.floor(mean)
        extra = rng.random(size) < (mean - whole)
        return (whole + extra).astype(np.int64)
    if distribution == "poisson":
        return rng.poisson(mean, size).astype(np.int64)
    if distribution == "geometric":
        return (rng.geometric(1.0 / (1.0 + mean), size) - 1).astype(np.int64)
    raise ValueError(f"fanout_distribution: unknown distribution {distribution!r}")


def draw_fanouts(
    rng: np.random.Generator, means: npt.NDArray[np.float64], distribution: str
) -> npt.NDArray[np.int64]:
    """One call count per mean of `means` (a fan-out that changed during the run), drawn as
    `draw_fanout` draws them."""
    means = np.maximum(means, 0.0)
    if distribution == "fixed":
        whole = np.floor(means)
        return (whole + (rng.random(means.size) < means - whole)).astype(np.int64)
    if distribution == "poisson":
        return rng.poisson(means).astype(np.int64)
    if distribution == "geometric":
        return (rng.geometric(1.0 / (1.0 + means)) - 1).astype(np.int64)
    raise ValueError(f"fanout_distribution: unknown distribution {distribution!r}")


def fanout_variance(mean: float, distribution: str) -> float:
    """Variance of one request's call count on an edge: fixed frac x (1 - frac) (2.4 -> 0.24),
    poisson mean, geometric mean x (1 + mean)."""
    if mean <= 0:
        return 0.0
    if distribution == "fixed":
        frac = mean - math.floor(mean)
        return frac * (1.0 - frac)
    if distribution == "poisson":
        return mean
    return mean * (1.0 + mean)


def first_call_probability(mean: float, distribution: str) -> float:
    """P(an upstream request makes at least one call on an edge) for `draw_fanout`'s
    distributions. Worked numbers for a mean of 1.5: fixed 1.0, poisson 1 - e^-1.5 = 0.78,
    geometric 1.5 / 2.5 = 0.6."""
    if mean <= 0:
        return 0.0
    if distribution == "fixed":
        return min(1.0, mean)
    if distribution == "poisson":
        return 1.0 - math.exp(-mean)
    return mean / (1.0 + mean)


def weighted_quantile(values: Array, weights: Array, q: float) -> float | None:
    """The `q` quantile of `values` where value i stands for `weights[i]` observations.

    The smallest value v such that the weight of values <= v is at least q x total weight (the
    inverse of the weighted empirical CDF), so with unit weights it is the "inverted CDF"
    quantile of numpy. Worked numbers: values [1, 2, 10] with weights [50, 45, 5]: the 0.95
    quantile is 2 (weight up to 2 is 95 of 100), the 0.96 quantile is 10.

    None when there is no weight at all (no completed request: the quantile is undefined).
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q = {q}, must be within [0, 1]")
    v = np.asarray(values, dtype=float)
    w = np.asarray(weights, dtype=float)
    if v.shape != w.shape:
        raise ValueError(f"values has shape {v.shape}, weights {w.shape}: they must match")
    keep = w > 0
    if not keep.any():
        return None
    v, w = v[keep], w[keep]
    order = np.argsort(v, kind="stable")
    cumulative = np.cumsum(w[order])
    target = q * cumulative[-1]
    # A small tolerance so that q x total equal to a cumulative sum picks that value.
    i = int(np.searchsorted(cumulative, target * (1 - 1e-12), side="left"))
    return float(v[order][min(i, v.size - 1)])


def latency_quantile(
    result: SimulationResult, q: float, *, count_dropped: bool = False
) -> float | None:
    """End-to-end latency quantile of completed requests; with `count_dropped`, dropped requests
    count as infinitely slow (so the quantile is inf when more than 1 - q were dropped)."""
    values, weights = result.latency_s, result.weight
    if count_dropped and result.dropped_requests > 0:
        values = np.append(values, math.inf)
        weights = np.append(weights, result.dropped_requests)
    return weighted_quantile(values, weights, q)


def slo_attainment(result: SimulationResult, slo_s: float) -> float | None:
    """Fraction of ingress requests completed within `slo_s` seconds end to end.

    Dropped requests count as misses. Worked numbers: 900 requests within the SLO, 80 slower,
    20 dropped: 900 / 1000 = 0.9. None when no request arrived.
    """
    completed = float(np.sum(result.weight))
    total = completed + float(result.dropped_requests)
    if total <= 0:
        return None
    within = float(np.sum(result.weight[result.latency_s <= slo_s]))
    return within / total


class Simulator(Protocol):
    """A pipeline simulation advanced by a runner. Fidelities: "fast" and "discrete-event"."""

    step_s: float

    @property
    def now_s(self) -> float: ...

    def advance_to(self, t_s: float) -> None:
        """Simulate up to `t_s`: every whole step ending at or before `t_s`; later commands
        (`set_desired`) take effect at `t_s`."""
        ...

    def set_desired(self, component: str, replicas: int) -> None:
        """Ask for `replicas` at `now_s`: new replicas are ready after the component's
        `startup_s` (billed from now); removed replicas stop taking work at once and drain."""
        ...

    def state(self, component: str) -> ReplicaState: ...

    def retune(self, model: ServiceModel) -> None:
        """Serve component `model.name` as `model` says from now on (a drift scenario,
        `backtest.drift`); calls in service and replicas already starting keep their times."""
        ...

    def reroute(self, source: str, target: str, fanout: float) -> None:
        """The edge `source -> target` makes `fanout` calls per request from now on (a
        traffic split that moves, `scenario.traffic`); calls already made keep their target."""
        ...

    def series(self, component: str) -> ComponentSeries: ...

    def steps(self, component: str) -> StepLog:
        """The component's per-step log so far (what the simulated metric source reads): one
        `StepLog` for the whole run, appended to as steps close (the source keeps it)."""
        ...

    def result(self) -> SimulationResult: ...
