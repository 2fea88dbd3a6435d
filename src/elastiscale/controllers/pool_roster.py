"""The members a shared GPU pool knows before they tick: every unit of a daemon's configs that
draws from the pool (`config/fleet_pools.py`), with its GPU components at their minimums.

A pipeline's Deployments run their minimum replicas from the moment they exist, before the
pipeline's first request to the pool. A pool that learnt of its members only from their
requests would hand those GPUs to whoever asked first, and the Deployments would take more
GPUs than the pool has until the first askers shrank. So the daemon declares its configs'
members up front (`declare`, through `budget.declare_members`): the pool counts each declared
member that has not written yet as holding its minimums, and nobody grows into them. That a
pool holds the sum of its members' minimums is checked at load (`fleet_pools.pool_problems`).
"""

from __future__ import annotations

from collections.abc import Iterable

from elastiscale.config import Config
from elastiscale.config.fleet_pools import pools_of
from elastiscale.controllers import budget
from elastiscale.controllers.division import Need


def minimums(config: Config) -> tuple[Need, ...]:
    """`config`'s GPU components as needs at their minimums (what its Deployments run)."""
    return tuple(
        Need(name, comp.gpus_per_replica, comp.replicas.min, comp.replicas.min, (0.0,))
        for name, comp in config.pipeline.components.items()
        if comp.is_gpu
    )


def roster(configs: Iterable[Config]) -> dict[str, dict[str, tuple[Need, ...]]]:
    """pool -> member (`pipeline.name`) -> its minimums, over `configs` (one per unit)."""
    out: dict[str, dict[str, tuple[Need, ...]]] = {}
    for config in configs:
        for pool in pools_of(config):
            out.setdefault(pool, {})[config.pipeline.name] = minimums(config)
    return out


def declare(configs: Iterable[Config]) -> None:
    """Declare `configs`' members to this process's pools (`budget.declare_members`)."""
    budget.declare_members(roster(configs))
