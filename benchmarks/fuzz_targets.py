"""What `fuzz.py` (and tests/test_fuzz.py) feeds bad input to, and what each may answer.

A target makes one input from a seeded `random.Random` (a mutation of a shipped example or of
a well-formed answer) and runs it through the real parsing code. The contract of every
target: the input is accepted, or refused with the target's own error type whose message is
one line; anything else (another exception, a multi-line message, a non-finite number taken
for a value, an actuator call that raises instead of reporting) is a failure.

- `config`: `load_config` on the shipped example configs, mutated as trees and as YAML text;
  refusals are `ConfigError`, one line per problem.
- `trace`: `parse_trace` on the bundled traces' first rows, mutated as CSV text; `TraceError`.
- `prometheus`: `PrometheusMetricSource.observe` through its real HTTP client, the answers
  (status, JSON body: malformed, truncated, wrong types, huge and non-finite numbers) served by
  a requests adapter; `MetricSourceError`, and every value read is finite.
- `kubernetes`: the Kubernetes actuator through the official client, its urllib3 pool answering
  mutated Scale objects, Status errors and Retry-After headers; `read` raises only
  `ActuatorError`, `scale` never raises.
- `sagemaker`: the SageMaker actuator, its boto3 client answering mutated DescribeEndpoint /
  DescribeInferenceComponent dicts and `ClientError`s; as for Kubernetes.
- `ray`: the Ray Serve actuator, `urlopen` answering mutated `/api/serve/applications/` bodies
  and HTTP errors; as for Kubernetes.
"""

from __future__ import annotations

import json
import math
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from elastiscale.config import load_config, validate_mapping
from elastiscale.errors import ConfigError, MetricSourceError, TraceError
from elastiscale.trace import parse_trace
from fuzz_actuators import kubernetes_target, ray_target, sagemaker_target
from fuzz_core import (
    TEXT_BITS,
    WEIRD,
    ContractError,
    Target,
    _get,
    _one_line,
    _paths,
    fuzz_pipeline,
    mutate_text,
    mutate_tree,
)

REPO = Path(__file__).resolve().parent.parent

# --- config ------------------------------------------------------------------------------------


