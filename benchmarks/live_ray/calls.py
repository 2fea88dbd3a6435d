"""Which calls one request makes on the edges of the live benchmark's pipeline, and how many.

Apart from app.py so that it can be tested without importing Ray: the tests' own Ray cluster
needs its authentication mode set before Ray is first imported in the test process.
"""

from __future__ import annotations

import math
import random
from typing import Any


def call_count(seed: str, mean: float, distribution: str) -> int:
    """How many calls one request makes on an edge: fixed (the floor, plus one with the
    fractional part's probability) or Poisson, drawn from `seed` alone."""
    rng = random.Random(seed)
    if distribution == "poisson":
        # Knuth's product of uniforms: exact, and fast for the small means of fan-outs.
        limit, product, count = math.exp(-mean), rng.random(), 0
        while product > limit:
            product *= rng.random()
            count += 1
        return count
    whole = int(mean)
    return whole + (1 if rng.random() < mean - whole else 0)


def plan_calls(
    seed: str, name: str, edges: list[dict[str, Any]], then: list[dict[str, Any]]
) -> list[tuple[str, dict[str, Any]]]:
    """The calls, in order, that a call to `name` with `seed` makes once its hold ends: per edge
    its drawn count of calls, each with its own seed; an edge with `via` rides on the last call
    of the edge to `via` (as that call's `then`) unless there is none; then the calls handed
    over to this one (`then`: [{"to", "seeds"}]). Returns [(target, payload)]."""
    counts = {
        e["to"]: call_count(f"{seed}/{name}>{e['to']}", e["fanout"], e["distribution"])
        for e in edges
    }
    handed: dict[str, list[dict[str, Any]]] = {}
    for edge in edges:
        via = edge.get("via")
        if via and counts.get(via, 0) > 0:
            seeds = [f"{seed}/{edge['to']}.{i}" for i in range(counts[edge["to"]])]
            handed.setdefault(via, []).append({"to": edge["to"], "seeds": seeds})
    calls: list[tuple[str, dict[str, Any]]] = []
    for edge in edges:
        target, via = edge["to"], edge.get("via")
        if via and counts.get(via, 0) > 0:
            continue  # made by the last call to `via`
        n = counts[target]
        for i in range(n):
            payload: dict[str, Any] = {"seed": f"{seed}/{target}.{i}"}
            if i == n - 1 and target in handed:
                payload["then"] = handed[target]
            calls.append((target, payload))
    for item in then:
        calls += [(item["to"], {"seed": s}) for s in item["seeds"]]
    return calls
