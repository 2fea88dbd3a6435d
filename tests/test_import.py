"""`elastiscale import`: HPAs, KEDA ScaledObjects and Ray Serve configs carried over to a
pipeline file; each supported field read back from the policy the file builds."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from elastiscale.adapters.memory import RecordingActuator, SeriesMetricSource
from elastiscale.backtest.api import backtest
from elastiscale.cli import main
from elastiscale.config import Config, load_config
from elastiscale.controllers.hpa import HPAParams
from elastiscale.controllers.ray_serve_policy import RayServeParams
from elastiscale.engine import Engine
from elastiscale.importer.model import ImportRefusedError
from elastiscale.importer.writer import build, gather
from elastiscale.overrides import ByComponent

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "import"

HPA: dict[str, Any] = {
    "apiVersion": "autoscaling/v2",
    "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "llm-hpa", "namespace": "serving"},
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm"},
        "minReplicas": 3,
        "maxReplicas": 40,
        "metrics": [
            {
                "type": "External",
                "external": {
                    "metric": {"name": "requests_per_second"},
                    "target": {"type": "AverageValue", "averageValue": "1500m"},
                },
            },
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 50},
                },
            },
        ],
        "behavior": {
            "scaleUp": {
                "stabilizationWindowSeconds": 30,
                "selectPolicy": "Min",
                "policies": [
                    {"type": "Pods", "value": 2, "periodSeconds": 30},
                    {"type": "Percent", "value": 25, "periodSeconds": 60},
                ],
                "tolerance": "0.02",
            },
            "scaleDown": {
                "stabilizationWindowSeconds": 900,
                "selectPolicy": "Disabled",
                "policies": [{"type": "Percent", "value": 10, "periodSeconds": 120}],
            },
        },
    },
}

SCALED_OBJECT: dict[str, Any] = {
    "apiVersion": "keda.sh/v1alpha1",
    "kind": "ScaledObject",
    "metadata": {"name": "llm-so", "namespace": "serving"},
    "spec": {
        "scaleTargetRef": {"name": "llm"},
        "minReplicaCount": 2,
        "maxReplicaCount": 30,
        "fallback": {"failureThreshold": 5, "replicas": 7, "behavior": "static"},
        "advanced": {
            "horizontalPodAutoscalerConfig": {
                "behavior": {
                    "scaleDown": {
                        "stabilizationWindowSeconds": 60,
                        "policies": [{"type": "Pods", "value": 3, "periodSeconds": 15}],
                    }
                }
            }
        },
        "triggers": [
            {"type": "prometheus", "metadata": {"query": "sum(rate(x[1m]))", "threshold": "12"}},
            {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "65"}},
        ],
    },
}

RAY: dict[str, Any] = {
    "applications": [
        {
            "name": "app",
            "import_path": "a:b",
            "deployments": [
                {
                    "name": "llm",
                    "ray_actor_options": {"num_gpus": 2},
                    "autoscaling_config": {
                        "min_replicas": 1,
                        "initial_replicas": 3,
                        "max_replicas": 12,
                        "target_ongoing_requests": 8,
                        "look_back_period_s": 45,
                        "aggregation_function": "max",
                        "upscale_delay_s": 5,
                        "downscale_delay_s": 120,
                        "downscale_to_zero_delay_s": 400,
                        "upscaling_factor": 1.5,
                        "downscaling_factor": 0.5,
                    },
                }
            ],
        }
    ]
}


def write(tmp_path: Path, *docs: dict[str, Any], name: str = "in.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(list(docs)))
    return path


def imported(tmp_path: Path, *docs: dict[str, Any]) -> tuple[Config, list[str]]:
    raw, notes = build(gather([write(tmp_path, *docs)]))
    return load_config(raw), notes


def policy_params(config: Config, component: str) -> Any:
    engine = Engine(
        config, metrics=SeriesMetricSource({}), actuator=RecordingActuator.for_config(config)
    )
    (policy,) = engine.policies
    assert isinstance(policy, ByComponent)
    return policy.instance_for(component).params  # type: ignore[attr-defined]


def test_hpa_round_trip_of_every_supported_field(tmp_path: Path) -> None:
    config, _ = imported(tmp_path, HPA)
    llm = config.pipeline.components["llm"]
    assert (llm.replicas.min, llm.replicas.max) == (3, 40)
    params: HPAParams = policy_params(config, "llm")
    assert params.metrics == ("demand_rps", "utilization")
    assert params.target_utilization == 0.5
    # the per-replica target of the External metric, 1.5, is capacity x target utilization
    assert llm.capacity_per_replica * params.target_utilization == pytest.approx(1.5)
    up, down = params.behavior.scale_up, params.behavior.scale_down
    assert (up.stabilization_window_s, up.select_policy, up.tolerance) == (30, "min", 0.02)
    assert [(p.type, p.value, p.period_s) for p in up.policies] == [
        ("pods", 2, 30),
        ("percent", 25, 60),
    ]
    assert (down.stabilization_window_s, down.select_policy, down.tolerance) == (
        900,
        "disabled",
        None,
    )
    assert [(p.type, p.value, p.period_s) for p in down.policies] == [("percent", 10, 120)]
    assert config.actuator is not None
    assert config.actuator.options() == {
        "namespace": "serving",
        "targets": {"llm": {"kind": "Deployment", "name": "llm"}},
    }


def test_hpa_defaults_are_kubernetes_defaults(tmp_path: Path) -> None:
    hpa = copy.deepcopy(HPA)
    for key in ("metrics", "behavior", "minReplicas"):
        del hpa["spec"][key]
    config, _ = imported(tmp_path, hpa)
    params: HPAParams = policy_params(config, "llm")
    assert config.pipeline.components["llm"].replicas.min == 1
    assert params.metrics == ("utilization",)
    assert params.target_utilization == 0.8  # the API's default: 80 % CPU
    assert params.behavior == HPAParams().behavior


def test_scaled_object_round_trip_of_every_supported_field(tmp_path: Path) -> None:
    config, notes = imported(tmp_path, SCALED_OBJECT)
    llm = config.pipeline.components["llm"]
    assert (llm.replicas.min, llm.replicas.max) == (2, 30)
    params: HPAParams = policy_params(config, "llm")
    assert params.metrics == ("demand_rps", "utilization")
    assert params.target_utilization == 0.65
    assert llm.capacity_per_replica * params.target_utilization == pytest.approx(12)
    down = params.behavior.scale_down
    assert down.stabilization_window_s == 60
    assert [(p.type, p.value, p.period_s) for p in down.policies] == [("pods", 3, 15)]
    assert params.behavior.scale_up == HPAParams().behavior.scale_up
    missing = config.constraints_for("llm").missing_data
    assert (missing.fallback_after, missing.fallback, missing.fallback_replicas) == (
        5,
        "static",
        7,
    )
    assert config.actuator is not None
    assert config.actuator.options()["targets"] == {"llm": {"kind": "Deployment", "name": "llm"}}
    assert any("spec.triggers[0]: trigger prometheus (threshold 12)" in n for n in notes)


@pytest.mark.parametrize(
    ("behavior", "fallback"),
    [("currentReplicas", "hold"), ("currentReplicasIfHigher", "current-if-higher")],
)
def test_keda_fallback_behaviors(tmp_path: Path, behavior: str, fallback: str) -> None:
    so = copy.deepcopy(SCALED_OBJECT)
    so["spec"]["fallback"]["behavior"] = behavior
    config, _ = imported(tmp_path, so)
    assert config.constraints_for("llm").missing_data.fallback == fallback


def test_ray_serve_round_trip_of_every_supported_field(tmp_path: Path) -> None:
    config, _ = imported(tmp_path, RAY)
    llm = config.pipeline.components["llm"]
    assert (llm.replicas.min, llm.replicas.initial, llm.replicas.max) == (1, 3, 12)
    assert llm.gpus_per_replica == 2
    params: RayServeParams = policy_params(config, "llm")
    own = RAY["applications"][0]["deployments"][0]["autoscaling_config"]
    for key in (
        "target_ongoing_requests",
        "look_back_period_s",
        "aggregation_function",
        "upscale_delay_s",
        "downscale_delay_s",
        "downscale_to_zero_delay_s",
        "upscaling_factor",
        "downscaling_factor",
    ):
        assert getattr(params, key) == own[key], key


def test_ray_serve_older_names_and_smoothing_factor(tmp_path: Path) -> None:
    ray = copy.deepcopy(RAY)
    auto = ray["applications"][0]["deployments"][0]["autoscaling_config"]
    for key in ("target_ongoing_requests", "upscaling_factor", "downscaling_factor"):
        del auto[key]
    auto.update(target_num_ongoing_requests_per_replica=5, smoothing_factor=0.8)
    auto["downscale_smoothing_factor"] = 0.3
    params: RayServeParams = policy_params(imported(tmp_path, ray)[0], "llm")
    assert (params.target_ongoing_requests, params.upscaling_factor) == (5, 0.8)
    assert params.downscaling_factor == 0.3


def _with(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return out


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"apiVersion": "apps/v1", "kind": "Deployment"}, "kind: 'Deployment' is not imported"),
        ({"spec": {}}, "kind: required (HorizontalPodAutoscaler, ScaledObject"),
        (_with(HPA, "apiVersion", "autoscaling/v1"), "apiVersion: 'autoscaling/v1' is not"),
        (
            _with(HPA, "spec.behavior.scaleUp.selectPolicy", "Most"),
            "spec.behavior.scaleUp.selectPolicy: 'Most' is not Max, Min or Disabled",
        ),
        (
            _with(HPA, "spec.behavior.scaleDown.window", 3),
            "spec.behavior.scaleDown.window: unknown key",
        ),
        (
            _with(HPA, "spec.behavior.scaleUp.policies", [{"type": "Nodes", "value": 1}]),
            "spec.behavior.scaleUp.policies[0].type: 'Nodes' is not Pods or Percent",
        ),
        (_with(HPA, "spec.scaleTargetRef.name", None), "spec.scaleTargetRef.name: required"),
        (
            _with(
                HPA,
                "spec.metrics",
                [
                    {
                        "type": "Pods",
                        "pods": {
                            "metric": {"name": "q"},
                            "target": {"type": "AverageValue", "averageValue": "ten"},
                        },
                    }
                ],
            ),
            "spec.metrics[0].target.averageValue: 'ten' is not a quantity",
        ),
        (
            _with(
                HPA,
                "spec.metrics",
                [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "memory",
                            "target": {"type": "Utilization", "averageUtilization": 80},
                        },
                    }
                ],
            ),
            "no metric the hpa policy can reproduce",
        ),
        (_with(SCALED_OBJECT, "spec.triggers", []), "spec.triggers: required"),
        (
            _with(SCALED_OBJECT, "spec.fallback.replicas", None),
            "spec.fallback.replicas: None is not an integer >= 0",
        ),
        ({"applications": []}, "applications: required"),
    ],
)
def test_what_cannot_be_imported_is_refused_naming_the_field(
    tmp_path: Path, doc: dict[str, Any], message: str
) -> None:
    with pytest.raises(ImportRefusedError) as caught:
        imported(tmp_path, doc)
    assert message in str(caught.value)
    assert str(caught.value).startswith(str(tmp_path / "in.yaml"))
    assert "\n" not in str(caught.value)


def test_a_workload_scaled_twice_and_mixed_platforms_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ImportRefusedError, match="'llm' is already scaled by"):
        gather([write(tmp_path, HPA, SCALED_OBJECT)])
    with pytest.raises(ImportRefusedError, match="cannot mix Ray Serve deployments"):
        ray = _with(RAY, "applications", [{"deployments": [{"name": "other", "num_replicas": 2}]}])
        gather([write(tmp_path, HPA, name="a.yaml"), write(tmp_path, ray, name="b.yaml")])


@pytest.mark.parametrize(
    ("doc", "path", "value", "note"),
    [
        (SCALED_OBJECT, "spec.idleReplicaCount", 0, "spec.idleReplicaCount: not carried over"),
        (SCALED_OBJECT, "spec.advanced.scalingModifiers", {"formula": "a"}, "the formula is not"),
        (HPA, "spec.metrics.1.resource.name", "memory", "Resource memory with a Utilization"),
    ],
)
def test_what_is_not_carried_over_is_one_note_naming_it(
    tmp_path: Path, doc: dict[str, Any], path: str, value: Any, note: str
) -> None:
    changed = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node: Any = changed
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[last] = value
    _, notes = imported(tmp_path, changed)
    assert len([n for n in notes if note in n]) == 1
    assert all("\n" not in n for n in notes)


def test_a_kubectl_list_is_read_item_by_item(tmp_path: Path) -> None:
    config, _ = imported(tmp_path, {"apiVersion": "v1", "kind": "List", "items": [HPA]})
    assert set(config.pipeline.components) == {"llm"}


def test_examples_import_over_the_base_pipeline_and_backtest_against_elastiscale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "imported.yaml"
    code = main(
        [
            "import",
            str(EXAMPLES / "hpa.yaml"),
            str(EXAMPLES / "scaledobject.yaml"),
            "--pipeline",
            str(REPO / "examples/kubernetes/pipeline.yaml"),
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err.splitlines()
    assert code == 0
    assert all(line.startswith(("import: ", "wrote ")) for line in err)
    assert "--policy hpa --policy elastiscale" in err[-1]
    config = load_config(out)
    # components are named as in the base file, through its actuator targets
    assert set(config.pipeline.components) == {"router", "retriever", "llm"}
    assert (
        config.pipeline.edges
        == load_config(REPO / "examples/kubernetes/pipeline.yaml").pipeline.edges
    )
    llm: HPAParams = policy_params(config, "llm")
    assert llm.behavior.scale_down.stabilization_window_s == 600
    # the HPA's 2100 tokens/s per pod against the base file's 3000 per replica
    assert llm.target_utilization == pytest.approx(0.7)
    report = backtest(
        config,
        REPO / "examples/traces/azure_llm_2023_conv_1s.csv",
        ["hpa", "elastiscale"],
        end_s=1200,
    )
    assert list(report.policies) == ["hpa", "elastiscale"]


def test_cli_refusal_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {}})
    assert main(["import", str(path), "--out", str(tmp_path / "o.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"import: {path}: kind: 'Deployment' is not imported (HorizontalPodAutoscaler, "
        "ScaledObject, or a Ray Serve config with `applications:`)"
    ]
    assert not (tmp_path / "o.yaml").exists()
