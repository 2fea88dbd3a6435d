"""Ray Serve: the REST actuator and the in-Serve application-level policy.

Integration tests share one local Ray cluster (`ray.init(num_cpus=2)`, token authentication on,
replicas of 0.1 CPU) with three applications of `examples/backends/ray_serve_app.py` deployed
through the dashboard's REST API:

- `ext`: `external_scaler_enabled: true`, scaled by the actuator's external-scaler mode;
- `decl`: plain config, scaled by the actuator's declarative mode;
- `auto`: elastiscale's `ElastiscaleApplicationPolicy` as the application's autoscaling policy.

The cluster is started once per test session (`serve_cluster`, also used by
`test_three_backends.py`) and shut down at its end. Without Ray the integration tests skip,
unless ELASTISCALE_REQUIRE_INTEGRATION is set (as in CI): then they fail.

Unit tests of the pure pieces (status mapping, convergence, declarative config, token lookup,
the policy on hand-made contexts) need no cluster.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import secrets
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale import Failure, FakeClock, Proposal, ReplicaState, TickContext
from elastiscale.adapters.contract import OtherAutoscalerError
from elastiscale.adapters.ray.actuator import (
    RayServeActuator,
    RayServeParams,
    converged,
    declarative_config,
    read_token,
)
from elastiscale.adapters.ray.client import failure_for_status
from elastiscale.adapters.ray.policy import ElastiscaleApplicationPolicy, observe_context
from elastiscale.config import Config, validate_mapping
from elastiscale.errors import ActuatorError, ConfigError
from elastiscale.testing.prometheus import free_port
from elastiscale.testing.ray_serve import RAY_DEFAULT_PORTS, FakeServeDashboard

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "backends"
TESTS = Path(__file__).resolve().parent
REQUIRE_INTEGRATION = bool(os.environ.get("ELASTISCALE_REQUIRE_INTEGRATION"))

#: What each router replica of the `auto` application reports as demand on top of real
#: arrivals: 14 requests/s through the pipeline below gives llm ceil(14 x 2 / (10 x 0.7)) = 4.
AUTO_EXTRA_DEMAND_RPS = 14.0


def pipeline_dict(**extra: Any) -> dict[str, Any]:
    """router -> retriever -> llm (fan-out 2): the pipeline of examples/backends."""
    return {
        "pipeline": {
            "name": "rag",
            "slo": {"latency_p95_s": 10},
            "components": {
                "router": {
                    "ingress": True,
                    "capacity_per_replica": 50,
                    "service_time_s": 0.01,
                    "replicas": {"min": 1, "max": 2},
                },
                "retriever": {
                    "capacity_per_replica": 20,
                    "service_time_s": 0.05,
                    "replicas": {"min": 1, "max": 4},
                },
                "llm": {
                    "capacity_per_replica": 10,
                    "service_time_s": 0.2,
                    "replicas": {"min": 1, "max": 4},
                },
            },
            "edges": [
                {"from": "router", "to": "retriever", "fanout": 1},
                {"from": "retriever", "to": "llm", "fanout": 2},
            ],
        },
        **extra,
    }


CONFIG: Config = validate_mapping(pipeline_dict())
SAME_NAMES = {"router": "router", "retriever": "retriever", "llm": "llm"}


class DemandPolicy:
    """Feed-forward sizing in a few lines: observed ingress demand, carried down the graph by
    the configured fan-outs, divided by capacity at the target utilization. Loaded by name
    (`test_ray_serve:DemandPolicy`) inside the Serve controller, too."""

    name = "demand"

    def __init__(self, config: Any = None, params: Any = None) -> None:
        pass

    def propose(self, ctx: TickContext) -> dict[str, Proposal]:
        ingress = {name: ctx.load(name) for name in ctx.pipeline.ingress}
        known = {name: rps for name, rps in ingress.items() if rps is not None}
        if len(known) != len(ingress):
            return {}
        out = {}
        for name, demand_rps in ctx.pipeline.propagate(known).items():
            spec = ctx.pipeline.components[name]
            per_replica = spec.capacity_per_replica * ctx.config.pipeline.utilization_target(name)
            replicas = math.ceil(demand_rps / per_replica - 1e-9)
            out[name] = Proposal(self.name, replicas, f"{demand_rps:.1f} rps")
        return out


# --------------------------------------------------------------------------------------------
# Pure pieces


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (404, '{"error": "Application or Deployment not found"}', Failure.NOT_FOUND),
        (412, '{"error": "Deployment is deleted"}', Failure.NOT_FOUND),
        (412, '{"error": "external_scaler_enabled=false"}', Failure.FORBIDDEN),
        (401, "Unauthorized: Missing authentication token", Failure.FORBIDDEN),
        (403, "Forbidden: Invalid authentication token", Failure.FORBIDDEN),
        (400, '{"error": "Invalid request body"}', Failure.INVALID),
        (409, "", Failure.CONFLICT),
        (429, "", Failure.THROTTLED),
        (503, '{"error": "Serve controller is not available"}', Failure.UNAVAILABLE),
        (500, "", Failure.UNAVAILABLE),
    ],
)
def test_serve_status_in_the_engines_words(status: int, body: str, expected: Failure) -> None:
    assert failure_for_status(status, body) is expected


def _details(status: str, target: int, states: list[str]) -> dict[str, Any]:
    return {
        "status": status,
        "target_num_replicas": target,
        "replicas": [{"state": s} for s in states],
    }


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        (_details("HEALTHY", 2, ["RUNNING", "RUNNING"]), True),
        (_details("HEALTHY", 0, []), True),
        (_details("HEALTHY", 3, ["RUNNING", "STARTING", "STARTING"]), False),
        (_details("HEALTHY", 1, ["RUNNING", "STOPPING"]), False),
        (_details("UPSCALING", 2, ["RUNNING", "RUNNING"]), False),
        (_details("UPDATING", 1, ["RUNNING"]), False),
        (_details("HEALTHY", 2, ["RUNNING"]), False),  # a replica not yet even listed
    ],
)
def test_converged(details: dict[str, Any], expected: bool) -> None:
    assert converged(details) is expected


def test_declarative_config_changes_one_deployment_and_keeps_the_rest() -> None:
    instance = {
        "proxy_location": "EveryNode",
        "http_options": {"host": "127.0.0.1", "port": 8123},
        "applications": {
            "a": {"deployed_app_config": {"name": "a", "import_path": "m:a"}},
            "b": {
                "deployed_app_config": {
                    "name": "b",
                    "import_path": "m:b",
                    "deployments": [{"name": "llm", "num_replicas": 1, "max_ongoing_requests": 3}],
                }
            },
        },
    }
    config = declarative_config(instance, "b", "llm", 4)
    assert config["http_options"] == {"host": "127.0.0.1", "port": 8123}
    assert config["applications"][0] == {"name": "a", "import_path": "m:a"}
    assert config["applications"][1]["deployments"] == [
        {"name": "llm", "num_replicas": 4, "max_ongoing_requests": 3}
    ]
    added = declarative_config(instance, "a", "router", 2)
    assert added["applications"][0]["deployments"] == [{"name": "router", "num_replicas": 2}]
    assert "deployments" not in instance["applications"]["a"]["deployed_app_config"]  # a copy


def test_declarative_config_refuses_to_delete_imperative_apps() -> None:
    from elastiscale.adapters.ray.actuator import ServeRequestError

    instance = {"applications": {"a": {"deployed_app_config": None}}}
    with pytest.raises(ServeRequestError, match="would delete it") as info:
        declarative_config(instance, "a", "llm", 2)
    assert info.value.failure is Failure.INVALID


def test_token_lookup_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("from-home\n")
    (tmp_path / "ray-path").write_text("from-ray-path")
    (tmp_path / "configured").write_text("from-file")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.delenv("MY_TOKEN", raising=False)
    params = RayServeParams.model_validate({"targets": SAME_NAMES, "auth_token_env": "MY_TOKEN"})
    assert read_token(params) == "from-home"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "ray-path"))
    assert read_token(params) == "from-ray-path"
    with_file = params.model_copy(update={"auth_token_file": str(tmp_path / "configured")})
    assert read_token(with_file) == "from-file"
    monkeypatch.setenv("MY_TOKEN", "from-env")
    assert read_token(with_file) == "from-env"
    missing = params.model_copy(update={"auth_token_file": str(tmp_path / "absent")})
    monkeypatch.delenv("MY_TOKEN")
    with pytest.raises(ActuatorError, match=r"actuator\.auth_token_file: cannot read"):
        read_token(missing)


@pytest.mark.parametrize(
    ("actuator", "expected"),
    [
        ({"targets": SAME_NAMES, "adress": "x"}, "actuator.adress: unknown key"),
        (
            {"targets": SAME_NAMES, "address": "127.0.0.1:8265"},
            "actuator.address: '127.0.0.1:8265' is not an http",
        ),
        ({"targets": SAME_NAMES, "mode": "push"}, "actuator.mode: Input should be"),
        ({"targets": {**SAME_NAMES, "llm": "a/b/c"}}, "is not 'deployment' or 'application/dep"),
        ({"targets": {"router": "router", "llm": "llm"}}, "no target for component 'retriever'"),
        ({"targets": {**SAME_NAMES, "ranker": "r"}}, "unknown component 'ranker'"),
        ({"targets": {**SAME_NAMES, "llm": {"name": "x"}}}, "actuator.targets.llm.name: unknown"),
    ],
)
def test_validate_names_the_bad_field(actuator: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_mapping(pipeline_dict(actuator={"type": "ray-serve", **actuator}))
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_target_shorthands() -> None:
    params = RayServeParams.model_validate(
        {
            "application": "rag",
            "targets": {"router": "r", "retriever": "search/ret", "llm": {"deployment": "vllm"}},
        }
    )
    assert params.target_of("router") == ("rag", "r")
    assert params.target_of("retriever") == ("search", "ret")
    assert params.target_of("llm") == ("rag", "vllm")


def test_unreachable_dashboard() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = {"address": f"http://127.0.0.1:{port}", "targets": SAME_NAMES, "timeout_s": 1}
    with pytest.raises(ActuatorError, match="cannot read applications"):
        RayServeActuator(CONFIG, options)
    actuator = RayServeActuator(CONFIG, {**options, "check_on_start": False})
    assert actuator.scale("llm", 2).failure is Failure.UNAVAILABLE
    with pytest.raises(ActuatorError):
        actuator.read(["llm"])


# --------------------------------------------------------------------------------------------
# The actuator against the in-package fake dashboard (no Ray needed)


@pytest.fixture
def dashboard() -> Iterator[FakeServeDashboard]:
    with FakeServeDashboard(token="s3cret") as served:
        served.add_application("ext", dict.fromkeys(SAME_NAMES, 1), external_scaler=True)
        served.add_application("decl", dict.fromkeys(SAME_NAMES, 1))
        yield served


def fake_actuator(
    dashboard: FakeServeDashboard, clock: FakeClock | None = None, **options: Any
) -> RayServeActuator:
    base = {"address": dashboard.url, "application": "ext", "targets": SAME_NAMES}
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_AUTH_TOKEN", "s3cret")
        return RayServeActuator(CONFIG, {**base, **options}, clock=clock)


def test_one_change_at_a_time_and_no_write_for_the_current_count(
    dashboard: FakeServeDashboard,
) -> None:
    clock = FakeClock(0.0)
    actuator = fake_actuator(dashboard, clock, settle_timeout_s=60)
    assert actuator.scale("llm", 1).ok and dashboard.writes() == []  # already 1: nothing sent
    assert actuator.scale("llm", 3).ok and dashboard.target("ext", "llm") == 3
    held = actuator.scale("llm", 2)  # two replicas still STARTING
    assert held.failure is Failure.IN_PROGRESS and "written 0 s ago" in held.message
    assert actuator.read(["llm"])["llm"] == ReplicaState(3, 1)
    clock.advance(30.0)
    dashboard.settle()
    assert actuator.scale("llm", 2).ok and dashboard.target("ext", "llm") == 2
    # A change that never converges holds further ones for settle_timeout_s, then no longer.
    assert actuator.scale("llm", 4).failure is Failure.IN_PROGRESS
    clock.advance(60.0)
    assert actuator.scale("llm", 4).ok
    assert actuator.scale("router", 2).ok  # another deployment is not held by llm's change
    assert [(w.path.split("/")[-2], w.body) for w in dashboard.writes()] == [
        ("llm", {"target_num_replicas": 3}),
        ("llm", {"target_num_replicas": 2}),
        ("llm", {"target_num_replicas": 4}),
        ("router", {"target_num_replicas": 2}),
    ]


@pytest.mark.parametrize(
    ("inject", "expected", "in_message"),
    [
        ({"method": "POST", "status": 503}, Failure.UNAVAILABLE, "HTTP 503"),
        ({"method": "GET", "status": 500}, Failure.UNAVAILABLE, "HTTP 500"),
        ({"method": "POST", "status": 429}, Failure.THROTTLED, "HTTP 429"),
        (
            {"method": "POST", "status": 412, "body": '{"error": "Deployment is deleted"}'},
            Failure.NOT_FOUND,
            "Deployment is deleted",
        ),
    ],
)
def test_dashboard_errors_in_the_engines_words(
    dashboard: FakeServeDashboard, inject: dict[str, Any], expected: Failure, in_message: str
) -> None:
    actuator = fake_actuator(dashboard)
    dashboard.fail(**inject)
    result = actuator.scale("llm", 2)
    assert result.failure is expected and in_message in result.message
    assert actuator.scale("llm", 2).ok  # the fault was one request


def test_dashboard_refusals(dashboard: FakeServeDashboard) -> None:
    actuator = fake_actuator(dashboard)
    actuator.client.token = "wrong"
    assert actuator.scale("llm", 2).failure is Failure.FORBIDDEN
    actuator.client.token = None
    assert actuator.scale("llm", 2).failure is Failure.FORBIDDEN
    other = fake_actuator(
        dashboard, check_on_start=False, targets={**SAME_NAMES, "llm": "decl/llm"}
    )
    refused = other.scale("llm", 2)
    assert refused.failure is Failure.FORBIDDEN and "external_scaler_enabled" in refused.message
    missing = fake_actuator(dashboard, check_on_start=False, targets={**SAME_NAMES, "llm": "x"})
    assert missing.scale("llm", 2).failure is Failure.NOT_FOUND
    assert [w.path for w in dashboard.writes()] == [
        "/api/v1/applications/decl/deployments/llm/scale"
    ]
    assert dashboard.target("ext", "llm") == dashboard.target("decl", "llm") == 1


def test_slow_dashboard_is_unavailable(dashboard: FakeServeDashboard) -> None:
    actuator = fake_actuator(dashboard, timeout_s=0.2)
    dashboard.slow(1.0)
    started = time.monotonic()
    assert actuator.scale("llm", 2).failure is Failure.UNAVAILABLE
    assert time.monotonic() - started < 0.9
    dashboard.slow(0.0)


def test_declarative_mode_on_the_fake(dashboard: FakeServeDashboard) -> None:
    actuator = fake_actuator(dashboard, mode="declarative", application="decl")
    assert actuator.scale("retriever", 3).ok
    (put,) = dashboard.writes()
    assert put.method == "PUT" and [a["name"] for a in put.body["applications"]] == ["ext", "decl"]
    assert dashboard.target("decl", "retriever") == 3 and dashboard.target("ext", "llm") == 1
    dashboard.add_application("adhoc", {"llm": 1}, declarative=False)
    refused = actuator.scale("llm", 2)
    assert refused.failure is Failure.INVALID and "would delete it" in refused.message
    with pytest.raises(ActuatorError, match="deployed from a config; not so: adhoc"):
        fake_actuator(dashboard, mode="declarative", application="decl")


def test_declarative_mode_refuses_serves_own_autoscaling(
    dashboard: FakeServeDashboard, caplog: pytest.LogCaptureFixture
) -> None:
    dashboard.add_application("auto", dict.fromkeys(SAME_NAMES, 1), autoscaling=["llm"])
    with pytest.raises(OtherAutoscalerError, match=r"targets\.llm \(auto/llm\): Serve autosc"):
        fake_actuator(dashboard, mode="declarative", application="auto")
    with caplog.at_level("WARNING", logger="elastiscale.adapters.ray_serve"):
        fake_actuator(
            dashboard, mode="declarative", application="auto", allow_other_autoscalers=True
        )
    assert "scaling it anyway" in caplog.text


# --------------------------------------------------------------------------------------------
# The policy on hand-made contexts (no Ray needed)


def context(
    name: str,
    *,
    ready: int = 1,
    target: int = 1,
    in_flight: float | None = 0.0,
    queued: float | None = 0.0,
    metrics: Mapping[str, Mapping[str, float]] | None = None,
    now_s: float | None = 100.0,
) -> SimpleNamespace:
    """What Serve's `AutoscalingContext` offers, as far as the policy reads it."""
    return SimpleNamespace(
        deployment_name=name,
        current_num_replicas=ready,
        target_num_replicas=target,
        total_num_requests=in_flight,
        total_queued_requests=queued,
        aggregated_metrics=metrics or {},
        current_time=now_s,
    )


