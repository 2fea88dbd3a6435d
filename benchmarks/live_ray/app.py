"""The live benchmark's pipeline as a Ray Serve application: stand-in models whose timing is real.

Every deployment is a `Stage`, built from a plain spec (see `scenario.py`):

- its constructor sleeps `startup_s` before the replica can serve (the cold start: an image
  pull and weights loading on a GPU node);
- each call holds one of the replica's `max_ongoing_requests` slots for `hold_s` (an
  `asyncio.sleep`, so a replica serves at most that many at once and further calls queue at
  the caller, as on a batching GPU server that is full);
- when its own hold ends it makes its downstream calls, one after another (the simulator's
  `sequential` edges): per edge a count drawn from the request's seed (fixed or Poisson around
  the edge's mean), so every run of the same trace makes exactly the same calls.

Metrics, exported by every replica process with prometheus-client on an ephemeral port, which
the replica announces by writing `<registry_dir>/<pid>.json` for the benchmark to scrape:

    live_calls_total{component}    calls made to a component (counted by the caller, so calls
                                   still queued for a busy component count: its demand)
    live_outstanding{component}    calls made and not yet answered, seen by the caller
    live_busy{component}           calls holding a slot at this replica
    live_ready{component}          1 once this replica has started

Ray worker processes import this file from the benchmark directory on their PYTHONPATH.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import live_metrics
from calls import call_count
from ray import serve
from ray.serve.handle import DeploymentHandle


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Stage:
    """One component: a cold start, a slot held per call, then its downstream calls."""

    def __init__(
        self,
        name: str,
        startup_s: float,
        hold_s: float,
        edges: list[dict[str, Any]],
        registry_dir: str,
        window_s: float,
        **downstream: DeploymentHandle,
    ) -> None:
        self.name = name
        self.hold_s = hold_s
        self.edges = edges
        self.downstream = downstream
        self.window_s = window_s
        self.arrivals_s: deque[float] = deque()
        live_metrics.export(registry_dir, name)
        time.sleep(startup_s)  # the cold start: blocking, as loading weights is
        live_metrics.READY.labels(name).set(1)

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Calls that reached this replica per second over the last `window_s`: the custom
        metric elastiscale's in-Serve policy reads as `demand_rps` (Serve sums replicas)."""
        now_s = time.monotonic()
        while self.arrivals_s and self.arrivals_s[0] < now_s - self.window_s:
            self.arrivals_s.popleft()
        return {"demand_rps": len(self.arrivals_s) / self.window_s}

    async def __call__(self, request: Any) -> dict[str, int]:
        self.arrivals_s.append(time.monotonic())
        if isinstance(request, dict):
            seed = str(request["seed"])
        else:  # the ingress: an HTTP request from the load client
            seed = str((await request.json())["seed"])
            live_metrics.CALLS.labels(self.name).inc()
        busy = live_metrics.BUSY.labels(self.name)
        busy.inc()
        try:
            await asyncio.sleep(self.hold_s)
        finally:
            busy.dec()
        calls = 0
        for edge in self.edges:
            target = edge["to"]
            n = call_count(f"{seed}/{self.name}>{target}", edge["fanout"], edge["distribution"])
            handle = self.downstream[target]
            for i in range(n):
                live_metrics.CALLS.labels(target).inc()
                outstanding = live_metrics.OUTSTANDING.labels(target)
                outstanding.inc()
                try:
                    answer = await handle.remote({"seed": f"{seed}/{target}.{i}"})
                finally:
                    outstanding.dec()
                calls += 1 + int(answer["calls"])
        return {"calls": calls}


def build(args: dict[str, Any]) -> Any:
    """The application from `args` = {"components": {name: spec}, "registry_dir": path,
    "window_s": the window of the reported arrival rate}.

    A spec has `startup_s`, `hold_s`, `slots` and `edges` ([{to, fanout, distribution}]);
    the first component listed is the ingress. Deployments are bound downstream first."""
    specs: dict[str, dict[str, Any]] = args["components"]
    registry_dir = str(args["registry_dir"])
    bound: dict[str, Any] = {}
    pending = list(specs)
    while pending:
        for name in list(pending):
            spec = specs[name]
            targets = [edge["to"] for edge in spec["edges"]]
            if all(t in bound for t in targets):
                bound[name] = Stage.options(
                    name=name, max_ongoing_requests=int(spec["slots"])
                ).bind(
                    name,
                    float(spec["startup_s"]),
                    float(spec["hold_s"]),
                    list(spec["edges"]),
                    registry_dir,
                    float(args["window_s"]),
                    **{t: bound[t] for t in targets},
                )
                pending.remove(name)
    return bound[next(iter(specs))]
