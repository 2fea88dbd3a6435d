"""Self-calibration of `elastiscale` by continuous backtesting: replay the ingress traffic the
policy has itself observed through the project's simulator under a few candidate risk
settings, and adopt the cheapest one whose replayed attainment meets the pipeline's target.

No fixed headroom is right for every traffic: on seasonal traffic the forecast carries the
policy and any held reserve is paid for nothing; on bursty traffic the reserve is what keeps
requests in time. Which one a pipeline needs is a question its own recent history can answer,
so the policy asks it. A calibration:

1. takes the ingress rates the policy has seen (the demand forecast's history: bin means of the
   observed rates at the forecaster's step, the last `calibration_window_s` of them) as a
   trace, token rates too where components are sized in tokens;
2. replays it (`elastiscale.backtest`, fast fidelity, the same pipeline, simulated metrics with
   the policy's rate window) once per candidate of `calibration_candidates` (`CATALOGUE`; by
   default `DEFAULT_CANDIDATES`), each an `elastiscale` with the policy's own parameters and
   the candidate's settings (and no self-calibration of its own), warmed up on the first half
   of the window, or with `calibration_warmup: history` on all the history kept before the
   window's second half (so the candidates judge the reserve by time of day the live policy
   uses); with `calibration_reference: hpa`, the reactive policy on the same traffic too;
3. scores each: SLO attainment and GPU-hours over the replay, and the replay's ceiling (every
   component at its max replicas from the start);
4. chooses (`choose`): the cheapest candidate whose attainment meets the goal (`goal`):
   `slo.attainment_target` of what the ceiling attains (so a replay in which even unlimited
   capacity misses some requests does not ask for the impossible), or, with a reference that
   misses more than twice what that allows, half the reference's avoidable misses; when none
   meets it, the one that attains most. Hysteresis: the setting in force stays unless the new
   choice is at least `SWITCH_MARGIN` cheaper, or the one in force falls short of the goal.

When: the first calibration once `calibration_min_history_s` of ingress has been seen, then
each time the history has doubled, and at most every `calibration_every_s` after that. When
the ingress becomes novel (its last hour above `calibration_novelty_factor` x the busiest hour
of the history the setting was chosen on, novelty.py), the safest candidate is in force at
once and a calibration is due half a window later, when the replay's scored half holds the
new traffic. Where:
on the policy's refit worker (`RefitScheduler.submit`): inline in backtests, so results
reproduce; in the background live, so a tick never waits for a replay (the setting in force
stays until the replay's result is collected at a later tick).

Every candidate keeps the reactive floors (a component's own load and backlog, and what its
upstreams send it): a calibration chooses the headroom above them, never below them.

The simulator sits above the policies (`elastiscale.backtest` imports them), so the replay
function is imported by name when the first calibration runs, as the registry resolves its
built-ins (`REPLAYER`).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from elastiscale.decision import Detail

if TYPE_CHECKING:
    from elastiscale.config import Config

Array = npt.NDArray[np.float64]

#: Every setting a calibration can replay: label -> the `elastiscale` parameters it sets.
#: `guarded`: the burst reserve capped at reactive headroom (cost_guard.py).
CATALOGUE: Mapping[str, Mapping[str, Any]] = {
    "reserve+hold": {"burst_reserve": True, "scale_down_lookback": "need",
                     "burst_reserve_cap": "none"},
    "reserve": {"burst_reserve": True, "scale_down_lookback": "forecast",
                "burst_reserve_cap": "none"},
    "quantile+hold": {"burst_reserve": False, "scale_down_lookback": "need",
                      "burst_reserve_cap": "none"},
    "guarded+hold": {"burst_reserve": True, "scale_down_lookback": "need",
                     "burst_reserve_cap": "reactive"},
    "guarded": {"burst_reserve": True, "scale_down_lookback": "forecast",
                "burst_reserve_cap": "reactive"},
}  # fmt: skip
#: The candidates replayed by default, safest first (`calibration_candidates`).
DEFAULT_CANDIDATES: tuple[str, ...] = ("reserve+hold", "reserve", "quantile+hold")
#: (label, setting) of the default candidates.
CANDIDATES: tuple[tuple[str, Mapping[str, Any]], ...] = tuple(
    (label, CATALOGUE[label]) for label in DEFAULT_CANDIDATES
)
#: A new choice replaces the setting in force only when this much cheaper (hysteresis).
SWITCH_MARGIN = 0.05
#: `module:function` that replays candidates (see `Replayer`).
REPLAYER = "elastiscale.backtest.calibration:replay_candidates"


@dataclass(frozen=True, slots=True)
class ObservedTraffic:
    """What the policy has seen at its ingress: bin start times, mean requests/s per bin and,
    where tokens matter, mean tokens/s per bin (NaN: no data in that bin)."""

    t_s: Array
    rate_rps: Array
    tokens_per_s: Array | None
    bin_s: float
    #: The last this many bins are scored, all before them warm the candidates up (None: the
    #: second half is scored).
    scored_bins: int | None = None


@dataclass(frozen=True, slots=True)
class Evidence:
    """One candidate's replayed result."""

    label: str
    attainment: float
    gpu_hours: float


