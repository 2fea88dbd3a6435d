"""Memory of the whole benchmark: the proportional set size (PSS) of this process and all its
descendants (Ray's processes and replicas, Prometheus, the daemon), read from /proc.

PSS divides shared pages among the processes that share them, so the sum over processes is the
memory the benchmark really takes; the sum of resident sizes would count the Python and Ray
libraries that the replicas share once per replica.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: split after the last one.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _pss_bytes(pid: int) -> int:
    try:
        text = (PROC / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def tree_pss_bytes(root_pid: int | None = None) -> int | None:
    """PSS of `root_pid` (default: this process) and its descendants; None without /proc."""
    if not (PROC / "self" / "smaps_rollup").exists():
        return None
    tree = _children()
    stack, total = [root_pid or os.getpid()], 0
    while stack:
        pid = stack.pop()
        total += _pss_bytes(pid)
        stack.extend(tree.get(pid, []))
    return total


class PeakMemory:
    """The largest `tree_pss_bytes` seen over calls to `sample()`, at most every `every_s`."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self.peak_bytes: int | None = None
        self._last_s: float | None = None

    def sample(self, now_s: float) -> None:
        if self._last_s is not None and now_s - self._last_s < self.every_s:
            return
        self._last_s = now_s
        got = tree_pss_bytes()
        if got is not None and (self.peak_bytes is None or got > self.peak_bytes):
            self.peak_bytes = got
