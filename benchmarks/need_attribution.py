"""Where `elastiscale` spends and where it misses: which term of its need holds the GPUs.

    PYTHONPATH=src .venv/bin/python benchmarks/need_attribution.py \
        --trace ../shared/traces/alibaba_gentd26_lora_requests_10s_days00-13.csv.gz \
        --pipeline examples/pipelines/agent.yaml --rate-scale 280 \
        --start-day 9 --days 2 --warmup-days 1

One backtest of `hpa` and `elastiscale` (and any `--policy` given as NAME or NAME:JSON) on a
slice of a trace. Every tick of `elastiscale` is recorded (its decision details), and each GPU
component's held count is split into the terms that made it, bottom up:

- floor: the reactive floors (own load and backlog, what the upstreams send);
- forecast: the feed-forward demand without the burst reserve, above the floors;
- reserve: the burst reserve, above the forecast and the floors;
- hold: the scale-down window's hold above this tick's need.

Each term is summed in GPU-hours over the scored window (desired replicas x GPUs x interval),
beside the billed GPU-hours of each policy. Then hour by hour: the billed GPU-hours of
`elastiscale` and `hpa`, their late requests, and the term that held most in that hour; and the
ticks around the hours in which `elastiscale` missed most, with what each term asked for.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from elastiscale.backtest.api import backtest
from elastiscale.config import load_config
from elastiscale.controllers.feedforward import ElastiscalePolicy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

TERMS = ("floor", "forecast", "reserve", "hold")


def record_ticks() -> list[tuple[float, dict[str, dict[str, Any]]]]:
    """Patch `ElastiscalePolicy.propose` to keep every tick's details of the self-calibrating
    policy (not of the candidates its calibrations replay)."""
    ticks: list[tuple[float, dict[str, dict[str, Any]]]] = []
    original = ElastiscalePolicy.propose

    def propose(self: ElastiscalePolicy, ctx: Any) -> Any:
        out = original(self, ctx)
        if getattr(self, "_recorded", False):
            ticks.append((ctx.now_s, {n: dict(p.details) for n, p in out.items()}))
        return out

    original_init = ElastiscalePolicy.__init__

    def init(self: ElastiscalePolicy, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        # The policy of the backtest is the first one built; the candidates come later.
        self._recorded = not any(getattr(t, "_recorded", False) for t in _BUILT)  # type: ignore[attr-defined]
        _BUILT.append(self)

    ElastiscalePolicy.propose = propose  # type: ignore[method-assign]
    ElastiscalePolicy.__init__ = init  # type: ignore[method-assign]
    return ticks


_BUILT: list[Any] = []


def split(details: dict[str, Any]) -> dict[str, float] | None:
    """The held count split into TERMS (replicas), or None without a need."""
    if "need" not in details:
        return None
    floors = [details.get(f"{k}_replicas") for k in ("reactive", "upstream")]
    floor = max((f for f in floors if f is not None), default=0)
    ff = details.get("feedforward_replicas")
    base = details.get("feedforward_base_replicas", ff)
    need = details["need"]
    held = details["stabilized"]
    forecast_part = max(0, (base or 0) - floor) if ff is not None else 0
    top = max(floor, base or 0)
    reserve_part = max(0, need - top)
    return {
        "floor": float(min(floor, need)),
        "forecast": float(min(forecast_part, max(0, need - floor))),
        "reserve": float(reserve_part),
        "hold": float(max(0, held - need)),
    }


def late_by_hour(result: Any, slo_s: float, start_s: float, hours: int) -> np.ndarray:
    """Late (or dropped, by step) requests per hour of the scored window."""
    out = np.zeros(hours)
    late = result.latency_s > slo_s
    h = ((result.completed_at_s - start_s) // 3600).astype(int)
    ok = (h >= 0) & (h < hours)
    np.add.at(out, h[ok & late], result.weight[ok & late])
    for series in result.components.values():
        hs = ((series.t_s - start_s) // 3600).astype(int)
        good = (hs >= 0) & (hs < hours)
        np.add.at(out, hs[good], series.dropped[good])
    return out


def gpu_by_hour(config: Any, result: Any, start_s: float, hours: int) -> np.ndarray:
    out = np.zeros(hours)
    for name, series in result.components.items():
        gpus = config.pipeline.components[name].gpus_per_replica
        if not gpus:
            continue
        hs = ((series.t_s - start_s) // 3600).astype(int)
        good = (hs >= 0) & (hs < hours)
        np.add.at(out, hs[good], series.billed()[good] * gpus * result.step_s / 3600.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", type=Path, required=True)
    parser.add_argument("--pipeline", type=Path, required=True)
    parser.add_argument("--rate-scale", type=float, default=1.0)
    parser.add_argument("--start-day", type=float, default=None)
    parser.add_argument("--days", type=float, default=None)
    parser.add_argument("--warmup-days", type=float, default=0.0)
    parser.add_argument("--policy", action="append", default=[], help="NAME or NAME:JSON")
    parser.add_argument("--params", default="{}", help="elastiscale's parameters (JSON)")
    parser.add_argument("--worst", type=int, default=3, help="hours of most misses shown")
    args = parser.parse_args()
    ticks = record_ticks()
    config = load_config(args.pipeline)
    policies: list[Any] = ["hpa", {"name": "elastiscale", "params": json.loads(args.params)}]
    for ref in args.policy:
        name, _, params = ref.partition(":")
        policies.append({"name": name, "params": json.loads(params or "{}")})
    start_s = args.start_day * 86400.0 if args.start_day is not None else None
    end_s = (args.start_day + args.days) * 86400.0 if args.days is not None else None
    report = backtest(config, args.trace, policies, rate_scale=args.rate_scale, start_s=start_s,
                      end_s=end_s, warmup_s=args.warmup_days * 86400.0)  # fmt: skip
    scored_s = report.settings["scored_from_s"]
    hours = int(np.ceil((report.settings["scored_to_s"] - scored_s) / 3600.0))
    slo_s = config.pipeline.slo.latency_p95_s
    ceiling = report.ceiling_attainment or 1.0
    print(f"ceiling {100 * ceiling:.2f}%")
    for label, run in report.runs.items():
        s = run.score
        print(f"{label:>14}: {100 * s.slo_attainment:6.2f}% / {s.gpu_hours:9.1f} GPU-h, "
              f"avoidable misses {100 * max(ceiling - s.slo_attainment, 0):.2f} pts")  # fmt: skip
    interval_s = config.control.interval_s
    gpu_of = {n: c.gpus_per_replica for n, c in config.pipeline.components.items()}
    totals: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(TERMS, 0.0))
    per_hour = np.zeros((hours, len(TERMS)))
    settings: dict[str, float] = defaultdict(float)
    for at_s, by_name in ticks:
        if at_s < scored_s:
            continue
        h = min(int((at_s - scored_s) // 3600), hours - 1)
        setting = next(iter(by_name.values())).get("calibration_setting")
        if setting is not None:
            settings[str(setting)] += interval_s / 3600.0
        for name, details in by_name.items():
            if not gpu_of.get(name):
                continue
            parts = split(details)
            if parts is None:
                continue
            for i, term in enumerate(TERMS):
                gh = parts[term] * gpu_of[name] * interval_s / 3600.0
                totals[name][term] += gh
                per_hour[h, i] += gh
    print("\nDesired GPU-hours of elastiscale by term (what holds the GPUs):")
    for name, parts in totals.items():
        total = sum(parts.values())
        cells = ", ".join(f"{t} {v:.1f} ({100 * v / total:.0f}%)" for t, v in parts.items())
        print(f"  {name}: {total:.1f} = {cells}")
    print("Hours per calibration setting:",
          ", ".join(f"{k} {v:.1f}" for k, v in settings.items()))  # fmt: skip
    results = {label: run.result for label, run in report.runs.items()}
    gpu = {label: gpu_by_hour(config, r, scored_s, hours) for label, r in results.items()}
    late = {label: late_by_hour(r, slo_s, scored_s, hours) for label, r in results.items()}
    es, hpa = "elastiscale", "hpa"
    print("\nhour | eh GPU-h | hpa GPU-h | eh late | hpa late | terms (GPU-h)")
    for h in range(hours):
        terms = " ".join(f"{t[:3]} {per_hour[h, i]:.0f}" for i, t in enumerate(TERMS))
        print(f"{h:4d} | {gpu[es][h]:8.1f} | {gpu[hpa][h]:9.1f} | {late[es][h]:7.0f} | "
              f"{late[hpa][h]:8.0f} | {terms}")  # fmt: skip
    over = gpu[es] - gpu[hpa]
    print("\nover hpa's GPU-hours, hour-weighted share of each term in hours where eh > hpa:")
    mask = over > 0
    if mask.any():
        tot = per_hour[mask].sum(axis=0)
        print("  " + ", ".join(f"{t} {tot[i]:.0f}" for i, t in enumerate(TERMS)),
              f"(excess {over[mask].sum():.0f} GPU-h in {int(mask.sum())} hours)")  # fmt: skip
    worst = np.argsort(-late[es])[: args.worst]
    for h in worst:
        if late[es][h] <= 0:
            continue
        print(f"\nhour {h}: eh late {late[es][h]:.0f}, hpa late {late[hpa][h]:.0f}")
        lo, hi = scored_s + h * 3600, scored_s + (h + 1) * 3600
        for at_s, by_name in ticks[::4]:
            if not lo <= at_s < hi:
                continue
            d = by_name.get("writer") or next(iter(by_name.values()))
            keys = ("reactive_replicas", "upstream_replicas", "feedforward_base_replicas",
                    "feedforward_replicas", "need", "stabilized")  # fmt: skip
            row = " ".join(f"{k.split('_')[0][:4]}={d.get(k)}" for k in keys)
            trust = next((v for k, v in d.items() if k.endswith("_trust")), None)
            print(f"  t={at_s - lo:6.0f} {row} trust={trust}")


if __name__ == "__main__":
    main()
