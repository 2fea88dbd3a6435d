"""PromQL text and the Prometheus source's pure parts: escaping, durations, templates, the
batching plan, option validation, turning answers into typed readings, trace writing. No
server here (see test_prometheus_live.py and friends)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale.adapters.prometheus.cli import parse_time_s
from elastiscale.adapters.prometheus.history import bin_count, chunk_ranges, write_trace
from elastiscale.adapters.prometheus.presets import PRESETS
from elastiscale.adapters.prometheus.promql import (
    SAMPLE_TIME_LABEL,
    PlannedQuery,
    SignalQuery,
    format_duration,
    matchers,
    parse_duration_s,
    plan_queries,
    quote,
    regex_alternation,
    template_problem,
)
from elastiscale.adapters.prometheus.source import (
    PrometheusParams,
    Reading,
    observation_from_readings,
    readings_from_answer,
)
from elastiscale.cli import main
from elastiscale.config import validate_mapping
from elastiscale.errors import ConfigError
from elastiscale.trace import Trace, load_trace

label_values = st.text(max_size=20)


# --------------------------------------------------------------------------------------------
# Escaping


@given(label_values)
def test_quote_reads_back_as_the_same_value(value: str) -> None:
    literal = quote(value)
    assert literal.startswith('"') and literal.endswith('"')
    assert "\n" not in literal
    assert json.loads(literal) == value


@given(st.lists(label_values, min_size=1, max_size=5), label_values)
def test_regex_alternation_matches_exactly_the_values(values: list[str], other: str) -> None:
    pattern = json.loads(regex_alternation(values))
    for value in values:
        assert re.fullmatch(pattern, value, flags=re.DOTALL)
    assert bool(re.fullmatch(pattern, other, flags=re.DOTALL)) == (other in values)


def _skeleton(promql: str) -> str:
    """The query with every string literal blanked: what a label value could change."""
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', promql)


@pytest.mark.parametrize(
    "name",
    ['llm"} or vector(1) #', 'a\\"b', "x\ny", "b.*", "a|c", "sum(up)", '"', "\\"],
)
def test_a_component_name_cannot_change_the_query(name: str) -> None:
    params = PrometheusParams.model_validate({"url": "http://p:9090", "preset": "vllm"})
    harmless = plan_queries([params.component_queries("llm")], 60.0)
    nasty = plan_queries([params.component_queries(name)], 60.0)
    for safe, odd in zip(harmless, nasty, strict=True):
        assert _skeleton(odd.promql) == _skeleton(safe.promql)
    pair = plan_queries([params.component_queries(n) for n in ("llm", "other")], 60.0)
    odd_pair = plan_queries([params.component_queries(n) for n in ("llm", name)], 60.0)
    for safe, odd in zip(pair, odd_pair, strict=True):
        assert _skeleton(odd.promql) == _skeleton(safe.promql)


@pytest.mark.parametrize(
    ("fixed", "label", "values", "expected"),
    [
        ({}, "model_name", ["a"], 'model_name="a"'),
        ({"job": "vllm"}, "model_name", ["a", "b"], 'job="vllm",model_name=~"a|b"'),
        ({"z": "1", "a": "2"}, "m", ["x", "x"], 'a="2",z="1",m="x"'),
        ({"model_name": "ignored"}, "model_name", ["a"], 'model_name="a"'),
        ({}, "m", ["a.b"], 'm="a.b"'),
        ({}, "m", ["a.b", "c"], 'm=~"a\\\\.b|c"'),
    ],
)
def test_matchers(fixed: dict[str, str], label: str, values: list[str], expected: str) -> None:
    assert matchers(fixed, label, values) == expected


@pytest.mark.parametrize("label", ["", "1abc", "a-b", 'a"', "a b"])
def test_matchers_refuse_bad_label_names(label: str) -> None:
    with pytest.raises(ValueError, match="not a valid label name"):
        matchers({}, label, ["x"])


# --------------------------------------------------------------------------------------------
# Durations and times


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10.0),
        ("1m30s", 90.0),
        ("250ms", 0.25),
        ("1h", 3600.0),
        ("7d", 604800.0),
        ("2.5", 2.5),
        (5, 5.0),
        ("1w", 604800.0),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "10x", "s", "-1", "0s", "1m 30s", "ten", "nan", 0])
def test_parse_duration_refuses(text: str | float) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration_s(text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(60.0, "60s"), (1.5, "1500ms"), (0.25, "250ms"), (3600, "3600s")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("seconds", [0.0, -1.0, 0.0001, math.inf])
def test_format_duration_refuses(seconds: float) -> None:
    with pytest.raises(ValueError):
        format_duration(seconds)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T00:00:00Z", 1714521600.0),
        ("2024-05-01T02:00:00+02:00", 1714521600.0),
        ("1714521600", 1714521600.0),
        ("now", 5000.0),
        ("now-1h", 1400.0),
    ],
)
def test_parse_time(text: str, expected: float) -> None:
    assert parse_time_s(text, now_s=5000.0) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("2024-05-01T00:00:00", "no time zone"), ("yesterday", "not a time"), ("now-x", "duration")],
)
def test_parse_time_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_time_s(text, now_s=0.0)


# --------------------------------------------------------------------------------------------
# Templates and the plan


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("sum by ($by) (x{$selector})", None),
        ("x{$sel}", "unknown placeholder $sel"),
        ("x{a=~'b$'}", "stray '$'"),
        ("x{a=~'b$$'}", None),
        ("   ", "empty query"),
    ],
)
def test_template_problem(text: str, problem: str | None) -> None:
    found = template_problem(text)
    assert found == problem if problem is None else problem in (found or "")


def test_render_adds_sample_times_in_the_same_request() -> None:
    query = SignalQuery("sum by ($by) (g{$selector})", "g{$selector}")
    assert query.render('m="a"', "m", "60s") == (
        '(sum by (m) (g{m="a"})) or label_replace(min by (m) (timestamp(g{m="a"})), '
        f'"{SAMPLE_TIME_LABEL}", "sample_time", "", "")'
    )
    assert SignalQuery("up").render("", "m", "60s") == "up"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_fifty_components_cost_one_query_per_signal(preset: str) -> None:
    params = PrometheusParams.model_validate({"url": "http://p:9090", "preset": preset})
    specs = [params.component_queries(f"c{i}") for i in range(50)]
    plan = plan_queries(specs, 60.0)
    assert len(plan) == len(PRESETS[preset].queries)
    assert all(len(q.components) == 50 and q.batched for q in plan)
    assert len(plan_queries(specs, 60.0, batch=False)) == 50 * len(PRESETS[preset].queries)


def test_components_that_differ_get_their_own_queries() -> None:
    params = PrometheusParams.model_validate(
        {
            "url": "http://p:9090",
            "preset": "vllm",
            "components": {
                "b": {"selector": {"namespace": "canary"}},
                "c": {"queries": {"in_flight": "my_in_flight{job='c'}"}},
                "d": {"preset": None, "queries": {"demand_rps": "sum(rate(x[$window]))"}},
            },
        }
    )
    plan = plan_queries([params.component_queries(n) for n in "abcd"], 60.0)
    in_flight = [q for q in plan if q.signal == "in_flight"]
    assert sorted(q.components for q in in_flight) == [("a",), ("b",), ("c",)]
    assert [q.promql for q in in_flight if q.components == ("c",)] == ["my_in_flight{job='c'}"]
    demand = {q.components: q for q in plan if q.signal == "demand_rps"}
    assert set(demand) == {("a", "c"), ("b",), ("d",)}
    assert not demand[("d",)].batched and demand[("d",)].promql == "sum(rate(x[60s]))"
    assert 'namespace="canary"' in demand[("b",)].promql


def test_component_settings_layer_over_the_source_and_the_preset() -> None:
    params = PrometheusParams.model_validate(
        {
            "url": "http://p:9090",
            "preset": "ray-serve",
            "selector": {"namespace": "prod"},
            "queries": {"utilization": "avg by ($by) (u{$selector})", "queue_length": None},
            "components": {"llm": {"label": "app", "label_value": "chat", "selector": {"x": "y"}}},
        }
    )
    llm = params.component_queries("llm")
    assert (llm.label, llm.value) == ("app", "chat")
    assert dict(llm.selector) == {"namespace": "prod", "x": "y"}
    assert "queue_length" not in llm.queries
    assert llm.queries["utilization"].expr == "avg by ($by) (u{$selector})"
    router = params.component_queries("router")
    assert (router.label, router.value) == ("deployment", "router")


# --------------------------------------------------------------------------------------------
# Options, as `elastiscale validate` reports them

PIPELINE = {
    "name": "p",
    "slo": {"latency_p95_s": 30},
    "components": {
        "router": {
            "ingress": True,
            "capacity_per_replica": 50,
            "service_time_s": 0.05,
            "replicas": {"min": 1, "max": 20},
        },
        "llm": {"capacity_per_replica": 1.5, "service_time_s": 4, "replicas": {"max": 8}},
    },
    "edges": [{"from": "router", "to": "llm", "fanout": 3}],
}


@pytest.mark.parametrize(
    ("metrics", "problem"),
    [
        ({"url": "http://p", "presets": "vllm"}, "metrics.presets: unknown key"),
        ({"url": "http://p", "preset": "vlm"}, "metrics.preset: unknown preset 'vlm'"),
        ({"preset": "vllm"}, "metrics.url: Field required"),
        ({"url": "p:9090"}, "must start with http:// or https://"),
        ({"url": "http://p", "timeout_s": 0}, "metrics.timeout_s: Input should be greater than 0"),
        (
            {"url": "http://p", "components": {"lm": {}}},
            "metrics.components: unknown component 'lm' (components: router, llm)",
        ),
        (
            {"url": "http://p", "components": {"llm": {"queries": {"demand": "x"}}}},
            "metrics.components.llm.queries: unknown signal 'demand'",
        ),
        (
            {"url": "http://p", "queries": {"in_flight": "x{$sel}"}},
            "metrics.queries.in_flight.expr: unknown placeholder $sel",
        ),
        (
            {"url": "http://p", "components": {"llm": {"label": "model-name"}}},
            "metrics.components.llm.label: 'model-name' is not a valid label name",
        ),
        (
            {"url": "http://p", "auth": {"username": "u", "bearer_token": "t"}},
            "metrics.auth: set exactly one of bearer_token, bearer_token_file, username",
        ),
        (
            {"url": "http://p", "tls": {"cert_file": "/c.pem"}},
            "metrics.tls: cert_file and key_file go together",
        ),
        ({"url": "http://p", "rate_window_s": -5}, "metrics.rate_window_s: Input should be"),
    ],
)
def test_bad_options_are_named(metrics: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_mapping({"pipeline": PIPELINE, "metrics": {"type": "prometheus", **metrics}})
    assert any(problem in line for line in caught.value.problems), caught.value.problems


def test_good_options_pass() -> None:
    config = validate_mapping(
        {
            "pipeline": PIPELINE,
            "metrics": {
                "type": "prometheus",
                "url": "https://prom:9090",
                "preset": "vllm",
                "auth": {"username": "u", "password": "p"},
                "tls": {"ca_file": "/etc/ca.pem"},
                "components": {"router": {"preset": None, "queries": {"demand_rps": "up"}}},
            },
        }
    )
    assert config.metrics is not None and config.metrics.type == "prometheus"


# --------------------------------------------------------------------------------------------
# Answers to readings

NOW_S = 10_000.0
STALENESS_S = {"a": 120.0, "b": 120.0, "c": 120.0}
BATCH = PlannedQuery(
    signal="in_flight",
    promql="",
    label="m",
    components=("a", "b", "c"),
    batched=True,
    by_value={"a": ("a",), "b": ("b",), "c": ("c",)},
)
STAMP = {SAMPLE_TIME_LABEL: "sample_time"}


@pytest.mark.parametrize(
    ("series", "expected"),
    [
        pytest.param(
            [({"m": "a"}, NOW_S, 3.0), ({"m": "a", **STAMP}, NOW_S, NOW_S - 7)],
            {"a": Reading(3.0, NOW_S - 7)},
            id="value dated by its sample",
        ),
        pytest.param(
            [({"m": "a"}, NOW_S, 3.0)], {"a": Reading(3.0, NOW_S)}, id="no sample time: eval"
        ),
        pytest.param([], {"a": Reading(None, NOW_S, "no data")}, id="nothing"),
        pytest.param(
            [({"m": "a", **STAMP}, NOW_S, NOW_S - 1)],
            {"a": Reading(None, NOW_S, "no data")},
            id="a sample time but no value",
        ),
        pytest.param(
            [({"m": "a"}, NOW_S, math.nan), ({"m": "a", **STAMP}, NOW_S, NOW_S - 5)],
            {"a": Reading(None, NOW_S - 5, "nan")},
            id="nan",
        ),
        pytest.param(
            [({"m": "a"}, NOW_S, math.inf)],
            {"a": Reading(None, NOW_S, "not finite: +inf")},
            id="inf",
        ),
        pytest.param(
            [({"m": "a", "pod": "1"}, NOW_S, 1.0), ({"m": "a", "pod": "2"}, NOW_S, 2.0)],
            {"a": Reading(None, NOW_S, "ambiguous: 2 series")},
            id="ambiguous",
        ),
        pytest.param(
            [({"m": "a"}, NOW_S, 3.0), ({"m": "a", **STAMP}, NOW_S, NOW_S - 121)],
            {"a": Reading(None, NOW_S - 121, "stale")},
            id="stale",
        ),
        pytest.param(
            [({"m": "b"}, NOW_S, 0.0), ({"m": "zzz"}, NOW_S, 9.0)],
            {"b": Reading(0.0, NOW_S), "c": Reading(None, NOW_S, "no data")},
            id="zero is a value; other labels ignored",
        ),
    ],
)
def test_readings_from_answer(
    series: list[tuple[dict[str, str], float, float]], expected: dict[str, Reading]
) -> None:
    got = readings_from_answer(BATCH, series, NOW_S, STALENESS_S)
    for component, reading in expected.items():
        assert got[component] == reading


def test_observation_from_readings() -> None:
    obs = observation_from_readings(
        "a",
        {
            "demand_rps": Reading(2.5, NOW_S - 10),
            "ready_replicas": Reading(2.6, NOW_S - 3),
            "in_flight": Reading(None, NOW_S, "nan"),
        },
        NOW_S,
    )
    assert (obs.demand_rps, obs.ready_replicas, obs.in_flight, obs.at_s) == (
        2.5,
        3,
        None,
        NOW_S - 10,
    )
    assert obs.missing["in_flight"] == "nan"
    assert obs.missing["queue_length"] == "not configured"
    empty = observation_from_readings("a", {}, NOW_S)
    assert empty.at_s == NOW_S and empty.demand_rps is None


# --------------------------------------------------------------------------------------------
# Ranges and trace files


@pytest.mark.parametrize(
    ("start", "end", "step", "bins"),
    [(0, 60, 10, 6), (0, 65, 10, 6), (0, 0.3, 0.1, 3), (100, 7 * 86400 + 100, 10, 60480)],
)
def test_bin_count(start: float, end: float, step: float, bins: int) -> None:
    assert bin_count(start, end, step) == bins


@pytest.mark.parametrize(
    ("start", "end", "step", "message"),
    [(10, 10, 1, "must be after start"), (0, 5, 10, "shorter than one step"), (0, 5, 0, "> 0")],
)
def test_bin_count_refuses(start: float, end: float, step: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bin_count(start, end, step)


@given(st.integers(1, 50_000), st.integers(1, 12_000))
def test_chunks_cover_every_point_once(points: int, max_points: int) -> None:
    chunks = list(chunk_ranges(0.0, points, 10.0, max_points))
    assert all(1 <= count <= max_points for _, count in chunks)
    covered = [offset + i for offset, count in chunks for i in range(count)]
    assert covered == list(range(points))


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(0, 1e9, allow_nan=False), min_size=1, max_size=40),
    st.sampled_from([1.0, 10.0, 0.5]),
)
def test_written_traces_read_back_equal(counts: list[float], bin_s: float) -> None:
    import tempfile

    values = np.asarray(counts)
    trace = Trace(
        "t",
        np.arange(values.size) * bin_s,
        values,
        bin_s,
        columns={"input_tokens": values * 3.7},
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("t.csv", "t.csv.gz"):
            back = load_trace(write_trace(trace, Path(tmp) / name))
            assert np.array_equal(back.t_s, trace.t_s)
            assert np.array_equal(back.requests, trace.requests)
            assert np.array_equal(back.columns["input_tokens"], trace.columns["input_tokens"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--start", "2024-05-01T00:00:00", "--end", "now"], "no time zone"),
        (["--start", "now-1h", "--end", "now", "--step", "ten"], "not a duration"),
        (["--start", "now", "--end", "now-1h"], "must be after start"),
        (["--start", "now-1h", "--end", "now", "--prometheus", "localhost:9"], "http://"),
    ],
)
def test_export_trace_refuses_bad_arguments(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["export-trace", "--prometheus", "http://127.0.0.1:9", "--query", "up"]
    code = main([*base, "--out", str(tmp_path / "t.csv"), *argv])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t.csv").exists()


def test_export_trace_unreachable_server_is_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from elastiscale.testing.prometheus import free_port

    url = f"http://127.0.0.1:{free_port()}"
    argv = ["export-trace", "--prometheus", url, "--query", "up", "--start", "now-1h"]
    code = main([*argv, "--end", "now", "--out", str(tmp_path / "t.csv"), "--timeout", "2s"])
    assert code == 1
    assert "cannot connect" in capsys.readouterr().err
