"""The daemon's Prometheus metrics, in a `CollectorRegistry` of its own (not the global one, so
embedding elastiscale never adds series to a host application's `/metrics`).

Per component, read from the last tick's decision records at scrape time:

    elastiscale_desired_replicas{component}            the count decided
    elastiscale_current_replicas{component}            the count the platform had
    elastiscale_ready_replicas{component}              ready, as the actuator (else source) read
    elastiscale_proposed_replicas{component,policy}    each policy's valid proposal
    elastiscale_demand_per_second{component,unit}      observed demand (unit: requests, tokens)
    elastiscale_forecast_demand_per_second{component,policy}
                                                       a policy's forecast (see `read_details`)
    elastiscale_forecast_error{component,policy,horizon_s}
                                                       a policy's recent asymmetric error
    elastiscale_fanout_ratio{source,target}            measured fan-out of an edge (see below)

Counters and the rest:

    elastiscale_decisions_total{component,outcome,reason}
    elastiscale_errors_total{kind}
    elastiscale_ticks_total{result}                    ok / error
    elastiscale_tick_duration_seconds                  histogram
    elastiscale_config_reloads_total{result}           ok / refused
    elastiscale_last_tick_timestamp_seconds, elastiscale_ready, elastiscale_leader,
    elastiscale_metric_source_up, elastiscale_info{pipeline,identity}

A missing value is a missing series, never a zero: a component without a ready count has no
`elastiscale_ready_replicas` series that tick.

`outcome` is the first word of the record's outcome (unchanged, scaled, dry-run, held,
failed); `reason` says what set the count: `constraint:<name>` when a constraint clamped it
last, `policy:<name>` for the policy whose proposal won, `no proposal` for a hold.

Measured fan-out of an edge a -> b is a policy's own estimate when one reports it (a smoothed
one, `fanout_a_measured` in b's proposal details); else b's observed request rate over a's, for
edges into a component with exactly one upstream (with two, b's rate cannot be split between
them), both rates present and a's positive. Worked example: router 20 req/s, llm 60 req/s ->
3.0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from elastiscale.daemon.status import DaemonStatus, TickSnapshot
from elastiscale.decision import DecisionRecord, Detail

#: Tick duration buckets, seconds: a tick is normally milliseconds, slow calls make seconds.
TICK_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

#: Proposal detail keys the metrics read (see `read_details`).
FORECAST_DEMAND_KEY: Final = "forecast_demand"
_FORECAST_ERROR_KEY: Final = re.compile(r"^forecast_([0-9.]+)s_asym_err$")
_FORECAST_Q_KEY: Final = re.compile(r"^(.+)_forecast_q$")
_FANOUT_KEY: Final = re.compile(r"^fanout_(.+)_measured$")
_EDGE_RPS_KEY: Final = re.compile(r"^edge_(.+)_rps$")


def outcome_word(outcome: str) -> str:
    """`failed: throttled` -> `failed`; `held: backing off ...` -> `held`."""
    return outcome.split(":", 1)[0].strip() or "unknown"


def decision_reason(record: DecisionRecord) -> str:
    """What set the decided count: the last clamp, else the winning policy, else a hold."""
    if record.clamps:
        return f"constraint:{record.clamps[-1].constraint}"
    if record.combined_replicas is None:
        return "no proposal"
    for proposal in record.proposals:
        if proposal.replicas == record.combined_replicas:
            return f"policy:{proposal.policy}"
    return "policy"


@dataclass(frozen=True, slots=True)
class DetailValues:
    """What a proposal's details say about forecasts and fan-out."""

    forecast: float | None = None
    errors: tuple[tuple[str, float], ...] = ()  # (horizon in seconds, error)
    fanouts: tuple[tuple[str, float], ...] = ()  # (upstream component, measured fan-out)


