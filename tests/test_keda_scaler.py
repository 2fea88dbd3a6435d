"""KEDA mode: a real grpcio client speaking `externalscaler.proto` to `elastiscale run
--keda-listen`'s server, in process, with the run loop ticked on plain `now_s` values."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from elastiscale import registry
from elastiscale.adapters.memory import RecordingActuator
from elastiscale.clock import FakeClock
from elastiscale.config import load_config
from elastiscale.controllers.base import TickContext
from elastiscale.daemon.journal import Journal
from elastiscale.daemon.runner import Daemon, RunOptions
from elastiscale.decision import Proposal
from elastiscale.keda import externalscaler_pb2 as pb
from elastiscale.keda import externalscaler_pb2_grpc as pb_grpc
from elastiscale.observations import Observation

REPO = Path(__file__).resolve().parent.parent
_tags = itertools.count()


class Demand:
    """Per-component demand that a test sets; `ceil(load / capacity)` replicas (0 allowed)."""

    name = "keda-demand"

    def __init__(self) -> None:
        self.demand = {"router": 25.0, "llm": 75.0}

    def observe(self, components: Sequence[str], now_s: float) -> dict[str, Observation]:
        return {
            n: Observation(component=n, at_s=now_s, demand_rps=self.demand[n]) for n in components
        }

    def propose(self, ctx: TickContext) -> dict[str, Proposal]:
        out = {}
        for name in ctx.pipeline.order:
            capacity = ctx.pipeline.components[name].capacity_per_replica
            load = ctx.load(name) or 0.0
            out[name] = Proposal(self.name, math.ceil(load / capacity), "load")
        return out


class Scene:
    """A daemon in KEDA mode on 127.0.0.1 (free port) and a grpcio stub connected to it."""

    def __init__(self, tmp_path: Path, actuator: RecordingActuator | None = None) -> None:
        self.world = Demand()
        tag = next(_tags)
        registry.register("metric_source", f"keda-source-{tag}", lambda c, o: self.world)
        registry.register("policy", f"keda-policy-{tag}", lambda c, o: self.world)
        raw: dict[str, Any] = {
            "pipeline": {
                "name": "support-agent",
                "slo": {"latency_p95_s": 10},
                "components": {
                    "router": {
                        "ingress": True,
                        "capacity_per_replica": 10,
                        "service_time_s": 0.1,
                        "replicas": {"min": 0, "max": 20},
                    },
                    "llm": {
                        "capacity_per_replica": 10,
                        "service_time_s": 1,
                        "replicas": {"min": 0, "max": 50, "initial": 2},
                    },
                },
                "edges": [{"from": "router", "to": "llm", "fanout": 3}],
            },
            "policies": [f"keda-policy-{tag}"],
            "control": {"interval_s": 10},
            "metrics": {"type": f"keda-source-{tag}"},
            "daemon": {"journal_path": str(tmp_path / "journal.jsonl")},
        }
        if actuator is not None:
            registry.register("actuator", f"keda-actuator-{tag}", lambda c, o: actuator)
            raw["actuator"] = {"type": f"keda-actuator-{tag}"}
        self.journal_path = tmp_path / "journal.jsonl"
        path = tmp_path / "pipeline.yaml"
        path.write_text(yaml.safe_dump(raw))
        options = RunOptions(config_path=path, keda_listen="127.0.0.1:0")
        self.daemon = Daemon(load_config(path), options, clock=FakeClock(1000.0))
        self.daemon.start(serve_http=False)
        assert self.daemon.keda_server is not None
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.daemon.keda_server.port}")
        self.stub = pb_grpc.ExternalScalerStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.daemon.shutdown()

    def tick(self, now_s: float) -> None:
        self.daemon.tick(now_s)


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    s = Scene(tmp_path)
    yield s
    s.close()


def ref(**metadata: str) -> pb.ScaledObjectRef:
    return pb.ScaledObjectRef(name="llm-so", namespace="serving", scalerMetadata=metadata)


def metric(stub: Any, **metadata: str) -> pb.MetricValue:
    request = pb.GetMetricsRequest(scaledObjectRef=ref(**metadata), metricName="elastiscale-llm")
    response = stub.GetMetrics(request, timeout=5)
    assert len(response.metricValues) == 1
    value: pb.MetricValue = response.metricValues[0]
    return value


def test_metric_spec_names_the_component_and_its_target(scene: Scene) -> None:
    spec = scene.stub.GetMetricSpec(ref(component="llm"), timeout=5).metricSpecs
    assert [(s.metricName, s.targetSize, s.targetSizeFloat) for s in spec] == [
        ("elastiscale-llm", 1, 1.0)
    ]
    spec = scene.stub.GetMetricSpec(ref(component="llm", targetSize="0.5"), timeout=5)
    assert spec.metricSpecs[0].targetSizeFloat == 0.5


def test_before_the_first_tick_the_metric_is_unavailable_and_the_target_active(
    scene: Scene,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        metric(scene.stub, component="llm")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no decision yet" in caught.value.details()
    assert scene.stub.IsActive(ref(component="llm"), timeout=5).result is True


@pytest.mark.parametrize(
    ("llm_rps", "target", "replicas"),
    [(75.0, "1", 8), (75.0, "0.5", 8), (75.0, "100", 8), (5.0, "1", 1), (0.0, "1", 0)],
)
def test_the_metric_is_desired_times_target_and_active_is_desired_above_zero(
    tmp_path: Path, llm_rps: float, target: str, replicas: int
) -> None:
    scene = Scene(tmp_path)
    try:
        scene.world.demand["llm"] = llm_rps
        scene.tick(1000.0)
        value = metric(scene.stub, component="llm", targetSize=target)
        assert value.metricName == "elastiscale-llm"
        assert value.metricValueFloat == pytest.approx(replicas * float(target))
        assert value.metricValue == math.ceil(replicas * float(target))
        assert scene.stub.IsActive(ref(component="llm"), timeout=5).result is (replicas > 0)
    finally:
        scene.close()


def test_decisions_are_journaled_and_no_actuator_is_needed(scene: Scene) -> None:
    scene.tick(1000.0)
    scene.world.demand["llm"] = 150.0
    scene.tick(1010.0)
    assert metric(scene.stub, component="llm").metricValueFloat == 15.0
    decisions = [
        (e["component"], e["current_replicas"], e["desired_replicas"])
        for e in Journal(scene.journal_path).entries()
        if e["kind"] == "decision"
    ]
    # llm starts at its `initial` 2; the router at its min 0
    assert decisions == [("router", 0, 3), ("llm", 2, 8), ("llm", 8, 15)]


def test_a_configured_actuator_is_read_and_never_written(tmp_path: Path) -> None:
    platform = RecordingActuator({"router": 4, "llm": 6})
    scene = Scene(tmp_path, actuator=platform)
    try:
        scene.tick(1000.0)
        assert platform.calls == []
        assert metric(scene.stub, component="llm").metricValueFloat == 8.0
        snapshot = scene.daemon.status.snapshot
        assert snapshot is not None
        current = {r.component: r.current_replicas for r in snapshot.records}
        assert current == {"router": 4, "llm": 6}
    finally:
        scene.close()


def test_stream_is_active_pushes_each_change(scene: Scene) -> None:
    stream = scene.stub.StreamIsActive(ref(component="llm"), timeout=20)
    assert next(stream).result is True  # no decision yet: active
    scene.world.demand["llm"] = 0.0
    scene.tick(1000.0)
    assert next(stream).result is False
    scene.world.demand["llm"] = 30.0
    scene.tick(1010.0)
    assert next(stream).result is True
    stream.cancel()


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({}, "metadata.component: required"),
        ({"component": "lm"}, "metadata.component: unknown component 'lm' (components: llm,"),
        ({"component": "llm", "pipeline": "rag"}, "metadata.pipeline: 'rag' is not"),
        ({"component": "llm", "targetSize": "x"}, "metadata.targetSize: 'x' is not a number"),
        ({"component": "llm", "targetSize": "0"}, "metadata.targetSize: '0' must be a positive"),
    ],
)
def test_bad_metadata_is_refused_naming_the_key(
    scene: Scene, metadata: Mapping[str, str], message: str
) -> None:
    for call in (scene.stub.IsActive, scene.stub.GetMetricSpec):
        with pytest.raises(grpc.RpcError) as caught:
            call(ref(**metadata), timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details().startswith("ScaledObject serving/llm-so: " + message)


def _keda_quantity_milli(value: float) -> int:
    """KEDA turns a float metric or target into a milli-quantity, truncating."""
    return int(value * 1000)


@given(
    replicas=st.integers(min_value=0, max_value=2000),
    target=st.sampled_from(["1", "0.5", "0.1", "0.3", "2", "7.5", "100"]),
)
def test_keda_hpa_lands_exactly_on_the_decided_count(replicas: int, target: str) -> None:
    """HPA's AverageValue rule, ceil(value / target) on KEDA's milli-quantities, gives back
    the count elastiscale decided for every target a user may write."""
    value = replicas * float(target)
    target_milli = int(Decimal(target) * 1000)
    assert math.ceil(_keda_quantity_milli(value) / target_milli) == replicas


def test_the_committed_generated_code_matches_the_proto(tmp_path: Path) -> None:
    """The command in externalscaler.proto regenerates exactly the committed modules."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{REPO / 'src'}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            str(REPO / "src/elastiscale/keda/externalscaler.proto"),
        ],
        check=True,
    )
    for name in ("externalscaler_pb2.py", "externalscaler_pb2.pyi", "externalscaler_pb2_grpc.py"):
        fresh = (tmp_path / "elastiscale/keda" / name).read_text()
        assert fresh == (REPO / "src/elastiscale/keda" / name).read_text(), name


