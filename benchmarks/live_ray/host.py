"""Whether this host kept up with the live benchmark, measured while the load runs.

A benchmark whose stand-in models sleep for their service time and whose load generator sends
requests at trace times measures the host as well as the policies: on a machine busy with other
work the sleeps overrun, the requests go out late and Ray's own processes queue for a CPU, and
the figures then describe the host. So the harness measures its own lag while each run's load
runs, over a sliding window, and past any threshold it stops, writes why and exits non-zero
without scoring (`HostOverloadedError`; run.py writes `refused.json` and `refused.md`).

Each measure, and when it refuses, over the last `window_s` (5 s):

- `send_error_s`: how late the load generator sent each request against its schedule;
  refused when the window's p95 passes 50 ms;
- `loop_lag_s`: how much a 50 ms sleep of the load generator's event loop overran; p95 > 50 ms;
- `hold_overrun`: the stand-ins' measured hold over their nominal `hold_s`, minus 1, per
  deployment whose hold is at least 20 ms (from their counters, through Prometheus); > 0.10;
- `cpu_steal`: CPU time stolen by the hypervisor, of all CPU time (/proc/stat); > 0.10;
- `foreign_load_per_cpu`: runnable processes outside the benchmark's own process tree (Ray's
  processes and replicas, Prometheus and the daemon are its descendants), each weighed by its
  scheduler weight against the benchmark's own nice level (10 levels nicer counts 0.11), per
  CPU, averaged over the window's samples (/proc/<pid>/stat); > 1.0. Kernel threads
  (kthreadd, pid 2, and its children) are left out: on this benchmark they are mostly softirq
  and RCU work for its own loopback traffic, and what they take shows in the symptoms above;
- `load_per_cpu`: the 1-minute load average per CPU (/proc/loadavg), recorded, not judged: it
  counts the benchmark's own processes, whose starts (22 replicas for the ceiling run) push it
  past 4 on a host that keeps up, and it trails by a minute.

Why these limits: a 10% hold overrun is a 10% capacity loss the simulator does not know of, the
size of the fidelity target; 50 ms is 2% of the smoke's and the full run's 2.25 s wall-clock
SLO (45 s / 20), and at 20x time it is one trace second of lateness. Steal and other work are
the causes the three symptoms share: with one foreign runnable process per CPU, the
benchmark's own processes (about one CPU's worth at full load) get at most half the machine
whenever they all want it, and the symptoms follow within seconds.

Everything here is pure bookkeeping over numbers the runners pass in with their own
timestamps (`read_proc` is the only reader, of two /proc files); nothing imports Ray.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Thresholds:
    """The refusal limits (see the module docstring for why these values)."""

    window_s: float = 5.0
    send_error_p95_s: float = 0.05
    loop_lag_p95_s: float = 0.05
    hold_overrun: float = 0.10
    min_hold_s: float = 0.02  # shorter holds are dominated by the event loop's granularity
    min_nominal_hold_s: float = 1.0  # held seconds a window needs before its ratio counts
    cpu_steal: float = 0.10
    foreign_load_per_cpu: float = 1.0
    min_samples: int = 20  # sends or lag samples a window needs before its p95 counts
    min_host_samples: int = 4  # /proc samples (one per 0.5 s) a window needs to judge steal or
    # other work: one count of runnable processes is an instant, not a load


@dataclass(frozen=True)
class Reading:
    """One measure past its limit: what, how much, the limit, and where (a deployment)."""

    measure: str
    value: float
    limit: float
    where: str = ""

    def __str__(self) -> str:
        at = f" at {self.where}" if self.where else ""
        return f"{self.measure}{at} = {self.value:.3g} over the last window (limit {self.limit:g})"


class HostOverloadedError(RuntimeError):
    """The host could not keep up: the run is stopped and not scored."""

    def __init__(self, readings: list[Reading], at_s: float) -> None:
        self.readings = readings
        self.at_s = at_s
        self.run = ""  # the run it stopped, set by the harness
        super().__init__(
            f"host overloaded {at_s:.1f} s into the load: " + "; ".join(map(str, readings))
        )


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative CPU time of the whole host (/proc/stat's first line), in clock ticks."""

    total: float
    steal: float


