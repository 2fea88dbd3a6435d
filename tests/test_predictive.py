"""`predictive`: each component forecasts its own load and sizes for it at its own lead time,
without the graph. Scenarios on a fake clock (15 s ticks), same pipeline as test_feedforward."""

from __future__ import annotations

from typing import Any

import numpy as np

from elastiscale import registry
from elastiscale.config import Config
from elastiscale.controllers.base import TickContext
from elastiscale.controllers.predictive import PredictiveParams, PredictivePolicy
from elastiscale.decision import Proposal
from elastiscale.history import MetricHistory
from elastiscale.observations import Observation, ReplicaState
from elastiscale.pipeline import Pipeline
from test_feedforward import TICK_S, _forecaster, make_config, ramp


class Driver:
    def __init__(self, config: Config, **params: Any) -> None:
        self.config = config
        self.pipeline = Pipeline(config.pipeline)
        self.policy = PredictivePolicy(config, PredictiveParams(**params))
        self.history = MetricHistory(3600)
        self.replicas = {n: c.replicas.min for n, c in config.pipeline.components.items()}

    def tick(self, now_s: float, rates: dict[str, float | None]) -> dict[str, Proposal]:
        observations = {
            n: Observation(component=n, at_s=now_s, demand_rps=rates.get(n))
            for n in self.pipeline.order
        }
        ctx = TickContext(
            now_s=now_s,
            config=self.config,
            pipeline=self.pipeline,
            observations=observations,
            replicas={n: ReplicaState(desired=r, ready=r) for n, r in self.replicas.items()},
            history=self.history,
            interval_s=TICK_S,
        )
        got = self.policy.propose(ctx)
        for name, proposal in got.items():
            if proposal.replicas is not None:
                self.replicas[name] = proposal.replicas
        return got

    def run(self, start_s: float, end_s: float, rps: Any) -> dict[str, Proposal]:
        got: dict[str, Proposal] = {}
        for now_s in np.arange(start_s, end_s, TICK_S):
            r = float(rps(now_s)) if callable(rps) else float(rps)
            got = self.tick(float(now_s), {"router": r, "planner": 4 * r, "writer": r})
        return got


def test_steady_load_is_sized_at_the_target_utilization_with_forecast_headroom() -> None:
    driver = Driver(make_config())
    got = driver.run(0.0, 1800.0, 10.0)
    writer = got["writer"]
    # 10 calls/s at 1.2 x 0.7 per replica is 11.9 -> 12 replicas; a flat forecast adds nothing.
    assert writer.replicas == 12
    assert writer.details["lead_time_s"] == 255.0  # 240 s start + 15 s: no graph, no path


def test_a_trusted_forecast_sizes_for_demand_one_lead_time_ahead() -> None:
    registry.register("forecaster", "test-exact", _forecaster(1.0))
    driver = Driver(make_config(), forecaster="test-exact")
    got = driver.run(0.0, 2400.0, ramp)
    writer = got["writer"]
    assert writer.details["forecast_trust"] == 1.0
    # Demand at now + 255 s: ramp(2640) = 32 calls/s -> 32 / 0.84 = 38.1 -> 39 replicas.
    now_s = 2400.0 - TICK_S
    ahead = float(ramp(now_s + 255.0 + 30.0))
    assert writer.replicas is not None
    assert writer.replicas >= int(ahead / 0.84)
    assert writer.replicas > float(ramp(now_s)) / 0.84 + 2


def test_without_the_graph_an_ingress_step_does_not_move_the_writer() -> None:
    driver = Driver(make_config())
    driver.run(0.0, 1200.0, 10.0)
    before = driver.replicas["writer"]
    got = driver.tick(1200.0, {"router": 20.0, "planner": 40.0, "writer": 10.0})
    assert got["writer"].replicas == before
    assert got["router"].replicas is not None


def test_scale_down_waits_for_the_components_startup() -> None:
    driver = Driver(make_config())
    driver.run(0.0, 1200.0, 20.0)
    high = driver.replicas["writer"]
    counts = []
    for i in range(24):  # 6 minutes at a tenth of the load
        driver.tick(1200.0 + i * TICK_S, {"router": 2.0, "planner": 8.0, "writer": 2.0})
        counts.append(driver.replicas["writer"])
    assert counts[:16] == [high] * 16  # 240 s start + 15 s
    assert counts[-1] < high


def test_missing_data_proposes_nothing_until_there_is_some() -> None:
    driver = Driver(make_config())
    got = driver.tick(0.0, {"router": None, "planner": None, "writer": None})
    assert all(p.replicas is None for p in got.values())
    assert "no data" in got["writer"].reason
