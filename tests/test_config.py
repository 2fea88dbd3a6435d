"""Config validation: every problem named by its field path, a bad file refused whole, the
`elastiscale validate` exit codes, YAML errors with line numbers, and constraint layering."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from elastiscale.cli import main
from elastiscale.config import Config, load_config, validate_mapping
from elastiscale.errors import ConfigError


def valid() -> dict[str, Any]:
    """A small valid file: router -> retriever -> llm, router -> llm."""
    return {
        "pipeline": {
            "name": "rag",
            "slo": {"latency_p95_s": 20},
            "components": {
                "router": {
                    "ingress": True,
                    "capacity_per_replica": 50,
                    "service_time_s": 0.05,
                    "replicas": {"min": 1, "max": 10},
                },
                "retriever": {
                    "capacity_per_replica": 20,
                    "service_time_s": 0.2,
                    "replicas": {"min": 1, "max": 10},
                },
                "llm": {
                    "capacity_per_replica": 1.5,
                    "service_time_s": 4.0,
                    "startup_s": 240,
                    "gpus_per_replica": 1,
                    "replicas": {"min": 1, "max": 64},
                },
            },
            "edges": [
                {"from": "router", "to": "retriever", "fanout": 1.0},
                {"from": "retriever", "to": "llm", "fanout": 1.0},
                {"from": "router", "to": "llm", "fanout": 2.0},
            ],
        }
    }


def problems_of(raw: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate_mapping(raw)
    return info.value.problems


def edit(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of `base` (default: `valid()`) with the dotted `path` set to `value`.
    Integers in the path index lists: `pipeline.edges.0.fanout`."""
    raw = copy.deepcopy(base if base is not None else valid())
    node: Any = raw
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return raw


LLM = "pipeline.components.llm"


def test_the_base_file_is_valid() -> None:
    config = validate_mapping(valid())
    assert list(config.pipeline.components) == ["router", "retriever", "llm"]


