"""The decision journal: JSON lines, one entry per line, rotated by size.

An intent is written (and, with `fsync`, forced to disk) before the change it announces is sent
to the platform, and its outcome after; decisions follow at the end of each tick. So a crash
loses no decision, and the next start can say which changes were in flight: intents with no
outcome after the last `start` entry.

Entries (every one has `kind`, `at_s` in Unix seconds, and `run`, the writing process's id):

    {"kind": "start", "pid": 41, "identity": "...", "config": "pipeline.yaml", "in_flight": [...]}
    {"kind": "intent", "id": "<run>:7", "tick": 12, "component": "llm", "from_replicas": 3,
     "to_replicas": 5}
    {"kind": "outcome", "id": "<run>:7", "component": "llm", "ok": false,
     "failure": "throttled", "message": "..."}
    {"kind": "decision", "tick": 12, "leader": true, ...DecisionRecord.to_dict()}
    {"kind": "reload", "ok": false, "problems": ["pipeline.slo: ..."]}
    {"kind": "stop", "reason": "SIGTERM"}

Rotation: before a line would take the file past `max_bytes`, `path` becomes `path.1` (`.1`
becomes `.2`, and so on up to `keep`; the oldest is deleted) and a new file is started. Readers
go through the files oldest first.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("elastiscale.daemon.journal")


@dataclass(frozen=True, slots=True)
class InFlight:
    """A change that was announced and never reported back: the writer stopped in between."""

    id: str
    at_s: float
    component: str
    from_replicas: int | None
    to_replicas: int | None

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "at_s": self.at_s,
            "component": self.component,
            "from_replicas": self.from_replicas,
            "to_replicas": self.to_replicas,
        }

    def describe(self) -> str:
        return (
            f"{self.component} {self.from_replicas} -> {self.to_replicas} "
            f"(intent {self.id} at {self.at_s:.3f})"
        )


class Journal:
    """Appends entries to `path`, rotating by size. Not thread-safe: one writer, the run loop.

    A write that fails (a full disk) raises `OSError`; the caller decides whether to go on.
    """

    def __init__(
        self, path: str | Path, max_bytes: int = 10 * 1024 * 1024, keep: int = 3, fsync: bool = True
    ) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes = {max_bytes}, must be >= 1")
        if keep < 1:
            raise ValueError(f"keep = {keep}, must be >= 1")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self.fsync = fsync
        self.run_id = uuid.uuid4().hex[:12]
        self._seq = 0
        self._file: IO[str] | None = None
        self._size = 0

    # --- writing ------------------------------------------------------------------------------

    def open(self) -> None:
        """Open (creating parent directories) for appending; OSError names the path."""
        if self._file is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise OSError(f"journal {self.path}: {exc.strerror or exc}") from None
        self._size = self._file.tell()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def next_id(self) -> str:
        self._seq += 1
        return f"{self.run_id}:{self._seq}"

    def write(
        self,
        kind: str,
        at_s: float,
        fields: Mapping[str, Any] | None = None,
        *,
        sync: bool = False,
        **more: Any,
    ) -> None:
        """Append one entry made of `fields` and `more`; `sync` forces it to disk (when the
        journal was made with fsync). `kind`, `at_s` and `run` are always the journal's."""
        entry: dict[str, Any] = {"kind": kind, "at_s": at_s, "run": self.run_id}
        entry.update(fields or {})
        entry.update(more)
        entry.update(kind=kind, at_s=at_s, run=self.run_id)
        line = json.dumps(entry, separators=(",", ":"), default=str) + "\n"
        self.open()
        size = len(line.encode("utf-8"))
        if self._size > 0 and self._size + size > self.max_bytes:
            self._rotate()
        assert self._file is not None
        self._file.write(line)
        self._size += size
        if sync:
            self.flush()

    def flush(self) -> None:
        """Push written entries to the OS, and to disk when the journal was made with fsync."""
        if self._file is None:
            return
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())

    def _rotate(self) -> None:
        self.flush()
        self.close()
        oldest = self._rotated(self.keep)
        if oldest.exists():
            oldest.unlink()
        for index in range(self.keep - 1, 0, -1):
            older = self._rotated(index)
            if older.exists():
                older.rename(self._rotated(index + 1))
        self.path.rename(self._rotated(1))
        self._file = self.path.open("a", encoding="utf-8")
        self._size = 0

    def _rotated(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    # --- reading ------------------------------------------------------------------------------

    def files(self) -> list[Path]:
        """The journal's files that exist, oldest first."""
        rotated = [self._rotated(i) for i in range(self.keep, 0, -1)]
        return [p for p in [*rotated, self.path] if p.exists()]

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every readable entry, oldest first. A torn last line (a crash mid-write) and other
        unreadable lines are skipped with a warning naming the file and line."""
        for path in self.files():
            with path.open(encoding="utf-8", errors="replace") as handle:
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        log.warning("journal %s: line %d is not JSON; skipped", path, number)
                        continue
                    if isinstance(entry, dict):
                        yield entry

    def in_flight(self) -> list[InFlight]:
        """Intents without an outcome since the last `start` entry (earlier ones were already
        reported by that start), oldest first."""
        pending: dict[str, Mapping[str, Any]] = {}
        for entry in self.entries():
            kind = entry.get("kind")
            if kind == "start":
                pending.clear()
            elif kind == "intent" and isinstance(entry.get("id"), str):
                pending[entry["id"]] = entry
            elif kind == "outcome":
                pending.pop(str(entry.get("id")), None)
        return [
            InFlight(
                id=key,
                at_s=float(entry.get("at_s") or 0.0),
                component=str(entry.get("component")),
                from_replicas=_int_or_none(entry.get("from_replicas")),
                to_replicas=_int_or_none(entry.get("to_replicas")),
            )
            for key, entry in pending.items()
        ]


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) else None
