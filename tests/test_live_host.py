"""The live benchmark's host monitor (benchmarks/live_ray/host.py): its pure bookkeeping on
given timestamps, and the refusal when a CPU hog runs beside the load generator.

The hog test drives the benchmark's own load generator (`load.replay`) against a small local
HTTP stand-in (a 20 ms hold per request, aiohttp in a thread) with four busy-looping processes
per CPU beside it, and expects `HostOverloadedError`: the harness must refuse to score a run on a
host that cannot keep up. It asserts nothing about speed, only that the refusal happens and
names a measure past its limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks" / "live_ray"))

from host import (  # noqa: E402
    CpuTimes,
    HostMonitor,
    HostOverloadedError,
    HostSample,
    Reading,
    Thresholds,
    cpu_weight,
    foreign_runnable,
    hold_windows,
    parse_loadavg,
    parse_pid_stat,
    parse_proc_stat,
    read_proc,
    refusal,
    refusal_markdown,
    timeline_csv,
)
from load import Watch, replay  # noqa: E402

STAT = """cpu  100 5 50 800 10 1 2 32 0 0
cpu0 50 2 25 400 5 1 1 16 0 0
intr 12345
"""


def test_proc_stat_aggregate_line() -> None:
    assert parse_proc_stat(STAT) == CpuTimes(total=1000.0, steal=32.0)
    # An old kernel without the steal column: none stolen.
    assert parse_proc_stat("cpu 1 2 3 4\n") == CpuTimes(total=10.0, steal=0.0)
    with pytest.raises(ValueError, match="no aggregate 'cpu' line"):
        parse_proc_stat("cpu0 1 2 3\n")


def test_loadavg_first_field() -> None:
    assert parse_loadavg("2.50 1.00 0.50 3/200 999\n") == 2.5
    with pytest.raises(ValueError, match="empty"):
        parse_loadavg("")


def _stat(pid: int, name: str, state: str, ppid: int, nice: int) -> str:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
    # stime cutime cstime priority nice ...
    return f"{pid} ({name}) {state} {ppid} 1 1 0 -1 0 0 0 0 0 5 3 0 0 20 {nice} 1 0"


def test_pid_stat_with_spaces_in_the_command() -> None:
    assert parse_pid_stat(_stat(42, "ray::Serve Replica", "R", 7, 10)) == (7, "R", 10)


@pytest.mark.parametrize(("nice", "weight"), [(0, 1.0), (10, 0.107), (-5, 3.05), (19, 0.0144)])
def test_cpu_weight_follows_the_schedulers_table(nice: int, weight: float) -> None:
    # Linux's sched_prio_to_weight: 1024 at 0, 110 at 10, 3121 at -5, 15 at 19.
    assert cpu_weight(nice) == pytest.approx(weight, rel=0.05)


def test_foreign_runnable_leaves_out_the_benchmarks_own_tree() -> None:
    processes = {
        1: (0, "S", 0),  # init
        10: (1, "S", 0),  # the benchmark
        11: (10, "R", 0),  # its raylet
        12: (11, "R", 0),  # a replica under the raylet
        20: (1, "R", 0),  # someone's test run
        21: (20, "R", 0),  # its worker
        22: (20, "S", 0),  # asleep
        30: (1, "R", 10),  # a niced job: about a tenth of a CPU against nice 0
        2: (0, "R", 0),  # kthreadd
        15: (2, "R", 0),  # a kernel thread (softirq work for the benchmark's own traffic)
    }
    assert foreign_runnable(processes, own_root=10) == pytest.approx(2.0 + 1.25**-10)


def test_foreign_runnable_weighs_nice_levels_against_the_benchmarks_own() -> None:
    # Everything started from a shell at nice 19: the hogs take full shares all the same.
    processes = {
        1: (0, "S", 0),
        10: (1, "S", 19),  # the benchmark, niced with its shell
        11: (10, "R", 19),  # its raylet
        20: (1, "R", 19),  # a hog at the same level
        21: (1, "R", 19),  # another
        30: (1, "R", 0),  # work at nice 0 outweighs the benchmark ~70x
    }
    assert foreign_runnable(processes, own_root=10) == pytest.approx(2.0 + 1.25**19)


def test_read_proc_is_missing_where_proc_is(tmp_path: Path) -> None:
    assert read_proc(tmp_path) is None
    (tmp_path / "stat").write_text(STAT)
    (tmp_path / "loadavg").write_text("1.5 1 1 1/1 1\n")
    (tmp_path / "10").mkdir()
    (tmp_path / "10" / "stat").write_text(_stat(10, "bench", "S", 1, 0))
    (tmp_path / "20").mkdir()
    (tmp_path / "20" / "stat").write_text(_stat(20, "hog", "R", 1, 0))
    (tmp_path / "21").mkdir()  # a process that has gone: no stat
    assert read_proc(tmp_path, own_root=10) == HostSample(CpuTimes(1000.0, 32.0), 1.5, 1)


def _fed(kind: str, values: list[float], spacing_s: float = 0.1) -> HostMonitor:
    monitor = HostMonitor(cpus=2)
    for i, v in enumerate(values):
        getattr(monitor, kind)(i * spacing_s, v)
    return monitor


@pytest.mark.parametrize(
    ("kind", "values", "refused"),
    [
        # 40 sends in 4 s, p95 of the lateness against 50 ms.
        ("sent", [0.001] * 40, False),
        ("sent", [0.001] * 30 + [0.2] * 10, True),
        ("sent", [0.001] * 38 + [0.2] * 2, False),  # 5% late: the p95 is not
        ("sent", [0.3] * 19, False),  # too few sends to judge
        ("sent", [-0.01] * 40, False),  # early is not late
        ("loop_lag", [0.002] * 40, False),
        ("loop_lag", [0.08] * 40, True),
    ],
)
def test_send_error_and_loop_lag_against_their_p95_limits(
    kind: str, values: list[float], refused: bool
) -> None:
    monitor = _fed(kind, values)
    past = monitor.check(4.0)
    assert bool(past) == refused
    if refused:
        assert past[0].measure == {"sent": "send_error_s", "loop_lag": "loop_lag_s"}[kind]


def test_windows_slide() -> None:
    """Late sends more than a window ago no longer count."""
    monitor = _fed("sent", [0.5] * 40)  # at 0 to 3.9 s
    assert monitor.check(4.0)
    for i in range(40):
        monitor.sent(10.0 + 0.1 * i, 0.0)
    assert monitor.check(14.0) == []
    assert monitor.worst["send_error_s"] == pytest.approx(0.5)  # the worst is kept


@pytest.mark.parametrize(
    ("holds", "refused_at"),
    [
        ({"planner": (11.5, 10.0)}, ["planner"]),  # 15% over
        ({"planner": (10.5, 10.0)}, []),
        ({"planner": (0.9, 0.5)}, []),  # too little held in the window to judge
        ({"planner": (10.0, 10.0), "writer": (13.0, 10.0)}, ["writer"]),
    ],
)
def test_hold_overrun_per_deployment(
    holds: dict[str, tuple[float, float]], refused_at: list[str]
) -> None:
    monitor = HostMonitor(cpus=2)
    monitor.holds(holds)
    assert [r.where for r in monitor.check(1.0)] == refused_at


def test_the_timeline_places_every_judged_reading_in_the_run() -> None:
    monitor = HostMonitor(cpus=2)
    monitor.holds({"planner": (10.5, 10.0)})
    monitor.check(1.0)
    monitor.holds({"planner": (12.0, 10.0)})
    monitor.check(1.5)
    rows = timeline_csv(monitor.timeline).splitlines()
    assert rows[0] == "at_s,measure,where,value,limit"
    assert rows[1:] == ["1.00,hold_overrun,planner,0.05,0.1", "1.50,hold_overrun,planner,0.2,0.1"]


def test_hold_windows_leave_out_short_and_missing_holds() -> None:
    got = hold_windows(
        {"router": 1.0, "planner": 11.0, "writer": 5.0},
        {"router": 0.5, "planner": 10.0},
        {"router": 0.001, "planner": 0.2, "writer": 0.4},
    )
    assert got == {"planner": (11.0, 10.0)}  # router too short; writer has no nominal figure


@pytest.mark.parametrize(
    ("steal_ticks", "foreign", "refused"),
    [
        (0.0, (0, 1), []),
        (20.0, (0, 1), ["cpu_steal"]),  # 20 of 100 ticks stolen
        (5.0, (3, 1), ["foreign_load_per_cpu"]),  # 2.5 other runnable processes on 2 CPUs
        (5.0, (2, 2), []),  # one per CPU is the limit, not past it
        (20.0, (4, 4), ["cpu_steal", "foreign_load_per_cpu"]),
    ],
)
def test_steal_and_other_work(
    steal_ticks: float, foreign: tuple[int, int], refused: list[str]
) -> None:
    monitor = HostMonitor(cpus=2)
    for i in range(3):
        monitor.host(0.5 * i, HostSample(CpuTimes(1000.0 + i, 10.0), 9.0, foreign[0]))
    assert monitor.check(1.0) == []  # three samples are too few to judge
    monitor.host(1.5, HostSample(CpuTimes(1102.0, 10.0 + steal_ticks), 9.0, foreign[1]))
    assert [r.measure for r in monitor.check(1.5)] == refused
    assert monitor.worst["load_per_cpu"] == 4.5  # recorded, never judged


def test_thresholds_can_be_set() -> None:
    monitor = HostMonitor(Thresholds(send_error_p95_s=0.5), cpus=2)
    for i in range(40):
        monitor.sent(0.1 * i, 0.2)
    assert monitor.check(4.0) == []


def test_refusal_documents_say_why() -> None:
    error = HostOverloadedError([Reading("hold_overrun", 0.25, 0.1, "writer")], at_s=3.0)
    error.run = "ray-serve"
    doc = refusal(error, {"slice": "smooth", "seed": 0})
    assert doc["refused"] is True and doc["run"] == "ray-serve" and doc["seed"] == 0
    assert "hold_overrun at writer = 0.25" in doc["reason"]
    text = refusal_markdown(doc)
    assert "| hold_overrun | writer | 0.25 | 0.1 |" in text and "slice smooth" in text


# ---- the refusal with a CPU hog beside the load generator ------------------------------------


@pytest.fixture
def stand_in() -> Iterator[str]:
    """A local HTTP stand-in holding each request 20 ms, in a thread of its own."""
    from aiohttp import web

    box: list[int] = []
    ready = threading.Event()
    stop: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(0.02)
        return web.json_response({"calls": 0})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box.append(runner.addresses[0][1])
        done = asyncio.Event()
        stop.append((asyncio.get_running_loop(), done))
        ready.set()
        await done.wait()
        await runner.cleanup()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert ready.wait(10), "the stand-in did not start"
    yield f"http://127.0.0.1:{box[0]}/"
    loop, done = stop[0]
    loop.call_soon_threadsafe(done.set)
    thread.join(5)


@pytest.fixture
def cpu_hog() -> Iterator[None]:
    """Four busy-looping processes per CPU, for the length of the test, started as other work
    on the host: a shell starts each in the background and exits, so the hogs are not in the
    test's own process tree (which the monitor counts as the benchmark's)."""
    n = 4 * (os.cpu_count() or 1)
    hog = f"{sys.executable} -c 'while True: pass' >/dev/null 2>&1 & echo $!"
    pids = [int(subprocess.check_output(["sh", "-c", hog], text=True)) for _ in range(n)]
    try:
        time.sleep(1.0)  # let them take the CPUs
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_cpu_hog_beside_the_load_generator_is_refused(stand_in: str, cpu_hog: None) -> None:
    arrivals = np.sort(np.random.default_rng(0).uniform(0.0, 10.0, 2000))  # 200 requests/s
    watch = Watch(read_app=dict, monitor=HostMonitor())
    with pytest.raises(HostOverloadedError) as refused:
        replay(stand_in, arrivals, seed=0, timeout_s=5.0, watch=watch)
    assert refused.value.readings
    for reading in refused.value.readings:
        assert reading.value > reading.limit
