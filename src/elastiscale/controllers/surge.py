"""Surge floor: the reactive floor of a component whose queue is growing.

A component's demand reading is a rate over a window (Prometheus `rate(...[60s])`), so at the
start of a flash surge it lags the arrivals by up to the window: a rate that jumps from 4 to
25 requests/s reads 5.5, 12, 19 and then 25 at four ticks 15 s apart. A reactive floor sized on
it orders replicas in four steps, and each step is ready one start-up time after it was ordered.
The queue gauge has no window: while arrivals exceed service it grows by the excess, so

    arrivals_rps = served_rps + growth_rps,   served_rps = utilization x ready x capacity_rps

is the current arrival rate, a window earlier than the demand reading. And the backlog keeps
growing until the replicas ordered now are ready, one start-up time later:

    backlog_at_ready = queue + (growth_rps - starting_rps / 2) x startup_s

(replicas already starting arrive during that time, on average half-way through it). The floor
asks for the current arrivals plus that backlog drained over a share of the component's drain
time (`surge_drain_share`, a quarter by default):

    floor_rps = arrivals_rps + backlog_at_ready / (share x drain_s)

Every request that arrives while the backlog is there waits behind it, past its slack, so a
backlog drained over the whole drain time (start-up + slack, 194 s for a 70B LLM) is missed
for a second start-up time after the replicas are ready. The capacity bought to drain it is
needed only while the queue grows: `elastiscale` keeps the arrivals a surge showed in its
scale-down window (`surge_hold: arrivals`), not that capacity, so the extra replicas are
released once the queue stops growing, often before they are ready. Measured against
draining over the whole time and holding all of it (docs/results.md, "Flash surges"): more
attainment on the surge trace for 0.3% more GPU-hours, fewer GPU-hours on NASA at the same
attainment. With `surge_hold: confirmed` (opt-in) the window keeps those arrivals only once a
second reading in a row shows the surge: a batch of requests shows as one reading's growth,
and the arrivals estimated from it (served + growth over 15 s) are many times the real rate.
With `surge_hold_s` (opt-in), what the window held during a surge is kept at least that long
after it.

A growing queue is a surge when it would not be served within the component's latency slack
(its share of the SLO less its service time), or when it grew by more than three standard
deviations of what the arrivals and services change a stable queue by between the two
readings: `sqrt(2 x I x demand x span)`, with I the index of dispersion of the component's
typical rate changes (arrivals.py, `surge_noise: measured`; Poisson, I = 1, until 40 pairs of
readings were seen, or always with `surge_noise: poisson`). Arrivals that come in batches, or
a trace whose every request stands for several (a rate scale of 8 makes Poisson counts 8
times as dispersed), change a queue that much without any surge. Anything less is a swing
that the Erlang-C sizing already holds headroom for, and the floor is the ordinary one
(demand + queue / drain_s): steady and falling traffic is sized as before, and the difference
is only while a surge builds a backlog, which no forecast of the history saw coming.

Downstream, the arrivals a surge shows are carried through the fan-outs into the ordering
floor of the components below (`elastiscale` does this in topological order): a queue growing
at the first GPU stage tells the LLM behind it what it will receive once that stage has caught
up, instead of the LLM learning it from its own queue one start-up time later.

Worked numbers, the LLM of the custom pipeline
(1.5 requests/s a replica, start-up 180 s, drain 194 s) in a surge: 4 ready at full
utilization, 6 starting, the queue at 250 and then 460 requests 15 s later; growth 14/s,
arrivals 6 + 14 = 20/s; backlog at ready 460 + (14 - 4.5) x 180 = 2,170; drained over the
whole drain time the floor is 20 + 11.2 = 31.2 requests/s, over a quarter of it (48.5 s)
20 + 44.7 = 64.7, where the demand reading (12) and the queue term (2.4) asked for 14.4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True)
class QueueTrend:
    """The last queue reading of one component and how fast it was growing."""

    at_s: float | None = None
    queue: float = 0.0
    growth_rps: float = 0.0
    span_s: float = 0.0  # between the two readings the growth was measured over

    def observe(self, at_s: float, queue: float) -> float:
        """Take the reading `queue` of data time `at_s`; return the growth in requests/s
        (0 when it shrank or held, or at the first reading). A reading of a data time already
        seen keeps the growth measured last."""
        if self.at_s is not None and at_s > self.at_s:
            self.span_s = at_s - self.at_s
            self.growth_rps = max(0.0, (queue - self.queue) / self.span_s)
        elif self.at_s is None:
            self.growth_rps = 0.0
        else:
            return self.growth_rps
        self.at_s, self.queue = at_s, queue
        return self.growth_rps


#: How many standard deviations of a stable queue's change make a growth a surge.
SURGE_Z = 3.0


def is_surge(
    demand_rps: float,
    queue: float,
    growth_rps: float,
    span_s: float,
    served_rps: float,
    slack_s: float,
    dispersion: float | None = None,
) -> bool:
    """Whether a growing queue is a surge: it would not be served within the component's
    latency slack (`queue > served_rps x slack_s`), or it grew by more than `SURGE_Z` standard
    deviations of what arrivals and services at `demand_rps` change a stable queue by over
    `span_s`: sqrt(2 x I x demand x span), with I the arrivals' typical index of dispersion
    (`dispersion`, arrivals.py; 1, Poisson, where it is unknown or below 1). Anything less is
    a swing that the sizing's headroom already holds."""
    if growth_rps <= 0.0 or queue <= 0.0:
        return False
    if queue > served_rps * slack_s:
        return True
    index = 1.0 if dispersion is None else max(1.0, dispersion)
    return growth_rps * span_s > SURGE_Z * math.sqrt(2.0 * index * max(demand_rps, 0.0) * span_s)


