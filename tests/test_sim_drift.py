"""Drift scenarios: the simulated truth changes at a given time in both fidelities, while the
policies see only metrics; bad scenarios are refused with the field named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from elastiscale.backtest.api import backtest as run_backtest
from elastiscale.backtest.drift import DriftSchedule
from elastiscale.backtest.model import service_models
from elastiscale.backtest.runner import build_simulator
from elastiscale.config import Config, validate_mapping
from elastiscale.config.loading import load_with_scenario
from elastiscale.errors import ConfigError
from elastiscale.trace import Trace
from test_sim_support import flat_trace, single_config

FIDELITIES = ["fast", "discrete-event"]


def with_scenario(config: Config, *drift: dict[str, Any]) -> Config:
    raw = config.model_dump(exclude_none=True, by_alias=True)
    raw["scenario"] = {"name": "test", "drift": list(drift)}
    return validate_mapping(raw)


def schedule(config: Config, trace: Trace) -> DriftSchedule:
    return DriftSchedule(config, service_models(config, trace), trace.start_s)


@pytest.mark.parametrize("fidelity", FIDELITIES)
@pytest.mark.parametrize(
    ("change", "after"),
    [
        # 2 req/s on 2 replicas of 2 req/s: utilization 0.5; at 0.6x capacity 2 / 2.4 = 0.83.
        ({"capacity_factor": 0.6}, 2 / 2.4),
        ({"capacity_per_replica": 4.0}, 0.25),
        # 2 slots (2 req/s x 1 s); a service time of 2 s halves the capacity: utilization 1.
        ({"service_time_s": 2.0}, 1.0),
    ],
)
def test_capacity_drift_changes_utilization_from_its_time(
    fidelity: str, change: dict[str, float], after: float
) -> None:
    config = with_scenario(single_config(capacity=2.0), {"at_s": 300, "component": "svc", **change})
    trace = flat_trace(2.0, 600)
    sim = build_simulator(config, trace, {"svc": 2}, fidelity=fidelity)
    schedule(config, trace).advance(sim, 600)
    util = sim.series("svc").utilization
    assert np.nanmean(util[100:290]) == pytest.approx(0.5, rel=0.1)
    assert np.nanmean(util[400:590]) == pytest.approx(after, rel=0.1)


@pytest.mark.parametrize("fidelity", FIDELITIES)
def test_startup_drift_applies_to_replicas_requested_after_it(fidelity: str) -> None:
    config = with_scenario(
        single_config(startup_s=300), {"at_s": 100, "component": "svc", "startup_s": 60}
    )
    trace = flat_trace(0.0, 600)
    sim = build_simulator(config, trace, {"svc": 1}, fidelity=fidelity)
    drift = schedule(config, trace)
    drift.advance(sim, 50)
    sim.set_desired("svc", 2)  # before the change: ready at 350
    drift.advance(sim, 150)
    sim.set_desired("svc", 3)  # after it: ready at 210, before the earlier one
    drift.advance(sim, 209)
    assert sim.state("svc").ready == 1
    drift.advance(sim, 211)
    assert sim.state("svc").ready == 2
    drift.advance(sim, 349)
    assert sim.state("svc").ready == 2
    drift.advance(sim, 351)
    assert sim.state("svc").ready == 3


def test_no_scenario_is_plain_advance() -> None:
    config = single_config()
    trace = flat_trace(1.0, 100)
    assert schedule(config, trace).changes == []


@pytest.mark.parametrize(
    ("drift", "message"),
    [
        (
            {"at_s": 1, "component": "svc", "capacity_factor": 0.5, "service_time_s": 2},
            "scenario.drift[0]: give at most one of capacity_factor, service_time_s",
        ),
        ({"at_s": 1, "component": "svc"}, "scenario.drift[0]: changes nothing"),
        (
            {"at_s": 1, "component": "llm", "startup_s": 5},
            "scenario.drift[0].component: unknown component 'llm' (components: svc)",
        ),
        ({"at_s": -1, "component": "svc", "startup_s": 5}, "scenario.drift[0].at_s"),
        ({"at_s": 1, "component": "svc", "capacity_factor": 0}, "capacity_factor"),
        ({"at_s": 1, "component": "svc", "startup": 5}, "scenario.drift[0].startup"),
    ],
)
def test_bad_scenario_is_refused(drift: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        with_scenario(single_config(), drift)
    assert any(message in p for p in info.value.problems), info.value.problems


def test_scenario_file_and_report(tmp_path: Path) -> None:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump(single_config().model_dump(exclude_none=True)))
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        "scenario:\n  name: slow\n  drift:\n"
        "    - {at_s: 600, component: svc, capacity_factor: 0.5}\n"
    )
    config = load_with_scenario(pipeline, scenario)
    assert config.scenario is not None and config.scenario.drift[0].capacity_factor == 0.5
    trace = flat_trace(3.0, 1800, bin_s=10.0)
    drifted = run_backtest(config, trace, ["hpa"], ceiling=False)
    plain = run_backtest(single_config(), trace, ["hpa"], ceiling=False)
    assert drifted.settings["scenario"]["name"] == "slow"
    assert "scenario" not in plain.settings
    # Half the capacity from 600 s: the same traffic now queues and misses its SLO.
    assert drifted.runs["hpa"].score.slo_attainment < plain.runs["hpa"].score.slo_attainment
    bad = tmp_path / "bad.yaml"
    bad.write_text("drift: []\n")
    with pytest.raises(ConfigError, match="expected a mapping with a 'scenario' key"):
        load_with_scenario(pipeline, bad)
