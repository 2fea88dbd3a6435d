"""Faults of the metric side, each a row: a real `elastiscale run` process reading a real
Prometheus (through a fault proxy) that scrapes an exporter the test controls, acting on the
fake Kubernetes API server in its own process.

Rows start alternately at level A (router 45 req/s: 5 replicas, worker 25 req/s: 3) and level
B (65: 7, 45: 5). The fault starts, and the demand of the components it hides drops to 5 req/s
(1 replica, if the daemon could see it); while it lasts no count goes below the level's, the
daemon ticks at its pace and writes one decision record per component per tick, and its log
names the fault in one line (one per component for bad series); once the fault ends, demand
moves to the other level and the daemon reaches its counts within the row's number of ticks.

One daemon process serves every row (module scope), one row after another.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from chaos.conftest import kube_actuator, pipeline_config
from chaos.harness import (
    ChaosExporter,
    DaemonProcess,
    FaultProxy,
    KubeProcess,
    Watch,
    write_kubeconfig,
)
from conftest import wait_for
from elastiscale.testing.prometheus import LocalPrometheus

COMPONENTS = ("router", "worker")
LABELS = {"router": "mf-router", "worker": "mf-worker"}
BASE = {"router": (45.0, 5), "worker": (25.0, 3)}
LOW_RPS = 5.0
HIGH = {"router": (65.0, 7), "worker": (45.0, 5)}
FAULT_S = 2.5
#: Rows alternate between the two levels: each starts where the one before recovered to.
LEVELS = (BASE, HIGH)

#: Recovery measured per row (ticks from the end of the fault to the new counts), printed.
MEASURED: dict[str, int] = {}


@dataclass
class Env:
    prom: LocalPrometheus
    proxy: FaultProxy
    exporter: ChaosExporter
    kube: KubeProcess
    daemon: DaemonProcess
    level_rps: float = 0.0


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory,
    chaos_prom: LocalPrometheus,
    prom_proxy: FaultProxy,
    chaos_exporter: ChaosExporter,
) -> Iterator[Env]:
    workdir = tmp_path_factory.mktemp("metric-faults")
    set_demand(chaos_exporter, {c: BASE[c][0] for c in COMPONENTS})
    kube = KubeProcess(workdir, list(COMPONENTS))
    kubeconfig = write_kubeconfig(workdir / "kubeconfig", kube.url)
    config = pipeline_config(workdir / "p.yaml", prom_proxy.url, LABELS, kube_actuator(kubeconfig))
    daemon = DaemonProcess(config, workdir, "metric-faults")
    try:
        daemon.wait_ready()
        yield Env(chaos_prom, prom_proxy, chaos_exporter, kube, daemon)
    finally:
        daemon.kill()
        kube.stop()
        if MEASURED:
            print("\nrecovery after metric faults (ticks):", json.dumps(MEASURED))


def set_demand(exporter: ChaosExporter, rps: dict[str, float]) -> None:
    for component, value in rps.items():
        if component == "router":
            exporter.gauge.labels(LABELS["router"]).set(value)
        else:
            exporter.set_rate(LABELS["worker"], value)


def settled(daemon: DaemonProcess, level: dict[str, tuple[float, int]]) -> bool:
    """Whether the daemon's last tick read every component's demand at `level` (within 5 %)."""
    for record in daemon.decisions()["latest"]:
        seen = record["observation"].get("demand_rps")
        want = level[record["component"]][0]
        if seen is None or abs(seen - want) > 0.05 * want:
            return False
    return True


def counts(kube: KubeProcess) -> dict[str, int]:
    return {c: kube.replicas(c) for c in COMPONENTS}


# --- the faults -------------------------------------------------------------------------------


def _kill(env: Env) -> None:
    assert env.prom.pid is not None
    os.kill(env.prom.pid, signal.SIGKILL)


def _restart(env: Env) -> None:
    """Start Prometheus again; the fault ends at its first scrape of the exporter. A restarted
    Prometheus hands its discovered targets to its scrapers only after its discovery throttle
    (5 s, no flag in 2.42), which is Prometheus's own delay, not the daemon's."""
    env.prom.stop()  # reaps the killed process
    started_s = time.time()
    env.prom.start()
    wait_for(lambda: _scraped_since(env.prom, started_s), 30, "no scrape after the restart")


def _scraped_since(prom: LocalPrometheus, since_s: float) -> bool:
    """Whether `prom` holds an `up` sample of 1 newer than `since_s` (a range selector: its
    samples carry their scrape times, where `timestamp()` of an expression is the query's)."""
    query = urllib.parse.urlencode({"query": "up[1m]"})
    try:
        with urllib.request.urlopen(f"{prom.url}/api/v1/query?{query}", timeout=1) as answer:
            result = json.load(answer)["data"]["result"]
    except OSError:
        return False
    samples = [sample for entry in result for sample in entry["values"]]
    return any(float(at_s) > since_s and value == "1" for at_s, value in samples)


def _answers(transform: Callable[[dict[str, object]], None]) -> Callable[[Env], None]:
    """A proxy rewrite of every instant-query answer's result entries."""

    def inject(env: Env) -> None:
        def rewrite(path: str, body: bytes) -> bytes:
            if not path.startswith("/api/v1/query"):
                return body
            doc = json.loads(body)
            transform(doc)
            return json.dumps(doc).encode()

        env.proxy.transform = rewrite

    return inject


def _stale(doc: dict[str, object]) -> None:
    """Every newest-sample time ten minutes old (a scrape that stopped, values kept)."""
    for entry in doc["data"]["result"]:  # type: ignore[index]
        if entry["metric"].get("elastiscale_part") == "sample_time":
            entry["value"][1] = str(float(entry["value"][1]) - 600)


def _duplicated(doc: dict[str, object]) -> None:
    """Each value series twice (two targets exporting the same series)."""
    result = doc["data"]["result"]  # type: ignore[index]
    result.extend([e for e in result if "elastiscale_part" not in e["metric"]])


class _Resets:
    """The worker's counter reset to 0 every 3 s (a server restarting in a loop). rate() loses
    what was counted between the last scrape and a reset: at most 0.25 s in 3 s, within the
    HPA's tolerance of 10 %."""

    def __init__(self) -> None:
        self.stop = threading.Event()

    def inject(self, env: Env) -> None:
        self.stop.clear()

        def loop() -> None:
            while not self.stop.wait(3.0):
                env.exporter.reset_counter(LABELS["worker"])

        threading.Thread(target=loop, daemon=True).start()

    def clear(self, env: Env) -> None:
        self.stop.set()


_resets = _Resets()


def _gauge(value: float) -> Callable[[Env], None]:
    return lambda env: env.exporter.gauge.labels(LABELS["router"]).set(value)


@dataclass(frozen=True)
class Row:
    name: str
    inject: Callable[[Env], None]
    clear: Callable[[Env], None]
    #: components whose data the fault hides (their demand drops while it lasts)
    hidden: tuple[str, ...]
    #: a regex the one log line naming the fault matches (None: the daemon sees no fault)
    log: str | None
    recovery_ticks: int
    #: whether the hidden components' demand drops (not where the series itself is the fault)
    drop_demand: bool = True


SOURCE_DOWN = r"metric source unavailable"


def _back(env: Env) -> None:
    """The router's gauge at the level its row started from."""
    env.exporter.gauge.labels(LABELS["router"]).set(env.level_rps)


_BACK = _back
# Recovery bounds, in ticks of 0.5 s. New demand reaches a decision through the exporter, a
# 0.25 s scrape and a 2 s `rate()` window: about 4 ticks. A source that was down is asked
# again only when the guard's backoff (at most 1 s: 2 ticks) has passed. Two ticks on top are
# for a shared host's scheduling (8 ticks were measured once under load, where 4-5 are usual).
DATA_BACK_TICKS = 8
SOURCE_BACK_TICKS = 10
ROWS = [
    Row(
        "prometheus killed, restarted", _kill, _restart, COMPONENTS, SOURCE_DOWN, SOURCE_BACK_TICKS
    ),
    Row(
        "prometheus stopped (SIGSTOP) past the query timeout",
        lambda env: env.prom.pause(),
        lambda env: env.prom.resume(),
        COMPONENTS,
        SOURCE_DOWN + r".*no answer within 1 s",
        SOURCE_BACK_TICKS,
    ),
    Row(
        "prometheus answering 500",
        lambda env: setattr(env.proxy, "status", 500),
        lambda env: env.proxy.clear(),
        COMPONENTS,
        SOURCE_DOWN + r".*HTTP 500",
        SOURCE_BACK_TICKS,
    ),
    Row(
        "prometheus answering slowly (3 s, timeout 1 s)",
        lambda env: setattr(env.proxy, "delay_s", 3.0),
        lambda env: env.proxy.clear(),
        COMPONENTS,
        SOURCE_DOWN + r".*no answer within 1 s",
        SOURCE_BACK_TICKS,
    ),
    Row(
        "series NaN",
        _gauge(math.nan),
        _BACK,
        ("router",),
        r"router: .*\(nan\)",
        DATA_BACK_TICKS,
        False,
    ),
    Row(
        "series +Inf",
        _gauge(math.inf),
        _BACK,
        ("router",),
        r"router: demand_rps .*\(not finite: \+inf\)",
        DATA_BACK_TICKS,
        False,
    ),
    Row(
        "series empty (gone from the exporter)",
        lambda env: env.exporter.gauge.remove(LABELS["router"]),
        _BACK,
        ("router",),
        r"router: demand_rps .*\(no data\)",
        DATA_BACK_TICKS,
        False,
    ),
    Row(
        "series stale (newest sample 10 min old)",
        _answers(_stale),
        lambda env: env.proxy.clear(),
        COMPONENTS,
        r"demand_rps .*\(stale\)",
        DATA_BACK_TICKS,
    ),
    Row(
        "series duplicated",
        _answers(_duplicated),
        lambda env: env.proxy.clear(),
        COMPONENTS,
        r"demand_rps .*\(ambiguous: 2 series\)",
        DATA_BACK_TICKS,
    ),
    Row("counter resets (every 3 s)", _resets.inject, _resets.clear, (), None, DATA_BACK_TICKS),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_metric_fault(env: Env, row: Row) -> None:
    daemon, kube = env.daemon, env.kube
    level = ROWS.index(row) % 2
    start, after = LEVELS[level], LEVELS[1 - level]
    set_demand(env.exporter, {c: start[c][0] for c in COMPONENTS})
    base = {c: start[c][1] for c in COMPONENTS}
    env.level_rps = start["router"][0]
    wait_for(
        lambda: counts(kube) == base and settled(daemon, start),
        20,
        f"at {base}: {counts(kube)}",
    )
    daemon.wait_ticks(2)
    watch = Watch.start(daemon, COMPONENTS)

    row.inject(env)
    try:
        if row.drop_demand:
            set_demand(env.exporter, dict.fromkeys(row.hidden, LOW_RPS))
        seen: list[dict[str, int]] = []
        deadline = time.monotonic() + FAULT_S
        while time.monotonic() < deadline:
            seen.append(counts(kube))
            time.sleep(0.1)
        daemon.wait_ticks(1)
        low = [s for s in seen if any(s[c] < base[c] for c in COMPONENTS)]
        assert not low, f"scaled down during the fault: {low[:3]}"
        watch.assert_ticking()
        if row.log is not None:
            named = watch.lines_with(row.log)
            # one line for the source, else one per component whose data is bad
            lines = 1 if row.log.startswith(SOURCE_DOWN) else len(row.hidden)
            assert len(named) == lines, f"{len(named)} lines naming the fault: {named[:5]}"
        else:
            assert counts(kube) == base, counts(kube)
    finally:
        row.clear(env)
    watch.assert_one_record_per_component_per_tick()

    ended_tick = daemon.tick()
    target = {c: after[c][1] for c in COMPONENTS}
    set_demand(env.exporter, {c: after[c][0] for c in COMPONENTS})
    wait_for(lambda: counts(kube) == target, 30, f"recovered to {target}; at {counts(kube)}")
    reached = [
        e["tick"]
        for e in daemon.intents()
        if e["tick"] > ended_tick and e["to_replicas"] == target[e["component"]]
    ]
    ticks = max(reached) - ended_tick
    MEASURED[row.name] = ticks
    print(f"{row.name}: recovered in {ticks} ticks")
    assert ticks <= row.recovery_ticks, f"recovered in {ticks} ticks > {row.recovery_ticks}"
    watch.assert_one_record_per_component_per_tick()
    assert daemon.alive()


def test_the_daemon_outlived_every_fault(env: Env) -> None:
    """Last in the module: the same process ran every row, and stops cleanly."""
    code, elapsed_s = env.daemon.terminate()
    assert code == 0 and elapsed_s < 5.0
    assert env.daemon.entries()[-1]["kind"] == "stop"
