"""The discrete-event simulator's state: ingress requests, calls, replicas and components
(`des.py` runs the events on them).

A `Request` is one ingress request; a `Call` one call to one component on its behalf (its
parent is the call that made it); a `Station` one component with its replicas, its queue and
what it accumulates during the current step. `Request.hold` and `release` count a call as
awaiting its downstream calls at a component (an edge's `caller_waits`), and
`release_all` stops every such count of a dropped request at once.
"""

from __future__ import annotations

import math
import random
from collections import deque

from elastiscale.backtest.model import ServiceModel
from elastiscale.backtest.routes import Route
from elastiscale.backtest.simbase import ComponentFrame


class Request:
    __slots__ = ("arrival_s", "dropped", "held", "origin", "tin", "tout")

    def __init__(self, arrival_s: float, tin: float, tout: float, origin: int = 0) -> None:
        self.arrival_s = arrival_s
        self.origin = origin  # the ingress it entered at (index into `Pipeline.ingress`)
        self.tin = tin
        self.tout = tout
        self.dropped = False
        # Calls of this request counted as awaiting downstream, per component (None until one
        # is): released at once if the request is dropped.
        self.held: dict[Station, int] | None = None

    def hold(self, station: Station) -> None:
        station.awaiting += 1
        held = self.held
        if held is None:
            held = self.held = {}
        held[station] = held.get(station, 0) + 1

    def release(self, station: Station) -> None:
        station.awaiting -= 1
        held = self.held
        assert held is not None
        held[station] -= 1

    def release_all(self) -> None:
        """The request was dropped: none of its calls waits any longer."""
        if self.held:
            for station, count in self.held.items():
                station.awaiting -= count
            self.held = None


class Call:
    """One call to one component on behalf of one ingress request."""

    __slots__ = (
        "arrival_s",
        "made",
        "open",
        "parent",
        "pending",
        "request",
        "sequence",
        "station",
        "via_at",
        "waited",
    )

    def __init__(
        self, request: Request, station: Station, parent: Call | None, arrival_s: float
    ) -> None:
        self.request = request
        self.station = station
        self.parent = parent
        self.arrival_s = arrival_s
        self.pending = 0
        self.sequence: list[Station] = []
        self.open = 0  # its outstanding calls on edges its caller waits for
        self.waited = False  # its caller waits for it (`caller_waits`)
        self.via_at: Station | None = None  # the component of the call that made it (`via`)
        self.made: set[Station] | None = None  # components it has called that an edge hands over to


class Replica:
    __slots__ = ("busy", "cancelled", "draining", "ready")

    def __init__(self, ready: bool) -> None:
        self.busy = 0
        self.ready = ready
        self.draining = False
        self.cancelled = False


class Station(ComponentFrame):
    """One component: replicas, its queue, and what it accumulates during the current step."""

    __slots__ = (
        "acc_busy",
        "acc_draining",
        "acc_ready",
        "acc_starting",
        "acc_t",
        "active",
        "awaiting",
        "busy",
        "completions",
        "draining",
        "dropped",
        "free",
        "latencies",
        "n_arrivals",
        "parallel",
        "queue",
        "sequential",
        "starting",
        "tokens",
        "vias",
        "waits",
        "work",
    )

    def __init__(self, index: int, model: ServiceModel, replicas: int, t0_s: float, step_s: float):
        super().__init__(index, model, t0_s, step_s)
        self.active: list[Replica] = [Replica(True) for _ in range(replicas)]
        self.starting: list[Replica] = []
        self.draining: list[Replica] = []
        self.free = replicas * self.slots  # free slots on active replicas
        self.busy = 0  # calls in service, draining replicas included
        self.queue: deque[Call] = deque()
        #: (route, its target stations) per mode (`backtest.routes`)
        self.parallel: list[tuple[Route, list[Station]]] = []
        self.sequential: list[tuple[Route, list[Station]]] = []
        # Targets of the edges this component's calls wait for (`caller_waits`), with the
        # component a hand-over (`via`) makes the calls from, or None; empty: waits for none.
        self.waits: dict[Station, Station | None] = {}
        self.vias: set[Station] = set()  # the components these hand-overs go through
        self.awaiting = 0  # calls past their hold awaiting their downstream calls
        self.acc_t = t0_s
        self.acc_ready = self.acc_starting = self.acc_draining = self.acc_busy = 0.0
        self.n_arrivals = 0
        self.work = 0.0
        self.tokens = 0.0
        self.completions = 0
        self.dropped = 0
        self.latencies: list[float] = []

    def integrate(self, t_s: float) -> None:
        span = t_s - self.acc_t
        if span > 0:
            self.acc_ready += len(self.active) * span
            self.acc_starting += len(self.starting) * span
            self.acc_draining += len(self.draining) * span
            self.acc_busy += self.busy * span
            self.acc_t = t_s


def draw_count(rng: random.Random, mean: float, distribution: str) -> int:
    """One call count of an edge (see `backtest.model.draw_fanout` for the distributions)."""
    if mean <= 0:
        return 0
    if distribution == "fixed":
        whole = math.floor(mean)
        return whole + (1 if rng.random() < mean - whole else 0)
    if distribution == "poisson":
        if mean > 30:
            return max(0, round(rng.gauss(mean, math.sqrt(mean))))
        limit = math.exp(-mean)
        count, product = 0, rng.random()
        while product > limit:
            count += 1
            product *= rng.random()
        return count
    # geometric on {0, 1, ...} with mean `mean`: P(n) = p (1 - p)^n, p = 1 / (1 + mean)
    q = mean / (1.0 + mean)
    return math.floor(math.log(1.0 - rng.random()) / math.log(q))
