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

import contextlib
import copy
import io
import json
import math
import random
import string
import tempfile
import urllib.error
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any
from unittest import mock

import yaml

from elastiscale.config import load_config, validate_mapping
from elastiscale.errors import ActuatorError, ConfigError, MetricSourceError, TraceError
from elastiscale.trace import parse_trace

REPO = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------------------------
# Mutators

WEIRD: tuple[Any, ...] = (
    None,
    "",
    "x" * 300,
    -1,
    0,
    1,
    2**63,
    -(2**63),
    1e308,
    -1e308,
    1e-320,
    math.nan,
    math.inf,
    -math.inf,
    True,
    False,
    [],
    {},
    [1, 2],
    {"a": 1},
    "NaN",
    "+Inf",
    "-Inf",
    "1e999",
    "-5",
    "0x10",
    "é\u202e\x00",
    "12:30",
    "true",
)

TEXT_BITS = (
    ":",
    "-",
    "{",
    "}",
    "[",
    "]",
    "'",
    '"',
    "\t",
    "\n",
    "&a",
    "*a",
    "!!",
    "%",
    "\x00",
    "é",
    ",",
    "#",
    "|",
    ">",
    "  ",
    "NaN",
    "1e999",
    "-",
    "0",
    "null",
    "~",
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        node = node[step]
    return node


def mutate_tree(tree: Any, rng: random.Random, edits: int | None = None) -> Any:
    """A deep copy of `tree` with 1-3 edits: a value replaced by an odd one, a key deleted,
    renamed or added, a list item duplicated or dropped, a subtree swapped for another."""
    out = copy.deepcopy(tree)
    for _ in range(edits or rng.randint(1, 3)):
        paths = list(_paths(out))
        path = rng.choice(paths)
        if not path:
            if rng.random() < 0.1:
                out = copy.deepcopy(rng.choice(WEIRD))
            continue
        parent = _get(out, path[:-1])
        key = path[-1]
        choice = rng.random()
        if choice < 0.45:
            parent[key] = copy.deepcopy(rng.choice(WEIRD))
        elif choice < 0.6:
            del parent[key]
        elif choice < 0.7 and isinstance(parent, dict):
            parent[str(key) + rng.choice(("_", "x", "s"))] = parent.pop(key)
        elif choice < 0.8 and isinstance(parent, dict):
            added = rng.choice(("extra", "min", "max", "type", "name"))
            parent[added] = copy.deepcopy(rng.choice(WEIRD))
        elif choice < 0.9 and isinstance(parent, list):
            parent.insert(int(key), copy.deepcopy(parent[key]))
        else:
            parent[key] = copy.deepcopy(_get(out, rng.choice(paths)))
    return out


def mutate_text(text: str, rng: random.Random) -> str:
    """`text` with 1-3 edits: a slice deleted or duplicated, odd characters inserted, lines
    swapped, or the text truncated."""
    for _ in range(rng.randint(1, 3)):
        n = len(text)
        if n == 0:
            return rng.choice(TEXT_BITS)
        i = rng.randrange(n)
        j = min(n, i + rng.randint(1, 40))
        choice = rng.random()
        if choice < 0.25:
            text = text[:i] + text[j:]
        elif choice < 0.5:
            text = text[:i] + rng.choice(TEXT_BITS) + text[i:]
        elif choice < 0.6:
            text = text[:j] + text[i:j] + text[j:]
        elif choice < 0.75:
            lines = text.split("\n")
            a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
        elif choice < 0.85:
            text = text[:i]
        else:
            text = text[:i] + rng.choice(string.printable) + text[i + 1 :]
    return text


# --------------------------------------------------------------------------------------------
# Targets


class ContractError(Exception):
    """An input broke the target's contract."""


@dataclass
class Target:
    name: str
    run: Callable[[random.Random], None]
    close: Callable[[], None] = lambda: None


def _one_line(message: str, what: str) -> None:
    if not message or "\n" in message:
        raise ContractError(f"{what}: not one line: {message!r}")


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
    "pipeline": {
        "name": "fuzz",
        "slo": {"latency_p95_s": 10},
        "components": {
            "router": {
                "ingress": True,
                "capacity_per_replica": 10,
                "service_time_s": 0.1,
                "replicas": {"min": 1, "max": 8},
            },
            "llm": {"capacity_per_replica": 2, "service_time_s": 1, "replicas": {"max": 8}},
        },
        "edges": [{"from": "router", "to": "llm", "fanout": 2}],
    },
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


# --- kubernetes --------------------------------------------------------------------------------

KUBE_CONFIG: dict[str, Any] = {
    "pipeline": {
        "name": "fuzz",
        "slo": {"latency_p95_s": 10},
        "components": {
            "router": {
                "ingress": True,
                "capacity_per_replica": 10,
                "service_time_s": 0.1,
                "replicas": {"min": 1, "max": 8},
            },
        },
    },
}


def _scale_object(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": "router", "namespace": "default", "resourceVersion": "12"},
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas, "selector": "app=router"},
    }


