"""Cost guard of `elastiscale`: headroom the forecast has not earned is capped at what reactive
scaling would hold for the same demand.

The burst reserve (bursts.py) is insurance bought with no evidence that anything foresees the
bursts: it is persistence's headroom, sized to the attainment target from the history's rises.
On very bursty traffic that insurance costs more than all of a reactive autoscaler's GPUs
(a reserve sized for 99% of the demand from a quiet level is many times that level, and it is
paid around the clock). The reactive autoscaler's own spend is the honest baseline for that
kind of headroom: an HPA holds `load / target utilization` replicas, i.e. `1 / u - 1` (43% at
the usual 0.7) above what it sees, and nothing more.

So with `burst_reserve_cap: reactive` the part of a component's feed-forward need that the
reserve adds is capped at the replicas the reactive rule would hold for the feed-forward demand
without the reserve (the latest ingress rate carried down the graph, plus what the model has
earned by beating persistence):

    need_ff = min(sized(base + reserve), max(sized(base), ceil(base / (capacity x u))))

where `sized` is the policy's queueing sizer. The policy then never pays more than reactive
headroom for headroom it cannot justify, and keeps what reactive scaling does not have: the
ingress rate carried down the graph at once (the whole pipeline starts together), backlog
drained within each component's slack, and the look-ahead scale-down. What the model earns is
never capped (a trusted forecast is not insurance), nor are the reactive floors. Worked
numbers: base 30 req/s at a component of 2 req/s per replica, u = 0.7: the reactive rule holds
ceil(30 / 1.4) = 22; the queueing sizer needs 17 for the base and 40 with a reserve of 45
req/s: the guard caps the need at 22. The self-calibration replays the policy with and without
the guard (calibration.py) and takes the guard off where the history shows the target needs it.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping

from elastiscale.decision import Detail


def reactive_replicas(rate_rps: float, capacity_rps: float, utilization: float) -> int:
    """ceil(rate / (capacity x utilization)): the HPA's count for `rate_rps` (0 for no rate).

    Worked numbers: 30 req/s, 2 req/s per replica, u = 0.7: ceil(21.43) = 22."""
    if rate_rps <= 0.0 or capacity_rps <= 0.0:
        return 0
    return math.ceil(rate_rps / (capacity_rps * utilization) - 1e-9)


def guarded_need(need: int, base_need: int, base_rps: float, capacity_rps: float,
                 utilization: float) -> int:  # fmt: skip
    """The feed-forward `need` with the reserve's share capped at reactive headroom over the
    demand without it (`base_rps`, sized by the policy to `base_need`); see the module
    docstring. Never below `base_need`, never above `need`."""
    cap = max(base_need, reactive_replicas(base_rps, capacity_rps, utilization))
    return min(need, cap)


def apply_guard(
    proposals: MutableMapping[str, int],
    base_need: int,
    base_rps: float,
    capacity_rps: float,
    utilization: float,
    details: MutableMapping[str, Detail],
) -> None:
    """Cap `proposals["feedforward"]` (`guarded_need`); a cap that binds goes into `details`
    as `cost_guard_replicas` (`feedforward_replicas` stays the unguarded need)."""
    need = proposals["feedforward"]
    got = guarded_need(need, base_need, base_rps, capacity_rps, utilization)
    if got < need:
        proposals["feedforward"] = got
        details["cost_guard_replicas"] = got
