"""`elastiscale` with `learn: true`: under a drift scenario on a fake clock the policy, seeing
only metrics, learns the new capacity and start-up and plans with them; its decision records
show prior, measured and in use. Without `learn` it plans with the file's numbers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from elastiscale.backtest.runner import simulate
from elastiscale.config import Config, validate_mapping
from elastiscale.controllers.base import TickContext
from elastiscale.controllers.feedforward import ElastiscalePolicy
from elastiscale.controllers.feedforward_state import ElastiscaleParams
from elastiscale.decision import Proposal
from test_sim_support import flat_trace, single_config


class Recording:
    """A policy that passes every call through and keeps the proposals by time."""

    def __init__(self, inner: ElastiscalePolicy) -> None:
        self.inner = inner
        self.name = inner.name
        self.seen: list[tuple[float, Proposal]] = []

    def propose(self, ctx: TickContext) -> Mapping[str, Proposal]:
        out = self.inner.propose(ctx)
        self.seen.append((ctx.now_s, out["svc"]))
        return out


def drifted(*drift: dict[str, Any]) -> Config:
    raw = single_config(capacity=2.0, service_time_s=2.0, startup_s=60).model_dump(
        exclude_none=True, by_alias=True
    )
    raw["scenario"] = {"drift": list(drift)}
    return validate_mapping(raw)


def run(config: Config, learn: bool) -> Recording:
    # The surge floor (surge.py) answers a capacity drop too, from the growing queue, once a
    # backlog has built; it is off here so that the comparison is the learning's alone.
    params = ElastiscaleParams(
        learn=learn, refit="inline", self_calibration=False, surge_floor=False
    )
    policy = Recording(ElastiscalePolicy(config, params))
    simulate(config, flat_trace(8.0, 3600, bin_s=10.0), policy, initial_replicas={"svc": 6})
    return policy


def test_capacity_drop_is_learned_and_sized_for() -> None:
    config = drifted({"at_s": 1200, "component": "svc", "capacity_factor": 0.6})
    learned, priors = run(config, True), run(config, False)
    late = [p for t, p in learned.seen if t >= 2400]
    assert all(p.details["capacity_in_use"] == pytest.approx(1.2, rel=0.1) for p in late)
    assert late[-1].details["capacity_prior"] == 2.0
    assert late[-1].details["capacity_confidence"] >= 0.9
    # The 4 s calls of 0.6x capacity (4 slots at 1.2 req/s) need more replicas for 8 req/s.
    before = [p.replicas for t, p in learned.seen if 600 <= t < 1200]
    assert min(p.replicas or 0 for p in late) > max(r or 0 for r in before)
    late_priors = [p for t, p in priors.seen if t >= 2400]
    assert all("capacity_in_use" not in p.details for p in late_priors)
    assert (late[-1].replicas or 0) > (late_priors[-1].replicas or 0)


def test_without_drift_learning_keeps_the_priors_true() -> None:
    learned = run(drifted({"at_s": 3000, "component": "svc", "startup_s": 60}), True)
    last = learned.seen[-1][1].details
    assert last["capacity_in_use"] == pytest.approx(2.0, rel=0.1)
    assert last["startup_in_use_s"] == 60


def test_startup_drift_is_measured_from_readiness() -> None:
    """A rise of demand after the start-up grows to 300 s: the replicas asked for take 300 s,
    which the readiness tracker measures; the lead time in use follows."""
    raw = single_config(capacity=2.0, service_time_s=2.0, startup_s=60).model_dump(
        exclude_none=True, by_alias=True
    )
    raw["scenario"] = {"drift": [{"at_s": 0, "component": "svc", "startup_s": 300}]}
    config = validate_mapping(raw)
    params = ElastiscaleParams(learn=True, refit="inline", self_calibration=False)
    policy = Recording(ElastiscalePolicy(config, params))
    trace = flat_trace(2.0, 3600, bin_s=10.0)
    trace.requests[180:] *= 4  # 2 -> 8 req/s at 1800 s
    simulate(config, trace, policy, initial_replicas={"svc": 2})
    last = policy.seen[-1][1].details
    assert last["startup_prior_s"] == 60
    assert last["startup_samples"] >= 1
    assert last["startup_measured_s"] == pytest.approx(300, abs=15)
    assert last["startup_in_use_s"] == pytest.approx(300, abs=15)
    assert last["lead_time_s"] > 300


def test_canary_variant_learned_and_scaled_by_its_share() -> None:
    """Two variants of a model as two components behind split edges (90% stable, 10% canary;
    the split is the edges' fan-out, measured online): the canary's 0.6x capacity is learned
    for the canary alone, and each variant is sized for its own share."""
    llm = {"capacity_per_replica": 2.0, "service_time_s": 2.0, "startup_s": 60,
           "replicas": {"min": 1, "max": 50}}  # fmt: skip
    config = validate_mapping(
        {
            "pipeline": {
                "name": "canary",
                "slo": {"latency_p95_s": 20},
                "components": {
                    "router": {
                        "ingress": True,
                        "capacity_per_replica": 100,
                        "service_time_s": 0.01,
                        "replicas": {"min": 1, "max": 4},
                    },
                    "stable": llm,
                    "canary": llm,
                },
                "edges": [
                    {"from": "router", "to": "stable", "fanout": 0.9},
                    {"from": "router", "to": "canary", "fanout": 0.1},
                ],
            },
            "scenario": {"drift": [{"at_s": 0, "component": "canary", "capacity_factor": 0.6}]},
        }
    )

    def last(learn: bool) -> Mapping[str, Proposal]:
        params = ElastiscaleParams(learn=learn, refit="inline", self_calibration=False)
        policy = ElastiscalePolicy(config, params)
        seen: list[Mapping[str, Proposal]] = []

        class Keep:
            name = policy.name

            def propose(self, ctx: TickContext) -> Mapping[str, Proposal]:
                out = policy.propose(ctx)
                seen.append(out)
                return out

        simulate(config, flat_trace(40.0, 3600, bin_s=10.0), Keep(),
                 initial_replicas={"router": 1, "stable": 20, "canary": 3})  # fmt: skip
        return seen[-1]

    learned, priors = last(True), last(False)
    assert learned["canary"].details["capacity_in_use"] == pytest.approx(1.2, rel=0.1)
    assert learned["stable"].details["capacity_in_use"] == pytest.approx(2.0, rel=0.1)
    # The canary's share of the router's demand (the measured 10% split: 4 req/s) on 1.2 req/s
    # replicas needs at least 4 (3.3 busy); sized at the prior's 2 req/s it looks like 3, and
    # the priors-only run gets to 4 only through the reactive floor, once a queue has built.
    assert learned["canary"].details["upstream_rps"] == pytest.approx(4.0, rel=0.05)
    assert learned["canary"].details["upstream_replicas"] >= 4
    assert (
        priors["canary"].details["upstream_replicas"]
        < learned["canary"].details["upstream_replicas"]
    )
    assert priors["canary"].details["reactive_rps"] > priors["canary"].details["upstream_rps"]
    assert abs((learned["stable"].replicas or 0) - (priors["stable"].replicas or 0)) <= 1
