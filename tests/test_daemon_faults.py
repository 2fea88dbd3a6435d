"""The daemon's answers to faults found by the chaos suite (tests/chaos/), as unit tests:

- clock steps: the tick time never runs backward after a small backward step (held at the last
  tick's), follows a large one and a forward one, each said in one log line;
- a component whose load goes missing is said once when it goes and once when it is back;
- a lasting actuation failure is logged once at warning level, not at every retry; so is an
  actuator whose reads fail, and a refused connection is named as such, not as a timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import urllib3

from daemon_world import World
from elastiscale.adapters.base import Failure
from elastiscale.adapters.kubernetes.calls import KubeCallError, call
from elastiscale.daemon import runner
from elastiscale.daemon.faults import MissingLoadLog
from elastiscale.daemon.runner import Daemon, RunOptions
from elastiscale.decision import DecisionRecord
from elastiscale.engine import Engine
from elastiscale.errors import ActuatorError
from elastiscale.observations import Observation, ReplicaState
from test_engine import Failing, Fixed, Source, make_config


class SteppedClock:
    """A wall clock the test sets to any time, backward included."""

    def __init__(self) -> None:
        self.wall_s = 0.0

    def now_s(self) -> float:
        return self.wall_s

    def sleep(self, duration_s: float) -> None:
        """Not used."""


class MonotonicAt:
    """The `time` module as the daemon runner sees it, its monotonic clock at `mono_s`: set
    for the runner alone, since `time.monotonic` itself is read by every thread of the test
    process (the chaos exporter's counter feed, for one, went backward with it)."""

    def __init__(self, mono_s: float) -> None:
        self.mono_s = float(mono_s)

    def monotonic(self) -> float:
        return self.mono_s

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.mark.parametrize(
    ("steps", "expected", "said"),
    [
        # (wall clock, monotonic clock) at each tick -> tick times
        ([(1000, 0), (1010, 10), (1020, 20)], [1000, 1010, 1020], []),
        (
            [(1000, 0), (1010, 10), (960, 20), (975, 35), (1015, 75), (1025, 85)],
            [1000, 1010, 1010, 1010, 1015, 1025],
            ["stepped back by 50.0 s; tick time held", "passed the held tick time"],
        ),
        ([(5000, 0), (5010, 10), (1400, 20)], [5000, 5010, 1400], ["stepped back by 3610.0 s"]),
        ([(1000, 0), (4610, 10), (4620, 20)], [1000, 4610, 4620], ["forward by 3600.0 s"]),
        ([(1000, 0), (1010.4, 10)], [1000, 1010.4], []),  # jitter is not a step
    ],
)
def test_tick_times_after_clock_steps(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    steps: list[tuple[float, float]],
    expected: list[float],
    said: list[str],
) -> None:
    world = World(tmp_path)
    clock = SteppedClock()
    daemon = Daemon(world.config(), RunOptions(config_path=world.path), clock=clock)
    got = []
    with caplog.at_level(logging.INFO, logger="elastiscale.daemon"):
        for wall_s, mono_s in steps:
            clock.wall_s = wall_s
            monkeypatch.setattr(runner, "time", MonotonicAt(mono_s))
            got.append(daemon.tick_time())
    assert got == expected
    lines = [r.getMessage() for r in caplog.records if "clock" in r.getMessage()]
    assert len(lines) == len(said), lines
    for line, words in zip(lines, said, strict=True):
        assert words in line


def record(component: str, missing: dict[str, str]) -> DecisionRecord:
    obs = Observation(
        component=component, at_s=0.0, demand_rps=None if missing else 5.0, missing=missing
    )
    return DecisionRecord(0.0, component, obs, 1, (), None, (), 1, "unchanged")


def test_missing_load_is_said_when_it_goes_and_when_it_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    said = MissingLoadLog()
    ticks: Sequence[dict[str, dict[str, str]]] = [
        {"router": {}, "llm": {}},
        {"router": {"demand_rps": "nan"}, "llm": {}},
        {"router": {"demand_rps": "nan"}, "llm": {"demand_rps": "source error: down"}},
        {"router": {"demand_rps": "stale"}, "llm": {}},
        {"router": {}, "llm": {}},
        {"router": {}, "llm": {}},
    ]
    with caplog.at_level(logging.INFO, logger="elastiscale.daemon"):
        for tick in ticks:
            said.observe([record(c, m) for c, m in tick.items()], {"router": "demand_rps"})
    assert [r.getMessage() for r in caplog.records] == [
        "router: demand_rps missing (nan); holding its replicas until it is back",
        "router: demand_rps is back (was stale)",
    ]


@pytest.mark.parametrize("failure", [Failure.IN_PROGRESS, Failure.CONFLICT, Failure.UNAVAILABLE])
def test_a_lasting_actuation_failure_is_logged_once(
    caplog: pytest.LogCaptureFixture, failure: Failure
) -> None:
    actuator = Failing({"router": 1, "llm": 2}, failure)
    engine = Engine(
        make_config(),
        metrics=Source({"router": 5, "llm": 10}),
        actuator=actuator,
        policies=[Fixed("p", {"llm": 6})],
    )
    with caplog.at_level(logging.WARNING, logger="elastiscale.engine"):
        for t in range(0, 3000, 15):
            engine.step(float(t))
    assert len(actuator.calls) > 3  # retried many times
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [f"scaling llm to 6 failed: {failure} injected"]


class ReadFails(Failing):
    """Reads fail while `down`."""

    down = True

    def read(self, components: Sequence[str]) -> dict[str, ReplicaState]:
        if self.down:
            raise ActuatorError("API server unreachable: Connection refused")
        return dict(super().read(components))


def test_an_actuator_read_outage_is_logged_when_it_starts_and_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    actuator = ReadFails({"router": 1, "llm": 2}, Failure.UNAVAILABLE)
    engine = Engine(
        make_config(), metrics=Source({"router": 5, "llm": 10}), actuator=actuator, policies=[]
    )
    with caplog.at_level(logging.WARNING, logger="elastiscale.engine"):
        for t in range(5):
            engine.step(float(t * 15))
        actuator.down = False
        engine.step(75.0)
        engine.step(90.0)
    assert [r.getMessage() for r in caplog.records] == [
        "actuator read failed: API server unreachable: Connection refused",
        "actuator read works again",
    ]


def test_a_refused_connection_is_not_called_a_timeout() -> None:
    def refused(**_: Any) -> None:
        raise urllib3.exceptions.NewConnectionError(
            None, "Failed to establish a new connection: [Errno 111] Connection refused"
        )

    with pytest.raises(KubeCallError, match=r"^API server unreachable: Connection refused$"):
        call(refused, timeout_s=1.0)
