"""The plugin registry: built-ins, run-time registration, `module:attr`, parameter checks."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, model_validator

from elastiscale import registry
from elastiscale.errors import RegistryError


class ParamsPolicy:
    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        headroom: float = 1.0

    name = "params-policy"

    def __init__(self, config: Any, params: Params) -> None:
        self.params = params


def test_every_kind_lists_builtins() -> None:
    assert {"hpa", "kpa", "static-peak", "oracle", "predictive", "elastiscale"} <= set(
        registry.names("policy")
    )
    assert "prometheus" in registry.names("metric_source")
    assert {"kubernetes", "ray-serve", "sagemaker"} <= set(registry.names("actuator"))


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(RegistryError, match=r"unknown policy .nope.; known: .*hpa"):
        registry.resolve("policy", "nope")
    with pytest.raises(RegistryError, match="unknown kind"):
        registry.resolve("gadget", "x")


def test_module_attr_reference_and_params_validation() -> None:
    ref = f"{__name__}:ParamsPolicy"
    assert registry.resolve("policy", ref) is ParamsPolicy
    built = registry.build("policy", ref, None, {"headroom": 1.5})
    assert built.params.headroom == 1.5
    assert registry.check("policy", ref, {"headrom": 2}, path="policies[0]") == [
        "policies[0].params.headrom: unknown key (check the spelling)"
    ]
    problems = registry.check("policy", f"{__name__}:Absent", {}, path="policies[1]")
    assert len(problems) == 1 and problems[0].startswith("policies[1].name: policy")


def test_register_at_run_time() -> None:
    registry.register("policy", "mine", ParamsPolicy)
    assert "mine" in registry.names("policy")
    assert registry.resolve("policy", "mine") is ParamsPolicy


class CrossFieldPolicy:
    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        low: float = 0.0
        high: float = 1.0

        @model_validator(mode="after")
        def _ordered(self) -> CrossFieldPolicy.Params:
            if self.low > self.high:
                raise ValueError("low must not exceed high")
            return self

    def __init__(self, config: Any, params: Params) -> None:
        self.params = params


def test_model_level_errors_name_the_params_section() -> None:
    ref = f"{__name__}:CrossFieldPolicy"
    assert registry.check("policy", ref, {"low": 2, "high": 1}, path="policies[0]") == [
        "policies[0].params: low must not exceed high"
    ]