# --------------------------------------------------------------------------------------------
# examples/keda/ and the command line


def test_example_scaled_objects_match_the_example_pipeline() -> None:
    """Each component has one ScaledObject whose trigger the scaler accepts, with the same
    bounds as the pipeline, and an HPA behavior that adds no delay of its own."""
    from elastiscale.keda.board import DesiredReplicas
    from elastiscale.keda.scaler import ExternalScaler

    config = load_config(REPO / "examples/keda/pipeline.yaml")
    assert config.actuator is None
    docs = list(yaml.safe_load_all((REPO / "examples/keda/scaledobjects.yaml").read_text()))
    scaler = ExternalScaler(DesiredReplicas(config.pipeline.components), config.pipeline.name)
    seen = set()
    for doc in docs:
        assert doc["kind"] == "ScaledObject"
        spec = doc["spec"]
        (trigger,) = spec["triggers"]
        assert trigger["type"] in ("external", "external-push")
        meta = trigger["metadata"]
        assert scaler._metadata_problem(meta) is None
        bounds = config.pipeline.components[meta["component"]].replicas
        assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (bounds.min, bounds.max)
        behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 0
        seen.add(meta["component"])
    assert seen == set(config.pipeline.components)


def test_cli_refuses_a_bad_keda_address_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from elastiscale.cli import main

    code = main(["run", str(REPO / "examples/keda/pipeline.yaml"), "--keda-listen", "nowhere"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"{REPO / 'examples/keda/pipeline.yaml'}: --keda-listen: 'nowhere' is not "
        "host:port (e.g. 127.0.0.1:9464)"
    ]


def test_without_grpcio_the_error_names_the_keda_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from elastiscale.extras import MissingExtraError
    from elastiscale.keda.board import DesiredReplicas
    from elastiscale.keda.server import KedaServer

    monkeypatch.setitem(sys.modules, "grpc", None)
    with pytest.raises(MissingExtraError) as caught:
        KedaServer("127.0.0.1:0", DesiredReplicas(["llm"]), "p")
    assert str(caught.value) == (
        "elastiscale run --keda-listen needs the optional extra 'keda' (module 'grpc' is not "
        "installed): pip install 'elastiscale[keda]'"
    )
