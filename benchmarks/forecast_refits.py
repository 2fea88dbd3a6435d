"""What forecaster refits cost the control tick, inline or on the background worker.

    .venv/bin/python benchmarks/forecast_refits.py --refit inline
    .venv/bin/python benchmarks/forecast_refits.py --refit background
        [--policy elastiscale|predictive] [--components 200] [--ticks 1000]
        [--refit-every-s 600] [--gap-ms 0] [--gc-freeze]

The pipeline and demand of `engine_tick.py` (one ingress, the rest in a fan-out tree, a noisy
diurnal demand, 15 s ticks), with the policy's forecasters refitting every `--refit-every-s` of
data (a day by default in a deployment: a short period here, so that refits land inside a run
of a few thousand ticks). Per tick it records the wall time (what the control loop waits), the
CPU time of the ticking thread, and the CPU time of the whole process (what `engine_tick.py`
reports, which includes the worker's fits), plus the gen-2 garbage collections that ran inside
the tick: on this heap (statsmodels, scipy, pandas) one costs 30 to 50 ms, and they, not refits,
set the p99 of `engine_tick.py`.

Ticks run back to back by default, so a background fit always overlaps ticks and competes with
them for the GIL. A live loop ticks every 15 s and is idle in between: `--gap-ms` sleeps that
long between ticks (untimed), so a fit that fits in the gap leaves the next tick alone.
`--gc-freeze` calls `gc.freeze()` after the start-up ticks, moving the objects alive then (the
imported libraries) out of the collector's reach, to see what that does to gen-2 pauses.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Any

from elastiscale import load_config
from engine_tick import diurnal_engine, pipeline_config


class _Gen2:
    """Counts gen-2 collections and their CPU time (gc callbacks run on the collecting thread)."""

    def __init__(self) -> None:
        self.count = 0
        self.cpu_ms = 0.0
        self._began = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._began = time.thread_time()
        else:
            self.count += 1
            self.cpu_ms += (time.thread_time() - self._began) * 1000


def _percentiles(values_ms: list[float]) -> str:
    ordered = sorted(values_ms)
    p99 = ordered[int(0.99 * (len(ordered) - 1))]
    return f"median {statistics.median(ordered):6.2f}  p99 {p99:7.2f}  max {ordered[-1]:8.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", choices=("elastiscale", "predictive"), default="elastiscale")
    parser.add_argument("--refit", choices=("inline", "background"), default="background")
    parser.add_argument("--components", type=int, default=200)
    parser.add_argument("--ticks", type=int, default=1000)
    parser.add_argument("--refit-every-s", type=float, default=600.0)
    parser.add_argument("--gap-ms", type=float, default=0.0, help="idle time between ticks")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after start-up")
    args = parser.parse_args()

    raw = pipeline_config(args.components)
    raw["policies"] = [
        {
            "name": args.policy,
            "params": {
                "refit": args.refit,
                "forecaster_params": {"refit_every_s": args.refit_every_s},
            },
        }
    ]
    config = load_config(raw)
    engine, times = diurnal_engine(config, args.ticks)
    policy = engine.policies[0]
    refits = policy.refits  # type: ignore[attr-defined]
    wall_ms: list[float] = []
    thread_ms: list[float] = []
    process_ms: list[float] = []
    gen2 = _Gen2()
    overlapped_ms: list[float] = []  # wall time of ticks with a background refit in flight
    with_gen2 = 0
    slow_with_gen2 = 0
    # The first two ticks import statsmodels and make the first fits: left out, as a start-up.
    for t in times[1:3]:
        engine.step(float(t))
    if args.gc_freeze:
        gc.freeze()
    for t in times[3:]:
        if args.gap_ms > 0:
            time.sleep(args.gap_ms / 1000)
        count_before = gen2.count
        in_flight = refits.in_flight()
        wall0, thread0, process0 = time.perf_counter(), time.thread_time(), time.process_time()
        engine.step(float(t))
        wall_ms.append((time.perf_counter() - wall0) * 1000)
        if in_flight or refits.in_flight():
            overlapped_ms.append(wall_ms[-1])
        thread_ms.append((time.thread_time() - thread0) * 1000)
        process_ms.append((time.process_time() - process0) * 1000)
        if gen2.count > count_before:
            with_gen2 += 1
            if thread_ms[-1] > 2 * statistics.median(thread_ms):
                slow_with_gen2 += 1
    refits.wait(60.0)
    median_thread = statistics.median(thread_ms)
    slow = sum(1 for v in thread_ms if v > 2 * median_thread)
    print(
        f"{args.policy}, refit {args.refit}: {args.components} components, "
        f"{len(wall_ms)} ticks (after 2 start-up ticks), refit every {args.refit_every_s:g} s, "
        f"{args.gap_ms:g} ms between ticks{', gc frozen after start-up' if args.gc_freeze else ''}"
    )
    print(f"  wall per tick         {_percentiles(wall_ms)}")
    print(f"  tick thread CPU       {_percentiles(thread_ms)}")
    print(f"  process CPU           {_percentiles(process_ms)}")
    if overlapped_ms:
        print(
            f"  wall, the {len(overlapped_ms)} ticks with a refit in flight: "
            f"{_percentiles(overlapped_ms)}"
        )
    print(
        f"  refits started {refits.started}, adopted {refits.adopted}, failed {refits.failed}, "
        f"dropped {refits.dropped}"
    )
    print(
        f"  ticks over 2x the median (thread CPU): {slow}; ticks with a gen-2 collection: "
        f"{with_gen2} (of them over 2x: {slow_with_gen2}); gen-2 collections "
        f"{gen2.count}, {gen2.cpu_ms:.0f} ms CPU in all"
    )
    policy.close()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
