"""Trace files: parsing, validation messages naming file/row/column, gzip, scaling, windows."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from elastiscale import TraceError, load_trace
from elastiscale.trace import parse_trace

GOOD = "t_seconds,requests,input_tokens,output_tokens\n0,2,100,10\n10,0,0,0\n20,5,500,50\n"


def test_parses_columns_and_bin() -> None:
    trace = parse_trace(GOOD, name="x.csv")
    assert trace.bin_s == 10
    assert trace.requests.tolist() == [2, 0, 5]
    assert trace.rate_rps().tolist() == [0.2, 0.0, 0.5]
    assert trace.work("tokens").tolist() == [110, 0, 550]
    assert (trace.start_s, trace.end_s, trace.duration_s) == (0, 30, 30)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "x.csv: empty file"),
        ("t_seconds,requests\n", "x.csv: no data rows"),
        ("time,requests\n0,1\n", "x.csv: row 1: missing column t_seconds"),
        ("t_seconds,requests\n0,1\n1,abc\n", "x.csv: row 3, column requests: not a number: 'abc'"),
        ("t_seconds,requests\n0,1\n1,\n", "x.csv: row 3, column requests: not a number: ''"),
        ("t_seconds,requests\n0,1\n1,-3\n", "x.csv: row 3, column requests: negative value -3"),
        ("t_seconds,requests\n0,1\n1,nan\n", "x.csv: row 3, column requests: nan is not finite"),
        (
            "t_seconds,requests\n0,1\n2,1\n1,1\n",
            "x.csv: row 4, column t_seconds: timestamp 1 is o",
        ),
        (
            "t_seconds,requests\n0,1\n1,1\n1,1\n",
            "x.csv: row 4, column t_seconds: timestamp 1 is d",
        ),
        ("t_seconds,requests\n0,1\n1,1,7\n", "x.csv: row 3: 3 fields, the header has 2"),
        ("t_seconds,requests\n# a note\n", "x.csv: row 2: 1 fields, the header has 2"),
        ("t_seconds,requests\n0,1\n# a note\n1,1\n", "x.csv: row 3: 1 fields, the header"),
        ("t_seconds,requests\n0,1 # a note\n", "x.csv: row 2, column requests: not a number"),
        ("t_seconds,requests\n0,1\n1,1\n2,1\n5,1\n", "x.csv: row 5, column t_seconds: step 3 s"),
    ],
)
@pytest.mark.filterwarnings("error")  # refused with its one line, and nothing else said
def test_bad_input_names_file_row_and_column(text: str, message: str) -> None:
    with pytest.raises(TraceError) as info:
        parse_trace(text, name="x.csv")
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_gzip_is_read_transparently(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    path.write_bytes(gzip.compress(GOOD.encode()))
    assert load_trace(path).requests.sum() == 7


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read"):
        load_trace(tmp_path / "absent.csv")


def test_scaled_and_window() -> None:
    trace = parse_trace(GOOD)
    fast = trace.scaled(time_scale=0.5, rate_scale=2.0)
    assert fast.bin_s == 5 and fast.requests.tolist() == [4, 0, 10]
    assert np.allclose(fast.rate_rps(), trace.rate_rps() * 4)
    part = trace.window(10, 30)
    assert part.t_s.tolist() == [10, 20] and part.columns["input_tokens"].tolist() == [0, 500]
    with pytest.raises(TraceError, match="no bins"):
        trace.window(100, 200)


def test_bundled_traces_load() -> None:
    root = Path(__file__).resolve().parents[1] / "examples" / "traces"
    for path in sorted(root.glob("*.csv")):
        trace = load_trace(path)
        assert trace.bin_s == 1 and len(trace) > 3000 and trace.has_unit("tokens")