@dataclass(frozen=True, slots=True)
class Replay:
    """All candidates of one calibration and the replay's ceiling (NaN: not computed)."""

    at_s: float
    span_s: float
    evidence: tuple[Evidence, ...]
    ceiling: float
    #: The reactive policy replayed on the same traffic (`calibration_reference`), or None.
    reference: Evidence | None = None


class Replayer(Protocol):
    """Replays `traffic` under each candidate's parameters (and, when `reference` names a
    policy, that policy with its defaults) -> a `Replay` (its `at_s` filled in by the caller)."""

    def __call__(
        self,
        config: Config,
        traffic: ObservedTraffic,
        params: Sequence[Mapping[str, Any]],
        labels: Sequence[str],
        rate_window_s: float,
        /,
        reference: str | None = ...,
    ) -> Replay: ...


def load_replayer(path: str = REPLAYER) -> Replayer:
    """The replay function named by `module:function`."""
    module, _, attr = path.partition(":")
    found: Replayer = getattr(importlib.import_module(module), attr)
    return found


def effective_target(target: float, ceiling: float) -> float:
    """`target` of what the ceiling attains (the target itself without a ceiling).

    Worked numbers: target 0.99, ceiling 0.9985 (a pipeline whose longest requests cannot meet
    the SLO even on idle replicas): 0.9885."""
    if math.isnan(ceiling) or ceiling <= 0.0:
        return target
    return target * min(ceiling, 1.0)


def goal(replay: Replay, target: float) -> float:
    """The attainment a candidate must reach: `target` of the ceiling, or, where the reactive
    reference misses more than twice what that allows, half the reference's avoidable misses
    (buying more is insurance the target cannot justify: on such traffic even the target's
    reserve is short of the bursts, and costs more than all of reactive scaling's GPUs).

    Worked numbers: target 0.99, ceiling 0.9987, reference 0.8856: the target allows 0.0100
    of avoidable misses, the reference misses 0.1131, half of it 0.0566: the goal is 0.9421.
    Reference 0.991: half its 0.0077 is below the target's 0.0100: the goal is 0.9887."""
    bar = effective_target(target, replay.ceiling)
    ref = replay.reference
    if ref is None or math.isnan(replay.ceiling):
        return bar
    half = replay.ceiling - 0.5 * max(replay.ceiling - ref.attainment, 0.0)
    return min(bar, half)


