"""Names users know: pasted HPA behavior and Ray Serve autoscaling_config blocks, one name per
concept, hints for keys that live elsewhere, and KEDA-style formula combination."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from elastiscale.adapters.memory import RecordingActuator, SeriesMetricSource
from elastiscale.config import Config, load_config
from elastiscale.controllers.base import TickContext
from elastiscale.controllers.hpa import HPABehavior, HPAParams
from elastiscale.controllers.ray_serve_policy import RayServeParams
from elastiscale.decision import Proposal
from elastiscale.engine import Engine
from elastiscale.errors import ConfigError
from elastiscale.formula import combine, parse

PASTED_BEHAVIOR = {  # as `kubectl get hpa -o yaml` prints it
    "scaleUp": {
        "stabilizationWindowSeconds": 60,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 15},
            {"type": "Percent", "value": 100, "periodSeconds": 15},
        ],
    },
    "scaleDown": {
        "stabilizationWindowSeconds": 300,
        "selectPolicy": "Min",
        "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}],
    },
}
OURS = {
    "scale_up": {
        "stabilization_window_s": 60,
        "select_policy": "max",
        "rate_limits": [
            {"type": "pods", "value": 4, "period_s": 15},
            {"type": "percent", "value": 100, "period_s": 15},
        ],
    },
    "scale_down": {
        "stabilization_window_s": 300,
        "select_policy": "min",
        "rate_limits": [{"type": "percent", "value": 10, "period_s": 60}],
    },
}


def base(**extra: Any) -> dict[str, Any]:
    return {
        "pipeline": {
            "name": "p",
            "slo": {"latency_p95_s": 10},
            "components": {
                "llm": {
                    "ingress": True,
                    "capacity_per_replica": 1,
                    "service_time_s": 1,
                    "replicas": {"min": 0, "max": 50},
                }
            },
        },
        **extra,
    }


def test_a_pasted_hpa_behavior_block_is_the_hpa_policys_behavior() -> None:
    assert HPABehavior.model_validate(PASTED_BEHAVIOR) == HPABehavior.model_validate(OURS)
    config = load_config(base(policies=[{"name": "hpa", "params": {"behavior": PASTED_BEHAVIOR}}]))
    assert config.policies[0].params["behavior"] == PASTED_BEHAVIOR


def test_the_older_hpa_spelling_policies_still_works() -> None:
    old = {
        "scale_down": {
            "stabilization_window_s": 60,
            "policies": [{"type": "pods", "value": 1, "period_s": 30}],
        }
    }
    assert HPAParams.model_validate({"behavior": old}).behavior.scale_down.policies[0].value == 1


def test_constraints_take_the_same_names_and_hpas() -> None:
    for rules in (OURS, PASTED_BEHAVIOR):
        section = {k: {kk: vv for kk, vv in v.items()} for k, v in rules.items()}
        config = load_config(base(constraints=section))
        up, down = config.constraints.scale_up, config.constraints.scale_down
        assert (up.stabilization_s, up.select, down.stabilization_s, down.select) == (
            60,
            "max",
            300,
            "min",
        )
        assert [(r.type, r.value, r.period_s) for r in down.rate_limits] == [("percent", 10, 60)]
    # the older constraint names keep working
    old = load_config(base(constraints={"scale_down": {"stabilization_s": 30, "select": "min"}}))
    assert (old.constraints.scale_down.stabilization_s, old.constraints.scale_down.select) == (
        30,
        "min",
    )


def test_a_pasted_ray_autoscaling_config_is_the_ray_serve_params_bounds_aside() -> None:
    pasted = {
        "target_num_ongoing_requests_per_replica": 3,
        "smoothing_factor": 0.5,
        "downscale_smoothing_factor": 0.25,
        "upscale_delay_s": 10,
    }
    params = RayServeParams.model_validate(pasted)
    assert (params.target_ongoing_requests, params.upscaling_factor) == (3, 0.5)
    assert (params.downscaling_factor, params.upscale_delay_s) == (0.25, 10)


@pytest.mark.parametrize(
    ("raw", "line"),
    [
        (
            base(policies=[{"name": "ray-serve", "params": {"min_replicas": 1}}]),
            "policies[0].params.min_replicas: unknown key; set the component's replicas",
        ),
        (
            base(policies=[{"name": "ray-serve", "params": {"metrics_interval_s": 10}}]),
            "policies[0].params.metrics_interval_s: unknown key; not used: elastiscale reads",
        ),
        (
            {
                **base(),
                "pipeline": {
                    **base()["pipeline"],
                    "components": {
                        "llm": {**base()["pipeline"]["components"]["llm"], "behavior": {}}
                    },
                },
            },
            "pipeline.components.llm.behavior: unknown key; HPA's behavior goes under "
            "`constraints:`",
        ),
        (
            {
                **base(),
                "pipeline": {
                    **base()["pipeline"],
                    "components": {
                        "llm": {**base()["pipeline"]["components"]["llm"], "autoscaling_config": {}}
                    },
                },
            },
            "pipeline.components.llm.autoscaling_config: unknown key; Ray Serve's",
        ),
        (
            base(constraints={"scale_down": {"cooldownPeriod": 300}}),
            "constraints.scale_down.cooldownPeriod: unknown key; KEDA's cooldownPeriod: "
            "constraints.scale_down.cooldown_s",
        ),
        (
            base(constraints={"scale_down": {"stabilisation_s": 30}}),
            "constraints.scale_down.stabilisation_s: unknown key (check the spelling)",
        ),
    ],
)
def test_keys_that_live_elsewhere_are_refused_with_a_hint(raw: dict[str, Any], line: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(raw)
    assert any(p.startswith(line) for p in caught.value.problems), caught.value.problems
    assert all("\n" not in p for p in caught.value.problems)


# --------------------------------------------------------------------------------------------
# Formula combination


class Fixed:
    """Proposes a fixed count per component (None: proposes nothing)."""

    def __init__(self, name: str, replicas: int | None) -> None:
        self.name = name
        self.replicas = replicas

    def propose(self, ctx: TickContext) -> dict[str, Proposal]:
        if self.replicas is None:
            return {"llm": Proposal.none(self.name, "no data")}
        return {"llm": Proposal(self.name, self.replicas, "fixed")}


def decide(combine_section: Any, hpa: int | None, elastiscale: int | None) -> int:
    config: Config = load_config(
        base(policies=["hpa", "elastiscale"], control={"combine": combine_section})
    )
    source = SeriesMetricSource({"llm": {"demand_rps": ([0.0], [5.0])}})
    engine = Engine(
        config,
        metrics=source,
        actuator=RecordingActuator({"llm": 4}),
        policies=[Fixed("hpa", hpa), Fixed("elastiscale", elastiscale)],
    )
    (record,) = engine.step(15.0)
    return record.desired_replicas


@pytest.mark.parametrize(
    ("section", "hpa", "elastiscale", "expected"),
    [
        ("max", 3, 9, 9),
        ("max", None, 9, 9),
        ({"formula": "max(hpa, elastiscale)"}, 3, 9, 9),
        ({"formula": "(hpa + elastiscale) / 2"}, 3, 8, 6),  # 5.5 rounds up
        ({"formula": "elastiscale + 0 * hpa", "fallback": {"hpa": 0}}, None, 7, 7),
        ({"formula": "max(hpa, elastiscale)", "fallback": {"hpa": 12}}, None, 9, 12),
        # a term without a value or a fallback: the component holds at its current 4
        ({"formula": "max(hpa, elastiscale)"}, None, 9, 4),
        ({"formula": "min(hpa, 2 * elastiscale)"}, 30, 9, 18),
    ],
)
def test_combination_by_formula_with_fallback_per_term(
    section: Any, hpa: int | None, elastiscale: int | None, expected: int
) -> None:
    assert decide(section, hpa, elastiscale) == expected


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"formula": "max(hpa, kpa)"}, "'kpa' is not a policy of this file"),
        ({"formula": "hpa ** 2"}, "only + - * / are allowed"),
        ({"formula": "__import__('os')"}, "only min, max, ceil, floor, round, abs may be called"),
        ({"formula": "hpa.real"}, "Attribute is not allowed"),
        ({"formula": "hpa +"}, "does not parse"),
        ({"formula": "3"}, "names no policy"),
        ({"formula": "hpa", "fallback": {"kpa": 1}}, "fallback.kpa: not a term of the formula"),
        ("mean", "control.combine"),
    ],
)
def test_bad_formulas_are_refused_naming_the_field(section: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(base(policies=["hpa", "elastiscale"], control={"combine": section}))
    assert any(message in p for p in caught.value.problems), caught.value.problems
    assert any(p.startswith("control.combine") for p in caught.value.problems)


@given(
    a=st.integers(0, 500),
    b=st.integers(0, 500),
    extra=st.integers(0, 50),
)
def test_max_formula_equals_max_and_more_demand_never_gives_fewer(
    a: int, b: int, extra: int
) -> None:
    formula = parse("max(hpa, elastiscale)")
    got, _ = combine(formula, {"hpa": a, "elastiscale": b}, {})
    assert got == max(a, b)
    more, _ = combine(parse("(hpa + elastiscale) / 2"), {"hpa": a + extra, "elastiscale": b}, {})
    less, _ = combine(parse("(hpa + elastiscale) / 2"), {"hpa": a, "elastiscale": b}, {})
    assert more is not None and less is not None and more >= less
    assert less == math.ceil((a + b) / 2)
