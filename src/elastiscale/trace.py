"""Request-arrival traces: CSV files (optionally gzipped) with a header, dense bins.

Columns: `t_seconds` (start of the bin, seconds), `requests` (arrivals in the bin), and optional
per-bin sums such as `input_tokens` and `output_tokens`. Every problem is reported as one line
naming the file, the row (1-based, the header is row 1) and the column, e.g.

    traces/x.csv: row 17, column requests: negative value -3
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from elastiscale.errors import TraceError

Array = npt.NDArray[np.float64]

REQUIRED_COLUMNS = ("t_seconds", "requests")
TOKEN_COLUMNS = {"tokens": ("input_tokens", "output_tokens")}


@dataclass(frozen=True)
class Trace:
    """A dense, binned arrival trace. `t_s[i]` is the start of bin i; bins are `bin_s` wide."""

    name: str
    t_s: Array
    requests: Array
    bin_s: float
    columns: Mapping[str, Array] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.t_s.size)

    @property
    def start_s(self) -> float:
        return float(self.t_s[0])

    @property
    def end_s(self) -> float:
        """End of the last bin."""
        return float(self.t_s[-1] + self.bin_s)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def rate_rps(self) -> Array:
        """Arrival rate of each bin, requests per second."""
        return self.requests / self.bin_s

    def has_unit(self, unit: str) -> bool:
        if unit == "requests":
            return True
        return all(c in self.columns for c in TOKEN_COLUMNS.get(unit, (unit,)))

    def work(self, unit: str) -> Array:
        """Per-bin work in a capacity unit: requests, tokens (input + output), or one column."""
        if unit == "requests":
            return self.requests
        parts = TOKEN_COLUMNS.get(unit, (unit,))
        missing = [c for c in parts if c not in self.columns]
        if missing:
            raise TraceError(f"{self.name}: no column {missing[0]} for capacity unit {unit!r}")
        total: Array = np.sum([self.columns[c] for c in parts], axis=0)
        return total

    def scaled(self, time_scale: float = 1.0, rate_scale: float = 1.0) -> Trace:
        """Times multiplied by `time_scale` (below 1 compresses), counts by `rate_scale`.

        Compressing time keeps each bin's count, so rates rise by 1 / time_scale.
        """
        if time_scale <= 0 or rate_scale <= 0:
            raise ValueError("time_scale and rate_scale must be > 0")
        if time_scale == 1.0 and rate_scale == 1.0:
            return self
        return Trace(
            name=self.name,
            t_s=self.t_s * time_scale,
            requests=self.requests * rate_scale,
            bin_s=self.bin_s * time_scale,
            columns={k: v * rate_scale for k, v in self.columns.items()},
        )

    def window(self, start_s: float | None = None, end_s: float | None = None) -> Trace:
        """The bins starting in [start_s, end_s), in the trace's own time base."""
        lo = -math.inf if start_s is None else start_s
        hi = math.inf if end_s is None else end_s
        keep = (self.t_s >= lo) & (self.t_s < hi)
        if not keep.any():
            raise TraceError(f"{self.name}: no bins between {start_s} and {end_s}")
        return Trace(
            name=self.name,
            t_s=self.t_s[keep],
            requests=self.requests[keep],
            bin_s=self.bin_s,
            columns={k: v[keep] for k, v in self.columns.items()},
        )


def load_trace(path: str | Path) -> Trace:
    """Read and validate a trace file; raises `TraceError` naming file, row and column."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise TraceError(f"{path}: not a valid gzip file: {exc}") from None
    text = raw.decode("utf-8", errors="replace")
    return parse_trace(text, name=str(path))


def parse_trace(text: str, name: str = "<trace>") -> Trace:
    """Parse CSV text into a `Trace` (see `load_trace`)."""
    # The header is cut off the text, not split into lines: a month of 1 s bins is 2.7 million
    # lines, and a list of them would cost several times the text itself.
    first_line, _, rest = text.partition("\n")
    if not first_line.strip():
        raise TraceError(f"{name}: empty file (expected a header with t_seconds,requests)")
    try:
        header = [h.strip() for h in next(csv.reader([first_line.rstrip("\r")]))]
    except csv.Error as exc:
        raise TraceError(f"{name}: row 1: not CSV: {exc}") from None
    for column in REQUIRED_COLUMNS:
        if column not in header:
            raise TraceError(f"{name}: row 1: missing column {column} (header: {','.join(header)})")
    body = rest.strip()
    if not body:
        raise TraceError(f"{name}: no data rows after the header")
    data = _parse_numbers(body, header, name)
    _check_values(data, header, name)
    t_s = data[:, header.index("t_seconds")]
    steps = np.diff(t_s)
    bin_s = float(np.median(steps)) if steps.size else 1.0
    if steps.size:
        bad = np.flatnonzero(np.abs(steps - bin_s) > 1e-6 * max(bin_s, 1.0))
        if bad.size:
            row = int(bad[0]) + 3
            raise TraceError(
                f"{name}: row {row}, column t_seconds: step {steps[bad[0]]:g} s differs from the "
                f"trace's bin of {bin_s:g} s (bins must be dense and evenly spaced)"
            )
    columns = {h: data[:, i].copy() for i, h in enumerate(header) if h not in REQUIRED_COLUMNS}
    return Trace(
        name=name,
        t_s=t_s.copy(),
        requests=data[:, header.index("requests")].copy(),
        bin_s=bin_s,
        columns=columns,
    )


def _parse_numbers(body: str, header: list[str], name: str) -> Array:
    """All cells as floats; the slow path runs only to name the first bad cell. A `#` is a
    character like any other (no comments), so both paths read the same rows and row numbers
    count every line."""
    try:
        data = np.loadtxt(io.StringIO(body), delimiter=",", ndmin=2, dtype=float, comments=None)
    except ValueError:
        data = None
    if data is not None and data.shape[1] == len(header):
        return data
    rows = csv.reader(io.StringIO(body))
    row_no = 1
    while True:
        row_no += 1
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error as exc:
            raise TraceError(f"{name}: row {row_no}: not CSV: {exc}") from None
        if len(row) != len(header):
            raise TraceError(
                f"{name}: row {row_no}: {len(row)} fields, the header has {len(header)}"
            )
        for column, cell in zip(header, row, strict=True):
            try:
                float(cell)
            except ValueError:
                raise TraceError(
                    f"{name}: row {row_no}, column {column}: not a number: {cell.strip()!r}"
                ) from None
    raise TraceError(f"{name}: cannot parse the data rows")  # pragma: no cover


def _check_values(data: Array, header: list[str], name: str) -> None:
    for i, column in enumerate(header):
        values = data[:, i]
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            row = int(bad[0]) + 2
            raise TraceError(f"{name}: row {row}, column {column}: {values[bad[0]]} is not finite")
        negative = np.flatnonzero(values < 0)
        if negative.size and column != "t_seconds":
            row = negative[0]
            raise TraceError(
                f"{name}: row {row + 2}, column {column}: negative value {values[row]:g}"
            )
    t_s = data[:, header.index("t_seconds")]
    steps = np.diff(t_s)
    bad = np.flatnonzero(steps <= 0)
    if bad.size:
        row = int(bad[0]) + 3
        kind = "duplicated" if steps[bad[0]] == 0 else "out of order"
        raise TraceError(
            f"{name}: row {row}, column t_seconds: timestamp {t_s[bad[0] + 1]:g} is {kind}"
        )
