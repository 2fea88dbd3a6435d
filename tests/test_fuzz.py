"""Bad input for every parser an operator's data reaches (benchmarks/fuzz_targets.py):

- a few thousand mutated inputs, 500 per target (the config loader, the trace reader,
  Prometheus answers, the Kubernetes, SageMaker and Ray Serve answers the actuators parse),
  with zero contract breaks (`benchmarks/fuzz.py --count N` runs as many as asked);
- hypothesis strategies for what mutation rarely makes: arbitrary JSON and bytes as a
  Prometheus answer, arbitrary text as a trace or a config file, odd values at every field
  of a shipped config.
"""

from __future__ import annotations

import json
import logging
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import fuzz_targets
from fuzz_targets import TARGETS, Target, fuzz

PER_TARGET = 500


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    logging.disable(logging.CRITICAL)  # every refusal is logged; thousands of lines
    yield
    logging.disable(logging.NOTSET)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_mutated_inputs_break_no_contract(name: str) -> None:
    if name == "sagemaker":
        pytest.importorskip("boto3")
    target = TARGETS[name]()
    try:
        tally = fuzz(target, PER_TARGET, seed=1)
    finally:
        target.close()
    assert tally.tried == PER_TARGET
    assert tally.failures == 0, tally.first


def test_the_contract_checks_can_fail() -> None:
    """A target that breaks its contract is counted, with the input named."""

    def run(rng: random.Random) -> None:
        if rng.random() < 0.5:
            raise KeyError("boom")

    tally = fuzz(Target("broken", run), 40, seed=0)
    assert 0 < tally.failures < 40 and tally.first and "KeyError" in tally.first[0]


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers()
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def prometheus() -> Iterator[Target]:
    target = TARGETS["prometheus"]()
    yield target
    target.close()


def _observe(target: Target, status: int, body: bytes) -> None:
    target.answers.fixed = (status, body)  # type: ignore[attr-defined]
    try:
        target.run(random.Random(0))
    finally:
        target.answers.fixed = None  # type: ignore[attr-defined]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=JSON, status=st.sampled_from([200, 200, 400, 500, 503]))
def test_any_json_as_a_prometheus_answer(prometheus: Target, doc: Any, status: int) -> None:
    logging.disable(logging.CRITICAL)
    wrapped = {"status": "success", "data": {"resultType": "vector", "result": doc}}
    _observe(prometheus, status, json.dumps(wrapped).encode())
    _observe(prometheus, status, json.dumps(doc).encode())


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=200))
def test_any_bytes_as_a_prometheus_answer(prometheus: Target, body: bytes) -> None:
    logging.disable(logging.CRITICAL)
    _observe(prometheus, 200, body)


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=300))
def test_any_text_as_a_trace(text: str) -> None:
    from elastiscale.errors import TraceError
    from elastiscale.trace import parse_trace

    try:
        parse_trace("t_seconds,requests\n" + text, "t.csv")
    except TraceError as exc:
        assert "\n" not in str(exc)


EXAMPLE = REPO / "examples" / "pipelines" / "agent.yaml"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_odd_values_at_any_field_of_a_shipped_config(data: st.DataObject) -> None:
    import yaml

    from elastiscale.config import load_config
    from elastiscale.errors import ConfigError

    raw = yaml.safe_load(EXAMPLE.read_text())
    paths = [p for p in fuzz_targets._paths(raw) if p]
    path = data.draw(st.sampled_from(paths))
    parent = fuzz_targets._get(raw, path[:-1])
    parent[path[-1]] = data.draw(JSON)
    try:
        load_config(raw)
    except ConfigError as exc:
        assert exc.problems and all("\n" not in p for p in exc.problems)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=400))
def test_any_text_as_a_config_file(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    from elastiscale.config import load_config
    from elastiscale.errors import ConfigError

    path = Path(tmp_path_factory.getbasetemp()) / "fuzz-config.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as exc:
        assert exc.problems and all("\n" not in p for p in exc.problems)


def test_mutation_leaves_its_sources_alone() -> None:
    """Each input is a fresh copy: neither the example nor the odd values drift over a run."""
    import copy

    tree = {"a": [1, {"b": 2}], "c": {"d": [3]}}
    before, weird = copy.deepcopy(tree), copy.deepcopy(fuzz_targets.WEIRD)
    for i in range(2000):
        fuzz_targets.mutate_tree(tree, random.Random(i), edits=3)
    assert tree == before
    assert repr(fuzz_targets.WEIRD) == repr(weird)  # (repr: NaN is not equal to itself)
