"""The HTTP endpoints over a real socket, and the metrics as Prometheus's own parser reads
them: per-component values from decision records, missing values as missing series, measured
fan-out, decisions by outcome and reason."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from elastiscale.daemon.http import StatusServer
from elastiscale.daemon.journal import InFlight
from elastiscale.daemon.status import DaemonStatus, TickSnapshot
from elastiscale.daemon.telemetry import (
    DaemonMetrics,
    decision_reason,
    outcome_word,
    read_details,
)
from elastiscale.decision import Clamp, DecisionRecord, Proposal
from elastiscale.observations import Observation


def record(
    component: str,
    current: int,
    desired: int,
    outcome: str,
    demand_rps: float | None = None,
    ready: int | None = None,
    proposals: tuple[Proposal, ...] = (),
    clamps: tuple[Clamp, ...] = (),
) -> DecisionRecord:
    valid = [p.replicas for p in proposals if p.replicas is not None]
    return DecisionRecord(
        at_s=100.0,
        component=component,
        observation=Observation(component, 99.0, demand_rps=demand_rps, ready_replicas=ready),
        current_replicas=current,
        proposals=proposals,
        combined_replicas=max(valid) if valid else None,
        clamps=clamps,
        desired_replicas=desired,
        outcome=outcome,
    )


RECORDS = (
    record(
        "router",
        2,
        3,
        "scaled",
        demand_rps=20.0,
        ready=2,
        proposals=(
            Proposal("hpa", 3, "ratio", {"forecast_demand": 24.5, "forecast_300s_asym_err": 0.12}),
            Proposal.none("kpa", "policy error: ValueError: bad"),
        ),
    ),
    record(
        "llm",
        4,
        4,
        "held: backing off after throttled",
        demand_rps=60.0,
        proposals=(Proposal("hpa", 9, "ratio"),),
        clamps=(Clamp("rate_limit", 9, 4, "scale-up limit"),),
    ),
    record("tools", 1, 1, "unchanged", proposals=(Proposal.none("hpa", "no data"),)),
)


@pytest.fixture
def served() -> Iterator[tuple[StatusServer, DaemonStatus, DaemonMetrics]]:
    status = DaemonStatus("rag", "pod-a", stall_after_s=60)
    metrics = DaemonMetrics(status)
    server = StatusServer("127.0.0.1", 0, status, metrics)
    server.start()
    yield server, status, metrics
    server.stop()


def get(server: StatusServer, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(server.url + path, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def publish(status: DaemonStatus, metrics: DaemonMetrics, ok: bool = True) -> TickSnapshot:
    snapshot = TickSnapshot(
        tick=7,
        at_s=100.0,
        duration_s=0.004,
        ok=ok,
        leader=True,
        records=RECORDS,
        ready={"llm": 3},
        edges=(("router", "llm"), ("router", "tools"), ("llm", "tools")),
        incoming={"router": 0, "llm": 1, "tools": 2},
    )
    status.publish(snapshot, True, None, None if ok else "RuntimeError: x")
    metrics.record_tick(snapshot)
    return snapshot


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_healthz_readyz_before_and_after_a_tick(
    served: tuple[StatusServer, DaemonStatus, DaemonMetrics],
) -> None:
    server, status, metrics = served
    assert get(server, "/healthz") == (200, "ok\n")
    code, body = get(server, "/readyz")
    assert code == 503 and json.loads(body)["reasons"] == ["no tick has run yet"]
    publish(status, metrics)
    code, body = get(server, "/readyz")
    assert code == 200 and json.loads(body) == {"ready": True, "reasons": [], "leader": None}
    status.publish(status.snapshot, False, "connection refused", None)  # type: ignore[arg-type]
    code, body = get(server, "/readyz")
    assert code == 503
    assert json.loads(body)["reasons"] == ["metric source unreachable: connection refused"]


def test_healthz_fails_when_the_loop_stalls(
    served: tuple[StatusServer, DaemonStatus, DaemonMetrics],
) -> None:
    server, status, _ = served
    status.heartbeat(-1000.0)  # monotonic time long ago
    code, body = get(server, "/healthz")
    assert code == 503 and "stalled" in body


def test_metrics_render_the_last_tick(
    served: tuple[StatusServer, DaemonStatus, DaemonMetrics],
) -> None:
    server, status, metrics = served
    publish(status, metrics)
    code, text = get(server, "/metrics")
    assert code == 200
    got = samples(text)

    def value(name: str, **labels: str) -> float | None:
        return got.get((name, tuple(sorted(labels.items()))))

    assert value("elastiscale_desired_replicas", component="router") == 3
    assert value("elastiscale_current_replicas", component="llm") == 4
    assert value("elastiscale_ready_replicas", component="router") == 2  # from the observation
    assert value("elastiscale_ready_replicas", component="llm") == 3  # the actuator's read wins
    assert value("elastiscale_ready_replicas", component="tools") is None  # missing, not zero
    assert value("elastiscale_proposed_replicas", component="router", policy="hpa") == 3
    assert value("elastiscale_proposed_replicas", component="router", policy="kpa") is None
    assert value("elastiscale_demand_per_second", component="llm", unit="requests") == 60
    assert value("elastiscale_demand_per_second", component="tools", unit="requests") is None
    assert value("elastiscale_forecast_demand_per_second", component="router", policy="hpa") == 24.5
    assert (
        value("elastiscale_forecast_error", component="router", policy="hpa", horizon_s="300")
        == 0.12
    )
    assert value("elastiscale_fanout_ratio", source="router", target="llm") == 3.0
    assert value("elastiscale_fanout_ratio", source="router", target="tools") is None  # 2 inputs
    assert (
        value(
            "elastiscale_decisions_total",
            component="llm",
            outcome="held",
            reason="constraint:rate_limit",
        )
        == 1
    )
    assert (
        value(
            "elastiscale_decisions_total",
            component="tools",
            outcome="unchanged",
            reason="no proposal",
        )
        == 1
    )
    assert value("elastiscale_errors_total", kind="policy") == 1
    assert value("elastiscale_errors_total", kind="metric_source") == 0  # present from the start
    assert value("elastiscale_ticks_total", result="ok") == 1
    assert value("elastiscale_tick_duration_seconds_count") == 1
    assert value("elastiscale_last_tick_timestamp_seconds") == 100
    assert value("elastiscale_info", pipeline="rag", identity="pod-a") == 1
    assert value("elastiscale_ready") == 1
    assert value("elastiscale_metric_source_up") == 1
    assert value("elastiscale_leader") is None  # no election: no series


def test_decisions_endpoint_filters_and_limits(
    served: tuple[StatusServer, DaemonStatus, DaemonMetrics],
) -> None:
    server, status, metrics = served
    status.in_flight_at_start = (InFlight("r:1", 90.0, "llm", 2, 5),)
    publish(status, metrics)
    publish(status, metrics)
    code, body = get(server, "/decisions")
    assert code == 200
    got = json.loads(body)
    assert [r["component"] for r in got["latest"]] == ["router", "llm", "tools"]
    assert [r["component"] for r in got["recent"]] == ["llm", "router", "llm", "router"]
    assert got["in_flight_at_start"][0]["to_replicas"] == 5
    assert got["tick"] == 7 and got["pipeline"] == "rag"
    got = json.loads(get(server, "/decisions?component=llm&limit=1")[1])
    assert [r["component"] for r in got["latest"]] == ["llm"]
    assert len(got["recent"]) == 1 and got["recent"][0]["clamps"][0]["constraint"] == "rate_limit"
    assert get(server, "/decisions?limit=x")[0] == 400
    assert get(server, "/nope")[0] == 404


def test_recent_decisions_are_bounded() -> None:
    status = DaemonStatus("rag", "pod-a", stall_after_s=60, decisions_kept=3)
    metrics = DaemonMetrics(status)
    for _ in range(5):
        publish(status, metrics)
    assert len(status.decisions(limit=100)["recent"]) == 3  # type: ignore[arg-type]
    status.set_decisions_kept(1)
    assert len(status.decisions(limit=100)["recent"]) == 1  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("outcome", "word"),
    [
        ("scaled", "scaled"),
        ("failed: throttled", "failed"),
        ("held: backing off after unavailable", "held"),
        ("dry-run", "dry-run"),
    ],
)
def test_outcome_word(outcome: str, word: str) -> None:
    assert outcome_word(outcome) == word


def test_decision_reason() -> None:
    assert [decision_reason(r) for r in RECORDS] == [
        "policy:hpa",
        "constraint:rate_limit",
        "no proposal",
    ]


def test_the_registry_is_not_the_global_one(
    served: tuple[StatusServer, DaemonStatus, DaemonMetrics],
) -> None:
    from prometheus_client import REGISTRY

    _, _, metrics = served
    assert metrics.registry is not REGISTRY
    assert REGISTRY.get_sample_value("elastiscale_ticks_total", {"result": "ok"}) is None


@pytest.mark.parametrize(
    ("component", "details", "forecast", "errors", "fanouts"),
    [
        (
            "llm",  # predictive: its own forecast, prefix "forecast"
            {
                "forecast_forecast_q": 31.5,
                "forecast_horizon_s": 240.0,
                "forecast_error": 0.21,
                "forecast_latest": 30.0,
                "forecast_model": "holt-winters",
            },
            31.5,
            [("240", 0.21)],
            [],
        ),
        (
            "llm",  # elastiscale downstream: the demand through its edges, the ingress's error
            {
                "forecast_router_forecast_q": 10.0,
                "forecast_router_horizon_s": 195.0,
                "forecast_router_error": 0.3,
                "edge_router_rps": 27.5,
                "edge_cache_rps": 2.5,
                "fanout_router_measured": 2.75,
                "fanout_router_prior": 3.0,
            },
            30.0,
            [("195", 0.3)],
            [("router", 2.75)],
        ),
        (
            "router",  # elastiscale on the ingress itself
            {"forecast_router_forecast_q": 10.0, "forecast_other_forecast_q": 99.0},
            10.0,
            [],
            [],
        ),
        (
            "llm",  # the quality tracker's keys; None is not known yet
            {"forecast_60s_asym_err": 0.05, "forecast_900s_asym_err": None, "flag": True},
            None,
            [("60", 0.05)],
            [],
        ),
        ("llm", {"forecast_demand": 12.0, "forecast_forecast_q": 99.0}, 12.0, [], []),
    ],
    ids=["predictive", "elastiscale downstream", "elastiscale ingress", "tracker", "explicit"],
)
def test_details_from_forecasting_policies(
    component: str,
    details: dict[str, Any],
    forecast: float | None,
    errors: list[tuple[str, float]],
    fanouts: list[tuple[str, float]],
) -> None:
    got = read_details(component, details)
    assert got.forecast == forecast
    assert sorted(got.errors) == errors
    assert list(got.fanouts) == fanouts


def test_a_policys_fanout_estimate_is_preferred_to_the_raw_ratio() -> None:
    status = DaemonStatus("rag", "pod-a", stall_after_s=60)
    metrics = DaemonMetrics(status)
    llm = record(
        "llm",
        4,
        4,
        "unchanged",
        demand_rps=60.0,
        proposals=(
            Proposal("elastiscale", 4, "x", {"fanout_router_measured": 2.9}),
            Proposal("other", 4, "x", {"fanout_router_measured": 1.0}),
        ),
    )
    snapshot = TickSnapshot(
        tick=1,
        at_s=1.0,
        duration_s=0.0,
        ok=True,
        leader=True,
        records=(RECORDS[0], llm),
        edges=(("router", "llm"),),
        incoming={"router": 0, "llm": 1},
    )
    status.publish(snapshot, True, None, None)
    assert (
        metrics.registry.get_sample_value(
            "elastiscale_fanout_ratio", {"source": "router", "target": "llm"}
        )
        == 2.9
    )


def test_a_shared_components_demand_by_pipeline_is_a_gauge_and_a_missing_share_no_sample() -> None:
    from dataclasses import replace

    status = DaemonStatus("unit", "pod-a", stall_after_s=60)
    metrics = DaemonMetrics(status)
    shared = replace(
        record("llm", 4, 4, "unchanged", demand_rps=30.0),
        demand_by_pipeline={"rag-qa": 20.0, "support-agent": None},
    )
    snapshot = TickSnapshot(tick=1, at_s=1.0, duration_s=0.0, ok=True, leader=True,
                            records=(shared,))  # fmt: skip
    status.publish(snapshot, True, None, None)

    def sample(pipeline: str) -> float | None:
        return metrics.registry.get_sample_value(
            "elastiscale_demand_by_pipeline_per_second",
            {"component": "llm", "pipeline": pipeline},
        )

    assert sample("rag-qa") == 20.0
    assert sample("support-agent") is None