# --------------------------------------------------------------------------------------------
# One problem at a time: the message names the field path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # the examples of the config module's docstring
        (
            edit(f"{LLM}.replicas", {"min": 5, "max": 3}),
            f"{LLM}.replicas: min = 5 is greater than max = 3",
        ),
        (
            edit("pipeline.edges.1.to", "retriver"),
            "pipeline.edges[1].to: unknown component 'retriver' "
            "(components: router, retriever, llm)",
        ),
        (
            edit(
                "pipeline.edges",
                [
                    {"from": "router", "to": "llm"},
                    {"from": "llm", "to": "retriever"},
                    {"from": "retriever", "to": "llm"},
                ],
            ),
            "pipeline.edges: cycle llm -> retriever -> llm",
        ),
        # graph problems
        (
            edit("pipeline.edges.0.from", "ruter"),
            "pipeline.edges[0].from: unknown component 'ruter' "
            "(components: router, retriever, llm)",
        ),
        (
            edit("pipeline.edges.2", {"from": "llm", "to": "llm"}),
            "pipeline.edges[2]: self-edge llm -> llm",
        ),
        (
            edit("pipeline.edges.2", {"from": "router", "to": "retriever"}),
            "pipeline.edges[2]: duplicate edge router -> retriever",
        ),
        (
            edit("pipeline.components.router.ingress", False),
            "pipeline.components: no component has ingress: true",
        ),
        # field values
        (
            edit(f"{LLM}.capacity_per_replica", 0),
            f"{LLM}.capacity_per_replica: Input should be greater than 0 (got 0)",
        ),
        (
            edit(f"{LLM}.capacity_per_replica", -2.5),
            f"{LLM}.capacity_per_replica: Input should be greater than 0 (got -2.5)",
        ),
        (
            edit(f"{LLM}.startup_s", -1),
            f"{LLM}.startup_s: Input should be greater than or equal to 0 (got -1)",
        ),
        (
            edit("pipeline.edges.0.fanout", -1),
            "pipeline.edges[0].fanout: Input should be greater than or equal to 0 (got -1)",
        ),
        (
            edit(f"{LLM}.replicas.initial", 99),
            f"{LLM}.replicas: initial = 99 is outside [min, max] = [1, 64]",
        ),
        (
            edit(f"{LLM}.target_utilization", 1.5),
            f"{LLM}.target_utilization: Input should be less than or equal to 1 (got 1.5)",
        ),
        (edit(f"{LLM}.replicas", {"min": 1}), f"{LLM}.replicas.max: required field is missing"),
        (edit("pipeline.slo", {}), "pipeline.slo.latency_p95_s: required field is missing"),
        (
            edit("pipeline.slo.attainment_target", 1.5),
            "pipeline.slo.attainment_target: Input should be less than or equal to 1 (got 1.5)",
        ),
        (
            edit("pipeline.slo.attainment_target", 0),
            "pipeline.slo.attainment_target: Input should be greater than 0 (got 0)",
        ),
        (
            edit("pipeline.components", {}),
            "pipeline.components: Dictionary should have at least 1 item after validation, not 0",
        ),
        (
            edit("control.interval_s", 0),
            "control.interval_s: Input should be greater than 0 (got 0)",
        ),
        (
            edit(f"{LLM}.capacity_unit", "watts"),
            f"{LLM}.capacity_unit: Input should be 'requests', 'tokens', 'input_tokens' or "
            "'output_tokens' (got 'watts')",
        ),
        # policies and plugins
        (edit("policies", ["no-such-policy"]), "policies[0].name: unknown policy 'no-such-policy'"),
        (
            edit("policies", [{"name": "x", "params": {}}, {"name": "no_such_module:Policy"}]),
            "policies[1].name: policy 'no_such_module:Policy' cannot be loaded",
        ),
        (
            edit("metrics", {"type": "carrier-pigeon"}),
            "metrics.type: unknown metric_source 'carrier-pigeon'",
        ),
        (edit("actuator", {"type": "teleport"}), "actuator.type: unknown actuator 'teleport'"),
        # unknown keys, at several depths
        (edit("wat", 1), "wat: unknown key (check the spelling)"),
        (edit("pipeline.nmae", "x"), "pipeline.nmae: unknown key (check the spelling)"),
        (edit(f"{LLM}.startup", 240), f"{LLM}.startup: unknown key (check the spelling)"),
        (
            edit(f"{LLM}.replicas.maximum", 9),
            f"{LLM}.replicas.maximum: unknown key (check the spelling)",
        ),
        (
            edit("pipeline.edges.0.fan_out", 2),
            "pipeline.edges[0].fan_out: unknown key (check the spelling)",
        ),
        (edit("control.intervl_s", 5), "control.intervl_s: unknown key (check the spelling)"),
        (
            edit(
                "constraints.scale_up.rate_limits",
                [{"type": "pods", "value": 1, "period_s": 60, "per": "pod"}],
            ),
            "constraints.scale_up.rate_limits[0].per: unknown key (check the spelling)",
        ),
        (
            edit(f"{LLM}.constraints.scale_down.stabilisation_s", 300),
            f"{LLM}.constraints.scale_down.stabilisation_s: unknown key (check the spelling)",
        ),
        # constraints
        (
            edit("constraints.scale_up.select", "avg"),
            "constraints.scale_up.select: Input should be 'max', 'min' or 'disabled' (got 'avg')",
        ),
        (
            edit(
                "constraints.scale_down.rate_limits", [{"type": "pods", "value": 0, "period_s": 60}]
            ),
            "constraints.scale_down.rate_limits[0].value: Input should be greater than 0 (got 0)",
        ),
        (
            edit(
                "constraints.scale_down.rate_limits",
                [{"type": "fraction", "value": 1, "period_s": 60}],
            ),
            "constraints.scale_down.rate_limits[0].type: Input should be 'pods' or 'percent' "
            "(got 'fraction')",
        ),
        (
            edit("constraints.scale_down.cooldown_s", -5),
            "constraints.scale_down.cooldown_s: Input should be greater than or equal to 0 "
            "(got -5)",
        ),
        (
            edit("constraints.schedules", [{"cron": "61 * * * *", "duration_s": 60, "min": 2}]),
            "constraints.schedules[0].cron: '61 * * * *' is not a valid cron expression",
        ),
        (
            edit("constraints.schedules", [{"cron": "every morning", "duration_s": 60, "min": 2}]),
            "constraints.schedules[0].cron: 'every morning' is not a valid cron expression",
        ),
        (
            edit("constraints.schedules", [{"cron": "0 0 30 2 *", "duration_s": 60, "min": 2}]),
            "constraints.schedules[0].cron: '0 0 30 2 *' never fires",
        ),
        (
            edit(
                f"{LLM}.constraints.schedules",
                [{"cron": "0 9 * * *", "timezone": "Mars/Olympus", "duration_s": 60, "min": 2}],
            ),
            f"{LLM}.constraints.schedules[0].timezone: unknown time zone 'Mars/Olympus'",
        ),
        (
            edit("constraints.schedules", [{"cron": "0 9 * * *", "duration_s": 60}]),
            "constraints.schedules[0]: set min, max or both",
        ),
        (
            edit(
                "constraints.schedules",
                [{"cron": "0 9 * * *", "duration_s": 60, "min": 9, "max": 3}],
            ),
            "constraints.schedules[0]: min = 9 is greater than max = 3",
        ),
        (
            edit("constraints.schedules", [{"cron": "0 9 * * *", "duration_s": 0, "min": 1}]),
            "constraints.schedules[0].duration_s: Input should be greater than 0 (got 0)",
        ),
        (
            edit("constraints.missing_data", {"fallback": "static"}),
            "constraints.missing_data: fallback = 'static' needs fallback_replicas",
        ),
        (
            edit(f"{LLM}.constraints.missing_data", {"fallback": "current-if-higher"}),
            f"{LLM}.constraints.missing_data: fallback = 'current-if-higher' needs "
            "fallback_replicas",
        ),
        (
            edit("constraints.missing_data.fallback_after", 0),
            "constraints.missing_data.fallback_after: Input should be greater than or equal to 1 "
            "(got 0)",
        ),
        # not a mapping at all
        (None, "(top level): expected a mapping with a 'pipeline' key"),
        ({}, "pipeline: required field is missing"),
    ],
)
def test_each_problem_names_its_field(raw: Any, expected: str) -> None:
    problems = problems_of(raw)
    assert any(p.startswith(expected) for p in problems), problems