def parse_proc_stat(text: str) -> CpuTimes:
    """The aggregate `cpu` line of /proc/stat (user nice system idle iowait irq softirq steal
    ...; guest time is already inside user and nice, so it is not added again)."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            values = [float(v) for v in parts[1:9]]
            values += [0.0] * (8 - len(values))
            return CpuTimes(total=sum(values), steal=values[7])
    raise ValueError("/proc/stat: no aggregate 'cpu' line")


def parse_loadavg(text: str) -> float:
    """The 1-minute load average of /proc/loadavg."""
    fields = text.split()
    if not fields:
        raise ValueError("/proc/loadavg: empty")
    return float(fields[0])


def parse_pid_stat(text: str) -> tuple[int, str, int]:
    """(parent pid, state letter, nice) of one /proc/<pid>/stat line (the command name, in
    parentheses, may hold spaces: split after the last one)."""
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[1]), fields[0], int(fields[16])


KTHREADD_PID = 2  # the kernel's thread spawner: the parent of every kernel thread


def cpu_weight(nice: int) -> float:
    """A process's share of a contended CPU against one at nice 0: Linux's scheduler weighs
    each nice level 1.25x the next (1024 at nice 0, 110 at nice 10)."""
    return float(1.25 ** (-nice))


def foreign_runnable(processes: Mapping[int, tuple[int, str, int]], own_root: int) -> float:
    """Runnable (state R) processes that are neither `own_root` nor its descendants nor
    kernel threads (pid 2 and its children), each weighed by `cpu_weight` of its nice level
    relative to the benchmark's own (`own_root`'s): what other work takes from the benchmark's
    processes when all want a CPU. Relative, because only the difference counts to the
    scheduler: a hog at the benchmark's own nice level takes a full share, whatever the level."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in processes.items():
        children.setdefault(ppid, []).append(pid)
    own, stack = set(), [own_root]
    while stack:
        pid = stack.pop()
        own.add(pid)
        stack.extend(children.get(pid, []))
    own_nice = processes[own_root][2] if own_root in processes else 0
    return sum(
        cpu_weight(nice - own_nice)
        for pid, (ppid, state, nice) in processes.items()
        if state == "R" and pid not in own and pid != KTHREADD_PID and ppid != KTHREADD_PID
    )


def _processes(root: Path) -> dict[int, tuple[int, str, int]]:
    out: dict[int, tuple[int, str, int]] = {}
    for entry in root.iterdir():
        if entry.name.isdigit():
            try:
                out[int(entry.name)] = parse_pid_stat((entry / "stat").read_text())
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
    return out


@dataclass(frozen=True)
class HostSample:
    """One reading of /proc: CPU times, load average, runnable processes of other work."""

    cpu: CpuTimes
    load1: float
    foreign_runnable: float


def read_proc(root: Path = Path("/proc"), own_root: int | None = None) -> HostSample | None:
    """This host's sample (`own_root`: the benchmark's process, default this one), or None
    where /proc does not have it."""
    try:
        stat = (root / "stat").read_text(encoding="ascii")
        load = (root / "loadavg").read_text(encoding="ascii")
        foreign = foreign_runnable(_processes(root), own_root or os.getpid())
        return HostSample(parse_proc_stat(stat), parse_loadavg(load), foreign)
    except (OSError, ValueError):
        return None


def _p95(values: deque[tuple[float, float]]) -> float:
    return float(np.quantile(np.fromiter((v for _, v in values), float), 0.95))