@pytest.mark.parametrize(
    ("ctx", "expected", "missing"),
    [
        (
            context("llm", metrics={"demand_rps": {"r1": 3.0, "r2": 4.5}}, in_flight=2),
            {"demand_rps": 7.5, "in_flight": 2.0, "ready_replicas": 1},
            {"tokens_per_s"},
        ),
        # No reported demand: Little's law, 1.0 in flight / 0.2 s = 5 requests/s.
        (context("llm", in_flight=1.0), {"demand_rps": 5.0}, {"tokens_per_s"}),
        (
            context("llm", in_flight=None, queued=None),
            {"desired_replicas": 1},
            {"demand_rps", "in_flight", "queue_length"},
        ),
        (
            context("llm", metrics={"tokens_per_s": {"r1": 900.0}, "demand_rps": {"r1": math.nan}}),
            {"tokens_per_s": 900.0, "demand_rps": 0.0},
            set(),
        ),
    ],
)
def test_observe_context(ctx: Any, expected: dict[str, float], missing: set[str]) -> None:
    obs = observe_context("llm", ctx, CONFIG.pipeline.components["llm"], now_s=100.0)
    for signal, value in expected.items():
        assert obs.value(signal) == pytest.approx(value), signal
    assert missing <= set(obs.missing)
    assert obs.at_s == 100.0


