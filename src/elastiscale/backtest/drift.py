"""Drift of the simulated truth during a backtest (the file's `scenario:` section).

`DriftSchedule` holds the scenario's changes as new `ServiceModel`s at absolute simulated times
and applies each one to a simulator the moment the run reaches it: `advance(sim, t_s)` runs the
simulator to every change before `t_s`, retunes the component, and goes on to `t_s`. The
policies see nothing of it but the metrics the drifted pipeline produces. With no scenario the
schedule is empty and `advance` is exactly `sim.advance_to(t_s)`, so results without a scenario
are those of a run without this module.

A change keeps the replica's concurrent slots (`config.scenario`): the new capacity c' gives a
slot hold of slots / c' per unit of work; a new service time s' gives c' = slots x mean work /
s'. The fast fidelity applies a change at the end of the step it falls in, the discrete-event
one at the change's time; calls in service finish at their old pace, replicas already starting
keep their ready time.

A traffic event (`scenario.traffic`) moves the split of a component's calls between its
variants: every edge into a variant gets the source's calls into the component times the
variant's new share (`rerouted`), applied with `Simulator.reroute`. A call already made keeps
its variant; the next ones are routed by the new split (`backtest.routes`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from elastiscale.backtest.model import ServiceModel, Simulator
from elastiscale.config import Config
from elastiscale.config.scenario import DriftEvent, TrafficEvent


def retuned(model: ServiceModel, event: DriftEvent, configured_capacity: float) -> ServiceModel:
    """`model` after `event` (see the module docstring for what a replica keeps)."""
    capacity = model.capacity
    if event.capacity_per_replica is not None:
        capacity = event.capacity_per_replica
    elif event.capacity_factor is not None:
        capacity = configured_capacity * event.capacity_factor
    elif event.service_time_s is not None:
        capacity = model.slots * model.mean_work_per_request / event.service_time_s
    startup_s = event.startup_s if event.startup_s is not None else model.startup_s
    return dataclasses.replace(
        model, capacity=capacity, hold_per_work_s=model.slots / capacity, startup_s=startup_s
    )


def rerouted(config: Config, event: TrafficEvent) -> list[tuple[str, str, float]]:
    """(source, target, fan-out) of every edge into `event.component`'s variants under the
    event's split: each source's calls into the component (the sum of its edges' fan-outs,
    the file's percents adding up to 100) times the variant's new share."""
    components = config.pipeline.components
    into: dict[str, list[tuple[str, str]]] = {}  # source -> [(target, variant name)]
    for edge in config.pipeline.edges:
        variant = components[edge.target].variant
        if variant is not None and variant.of == event.component:
            into.setdefault(edge.source, []).append((edge.target, variant.name))
    fanout = {(e.source, e.target): e.fanout for e in config.pipeline.edges}
    out = []
    for source, targets in into.items():
        total = sum(fanout[(source, target)] for target, _ in targets)
        for target, name in targets:
            out.append((source, target, total * event.percent.get(name, 0.0) / 100.0))
    return out


Change = tuple[float, ServiceModel | list[tuple[str, str, float]]]


class DriftSchedule:
    """The scenario's changes in time order, applied as a run reaches them."""

    def __init__(self, config: Config, models: Mapping[str, ServiceModel], start_s: float) -> None:
        scenario = config.scenario
        events = sorted(scenario.drift if scenario is not None else (), key=lambda e: e.at_s)
        current = dict(models)
        self.changes: list[Change] = []
        for event in events:
            comp = config.pipeline.components[event.component]
            model = retuned(current[event.component], event, comp.capacity_per_replica)
            current[event.component] = model
            self.changes.append((start_s + event.at_s, model))
        for split in scenario.traffic if scenario is not None else ():
            self.changes.append((start_s + split.at_s, rerouted(config, split)))
        self.changes.sort(key=lambda change: change[0])  # stable: drift first at equal times
        self._next = 0

    def advance(self, sim: Simulator, t_s: float) -> None:
        """`sim.advance_to(t_s)`, applying every change due by then on the way."""
        while self._next < len(self.changes) and self.changes[self._next][0] <= t_s:
            at_s, change = self.changes[self._next]
            sim.advance_to(max(at_s, sim.now_s))
            if isinstance(change, ServiceModel):
                sim.retune(change)
            else:
                for source, target, fanout in change:
                    sim.reroute(source, target, fanout)
            self._next += 1
        sim.advance_to(t_s)
