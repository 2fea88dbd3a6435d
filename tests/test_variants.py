"""Variants of a component (stable and canary) and the split of its traffic between them: the
config spelling and its refusals, the split over time in both simulators (each call to exactly
one variant), and a backtest in which a policy sees only the per-variant metrics."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale.backtest.drift import DriftSchedule
from elastiscale.backtest.model import service_models
from elastiscale.backtest.runner import build_simulator, simulate
from elastiscale.config import validate_mapping
from elastiscale.controllers.base import TickContext
from elastiscale.controllers.fanout import FanoutEstimator
from elastiscale.controllers.feedforward import ElastiscalePolicy
from elastiscale.controllers.feedforward_state import ElastiscaleParams
from elastiscale.decision import Proposal
from elastiscale.errors import ConfigError
from elastiscale.pipeline import Pipeline
from test_sim_support import flat_trace

FIDELITIES = ["fast", "discrete-event"]


def pipeline(**llm_extra: Any) -> dict[str, Any]:
    llm = {
        "capacity_per_replica": 2.0,
        "service_time_s": 1.0,
        "startup_s": 60,
        "gpus_per_replica": 1,
        "replicas": {"min": 0, "max": 50},
        "variants": {"stable": {"percent": 90}, "canary": {"percent": 10, "startup_s": 300}},
        **llm_extra,
    }
    return {
        "pipeline": {
            "name": "split",
            "slo": {"latency_p95_s": 20},
            "queue_timeout_s": 30,
            "components": {
                "router": {
                    "ingress": True,
                    "capacity_per_replica": 100,
                    "service_time_s": 0.01,
                    "replicas": {"min": 1, "max": 4},
                },
                "llm": llm,
                "tools": {
                    "capacity_per_replica": 50,
                    "service_time_s": 0.1,
                    "replicas": {"min": 1, "max": 4},
                },
            },
            "edges": [
                {"from": "router", "to": "llm", "fanout": 1.0},
                {"from": "llm", "to": "tools", "fanout": 0.5},
            ],
        }
    }


def test_variants_become_components_with_their_share_of_the_calls() -> None:
    config = validate_mapping(pipeline())
    comps = config.pipeline.components
    assert list(comps) == ["router", "llm-stable", "llm-canary", "tools"]
    assert comps["llm-canary"].startup_s == 300 and comps["llm-stable"].startup_s == 60
    assert comps["llm-canary"].variant is not None
    assert (comps["llm-canary"].variant.of, comps["llm-canary"].variant.percent) == ("llm", 10)
    edges = {(e.source, e.target): e.fanout for e in config.pipeline.edges}
    assert edges == pytest.approx(
        {
            ("router", "llm-stable"): 0.9,
            ("router", "llm-canary"): 0.1,
            ("llm-stable", "tools"): 0.5,
            ("llm-canary", "tools"): 0.5,
        }
    )
    # A validated config dumped and loaded again is the same config (no second expansion).
    again = validate_mapping(config.model_dump(by_alias=True, exclude_none=True))
    assert again.pipeline == config.pipeline


def _set(path: str, value: Any) -> Any:
    def apply(raw: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = raw
        for key in parents:
            node = node[key]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value

    return apply


V = "pipeline.components.llm.variants"


@pytest.mark.parametrize(
    ("change", "line"),
    [
        (_set(f"{V}.canary.percent", 20), f"{V}: the percents add up to 110, must be 100"),
        (_set(f"{V}.canary.percent", 120), f"{V}.canary.percent: must be in [0, 100] (got 120)"),
        (
            _set(f"{V}.canary.percent", "ten"),
            f"{V}.canary.percent: must be a number in [0, 100] (got 'ten')",
        ),
        (
            _set(f"{V}.canary", {"weight": 10, "percent": 10}),
            f"{V}.canary: give one of percent, weight",
        ),
        (_set(f"{V}.canary", KeyError), f"{V}: give at least two variants, each with its percent"),
        (
            _set(f"{V}.canary.startup_s", -1),
            f"{V}.canary.startup_s: Input should be greater than or equal to 0 (got -1)",
        ),
        (
            _set("pipeline.components.llm.startup_s", -1),
            "pipeline.components.llm.startup_s: Input should be greater than or equal to 0 "
            "(got -1)",
        ),
        (_set(f"{V}.canary.ingress", True), f"{V}.canary.ingress: a variant cannot set ingress"),
        (
            _set(
                "pipeline.components.llm-canary",
                {"capacity_per_replica": 1, "service_time_s": 1, "replicas": {"max": 1}},
            ),
            f"{V}.canary: its component name 'llm-canary' is already a component's",
        ),
        (
            _set(
                "pipeline.components.router.variants", {"a": {"percent": 50}, "b": {"percent": 50}}
            ),
            "pipeline.components.router.variants: an ingress component cannot be split; put a "
            "router in front of it (the split is of the calls coming in)",
        ),
        (
            _set("pipeline.components.llm.canaryTrafficPercent", 10),
            "pipeline.components.llm.canaryTrafficPercent: unknown key; KServe's "
            "canaryTrafficPercent: give the component `variants:`, each with its percent "
            "(variants: {stable: {percent: 90}, canary: {percent: 10}})",
        ),
        (
            _set(
                "scenario", {"traffic": [{"at_s": 0, "component": "tools", "percent": {"a": 100}}]}
            ),
            "scenario.traffic[0].component: 'tools' has no variants (components with variants: "
            "llm)",
        ),
        (
            _set(
                "scenario",
                {
                    "traffic": [
                        {"at_s": 0, "component": "llm", "percent": {"stable": 50, "beta": 50}}
                    ]
                },
            ),
            "scenario.traffic[0].percent: give every variant of llm (canary, stable), got beta, "
            "stable",
        ),
        (
            _set(
                "scenario",
                {
                    "traffic": [
                        {"at_s": 0, "component": "llm", "percent": {"stable": 50, "canary": 40}}
                    ]
                },
            ),
            "scenario.traffic[0]: percent: the percents add up to 90, must be 100",
        ),
    ],
)
def test_bad_variants_are_refused_with_one_line_naming_the_field(change: Any, line: str) -> None:
    raw = copy.deepcopy(pipeline())
    change(raw)
    with pytest.raises(ConfigError) as refused:
        validate_mapping(raw)
    assert refused.value.problems == [line]


@settings(max_examples=50, deadline=None)
@given(
    shares=st.lists(st.integers(0, 100), min_size=2, max_size=4).filter(lambda s: sum(s) > 0),
    fanout=st.floats(0.0, 10.0),
)
def test_the_variants_calls_add_up_to_the_components(shares: list[int], fanout: float) -> None:
    total = sum(shares)
    percents = [100 * s / total for s in shares]
    percents[-1] = 100 - sum(percents[:-1])
    raw = pipeline(variants={f"v{i}": {"percent": p} for i, p in enumerate(percents)})
    raw["pipeline"]["edges"][0]["fanout"] = fanout
    config = validate_mapping(raw)
    into = [e.fanout for e in config.pipeline.edges if e.source == "router"]
    assert sum(into) == pytest.approx(fanout, abs=1e-9)
    assert all(e.fanout == pytest.approx(0.5) for e in config.pipeline.edges if e.target == "tools")


def split_config(fanout: float = 1.0, distribution: str = "fixed") -> Any:
    raw = pipeline()
    raw["pipeline"]["edges"][0].update(fanout=fanout, fanout_distribution=distribution)
    raw["scenario"] = {
        "traffic": [
            {"at_s": 0, "component": "llm", "percent": {"stable": 100, "canary": 0}},
            {"at_s": 200, "component": "llm", "percent": {"stable": 90, "canary": 10}},
            {"at_s": 400, "component": "llm", "percent": {"stable": 50, "canary": 50}},
        ]
    }
    return validate_mapping(raw)


@pytest.mark.parametrize("fidelity", FIDELITIES)
@pytest.mark.parametrize("distribution", ["fixed", "poisson"])
def test_the_true_split_moves_at_its_times(fidelity: str, distribution: str) -> None:
    config = split_config(distribution=distribution)
    trace = flat_trace(4.0, 600)
    counts = {"router": 1, "llm-stable": 4, "llm-canary": 4, "tools": 1}
    sim = build_simulator(config, trace, counts, fidelity=fidelity)
    DriftSchedule(config, service_models(config, trace), trace.start_s).advance(sim, 600)
    stable = sim.series("llm-stable").arrivals
    canary = sim.series("llm-canary").arrivals
    for lo, hi, share in ((10, 190, 0.0), (210, 390, 0.1), (410, 590, 0.5)):
        both = stable[lo:hi].sum() + canary[lo:hi].sum()
        assert both == pytest.approx(4.0 * (hi - lo), rel=0.1)
        assert canary[lo:hi].sum() / both == pytest.approx(share, abs=0.04)


def test_each_call_goes_to_exactly_one_variant() -> None:
    """Fixed fan-out 1 split 50/50: every request makes one call, to one of the two (drawn
    apart, a request would call both or neither a quarter of the time each)."""
    config = split_config(fanout=1.0)
    trace = flat_trace(4.0, 600)
    counts = {"router": 1, "llm-stable": 4, "llm-canary": 4, "tools": 1}
    sim = build_simulator(config, trace, counts, fidelity="discrete-event")
    DriftSchedule(config, service_models(config, trace), trace.start_s).advance(sim, 600)
    router = sim.series("router").completions
    llm = sim.series("llm-stable").arrivals + sim.series("llm-canary").arrivals
    assert np.sum(llm) == np.sum(router)
    result = sim.result()
    # Every request's latency includes one llm call of 1 s (router 0.01 s, tools 0.1 s).
    assert float(np.min(result.latency_s)) >= 1.0


@pytest.mark.parametrize(("stable", "canary"), [(90, 10), (100, 0)])
def test_the_split_is_read_from_the_per_variant_rates(stable: float, canary: float) -> None:
    """The file says 90/10 (or 100/0, the canary not yet live); the rates say 50/50: the
    edges into the variants follow the rates, their sum the component's calls."""
    raw = pipeline()
    raw["pipeline"]["components"]["llm"]["variants"] = {
        "stable": {"percent": stable},
        "canary": {"percent": canary},
    }
    config = validate_mapping(raw)
    est = FanoutEstimator(Pipeline(config.pipeline), half_life_s=120, prior_requests=100)
    for k in range(40):  # 10 minutes of 15 s ticks
        est.update(15.0 * k, {"router": 4.0, "llm-stable": 2.0, "llm-canary": 2.0, "tools": 2.0})
    fanouts = est.fanouts()
    assert fanouts[("router", "llm-canary")] == pytest.approx(0.5, rel=0.05)
    assert fanouts[("router", "llm-stable")] == pytest.approx(0.5, rel=0.05)
    details = est.details("llm-canary")
    assert details["split_prior_percent"] == canary
    assert details["split_measured_percent"] == pytest.approx(50, abs=2.5)


