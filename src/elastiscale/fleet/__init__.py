"""Several pipelines as one control plane: merging the pipelines of a fleet file that share
components into one pipeline the `Engine` runs unchanged.

graph.py    names, shared-component definitions and the merged edges (demand preserved)
plugins.py  the `metrics:` and `actuator:` sections of the merged pipelines
merge.py    `merge_unit`: a fleet unit's pipelines as one validated `Config`
shares.py   `DemandShares`: each pipeline's share of a shared component's demand

The fleet file and its loading are `elastiscale.config.fleet`.

Only the merging is imported here: `elastiscale.config.fleet` loads through it and must stay
below the graph code (`shares.py` is imported by the engine from its module).
"""

from elastiscale.fleet.merge import Member, merge_unit

__all__ = ["Member", "merge_unit"]
