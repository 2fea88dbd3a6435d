"""The self-calibration loop of `elastiscale` (the rule is calibration.py): when a calibration
is due, snapshot the observed ingress, replay it off the tick, and adopt the chosen setting."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from elastiscale.controllers.calibration import (
    CATALOGUE,
    Array,
    CalibrationState,
    ObservedTraffic,
    Replay,
    Replayer,
    choose,
    load_replayer,
)
from elastiscale.controllers.demand import DemandForecast
from elastiscale.controllers.novelty import NoveltyWatch
from elastiscale.decision import Detail
from elastiscale.forecasting.refits import RefitScheduler

if TYPE_CHECKING:
    from elastiscale.config import Config
    from elastiscale.controllers.feedforward_state import ElastiscaleParams

log = logging.getLogger(__name__)

SETTINGS: Mapping[str, Mapping[str, Any]] = CATALOGUE


def configured_label(params: ElastiscaleParams) -> str:
    """The candidate the configured parameters are (the first one that matches), else
    `configured`."""
    for label in params.calibration_candidates:
        if all(getattr(params, k) == v for k, v in CATALOGUE[label].items()):
            return label
    return "configured"


class Calibrator:
    """Runs calibrations for one policy; `setting` is what is in force."""

    def __init__(
        self,
        config: Config,
        params: ElastiscaleParams,
        refits: RefitScheduler,
        replayer: Replayer | None = None,
    ) -> None:
        self.config = config
        self.params = params
        self.refits = refits
        self._replayer = replayer
        self.state = CalibrationState(setting=configured_label(params))
        ingress = [n for n, c in config.pipeline.components.items() if c.ingress]
        units = {c.capacity_unit for c in config.pipeline.components.values()}
        self.why_not: str | None = None
        if len(ingress) != 1:
            # The simulators send one trace to every ingress, so a replay of a unit of several
            # pipelines (each its own traffic) would run one pipeline's traffic at all of them.
            self.why_not = (
                f"self-calibration replays one ingress trace, and this pipeline has "
                f"{len(ingress)} ingress components ({', '.join(ingress)}) with traffic of "
                "their own: a replay sends one trace to every ingress"
            )
        elif units - {"requests", "tokens"}:
            self.why_not = "self-calibration replays requests and total tokens only"
        self.ingress = ingress[0] if ingress else ""
        self.tokens = "tokens" in units
        self._first_s: float | None = None
        self.novelty = NoveltyWatch(params.calibration_novelty_factor)
        if self.why_not is not None:
            log.info(
                "elastiscale: pipeline %s: %s; the configured setting stays",
                config.pipeline.name,
                self.why_not,
            )

    def details(self) -> dict[str, Detail]:
        """The calibration's part of a decision record (`calibration_off`: why it never runs)."""
        out = self.state.details()
        if self.why_not is not None:
            out["calibration_off"] = self.why_not
        return out

    def value(self, key: str) -> Any:
        """A setting's value in force (the configured parameter until a candidate is adopted)."""
        chosen = SETTINGS.get(self.state.setting)
        if chosen is not None and key in chosen:
            return chosen[key]
        return getattr(self.params, key)

    def tick(self, now_s: float, forecasts: Mapping[tuple[str, str], DemandForecast]) -> bool:
        """Start a due calibration, collect a finished one; True when the setting changed."""
        if self.why_not is not None:
            return False
        demand = forecasts.get((self.ingress, "demand_rps"))
        if demand is None:
            return False
        state = self.state
        changed = False
        if demand.latest is not None:
            self.novelty.observe(*demand.latest)
        if state.pending is None:
            if state.novel_since_s is None and self.novelty.novel():
                changed = self._fall_back(now_s)
            span_s = self._span_s(demand)
            p = self.params
            wait_s = p.calibration_window_s / 2.0  # after novel ingress: its scored half
            if state.due(now_s, span_s, p.calibration_min_history_s, p.calibration_every_s, wait_s):
                t_s, rate = demand.forecaster.history()
                traffic = self._traffic(
                    demand.step_s, t_s, rate, forecasts.get((self.ingress, "tokens_per_s"))
                )
                if traffic is not None:
                    state.last_at_s = now_s
                    state.last_span_s = span_s
                    state.novel_since_s = None
                    self.novelty.cover(t_s, rate)
                    state.pending = self.refits.submit(lambda: self._replay(traffic, now_s))
        return self._collect() or changed

    def _fall_back(self, now_s: float) -> bool:
        """Novel ingress (novelty.py): the safest candidate until a calibration covers it."""
        state = self.state
        safest = self.params.calibration_candidates[0]
        log.info(
            "elastiscale: ingress at %.4g requests/s, above %g x the busiest hour (%.4g) of "
            "the history %s was chosen on: %s until a calibration covers it",
            self.novelty.recent_rps() or 0.0,
            self.novelty.factor,
            self.novelty.covered_rps or 0.0,
            state.setting,
            safest,
        )
        state.novel_since_s = now_s
        changed = state.setting != safest
        state.setting = safest
        return changed

    def _collect(self) -> bool:
        state = self.state
        future = state.pending
        if future is None or not future.done():
            return False
        state.pending = None
        if future.cancelled():
            return False
        error = future.exception()
        if error is not None:
            state.failure = f"{type(error).__name__}: {error}"
            log.warning("elastiscale: calibration failed, setting kept: %s", state.failure)
            return False
        replay = future.result()
        state.replay = replay
        state.failure = None
        chosen = choose(replay, self.config.pipeline.slo.attainment_target, state.setting)
        changed = chosen != state.setting
        log.info(
            "elastiscale: calibrated on %.0f s of observed ingress: %s -> %s (%s)",
            replay.span_s,
            state.setting,
            chosen,
            state.details().get("calibration_evidence"),
        )
        state.setting = chosen
        return changed

    def _replay(self, traffic: ObservedTraffic, now_s: float) -> Replay:
        if self._replayer is None:
            self._replayer = load_replayer()
        base = self.params.model_dump()
        base.update(self_calibration=False, gpu_pool=None, refit="inline")
        labels = list(self.params.calibration_candidates)
        params = [{**base, **dict(CATALOGUE[label])} for label in labels]
        window_s = self.params.rate_window_s
        reference = self.params.calibration_reference
        if reference == "none":
            got = self._replayer(self.config, traffic, params, labels, window_s)
        else:
            got = self._replayer(self.config, traffic, params, labels, window_s, reference)
        return dataclasses.replace(got, at_s=now_s)

    def _span_s(self, demand: DemandForecast) -> float:
        """How much observed ingress a calibration now would replay (data time since the
        first observation, at most the window; no copy of the history per tick)."""
        latest = demand.latest
        if latest is None:
            return 0.0
        if self._first_s is None:
            self._first_s = latest[0]
        span_s = latest[0] - self._first_s + demand.step_s
        return min(span_s, self.params.calibration_window_s)

    def _traffic(
        self, step_s: float, t_s: Array, rate: Array, tokens: DemandForecast | None
    ) -> ObservedTraffic | None:
        """The last `calibration_window_s` of the observed ingress history `t_s`, `rate`
        (None before any)."""
        seen = np.flatnonzero(~np.isnan(rate))
        if seen.size == 0:
            return None
        keep = max(1, math.ceil(self.params.calibration_window_s / step_s - 1e-9))
        first = max(int(seen[0]), rate.size - keep)
        scored: int | None = None
        if self.params.calibration_warmup == "history":
            # Warm the candidates on all the history kept (as the live policy has seen it, so
            # they judge the reserve by time of day it uses), score the window's second half.
            scored, first = max(1, (rate.size - first) // 2), int(seen[0])
        t_s, rate = t_s[first:], rate[first:]
        token_rate = None
        if self.tokens:
            if tokens is None:
                return None
            tt, ty = tokens.forecaster.history()
            index = {round(float(t) / step_s): float(v) for t, v in zip(tt, ty, strict=True)}
            token_rate = np.array([index.get(round(float(t) / step_s), math.nan) for t in t_s])
        return ObservedTraffic(t_s, rate, token_rate, step_s, scored)