def in_process_policy(interval_s: float = 1.0) -> ElastiscaleApplicationPolicy:
    return ElastiscaleApplicationPolicy(
        pipeline_dict(policies=[f"{__name__}:DemandPolicy"], control={"interval_s": interval_s}),
        deployments={"llm": "vllm"},
    )


def app_contexts(
    router_rps: float, now_s: float | None, llm_target: int = 1
) -> dict[str, SimpleNamespace]:
    return {
        "id-router": context("router", metrics={"demand_rps": {"r": router_rps}}, now_s=now_s),
        "id-retriever": context("retriever", now_s=now_s),
        "id-vllm": context("vllm", target=llm_target, now_s=now_s),
        "id-other": context("unrelated", now_s=now_s),
    }


def test_policy_scales_the_whole_graph_from_ingress_demand() -> None:
    policy = in_process_policy()
    decisions, state = policy(app_contexts(router_rps=14.0, now_s=100.0))
    # 14 rps: router ceil(14 / 35) = 1, retriever ceil(14 / 14) = 1, llm ceil(28 / 7) = 4.
    assert decisions == {"id-router": 1, "id-retriever": 1, "id-vllm": 4}
    assert set(state) == {"id-router", "id-retriever", "id-vllm", "id-other"}
    assert [r.outcome for r in policy.last_records] == ["unchanged", "unchanged", "scaled"]


