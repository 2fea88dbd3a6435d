"""The world of the in-process daemon tests (test_daemon_loop.py, test_daemon_faults.py): a
pipeline of two components on a demand-sized policy, a switchable metric source and an
in-memory actuator, registered under names of their own for each `World`."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from elastiscale import registry
from elastiscale.adapters.base import ActuationResult
from elastiscale.adapters.memory import RecordingActuator
from elastiscale.clock import FakeClock
from elastiscale.config import Config, load_config
from elastiscale.controllers.base import TickContext
from elastiscale.daemon.journal import Journal
from elastiscale.daemon.runner import Daemon, RunOptions
from elastiscale.decision import Proposal
from elastiscale.errors import MetricSourceError
from elastiscale.observations import Observation
from elastiscale.testing.prometheus import free_port

_names = itertools.count()
#: Daemons started by `World.daemon` that a test may leave running (`close_started`).
_started: list[Daemon] = []


def close_started() -> None:
    """Close the journals of the daemons `World.daemon` started (after each test)."""
    while _started:
        _started.pop().journal.close()


class DemandPolicy:
    """ceil(load / capacity_per_replica): the simplest sizing, so expected counts are exact."""

    name = "demand"

    def __init__(self, config: Any = None, params: Any = None) -> None:
        self.history_lengths: list[int] = []

    def propose(self, ctx: TickContext) -> dict[str, Proposal]:
        out = {}
        for name in ctx.pipeline.order:
            load = ctx.load(name)
            self.history_lengths.append(len(ctx.history.observations(name)))
            if load is None:
                out[name] = Proposal.none(self.name, "no load")
            else:
                capacity = ctx.pipeline.components[name].capacity_per_replica
                out[name] = Proposal(self.name, max(1, math.ceil(load / capacity)), "load")
        return out


class Source:
    """Demand per component, switchable down; counts calls."""

    def __init__(self, demand: Mapping[str, float]) -> None:
        self.demand = dict(demand)
        self.up = True
        self.error: Exception | None = None
        self.calls: list[float] = []

    def observe(self, components: Sequence[str], now_s: float) -> dict[str, Observation]:
        self.calls.append(now_s)
        if self.error is not None:
            raise self.error
        if not self.up:
            raise MetricSourceError("connection refused")
        return {
            n: Observation(component=n, at_s=now_s, demand_rps=self.demand.get(n))
            for n in components
        }


class Actuator(RecordingActuator):
    """In-memory counts; `before_scale` runs inside each `scale` call (to look at the journal
    at that moment), `broken` components raise."""

    def __init__(self, initial: Mapping[str, int]) -> None:
        super().__init__(initial)
        self.before_scale: Callable[[str, int], None] | None = None
        self.broken: set[str] = set()

    def scale(self, component: str, replicas: int) -> ActuationResult:
        if self.before_scale is not None:
            self.before_scale(component, replicas)
        if component in self.broken:
            raise RuntimeError(f"adapter bug on {component}")
        return super().scale(component, replicas)


class World:
    """One scenario's config file, source, actuator and daemon on a fake clock."""

    def __init__(self, tmp_path: Path, **daemon_section: Any) -> None:
        self.tmp_path = tmp_path
        self.source = Source({"router": 25.0, "llm": 75.0})
        self.actuator = Actuator({"router": 1, "llm": 1})
        self.policy = DemandPolicy()
        self.actuator_failures: list[Exception] = []
        tag = next(_names)
        registry.register("metric_source", f"daemon-test-source-{tag}", lambda c, o: self.source)
        registry.register("actuator", f"daemon-test-actuator-{tag}", self._build_actuator)
        registry.register("policy", f"daemon-test-policy-{tag}", lambda c, o: self.policy)
        self.raw: dict[str, Any] = {
            "pipeline": {
                "name": "loop",
                "slo": {"latency_p95_s": 10},
                "components": {
                    "router": {
                        "ingress": True,
                        "capacity_per_replica": 10,
                        "service_time_s": 0.1,
                        "replicas": {"min": 1, "max": 20},
                    },
                    "llm": {
                        "capacity_per_replica": 10,
                        "service_time_s": 1,
                        "replicas": {"min": 1, "max": 50},
                    },
                },
                "edges": [{"from": "router", "to": "llm", "fanout": 3}],
            },
            "policies": [f"daemon-test-policy-{tag}"],
            "control": {"interval_s": 10},
            "metrics": {"type": f"daemon-test-source-{tag}"},
            "actuator": {"type": f"daemon-test-actuator-{tag}"},
            "daemon": {
                "journal_path": str(tmp_path / "journal.jsonl"),
                "metrics_backoff_max_s": 40,
                # a port of its own: the default one may be another daemon's on this host
                "listen": f"127.0.0.1:{free_port()}",
                **daemon_section,
            },
        }
        self.path = tmp_path / "pipeline.yaml"
        self.write()
        self.clock = FakeClock(1000.0)

    def _build_actuator(self, config: Any, options: Any) -> Actuator:
        if self.actuator_failures:
            raise self.actuator_failures.pop(0)
        return self.actuator

    def write(self, raw: Mapping[str, Any] | None = None) -> None:
        self.path.write_text(yaml.safe_dump(dict(raw or self.raw)))

    def config(self) -> Config:
        return load_config(self.path)

    def daemon(self, dry_run: bool = False) -> Daemon:
        options = RunOptions(config_path=self.path, dry_run=dry_run)
        daemon = Daemon(self.config(), options, clock=self.clock)
        _started.append(daemon)
        daemon.start(serve_http=False)
        return daemon

    def journal(self) -> list[dict[str, Any]]:
        return list(Journal(self.tmp_path / "journal.jsonl").entries())


def desired(daemon: Daemon) -> dict[str, int]:
    assert daemon.status.snapshot is not None
    return {r.component: r.desired_replicas for r in daemon.status.snapshot.records}


def outcomes(daemon: Daemon) -> dict[str, str]:
    assert daemon.status.snapshot is not None
    return {r.component: r.outcome for r in daemon.status.snapshot.records}


def counter(daemon: Daemon, name: str, **labels: str) -> float:
    value = daemon.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value
