"""Servers started by fixtures die with the test process, even when it is killed outright
(no teardown runs): a pytest run of its own holds the session's extra Prometheus
(`prometheus_factory`) and the chaos suite's (`chaos_prom`), is sent SIGKILL, and both
servers are gone after it. And `die_with_parent` execs the command itself (same PID)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import REPO, require_prometheus, wait_for
from elastiscale.testing.lifetime import die_with_parent

CHILD_TEST = """
import json, os, time
from pathlib import Path

def test_holds_its_servers(prometheus_factory, chaos_prom):
    extra = prometheus_factory()
    pids = [extra.pid, chaos_prom.pid]
    Path(os.environ["ES_CHILD_PIDS"]).write_text(json.dumps(pids))
    time.sleep(600)
"""


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie nobody reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def command_of(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


@pytest.mark.integration
def test_a_killed_test_run_takes_its_prometheus_servers_with_it(tmp_path: Path) -> None:
    require_prometheus()
    (tmp_path / "test_child.py").write_text(CHILD_TEST, encoding="utf-8")
    pids_file = tmp_path / "pids.json"
    env = dict(os.environ, ES_CHILD_PIDS=str(pids_file))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO / "tests")])
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += ["-p", "conftest", "-p", "chaos.conftest", "--basetemp", str(tmp_path / "t")]
    log = tmp_path / "child.log"
    with log.open("wb") as out:
        child = subprocess.Popen(
            [*command, "test_child.py"], cwd=tmp_path, env=env, stdout=out, stderr=out
        )
    pids: list[int] = []
    try:
        wait_for(pids_file.exists, 60, f"the child run's servers; log: {log.read_text()}")
        pids = json.loads(pids_file.read_text())
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
        assert all(Path(command_of(pid)[0]).name == "prometheus" for pid in pids)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        wait_for(lambda: not any(alive(pid) for pid in pids), 10, "its Prometheus servers gone")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
        for pid in pids:  # only when the check failed: leave no server behind
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_command_runs_under_its_own_pid() -> None:
    process = subprocess.Popen(die_with_parent(["sleep", "30"]))
    try:
        wait_for(lambda: command_of(process.pid) == ["sleep", "30"], 10, "sleep exec'd")
    finally:
        process.kill()
        process.wait(timeout=10)


def test_only_commands_started_on_the_main_thread_are_tied() -> None:
    """The kernel ties a child to the thread that forked it, which may end first; a program
    not found is left as it is, so that `Popen` raises as it would."""
    got: list[list[str]] = []
    thread = threading.Thread(target=lambda: got.append(die_with_parent(["sleep", "1"])))
    thread.start()
    thread.join()
    assert got == [["sleep", "1"]]
    tied = die_with_parent(["sleep", "1"])  # on the main thread
    assert tied[-2:] == ["sleep", "1"] and len(tied) > 2
    assert die_with_parent(["no-such-program-here"]) == ["no-such-program-here"]  # Popen raises