def test_policy_runs_once_per_interval_and_repeats_its_decision() -> None:
    policy = in_process_policy(interval_s=15.0)
    policy(app_contexts(router_rps=14.0, now_s=100.0))
    # 0.1 s later Serve asks again: no new tick, the same wish (even though demand fell).
    decisions, _ = policy(app_contexts(router_rps=0.0, now_s=100.1, llm_target=4))
    assert decisions["id-vllm"] == 4 and policy.last_step_s == 100.0
    decisions, _ = policy(app_contexts(router_rps=0.0, now_s=115.0, llm_target=4))
    assert decisions["id-vllm"] == 1 and policy.last_step_s == 115.0


def test_policy_waits_until_the_application_has_started() -> None:
    """While Serve starts the replicas of a fresh deploy (ready below target) nothing is
    decided, however idle it looks; once every deployment has run its target, the engine ticks."""
    policy = in_process_policy()
    starting = app_contexts(router_rps=0.0, now_s=100.0)
    starting["id-vllm"] = context("vllm", ready=1, target=3, now_s=100.0)
    decisions, _ = policy(starting)
    assert decisions == {} and policy.last_step_s is None and not policy.started
    started = app_contexts(router_rps=0.0, now_s=101.0, llm_target=3)
    started["id-vllm"] = context("vllm", ready=3, target=3, now_s=101.0)
    decisions, _ = policy(started)
    assert policy.started and policy.last_step_s == 101.0 and "id-vllm" in decisions