class _Pool:
    """urllib3's pool manager as the Kubernetes client uses it, answering fuzzed bodies."""

    def __init__(self) -> None:
        self.rng = random.Random(0)
        self.fuzz = False

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        import urllib3

        rng = self.rng
        headers: dict[str, str] = {"Content-Type": "application/json"}
        if not self.fuzz:  # construction: no other autoscalers
            return urllib3.HTTPResponse(
                body=b'{"kind": "List", "items": []}', status=200, headers=headers
            )
        status = rng.choice((200,) * 6 + (409, 429, 500, 503, 404, 403, 422))
        doc: Any = _scale_object(rng.randint(0, 5))
        if status != 200:
            doc = {"kind": "Status", "status": "ContractError", "code": status, "message": "x"}
            if rng.random() < 0.5:
                headers["Retry-After"] = str(rng.choice(("1", "-1", "abc", "1e9", "", "3.5")))
        if rng.random() < 0.8:
            doc = mutate_tree(doc, rng)
        try:
            text = json.dumps(doc)
        except (TypeError, ValueError):
            text = str(doc)
        if rng.random() < 0.2:
            text = mutate_text(text, rng)
        return urllib3.HTTPResponse(
            body=text.encode("utf-8", "replace"), status=status, headers=headers
        )

    def clear(self) -> None:
        """The client's `close()` clears its pools."""


def _check_actuator(actuator: Any, rng: random.Random, component: str) -> None:
    from elastiscale.adapters.base import ActuationResult

    try:
        states = actuator.read([component])
    except ActuatorError as exc:
        _one_line(str(exc), "actuator error")
    else:
        for state in states.values():
            if not (isinstance(state.desired, int) and isinstance(state.ready, int)):
                raise ContractError(f"read gave {state!r}")
            if state.desired < 0 or state.ready < 0:
                raise ContractError(f"read gave negative counts {state!r}")
    result = actuator.scale(component, rng.randint(0, 6))
    if not isinstance(result, ActuationResult):
        raise ContractError(f"scale returned {result!r}")


def kubernetes_target() -> Target:
    import kubernetes.client as k8s

    from elastiscale.adapters.kubernetes import KubernetesActuator

    config = validate_mapping(KUBE_CONFIG)
    configuration = k8s.Configuration()
    configuration.host = "http://kubernetes.fuzz"
    api_client = k8s.ApiClient(configuration)
    pool = _Pool()
    api_client.rest_client.pool_manager = pool
    actuator = KubernetesActuator(
        config,
        {
            "targets": {"router": {"kind": "Deployment", "name": "router"}},
            "settle_timeout_s": 0,
            "conflict_retries": 1,
        },
        api_client=api_client,
        namespace="default",
    )
    pool.fuzz = True

    def run(rng: random.Random) -> None:
        pool.rng = rng
        _check_actuator(actuator, rng, "router")

    return Target("kubernetes", run)


# --- sagemaker ---------------------------------------------------------------------------------

SAGEMAKER_CONFIG: dict[str, Any] = {
    "pipeline": {
        "name": "fuzz",
        "slo": {"latency_p95_s": 10},
        "components": {
            "router": {
                "ingress": True,
                "capacity_per_replica": 10,
                "service_time_s": 0.1,
                "replicas": {"min": 1, "max": 8},
            },
            "llm": {"capacity_per_replica": 2, "service_time_s": 1, "replicas": {"max": 8}},
        },
        "edges": [{"from": "router", "to": "llm", "fanout": 2}],
    },
}


class _SageMaker:
    """The boto3 SageMaker client's calls the actuator makes, answering fuzzed dicts."""

    def __init__(self) -> None:
        self.rng = random.Random(0)

    def _answer(self, doc: dict[str, Any], operation: str) -> Any:
        from botocore.exceptions import ClientError

        rng = self.rng
        if rng.random() < 0.25:
            error: Any = {
                "Error": {
                    "Code": rng.choice(("ValidationException", "ThrottlingException", "X")),
                    "Message": rng.choice(("Cannot update in-progress endpoint", "", "gone")),
                },
                "ResponseMetadata": {"HTTPStatusCode": rng.choice((400, 429, 500, 503))},
            }
            raise ClientError(mutate_tree(error, rng) if rng.random() < 0.5 else error, operation)
        return mutate_tree(doc, rng) if rng.random() < 0.8 else doc

    def describe_endpoint(self, **kwargs: Any) -> Any:
        variant = {
            "VariantName": "AllTraffic",
            "CurrentInstanceCount": 2,
            "DesiredInstanceCount": 2,
        }
        doc = {"EndpointStatus": "InService", "ProductionVariants": [variant]}
        return self._answer(doc, "DescribeEndpoint")

    def describe_inference_component(self, **kwargs: Any) -> Any:
        doc = {
            "InferenceComponentStatus": "InService",
            "RuntimeConfig": {"CurrentCopyCount": 1, "DesiredCopyCount": 1},
        }
        return self._answer(doc, "DescribeInferenceComponent")

    def update_endpoint_weights_and_capacities(self, **kwargs: Any) -> Any:
        return self._answer({"EndpointArn": "arn:x"}, "UpdateEndpointWeightsAndCapacities")

    def update_inference_component_runtime_config(self, **kwargs: Any) -> Any:
        return self._answer({"InferenceComponentArn": "arn:x"}, "UpdateInferenceComponent")