@dataclass
class HostMonitor:
    """Sliding windows of the measures above, fed by the load generator and the watcher.

    `check(now_s)` returns the measures past their limits (empty: the host keeps up);
    `worst` keeps each measure's worst windowed value over the monitor's life, the figures a
    scored run reports; `timeline` every judged reading with its time (`at_s`, seconds into
    the load), so a refusal or a worst value can be placed in the run (run.py writes it as
    host_timeline.csv)."""

    thresholds: Thresholds = field(default_factory=Thresholds)
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    worst: dict[str, float] = field(default_factory=dict)
    timeline: list[tuple[float, Reading]] = field(default_factory=list)
    _sends: deque[tuple[float, float]] = field(default_factory=deque)
    _lags: deque[tuple[float, float]] = field(default_factory=deque)
    _holds: dict[str, tuple[float, float]] = field(default_factory=dict)
    _cpu: deque[tuple[float, CpuTimes]] = field(default_factory=deque)
    _foreign: deque[tuple[float, float]] = field(default_factory=deque)
    _load: float | None = None

    def sent(self, t_s: float, error_s: float) -> None:
        """One request went out `error_s` after its scheduled time."""
        self._sends.append((t_s, max(0.0, error_s)))

    def loop_lag(self, t_s: float, lag_s: float) -> None:
        """One sleep of the event loop overran by `lag_s`."""
        self._lags.append((t_s, max(0.0, lag_s)))

    def holds(self, measured_s: Mapping[str, tuple[float, float]]) -> None:
        """Per deployment, (measured, nominal) seconds of holds over the last window."""
        self._holds = dict(measured_s)

    def host(self, t_s: float, sample: HostSample) -> None:
        self._cpu.append((t_s, sample.cpu))
        self._foreign.append((t_s, sample.foreign_runnable))
        self._load = sample.load1

    def _trim(self, now_s: float) -> None:
        start = now_s - self.thresholds.window_s
        for window in (self._sends, self._lags, self._foreign):
            while window and window[0][0] < start:
                window.popleft()
        while len(self._cpu) > 1 and self._cpu[1][0] <= start:
            self._cpu.popleft()

    def measures(self, now_s: float) -> list[Reading]:
        """Every measure that has enough data in the window, with its limit."""
        th = self.thresholds
        self._trim(now_s)
        out: list[Reading] = []
        if len(self._sends) >= th.min_samples:
            out.append(Reading("send_error_s", _p95(self._sends), th.send_error_p95_s))
        if len(self._lags) >= th.min_samples:
            out.append(Reading("loop_lag_s", _p95(self._lags), th.loop_lag_p95_s))
        for name, (measured, nominal) in sorted(self._holds.items()):
            if nominal >= th.min_nominal_hold_s and math.isfinite(measured):
                out.append(Reading("hold_overrun", measured / nominal - 1.0, th.hold_overrun, name))
        if len(self._cpu) >= th.min_host_samples:
            first, last = self._cpu[0][1], self._cpu[-1][1]
            if last.total > first.total:
                steal = (last.steal - first.steal) / (last.total - first.total)
                out.append(Reading("cpu_steal", steal, th.cpu_steal))
        if len(self._foreign) >= th.min_host_samples:
            mean = sum(v for _, v in self._foreign) / len(self._foreign)
            out.append(Reading("foreign_load_per_cpu", mean / self.cpus, th.foreign_load_per_cpu))
        if self._load is not None:  # recorded, never judged (see the module docstring)
            out.append(Reading("load_per_cpu", self._load / self.cpus, math.inf))
        return out

    def check(self, now_s: float) -> list[Reading]:
        """The measures past their limits now (and a note of each one's worst value)."""
        past = []
        for reading in self.measures(now_s):
            key = reading.measure + (f"[{reading.where}]" if reading.where else "")
            self.worst[key] = max(self.worst.get(key, -math.inf), reading.value)
            self.timeline.append((now_s, reading))
            if reading.value > reading.limit:
                past.append(reading)
        return past


def hold_windows(
    measured_s: Mapping[str, float], nominal_s: Mapping[str, float], hold_s: Mapping[str, float]
) -> dict[str, tuple[float, float]]:
    """(measured, nominal) held seconds of the deployments whose hold is long enough to judge
    (`Thresholds.min_hold_s`); a deployment missing from either map is left out, not zero."""
    floor = Thresholds.min_hold_s
    return {
        name: (float(measured_s[name]), float(nominal_s[name]))
        for name in measured_s
        if name in nominal_s and hold_s.get(name, 0.0) >= floor
    }


def timeline_csv(timeline: list[tuple[float, Reading]]) -> str:
    """The monitor's timeline as CSV: at_s, measure, where, value, limit (one row a reading)."""
    rows = ["at_s,measure,where,value,limit"]
    for at_s, r in timeline:
        rows.append(f"{at_s:.2f},{r.measure},{r.where},{r.value:.6g},{r.limit:g}")
    return "\n".join(rows) + "\n"


def refusal(error: HostOverloadedError, context: Mapping[str, Any]) -> dict[str, Any]:
    """The content of refused.json: where the harness stopped and why."""
    return {
        "refused": True,
        "reason": str(error),
        "at_s": round(error.at_s, 2),
        "run": error.run,
        "readings": [
            {"measure": r.measure, "value": r.value, "limit": r.limit, "where": r.where}
            for r in error.readings
        ],
        **dict(context),
    }


def refusal_markdown(doc: Mapping[str, Any]) -> str:
    lines = [
        "# Not scored: the host could not keep up",
        "",
        f"{doc['reason']}",
        "",
        "| measure | where | value | limit |",
        "|---|---|---:|---:|",
    ]
    for r in doc["readings"]:
        where = r["where"] or "-"
        lines.append(f"| {r['measure']} | {where} | {r['value']:.3g} | {r['limit']:g} |")
    context = {k: v for k, v in doc.items() if k not in {"refused", "reason", "readings"}}
    lines += ["", "Context: " + ", ".join(f"{k} {v}" for k, v in context.items()), ""]
    return "\n".join(lines)
