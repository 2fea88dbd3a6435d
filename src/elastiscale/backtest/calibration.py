"""The replay behind `elastiscale`'s self-calibration (controllers/calibration.py): the
ingress traffic a policy observed, as a trace, replayed under every candidate setting.

The first half of the observed window (with `calibration_warmup: history`, all the history
before the window's second half) warms each candidate up (`warm_start`: its forecasts,
gates and burst statistics learn from it as a live policy would have); the second half is
simulated and scored, with the fair-comparison rules of a backtest (same start counts, same
simulated metrics). So a candidate is judged as it would have run with the history the policy
had, not as a policy that has seen nothing, and the replay costs half the window's ticks.
The warm-up runs once: the first candidate replays it, the others take a copy of what it
learned (controllers/warm_copy.py; the same numbers as their own warm-up). The candidates
then replay the scored half side by side, a tick each in turn, on the first one's ingress
forecaster (backtest/side_by_side.py), and one by one where they cannot share it: the same
numbers either way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from elastiscale.backtest import baselines
from elastiscale.backtest.api import BacktestError
from elastiscale.backtest.ceiling import ceiling_score
from elastiscale.backtest.model import SimulationResult
from elastiscale.backtest.runner import SteppedRun, simulate
from elastiscale.backtest.scoring import score
from elastiscale.backtest.side_by_side import DivergedError, share_forecasts, step_side_by_side
from elastiscale.config import Config
from elastiscale.controllers.base import Policy
from elastiscale.controllers.calibration import (
    Evidence,
    ObservedTraffic,
    Replay,
    traffic_trace_arrays,
)
from elastiscale.controllers.feedforward import ElastiscalePolicy
from elastiscale.controllers.forecast_sharing import Turns
from elastiscale.controllers.warm_copy import copy_warm_state
from elastiscale.observations import Observation
from elastiscale.trace import Trace

#: The simulated metrics of a replay, as in a default backtest.
METRICS_DELAY_S = 15.0


def observed_trace(traffic: ObservedTraffic) -> Trace:
    """The observed ingress as a dense trace (token rates as `input_tokens`)."""
    t_s, requests, tokens = traffic_trace_arrays(traffic)
    if t_s.size == 0:
        raise BacktestError("calibration: no observed ingress rate to replay")
    columns = {}
    if tokens is not None:
        columns = {"input_tokens": tokens, "output_tokens": np.zeros_like(tokens)}
    return Trace(
        name="observed ingress", t_s=t_s, requests=requests, bin_s=traffic.bin_s, columns=columns
    )


def history_snapshots(
    trace: Trace, ingress: str, rate_window_s: float
) -> Iterator[Mapping[str, Observation]]:
    """The ingress observations a live policy would have read for each bin of `trace` (its
    rate window centred on the bin's middle)."""
    tokens = trace.work("tokens") if trace.has_unit("tokens") else None
    for i, t_s in enumerate(trace.t_s):
        at_s = float(t_s) + trace.bin_s / 2.0 + rate_window_s / 2.0
        obs = Observation(
            component=ingress,
            at_s=at_s,
            demand_rps=float(trace.requests[i]) / trace.bin_s,
            tokens_per_s=None if tokens is None else float(tokens[i]) / trace.bin_s,
        )
        yield {ingress: obs}


def replay_candidates(
    config: Config,
    traffic: ObservedTraffic,
    params: Sequence[Mapping[str, Any]],
    labels: Sequence[str],
    rate_window_s: float,
    /,
    reference: str | None = None,
) -> Replay:
    """Each parameter set as an `elastiscale`, warmed on the first half of the observed
    traffic (or all of it before `traffic.scored_bins`) and scored on the rest; with
    `reference`, that policy too, with its defaults, on the scored part."""
    whole = observed_trace(traffic)
    n = whole.t_s.size
    warm_bins = n // 2 if traffic.scored_bins is None else max(0, n - traffic.scored_bins)
    half_s = whole.t_s[0] + warm_bins * whole.bin_s
    warm = whole.window(None, half_s)
    scored = whole.window(half_s, None)
    if len(scored) == 0:
        raise BacktestError("calibration: too little observed ingress to replay")
    ingress = next(n for n, c in config.pipeline.components.items() if c.ingress)
    initial = baselines.initial_replicas(config, scored)
    policies, shareable = _warmed(config, params, warm, scored, ingress, rate_window_s, True)
    results: list[SimulationResult] | None = None
    if shareable:
        try:
            results = _side_by_side(config, scored, policies, initial, rate_window_s)
        except DivergedError:
            policies, _ = _warmed(config, params, warm, scored, ingress, rate_window_s, False)
    if results is None:
        results = [_one(config, scored, p, initial, rate_window_s) for p in policies]
    labels = list(labels)
    if reference is not None:  # a reactive policy needs no warm-up
        policy = baselines.build_policy(reference, config, {}, trace=scored)
        results.append(_one(config, scored, policy, initial, rate_window_s))
        labels.append(reference)
    evidence = []
    for label, result in zip(labels, results, strict=True):
        got = score(result, config, start_s=scored.start_s, end_s=scored.end_s)
        attainment = 0.0 if got.slo_attainment is None else float(got.slo_attainment)
        evidence.append(Evidence(label, attainment, got.gpu_hours))
    ceiling = ceiling_score(config, scored, start_s=scored.start_s, end_s=scored.end_s)
    return Replay(
        at_s=math.nan,
        span_s=whole.duration_s,
        evidence=tuple(evidence[: len(params)]),
        ceiling=math.nan if ceiling.slo_attainment is None else float(ceiling.slo_attainment),
        reference=evidence[-1] if reference is not None else None,
    )


def _warmed(
    config: Config,
    params: Sequence[Mapping[str, Any]],
    warm: Trace,
    scored: Trace,
    ingress: str,
    rate_window_s: float,
    share: bool,
) -> tuple[list[Policy], bool]:
    """The candidates, warmed on `warm` (the first one replays it, the others copy what it
    learned where they can), and whether they can run side by side (all of them
    `ElastiscalePolicy`, more than one, every other one a copy of the first's warm state).
    With `share` the copies keep the first's forecasters (side by side they use no others),
    unless they cannot run side by side: then they are warmed again with copies of their own."""
    policies = [baselines.build_policy("elastiscale", config, p, trace=scored) for p in params]
    warmed: ElastiscalePolicy | None = None  # the first candidate warmed (before it runs)
    copies = 0
    for policy in policies:
        warm_start = getattr(policy, "warm_start", None)
        if warm_start is None or len(warm) == 0:
            continue
        if _copied(warmed, policy, share):
            copies += 1
            continue
        warm_start(history_snapshots(warm, ingress, rate_window_s))
        if warmed is None and isinstance(policy, ElastiscalePolicy):
            warmed = policy
    shareable = (
        len(policies) > 1
        and policies[0] is warmed
        and copies == len(policies) - 1
        and all(isinstance(p, ElastiscalePolicy) for p in policies)
    )
    if share and copies and not shareable:
        return _warmed(config, params, warm, scored, ingress, rate_window_s, False)
    return policies, shareable


def _one(
    config: Config,
    scored: Trace,
    policy: Policy,
    initial: Mapping[str, int],
    rate_window_s: float,
) -> SimulationResult:
    """One candidate's replay of the scored part."""
    result = simulate(
        config,
        scored,
        policy,
        initial_replicas=initial,
        metrics_delay_s=METRICS_DELAY_S,
        rate_window_s=rate_window_s,
    )
    close = getattr(policy, "close", None)
    if close is not None:
        close()
    return result


def _side_by_side(
    config: Config,
    scored: Trace,
    policies: Sequence[Policy],
    initial: Mapping[str, int],
    rate_window_s: float,
) -> list[SimulationResult]:
    """The candidates' replays of the scored part in lock step on one ingress forecaster
    (backtest/side_by_side.py); `DivergedError` when they cannot share it."""
    candidates = [p for p in policies if isinstance(p, ElastiscalePolicy)]
    turns = Turns()
    shares = share_forecasts(candidates[0], candidates[1:], turns)
    runs = [
        SteppedRun(
            config,
            scored,
            policy,
            initial_replicas=initial,
            metrics_delay_s=METRICS_DELAY_S,
            rate_window_s=rate_window_s,
        )
        for policy in candidates
    ]
    try:
        return step_side_by_side(runs, turns, shares)
    finally:
        for policy in candidates:
            policy.close()


def _copied(warmed: ElastiscalePolicy | None, policy: object, share: bool) -> bool:
    """Whether `policy` took the warmed candidate's state (controllers/warm_copy.py) instead
    of replaying the warm-up half once more."""
    if warmed is None or not isinstance(policy, ElastiscalePolicy):
        return False
    return copy_warm_state(warmed, policy, shared_forecasters=share)
