"""`Engine.step(now_s)`: the one decision path, used unchanged by the embedded API, the sidecar
daemon and the backtest.

One tick:
1. observe every component through the `MetricSource` (a source that is down yields
   observations whose signals are all missing: nothing scales down because of it);
2. read current replica counts from the `Actuator`;
3. ask every policy for proposals; a policy that raises proposes nothing, with the error as its
   reason, and the others still count;
4. combine the valid proposals (max), or hold the current count when there are none;
5. apply the component's constraints in order, recording each clamp;
6. act on changed counts, with capped exponential backoff and jitter after failures;
7. return one `DecisionRecord` per component.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from elastiscale import formula as formulas
from elastiscale import registry
from elastiscale.adapters.base import ActuationResult, Actuator, Failure, MetricSource
from elastiscale.config import Config
from elastiscale.controllers.base import Policy, TickContext
from elastiscale.controllers.constraints import (
    ComponentConstraints,
    ConstraintInput,
    build_constraints,
)
from elastiscale.decision import DecisionRecord, Proposal
from elastiscale.demand_shares import DemandShares
from elastiscale.errors import ActuatorError, MetricSourceError
from elastiscale.history import MetricHistory
from elastiscale.observations import Observation, ReplicaState
from elastiscale.pipeline import Pipeline

log = logging.getLogger("elastiscale.engine")

_new_tuple = tuple.__new__  # builds a named tuple from its fields' tuple

#: Longest wait between retries of a failed actuation.
MAX_BACKOFF_S = 300.0


@dataclass(slots=True)
class _Retry:
    failures: int = 0
    next_attempt_s: float = float("-inf")
    last_failure: str = ""
    #: The failure kind last logged at warning level, so that a fault that
    #: lasts (an endpoint `Updating` for minutes) is said once, not at every retry.
    logged: str = ""


class Engine:
    """Decides and applies replica counts for every component of one pipeline."""

    def __init__(
        self,
        config: Config,
        *,
        metrics: MetricSource,
        actuator: Actuator,
        policies: Sequence[Policy] | None = None,
        dry_run: bool = False,
    ) -> None:
        self.config = config
        self.pipeline = Pipeline(config.pipeline)
        self.metrics = metrics
        self.actuator = actuator
        self.dry_run = dry_run
        self.policies: list[Policy] = (
            list(policies)
            if policies is not None
            else [registry.build("policy", s.name, config, s.params) for s in config.policies]
        )
        self.interval_s = config.control.interval_s
        # `control.combine` is the max (not a formula): one proposal is the combined count.
        self._combine_max = isinstance(config.control.combine, str)
        self.history = MetricHistory(config.control.history_s)
        self.constraints: dict[str, ComponentConstraints] = {}
        self._staleness_s: dict[str, float] = {}
        for name, component in config.pipeline.components.items():
            rules = config.constraints_for(name)
            self.constraints[name] = build_constraints(component, rules)
            self._staleness_s[name] = rules.missing_data.staleness_s
        #: The load signal of each component (fixed by its capacity unit), looked up once.
        self._load_signal = {
            name: "demand_rps" if c.capacity_unit == "requests" else "tokens_per_s"
            for name, c in config.pipeline.components.items()
        }
        self._retry = {name: _Retry() for name in self.pipeline.order}
        self._known_replicas: dict[str, ReplicaState] = {}
        self._rng = random.Random(config.control.seed)
        self.last_records: list[DecisionRecord] = []
        self._source_down = False
        self._read_down = False
        #: A fleet unit's shared components: each pipeline's share of their demand.
        self._shares = DemandShares(config) if config.pipeline.members else None

    # ----------------------------------------------------------------------------------------

    def step(self, now_s: float) -> list[DecisionRecord]:
        """Run one tick at time `now_s` (seconds) and return one record per component."""
        names = self.pipeline.order
        observations = self._observe(names, now_s)
        replicas = self._read_replicas(names, observations)
        self.history.record(observations.values(), now_s)
        ctx = TickContext(
            now_s=now_s,
            config=self.config,
            pipeline=self.pipeline,
            observations=observations,
            replicas=replicas,
            history=self.history,
            interval_s=self.interval_s,
            startups_s=self._startups(names, now_s),
            acting=not self.dry_run,
        )
        proposals = self._propose(ctx)
        shares = self._demand_shares(observations, now_s)
        records = [
            self._decide(name, now_s, observations[name], replicas[name], proposals[name])
            for name in names
        ]
        if shares:
            records = [
                replace(r, demand_by_pipeline=shares[r.component]) if r.component in shares else r
                for r in records
            ]
        self.last_records = records
        return records

    # ----------------------------------------------------------------------------------------

    def _demand_shares(
        self, observations: Mapping[str, Observation], now_s: float
    ) -> dict[str, dict[str, float | None]]:
        """A fleet unit's shared components: each pipeline's share, from fresh ingress rates
        only (a stale one is a missing share, as it is missing data for scaling)."""
        if self._shares is None:
            return {}
        fresh = {n: o for n, o in observations.items() if now_s - o.at_s <= self._staleness_s[n]}
        return self._shares.of(fresh)

    def _observe(self, names: Sequence[str], now_s: float) -> dict[str, Observation]:
        try:
            got = dict(self.metrics.observe(names, now_s))
        except MetricSourceError as exc:
            # Said once when the outage starts, then at debug level: every tick of a long
            # outage would otherwise repeat it.
            level = logging.DEBUG if self._source_down else logging.WARNING
            log.log(level, "metric source unavailable: %s", exc)
            self._source_down = True
            got = {}
            reason = f"source error: {exc}"
        else:
            if self._source_down:
                log.warning("metric source available again")
                self._source_down = False
            reason = "no data"
        for name in names:
            if name not in got:
                got[name] = Observation.unavailable(name, now_s, reason)
        return got

    def _startups(self, names: Sequence[str], now_s: float) -> dict[str, list[float]]:
        """Start-ups the actuator measured since the last tick (its optional `startups`,
        given the tick's time: a platform that shows states rather than transition times
        needs to know when it looked)."""
        reader = getattr(self.actuator, "startups", None)
        if reader is None:
            return {}
        try:
            return {n: list(v) for n, v in reader(names, now_s=now_s).items()}
        except ActuatorError as exc:
            log.debug("actuator start-ups unavailable: %s", exc)
            return {}

    def _read_replicas(
        self, names: Sequence[str], observations: Mapping[str, Observation]
    ) -> dict[str, ReplicaState]:
        try:
            read = dict(self.actuator.read(names))
        except ActuatorError as exc:
            # Said once when it starts failing, as for the metric source.
            level = logging.DEBUG if self._read_down else logging.WARNING
            log.log(level, "actuator read failed: %s", exc)
            self._read_down = True
            read = {}
        else:
            if self._read_down:
                log.warning("actuator read works again")
                self._read_down = False
        out: dict[str, ReplicaState] = {}
        for name in names:
            state = read.get(name) or self._known_replicas.get(name)
            if state is None:
                obs = observations[name]
                ready = obs.ready_replicas
                desired = obs.desired_replicas if obs.desired_replicas is not None else ready
                floor = self.pipeline.components[name].replicas.min
                state = ReplicaState(
                    desired=desired if desired is not None else floor,
                    ready=ready if ready is not None else 0,
                )
            out[name] = state
        self._known_replicas.update(out)
        return out

    def _propose(self, ctx: TickContext) -> dict[str, tuple[Proposal, ...]]:
        """Every component's proposals, one per policy in the policies' order (as the decision
        record keeps them: a tuple, built once)."""
        answers: list[tuple[str, Mapping[str, Proposal], str]] = []
        for policy in self.policies:
            try:
                got: Mapping[str, Proposal] = policy.propose(ctx)
            except Exception as exc:  # one broken policy must not stop the others
                log.exception("policy %s failed", policy.name)
                got = {}
                missing = f"policy error: {type(exc).__name__}: {exc}"
            else:
                missing = "no proposal"
            answers.append((policy.name, got, missing))
        order = ctx.pipeline.order
        if len(answers) == 1:  # one policy (the usual case)
            name, got, missing = answers[0]
            return {c: (got.get(c) or Proposal.none(name, missing),) for c in order}
        return {
            c: tuple(got.get(c) or Proposal.none(name, missing) for name, got, missing in answers)
            for c in order
        }

    def _combine(self, proposals: tuple[Proposal, ...]) -> int | None:
        """`control.combine`: the max of the valid proposals, or the formula with fallbacks
        (None when a term has neither: the component holds)."""
        how = self.config.control.combine
        if isinstance(how, str):  # "max"
            if len(proposals) == 1:  # one policy: its proposal (the usual case)
                return proposals[0].replicas
            valid = [p.replicas for p in proposals if p.replicas is not None]
            return max(valid) if valid else None
        by_term = {formulas.term_name(p.policy): p.replicas for p in proposals}
        combined, _ = formulas.combine(how.parsed(), by_term, how.fallback)
        return combined

    def _decide(
        self,
        name: str,
        now_s: float,
        obs: Observation,
        state: ReplicaState,
        proposals: tuple[Proposal, ...],
    ) -> DecisionRecord:
        current = state.desired
        if self._combine_max and len(proposals) == 1:  # one policy: its proposal
            combined = proposals[0].replicas
        else:
            combined = self._combine(proposals)
        # The load signal is present and fresh.
        data_ok = (
            now_s - obs.at_s <= self._staleness_s[name]
            and getattr(obs, self._load_signal[name]) is not None
        )
        # the fields in their order (component, now_s, current, ready, observation, data_ok),
        # as the named tuple's own __new__ would pass them, without its Python-level call on
        # this per-component path
        inp = _new_tuple(ConstraintInput, (name, now_s, current, state.ready, obs, data_ok))
        chain = self.constraints[name]
        desired, clamps = chain.apply(inp, current if combined is None else combined)
        outcome = "unchanged" if desired == current else self._act(name, current, desired, now_s)
        # Only a change the platform made is history for rate limits and cooldowns: in a dry
        # run the count stays where it is, and remembering the dry change would make the next
        # tick's rate limits start from a count that never existed.
        applied = desired if outcome == "scaled" else current
        chain.commit(name, now_s, current, applied)
        # positional, in the fields' order (at_s, component, observation, current_replicas,
        # proposals, combined_replicas, clamps, desired_replicas, outcome)
        return DecisionRecord(
            now_s, name, obs, current, proposals, combined, tuple(clamps), desired, outcome
        )

    def _act(self, name: str, current: int, desired: int, now_s: float) -> str:
        if desired == current:
            return "unchanged"
        if self.dry_run:
            return "dry-run"
        retry = self._retry[name]
        if now_s < retry.next_attempt_s:
            return f"held: backing off after {retry.last_failure}"
        result: ActuationResult = self.actuator.scale(name, desired)
        if result.ok:
            if retry.logged:
                log.info("scaled %s to %d after failures (%s)", name, desired, retry.last_failure)
            retry.failures = 0
            retry.next_attempt_s = float("-inf")
            retry.logged = ""
            self._known_replicas[name] = ReplicaState(desired=desired, ready=current)
            return "scaled"
        failure = result.failure or Failure.UNAVAILABLE
        retry.last_failure = failure.value
        if failure in (Failure.CONFLICT, Failure.IN_PROGRESS):
            retry.next_attempt_s = float("-inf")  # retry at the next tick, with fresh state
        else:
            retry.failures += 1
            delay_s = min(MAX_BACKOFF_S, self.interval_s * 2 ** (retry.failures - 1))
            delay_s *= self._rng.uniform(0.5, 1.0)
            if result.retry_after_s is not None:  # the platform's own hint (Retry-After)
                delay_s = max(delay_s, result.retry_after_s)
            retry.next_attempt_s = now_s + delay_s
        level = logging.DEBUG if failure.value == retry.logged else logging.WARNING
        log.log(level, "scaling %s to %d failed: %s %s", name, desired, failure, result.message)
        retry.logged = failure.value
        return f"failed: {failure.value}"
