"""The engine's decision path: proposals combine, constraints clamp, actuation and its failures,
missing data, records. Time is plain `now_s` values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from elastiscale import (
    ActuationResult,
    Engine,
    Failure,
    MetricSourceError,
    Observation,
    Proposal,
    RecordingActuator,
    ReplicaState,
    SeriesMetricSource,
    TickContext,
    load_config,
)
from elastiscale.adapters.memory import ScaleCall
from elastiscale.config import Config


def make_config(**component_overrides: Any) -> Config:
    llm = {
        "capacity_per_replica": 2.0,
        "service_time_s": 2.0,
        "startup_s": 120,
        "gpus_per_replica": 1,
        "replicas": {"min": 1, "max": 10},
    }
    llm.update(component_overrides)
    return load_config(
        {
            "pipeline": {
                "name": "t",
                "slo": {"latency_p95_s": 10},
                "components": {
                    "router": {
                        "ingress": True,
                        "capacity_per_replica": 100,
                        "service_time_s": 0.01,
                        "replicas": {"min": 1, "max": 5},
                    },
                    "llm": llm,
                },
                "edges": [{"from": "router", "to": "llm", "fanout": 2}],
            }
        }
    )


class Fixed:
    """Proposes fixed counts (None: no proposal)."""

    def __init__(self, name: str, counts: Mapping[str, int | None]) -> None:
        self.name = name
        self.counts = counts

    def propose(self, ctx: TickContext) -> dict[str, Proposal]:
        return {
            c: Proposal(self.name, n, "fixed") if n is not None else Proposal.none(self.name, "x")
            for c, n in self.counts.items()
        }


class Broken:
    name = "broken"

    def propose(self, ctx: TickContext) -> dict[str, Proposal]:
        raise RuntimeError("boom")


class Source:
    """Demand per component, or an outage."""

    def __init__(self, demand: Mapping[str, float | None], down: bool = False) -> None:
        self.demand = dict(demand)
        self.down = down

    def observe(self, components: Sequence[str], now_s: float) -> dict[str, Observation]:
        if self.down:
            raise MetricSourceError("connection refused")
        out = {}
        for c in components:
            value = self.demand.get(c)
            missing = {} if value is not None else {"demand_rps": "nan"}
            out[c] = Observation(component=c, at_s=now_s, demand_rps=value, missing=missing)
        return out


class Failing(RecordingActuator):
    def __init__(self, initial: Mapping[str, int], failure: Failure) -> None:
        super().__init__(initial)
        self.failure = failure

    def scale(self, component: str, replicas: int) -> ActuationResult:
        self.calls.append(ScaleCall(component, replicas))
        return ActuationResult(component, replicas, self.failure, "injected")


def by_component(records: Sequence[Any]) -> dict[str, Any]:
    return {r.component: r for r in records}


@pytest.mark.parametrize(
    ("proposals", "expected_llm", "clamp"),
    [
        ([{"llm": 4}], 4, None),
        ([{"llm": 4}, {"llm": 7}], 7, None),  # max of valid proposals
        ([{"llm": None}, {"llm": 6}], 6, None),  # invalid ones are ignored
        ([{"llm": 50}], 10, "bounds"),  # max bound
        ([{"llm": 0}], 1, "bounds"),  # min bound
        ([{"llm": None}], 3, None),  # nothing valid: hold current
    ],
)
def test_proposals_combine_and_bounds_clamp(
    proposals: list[dict[str, int | None]], expected_llm: int, clamp: str | None
) -> None:
    config = make_config()
    actuator = RecordingActuator({"router": 1, "llm": 3})
    policies = [Fixed(f"p{i}", p) for i, p in enumerate(proposals)]
    engine = Engine(
        config, metrics=Source({"router": 5, "llm": 10}), actuator=actuator, policies=policies
    )
    record = by_component(engine.step(100.0))["llm"]
    assert record.desired_replicas == expected_llm
    assert actuator.replicas["llm"] == expected_llm
    assert [c.constraint for c in record.clamps] == ([clamp] if clamp else [])
    assert len(record.proposals) == len(proposals)


def test_policy_error_is_recorded_and_others_still_count() -> None:
    engine = Engine(
        make_config(),
        metrics=Source({"router": 5, "llm": 10}),
        actuator=RecordingActuator({"router": 1, "llm": 3}),
        policies=[Broken(), Fixed("ok", {"llm": 5})],
    )
    record = by_component(engine.step(0.0))["llm"]
    assert record.desired_replicas == 5
    broken = record.proposals[0]
    assert broken.replicas is None and "RuntimeError: boom" in broken.reason


@pytest.mark.parametrize(
    ("demand", "down", "proposed", "expected"),
    [
        ({"router": 5, "llm": None}, False, 1, 4),  # NaN demand: no scale-down
        ({"router": 5, "llm": None}, False, 8, 8),  # scale-up still allowed
        ({}, True, 1, 4),  # source down: hold
        ({"router": 5, "llm": 10}, False, 1, 1),  # fresh data: scale-down allowed
    ],
)
def test_missing_data_never_scales_down(
    demand: dict[str, float | None], down: bool, proposed: int, expected: int
) -> None:
    actuator = RecordingActuator({"router": 1, "llm": 4})
    engine = Engine(
        make_config(),
        metrics=Source(demand, down=down),
        actuator=actuator,
        policies=[Fixed("p", {"llm": proposed})],
    )
    record = by_component(engine.step(0.0))["llm"]
    assert record.desired_replicas == expected
    if down:
        assert "source error" in record.observation.why_missing("demand_rps")


def test_stale_observation_counts_as_missing() -> None:
    actuator = RecordingActuator({"router": 1, "llm": 4})
    times = np.array([0.0])
    metrics = SeriesMetricSource(
        {"llm": {"demand_rps": (times, np.array([1.0]))}, "router": {}}, delay_s=0.0
    )
    engine = Engine(
        make_config(), metrics=metrics, actuator=actuator, policies=[Fixed("p", {"llm": 1})]
    )
    assert by_component(engine.step(60.0))["llm"].desired_replicas == 1  # 60 s old: fresh
    actuator.replicas["llm"] = 4
    assert by_component(engine.step(500.0))["llm"].desired_replicas == 4  # 500 s old: stale


@pytest.mark.parametrize(
    ("failure", "retry_at_next_tick"),
    [
        (Failure.CONFLICT, True),
        (Failure.IN_PROGRESS, True),
        (Failure.UNAVAILABLE, False),
        (Failure.THROTTLED, False),
    ],
)
def test_failed_actuation_is_recorded_and_retried_with_backoff(
    failure: Failure, retry_at_next_tick: bool
) -> None:
    actuator = Failing({"router": 1, "llm": 2}, failure)
    config = make_config()
    engine = Engine(
        config,
        metrics=Source({"router": 5, "llm": 10}),
        actuator=actuator,
        policies=[Fixed("p", {"llm": 6})],
    )
    interval_s = config.control.interval_s
    first = by_component(engine.step(0.0))["llm"]
    assert first.outcome == f"failed: {failure.value}"
    calls_after_first = len(actuator.calls)
    # Backoff: the first retry waits interval x uniform(0.5, 1), so a tick half an interval
    # later holds unless the failure is retried at once.
    second = by_component(engine.step(interval_s * 0.49))["llm"]
    if retry_at_next_tick:
        assert second.outcome == f"failed: {failure.value}"
        assert len(actuator.calls) == calls_after_first + 1
    else:
        assert second.outcome.startswith("held: backing off")
        assert len(actuator.calls) == calls_after_first
    # Repeated failures back off exponentially, capped.
    for k in range(2, 12):
        engine.step(interval_s * 2**k)
    assert engine._retry["llm"].next_attempt_s - interval_s * 2**11 <= 300.0


def test_dry_run_decides_but_does_not_act() -> None:
    actuator = RecordingActuator({"router": 1, "llm": 2})
    engine = Engine(
        make_config(),
        metrics=Source({"router": 5, "llm": 10}),
        actuator=actuator,
        policies=[Fixed("p", {"llm": 6})],
        dry_run=True,
    )
    record = by_component(engine.step(0.0))["llm"]
    assert record.outcome == "dry-run" and record.desired_replicas == 6
    assert actuator.calls == [] and actuator.replicas["llm"] == 2


def test_records_serialize_with_reasons() -> None:
    engine = Engine(
        make_config(),
        metrics=Source({"router": 5, "llm": 10}),
        actuator=RecordingActuator({"router": 1, "llm": 2}),
        policies=[Fixed("p", {"llm": 60})],
    )
    record = by_component(engine.step(0.0))["llm"].to_dict()
    assert record["desired_replicas"] == 10
    assert record["clamps"] == [
        {"constraint": "bounds", "before": 60, "after": 10, "reason": "max = 10"}
    ]
    assert record["proposals"][0]["policy"] == "p"
    assert record["observation"]["demand_rps"] == 10


def test_replicas_fall_back_to_observations_when_actuator_knows_nothing() -> None:
    class Blind(RecordingActuator):
        def read(self, components: Sequence[str]) -> dict[str, ReplicaState]:
            return {}

    class Ready(Source):
        def observe(self, components: Sequence[str], now_s: float) -> dict[str, Observation]:
            return {
                c: Observation(c, now_s, demand_rps=1.0, ready_replicas=3, desired_replicas=3)
                for c in components
            }

    engine = Engine(
        make_config(), metrics=Ready({}), actuator=Blind({}), policies=[Fixed("p", {"llm": 3})]
    )
    record = by_component(engine.step(0.0))["llm"]
    assert record.current_replicas == 3 and record.outcome == "unchanged"


def test_retry_after_hint_delays_the_next_attempt() -> None:
    class Throttled(RecordingActuator):
        def scale(self, component: str, replicas: int) -> ActuationResult:
            self.calls.append(ScaleCall(component, replicas))
            return ActuationResult(component, replicas, Failure.THROTTLED, "slow down", 600.0)

    actuator = Throttled({"router": 1, "llm": 2})
    engine = Engine(
        make_config(),
        metrics=Source({"router": 5, "llm": 10}),
        actuator=actuator,
        policies=[Fixed("p", {"llm": 6})],
    )
    engine.step(0.0)
    assert by_component(engine.step(500.0))["llm"].outcome.startswith("held: backing off")
    assert by_component(engine.step(601.0))["llm"].outcome == "failed: throttled"
    assert len(actuator.calls) == 2


def test_history_keeps_time_order_and_skips_empty_observations() -> None:
    from elastiscale.history import MetricHistory

    history = MetricHistory(retention_s=100)
    history.record([Observation("a", 10.0, demand_rps=1.0)], now_s=10)
    history.record([Observation.unavailable("a", 20.0, "source error")], now_s=20)
    history.record([Observation("a", 15.0, demand_rps=2.0)], now_s=25)  # newer than 10: kept
    history.record([Observation("a", 12.0, demand_rps=9.0)], now_s=30)  # older: dropped
    history.record([Observation("a", 120.0, demand_rps=3.0)], now_s=120)  # 10 falls out
    times, values = history.series("a", "demand_rps")
    assert times.tolist() == [120.0] and values.tolist() == [3.0]
    history.record([Observation("a", 130.0, demand_rps=5.0)], now_s=130)
    assert [o.at_s for o in history.observations("a", since_s=121)] == [130.0]
    assert history.window_mean("a", "demand_rps", now_s=130, window_s=60) == 4.0


def test_a_source_outage_is_logged_when_it_starts_and_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = Source({"router": 5, "llm": 10}, down=True)
    engine = Engine(
        make_config(),
        metrics=source,
        actuator=RecordingActuator({"router": 1, "llm": 2}),
        policies=[Fixed("p", {"llm": 2})],
    )
    with caplog.at_level("WARNING", logger="elastiscale.engine"):
        for t in range(5):
            engine.step(float(t))
        source.down = False
        engine.step(5.0)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "metric source unavailable: connection refused",
        "metric source available again",
    ]