def choose(replay: Replay, target: float, current: str | None) -> str:
    """The label to adopt (see the module docstring, step 4)."""
    goal_ = goal(replay, target)
    by_label = {e.label: e for e in replay.evidence}
    meeting = [e for e in replay.evidence if e.attainment >= goal_]
    if meeting:
        best = min(meeting, key=lambda e: e.gpu_hours)
    else:
        best = max(replay.evidence, key=lambda e: (round(e.attainment, 3), -e.gpu_hours))
    held = by_label.get(current) if current is not None else None
    if held is None or held.label == best.label:
        return best.label
    held_ok = held.attainment >= goal_ or (not meeting and held.attainment >= best.attainment)
    if held_ok and best.gpu_hours > (1.0 - SWITCH_MARGIN) * held.gpu_hours:
        return held.label
    return best.label


@dataclass(slots=True)
class CalibrationState:
    """What the policy keeps between calibrations."""

    setting: str
    last_at_s: float | None = None
    last_span_s: float = 0.0
    pending: Future[Replay] | None = None
    replay: Replay | None = None
    failure: str | None = None
    #: When the ingress became novel (novelty.py), until the calibration that covers it.
    novel_since_s: float | None = None

    def due(
        self, now_s: float, span_s: float, min_s: float, every_s: float, novel_wait_s: float = 0.0
    ) -> bool:
        """Whether a calibration should start, given `span_s` of observed history (and, once
        the ingress became novel, `novel_wait_s` after that: the replay's scored part then
        holds the new traffic)."""
        if self.pending is not None or span_s < min_s:
            return False
        if self.last_at_s is None:
            return True
        if self.novel_since_s is not None and now_s - self.novel_since_s >= novel_wait_s:
            return True
        if now_s - self.last_at_s >= every_s:
            return True
        return span_s >= 2.0 * self.last_span_s and self.last_span_s < every_s

    def details(self) -> dict[str, Detail]:
        """The setting in force and the evidence it was chosen on, for decision records."""
        out: dict[str, Detail] = {"calibration_setting": self.setting}
        if self.replay is not None:
            r = self.replay
            out["calibration_at_s"] = round(r.at_s, 3)
            out["calibration_span_s"] = round(r.span_s, 3)
            out["calibration_ceiling"] = None if math.isnan(r.ceiling) else round(r.ceiling, 6)
            rows = r.evidence if r.reference is None else (*r.evidence, r.reference)
            out["calibration_evidence"] = "; ".join(
                f"{e.label}: {100 * e.attainment:.2f}% / {e.gpu_hours:.4g} GPU-h" for e in rows
            )
        if self.failure is not None:
            out["calibration_failure"] = self.failure
        if self.novel_since_s is not None:
            out["calibration_novel_since_s"] = round(self.novel_since_s, 3)
        return out


def traffic_trace_arrays(traffic: ObservedTraffic) -> tuple[Array, Array, Array | None]:
    """Bins from the first observed one, gaps filled with the previous bin's rate (a replay
    needs dense bins; a gap is neither zero demand nor a reason to stop): (t_s, requests per
    bin, tokens per bin or None)."""
    rate = traffic.rate_rps
    seen = np.flatnonzero(~np.isnan(rate))
    if seen.size == 0:
        return np.empty(0), np.empty(0), None
    start = int(seen[0])
    t_s = traffic.t_s[start:]
    filled = [_ffill(rate[start:])]
    if traffic.tokens_per_s is not None:
        filled.append(_ffill(traffic.tokens_per_s[start:]))
    requests = filled[0] * traffic.bin_s
    tokens = filled[1] * traffic.bin_s if len(filled) > 1 else None
    return t_s, requests, tokens


def _ffill(y: Array) -> Array:
    out = y.copy()
    first = np.flatnonzero(~np.isnan(out))
    if first.size == 0:
        return np.zeros_like(out)
    out[: first[0]] = out[first[0]]
    idx = np.where(~np.isnan(out), np.arange(out.size), 0)
    np.maximum.accumulate(idx, out=idx)
    filled: Array = out[idx]
    return filled
