"""The fleet file: units of pipelines that share components, the merged config the engine runs,
bad fleets refused whole with one line naming the file and field, and the commands on it."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from elastiscale.adapters.memory import RecordingActuator
from elastiscale.cli import main
from elastiscale.config.fleet import Fleet, load_fleet
from elastiscale.engine import Engine
from elastiscale.errors import ConfigError
from elastiscale.observations import Observation
from elastiscale.pipeline import Pipeline
from elastiscale.pipeline_model import latency_budgets

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fleet" / "fleet.yaml"


def component(**extra: Any) -> dict[str, Any]:
    return {
        "capacity_per_replica": 10,
        "service_time_s": 0.5,
        "replicas": {"min": 1, "max": 20},
        **extra,
    }


def pipeline(name: str, slo_s: float, chain: list[str], **top: Any) -> dict[str, Any]:
    """A chain pipeline `chain[0] -> chain[1] -> ...`, the first the ingress, fan-out 2 each."""
    comps = {c: component(ingress=(i == 0)) for i, c in enumerate(chain)}
    edges = [{"from": a, "to": b, "fanout": 2.0} for a, b in itertools.pairwise(chain)]
    return {"pipeline": {"name": name, "slo": {"latency_p95_s": slo_s}, "components": comps,
                         "edges": edges}, **top}  # fmt: skip


def rag() -> dict[str, Any]:
    return pipeline("rag", 20, ["router", "embedder", "llm"])


def agent() -> dict[str, Any]:
    return pipeline("agent", 60, ["router", "planner", "embedder", "llm"])


def solo() -> dict[str, Any]:
    return pipeline("solo", 30, ["router", "writer"])


def write_fleet(
    tmp_path: Path,
    pipelines: dict[str, dict[str, Any]],
    fleet: dict[str, Any] | None = None,
    **top: Any,
) -> Path:
    for name, raw in pipelines.items():
        (tmp_path / name).write_text(yaml.safe_dump(raw))
    section = {"name": "platform", "pipelines": list(pipelines), "shared": ["embedder", "llm"]}
    section.update(fleet or {})
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"fleet": section, **top}))
    return path


def three(tmp_path: Path) -> Fleet:
    return load_fleet(
        write_fleet(tmp_path, {"rag.yaml": rag(), "agent.yaml": agent(), "solo.yaml": solo()})
    )


# --------------------------------------------------------------------------------------------
# Units and the merged config


def test_pipelines_sharing_components_are_one_unit_and_a_lone_pipeline_its_own(
    tmp_path: Path,
) -> None:
    fleet = three(tmp_path)
    assert fleet.unit_names == ("agent+rag", "solo")
    unit = fleet.unit("rag")
    assert unit.pipelines == ("agent", "rag")
    assert set(unit.config.pipeline.components) == {
        "agent/router", "agent/planner", "rag/router", "embedder", "llm",
    }  # fmt: skip
    assert [c for c, v in unit.config.pipeline.components.items() if v.ingress] == [
        "agent/router", "rag/router",
    ]  # fmt: skip
    # the lone pipeline runs as written: its own names, no members
    alone = fleet.unit("solo").config.pipeline
    assert list(alone.components) == ["router", "writer"] and not alone.members


def test_the_merged_unit_runs_in_the_unchanged_engine_and_records_shares(tmp_path: Path) -> None:
    config = three(tmp_path).unit("agent+rag").config
    actuator = RecordingActuator.for_config(config)

    class Source:
        def observe(self, names: Any, now_s: float) -> dict[str, Observation]:
            rates = {"rag/router": 10.0, "agent/router": 1.0}
            return {n: Observation(n, now_s, demand_rps=rates.get(n, 0.0)) for n in names}

    engine = Engine(config, metrics=Source(), actuator=actuator)
    records = {r.component: r for r in engine.step(0.0)}
    # rag sends the embedder 10 x 2 = 20 calls/s, agent 1 x 2 x 2 = 4
    assert records["embedder"].demand_by_pipeline == {"agent": 4.0, "rag": 20.0}
    assert records["embedder"].to_dict()["demand_share"] == pytest.approx(
        {"agent": 4 / 24, "rag": 20 / 24}
    )
    assert records["llm"].demand_by_pipeline == {"agent": 8.0, "rag": 40.0}
    assert "demand_by_pipeline" not in records["rag/router"].to_dict()


def test_a_missing_ingress_rate_is_a_missing_share_never_zero(tmp_path: Path) -> None:
    config = three(tmp_path).unit("agent+rag").config
    from elastiscale.demand_shares import DemandShares, fractions

    shares = DemandShares(config).of({"rag/router": Observation("rag/router", 0.0, demand_rps=3)})
    assert shares["embedder"] == {"agent": None, "rag": 6.0}
    assert fractions(shares["embedder"]) is None


def test_each_pipeline_keeps_its_slo_and_budgets_are_per_path(
    tmp_path: Path,
) -> None:
    fleet = three(tmp_path)
    merged = fleet.unit("rag").config
    assert merged.pipeline.slo.latency_p95_s == 20  # the tightest, for whole-unit figures
    assert {m: s.slo.latency_p95_s for m, s in merged.pipeline.members.items()} == {
        "agent": 60, "rag": 20,
    }  # fmt: skip
    budgets = latency_budgets(merged)
    alone = {
        name: latency_budgets(load_fleet_single(tmp_path, raw))
        for name, raw in (("rag", rag()), ("agent", agent()))
    }
    # rag is the tighter: its path is as alone; the shared ones take rag's budgets, and the
    # time they leave unused on agent's path goes to agent's own components
    assert budgets["rag/router"] == pytest.approx(alone["rag"]["router"])
    assert budgets["llm"] == pytest.approx(alone["rag"]["llm"])
    assert budgets["embedder"] == pytest.approx(alone["rag"]["embedder"])
    assert budgets["agent/planner"] > alone["agent"]["planner"]
    graph = Pipeline(merged.pipeline)
    for ingress, slo_s in (("rag/router", 20), ("agent/router", 60)):
        calls = graph.propagate({ingress: 1.0})
        assert sum(calls[n] * budgets[n] for n in calls) == pytest.approx(slo_s)


def load_fleet_single(tmp_path: Path, raw: dict[str, Any]) -> Any:
    from elastiscale.config import validate_mapping

    return validate_mapping(raw)


def _sections(raw: dict[str, Any], namespace: str, **metrics: Any) -> dict[str, Any]:
    """`raw` with a Prometheus source and a Kubernetes actuator in `namespace` (the shared
    components' targets in the namespace `shared`)."""
    names = raw["pipeline"]["components"]
    targets = {
        c: {"name": c, "namespace": "shared"} if c in ("embedder", "llm") else {"name": c}
        for c in names
    }
    prom = {"type": "prometheus", "url": "http://prometheus:9090", **metrics}
    kube = {"type": "kubernetes", "namespace": namespace, "targets": targets}
    return {**raw, "metrics": prom, "actuator": kube}


def test_local_components_keep_their_pipelines_metrics_and_actuator_targets(
    tmp_path: Path,
) -> None:
    rag_file = _sections(rag(), "rag", preset="vllm", selector={"team": "search"})
    agent_file = _sections(
        agent(),
        "agent",
        preset="vllm",
        selector={"team": "search"},
        components={"planner": {"preset": "ray-serve", "selector": {"app": "plan"}}},
    )
    path = write_fleet(tmp_path, {"rag.yaml": rag_file, "agent.yaml": agent_file})
    config = load_fleet(path).units[0].config
    assert config.metrics is not None and config.actuator is not None
    entries = config.metrics.options()["components"]
    assert entries["agent/planner"] == {
        "preset": "ray-serve", "selector": {"team": "search", "app": "plan"},
        "label_value": "planner",
    }  # fmt: skip
    assert entries["rag/router"] == {
        "preset": "vllm", "selector": {"team": "search"}, "label_value": "router",
    }  # fmt: skip
    targets = config.actuator.options()["targets"]
    assert targets["agent/router"] == {"namespace": "agent", "name": "router"}
    assert targets["rag/router"] == {"namespace": "rag", "name": "router"}
    assert targets["llm"] == {"namespace": "shared", "name": "llm"}
    assert "namespace" not in config.actuator.options()


def test_a_shared_component_read_differently_by_two_pipelines_is_refused(
    tmp_path: Path,
) -> None:
    rag_file = _sections(rag(), "rag", preset="vllm", selector={"team": "search"})
    agent_file = _sections(agent(), "agent", preset="vllm")
    with pytest.raises(ConfigError) as info:
        load_fleet(write_fleet(tmp_path, {"rag.yaml": rag_file, "agent.yaml": agent_file}))
    assert info.value.problems[0].startswith(
        "metrics.components.embedder.selector: shared component defined differently by "
        "agent.yaml (agent) (None) and rag.yaml (rag) ({'team': 'search'})"
    ), info.value.problems


def test_an_edge_out_of_a_shared_component_carries_only_its_own_pipelines_calls(
    tmp_path: Path,
) -> None:
    """rag: router -> embedder -> retriever; agent: planner -> embedder: merged naively, the
    agent's embeddings would reach rag's retriever. Two pipelines calling the shared
    components in opposite orders (a naive merge would be a cycle) are fine too."""
    a = pipeline("rag", 20, ["router", "embedder", "retriever", "llm"])
    b = pipeline("agent", 60, ["router", "llm", "embedder"])
    config = load_fleet(write_fleet(tmp_path, {"a.yaml": a, "b.yaml": b})).units[0].config
    demand = Pipeline(config.pipeline).propagate({"rag/router": 1.0, "agent/router": 1.0})
    # rag alone: embedder 2, retriever 4, llm 8; agent alone: llm 2, embedder 4
    assert demand["rag/retriever"] == pytest.approx(4.0)
    assert demand["embedder"] == pytest.approx(2.0 + 4.0)
    assert demand["llm"] == pytest.approx(8.0 + 2.0)


def test_a_pipelines_dir_loads_every_yaml_file_in_name_order(tmp_path: Path) -> None:
    folder = tmp_path / "pipelines"
    folder.mkdir()
    for name, raw in (("b.yaml", agent()), ("a.yml", rag()), ("c.yaml", solo())):
        (folder / name).write_text(yaml.safe_dump(raw))
    (folder / "notes.txt").write_text("not a pipeline")
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"fleet": {"name": "p", "pipelines_dir": "pipelines",
                                              "shared": ["embedder"]}}))  # fmt: skip
    assert load_fleet(path).unit_names == ("agent+rag", "solo")