def test_policy_without_time_changes_nothing() -> None:
    decisions, state = in_process_policy()(app_contexts(router_rps=14.0, now_s=None))
    assert decisions == {} and len(state) == 4


def test_policy_never_raises_into_serve() -> None:
    class Broken(SimpleNamespace):
        @property
        def total_num_requests(self) -> float:
            raise RuntimeError("metrics store gone")

    contexts: dict[str, Any] = app_contexts(router_rps=14.0, now_s=100.0)
    fields = {k: v for k, v in vars(contexts["id-router"]).items() if k != "total_num_requests"}
    contexts["id-router"] = Broken(**fields)
    decisions, _ = in_process_policy()(contexts)
    assert decisions == {}


def test_policy_refuses_unknown_component_mapping() -> None:
    with pytest.raises(ConfigError, match=r"policy_kwargs\.deployments\.rerank"):
        ElastiscaleApplicationPolicy(pipeline_dict(), deployments={"rerank": "x"})


@settings(max_examples=40, deadline=None)
@given(
    router_rps=st.one_of(st.none(), st.floats(min_value=0, max_value=1e4)),
    targets=st.tuples(*[st.integers(min_value=0, max_value=10)] * 3),
)
def test_policy_decisions_stay_within_bounds(
    router_rps: float | None, targets: tuple[int, int, int]
) -> None:
    policy = in_process_policy()
    metrics = {} if router_rps is None else {"demand_rps": {"r": router_rps}}
    contexts = {
        "r": context("router", target=targets[0], metrics=metrics, in_flight=None),
        "s": context("retriever", target=targets[1]),
        "l": context("vllm", target=targets[2]),
    }
    decisions, _ = policy(contexts)
    bounds = {"r": (1, 2), "s": (1, 4), "l": (1, 4)}
    for key, replicas in decisions.items():
        low, high = bounds[key]
        current = contexts[key].target_num_replicas
        if router_rps is None:
            # No ingress data: never below the current count (then clamped into bounds).
            assert replicas >= min(max(current, low), high)
        assert low <= replicas <= high


