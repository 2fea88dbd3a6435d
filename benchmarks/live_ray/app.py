"""The live benchmark's pipeline as a Ray Serve application: stand-in models whose timing is real.

Every deployment is a `Stage`, built from a plain spec (see `scenario.py`):

- its constructor sleeps `startup_s` before the replica can serve (the cold start: an image
  pull and weights loading on a GPU node);
- each call holds one of the replica's `slots` for `hold_s` (an `asyncio.sleep` under a
  semaphore, so a replica serves at most that many at once, as a batching GPU server that is
  full). Serve's `max_ongoing_requests` is `slots` for a deployment that calls nothing, so
  further calls queue at the caller; a deployment that calls others keeps its request ongoing
  while it awaits them (Serve counts it), so it gets room for those (`max_ongoing`) and its
  semaphore keeps the slots, which the simulator frees when the hold ends;
- when its own hold ends it makes its downstream calls, one after another (the simulator's
  `sequential` edges): per edge a count drawn from the request's seed (fixed or Poisson around
  the edge's mean), so every run of the same trace makes exactly the same calls;
- an edge with `via` is handed over: its calls are made by the last call of the edge to `via`,
  after that call's own downstream calls, through the handle that deployment holds; only when
  the request made no call to `via` does the stage make them itself. The chain shape's router
  hands the writer to the planner so: the writer's load arrives through a handle held by the
  planner, after the upstream work, in the order the simulator runs the file's edges.

Metrics, exported by every replica process with prometheus-client on an ephemeral port, which
the replica announces by writing `<registry_dir>/<pid>.json` for the benchmark to scrape:

    live_calls_total{component}    calls made to a component (counted by the caller, so calls
                                   still queued for a busy component count: its demand)
    live_outstanding{component}    calls made and not yet answered, seen by the caller
    live_busy{component}           calls holding a slot at this replica
    live_downstream{component}     calls past their hold, awaiting their own downstream calls
    live_ready{component}          1 once this replica has started
    live_hold_seconds_total, live_hold_nominal_seconds_total{component}
                                   slot time as measured and as meant (`hold_s` per call): the
                                   host monitor's hold overrun (host.py)

Each replica also writes one line per call, `component,end_unix,latency_s`, to
`<registry_dir>/calls-<pid>.csv` (line-buffered): the call's latency at this component, from
the caller's send (the ingress: the request's arrival) to the end of its hold, the simulator's
per-component latency (queue wait + hold), for the per-deployment p95 of the fidelity table.

Ray worker processes import this file from the benchmark directory on their PYTHONPATH.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from typing import Any

import live_metrics
from calls import plan_calls
from ray import serve
from ray.serve.handle import DeploymentHandle


# A twentieth of a logical CPU each: the ceiling run's 22 replicas fit the two CPUs Ray is given.
@serve.deployment(ray_actor_options={"num_cpus": 0.05})
class Stage:
    """One component: a cold start, a slot held per call, then its downstream calls."""

    def __init__(
        self,
        name: str,
        startup_s: float,
        hold_s: float,
        slots: int,
        edges: list[dict[str, Any]],
        registry_dir: str,
        window_s: float,
        **downstream: DeploymentHandle,
    ) -> None:
        self.name = name
        self.hold_s = hold_s
        self.n_slots = slots
        self.slots: asyncio.Semaphore | None = None  # made in the replica's event loop
        self.edges = edges
        self.downstream = downstream
        self.window_s = window_s
        self.arrivals_s: deque[float] = deque()
        live_metrics.export(registry_dir, name)
        path = os.path.join(registry_dir, f"calls-{os.getpid()}.csv")
        self.calls_log = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        for metric in (live_metrics.BUSY, live_metrics.DOWNSTREAM):
            metric.labels(name).set(0)  # exported from the start: a queue of zero is known
        time.sleep(startup_s)  # the cold start: blocking, as loading weights is
        live_metrics.READY.labels(name).set(1)

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Calls that reached this replica per second over the last `window_s`: the custom
        metric elastiscale's in-Serve policy reads as `demand_rps` (Serve sums replicas)."""
        now_s = time.monotonic()
        while self.arrivals_s and self.arrivals_s[0] < now_s - self.window_s:
            self.arrivals_s.popleft()
        return {"demand_rps": len(self.arrivals_s) / self.window_s}

    async def _hold(self) -> None:
        if self.slots is None:
            self.slots = asyncio.Semaphore(self.n_slots)
        async with self.slots:
            busy = live_metrics.BUSY.labels(self.name)
            busy.inc()
            began = time.monotonic()
            try:
                await asyncio.sleep(self.hold_s)
            finally:
                live_metrics.HELD.labels(self.name).inc(time.monotonic() - began)
                live_metrics.NOMINAL.labels(self.name).inc(self.hold_s)
                busy.dec()

    async def _call(self, target: str, payload: dict[str, Any]) -> int:
        payload["sent_unix"] = time.time()
        live_metrics.CALLS.labels(target).inc()
        outstanding = live_metrics.OUTSTANDING.labels(target)
        outstanding.inc()
        try:
            answer = await self.downstream[target].remote(payload)
        finally:
            outstanding.dec()
        return 1 + int(answer["calls"])

    async def __call__(self, request: Any) -> dict[str, int]:
        self.arrivals_s.append(time.monotonic())
        arrived_unix = time.time()
        if isinstance(request, dict):
            body = request
        else:  # the ingress: an HTTP request from the load client
            body = await request.json()
            live_metrics.CALLS.labels(self.name).inc()
        seed = str(body["seed"])
        await self._hold()
        end_unix = time.time()
        sent_unix = float(body.get("sent_unix", arrived_unix))
        self.calls_log.write(f"{self.name},{end_unix:.6f},{end_unix - sent_unix:.6f}\n")
        waiting = live_metrics.DOWNSTREAM.labels(self.name)
        waiting.inc()
        try:
            calls = await self._downstream_calls(seed, list(body.get("then", [])))
        finally:
            waiting.dec()
        return {"calls": calls}

    async def _downstream_calls(self, seed: str, then: list[dict[str, Any]]) -> int:
        calls = 0
        for target, payload in plan_calls(seed, self.name, self.edges, then):
            calls += await self._call(target, payload)
        return calls


