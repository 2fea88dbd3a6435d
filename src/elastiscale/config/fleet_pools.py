"""Which shared GPU pools a config draws from, and the check that a pool holds its members'
minimums.

A pipeline draws from pool `P` when one of its policies sets `params.gpu_pool: P`; it declares
the pool's size as its `pipeline.max_gpus` (the pool's size is the smallest any member
declares). Its GPU components' minimums (`replicas.min x gpus_per_replica`) run whatever the
pool decides, so they are a promise the pool must keep: a pool smaller than the sum of its
members' minimums is a config error, refused at load (`load_fleet`, and `elastiscale run`
over pipeline files) in one line naming the pool, its size and the sum.
"""

from __future__ import annotations

from collections.abc import Iterable

from elastiscale.config.models import Config


def pools_of(config: Config) -> list[str]:
    """The pools `config` draws from (none without `pipeline.max_gpus`), sorted."""
    if config.pipeline.max_gpus is None:
        return []
    named = {p.params.get("gpu_pool") for p in config.policies}
    return sorted(p for p in named if isinstance(p, str))


def min_gpus(config: Config) -> float:
    """GPUs its GPU components take at their minimum replicas."""
    return sum(c.replicas.min * c.gpus_per_replica for c in config.pipeline.components.values())


def pool_problems(configs: Iterable[Config]) -> list[str]:
    """One line per pool whose size is below the sum of its members' minimums (members by
    `pipeline.name`: a name given twice counts once)."""
    members: dict[str, dict[str, Config]] = {}
    for config in configs:
        for pool in pools_of(config):
            members.setdefault(pool, {})[config.pipeline.name] = config
    out = []
    for pool in sorted(members):
        group = members[pool]
        smallest = min(group.values(), key=lambda c: (c.pipeline.max_gpus or 0.0, c.pipeline.name))
        size = smallest.pipeline.max_gpus or 0.0
        need = sum(min_gpus(c) for c in group.values())
        if need > size + 1e-9:
            out.append(
                f"GPU pool {pool}: max_gpus = {size:g} (pipeline.max_gpus of "
                f"{smallest.pipeline.name}) is below the sum of its {len(group)} members' "
                f"minimums, {need:g} GPUs (replicas.min x gpus_per_replica): lower the "
                "minimums or enlarge the pool"
            )
    return out