def test_the_example_fleet_loads() -> None:
    fleet = load_fleet(EXAMPLE)
    assert fleet.unit_names == ("rag-qa+support-agent",)
    assert {"embedder", "llm"} <= set(fleet.units[0].config.pipeline.components)


# --------------------------------------------------------------------------------------------
# Bad fleets: refused whole, one line naming the file and field


def _differ(field: str, value: Any) -> dict[str, dict[str, Any]]:
    other = agent()
    other["pipeline"]["components"]["embedder"][field] = value
    return {"rag.yaml": rag(), "agent.yaml": other}


def _with(raw: dict[str, Any], **top: Any) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    out.update(top)
    return out


def _both(rag_top: dict[str, Any] | None = None, agent_top: dict[str, Any] | None = None) -> Any:
    """rag.yaml and agent.yaml with top-level sections added to each."""
    return {"rag.yaml": _with(rag(), **(rag_top or {})),
            "agent.yaml": _with(agent(), **(agent_top or {}))}  # fmt: skip


def _budgeted() -> dict[str, Any]:
    raw = agent()
    raw["pipeline"]["max_gpus"] = 8
    return raw


PROM_A = {"type": "prometheus", "url": "http://a:9090"}
PROM_B = {"type": "prometheus", "url": "http://b:9090"}