def test_a_cycle_is_named_in_order() -> None:
    raw = valid()
    raw["pipeline"]["components"]["planner"] = {
        "capacity_per_replica": 1,
        "service_time_s": 1,
        "replicas": {"max": 3},
    }
    raw["pipeline"]["edges"] += [
        {"from": "llm", "to": "planner"},
        {"from": "planner", "to": "retriever"},
    ]
    assert problems_of(raw) == ["pipeline.edges: cycle retriever -> llm -> planner -> retriever"]


def test_a_bad_file_is_refused_whole_with_every_problem() -> None:
    raw = valid()
    raw["wat"] = 1
    raw["pipeline"]["components"]["llm"]["replicas"] = {"min": 5, "max": 3}
    raw["pipeline"]["components"]["router"]["startup_s"] = -1
    raw["pipeline"]["edges"].append({"from": "llm", "to": "llm"})
    raw["constraints"] = {"missing_data": {"fallback": "static"}}
    raw["policies"] = ["no-such-policy"]
    problems = problems_of(raw)
    expected_starts = [
        f"{LLM}.replicas: min = 5",
        "pipeline.components.router.startup_s:",
        "wat: unknown key",
        "constraints.missing_data: fallback",
        "pipeline.edges[3]: self-edge",
        "policies[0].name: unknown policy",
    ]
    for start in expected_starts:
        assert any(p.startswith(start) for p in problems), (start, problems)
    assert len(problems) == len(expected_starts)


# --------------------------------------------------------------------------------------------
# Files and the command line