def read_details(component: str, details: Mapping[str, Detail]) -> DetailValues:
    """The forecast, forecast errors and measured fan-outs in a proposal's details for
    `component`, in the keys the built-in forecasting policies write:

    - forecast demand: `forecast_demand`; else the sum of `edge_<upstream>_rps` (the demand
      `elastiscale` forecasts through each incoming edge); else `<prefix>_forecast_q` of the
      component's own forecast, prefix `forecast` (`predictive`) or `forecast_<component>`
      (`elastiscale` on an ingress component);
    - forecast error: `forecast_<H>s_asym_err` (the forecasting quality tracker's keys), and
      `<prefix>_error` at horizon `<prefix>_horizon_s` beside any `<prefix>_forecast_q` (for a
      downstream component, the error of the ingress forecast its decision rests on);
    - measured fan-out of the edge from `<upstream>`: `fanout_<upstream>_measured`.

    Values that are not finite numbers (None: not known yet) are skipped."""
    numbers = {
        k: float(v)
        for k, v in details.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
    own_prefixes = ("forecast", f"forecast_{component}")
    own: float | None = None
    through_edges: list[float] = []
    errors: list[tuple[str, float]] = []
    fanouts: list[tuple[str, float]] = []
    for key, value in numbers.items():
        if (match := _FORECAST_ERROR_KEY.match(key)) is not None:
            errors.append((match.group(1), value))
        elif (match := _FORECAST_Q_KEY.match(key)) is not None:
            prefix = match.group(1)
            if prefix in own_prefixes and own is None:
                own = value
            horizon_s, error = numbers.get(f"{prefix}_horizon_s"), numbers.get(f"{prefix}_error")
            if horizon_s is not None and error is not None:
                errors.append((f"{horizon_s:g}", error))
        elif (match := _FANOUT_KEY.match(key)) is not None:
            fanouts.append((match.group(1), value))
        elif _EDGE_RPS_KEY.match(key) is not None:
            through_edges.append(value)
    forecast = numbers.get(FORECAST_DEMAND_KEY)
    if forecast is None and through_edges:
        forecast = sum(through_edges)
    if forecast is None:
        forecast = own
    return DetailValues(forecast, tuple(errors), tuple(fanouts))


class DaemonMetrics:
    """Counters the loop increments, and a collector that renders the last tick."""

    def __init__(self, status: DaemonStatus) -> None:
        self.status = status
        self.registry = CollectorRegistry(auto_describe=False)
        self.decisions = Counter(
            "elastiscale_decisions",
            "Decisions by component, outcome and what set the count",
            ["component", "outcome", "reason"],
            registry=self.registry,
        )
        self.errors = Counter(
            "elastiscale_errors",
            "Errors by kind (metric_source, actuator_read, actuation, policy, tick, journal, "
            "config_reload, leader_election, build)",
            ["kind"],
            registry=self.registry,
        )
        self.ticks = Counter(
            "elastiscale_ticks", "Ticks run, by result", ["result"], registry=self.registry
        )
        self.tick_duration = Histogram(
            "elastiscale_tick_duration_seconds",
            "Wall time of one tick (observe, decide, act)",
            buckets=TICK_BUCKETS,
            registry=self.registry,
        )
        self.reloads = Counter(
            "elastiscale_config_reloads",
            "Config reloads on SIGHUP, by result",
            ["result"],
            registry=self.registry,
        )
        self.registry.register(_SnapshotCollector(status))
        for kind in ("metric_source", "actuator_read", "actuation", "tick"):
            self.errors.labels(kind)  # present at zero from the start, for rate() and alerts

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def record_tick(self, snapshot: TickSnapshot) -> None:
        self.ticks.labels("ok" if snapshot.ok else "error").inc()
        self.tick_duration.observe(snapshot.duration_s)
        policies_failed: set[str] = set()
        for record in snapshot.records:
            self.decisions.labels(
                record.component, outcome_word(record.outcome), decision_reason(record)
            ).inc()
            for proposal in record.proposals:
                if proposal.replicas is None and proposal.reason.startswith("policy error"):
                    policies_failed.add(proposal.policy)
        for _ in policies_failed:
            self.error("policy")


class _SnapshotCollector(Collector):
    """Renders per-component gauges from the status's last snapshot at scrape time."""

    def __init__(self, status: DaemonStatus) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        status = self.status
        snapshot = status.snapshot
        info = GaugeMetricFamily(
            "elastiscale_info",
            "The daemon's pipeline and identity",
            labels=["pipeline", "identity"],
        )
        info.add_metric([status.pipeline, status.identity], 1.0)
        yield info
        yield _single("elastiscale_ready", "1 when /readyz answers 200", status.readiness().ready)
        if status.leader is not None:
            yield _single(
                "elastiscale_leader", "1 while this process holds the Lease", status.leader
            )
        if status.source_reachable is not None:
            yield _single(
                "elastiscale_metric_source_up",
                "1 when the metric source answered at the last attempt",
                status.source_reachable,
            )
        if snapshot is None:
            return
        yield GaugeMetricFamily(
            "elastiscale_last_tick_timestamp_seconds",
            "Time (Unix seconds) of the last tick",
            value=snapshot.at_s,
        )
        yield from _component_families(snapshot)


def _single(name: str, documentation: str, value: bool) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=1.0 if value else 0.0)


