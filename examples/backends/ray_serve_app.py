"""A three-stage retrieval-augmented pipeline as a Ray Serve application.

    router -> retriever -> llm

Each stage is a deployment that counts its arrivals and reports them to Ray Serve's autoscaler as
the custom metric `demand_rps` (arrivals per second over the last `window_s`), which is what
`elastiscale.adapters.ray.policy` reads. The models are stand-ins that sleep for their service
time, so the example runs on a laptop; `ray_actor_options={"num_cpus": 0.1}` lets many replicas
share two cores.

Deploy it with one of the Serve configs beside this file (see README.md):

    serve deploy examples/backends/serve_external_scaler.yaml     # elastiscale as a sidecar
    serve deploy examples/backends/serve_app_policy.yaml          # elastiscale inside Serve

`args.extra_demand_rps` adds a constant to the reported router demand: a way to exercise the
scaling path without a load generator.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

CPU_PER_REPLICA = {"num_cpus": 0.1}


class ArrivalCounter:
    """Arrivals in the last `window_s` seconds, as a rate."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._arrivals_s: deque[float] = deque()

    def arrive(self, now_s: float) -> None:
        self._arrivals_s.append(now_s)

    def rate_rps(self, now_s: float) -> float:
        while self._arrivals_s and self._arrivals_s[0] < now_s - self.window_s:
            self._arrivals_s.popleft()
        return len(self._arrivals_s) / self.window_s


@serve.deployment(ray_actor_options=CPU_PER_REPLICA)
class LLM:
    """Stands in for a GPU model: each call holds the replica for `service_time_s`."""

    def __init__(self, service_time_s: float = 0.2) -> None:
        self.service_time_s = service_time_s
        self.arrivals = ArrivalCounter()

    async def __call__(self, prompt: str) -> str:
        self.arrivals.arrive(time.time())
        await asyncio.sleep(self.service_time_s)
        return f"answer to {prompt!r}"

    def record_autoscaling_stats(self) -> dict[str, float]:
        return {"demand_rps": self.arrivals.rate_rps(time.time())}


@serve.deployment(ray_actor_options=CPU_PER_REPLICA)
class Retriever:
    """Stands in for a vector search: one lookup, then `llm_calls` generations."""

    def __init__(self, llm: DeploymentHandle, llm_calls: int = 2) -> None:
        self.llm = llm
        self.llm_calls = llm_calls
        self.arrivals = ArrivalCounter()

    async def __call__(self, query: str) -> list[str]:
        self.arrivals.arrive(time.time())
        calls = [self.llm.remote(f"{query} #{i}") for i in range(self.llm_calls)]
        return list(await asyncio.gather(*calls))

    def record_autoscaling_stats(self) -> dict[str, float]:
        return {"demand_rps": self.arrivals.rate_rps(time.time())}


@serve.deployment(ray_actor_options=CPU_PER_REPLICA)
class Router:
    """The ingress: forwards every request to the retriever."""

    def __init__(self, retriever: DeploymentHandle, extra_demand_rps: float = 0.0) -> None:
        self.retriever = retriever
        self.extra_demand_rps = extra_demand_rps
        self.arrivals = ArrivalCounter()

    async def __call__(self, request: Any) -> list[str]:
        self.arrivals.arrive(time.time())
        query = request.query_params.get("q", "") if hasattr(request, "query_params") else ""
        answers: list[str] = await self.retriever.remote(query)
        return answers

    def record_autoscaling_stats(self) -> dict[str, float]:
        return {"demand_rps": self.arrivals.rate_rps(time.time()) + self.extra_demand_rps}


def build(args: dict[str, Any]) -> serve.Application:
    """The application, from the Serve config's `args` (all optional)."""
    llm = LLM.options(name="llm").bind(float(args.get("llm_service_time_s", 0.2)))
    retriever = Retriever.options(name="retriever").bind(llm, int(args.get("llm_calls", 2)))
    return Router.options(name="router").bind(retriever, float(args.get("extra_demand_rps", 0.0)))


app = build({})