def surge_arrivals_rps(
    demand_rps: float,
    queue: float,
    growth_rps: float,
    served_rps: float,
    slack_s: float,
    span_s: float,
    dispersion: float | None = None,
) -> float | None:
    """The arrival rate a growing queue shows (`served_rps + growth_rps`, never below
    `demand_rps`), or None when it is not a surge (`is_surge`)."""
    if not is_surge(demand_rps, queue, growth_rps, span_s, served_rps, slack_s, dispersion):
        return None
    return max(demand_rps, served_rps + growth_rps)


def surge_floor_rps(
    *,
    demand_rps: float,
    queue: float,
    growth_rps: float,
    served_rps: float,
    starting_rps: float,
    startup_s: float,
    drain_s: float,
    slack_s: float,
    span_s: float,
) -> float:
    """The floor of the module docstring, in requests/s: arrivals estimated from the queue's
    growth (never below `demand_rps`) plus the backlog expected when replicas ordered now are
    ready, drained over `drain_s`. Without a surge (`surge_arrivals_rps`) it is
    `demand_rps + queue / drain_s`."""
    arrivals_rps = surge_arrivals_rps(demand_rps, queue, growth_rps, served_rps, slack_s, span_s)
    return floor_rps(arrivals_rps, demand_rps, queue, growth_rps, starting_rps, startup_s, drain_s)


def floor_rps(
    arrivals_rps: float | None,
    demand_rps: float,
    queue: float,
    growth_rps: float,
    starting_rps: float,
    startup_s: float,
    drain_s: float,
    surge_drain_s: float | None = None,
) -> float:
    """`surge_floor_rps` from the surge's arrivals (`surge_arrivals_rps`, None: no surge); a
    surge's backlog is drained over `surge_drain_s` (default `drain_s`)."""
    if arrivals_rps is None:
        return demand_rps + max(queue, 0.0) / drain_s
    backlog = queue + max(0.0, growth_rps - starting_rps / 2.0) * startup_s
    return arrivals_rps + backlog / (surge_drain_s or drain_s)
