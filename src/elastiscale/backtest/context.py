"""`RunContext`: the conditions of one backtest, for policies that are built from other runs.

Some references are defined by the run they are part of: `static-budget` spends the GPU-hours
another policy of the same run spent, and `oracle` is the cheapest foresighted schedule that
reaches `static-peak`'s attainment. Such a policy declares `needs_backtest = True`; the backtest
then builds it with `backtest=<RunContext>`, through which it can

- `run_of(spec)`: the run of another policy of the same backtest (simulated once, then reused:
  the backtest itself takes it from here too, so nothing is simulated twice);
- `evaluate(policy)`: simulate and score any candidate policy object under exactly the
  conditions of the backtest (same trace, start counts, metrics, interval, seed and scoring
  window). Every call is one whole simulation; `evaluations` counts them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from elastiscale.backtest.report import PolicyRun
from elastiscale.backtest.scoring import PolicyScore, score
from elastiscale.config import Config, PolicySpec
from elastiscale.controllers.base import Policy
from elastiscale.errors import RegistryError
from elastiscale.trace import Trace


def _key(spec: PolicySpec) -> str:
    return json.dumps([spec.name, spec.params], sort_keys=True, default=str)


@dataclass
class RunContext:
    """What every policy of one backtest shares (see the module docstring)."""

    config: Config
    trace: Trace
    initial_replicas: Mapping[str, int]
    fidelity: str = "fast"
    interval_s: float | None = None
    metrics_delay_s: float = 0.0
    rate_window_s: float = 60.0
    seed: int = 0
    scored_from_s: float | None = None
    #: The specs the backtest runs, so that `spec_named` finds the run's own parameters.
    specs: Sequence[PolicySpec] = ()
    progress: bool = False
    evaluations: int = 0
    _runs: dict[str, PolicyRun] = field(default_factory=dict)
    _building: list[str] = field(default_factory=list)

    @property
    def scored_window(self) -> tuple[float, float]:
        start = self.trace.start_s if self.scored_from_s is None else self.scored_from_s
        return start, self.trace.end_s

    @property
    def scored_hours(self) -> float:
        start, end = self.scored_window
        return (end - start) / 3600.0

    def spec_named(self, name: str) -> PolicySpec:
        """The run's own spec of policy `name` (its parameters from the pipeline file), else
        `name` with default parameters."""
        for spec in self.specs:
            if spec.name == name:
                return spec
        return PolicySpec(name=name)

    def evaluate(self, policy: Policy) -> PolicyScore:
        """Simulate `policy` under the backtest's conditions and score it (one simulation)."""
        return self.simulate(policy)[0]

    def simulate(self, policy: Policy) -> tuple[PolicyScore, Any]:
        """Simulate `policy`; return its score and its `SimulationResult`."""
        from elastiscale.backtest.runner import simulate

        self.evaluations += 1
        result = simulate(
            self.config,
            self.trace,
            policy,
            fidelity=self.fidelity,
            initial_replicas=self.initial_replicas,
            interval_s=self.interval_s,
            metrics_delay_s=self.metrics_delay_s,
            rate_window_s=self.rate_window_s,
            seed=self.seed,
            progress=self.progress,
        )
        start, end = self.scored_window
        return score(result, self.config, start_s=start, end_s=end), result

    def run_of(self, spec: PolicySpec | str, label: str | None = None) -> PolicyRun:
        """The run of `spec` in this backtest: built and simulated on first use, then reused."""
        if isinstance(spec, str):
            spec = self.spec_named(spec)
        key = _key(spec)
        if key in self._runs:
            return self._runs[key]
        if key in self._building:
            chain = " -> ".join([*(json.loads(k)[0] for k in self._building), spec.name])
            raise RegistryError(f"policy {spec.name!r} depends on itself ({chain})")
        from elastiscale.backtest.baselines import build_policy

        self._building.append(key)
        try:
            began = time.perf_counter()
            policy = build_policy(spec.name, self.config, spec.params, trace=self.trace,
                                  backtest=self)  # fmt: skip
            policy_score, result = self.simulate(policy)
        finally:
            self._building.pop()
        run = PolicyRun(
            name=label or spec.name,
            score=policy_score,
            result=result,
            elapsed_s=time.perf_counter() - began,
            interval_s=_ticked_interval(self.config, policy, self.interval_s),
        )
        self._runs[key] = run
        return run


def _ticked_interval(config: Config, policy: Any, interval_s: float | None) -> float:
    """The interval the runner ticks `policy` at: the given one, else the policy's own
    `interval_s` (Knative's 2 s tick, say), else the file's `control.interval_s`."""
    if interval_s is not None:
        return interval_s
    own = getattr(policy, "interval_s", None)
    return float(own) if own is not None else config.control.interval_s
