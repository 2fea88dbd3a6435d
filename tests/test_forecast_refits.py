"""Refits off the tick (forecasting/refits.py): on a fake clock (plain `now_s` values), with
forecasters whose fit can be held on an event or made to raise, so what happens while a fit
runs is decided by the test, not by the machine's speed.

Every wait here is bounded (`WAIT_S`): a tick that waited for a held fit would make that fit
time out and the test fail, rather than hang.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elastiscale import registry
from elastiscale.backtest.api import backtest
from elastiscale.backtest.baselines import build_policy
from elastiscale.config import Config, load_config
from elastiscale.controllers.base import TickContext
from elastiscale.controllers.demand import DemandForecast
from elastiscale.controllers.feedforward import ElastiscaleParams, ElastiscalePolicy
from elastiscale.controllers.predictive import PredictiveParams, PredictivePolicy
from elastiscale.forecasting import Forecast, Forecaster, build_forecaster
from elastiscale.forecasting.grid import GridContext, GridModel
from elastiscale.forecasting.refits import RefitScheduler
from elastiscale.history import MetricHistory
from elastiscale.observations import Observation, ReplicaState
from elastiscale.pipeline import Pipeline
from elastiscale.trace import Trace

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
WAIT_S = 20.0
TICK_S = 15.0
STEP_S = 30.0  # the policies' forecaster step: rate_window_s / 2
REFIT_EVERY_S = 120.0


# --------------------------------------------------------------------------------------------
# A forecaster whose fits the test controls


@dataclass
class Gate:
    """Holds fits (`hold`), or makes them raise (`fail`); counts them."""

    hold: bool = False
    fail: bool = False
    release: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)
    timed_out: bool = False
    fits: int = 0


class _Mean(GridModel):
    """Forecasts the mean of what it was fitted on, whatever comes after."""

    label = "gated-mean"

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.level = math.nan

    def fit(self, y: Any, ctx: GridContext) -> None:
        self.gate.fits += 1
        if self.gate.hold:
            self.gate.entered.set()
            if not self.gate.release.wait(WAIT_S):
                self.gate.timed_out = True
        self.level = float(np.nanmean(y))

    def append(self, value: float) -> None:
        pass

    def forecast(self, ks: Any) -> Any:
        return np.full(len(ks), self.level)


def gated(gate: Gate) -> type[Forecaster]:
    class GatedForecaster(Forecaster):
        name = "gated"
        uses_fallback = False

        def new_model(self) -> GridModel:
            if gate.fail:
                raise RuntimeError("injected fit failure")
            return _Mean(gate)

    return GatedForecaster


@pytest.fixture
def gate() -> Iterator[Gate]:
    made = Gate()
    registry.register("forecaster", "test-gated", gated(made))
    yield made
    made.release.set()  # never leave a worker held


def level(forecaster: Forecaster) -> float:
    result = forecaster.predict([STEP_S])
    assert isinstance(result, Forecast)
    return float(result.mean[0])


def fitted(gate: Gate, values: list[float], **params: Any) -> Forecaster:
    """A gated forecaster fitted on `values` (one per 30 s bin from 0 s); its fits leave out
    only the newest bin (`calibration_s`), so a refit's mean moves with new data."""
    defaults = {"step_s": STEP_S, "refit_every_s": REFIT_EVERY_S, "calibration_s": STEP_S}
    made = gated(gate)(None, {**defaults, **params})
    made.fit(np.arange(len(values)) * STEP_S, np.asarray(values, dtype=float))
    return made


# --------------------------------------------------------------------------------------------
# Policies on a fake clock


def raw_config() -> dict[str, Any]:
    return {
        "pipeline": {
            "name": "t",
            "slo": {"latency_p95_s": 60},
            "components": {
                "router": {
                    "ingress": True,
                    "capacity_per_replica": 100,
                    "service_time_s": 0.02,
                    "startup_s": 10,
                    "replicas": {"min": 1, "max": 20},
                },
                "llm": {
                    "capacity_per_replica": 2.0,
                    "service_time_s": 4.0,
                    "startup_s": 240,
                    "gpus_per_replica": 1,
                    "replicas": {"min": 1, "max": 100},
                },
            },
            "edges": [{"from": "router", "to": "llm", "fanout": 3.0}],
        },
        "policies": ["elastiscale"],
    }


def make_config() -> Config:
    return load_config(raw_config())