def build(args: dict[str, Any]) -> Any:
    """The application from `args` = {"components": {name: spec}, "registry_dir": path,
    "window_s": the window of the reported arrival rate}.

    A spec has `startup_s`, `hold_s`, `slots`, `max_ongoing` and `edges` ([{to, fanout,
    distribution, via?}]); the first component listed is the ingress. A deployment holds a
    handle to each of its edges' targets and to every target handed over to it; deployments
    are bound downstream first."""
    specs: dict[str, dict[str, Any]] = args["components"]
    registry_dir = str(args["registry_dir"])
    handles = {name: [e["to"] for e in spec["edges"]] for name, spec in specs.items()}
    for spec in specs.values():
        for edge in spec["edges"]:
            if edge.get("via"):
                handles[edge["via"]].append(edge["to"])
    bound: dict[str, Any] = {}
    pending = list(specs)
    while pending:
        progress = False
        for name in list(pending):
            spec = specs[name]
            targets = handles[name]
            if all(t in bound for t in targets):
                bound[name] = Stage.options(
                    name=name, max_ongoing_requests=int(spec["max_ongoing"])
                ).bind(
                    name,
                    float(spec["startup_s"]),
                    float(spec["hold_s"]),
                    int(spec["slots"]),
                    list(spec["edges"]),
                    registry_dir,
                    float(args["window_s"]),
                    **{t: bound[t] for t in targets},
                )
                pending.remove(name)
                progress = True
        if not progress:
            raise ValueError(f"the pipeline's calls form a cycle through {pending}")
    return bound[next(iter(specs))]