def sagemaker_target() -> Target:
    from elastiscale.adapters.sagemaker import SageMakerActuator

    config = validate_mapping(SAGEMAKER_CONFIG)
    with _aws_dummy():
        actuator = SageMakerActuator(
            config,
            {
                "region": "us-east-1",
                "check_on_start": False,
                "settle_timeout_s": 0,
                "targets": {
                    "router": {"endpoint": "fuzz-router"},
                    "llm": {"inference_component": "fuzz-llm"},
                },
            },
        )
    fake = _SageMaker()
    actuator.sagemaker = fake

    def run(rng: random.Random) -> None:
        fake.rng = rng
        _check_actuator(actuator, rng, rng.choice(("router", "llm")))

    return Target("sagemaker", run)


@contextlib.contextmanager
def _aws_dummy() -> Iterator[None]:
    with mock.patch.dict(
        "os.environ",
        {
            "AWS_ACCESS_KEY_ID": "fuzz",
            "AWS_SECRET_ACCESS_KEY": "fuzz",
            "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        },
    ):
        yield


# --- ray ---------------------------------------------------------------------------------------

RAY_CONFIG: dict[str, Any] = {
    "pipeline": {
        "name": "fuzz",
        "slo": {"latency_p95_s": 10},
        "components": {
            "router": {
                "ingress": True,
                "capacity_per_replica": 10,
                "service_time_s": 0.1,
                "replicas": {"min": 1, "max": 8},
            },
        },
    },
}


def _applications() -> dict[str, Any]:
    replica = {"replica_id": "r1", "state": "RUNNING"}
    deployment = {
        "name": "Router",
        "status": "HEALTHY",
        "target_num_replicas": 2,
        "replicas": [replica, dict(replica, replica_id="r2")],
        "deployment_config": {"name": "Router", "num_replicas": 2},
    }
    app = {
        "name": "default",
        "status": "RUNNING",
        "deployments": {"Router": deployment},
        "deployed_app_config": {"name": "default", "deployments": [{"name": "Router"}]},
    }
    return {"applications": {"default": app}}


class _Response(io.BytesIO):
    def __enter__(self) -> _Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Dashboard:
    """`urllib.request.urlopen` as the Ray Serve actuator calls it, answering fuzzed bodies."""

    def __init__(self) -> None:
        self.rng = random.Random(0)

    def __call__(self, request: Any, timeout: float | None = None) -> _Response:
        rng = self.rng
        doc: Any = _applications() if request.get_method() == "GET" else None
        if rng.random() < 0.8 and doc is not None:
            doc = mutate_tree(doc, rng)
        try:
            text = json.dumps(doc) if doc is not None else ""
        except (TypeError, ValueError):
            text = str(doc)
        if rng.random() < 0.2:
            text = mutate_text(text, rng)
        body = text.encode("utf-8", "replace")
        if rng.random() < 0.15:
            headers = Message()
            headers["Retry-After"] = rng.choice(("1", "x", "-3", ""))
            code = rng.choice((400, 404, 429, 500, 503))
            raise urllib.error.HTTPError(request.full_url, code, "x", headers, io.BytesIO(body))
        return _Response(body)


def ray_target() -> Target:
    from elastiscale.adapters.ray.actuator import RayServeActuator

    config = validate_mapping(RAY_CONFIG)
    dashboard = _Dashboard()
    actuator = RayServeActuator(
        config,
        {
            "address": "http://ray.fuzz:8265",
            "check_on_start": False,
            "settle_timeout_s": 0,
            "targets": {"router": {"deployment": "Router"}},
        },
    )
    patch = mock.patch("urllib.request.urlopen", dashboard)
    patch.start()

    def run(rng: random.Random) -> None:
        dashboard.rng = rng
        _check_actuator(actuator, rng, "router")

    return Target("ray", run, patch.stop)


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


__all__ = ["TARGETS", "ContractError", "Tally", "Target", "fuzz", "mutate_text", "mutate_tree"]