class Recording:
    def __init__(self, inner: ElastiscalePolicy) -> None:
        self.inner, self.name = inner, inner.name
        self.seen: list[tuple[float, dict[str, Any]]] = []

    def propose(self, ctx: TickContext) -> Mapping[str, Proposal]:
        out = self.inner.propose(ctx)
        self.seen.append((ctx.now_s, {n: p.details for n, p in out.items()}))
        return out


@pytest.mark.parametrize("fidelity", FIDELITIES)
def test_a_slower_canary_is_learnt_from_its_own_metrics(fidelity: str) -> None:
    """The canary's true capacity is 0.6x the file's; the policy sees only the metrics. Once
    the canary has traffic, its estimate in use comes within 10% of the truth and the
    stable's stays at its own."""
    raw = pipeline()
    raw["scenario"] = {
        "drift": [{"at_s": 0, "component": "llm-canary", "capacity_factor": 0.6}],
        "traffic": [
            {"at_s": 0, "component": "llm", "percent": {"stable": 90, "canary": 10}},
            {"at_s": 600, "component": "llm", "percent": {"stable": 50, "canary": 50}},
        ],
    }
    config = validate_mapping(raw)
    trace = flat_trace(6.0, 1800)
    policy = Recording(ElastiscalePolicy(config, ElastiscaleParams(learn=True, refit="inline")))
    start = {"router": 1, "llm-stable": 4, "llm-canary": 1, "tools": 1}
    simulate(config, trace, policy, initial_replicas=start, fidelity=fidelity, metrics_delay_s=15)
    late = [d for t, d in policy.seen if t >= trace.start_s + 1200]
    assert len(late) >= 30  # 10 minutes of 15 s ticks
    canary = [d["llm-canary"]["capacity_in_use"] for d in late]
    stable = [d["llm-stable"]["capacity_in_use"] for d in late]
    assert all(c == pytest.approx(1.2, rel=0.1) for c in canary), canary
    assert all(s == pytest.approx(2.0, rel=0.1) for s in stable), stable


