"""`params.components.<name>`: per-component parameters of a per-component policy."""

from __future__ import annotations

from typing import Any

import pytest

from elastiscale.adapters.memory import RecordingActuator, SeriesMetricSource
from elastiscale.config import Config, load_config
from elastiscale.controllers.hpa import HPAPolicy
from elastiscale.engine import Engine
from elastiscale.errors import ConfigError
from elastiscale.overrides import ByComponent, deep_merge


def raw(params: dict[str, Any], name: str = "hpa") -> dict[str, Any]:
    return {
        "pipeline": {
            "name": "p",
            "slo": {"latency_p95_s": 10},
            "components": {
                "router": {
                    "ingress": True,
                    "capacity_per_replica": 10,
                    "service_time_s": 0.1,
                    "replicas": {"min": 1, "max": 9},
                },
                "llm": {"capacity_per_replica": 1, "service_time_s": 2, "replicas": {"max": 9}},
            },
            "edges": [{"from": "router", "to": "llm"}],
        },
        "policies": [{"name": name, "params": params}],
    }


def engine(config: Config) -> Engine:
    actuator = RecordingActuator.for_config(config)
    return Engine(config, metrics=SeriesMetricSource({}), actuator=actuator)


def test_each_component_gets_the_shared_params_with_its_own_laid_over() -> None:
    params = {
        "tolerance": 0.05,
        "components": {"llm": {"behavior": {"scale_down": {"stabilization_window_s": 600}}}},
    }
    (policy,) = engine(load_config(raw(params))).policies
    assert isinstance(policy, ByComponent) and policy.name == "hpa"
    llm, router = policy.instance_for("llm"), policy.instance_for("router")
    assert isinstance(llm, HPAPolicy) and isinstance(router, HPAPolicy)
    assert llm.params.tolerance == router.params.tolerance == 0.05
    assert llm.params.behavior.scale_down.stabilization_window_s == 600
    assert router.params.behavior.scale_down.stabilization_window_s == 300
    # the direction not overridden keeps its defaults
    assert llm.params.behavior.scale_up == router.params.behavior.scale_up


def test_without_overrides_the_policy_is_built_as_before() -> None:
    (policy,) = engine(load_config(raw({"tolerance": 0.2}))).policies
    assert isinstance(policy, HPAPolicy)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {"components": {"lm": {"tolerance": 0.2}}},
            ["policies[0].params.components.lm: unknown component 'lm' (components: router, llm)"],
        ),
        (
            {"components": {"llm": {"tolerance": 2}}},
            [
                "policies[0].params.components.llm.tolerance: Input should be less than 1",
            ],
        ),
        (
            # a shared problem is named once, not once more per component
            {"tolerance": 2, "components": {"llm": {"metrics": ["demand_rps"]}}},
            ["policies[0].params.tolerance: Input should be less than 1"],
        ),
        ({"components": ["llm"]}, ["policies[0].params.components: expected a mapping"]),
    ],
)
def test_bad_overrides_are_refused_naming_the_field(
    params: dict[str, Any], expected: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(raw(params))
    for line in expected:
        assert any(p.startswith(line) for p in caught.value.problems), caught.value.problems
    assert len(caught.value.problems) == len(expected)


def test_ray_serve_and_kpa_take_overrides_too() -> None:
    for name, own in (("ray-serve", {"upscale_delay_s": 5}), ("kpa", {"stable_window_s": 30})):
        (policy,) = engine(load_config(raw({"components": {"llm": own}}, name))).policies
        assert isinstance(policy, ByComponent)
        key, value = next(iter(own.items()))
        assert getattr(policy.instance_for("llm").params, key) == value  # type: ignore[attr-defined]


def test_deep_merge_merges_mappings_and_replaces_the_rest() -> None:
    base = {"a": {"x": 1, "y": 2}, "b": [1], "c": 3}
    assert deep_merge(base, {"a": {"y": 5}, "b": [2]}) == {"a": {"x": 1, "y": 5}, "b": [2], "c": 3}
    assert base == {"a": {"x": 1, "y": 2}, "b": [1], "c": 3}
