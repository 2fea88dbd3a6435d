"""Recorded demand from Prometheus: range queries fetched in chunks, turned into a `Trace`.

`fetch_trace(url, query, start_s, end_s, step_s)` evaluates a rate query (requests per second)
every `step_s` and gives a trace in the shared format: bin i starts at t_seconds = i x step_s
(relative to `start_s`) and holds rate x step_s requests, the rate being the query's value at
the end of the bin, `start_s + (i + 1) x step_s` (a `rate(x[w])` then covers the bin's own
last `w` seconds). Worked example: start 12:00:00, end 12:01:00, step 10 s -> 6 bins, the query
evaluated at 12:00:10, ..., 12:01:00; a rate of 2.5/s at 12:00:10 is 25 requests in bin 0.

Prometheus refuses a range query of more than 11,000 points per series, so a long range is
fetched in consecutive chunks of at most `max_points_per_query` evaluation times, with a
progress bar on a terminal. 7 days at 10 s is 60,480 points: 6 chunks.

A point with no value (a gap in the data) or a NaN is not silently zero: the fetch fails naming
the first such time, unless `fill_gaps=True` counts such bins as no requests.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import math
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from elastiscale.adapters.prometheus.http import ConnectionParams, PrometheusHTTP
from elastiscale.errors import TraceError
from elastiscale.trace import Trace

Array = npt.NDArray[np.float64]

#: Prometheus's limit on the points of one series in one range query.
MAX_POINTS_PER_QUERY = 11_000


def iso(seconds: float) -> str:
    """Unix seconds as an ISO 8601 UTC time, for messages."""
    return _dt.datetime.fromtimestamp(seconds, tz=_dt.UTC).isoformat().replace("+00:00", "Z")


def bin_count(start_s: float, end_s: float, step_s: float) -> int:
    """Whole bins of `step_s` in [start_s, end_s); a partial last bin is left out."""
    if not (math.isfinite(start_s) and math.isfinite(end_s)):
        raise ValueError("start and end must be finite times")
    if step_s <= 0 or not math.isfinite(step_s):
        raise ValueError(f"step = {step_s} s, must be > 0")
    if end_s <= start_s:
        raise ValueError(f"end ({iso(end_s)}) must be after start ({iso(start_s)})")
    bins = math.floor((end_s - start_s) / step_s + 1e-9)
    if bins < 1:
        raise ValueError(
            f"the range {iso(start_s)} to {iso(end_s)} is shorter than one step of {step_s:g} s"
        )
    return bins


def chunk_ranges(
    first_s: float, points: int, step_s: float, max_points: int
) -> Iterator[tuple[int, int]]:
    """(offset, count) of consecutive chunks covering `points` evaluation times, each at most
    `max_points` long. Worked example: 25 points, at most 10 -> (0, 10), (10, 10), (20, 5)."""
    if max_points < 1:
        raise ValueError(f"max_points = {max_points}, must be >= 1")
    for offset in range(0, points, max_points):
        yield offset, min(max_points, points - offset)


def fetch_values(
    http: PrometheusHTTP,
    query: str,
    first_s: float,
    points: int,
    step_s: float,
    *,
    max_points: int = MAX_POINTS_PER_QUERY,
    bar: tqdm | None = None,
) -> Array:
    """Values of a single-series query at first_s + k x step_s, k < points; NaN where the
    answer has no point. Raises `TraceError` when the query returns more than one series."""
    values = np.full(points, np.nan)
    labels_seen: list[dict[str, str]] = []
    for offset, count in chunk_ranges(first_s, points, step_s, max_points):
        chunk_start_s = first_s + offset * step_s
        chunk_end_s = first_s + (offset + count - 1) * step_s
        for labels, times_s, got in http.range(query, chunk_start_s, chunk_end_s, step_s):
            if labels not in labels_seen:
                labels_seen.append(labels)
            k = np.rint((times_s - first_s) / step_s).astype(np.int64)
            inside = (k >= 0) & (k < points)
            values[k[inside]] = got[inside]
        if len(labels_seen) > 1:
            shown = ", ".join(_labels_text(lab) for lab in labels_seen[:3])
            raise TraceError(
                f"query {query!r} returned {len(labels_seen)} series ({shown}); "
                "aggregate it to one, e.g. sum(...)"
            )
        if bar is not None:
            bar.update(count)
    return values


def _labels_text(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f"{k}={v!r}" for k, v in sorted(labels.items())) + "}"


def fetch_trace(
    url: str | ConnectionParams,
    query: str,
    start_s: float,
    end_s: float,
    step_s: float,
    *,
    columns: Mapping[str, str] | None = None,
    name: str | None = None,
    max_points_per_query: int = MAX_POINTS_PER_QUERY,
    progress: bool | None = None,
    fill_gaps: bool = False,
) -> Trace:
    """A trace of the requests a rate query recorded between `start_s` and `end_s` (Unix
    seconds), in bins of `step_s` (see the module docstring for the exact alignment).

    `columns` adds per-bin sums from other rate queries (e.g. `input_tokens`: a token rate).
    `url` may be a `ConnectionParams` for auth, TLS and timeouts; a plain URL gets a 30 s
    timeout and 2 retries. `progress`: None shows a bar only on a terminal.
    Raises `TraceError` (several series, a gap, a negative or infinite value),
    `MetricSourceError` (server unreachable) or `PromQLError` (the query was refused).
    """
    params = (
        url
        if isinstance(url, ConnectionParams)
        else ConnectionParams(url=url, timeout_s=30.0, retries=2)
    )
    points = bin_count(start_s, end_s, step_s)
    first_s = start_s + step_s
    queries = {"requests": query, **dict(columns or {})}
    http = PrometheusHTTP(params)
    rates: dict[str, Array] = {}
    try:
        with tqdm(
            total=points * len(queries),
            unit="pt",
            unit_scale=True,
            desc="fetching",
            disable=None if progress is None else not progress,
        ) as bar:
            for column, text in queries.items():
                rates[column] = fetch_values(
                    http, text, first_s, points, step_s, max_points=max_points_per_query, bar=bar
                )
    finally:
        http.close()
    for column, text in queries.items():
        rates[column] = _checked(rates[column], column, text, first_s, step_s, fill_gaps)
    return Trace(
        name=name or query,
        t_s=np.arange(points, dtype=float) * step_s,
        requests=rates.pop("requests") * step_s,
        bin_s=float(step_s),
        columns={column: values * step_s for column, values in rates.items()},
    )


def _checked(
    values: Array, column: str, query: str, first_s: float, step_s: float, fill_gaps: bool
) -> Array:
    """`values` unless a point is missing, NaN, infinite or negative (TraceError naming it)."""
    gaps = np.flatnonzero(np.isnan(values))
    if gaps.size and not fill_gaps:
        k = int(gaps[0])
        raise TraceError(
            f"{column}: query {query!r} has no value at {gaps.size} of {values.size} points, "
            f"first at {iso(first_s + k * step_s)} (bin t_seconds={k * step_s:g}); check the "
            "range and the query, or fill gaps with zero requests"
        )
    values = np.where(np.isnan(values), 0.0, values)
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
    if bad.size:
        k = int(bad[0])
        raise TraceError(
            f"{column}: query {query!r} gave {values[k]} at {iso(first_s + k * step_s)} "
            f"(bin t_seconds={k * step_s:g}); a rate must be finite and >= 0"
        )
    return values


# --------------------------------------------------------------------------------------------
# Writing the shared format


def _cell(value: float) -> str:
    """A number as the shortest text that reads back to the same float (7, not 7.0)."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(value)


def write_trace(trace: Trace, path: str | Path) -> Path:
    """Write `trace` as a CSV trace file (gzipped when the name ends in .gz); values read back
    by `elastiscale.trace.load_trace` are equal to the written ones."""
    path = Path(path)
    header = ["t_seconds", "requests", *trace.columns]
    series = [trace.t_s, trace.requests, *trace.columns.values()]
    lines = [",".join(header)]
    lines += [",".join(_cell(float(col[i])) for col in series) for i in range(len(trace))]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path