BAD: list[tuple[str, dict[str, dict[str, Any]], dict[str, Any], str]] = [
    # (case, pipeline files, fleet section changes, how a line of the refusal starts)
    ("shared defined differently", _differ("startup_s", 90), {},
     "pipeline.components.embedder.startup_s: shared component defined differently by "
     "agent.yaml (agent) (90.0) and rag.yaml (rag) (0.0)"),
    ("unknown shared name", _both(), {"shared": ["embedder", "embeder"]},
     "fleet.shared[1]: unknown component 'embeder'"),
    ("pipeline listed twice", _both(), {"pipelines": ["rag.yaml", "agent.yaml", "./rag.yaml"]},
     "fleet.pipelines[2]: ./rag.yaml is listed twice (also fleet.pipelines[0])"),
    ("two files, one pipeline name", {"rag.yaml": rag(), "rag2.yaml": rag()}, {},
     "fleet.pipelines: rag2.yaml has pipeline name 'rag', as rag.yaml has"),
    ("bad pipeline file", _both(agent_top={"control": {"interval_s": 0}}), {},
     "agent.yaml: control.interval_s: Input should be greater than 0"),
    ("daemon in a pipeline file", _both(rag_top={"daemon": {}}), {},
     "rag.yaml: daemon: not allowed in a pipeline of a fleet"),
    ("control differs", _both(agent_top={"control": {"interval_s": 30}}), {},
     "control.interval_s: agent.yaml (agent) has 30.0, rag.yaml (rag) has 15.0"),
    ("policies differ", _both(rag_top={"policies": ["hpa"]}), {},
     "policies[0].name: agent.yaml (agent) has 'elastiscale', rag.yaml (rag) has 'hpa'"),
    ("shared ingress", _both(), {"shared": ["router"]},
     "fleet.shared: router is an ingress component of agent.yaml (agent)"),
    ("metrics in one only", _both(rag_top={"metrics": PROM_A}), {},
     "metrics: rag.yaml (rag) has a metrics section and agent.yaml (agent) has none"),
    ("metrics servers differ", _both({"metrics": PROM_A}, {"metrics": PROM_B}), {},
     "metrics.url: agent.yaml (agent) has 'http://b:9090', rag.yaml (rag) has 'http://a:9090'"),
    ("budget on one only", {"rag.yaml": rag(), "agent.yaml": _budgeted()}, {},
     "pipeline.max_gpus: set by agent.yaml (agent) but not by rag.yaml (rag)"),
    ("no pipelines", {"rag.yaml": rag()}, {"pipelines": None}, "fleet: set one of pipelines"),
    ("bad fleet name", {"rag.yaml": rag()}, {"name": "Platform"},
     "fleet.name: 'Platform' is not a valid name"),
    ("missing file", {"rag.yaml": rag()}, {"pipelines": ["rag.yaml", "nope.yaml"]},
     "nope.yaml: cannot read file"),
]  # fmt: skip