def _component_families(snapshot: TickSnapshot) -> Iterator[GaugeMetricFamily]:
    c = ["component"]
    desired = GaugeMetricFamily("elastiscale_desired_replicas", "Replicas decided", labels=c)
    current = GaugeMetricFamily(
        "elastiscale_current_replicas", "Replicas the platform had asked for", labels=c
    )
    ready = GaugeMetricFamily("elastiscale_ready_replicas", "Replicas ready", labels=c)
    proposed = GaugeMetricFamily(
        "elastiscale_proposed_replicas", "Each policy's valid proposal", labels=[*c, "policy"]
    )
    demand = GaugeMetricFamily(
        "elastiscale_demand_per_second", "Observed demand", labels=[*c, "unit"]
    )
    forecast = GaugeMetricFamily(
        "elastiscale_forecast_demand_per_second",
        "Demand a policy forecasts, in the component's capacity unit",
        labels=[*c, "policy"],
    )
    error = GaugeMetricFamily(
        "elastiscale_forecast_error",
        "A policy's recent asymmetric forecast error at a horizon (0 is perfect)",
        labels=[*c, "policy", "horizon_s"],
    )
    by_pipeline = GaugeMetricFamily(
        "elastiscale_demand_by_pipeline_per_second",
        "A fleet unit's shared component: the calls per second each pipeline sends it",
        labels=[*c, "pipeline"],
    )
    rates: dict[str, float] = {}
    measured: dict[tuple[str, str], float] = {}
    seen: set[tuple[str, ...]] = set()  # one sample per label set, the first policy's

    def add(family: GaugeMetricFamily, labels: list[str], value: float) -> None:
        key = (family.name, *labels)
        if key not in seen:
            seen.add(key)
            family.add_metric(labels, value)

    for record in snapshot.records:
        name = record.component
        desired.add_metric([name], record.desired_replicas)
        current.add_metric([name], record.current_replicas)
        got_ready = snapshot.ready.get(name, record.observation.ready_replicas)
        if got_ready is not None:
            ready.add_metric([name], got_ready)
        obs = record.observation
        if obs.demand_rps is not None:
            demand.add_metric([name, "requests"], obs.demand_rps)
            rates[name] = obs.demand_rps
        if obs.tokens_per_s is not None:
            demand.add_metric([name, "tokens"], obs.tokens_per_s)
        for pipeline, rate in record.demand_by_pipeline.items():
            if rate is not None:  # a missing share is no sample, never zero
                by_pipeline.add_metric([name, pipeline], rate)
        for proposal in record.proposals:
            if proposal.replicas is not None:
                proposed.add_metric([name, proposal.policy], proposal.replicas)
            if not proposal.details:
                continue
            found = read_details(name, proposal.details)
            if found.forecast is not None:
                add(forecast, [name, proposal.policy], found.forecast)
            for horizon, value in found.errors:
                add(error, [name, proposal.policy, horizon], value)
            for source, value in found.fanouts:
                measured.setdefault((source, name), value)
    yield from (desired, current, ready, proposed, demand, forecast, error, by_pipeline)
    fanout = GaugeMetricFamily(
        "elastiscale_fanout_ratio",
        "Measured fan-out of an edge: a policy's estimate, else downstream over upstream rate",
        labels=["source", "target"],
    )
    for source, target in snapshot.edges:
        ratio = measured.get((source, target))
        if ratio is None and snapshot.incoming.get(target) == 1:
            up, down = rates.get(source), rates.get(target)
            if up is not None and down is not None and up > 0:
                ratio = down / up
        if ratio is not None:
            fanout.add_metric([source, target], ratio)
    yield fanout
