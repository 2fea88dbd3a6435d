"""How many calls one request makes on an edge of the live benchmark's pipeline.

Apart from app.py so that it can be tested without importing Ray: the tests' own Ray cluster
needs its authentication mode set before Ray is first imported in the test process.
"""

from __future__ import annotations

import math
import random


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