@pytest.mark.parametrize(("pipelines", "fleet", "expected"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])  # fmt: skip
def test_a_bad_fleet_is_refused_with_one_line_naming_file_and_field(
    tmp_path: Path, pipelines: dict[str, dict[str, Any]], fleet: dict[str, Any], expected: str
) -> None:
    path = write_fleet(tmp_path, pipelines, fleet)
    with pytest.raises(ConfigError) as info:
        load_fleet(path)
    problems = info.value.problems
    assert info.value.source == str(path)
    assert any(p.startswith(expected) for p in problems), problems
    assert all("\n" not in p for p in problems)


def test_validate_prints_each_unit_and_exits_2_naming_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert (
        "unit rag-qa+support-agent: pipelines rag-qa, support-agent; shared: embedder, llm" in out
    )
    bad = write_fleet(tmp_path, {"rag.yaml": rag(), "agent.yaml": agent()},
                      {"shared": ["embedder", "embeder"]})  # fmt: skip
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{bad}: fleet.shared[1]: unknown component 'embeder' (no pipeline has it)"]


def test_backtest_replays_a_unit_and_names_units_when_several(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("t_seconds,requests\n" + "".join(f"{t},{3 + t % 4}\n" for t in range(600)))
    path = write_fleet(tmp_path, {"rag.yaml": rag(), "agent.yaml": agent(), "solo.yaml": solo()})
    base = ["backtest", str(path), "--trace", str(trace), "--no-plots", "--policy", "hpa"]
    assert main(base) == 2
    assert "--unit: the fleet has 2 units; name one (agent+rag, solo)" in capsys.readouterr().err
    assert main([*base, "--unit", "rag", "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["pipeline"]["name"] == "agent+rag"
    assert set(report["pipeline"]["ingress"]) == {"agent/router", "rag/router"}


def test_who_waits_for_a_call_is_kept_and_renamed(tmp_path: Path) -> None:
    a = pipeline("rag", 20, ["router", "planner"])
    a["pipeline"]["components"]["llm"] = component()
    a["pipeline"]["edges"].append(
        {"from": "router", "to": "llm", "caller_waits": True, "via": "planner"}
    )
    config = load_fleet(write_fleet(tmp_path, {"a.yaml": a, "b.yaml": agent()})).units[0].config
    edge = next(e for e in config.pipeline.edges if e.target == "llm" and e.source == "rag/router")
    assert (edge.caller_waits, edge.via) == (True, "rag/planner")


def test_a_pipelines_dir_holding_the_fleet_file_skips_it_and_validate_notes_unshared_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, raw in (("rag.yaml", rag()), ("agent.yaml", agent()), ("solo.yaml", solo())):
        (tmp_path / name).write_text(yaml.safe_dump(raw))
    path = tmp_path / "fleet.yaml"
    section = {"name": "p", "pipelines_dir": ".", "shared": ["embedder", "writer"]}
    path.write_text(yaml.safe_dump({"fleet": section}))
    assert load_fleet(path).unit_names == ("agent+rag", "solo")
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: note: fleet.shared names writer, which only one pipeline has" in out
    assert "embedder, which" not in out


def test_a_pipeline_that_is_itself_a_merged_unit_cannot_share_components(tmp_path: Path) -> None:
    dumped = three(tmp_path).unit("rag").config.model_dump(mode="json", by_alias=True)
    merged = {k: v for k, v in dumped.items() if v is not None and k != "daemon"}
    merged["pipeline"]["name"] = "inner"
    merged["pipeline"]["components"]["writer"] = component()
    merged["pipeline"]["edges"].append({"from": "agent/planner", "to": "writer"})
    other = tmp_path / "other"
    other.mkdir()
    pipelines = {"inner.yaml": merged, "solo.yaml": solo()}
    path = write_fleet(other, pipelines, {"shared": ["writer"]})
    with pytest.raises(ConfigError) as info:
        load_fleet(path)
    assert info.value.problems == [
        "inner.yaml: pipeline.members: not supported in a pipeline that shares components"
    ]


GROUPS = [
    # (case, each pipeline's components besides its ingress, shared, expected unit names)
    ("a chain of sharing is one unit", {"a": ["x"], "b": ["x", "y"], "c": ["y"]}, ["x", "y"],
     ("a+b+c",)),
    ("nothing shared: one unit each", {"a": ["x"], "b": ["x"]}, [], ("a", "b")),
    ("two pairs", {"a": ["x"], "b": ["x"], "c": ["y"], "d": ["y"]}, ["x", "y"], ("a+b", "c+d")),
    ("a lone one beside a pair", {"a": ["x"], "b": ["x"], "c": ["z"]}, ["x"], ("a+b", "c")),
]  # fmt: skip


@pytest.mark.parametrize(("pipelines", "shared", "expected"), [g[1:] for g in GROUPS],
                         ids=[g[0] for g in GROUPS])  # fmt: skip
def test_units_are_the_connected_groups_of_sharing(
    tmp_path: Path, pipelines: dict[str, list[str]], shared: list[str], expected: tuple[str, ...]
) -> None:
    files = {f"{name}.yaml": pipeline(name, 10, ["in", *rest]) for name, rest in pipelines.items()}
    fleet = load_fleet(write_fleet(tmp_path, files, {"shared": shared}))
    assert fleet.unit_names == expected


def test_a_stale_ingress_rate_is_a_missing_share(tmp_path: Path) -> None:
    config = three(tmp_path).unit("agent+rag").config
    staleness_s = config.constraints_for("rag/router").missing_data.staleness_s

    class Source:
        def observe(self, names: Any, now_s: float) -> dict[str, Observation]:
            at = {"rag/router": now_s - staleness_s - 1.0}
            return {n: Observation(n, at.get(n, now_s), demand_rps=1.0) for n in names}

    engine = Engine(config, metrics=Source(), actuator=RecordingActuator.for_config(config))
    record = next(r for r in engine.step(1000.0) if r.component == "embedder")
    assert record.demand_by_pipeline == {"agent": 4.0, "rag": None}  # 1 x 2 x 2 calls
    assert "demand_share" not in record.to_dict()


def test_capacity_sizes_one_unit_of_a_fleet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("t_seconds,requests\n" + "".join(f"{t},{2 + t % 3}\n" for t in range(300)))
    gpu = solo()
    gpu["pipeline"]["components"]["writer"]["gpus_per_replica"] = 1
    path = write_fleet(tmp_path, {"rag.yaml": rag(), "agent.yaml": agent(), "solo.yaml": gpu})
    base = ["capacity", str(path), "--trace", str(trace), "--gpus", "8", "--policy", "static-peak"]
    assert main(base) == 2
    assert f"{path}: --unit: the fleet has 2 units" in capsys.readouterr().err
    assert main([*base, "--unit", "nope"]) == 2
    assert "--unit: no unit or pipeline 'nope' (units: agent+rag, solo)" in capsys.readouterr().err
    assert main([*base, "--unit", "solo", "--out", str(tmp_path / "cap")]) == 0
    assert json.loads((tmp_path / "cap" / "capacity.json").read_text())


def test_the_example_fleet_runs_once_as_a_dry_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(EXAMPLE.parents[2])  # its trace path is relative to the repository
    journal = tmp_path / "journal.jsonl"
    assert main(["run", str(EXAMPLE), "--once", "--dry-run", "--journal", str(journal)]) == 0
    start = json.loads(journal.read_text().splitlines()[0])
    assert start["units"] == ["rag-qa+support-agent"]


def test_a_shared_components_policy_overrides_must_agree_and_local_ones_are_renamed(
    tmp_path: Path,
) -> None:
    hpa = {"name": "hpa", "params": {"components": {"router": {"tolerance": 0.2}}}}
    rag_file = _with(rag(), policies=[hpa])
    agent_file = _with(agent(), policies=[{"name": "hpa"}])
    config = (
        load_fleet(write_fleet(tmp_path, {"rag.yaml": rag_file, "agent.yaml": agent_file}))
        .units[0]
        .config
    )
    assert config.policies[0].params == {"components": {"rag/router": {"tolerance": 0.2}}}
    shared = {"name": "hpa", "params": {"components": {"llm": {"tolerance": 0.2}}}}
    other = tmp_path / "other"
    other.mkdir()
    path = write_fleet(
        other, {"rag.yaml": _with(rag(), policies=[shared]), "agent.yaml": agent_file}
    )
    with pytest.raises(ConfigError) as info:
        load_fleet(path)
    assert info.value.problems == [
        "policies[0].params.components.llm: shared component set differently by agent.yaml "
        "(agent) (None) and rag.yaml (rag) ({'tolerance': 0.2})"
    ]