# --------------------------------------------------------------------------------------------
# One Ray cluster for the session


@dataclass
class ServeCluster:
    """A local Ray cluster with Serve, its dashboard and the test applications."""

    dashboard_url: str
    token_file: Path
    http_port: int
    deployed: frozenset[str] = frozenset()

    def ensure(self, apps: Collection[str]) -> None:
        """Deploy the named test applications (keeping those already there) and wait until
        they run."""
        wanted = self.deployed | set(apps)
        if wanted == self.deployed:
            return
        self.request("PUT", "/api/serve/applications/", serve_config(self.http_port, wanted))

        def running() -> bool:
            found = self.request("GET", "/api/serve/applications/")["applications"]
            return all(found.get(a, {}).get("status") == "RUNNING" for a in wanted)

        self.wait_until(f"applications {sorted(wanted)} to run", running, timeout_s=120)
        self.deployed = frozenset(wanted)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        token = self.token_file.read_text().strip()
        req = urllib.request.Request(
            self.dashboard_url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read().decode()
        return json.loads(text) if text.strip() else None

    def deployments(self, app: str) -> dict[str, Any]:
        apps = self.request("GET", "/api/serve/applications/")["applications"]
        found: dict[str, Any] = apps.get(app, {}).get("deployments", {})
        return found

    def wait_until(self, what: str, predicate: Callable[[], bool], timeout_s: float = 40.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
            time.sleep(0.2)

    def counts(self, app: str) -> dict[str, tuple[int, int]]:
        """(target, running) of every deployment of `app`."""
        return {
            name: (
                d["target_num_replicas"],
                sum(1 for r in d["replicas"] if r["state"] == "RUNNING"),
            )
            for name, d in self.deployments(app).items()
        }

    def settle(self, app: str, want: Mapping[str, int], timeout_s: float = 40.0) -> None:
        """Wait until every named deployment of `app` runs exactly `want` replicas."""

        def done() -> bool:
            details = self.deployments(app)
            return all(
                name in details
                and details[name]["target_num_replicas"] == n
                and converged(details[name])
                for name, n in want.items()
            )

        self.wait_until(f"{app} to run {dict(want)}", done, timeout_s)


def example_app(file: str, **changes: Any) -> dict[str, Any]:
    """The application of one of the example Serve configs, with `changes` laid over it."""
    doc = yaml.safe_load((EXAMPLES / file).read_text(encoding="utf-8"))
    (app,) = doc["applications"]
    return {**app, **changes}


ALL_APPS = ("ext", "decl", "auto")


def serve_config(http_port: int, apps: Collection[str] = ALL_APPS) -> dict[str, Any]:
    """The named applications of the Ray tests, for one PUT: the example Serve configs under
    other names, the policy's one fed a test pipeline and a test policy, with short metric
    windows."""
    policy_app = example_app("serve_app_policy.yaml", name="auto", route_prefix="/auto")
    policy_app["import_path"] = "ray_serve_app:build"
    policy_app["args"] = {"extra_demand_rps": AUTO_EXTRA_DEMAND_RPS}
    policy_app["autoscaling_policy"]["policy_kwargs"] = {
        "config": pipeline_dict(policies=["test_ray_serve:DemandPolicy"], control={"interval_s": 1})
    }
    for deployment in policy_app["deployments"]:
        deployment["autoscaling_config"].update(
            max_replicas=4, look_back_period_s=2, metrics_interval_s=0.5
        )
    applications = [
        example_app("serve_external_scaler.yaml", name="ext", route_prefix="/ext"),
        {"name": "decl", "route_prefix": "/decl", "import_path": "ray_serve_app:app"},
        policy_app,
    ]
    return {
        "http_options": {"host": "127.0.0.1", "port": http_port},
        "applications": [app for app in applications if app["name"] in apps],
    }


_CLUSTER: ServeCluster | None = None
_CLUSTER_ERROR: str | None = None
_SAVED_ENV: dict[str, str | None] = {}


def _start_cluster(token_dir: Path) -> ServeCluster:
    token_file = token_dir / "ray_auth_token"
    token_file.write_text(secrets.token_hex(16))
    # Replica and controller processes inherit this environment from the raylet: they import
    # the example application and this module (for `DemandPolicy`) from these directories.
    wanted = {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_file),
        "PYTHONPATH": os.pathsep.join(
            [str(EXAMPLES), str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    for key, value in wanted.items():
        _SAVED_ENV[key] = os.environ.get(key)
        os.environ[key] = value
    _SAVED_ENV["RAY_AUTH_TOKEN"] = os.environ.pop("RAY_AUTH_TOKEN", None)
    import ray  # after the environment is set: Ray reads RAY_AUTH_MODE on import

    dashboard_port = free_port(RAY_DEFAULT_PORTS)
    ray.init(
        num_cpus=2,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=dashboard_port,
        log_to_driver=False,
        configure_logging=False,
    )
    cluster = ServeCluster(
        f"http://127.0.0.1:{dashboard_port}", token_file, free_port(RAY_DEFAULT_PORTS)
    )
    cluster.wait_until("the dashboard", _answers(cluster), timeout_s=60)
    _restore_env()  # the cluster's processes have theirs; the rest of the session keeps its own
    return cluster


def _answers(cluster: ServeCluster) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            cluster.request("GET", "/api/serve/applications/")
        except (OSError, urllib.error.HTTPError):
            return False
        return True

    return probe


def _restore_env() -> None:
    for key, value in _SAVED_ENV.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _SAVED_ENV.clear()


def _stop_cluster() -> None:
    import ray

    ray.shutdown()
    _restore_env()


def serve_cluster(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    apps: Collection[str] = ALL_APPS,
) -> ServeCluster:
    """The session's Ray cluster, started on first use and stopped when the session ends, with
    (at least) the named test applications running."""
    global _CLUSTER, _CLUSTER_ERROR
    if _CLUSTER is None and _CLUSTER_ERROR is None:
        # Not imported here: Ray reads RAY_AUTH_MODE when it is first imported, so
        # `_start_cluster` sets the environment first.
        if importlib.util.find_spec("ray") is None:  # (a submodule's spec would import ray)
            _CLUSTER_ERROR = "ray[serve] is not installed"
        else:
            token_dir = tmp_path_factory.mktemp("ray")
            request.session.addfinalizer(_stop_cluster)
            try:
                _CLUSTER = _start_cluster(token_dir)
            except Exception as exc:
                _CLUSTER_ERROR = f"cannot start a local Ray Serve cluster: {exc!r}"
    if _CLUSTER is None:
        reason = _CLUSTER_ERROR or "no cluster"
        if REQUIRE_INTEGRATION:
            pytest.fail(reason)
        pytest.skip(reason)
    _CLUSTER.ensure(apps)
    return _CLUSTER


@pytest.fixture
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeCluster]:
    yield serve_cluster(request, tmp_path_factory)


def ext_actuator(cluster: ServeCluster, **options: Any) -> RayServeActuator:
    return RayServeActuator(
        CONFIG,
        {
            "address": cluster.dashboard_url,
            "application": "ext",
            "targets": SAME_NAMES,
            "auth_token_file": str(cluster.token_file),
            **options,
        },
    )


# --------------------------------------------------------------------------------------------
# Against the cluster


@pytest.mark.integration
def test_external_scaler_read_scale_and_hold(cluster: ServeCluster) -> None:
    cluster.settle("ext", {"router": 1, "retriever": 1, "llm": 1})
    actuator = ext_actuator(cluster)
    assert actuator.read(["router", "llm"]) == {
        "router": ReplicaState(1, 1),
        "llm": ReplicaState(1, 1),
    }
    assert actuator.scale("llm", 3).ok
    held = actuator.scale("llm", 2)  # the two new replicas are still starting
    assert held.failure is Failure.IN_PROGRESS, held.message
    cluster.settle("ext", {"llm": 3})
    assert actuator.read(["llm"])["llm"] == ReplicaState(3, 3)
    assert actuator.scale("llm", 3).ok  # idempotent
    assert actuator.scale("llm", 1).ok
    cluster.settle("ext", {"llm": 1})


@pytest.mark.integration
def test_measured_startup_from_the_live_replica_details(cluster: ServeCluster) -> None:
    """Ray's own answer carries what `adapters.ray.startups` reads: a replica keeps its
    `replica_id` and `start_time_s` from STARTING to RUNNING, the start is on the wall clock
    (the daemon's, on one host) after the scale call, and the measured start-up lies between
    the start and the look that saw it RUNNING."""
    cluster.settle("ext", {"llm": 1})
    actuator = ext_actuator(cluster, measure_startup=True)
    assert actuator.startups(["llm"], now_s=time.time()) == {"llm": []}  # the first look
    asked_s = time.time()
    assert actuator.scale("llm", 2).ok
    got: list[float] = []
    deadline = time.monotonic() + 60
    while not got and time.monotonic() < deadline:
        time.sleep(0.25)
        looked_s = time.time()
        got = actuator.startups(["llm"], now_s=looked_s)["llm"]
    assert len(got) == 1, "no replica turned RUNNING within 60 s"
    replicas = cluster.deployments("ext")["llm"]["replicas"]
    started = max(r["start_time_s"] for r in replicas)
    assert asked_s - 1.0 <= started <= looked_s
    assert 0.0 <= got[0] <= looked_s - started
    cluster.settle("ext", {"llm": 2})
    assert actuator.scale("llm", 1).ok
    cluster.settle("ext", {"llm": 1})


@pytest.mark.integration
def test_external_scaler_errors(cluster: ServeCluster) -> None:
    actuator = ext_actuator(cluster)
    wrong = ext_actuator(cluster, check_on_start=False)
    wrong.client.token = "not-the-token"
    result = wrong.scale("llm", 2)
    assert result.failure is Failure.FORBIDDEN and "403" in result.message
    wrong.client.token = None
    assert wrong.scale("llm", 2).failure is Failure.FORBIDDEN
    with pytest.raises(ActuatorError, match="401"):
        wrong.read(["llm"])
    missing = ext_actuator(cluster, check_on_start=False, targets={**SAME_NAMES, "llm": "ext/nope"})
    assert missing.scale("llm", 2).failure is Failure.NOT_FOUND
    assert missing.read(["llm", "router"]) == {"router": ReplicaState(1, 1)}
    # The Serve API itself refuses a scale call for an application without the external scaler.
    not_external = ext_actuator(
        cluster, check_on_start=False, targets={**SAME_NAMES, "llm": "decl/llm"}
    )
    refused = not_external.scale("llm", 2)
    assert refused.failure is Failure.FORBIDDEN and "external_scaler_enabled" in refused.message
    assert actuator.read(["llm"])["llm"].desired == 1


@pytest.mark.integration
@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"application": "decl"}, ActuatorError, "external_scaler_enabled: true"),
        ({"targets": {**SAME_NAMES, "llm": "nope"}}, ActuatorError, "no deployment 'nope'"),
        ({"application": "missing"}, ActuatorError, "no application 'missing'"),
        ({"mode": "declarative", "application": "auto"}, OtherAutoscalerError, "autoscal"),
    ],
)
def test_check_on_start(
    cluster: ServeCluster, options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        ext_actuator(cluster, **options)


@pytest.mark.integration
def test_declarative_mode_puts_the_whole_config(cluster: ServeCluster) -> None:
    actuator = ext_actuator(cluster, mode="declarative", application="decl")
    assert actuator.scale("retriever", 2).ok
    cluster.settle("decl", {"retriever": 2, "router": 1, "llm": 1})
    apps = cluster.request("GET", "/api/serve/applications/")["applications"]
    assert set(apps) >= {"ext", "decl", "auto"}  # the PUT kept every application
    deployed = apps["decl"]["deployed_app_config"]["deployments"]
    assert {"name": "retriever", "num_replicas": 2} in deployed
    assert actuator.scale("retriever", 1).ok
    cluster.settle("decl", {"retriever": 1})


@pytest.mark.integration
def test_application_policy_scales_the_graph_inside_serve(cluster: ServeCluster) -> None:
    """The router of `auto` reports 14 requests/s; elastiscale inside Serve's controller
    carries it down the graph and sizes the llm (which sees no traffic itself) at 4."""
    cluster.settle("auto", {"router": 1, "retriever": 1, "llm": 4}, timeout_s=60)
    assert cluster.counts("auto")["llm"] == (4, 4)
