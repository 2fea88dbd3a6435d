"""The fleet daemon in this process: one pass steps every unit and journals each with its
name; `elastiscale run` over several pipeline files or a fleet file; bad sets of units
refused in one line."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from elastiscale.config import load_config
from elastiscale.daemon.cli import run
from elastiscale.daemon.fleet_runner import FleetDaemon
from elastiscale.daemon.journal import Journal
from elastiscale.daemon.runner import RunOptions

REPO = Path(__file__).resolve().parent.parent
TRACE = REPO / "examples/traces/azure_llm_2023_conv_1s.csv"


def args_for(paths: list[Path], journal: Path | None = None) -> argparse.Namespace:
    return argparse.Namespace(
        config=paths, once=True, dry_run=False, listen=None, log_format=None,
        journal=str(journal) if journal else None, keda_listen=None, identity=None,
    )  # fmt: skip


def unit_file(tmp_path: Path, name: str, extra: str = "") -> Path:
    trace = TRACE
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"pipeline:\n  name: {name}\n  slo: {{latency_p95_s: 5}}\n  components:\n"
        "    router: {ingress: true, capacity_per_replica: 0.01, service_time_s: 0.05,"
        " replicas: {min: 1, max: 40}}\n"
        f"policies: [hpa]\nmetrics: {{type: trace, path: {trace}, loop: true}}\n"
        "actuator: {type: dry-run}\n" + extra,
        encoding="utf-8",
    )
    return path


def test_one_pass_steps_every_unit_and_the_journal_names_them(tmp_path: Path) -> None:
    paths = [unit_file(tmp_path, name) for name in ("rag", "agent")]
    units = [(p.stem, load_config(p)) for p in paths]
    journal = tmp_path / "j.jsonl"
    daemon = FleetDaemon(units, RunOptions(paths[0], once=True, journal_path=str(journal)))
    assert daemon.run() == 0
    entries = list(Journal(journal).entries())
    ticks = [e for e in entries if e["kind"] == "tick"]
    assert len(ticks) == 1 and ticks[0]["units"] == ["rag", "agent"]
    decisions = [e for e in entries if e["kind"] == "decision"]
    # any demand the trace has at this minute needs more than the min of 1 at 0.01 req/s each
    assert {e["unit"] for e in decisions} == {"rag", "agent"}
    registry = daemon.metrics.registry
    assert registry.get_sample_value("elastiscale_units") == 2
    assert registry.get_sample_value("elastiscale_units_acting") == 2
    records = daemon.status.snapshot.records if daemon.status.snapshot else ()
    assert {r.component for r in records} == {"rag/router", "agent/router"}


@pytest.mark.parametrize(
    "names, extra, message",
    [
        (("rag", "rag"), "", "'rag' is also the name in"),
        (("rag", "agent"), "daemon: {sharding: {enabled: true}}\n", "daemon.sharding.name"),
    ],
)
def test_run_refuses_a_bad_set_of_units_in_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    names: tuple[str, str],
    extra: str,
    message: str,
) -> None:
    paths = []
    for i, name in enumerate(names):
        sub = tmp_path / str(i)
        sub.mkdir()
        paths.append(unit_file(sub, name, extra))
    assert run(args_for(paths)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_a_fleet_file_runs_its_units(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("rag.yaml", "agent.yaml"):
        shutil.copy(REPO / "examples/fleet" / name, tmp_path / name)
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "fleet: {name: platform, pipelines: [rag.yaml, agent.yaml], shared: [embedder, llm]}\n"
        f"metrics: {{type: trace, path: {TRACE}, loop: true}}\nactuator: {{type: dry-run}}\n",
        encoding="utf-8",
    )
    journal = tmp_path / "j.jsonl"
    assert run(args_for([fleet], journal)) == 0
    entries = list(Journal(journal).entries())
    assert [e["units"] for e in entries if e["kind"] == "tick"] == [["rag-qa+support-agent"]]
    printed = capsys.readouterr().out.splitlines()  # --once: one line per component
    assert printed and all(line.startswith("rag-qa+support-agent/") for line in printed)
    decided = {e["unit"] for e in entries if e["kind"] == "decision"}
    assert decided <= {"rag-qa+support-agent"}  # what changes depends on the trace's minute
    assert all(e.get("unit") == "rag-qa+support-agent" for e in entries if e["kind"] == "intent")


def test_a_replica_holding_no_unit_steps_nothing_and_is_ready(tmp_path: Path) -> None:
    """Another replica holds every unit's Lease (renewed just now): this one's pass steps
    nothing, journals no `tick`, and still shows a finished tick on /readyz."""
    from elastiscale.daemon.shards import unit_lease_name
    from elastiscale.testing.kubernetes import LEASES, FakeKubeAPI

    with FakeKubeAPI() as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        sharding = (
            "daemon: {sharding: {enabled: true, name: fleet, connection: kubeconfig, "
            f"kubeconfig: {kubeconfig}}}}}\n"
        )
        paths = [unit_file(tmp_path, name, sharding) for name in ("rag", "agent")]
        for name in ("rag", "agent"):
            spec = {"holderIdentity": "other", "leaseDurationSeconds": 15}
            meta = {"name": unit_lease_name("fleet", name), "labels": {}}
            api.store.create(LEASES, "default", {"metadata": meta, "spec": spec})
        units = [(p.stem, load_config(p)) for p in paths]
        journal = tmp_path / "j.jsonl"
        options = RunOptions(paths[0], once=True, journal_path=str(journal), identity="me")
        daemon = FleetDaemon(units, options)
        assert daemon.run() == 0
        assert not [e for e in Journal(journal).entries() if e["kind"] in ("tick", "decision")]
        assert daemon.status.readiness().ready and daemon.status.leader is False
        assert daemon.metrics.registry.get_sample_value("elastiscale_units_acting") == 0
        for name in ("rag", "agent"):  # untouched: this replica never held them
            lease = api.get(LEASES, "default", unit_lease_name("fleet", name))
            assert lease["spec"]["holderIdentity"] == "other"
