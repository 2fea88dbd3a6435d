"""The sweep file (`SPEC.yaml`) and the cells it expands to.

    traces: [{path: shared/traces/x.csv.gz, rate_scale: 30, warmup_s: 86400}]
    pipelines: [examples/pipelines/rag.yaml]
    policies:
      hpa: {target_utilization: [0.5, 0.6, 0.7, 0.85]}
      elastiscale: {quantile: [0.6, 0.75, 0.9, 0.99]}
    seeds: [0]

A cell is one trace x one pipeline x one policy x one combination of its knob values x one
seed: 1 x 1 x (4 + 4) x 1 = 8 backtests above. Relative paths are read from the current
directory, as every other command reads them. The file is validated whole before anything runs
(pydantic, unknown keys refused; every policy and every knob combination checked against the
policy's own parameters; every trace and pipeline file read): one bad field refuses the sweep,
with a line naming it.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from elastiscale import registry
from elastiscale.errors import ConfigError, ElastiscaleError

#: Attainment target of summary.md for a pipeline whose config has no `slo.attainment_target`
#: (the config's own default).
DEFAULT_ATTAINMENT_TARGET = 0.99


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TraceEntry(_Model):
    """One trace of the sweep and how it is replayed (as `elastiscale backtest` options)."""

    path: str
    name: str | None = Field(None, description="label in results.csv; default: the file name")
    rate_scale: float = Field(1.0, gt=0)
    time_scale: float = Field(1.0, gt=0)
    warmup_s: float = Field(0.0, ge=0)
    start_s: float | None = None
    end_s: float | None = None

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        stem = Path(self.path).name
        for suffix in (".gz", ".csv"):
            stem = stem.removesuffix(suffix)
        return stem


class SweepSpec(_Model):
    """The sweep file, validated (see the module docstring)."""

    traces: list[TraceEntry] = Field(..., min_length=1)
    pipelines: list[str] = Field(..., min_length=1)
    #: policy name -> knob -> the values swept (each combination of knob values is one cell).
    policies: dict[str, dict[str, list[Any]]] = Field(..., min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    fidelity: Literal["fast", "discrete-event"] = "fast"
    interval_s: float | None = Field(None, gt=0)
    attainment_target: float | None = Field(None, gt=0, le=1)


@dataclass(frozen=True)
class Cell:
    """One backtest of the sweep. `key` identifies it in results.csv (for resuming)."""

    trace: TraceEntry
    pipeline: str
    policy: str
    params: dict[str, Any]
    seed: int
    fidelity: str = "fast"
    interval_s: float | None = None

    @property
    def params_json(self) -> str:
        return json.dumps(self.params, sort_keys=True)

    @property
    def pipeline_label(self) -> str:
        return Path(self.pipeline).stem

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.trace.label, self.pipeline_label, self.policy, self.params_json,
                str(self.seed))  # fmt: skip


class SpecError(ConfigError):
    """The sweep file was refused; `problems` names each bad field."""


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file; raise `SpecError` naming every bad field."""
    label = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise SpecError([f"cannot read the file: {exc.strerror}"], label) from None
    except yaml.YAMLError as exc:
        raise SpecError([f"not valid YAML: {' '.join(str(exc).split())}"], label) from None
    if not isinstance(raw, dict):
        raise SpecError(["the file must be a mapping with traces, pipelines, policies"], label)
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_problems(exc), label) from None
    problems = check_spec(spec)
    if problems:
        raise SpecError(problems, label)
    return spec


def _problems(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key (check the spelling)" if err["type"] == "extra_forbidden" else err["msg"]
        out.append(f"{field}: {msg.removeprefix('Value error, ')}")
    return out


def check_spec(spec: SweepSpec) -> list[str]:
    """What the schema cannot see: files that do not load, policies and knobs that do not
    build, and two traces or pipelines with the same label."""
    from elastiscale.config import load_config
    from elastiscale.trace import load_trace

    problems: list[str] = []
    for i, entry in enumerate(spec.traces):
        try:
            load_trace(entry.path)
        except (OSError, ElastiscaleError, ValueError) as exc:
            problems.append(f"traces.{i}.path: {_one_line(exc)}")
    for i, pipeline in enumerate(spec.pipelines):
        try:
            load_config(pipeline)
        except ConfigError as exc:
            problems.append(f"pipelines.{i}: {pipeline}: {exc.problems[0]}")
        except (OSError, ElastiscaleError) as exc:
            problems.append(f"pipelines.{i}: {_one_line(exc)}")
    for field, labels in (
        ("traces", [t.label for t in spec.traces]),
        ("pipelines", [Path(p).stem for p in spec.pipelines]),
    ):
        repeated = sorted({x for x in labels if labels.count(x) > 1})
        if repeated:
            problems.append(f"{field}: two entries are both labelled {repeated[0]!r}")
    for name, knobs in spec.policies.items():
        for knob, values in knobs.items():
            if not values:
                problems.append(f"policies.{name}.{knob}: list at least one value")
        for params in _combinations(knobs):
            lines = registry.check("policy", name, params, f"policies.{name}")
            if lines:
                problems.append(lines[0].replace(f"policies.{name}.name: ", f"policies.{name}: "))
                break
    return problems


def _one_line(exc: BaseException) -> str:
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if isinstance(exc, OSError) and exc.filename:
        text = f"{exc.filename}: {text}"
    return " ".join(text.split())


def _combinations(knobs: dict[str, list[Any]]) -> list[dict[str, Any]]:
    names = list(knobs)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*knobs.values())]


def cells(spec: SweepSpec) -> list[Cell]:
    """Every cell, in a fixed order: trace, pipeline, policy, knob values, seed."""
    out = []
    for trace in spec.traces:
        for pipeline in spec.pipelines:
            for policy, knobs in spec.policies.items():
                for params in _combinations(knobs):
                    for seed in spec.seeds:
                        out.append(
                            Cell(
                                trace,
                                pipeline,
                                policy,
                                params,
                                seed,
                                spec.fidelity,
                                spec.interval_s,
                            )
                        )
    return out
