"""The daemon's tick, in process, on plain `now_s` values: journaling before acting, faults
(source down, exceptions in adapters and ticks, build failures), followers, dry runs, reloads
and the reports of changes left in flight."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon_world import World, close_started, counter, desired, outcomes
from elastiscale.daemon.journal import Journal
from elastiscale.daemon.runner import Daemon, RunOptions
from elastiscale.errors import ActuatorError, ConfigError, TraceError
from elastiscale.observations import ReplicaState


@pytest.fixture(autouse=True)
def _close_journals() -> Iterator[None]:
    yield
    close_started()


# --------------------------------------------------------------------------------------------


def test_each_change_is_journaled_and_on_disk_before_it_is_made(tmp_path: Path) -> None:
    world = World(tmp_path)
    daemon = world.daemon()
    seen: list[tuple[str, int]] = []

    def intent_already_written(component: str, replicas: int) -> None:
        # Read the file as a restarted process would: the intent must be there already.
        intents = [e for e in world.journal() if e["kind"] == "intent"]
        assert intents[-1]["component"] == component
        assert intents[-1]["to_replicas"] == replicas
        assert intents[-1]["from_replicas"] == 1
        seen.append((component, replicas))

    world.actuator.before_scale = intent_already_written
    daemon.tick(1000.0)
    assert seen == [("router", 3), ("llm", 8)]
    assert world.actuator.replicas == {"router": 3, "llm": 8}
    entries = world.journal()
    kinds = [e["kind"] for e in entries]
    assert kinds == ["start", "intent", "outcome", "intent", "outcome", "decision", "decision"]
    assert all(e["ok"] for e in entries if e["kind"] == "outcome")
    decision = entries[-1]
    assert (decision["component"], decision["desired_replicas"], decision["tick"]) == ("llm", 8, 1)
    assert decision["proposals"][0]["replicas"] == 8
    daemon.tick(1010.0)  # nothing changes: unchanged decisions are not journaled
    assert len(world.journal()) == len(entries)
    daemon.shutdown()
    assert world.journal()[-1]["kind"] == "stop"
    assert Journal(tmp_path / "journal.jsonl").in_flight() == []


def test_source_down_holds_backs_off_and_recovers(tmp_path: Path) -> None:
    """Interval 10 s, cap 40 s: after a failure at t, attempts at t+10, t+30, t+70, t+110."""
    world = World(tmp_path)
    daemon = world.daemon()
    daemon.tick(1000.0)
    assert desired(daemon) == {"router": 3, "llm": 8}
    world.source.up = False
    world.source.demand = {"router": 1.0, "llm": 3.0}  # would scale down, if it were seen
    calls_before = len(world.source.calls)
    attempted = []
    for now_s in range(1010, 1130, 10):
        calls = len(world.source.calls)
        daemon.tick(float(now_s))
        if len(world.source.calls) > calls:
            attempted.append(now_s)
        assert desired(daemon) == {"router": 3, "llm": 8}, now_s  # held, never scaled down
        ready = daemon.status.readiness()
        assert not ready.ready
        assert any("metric source unreachable" in r for r in ready.reasons)
    assert attempted == [1010, 1020, 1040, 1080, 1120]
    assert counter(daemon, "elastiscale_errors_total", kind="metric_source") == 5
    assert len(world.source.calls) - calls_before == 5
    world.source.up = True
    daemon.tick(1130.0)  # still backing off (1120 + 40)
    assert not daemon.status.readiness().ready
    daemon.tick(1160.0)
    assert daemon.status.readiness().ready
    assert desired(daemon) == {"router": 1, "llm": 1}


def test_an_unexpected_source_exception_is_logged_and_held(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = World(tmp_path)
    daemon = world.daemon()
    world.source.error = KeyError("boom")
    snapshot = daemon.tick(1000.0)
    assert snapshot is not None and snapshot.ok
    assert outcomes(daemon) == {"router": "unchanged", "llm": "unchanged"}
    assert any(r.exc_info and "unexpected" in r.getMessage() for r in caplog.records)
    assert counter(daemon, "elastiscale_errors_total", kind="metric_source") == 1


def test_one_broken_component_does_not_stop_the_others(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.actuator.broken = {"router"}  # scaled first, in topological order
    daemon = world.daemon()
    daemon.tick(1000.0)
    assert outcomes(daemon) == {"router": "failed: unavailable", "llm": "scaled"}
    assert world.actuator.replicas == {"router": 1, "llm": 8}
    assert counter(daemon, "elastiscale_errors_total", kind="actuation") == 1
    assert (
        counter(
            daemon,
            "elastiscale_decisions_total",
            component="router",
            outcome="failed",
            reason="policy:demand",
        )
        == 1
    )
    (failed,) = [e for e in world.journal() if e["kind"] == "outcome" and not e["ok"]]
    assert "adapter bug on router" in failed["message"]


def test_a_tick_that_raises_is_logged_and_the_next_one_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path)
    daemon = world.daemon()
    assert daemon.runtime is not None
    engine = daemon.runtime.engine
    real_step = engine.step
    calls = iter([RuntimeError("engine bug")])

    def step(now_s: float) -> Any:
        failure = next(calls, None)
        if failure is not None:
            raise failure
        return real_step(now_s)

    monkeypatch.setattr(engine, "step", step)
    first = daemon.tick(1000.0)
    assert first is not None and not first.ok and first.records == ()
    assert any("tick 1 failed" in r.getMessage() and r.exc_info for r in caplog.records)
    assert not daemon.status.readiness().ready
    second = daemon.tick(1010.0)
    assert second is not None and second.ok
    assert daemon.status.readiness().ready
    assert counter(daemon, "elastiscale_ticks_total", result="error") == 1
    assert counter(daemon, "elastiscale_ticks_total", result="ok") == 1


class StubLeader:
    def __init__(self) -> None:
        self.leading = False

    def is_leader(self) -> bool:
        return self.leading

    def stop(self, release: bool = True) -> None:
        pass


def test_a_follower_decides_without_acting_and_takes_over_warm(tmp_path: Path) -> None:
    world = World(tmp_path)
    daemon = world.daemon()
    leader = StubLeader()
    daemon.leader_loop = leader  # type: ignore[assignment]
    for now_s in (1000.0, 1010.0, 1020.0):
        daemon.tick(now_s)
        assert outcomes(daemon) == {"router": "dry-run", "llm": "dry-run"}
    assert world.actuator.calls == []
    assert not [e for e in world.journal() if e["kind"] == "intent"]
    assert daemon.status.decisions()["leader"] is False
    leader.leading = True
    daemon.tick(1030.0)
    assert outcomes(daemon) == {"router": "scaled", "llm": "scaled"}
    assert world.policy.history_lengths[-1] == 4  # it saw every tick while following


def test_dry_run_reads_the_platform_and_changes_nothing(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.actuator.replicas = {"router": 2, "llm": 2}
    daemon = world.daemon(dry_run=True)
    daemon.tick(1000.0)
    records = {r.component: r for r in daemon.status.snapshot.records}  # type: ignore[union-attr]
    assert records["router"].current_replicas == 2  # read through to the real actuator
    assert outcomes(daemon) == {"router": "dry-run", "llm": "dry-run"}
    assert world.actuator.calls == []
    assert daemon.status.decisions()["dry_run"] is True


def test_a_platform_down_at_start_is_retried_with_backoff(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.actuator_failures = [ActuatorError("API unreachable"), ActuatorError("still down")]
    daemon = world.daemon()  # the first build fails during start
    assert daemon.runtime is None
    ready = daemon.status.readiness()
    assert not ready.ready and "API unreachable" in ready.reasons[0]
    assert daemon.tick(1004.0) is None  # backing off until 1010 (a tick from 1005 tries)
    assert daemon.tick(1010.0) is None  # second failure: next build at 1030
    assert daemon.tick(1020.0) is None
    assert counter(daemon, "elastiscale_errors_total", kind="build") == 2
    assert daemon.tick(1030.0) is not None
    assert desired(daemon) == {"router": 3, "llm": 8}
    assert daemon.status.readiness().ready


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda raw: raw["control"].update(interval_s=-1), "control.interval_s"),
        (lambda raw: raw["daemon"].update(listen="nowhere"), "daemon.listen"),
        (lambda raw: raw.update(metrics={"type": "no-such-source"}), "metrics.type"),
        (lambda raw: raw.pop("metrics"), "metrics: required"),
    ],
    ids=["bad field", "bad daemon field", "unknown plugin", "no metrics"],
)
def test_a_broken_reload_is_refused_and_the_old_config_keeps_running(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    change: Callable[[dict[str, Any]], Any],
    problem: str,
) -> None:
    world = World(tmp_path)
    daemon = world.daemon()
    daemon.tick(1000.0)
    runtime = daemon.runtime
    broken = json.loads(json.dumps(world.raw))
    change(broken)
    world.write(broken)
    assert daemon.reload() is False
    assert daemon.runtime is runtime
    assert any(problem in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    world.source.demand = {"router": 45.0, "llm": 135.0}
    daemon.tick(1010.0)
    assert desired(daemon) == {"router": 5, "llm": 14}  # still ticking, on the old config
    (reload,) = [e for e in world.journal() if e["kind"] == "reload"]
    assert reload["ok"] is False and any(problem in p for p in reload["problems"])
    assert counter(daemon, "elastiscale_config_reloads_total", result="refused") == 1


def test_a_valid_reload_takes_effect_and_keeps_the_history(tmp_path: Path) -> None:
    world = World(tmp_path)
    daemon = world.daemon()
    daemon.tick(1000.0)
    assert daemon.runtime is not None
    history = daemon.runtime.engine.history
    world.raw["pipeline"]["components"]["llm"]["capacity_per_replica"] = 5
    world.write()
    assert daemon.reload() is True
    assert daemon.runtime.engine.history is history
    daemon.tick(1010.0)
    assert desired(daemon) == {"router": 3, "llm": 15}
    assert counter(daemon, "elastiscale_config_reloads_total", result="ok") == 1


def test_changes_left_in_flight_are_reported_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = World(tmp_path)
    crashed = Journal(tmp_path / "journal.jsonl")
    crashed.write("start", 900.0)
    crashed.write("intent", 950.0, id="old:1", component="llm", from_replicas=2, to_replicas=6)
    crashed.close()
    daemon = world.daemon()
    (reported,) = daemon.status.decisions()["in_flight_at_start"]  # type: ignore[misc]
    assert reported["component"] == "llm" and reported["to_replicas"] == 6
    assert "llm 2 -> 6" in caplog.text
    starts = [e for e in world.journal() if e["kind"] == "start"]
    assert starts[-1]["in_flight"][0]["id"] == "old:1"


def test_the_settings_section_is_validated_by_field(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.raw["daemon"]["leader_election"] = {"duration_s": 4, "renew_s": 3, "namespace": "A"}
    world.raw["daemon"]["journal_max_bytes"] = 10
    world.write()
    with pytest.raises(ConfigError) as caught:
        world.config()
    assert sorted(caught.value.problems) == [
        "daemon.journal_max_bytes: Input should be greater than or equal to 4096 (got 10)",
        "daemon.leader_election.namespace: 'A' is not a valid namespace (lower-case letters, "
        "digits, '-')",
    ]
    del world.raw["daemon"]["leader_election"]["namespace"]
    del world.raw["daemon"]["journal_max_bytes"]
    world.write()
    with pytest.raises(ConfigError, match="renew_s = 3 must be less than half of duration_s = 4"):
        world.config()


def test_the_loop_ticks_on_schedule_reloads_and_stops(tmp_path: Path) -> None:
    """The real loop on the system clock, 50 ms interval, run on a thread."""
    world = World(tmp_path)
    world.raw["control"]["interval_s"] = 0.05
    world.write()
    options = RunOptions(config_path=world.path)
    daemon = Daemon(world.config(), options)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(daemon.run()))
    thread.start()
    time.sleep(0.4)
    daemon.request_reload()
    time.sleep(0.2)
    started = time.monotonic()
    daemon.request_stop("test")
    thread.join(timeout=5)
    assert codes == [0] and time.monotonic() - started < 1.0
    assert 6 <= daemon.ticks <= 13
    kinds = [e["kind"] for e in world.journal()]
    assert kinds[0] == "start" and "reload" in kinds and kinds[-1] == "stop"
    assert world.journal()[-1]["reason"] == "test"


def test_once_runs_one_tick_and_reports_it(tmp_path: Path) -> None:
    world = World(tmp_path)
    daemon = Daemon(world.config(), RunOptions(config_path=world.path, once=True))
    assert daemon.run() == 0
    assert daemon.ticks == 1 and world.actuator.replicas == {"router": 3, "llm": 8}
    world.actuator_failures = [ActuatorError("down")]
    again = Daemon(world.config(), RunOptions(config_path=world.path, once=True))
    assert again.run() == 1


def test_ready_counts_come_from_the_actuator_read(tmp_path: Path) -> None:
    world = World(tmp_path)
    daemon = world.daemon()
    world.actuator.read = lambda names: {  # type: ignore[method-assign]
        n: ReplicaState(desired=4, ready=2) for n in names
    }
    snapshot = daemon.tick(1000.0)
    assert snapshot is not None and snapshot.ready == {"router": 2, "llm": 2}


def test_a_config_that_cannot_build_stops_the_start_and_says_so(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.raw["metrics"] = {"type": "trace", "path": str(tmp_path / "absent.csv")}
    world.write()
    daemon = Daemon(world.config(), RunOptions(config_path=world.path))
    with pytest.raises(TraceError, match=r"absent\.csv"):
        daemon.run()
    assert world.journal()[-1] == {
        "kind": "stop",
        "at_s": pytest.approx(time.time(), abs=60),
        "run": daemon.journal.run_id,
        "reason": "start failed: TraceError",
    }


def test_signal_handlers_are_given_back_after_a_run(tmp_path: Path) -> None:
    import signal

    world = World(tmp_path)
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    assert Daemon(world.config(), RunOptions(config_path=world.path, once=True)).run() == 0
    assert {s: signal.getsignal(s) for s in before} == before