def write(tmp_path: Path, text: str, name: str = "pipeline.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD_YAML = """\
pipeline:
  name: support-agent
  slo: {latency_p95_s: 30}
  components:
    router:
      ingress: true
      capacity_per_replica: 50
      service_time_s: 0.05
      startup_s: 10
      replicas: {min: 1, max: 20}
      cost_per_hour: 0.10
    llm:
      capacity_per_replica: 1.5
      service_time_s: 4.0
      startup_s: 240
      gpus_per_replica: 1
      replicas: {min: 1, max: 64}
      cost_per_hour: 4.00
  edges:
    - {from: router, to: llm, fanout: 3.0}
"""


def test_the_documented_pipeline_shape_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD_YAML))
    assert config.pipeline.edges[0].source == "router"
    assert config.pipeline.edges[0].fanout == 3.0
    assert config.pipeline.components["llm"].startup_s == 240


def test_validate_exits_0_on_a_good_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD_YAML)
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "ok" in out and err == ""


def test_validate_exits_2_with_one_line_per_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = GOOD_YAML.replace("replicas: {min: 1, max: 64}", "replicas: {min: 80, max: 64}")
    text = text.replace("to: llm, fanout: 3.0", "to: lm, fanout: -3.0")
    path = write(tmp_path, text)
    assert main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}: pipeline.components.llm.replicas: min = 80 is greater than max = 64",
        f"{path}: pipeline.edges[0].fanout: Input should be greater than or equal to 0 (got -3.0)",
        f"{path}: pipeline.edges[0].to: unknown component 'lm' (components: router, llm)",
    ]


@pytest.mark.parametrize(
    ("text", "line", "context"),
    [
        # a key without its colon is noticed on the next line; the context names the key's line
        (
            GOOD_YAML.replace("    llm:\n", "    llm\n"),
            13,
            "(while scanning a simple key at line 12)",
        ),
        (
            GOOD_YAML.replace("replicas: {min: 1, max: 64}", "replicas: {min: 1, max: 64"),
            18,
            "(while parsing a flow mapping at line 17)",
        ),
        (
            GOOD_YAML.replace("      startup_s: 10\n", "     startup_s: 10\n"),
            9,
            "(while parsing a block mapping at line 5)",
        ),
        # a key given twice in one mapping would silently keep the last value
        (
            GOOD_YAML.replace("startup_s: 10\n", "startup_s: 10\n      startup_s: 20\n", 1),
            10,
            "(while reading a mapping at line 6)",
        ),
    ],
)
def test_yaml_syntax_errors_give_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: int, context: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [problem] = info.value.problems
    assert problem.startswith(f"line {line}, column "), problem
    assert "invalid YAML" in problem and problem.endswith(context), problem
    assert main(["validate", str(path)]) == 2
    assert f"line {line}, column" in capsys.readouterr().err


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert info.value.problems[0].startswith("cannot read file")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, ""))
    assert info.value.problems == ["(top level): expected a mapping with a 'pipeline' key"]


# --------------------------------------------------------------------------------------------
# Layering and shorthands


def test_constraints_for_lays_a_components_sections_over_the_pipelines() -> None:
    raw = valid()
    raw["constraints"] = {
        "scale_up": {"stabilization_s": 30},
        "scale_down": {"stabilization_s": 300, "cooldown_s": 60},
        "missing_data": {"staleness_s": 90},
    }
    raw["pipeline"]["components"]["llm"]["constraints"] = {
        "scale_down": {"stabilization_s": 600},
        "schedules": [{"cron": "0 9 * * 1-5", "duration_s": 3600, "min": 8}],
    }
    raw["pipeline"]["components"]["retriever"]["constraints"] = {}
    config = validate_mapping(raw)
    llm = config.constraints_for("llm")
    # the component's own section replaces the pipeline's section whole...
    assert llm.scale_down.stabilization_s == 600
    assert llm.scale_down.cooldown_s == 0  # not inherited field by field
    assert llm.schedules[0].min == 8
    # ...and the sections it does not set come from the pipeline
    assert llm.scale_up.stabilization_s == 30
    assert llm.missing_data.staleness_s == 90
    # an empty section and no section both mean the pipeline's constraints
    assert config.constraints_for("retriever") == config.constraints
    assert config.constraints_for("router") == config.constraints


def test_policy_shorthands() -> None:
    raw = valid()
    raw["policies"] = ["elastiscale.controllers.base:PerComponentPolicy"]
    assert (
        validate_mapping(raw).policies[0].name == "elastiscale.controllers.base:PerComponentPolicy"
    )
    raw["policies"] = "elastiscale.controllers.base:PerComponentPolicy"
    assert (
        validate_mapping(raw).policies[0].name == "elastiscale.controllers.base:PerComponentPolicy"
    )
    assert Config.model_validate(valid()).policies[0].name == "elastiscale"


def test_defaults_of_per_component_settings() -> None:
    raw = valid()
    raw["pipeline"]["components"]["llm"]["target_utilization"] = 0.5
    raw["pipeline"]["components"]["llm"]["queue_timeout_s"] = 7
    spec = validate_mapping(raw).pipeline
    assert spec.utilization_target("llm") == 0.5
    assert spec.utilization_target("router") == 0.7
    assert spec.queue_timeout("llm") == 7
    assert spec.queue_timeout("router") == 40  # 2 x the SLO of 20 s


def test_the_attainment_target_defaults_to_99_percent_and_can_be_set() -> None:
    assert validate_mapping(valid()).pipeline.slo.attainment_target == 0.99
    raw = valid()
    raw["pipeline"]["slo"]["attainment_target"] = 0.95
    assert validate_mapping(raw).pipeline.slo.attainment_target == 0.95
