"""Replay arrivals as real HTTP requests against Serve's proxy, and watch the replicas meanwhile.

`replay` sends request `i` at `arrivals[i]` seconds after the start (whatever happened to
earlier ones: an open loop, as users do not wait for each other), each with its own seed so
every run makes the same downstream calls, and records its end-to-end latency and HTTP status.
Requests still unanswered after `timeout_s` count as failed (`status` 0). While it runs, every
`sample_s` it records each deployment's target and replica states from the dashboard, and
calls `tick()` (the benchmark keeps Prometheus's targets fresh with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np


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
) -> None:
    delay = began + at_s - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    sent = time.monotonic()
    log.sent_s[index] = sent - began
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


async def _watch(
    read_app: Callable[[], dict[str, Any]],
    tick: Callable[[], None],
    began: float,
    sample_s: float,
    samples: list[ReplicaSample],
    stop: asyncio.Event,
) -> None:
    while not stop.is_set():
        at = time.monotonic() - began
        try:
            app = await asyncio.to_thread(read_app)
        except Exception:  # a slow dashboard: this sample is missing, not zero
            app = None
        if app is not None:
            target, states = snapshot(app)
            samples.append(ReplicaSample(at, target, states))
        await asyncio.to_thread(tick)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                stop.wait(), timeout=max(0.0, sample_s - (time.monotonic() - began - at))
            )


async def _replay(
    url: str,
    arrivals: np.ndarray,
    seed: int,
    timeout_s: float,
    read_app: Callable[[], dict[str, Any]],
    tick: Callable[[], None],
    sample_s: float,
    tail_s: float,
) -> LiveRun:
    n = arrivals.size
    log = RequestLog(np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, dtype=np.int64))
    run = LiveRun(log)
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.monotonic()
        watcher = asyncio.create_task(_watch(read_app, tick, began, sample_s, run.samples, stop))
        await asyncio.gather(
            *(
                _send(session, url, f"{seed}-{i}", float(at), began, i, log, timeout_s)
                for i, at in enumerate(arrivals)
            )
        )
        end = float(arrivals[-1]) + tail_s if n else tail_s
        rest = began + end - time.monotonic()
        if rest > 0:
            await asyncio.sleep(rest)
        stop.set()
        await watcher
        run.duration_s = time.monotonic() - began
    return run


def replay(
    url: str,
    arrivals: np.ndarray,
    *,
    seed: int,
    timeout_s: float,
    read_app: Callable[[], dict[str, Any]],
    tick: Callable[[], None] = lambda: None,
    sample_s: float = 0.5,
    tail_s: float = 0.0,
) -> LiveRun:
    """Send the requests and watch the replicas until the last answer (and `tail_s` after the
    last arrival); see the module docstring."""
    return asyncio.run(_replay(url, arrivals, seed, timeout_s, read_app, tick, sample_s, tail_s))
