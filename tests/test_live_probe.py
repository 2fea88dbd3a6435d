"""The live benchmark's probe (benchmarks/live_ray/probe.py): the chain it runs with its scale
changed keeps the router and changes exactly the three scaled components and the SLO."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks" / "live_ray"))

from probe import SCALED, scaled_chain  # noqa: E402
from scenario import PIPELINES  # noqa: E402


def test_capacity_and_service_factors_keep_the_slots_and_scale_the_slo() -> None:
    base = yaml.safe_load(PIPELINES["chain"].read_text(encoding="utf-8"))["pipeline"]
    got = scaled_chain(0.25, 4.0)["pipeline"]
    assert got["slo"]["latency_p95_s"] == 4 * base["slo"]["latency_p95_s"]
    assert got["components"]["router"] == base["components"]["router"]
    for name in SCALED:
        was, now = base["components"][name], got["components"][name]
        assert now["capacity_per_replica"] == pytest.approx(0.25 * was["capacity_per_replica"])
        assert now["service_time_s"] == pytest.approx(4 * was["service_time_s"])
        slots = now["capacity_per_replica"] * now["service_time_s"]
        assert slots == pytest.approx(was["capacity_per_replica"] * was["service_time_s"])