def test_each_variant_is_its_own_scale_target(tmp_path: Any) -> None:
    """The actuator's targets name the variants' components; scaling one moves only its own
    workload (a target named after the split component itself is refused, naming the
    components there are)."""
    from elastiscale.adapters.kubernetes.actuator import KubernetesActuator
    from elastiscale.testing.kubernetes import DEPLOYMENTS, FakeKubeAPI

    raw = pipeline()
    targets = {
        "router": {"kind": "Deployment", "name": "router"},
        "llm-stable": {"kind": "Deployment", "name": "llm-v1"},
        "llm-canary": {"kind": "Deployment", "name": "llm-v2"},
        "tools": {"kind": "Deployment", "name": "tools"},
    }
    with FakeKubeAPI() as api:
        for target in targets.values():
            api.add_deployment("default", target["name"], replicas=1)
        raw["actuator"] = {
            "type": "kubernetes",
            "namespace": "default",
            "connection": "kubeconfig",
            "kubeconfig": str(api.write_kubeconfig(tmp_path / "k")),
            "targets": targets,
        }
        config = validate_mapping(raw)
        assert config.actuator is not None
        with KubernetesActuator(config, config.actuator.options()) as actuator:
            assert actuator.scale("llm-canary", 3).ok
        assert api.replicas(DEPLOYMENTS, "default", "llm-v2") == 3
        assert api.replicas(DEPLOYMENTS, "default", "llm-v1") == 1
    raw["actuator"]["targets"] = {**targets, "llm": {"kind": "Deployment", "name": "llm"}}
    with pytest.raises(ConfigError) as refused:
        validate_mapping(raw)
    assert any("llm" in line and "llm-canary" in line for line in refused.value.problems)