def tick(policy: Any, config: Config, now_s: float) -> None:
    """One tick with demand rising 1 req/s a minute (so every new fit has a higher mean)."""
    pipeline = Pipeline(config.pipeline)
    router_rps = 10.0 + now_s / 60.0
    rates = {"router": router_rps, "llm": 3.0 * router_rps}
    observations = {
        n: Observation(component=n, at_s=now_s, demand_rps=r, queue_length=0.0, in_flight=0.0)
        for n, r in rates.items()
    }
    history = MetricHistory(3600)
    history.record(observations.values(), now_s)
    ctx = TickContext(
        now_s=now_s,
        config=config,
        pipeline=pipeline,
        observations=observations,
        replicas={n: ReplicaState(desired=1, ready=1) for n in rates},
        history=history,
        interval_s=TICK_S,
    )
    proposals = policy.propose(ctx)
    assert all(p.replicas is not None for p in proposals.values()), proposals


POLICIES: dict[str, Callable[[Config], Any]] = {
    "elastiscale": lambda config: ElastiscalePolicy(
        config,
        ElastiscaleParams(
            forecaster="test-gated", forecaster_params={"refit_every_s": REFIT_EVERY_S}
        ),
    ),
    "predictive": lambda config: PredictivePolicy(
        config,
        PredictiveParams(
            forecaster="test-gated", forecaster_params={"refit_every_s": REFIT_EVERY_S}
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_the_tick_goes_on_while_a_refit_is_held_and_adopts_it_when_done(
    gate: Gate, name: str
) -> None:
    config = make_config()
    policy = POLICIES[name](config)
    assert policy.refits.mode == "background"  # the default
    now_s = 0.0
    forecasts: list[DemandForecast] = []
    while not forecasts or any(f.forecaster.status.model is None for f in forecasts):
        now_s += TICK_S  # the first fit of each forecaster: at its first closed bin, inline
        tick(policy, config, now_s)
        forecasts = list(policy._forecasts.values())
    gate.hold = True
    while policy.refits.started == 0:
        now_s += TICK_S
        tick(policy, config, now_s)
        assert now_s < 20 * REFIT_EVERY_S, "no refit came due"
    assert gate.entered.wait(WAIT_S)
    before = [level(f.forecaster) for f in forecasts]
    fitted_at = [f.forecaster.status.fitted_at_s for f in forecasts]
    for _ in range(8):  # two minutes of ticks while the fit is held
        now_s += TICK_S
        tick(policy, config, now_s)
    assert not gate.timed_out
    # Still the previous model, one refit per forecaster in flight (due at every tick, asked
    # for once).
    assert [level(f.forecaster) for f in forecasts] == before
    assert policy.refits.started == len(forecasts)
    assert policy.refits.adopted == 0
    assert all(policy.refits.pending(f.forecaster) for f in forecasts)

    gate.release.set()
    assert policy.refits.wait(WAIT_S)
    now_s += TICK_S
    tick(policy, config, now_s)
    assert policy.refits.adopted == len(forecasts)
    after = [level(f.forecaster) for f in forecasts]
    assert all(a > b for a, b in zip(after, before, strict=True))  # fitted on more of the rise
    assert all(
        f.forecaster.status.fitted_at_s != at for f, at in zip(forecasts, fitted_at, strict=True)
    )
    policy.close()


def test_one_refit_per_forecaster_in_flight_and_a_bounded_queue(gate: Gate) -> None:
    a, b, c = (fitted(gate, [10.0] * 20) for _ in range(3))
    now_s = 20 * STEP_S + REFIT_EVERY_S
    for f in (a, b, c):
        f.update(now_s, 30.0)
        assert f.refit_due(now_s)
    refits = RefitScheduler("background", max_waiting=1)
    gate.hold = True
    refits.maintain(a, now_s)
    assert gate.entered.wait(WAIT_S)  # a is running: the queue is empty again
    for _ in range(5):
        refits.maintain(a, now_s)  # due, but one is in flight: coalesced
    assert refits.started == 1
    refits.maintain(b, now_s)  # takes the one place in the queue
    refits.maintain(c, now_s)  # finds it full: left for a later call, still due
    assert refits.started == 2
    assert refits.pending(b) and not refits.pending(c) and c.refit_due(now_s)

    gate.release.set()
    assert refits.wait(WAIT_S)
    for f in (a, b, c):
        refits.maintain(f, now_s)  # a and b adopted; c queued now
    assert refits.adopted == 2 and refits.started == 3
    assert refits.wait(WAIT_S)
    assert refits.collect(c)
    assert [refits.adopted, refits.failed, refits.in_flight()] == [3, 0, 0]
    assert not gate.timed_out
    refits.close()


@pytest.mark.parametrize("mode", ["inline", "background"])
def test_a_failing_refit_keeps_the_model_is_logged_once_and_retried_a_period_later(
    gate: Gate, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    forecaster = fitted(gate, [10.0] * 20)
    kept = level(forecaster)
    refits = RefitScheduler("inline" if mode == "inline" else "background")
    gate.fail = True

    def at(now_s: float) -> None:
        forecaster.update(now_s, 40.0)
        refits.maintain(forecaster, now_s)
        assert refits.wait(WAIT_S)
        refits.collect(forecaster)

    caplog.set_level(logging.DEBUG, logger="elastiscale.forecasting.refits")
    first_s = 20 * STEP_S + REFIT_EVERY_S
    at(first_s)
    assert [refits.started, refits.failed, refits.adopted] == [1, 1, 0]
    assert level(forecaster) == kept
    # Due at every tick, but not tried again before a refit period of data has passed.
    for k in range(1, 8):
        at(first_s + k * TICK_S)
    assert refits.started == 1
    at(first_s + REFIT_EVERY_S)
    assert [refits.started, refits.failed] == [2, 2]
    assert level(forecaster) == kept
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert (
        "gated" in warnings[0].getMessage() and "injected fit failure" in warnings[0].getMessage()
    )

    gate.fail = False
    at(first_s + 2 * REFIT_EVERY_S)
    assert [refits.started, refits.failed, refits.adopted] == [3, 2, 1]
    assert level(forecaster) > kept
    assert any("succeeded again" in r.getMessage() for r in caplog.records)
    refits.close()


def test_a_snapshot_older_than_a_restarted_history_is_dropped(gate: Gate) -> None:
    forecaster = fitted(gate, [10.0] * 20, history_s=20 * STEP_S)
    now_s = 20 * STEP_S + REFIT_EVERY_S
    forecaster.update(now_s, 10.0)
    refits = RefitScheduler("background")
    gate.hold = True
    refits.maintain(forecaster, now_s)
    assert gate.entered.wait(WAIT_S)
    gate.hold = False  # the fit after the restart below runs at once
    # A gap longer than the whole history: the forecaster starts again from the new point.
    forecaster.update(now_s + 100 * STEP_S, 50.0)
    forecaster.update(now_s + 101 * STEP_S, 50.0)
    restarted = level(forecaster)
    gate.release.set()
    assert refits.wait(WAIT_S)
    assert not refits.collect(forecaster)
    assert [refits.adopted, refits.dropped] == [0, 1]
    assert level(forecaster) == restarted == 50.0
    refits.close()


def test_close_cancels_queued_refits_and_starts_no_more(gate: Gate) -> None:
    a, b, c = (fitted(gate, [10.0] * 20) for _ in range(3))
    now_s = 20 * STEP_S + REFIT_EVERY_S
    for f in (a, b, c):
        f.update(now_s, 30.0)
    refits = RefitScheduler("background")
    gate.hold = True
    refits.maintain(a, now_s)
    assert gate.entered.wait(WAIT_S)
    refits.maintain(b, now_s)
    refits.close()
    refits.maintain(c, now_s)
    assert refits.started == 2 and refits.closed
    gate.release.set()
    assert refits.wait(WAIT_S)
    assert not refits.collect(b)  # cancelled before it ran
    assert gate.fits == 3 + 1  # the three first fits and a's refit; b's never ran


def test_the_daemon_runtime_closes_its_policies() -> None:
    from elastiscale.adapters.memory import RecordingActuator, SeriesMetricSource
    from elastiscale.daemon.runtime import Runtime
    from elastiscale.engine import Engine

    config = make_config()
    policy = ElastiscalePolicy(config)
    actuator = RecordingActuator.for_config(config)
    engine = Engine(config, metrics=SeriesMetricSource({}), actuator=actuator, policies=[policy])
    runtime = Runtime(config, engine, source=None, actuator=None)  # type: ignore[arg-type]
    runtime.close()
    assert policy.refits.closed


def test_bad_modes_are_refused_naming_the_field() -> None:
    from elastiscale.config import validate_mapping
    from elastiscale.errors import ConfigError

    raw = raw_config()
    raw["policies"] = [{"name": "predictive", "params": {"refit": "sometimes"}}]
    with pytest.raises(ConfigError) as caught:
        validate_mapping(raw)
    assert caught.value.problems[0].startswith("policies[0].params.refit")
    with pytest.raises(ValueError, match="refit mode = 'later'"):
        RefitScheduler("later")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Backtests: inline, and exactly as before


def bundled_trace() -> Trace:
    from elastiscale.trace import load_trace

    return load_trace(EXAMPLES / "traces" / "azure_llm_2023_conv_1s.csv")


@pytest.mark.parametrize("name", ["elastiscale", "predictive"])
def test_backtests_build_the_policies_inline_whatever_the_params_say(name: str) -> None:
    config = make_config()
    built = build_policy(name, config, {"refit": "background"}, trace=bundled_trace())
    assert built.refits.mode == "inline"  # type: ignore[attr-defined]
    assert registry.build("policy", name, config, {}).refits.mode == "background"


def test_inline_refits_reproduce_the_blocking_refits_of_before_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 20-minute backtest with a refit every 5 minutes of data, run through the scheduler
    and through the blocking `refit()` that the policies called before it existed."""
    from elastiscale.forecasting import base

    runs = {"count": 0}
    real_run = base.RefitJob.run

    def counted(job: base.RefitJob) -> None:
        runs["count"] += 1
        real_run(job)

    monkeypatch.setattr(base.RefitJob, "run", counted)

    def once() -> Any:
        policies = [
            {"name": "elastiscale", "params": {"forecaster_params": {"refit_every_s": 300}}},
            {"name": "predictive", "params": {"forecaster_params": {"refit_every_s": 300}}},
        ]
        report = backtest(
            EXAMPLES / "pipelines" / "agent.yaml",
            EXAMPLES / "traces" / "azure_llm_2023_conv_1s.csv",
            policies,
            rate_scale=4.0,
            end_s=1200.0,
        )
        return report.runs

    now = once()
    refits_now = runs["count"]

    def blocking(self: RefitScheduler, forecaster: Forecaster, now_s: float) -> None:
        if forecaster.refit_due(now_s):
            forecaster.refit()

    monkeypatch.setattr(RefitScheduler, "maintain", blocking)
    runs["count"] = 0
    before = once()
    assert refits_now == runs["count"] > 0
    for label, run in now.items():
        old = before[label]
        assert run.score == old.score, label
        for array in ("latency_s", "weight", "completed_at_s"):
            assert np.array_equal(getattr(run.result, array), getattr(old.result, array))
        for component, series in run.result.components.items():
            assert np.array_equal(series.desired, old.result.components[component].desired)


# --------------------------------------------------------------------------------------------
# Invariant: a background refit lands where an inline one at the same moment would


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(st.one_of(st.none(), st.floats(0.0, 1000.0)), min_size=30, max_size=60),
    delay_ticks=st.integers(0, 15),
)
def test_an_adopted_background_refit_equals_an_inline_refit_at_the_same_time(
    values: list[float | None], delay_ticks: int
) -> None:
    params = {"step_s": STEP_S, "refit_every_s": 300.0, "window_s": 3600.0}
    inline, background = (build_forecaster("ewma", params) for _ in range(2))
    sync, worker = RefitScheduler("inline"), RefitScheduler("background")
    series = [*values, *[5.0] * delay_ticks]  # ticks between the submission and the adoption
    submitted_at: int | None = None
    for i, value in enumerate(series):
        now_s = (i + 1) * TICK_S
        for f in (inline, background):
            f.update(now_s, value)
        sync.maintain(inline, now_s)
        if submitted_at is None:
            worker.maintain(background, now_s)
            if worker.pending(background):
                submitted_at = i
        elif i - submitted_at >= delay_ticks:
            break
    assert worker.wait(WAIT_S)
    worker.collect(background)
    # Dropped when the forecaster was fitted meanwhile (its first observation came after the
    # snapshot): then the inline refit was on missing values only and changed nothing either.
    assert worker.started == worker.adopted + worker.dropped
    horizons = [STEP_S, 300.0, 900.0]
    a, b = inline.predict(horizons), background.predict(horizons)
    assert type(a) is type(b)
    if isinstance(a, Forecast) and isinstance(b, Forecast):
        for part in ("mean", "p90", "p99"):
            assert np.array_equal(getattr(a, part), getattr(b, part)), part
    assert inline.status == background.status
    worker.close()
