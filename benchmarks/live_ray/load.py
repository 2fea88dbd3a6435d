"""Replay arrivals as real HTTP requests against Serve's proxy, and watch the replicas meanwhile.

`replay` sends request `i` at `arrivals[i]` seconds after the start (whatever happened to
earlier ones: an open loop, as users do not wait for each other), each with its own seed so
every run makes the same downstream calls, and records its end-to-end latency and HTTP status.
Requests still unanswered after `timeout_s` count as failed (`status` 0). While it runs, every
`sample_s` it records each deployment's target and replica states from the dashboard, and
calls `tick()` (the benchmark keeps Prometheus's targets fresh with it).

With a `HostMonitor` (host.py) it also measures the host while the load runs: each request's
send-time error, the overrun of a 50 ms sleep of this event loop, the host's CPU steal and the
other work runnable beside the benchmark from /proc, and (through `read_holds`) the stand-ins'
hold times. When a measure passes its limit and `enforce` is set, the requests still to send
are cancelled and `replay` raises `HostOverloadedError`: the run is not scored.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from host import HostMonitor, HostOverloadedError, read_proc

#: How often the event-loop lag probe sleeps, and how often the host is judged, in seconds.
LAG_PROBE_S = 0.05
GUARD_S = 0.5


@dataclass
class RequestLog:
    """One row per request: send time (s from start), latency (s, NaN if none), status."""

    sent_s: np.ndarray
    latency_s: np.ndarray
    status: np.ndarray


@dataclass
class ReplicaSample:
    """The deployments at one moment: target count and replicas per state."""

    t_s: float
    target: dict[str, int]
    states: dict[str, dict[str, int]]


@dataclass
class LiveRun:
    requests: RequestLog
    samples: list[ReplicaSample] = field(default_factory=list)
    duration_s: float = 0.0
    #: Each measure's worst windowed value (host.py), when a monitor watched the run.
    host: dict[str, float] = field(default_factory=dict)


@dataclass
class Watch:
    """What the watcher does besides sampling replicas: keep the scraper fresh (`tick`), read
    the stand-ins' hold windows (`read_holds`) and judge the host (`monitor`)."""

    read_app: Callable[[], dict[str, Any]]
    tick: Callable[[], None] = lambda: None
    monitor: HostMonitor | None = None
    read_holds: Callable[[], Mapping[str, tuple[float, float]]] | None = None
    enforce: bool = True
    refused: HostOverloadedError | None = None


def snapshot(app: dict[str, Any]) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Targets and replica-state counts of every deployment of one application's details."""
    target: dict[str, int] = {}
    states: dict[str, dict[str, int]] = {}
    for name, details in app.get("deployments", {}).items():
        target[name] = int(details.get("target_num_replicas", 0))
        counts: dict[str, int] = {}
        for replica in details.get("replicas", []):
            counts[replica["state"]] = counts.get(replica["state"], 0) + 1
        states[name] = counts
    return target, states


async def _send(
    session: aiohttp.ClientSession,
    url: str,
    seed: str,
    at_s: float,
    began: float,
    index: int,
    log: RequestLog,
    timeout_s: float,
    monitor: HostMonitor | None,
) -> None:
    delay = began + at_s - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    sent = time.monotonic()
    log.sent_s[index] = sent - began
    if monitor is not None:
        monitor.sent(sent - began, sent - began - at_s)
    try:
        async with session.post(
            url, json={"seed": seed}, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as resp:
            await resp.read()
            log.status[index] = resp.status
    except (TimeoutError, aiohttp.ClientError):
        log.status[index] = 0
        return
    log.latency_s[index] = time.monotonic() - sent


async def _probe_loop_lag(monitor: HostMonitor, began: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        before = time.monotonic()
        await asyncio.sleep(LAG_PROBE_S)
        after = time.monotonic()
        monitor.loop_lag(after - began, after - before - LAG_PROBE_S)


async def _guard(
    watch: Watch, monitor: HostMonitor, began: float, stop: asyncio.Event, senders: Any
) -> None:
    """Sample /proc and judge the host every `GUARD_S`, apart from the replica sampling (whose
    dashboard reads slow down first on a busy host); refuse by cancelling the senders."""
    while not stop.is_set():
        at = time.monotonic() - began
        sample = read_proc()  # a few milliseconds: in the loop, not behind busy threads
        if sample is not None:
            monitor.host(at, sample)
        past = monitor.check(at)
        if past and watch.enforce:
            watch.refused = HostOverloadedError(past, at)
            senders.cancel()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=GUARD_S)


async def _read_holds(
    read: Callable[[], Mapping[str, tuple[float, float]]],
    monitor: HostMonitor,
    stop: asyncio.Event,
) -> None:
    """The stand-ins' hold windows, every `GUARD_S` at most (Prometheus, in a thread)."""
    while not stop.is_set():
        try:
            monitor.holds(await asyncio.to_thread(read))
        except Exception:  # a slow Prometheus: this window's holds are missing, not zero
            monitor.holds({})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=GUARD_S)


async def _watch(
    watch: Watch,
    began: float,
    sample_s: float,
    samples: list[ReplicaSample],
    stop: asyncio.Event,
) -> None:
    while not stop.is_set():
        at = time.monotonic() - began
        try:
            app = await asyncio.to_thread(watch.read_app)
        except Exception:  # a slow dashboard: this sample is missing, not zero
            app = None
        if app is not None:
            target, states = snapshot(app)
            samples.append(ReplicaSample(at, target, states))
        await asyncio.to_thread(watch.tick)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                stop.wait(), timeout=max(0.0, sample_s - (time.monotonic() - began - at))
            )


async def _replay(
    url: str,
    arrivals: np.ndarray,
    seed: int,
    timeout_s: float,
    watch: Watch,
    sample_s: float,
    tail_s: float,
) -> LiveRun:
    n = arrivals.size
    log = RequestLog(np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, dtype=np.int64))
    run = LiveRun(log)
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0)
    monitor = watch.monitor
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.monotonic()
        senders = asyncio.gather(
            *(
                _send(session, url, f"{seed}-{i}", float(at), began, i, log, timeout_s, monitor)
                for i, at in enumerate(arrivals)
            )
        )
        watcher = asyncio.create_task(_watch(watch, began, sample_s, run.samples, stop))
        probes = []
        if monitor is not None:
            probes.append(asyncio.create_task(_probe_loop_lag(monitor, began, stop)))
            probes.append(asyncio.create_task(_guard(watch, monitor, began, stop, senders)))
            if watch.read_holds is not None:
                probes.append(asyncio.create_task(_read_holds(watch.read_holds, monitor, stop)))
        with contextlib.suppress(asyncio.CancelledError):
            await senders
        if watch.refused is None:
            end = float(arrivals[-1]) + tail_s if n else tail_s
            rest = began + end - time.monotonic()
            if rest > 0:
                await asyncio.sleep(rest)
        stop.set()
        await asyncio.gather(watcher, *probes)
        run.duration_s = time.monotonic() - began
    if monitor is not None:
        run.host = dict(monitor.worst)
    if watch.refused is not None:
        raise watch.refused
    return run


def replay(
    url: str,
    arrivals: np.ndarray,
    *,
    seed: int,
    timeout_s: float,
    watch: Watch,
    sample_s: float = 0.5,
    tail_s: float = 0.0,
) -> LiveRun:
    """Send the requests and watch the replicas until the last answer (and `tail_s` after the
    last arrival); see the module docstring. Raises `HostOverloadedError` (see `Watch.enforce`)."""
    return asyncio.run(_replay(url, arrivals, seed, timeout_s, watch, sample_s, tail_s))
