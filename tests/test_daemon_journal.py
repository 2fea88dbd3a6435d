"""The decision journal: size rotation, reading back across files, torn lines, and which
changes were in flight when the writer stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale.daemon.journal import Journal


def lines_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_entries_carry_kind_time_and_run_and_cannot_be_overridden(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    journal.write("decision", 12.5, {"at_s": 99.0, "kind": "other", "component": "llm"}, tick=3)
    journal.close()
    (entry,) = lines_of(tmp_path / "j.jsonl")
    assert entry == {
        "kind": "decision",
        "at_s": 12.5,
        "run": journal.run_id,
        "component": "llm",
        "tick": 3,
    }


def test_rotation_keeps_each_file_under_the_limit_and_the_newest_entries(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path, max_bytes=400, keep=2, fsync=False)
    for i in range(40):
        journal.write("decision", float(i), component="c", n=i)
    journal.close()
    files = journal.files()
    assert [p.name for p in files] == ["j.jsonl.2", "j.jsonl.1", "j.jsonl"]
    assert all(p.stat().st_size <= 400 for p in files)
    numbers = [e["n"] for e in journal.entries()]
    assert numbers == list(range(numbers[0], 40))  # in order, oldest dropped, nothing skipped
    assert numbers[0] > 0


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=120), min_size=1, max_size=60),
    max_bytes=st.integers(min_value=60, max_value=600),
    keep=st.integers(min_value=1, max_value=4),
)
def test_rotation_invariants(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], max_bytes: int, keep: int
) -> None:
    """Whatever is written: no file holds more than `max_bytes` unless it is one line, at most
    `keep` rotated files exist, and what is left reads back as the newest entries in order."""
    path = tmp_path_factory.mktemp("j") / "j.jsonl"
    journal = Journal(path, max_bytes=max_bytes, keep=keep, fsync=False)
    for i, size in enumerate(sizes):
        journal.write("x", 0.0, n=i, pad="p" * size)
    journal.close()
    files = journal.files()
    assert len(files) <= keep + 1
    for file in files:
        text = file.read_text()
        assert len(text.encode()) <= max_bytes or text.count("\n") == 1
    numbers = [e["n"] for e in journal.entries()]
    assert numbers == list(range(len(sizes) - len(numbers), len(sizes)))


def test_in_flight_is_an_intent_without_outcome_since_the_last_start(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    first = Journal(path)
    first.write("start", 0.0)
    first.write("intent", 1.0, id="a:1", component="router", from_replicas=1, to_replicas=2)
    first.write("outcome", 1.1, id="a:1", component="router", ok=True)
    first.write("intent", 2.0, id="a:2", component="llm", from_replicas=3, to_replicas=5)
    first.close()  # the writer died before the outcome of a:2

    second = Journal(path)
    (change,) = second.in_flight()
    assert (change.id, change.component, change.from_replicas, change.to_replicas) == (
        "a:2",
        "llm",
        3,
        5,
    )
    assert "llm 3 -> 5" in change.describe()
    second.write("start", 10.0, in_flight=[change.to_dict()])
    second.close()
    assert Journal(path).in_flight() == []  # reported once, by that start


def test_torn_and_foreign_lines_are_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "j.jsonl"
    path.write_text(
        '{"kind": "start", "at_s": 0}\n'
        "[1, 2]\n"
        '{"kind": "intent", "at_s": 1, "id": "r:1", "component": "llm", "to_replicas": 4}\n'
        '{"kind": "outcome", "at_s": 1, "id": "r:1"'  # torn by a crash mid-write
    )
    (change,) = Journal(path).in_flight()
    assert change.to_replicas == 4 and change.from_replicas is None
    assert "line 4 is not JSON" in caplog.text


def test_open_failure_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match=r"journal .*file/j.jsonl"):
        Journal(blocker / "j.jsonl").open()


@pytest.mark.parametrize(("max_bytes", "keep", "field"), [(0, 3, "max_bytes"), (100, 0, "keep")])
def test_bad_limits_are_refused_by_name(max_bytes: int, keep: int, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Journal("j.jsonl", max_bytes=max_bytes, keep=keep)
