"""The backtest driver: ticks on a fake clock, scaling actions, what policies may see, bad
arguments."""

from __future__ import annotations

import pytest

from elastiscale.backtest.runner import simulate
from elastiscale.config import Config
from elastiscale.controllers.base import TickContext
from elastiscale.decision import Proposal
from test_sim_support import (
    SchedulePolicy,
    TargetPolicy,
    flat_trace,
    pipeline_config,
    single_config,
)


class Spy:
    """Proposes nothing; records the tick times, intervals and observation times it saw."""

    name = "spy"

    def __init__(self, interval_s: float | None = None) -> None:
        if interval_s is not None:
            self.interval_s = interval_s
        self.ticks: list[float] = []
        self.intervals: list[float] = []
        self.seen_at: list[tuple[float, float]] = []

    def propose(self, ctx: TickContext) -> dict[str, Proposal]:
        self.ticks.append(ctx.now_s)
        self.intervals.append(ctx.interval_s)
        for obs in ctx.observations.values():
            self.seen_at.append((ctx.now_s, obs.at_s))
        return {}


def _config() -> Config:
    return single_config(startup_s=20.0)


@pytest.mark.parametrize(
    ("policy_interval_s", "argument_s", "expected_s"),
    [(None, None, 15.0), (7.0, None, 7.0), (7.0, 4.0, 4.0), (None, 30.0, 30.0)],
)
def test_the_engine_ticks_every_interval_over_the_whole_trace(
    policy_interval_s: float | None, argument_s: float | None, expected_s: float
) -> None:
    spy = Spy(policy_interval_s)
    simulate(
        _config(), flat_trace(1.0, 120), spy, initial_replicas={"svc": 1}, interval_s=argument_s
    )
    count = -(-120 // expected_s)  # ticks at 0, interval, ... before the end
    assert spy.ticks == pytest.approx([k * expected_s for k in range(int(count))])
    assert set(spy.intervals) == {expected_s}


@pytest.mark.parametrize("fidelity", ["fast", "discrete-event"])
def test_scaling_actions_count_the_changes_the_engine_applied(fidelity: str) -> None:
    plan = [(30.0, {"svc": 3}), (60.0, {"svc": 2}), (61.0, {"svc": 2})]
    result = simulate(
        _config(),
        flat_trace(1.0, 120),
        SchedulePolicy(plan),
        fidelity=fidelity,
        initial_replicas={"svc": 1},
    )
    assert result.scaling_actions == 2
    assert result.scaling_actions_by_component == {"svc": 2}
    desired = result.components["svc"].desired
    assert desired[29] == 1 and desired[30] == 3 and desired[60] == 2


@pytest.mark.parametrize("delay_s", [0.0, 20.0])
def test_policies_see_nothing_newer_than_now_minus_the_delay(delay_s: float) -> None:
    spy = Spy()
    simulate(
        _config(),
        flat_trace(1.0, 300),
        spy,
        initial_replicas={"svc": 1},
        metrics_delay_s=delay_s,
    )
    assert spy.seen_at
    assert all(at_s <= now_s - delay_s + 1e-9 for now_s, at_s in spy.seen_at)
    assert any(at_s == now_s - delay_s for now_s, at_s in spy.seen_at if now_s > delay_s)


def test_a_reactive_policy_scales_a_cold_pipeline_up() -> None:
    result = simulate(
        pipeline_config(llm_startup_s=60),
        flat_trace(4.0, 900),
        TargetPolicy(),
        initial_replicas={"router": 1, "retriever": 1, "llm": 1},
    )
    # 4 req/s -> 12 llm calls/s -> 12 / (1.5 x 0.7) = 11.4: 11 or 12 replicas (the policy's
    # 10% tolerance holds either), from 1.
    assert result.components["llm"].ready[-1] in (11, 12)
    assert result.scaling_actions >= 2


def test_bad_arguments_are_named() -> None:
    trace = flat_trace(1.0, 60)
    with pytest.raises(ValueError, match="initial_replicas: no count for component 'svc'"):
        simulate(_config(), trace, Spy(), initial_replicas={})
    with pytest.raises(ValueError, match="fidelity: unknown value 'exact'"):
        simulate(_config(), trace, Spy(), initial_replicas={"svc": 1}, fidelity="exact")
    with pytest.raises(ValueError, match="interval_s = 0"):
        simulate(_config(), trace, Spy(), initial_replicas={"svc": 1}, interval_s=0)


def test_no_progress_bar_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    simulate(_config(), flat_trace(1.0, 60), Spy(), initial_replicas={"svc": 1}, progress=True)
    assert capsys.readouterr().err == ""
