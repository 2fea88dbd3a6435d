"""Start-up times measured from what the platform actuators report over time: Ray Serve
replica states (RUNNING vs target, from the dashboard's REST API fake) and SageMaker copy
counts (current vs desired, from the wire-level fake), each read by the real actuator on a
fake clock and turned into start-up samples by `learning.ReadinessTracker`; and Ray Serve's
exact replica start times (`start_time_s`) with their RUNNING transitions
(`adapters.ray.startups`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from elastiscale.adapters.ray.actuator import RayServeActuator
from elastiscale.adapters.ray.startups import ReplicaStartups
from elastiscale.clock import FakeClock
from elastiscale.config import Config, validate_mapping
from elastiscale.learning import ReadinessTracker, StartupEstimator
from elastiscale.observations import ReplicaState
from elastiscale.testing.ray_serve import FakeServeDashboard

CONFIG: Config = validate_mapping(
    {
        "pipeline": {
            "name": "rag",
            "slo": {"latency_p95_s": 20},
            "components": {
                "router": {
                    "ingress": True,
                    "capacity_per_replica": 50,
                    "service_time_s": 0.02,
                    "replicas": {"min": 1, "max": 4},
                },
                "llm": {
                    "capacity_per_replica": 2,
                    "service_time_s": 2,
                    "startup_s": 120,
                    "replicas": {"min": 0, "max": 8},
                },
            },
            "edges": [{"from": "router", "to": "llm", "fanout": 2}],
        }
    }
)


def measure(
    read: Callable[[], ReplicaState],
    scale: Callable[[int], object],
    settle: Callable[[], None],
    clock: FakeClock,
    settle_after_s: float,
) -> list[float]:
    """Look every 15 s; ask for 3 replicas at the second tick; the platform settles after
    `settle_after_s`. Returns the start-ups the tracker measured."""
    tracker = ReadinessTracker()
    out: list[float] = []
    for k in range(40):
        now_s = 15.0 * k
        clock.set(now_s)
        if k >= 1 and now_s >= 15.0 + settle_after_s and not out:
            settle()
        state = read()
        out.extend(tracker.look(now_s, state.desired, state.ready))
        if k == 1:
            scale(3)
    return out


@pytest.fixture
def dashboard() -> Iterator[FakeServeDashboard]:
    with FakeServeDashboard() as served:
        served.add_application("ext", {"router": 1, "llm": 1}, external_scaler=True)
        yield served


def test_ray_serve_replica_states(dashboard: FakeServeDashboard) -> None:
    clock = FakeClock(0.0)
    actuator = RayServeActuator(
        CONFIG,
        {"address": dashboard.url, "application": "ext",
         "targets": {"router": "router", "llm": "llm"}},
        clock=clock,
    )  # fmt: skip
    got = measure(
        lambda: actuator.read(["llm"])["llm"],
        lambda n: actuator.scale("llm", n),
        dashboard.settle,
        clock,
        settle_after_s=300.0,
    )
    # Asked at 15 s, RUNNING at the look at 315 s (seen between 300 and 315): 292.5 s each.
    assert got == pytest.approx([292.5, 292.5])
    estimate = StartupEstimator(120.0)
    for sample in got:
        estimate.add(sample)
    assert estimate.value_s == pytest.approx(292.5)


def test_sagemaker_copy_counts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("boto3")
    from elastiscale.adapters.sagemaker.actuator import SageMakerActuator
    from elastiscale.testing.sagemaker import FakeSageMaker

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    with FakeSageMaker(region="us-east-1") as fake:
        fake.add_endpoint("rag-router", {"AllTraffic": 1})
        fake.add_inference_component("rag-llm-ic", endpoint="rag-llm", copies=1)
        clock = FakeClock(0.0)
        actuator = SageMakerActuator(
            CONFIG,
            {"region": "us-east-1", "endpoint_url": fake.url,
             "targets": {"router": {"endpoint": "rag-router"},
                         "llm": {"inference_component": "rag-llm-ic"}}},
            clock=clock,
        )  # fmt: skip
        got = measure(
            lambda: actuator.read(["llm"])["llm"],
            lambda n: actuator.scale("llm", n),
            fake.finish_updates,
            clock,
            settle_after_s=180.0,
        )
    assert got == pytest.approx([172.5, 172.5])


def test_ray_serve_start_times_are_exact_and_ready_times_to_half_a_look() -> None:
    """With `measure_startup: true` the actuator reads each replica's `start_time_s` and its
    state: asked at 15 s, started by Serve at 20 s, RUNNING by the look at 315 s and still
    STARTING at the look at 300 s: (300 + 315) / 2 - 20 = 287.5 s, where the counts alone say
    292.5 s (they place the start at the look before the request)."""
    clock = FakeClock(0.0)
    serve_s = [0.0]  # the Ray head's clock, as Serve's controller stamps a replica's start
    with FakeServeDashboard(clock=lambda: serve_s[0]) as dashboard:
        dashboard.add_application("ext", {"router": 1, "llm": 1}, external_scaler=True)
        actuator = RayServeActuator(
            CONFIG,
            {"address": dashboard.url, "application": "ext", "measure_startup": True,
             "targets": {"router": "router", "llm": "llm"}},
            clock=clock,
        )  # fmt: skip
        got: list[float] = []
        for k in range(30):
            now_s = 15.0 * k
            clock.set(now_s)
            serve_s[0] = now_s
            if now_s == 315.0:
                dashboard.settle()
            got.extend(actuator.startups(["llm", "router"], now_s=now_s).get("llm", []))
            if k == 1:
                serve_s[0] = 20.0  # Serve's controller starts the actors 5 s after the call
                assert actuator.scale("llm", 3).ok
        assert actuator.startups(["llm"]) == {}  # no time, no look
    assert got == pytest.approx([287.5, 287.5])


def _replica(rid: str, state: str, start_s: float | None) -> dict[str, object]:
    return {"replica_id": rid, "state": state, "start_time_s": start_s}


@pytest.mark.parametrize(
    ("looks", "expected"),
    [
        # seen STARTING at 15 and 30, RUNNING at 45: ready at 37.5, started at 10
        (
            [
                (0, []),
                (15, [_replica("a", "STARTING", 10)]),
                (30, [_replica("a", "STARTING", 10)]),
                (45, [_replica("a", "RUNNING", 10)]),
            ],
            [27.5],
        ),
        # started and RUNNING between two looks: ready between its start (20) and 30
        ([(15, []), (30, [_replica("a", "RUNNING", 20)])], [5.0]),
        # RUNNING at the first look: history, no sample; counted once
        ([(15, [_replica("a", "RUNNING", 1)]), (30, [_replica("a", "RUNNING", 1)])], []),
        # was there and not starting (UPDATING, then RUNNING): not a start-up
        ([(15, [_replica("a", "UPDATING", 1)]), (30, [_replica("a", "RUNNING", 1)])], []),
        # stopped before it ran: nothing; a missing or bad start time: nothing
        ([(15, []), (30, [_replica("a", "STARTING", 20)]), (45, [])], []),
        (
            [
                (15, []),
                (30, [_replica("a", "STARTING", None)]),
                (45, [_replica("a", "RUNNING", None)]),
            ],
            [],
        ),
        ([(15, []), (30, [_replica("a", "RUNNING", float("nan"))])], []),
        # a look not after the last one says nothing
        ([(15, []), (15, [_replica("a", "RUNNING", 10)])], []),
    ],
)
def test_replica_startups(
    looks: list[tuple[float, list[dict[str, object]]]], expected: list[float]
) -> None:
    tracker = ReplicaStartups()
    got: list[float] = []
    for now_s, replicas in looks:
        got.extend(tracker.look(now_s, replicas))
    assert got == pytest.approx(expected)


@pytest.mark.parametrize(
    "target",
    [{"endpoint": "rag-llm"}, {"inference_component": "rag-llm-ic"}],
    ids=["variant", "inference-component"],
)
def test_sagemaker_start_is_the_updates_own_time(
    target: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With `measure_startup: true` a start is the update's own time as SageMaker says it (a
    variant's `Updating` StartTime, an inference component's LastModifiedTime while busy):
    asked at 15 s and accepted at 17 s, finished between the looks at 300 and 315 s:
    307.5 - 17 = 290.5 s for each new instance or copy (the counts alone say 292.5 s)."""
    pytest.importorskip("boto3")
    from elastiscale.adapters.sagemaker.actuator import SageMakerActuator
    from elastiscale.testing.sagemaker import FakeSageMaker

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    aws_s = [0.0]  # SageMaker's clock
    with FakeSageMaker(region="us-east-1", clock=lambda: aws_s[0]) as fake:
        fake.add_endpoint("rag-router", {"AllTraffic": 1})
        fake.add_endpoint("rag-llm", {"AllTraffic": 1})
        fake.add_inference_component("rag-llm-ic", endpoint="rag-llm", copies=1)
        clock = FakeClock(0.0)
        actuator = SageMakerActuator(
            CONFIG,
            {"region": "us-east-1", "endpoint_url": fake.url, "measure_startup": True,
             "targets": {"router": {"endpoint": "rag-router"}, "llm": target}},
            clock=clock,
        )  # fmt: skip
        got: list[float] = []
        for k in range(30):
            now_s = 15.0 * k
            clock.set(now_s)
            aws_s[0] = now_s
            if now_s == 315.0:
                fake.finish_updates()
            got.extend(actuator.startups(["llm"], now_s=now_s).get("llm", []))
            if k == 1:
                aws_s[0] = 17.0
                assert actuator.scale("llm", 3).ok
    assert got == pytest.approx([290.5, 290.5])