def _example_configs() -> list[tuple[Path, str, Any]]:
    found = []
    for path in sorted((REPO / "examples").rglob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        try:
            raw = yaml.safe_load(text)
            if not isinstance(raw, dict) or "pipeline" not in raw:
                continue
            load_config(path)
        except Exception:
            continue  # not a config of its own (a manifest, a scenario)
        found.append((path, text, raw))
    return found


def config_target() -> Target:
    examples = _example_configs()
    workdir = tempfile.TemporaryDirectory(prefix="elastiscale-fuzz-")
    scratch = Path(workdir.name) / "config.yaml"

    def run(rng: random.Random) -> None:
        _path, text, raw = rng.choice(examples)
        try:
            if rng.random() < 0.5:
                validate_mapping(mutate_tree(raw, rng))  # as load_config does after YAML
            else:
                scratch.write_text(mutate_text(text, rng), encoding="utf-8")
                load_config(scratch)
        except ConfigError as exc:
            if not exc.problems:
                raise ContractError("ConfigError without problems") from None
            for line in exc.problems:
                _one_line(line, "config problem")

    return Target("config", run, workdir.cleanup)


# --- trace -------------------------------------------------------------------------------------


def trace_target() -> Target:
    heads = []
    for path in sorted((REPO / "examples" / "traces").glob("*.csv")):
        with path.open(encoding="utf-8") as f:
            heads.append("".join(next(f) for _ in range(200)))

    def run(rng: random.Random) -> None:
        text = rng.choice(heads)
        if rng.random() < 0.4:  # a cell replaced
            lines = text.split("\n")
            row = rng.randrange(len(lines))
            cells = lines[row].split(",")
            cells[rng.randrange(len(cells))] = str(rng.choice(WEIRD))
            lines[row] = ",".join(cells)
            text = "\n".join(lines)
        else:
            text = mutate_text(text, rng)
        try:
            trace = parse_trace(text, "fuzz.csv")
        except TraceError as exc:
            _one_line(str(exc), "trace error")
            return
        if not (trace.requests >= 0).all() or not math.isfinite(float(trace.requests.sum())):
            raise ContractError("a trace with negative or non-finite counts was accepted")

    return Target("trace", run)


# --- prometheus --------------------------------------------------------------------------------

PROM_CONFIG: dict[str, Any] = {
    "pipeline": fuzz_pipeline(with_llm=True),
    "metrics": {"type": "prometheus", "url": "http://prometheus.fuzz:9090", "preset": "vllm"},
}


def _vector(now_s: float) -> dict[str, Any]:
    result = []
    for name in ("router", "llm"):
        result.append({"metric": {"model_name": name}, "value": [now_s, "3.5"]})
        result.append(
            {
                "metric": {"model_name": name, "elastiscale_part": "sample_time"},
                "value": [now_s, str(now_s - 5)],
            }
        )
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


class _Answers:
    """A requests transport adapter answering what the fuzzer says."""

    def __init__(self) -> None:
        import requests

        self.requests = requests
        self.rng = random.Random(0)
        self.now_s = 1.7e9
        #: A fixed answer (status, body) instead of a mutated one (for hypothesis).
        self.fixed: tuple[int, bytes] | None = None

    def body(self) -> tuple[int, bytes]:
        if self.fixed is not None:
            return self.fixed
        rng = self.rng
        status = rng.choice((200,) * 8 + (400, 422, 500, 503, 401, 302))
        doc: Any = _vector(self.now_s)
        if rng.random() < 0.3:
            doc["data"]["resultType"] = rng.choice(("matrix", "scalar", "string", 5, None))
        doc = mutate_tree(doc, rng) if rng.random() < 0.8 else doc
        try:
            text = json.dumps(doc)  # NaN and Infinity as bare words: not JSON, as some send
        except (TypeError, ValueError):
            text = str(doc)
        if rng.random() < 0.3:
            text = mutate_text(text, rng)
        return status, text.encode("utf-8", "replace")

    def send(self, request: Any, **kwargs: Any) -> Any:
        status, body = self.body()
        response = self.requests.Response()
        response.status_code = status
        response._content = body
        response.headers["Content-Type"] = "application/json"
        response.url = request.url
        response.request = request
        return response

    def close(self) -> None:
        """Nothing to close."""


def prometheus_target() -> Target:
    from elastiscale.adapters.prometheus import PrometheusMetricSource

    config = validate_mapping(PROM_CONFIG)
    assert config.metrics is not None
    source = PrometheusMetricSource(config, config.metrics.options())
    answers = _Answers()
    source.http._session.mount(source.http.url + "/", answers)  # type: ignore[arg-type]
    names = ["router", "llm"]

    def run(rng: random.Random) -> None:
        answers.rng = rng
        try:
            got = source.observe(names, answers.now_s)
        except MetricSourceError as exc:
            _one_line(str(exc), "metric source error")
            return
        if sorted(got) != sorted(names):
            raise ContractError(f"observations for {sorted(got)}, asked for {names}")
        for obs in got.values():
            for signal, value in obs.to_dict().items():
                if isinstance(value, float) and not math.isfinite(value):
                    raise ContractError(f"{obs.component}.{signal} = {value} taken for a value")

    target = Target("prometheus", run, source.close)
    target.answers = answers  # type: ignore[attr-defined]
    return target


TARGETS: dict[str, Callable[[], Target]] = {
    "config": config_target,
    "trace": trace_target,
    "prometheus": prometheus_target,
    "kubernetes": kubernetes_target,
    "sagemaker": sagemaker_target,
    "ray": ray_target,
}


@dataclass
class Tally:
    tried: int = 0
    failures: int = 0
    first: list[str] | None = None


def fuzz(target: Target, count: int, seed: int, keep: int = 5) -> Tally:
    """Run `count` inputs of `target` (input i from seed `seed`, i); failures are contract
    breaks and uncaught exceptions, the first `keep` described."""
    tally = Tally(first=[])
    for i in range(count):
        rng = random.Random(f"{seed}:{target.name}:{i}")
        tally.tried += 1
        try:
            target.run(rng)
        except Exception as exc:  # everything that escapes is a failure
            tally.failures += 1
            if tally.first is not None and len(tally.first) < keep:
                tally.first.append(f"input {i}: {type(exc).__name__}: {exc}"[:300])
    return tally


__all__ = [
    "TARGETS",
    "TEXT_BITS",
    "WEIRD",
    "ContractError",
    "Tally",
    "Target",
    "_get",
    "_paths",
    "fuzz",
    "mutate_text",
    "mutate_tree",
]
