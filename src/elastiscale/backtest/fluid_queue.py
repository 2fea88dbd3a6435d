"""Serving a fluid component's queue within one step: FCFS at the ready capacity, with reneging.

The queue is a deque of cohorts (the arrivals of one step, spread evenly over it); `serve`
drains it over one step [a, b] and records the waits of each arrival step's first and last
served units and its drops (docs/simulator.md, "The fluid model") in the component's records
(`backtest.fluid_records`).
"""

from __future__ import annotations

import math

from elastiscale.backtest.fluid_component import FluidComponent

_EPS = 1e-9


def serve(
    comp: FluidComponent, a: float, b: float, mu: float, served_cls: list[float]
) -> tuple[float, float, float, float, float, float]:
    """Serve the queue FCFS over [a, b] at `mu` work/s with reneging after the timeout.

    Returns (work served, requests served, input tokens served, output tokens served,
    requests dropped, the longest wait of a unit served, or -1 if none was); requests served
    of each re-entrant class are added to `served_cls`.

    The head cohort's remaining units arrived evenly over [lo, hi] (`dens` work per second
    of arrival time). Serving at full rate moves the head's arrival time forward at
    v = mu / dens per second, so the head's wait d - lo changes at 1 - v per second: it
    shrinks to 0 when v > 1 (the server catches up and then serves units as they arrive),
    and grows to the timeout when v < 1 (from then on units older than the timeout leave:
    mu is served and dens - mu dropped per second).
    """
    queue = comp.queue
    timeout = comp.timeout
    records = comp.records
    wait_first, wait_last = records.wait_first, records.wait_last
    dropped_by_arrival = records.dropped
    base = records.base  # the records' window starts at this arrival step
    d = a
    served_w = served_r = s_tin = s_tout = dropped_r = 0.0
    wmax = -1.0
    while queue:
        co = queue[0]
        lo, hi, dens, s = co[0], co[1], co[2], int(co[3]) - base
        rpw = co[4]
        cut = d - timeout
        if lo < cut:
            upto = hi if hi < cut else cut
            gone = dens * (upto - lo) * rpw
            dropped_r += gone
            dropped_by_arrival[s] += gone
            lo = upto
            if hi - lo <= _EPS:
                queue.popleft()
                continue
        if d >= b or mu <= 0:
            co[0] = lo
            break
        if lo > d:  # the head has not arrived yet: idle until it does
            if lo >= b:
                co[0] = lo
                break
            d = lo
        w = d - lo
        if co[7] == 0.0:
            wait_first[s] = w
            co[7] = 1.0
        v = mu / dens
        if v >= 1.0:
            # Phase 1: full rate, catching up with arrivals.
            t_catch = w / (v - 1.0) if v > 1.0 else (math.inf if w > 0 else 0.0)
            tau = min(t_catch, (hi - lo) / v, b - d)
            got = mu * tau
            lo += v * tau
            d += tau
            w_end = w - (v - 1.0) * tau
            if w_end < 0:
                w_end = 0.0
            if hi - lo > _EPS and d < b:
                # Phase 2: caught up, units are served as they arrive (no wait).
                tau = min(hi - lo, b - d)
                got += dens * tau
                lo += tau
                d += tau
                w_end = 0.0
        else:
            # Phase 1: waits grow at 1 - v per second until the timeout.
            tau = min((timeout - w) / (1.0 - v), (hi - lo) / v, b - d)
            if tau < 0:
                tau = 0.0
            got = mu * tau
            lo += v * tau
            d += tau
            w_end = w + (1.0 - v) * tau
            if hi - lo > _EPS and d < b:
                # Phase 2: at the timeout; the head moves with time, the excess drops.
                tau = min(hi - lo, b - d)
                got += mu * tau
                gone = (dens - mu) * tau * rpw
                dropped_r += gone
                dropped_by_arrival[s] += gone
                lo += tau
                d += tau
                w_end = timeout
        served_w += got
        got_r = got * rpw
        served_r += got_r
        s_tin += got_r * co[5]
        s_tout += got_r * co[6]
        mix = co[8]
        if mix is not None:
            for k, share in enumerate(mix):
                served_cls[k] += got_r * share
        if w > wmax:
            wmax = w
        if w_end > wmax:
            wmax = w_end
        wait_last[s] = w_end
        if hi - lo <= _EPS:
            queue.popleft()
            continue
        co[0] = lo
        if d >= b:
            break
    # Units still waiting past the timeout at the end of the step leave now.
    cut = b - timeout
    while queue and queue[0][0] < cut:
        co = queue[0]
        lo, hi = co[0], co[1]
        upto = hi if hi < cut else cut
        gone = co[2] * (upto - lo) * co[4]
        dropped_r += gone
        dropped_by_arrival[int(co[3]) - base] += gone
        if hi - upto <= _EPS:
            queue.popleft()
        else:
            co[0] = upto
            break
    return served_w, served_r, s_tin, s_tout, dropped_r, wmax
