"""The fleet file: several pipelines in one control plane, some of them sharing components.

    fleet:
      name: platform                    # lower-case letters, digits and '-' (used in names
                                        # of Kubernetes objects)
      pipelines: [rag.yaml, agent.yaml] # pipeline files, relative to this file; or
      pipelines_dir: pipelines/         # every *.yaml / *.yml in it, in name order
      shared: [embedder]                # one component in every pipeline naming it
    daemon: {...}                       # the daemon section, for the whole fleet
    metrics: {...}                      # optional: for pipelines without their own
    actuator: {...}                     # optional: for pipelines without their own

Each pipeline file is an ordinary config (`elastiscale validate` accepts it alone) without a
`daemon:` section, which belongs to the fleet. Pipelines that share a component are one
*unit*, decided in one loop: the connected groups of the "shares a component" relation. A
lone pipeline is its own unit, its config as it is (the fleet's daemon section and, when it
has none of its own, the fleet's metrics and actuator). A unit of several pipelines is one
merged config (`elastiscale.config.fleet_merge`): local components named `<pipeline>/<component>`,
shared ones once, every ingress kept. Unit names are stable, being sharding keys: the
pipeline's name, or the sorted names of the unit's pipelines joined by `+`.

`load_fleet` accepts the file whole or refuses it whole: `ConfigError` lists one line per
problem, naming the file and the field (`rag.yaml: pipeline.slo: ...`,
`fleet.shared[1]: unknown component 'embeder' ...`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from elastiscale.config.daemon import DaemonConfig
from elastiscale.config.fleet_graph import Member
from elastiscale.config.fleet_merge import merge_unit
from elastiscale.config.fleet_pools import pool_problems
from elastiscale.config.loading import _pydantic_problems, _read_yaml, validate_mapping
from elastiscale.config.models import Config, PluginSpec, StrictModel
from elastiscale.errors import ConfigError

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
#: Separator of pipeline names in the name of a unit of several pipelines.
UNIT_JOIN = "+"


class FleetSection(StrictModel):
    """The `fleet:` section (see the module docstring)."""

    name: str = Field(..., min_length=1, max_length=63)
    pipelines: tuple[str, ...] | None = Field(None, min_length=1)
    pipelines_dir: str | None = Field(None, min_length=1)
    shared: tuple[str, ...] = ()

    @field_validator("name")
    @classmethod
    def _dns(cls, value: str) -> str:
        if not _DNS_LABEL.match(value):
            raise ValueError(f"{value!r} is not a valid name (lower-case letters, digits, '-')")
        return value

    @field_validator("shared")
    @classmethod
    def _once(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        repeated = sorted({n for n in value if value.count(n) > 1})
        if repeated:
            raise ValueError(f"{repeated[0]!r} is listed twice")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> FleetSection:
        if (self.pipelines is None) == (self.pipelines_dir is None):
            raise ValueError("set one of pipelines (a list of files) or pipelines_dir")
        return self


class FleetFile(StrictModel):
    """A whole fleet file."""

    fleet: FleetSection
    daemon: DaemonConfig = DaemonConfig()
    metrics: PluginSpec | None = None
    actuator: PluginSpec | None = None


@dataclass(frozen=True, slots=True)
class FleetUnit:
    """Pipelines decided together: `config` is an ordinary config the `Engine` runs."""

    name: str
    pipelines: tuple[str, ...]
    config: Config


@dataclass(frozen=True, slots=True)
class Fleet:
    """A loaded fleet file: its name, its shared components and its units, by name."""

    name: str
    shared: tuple[str, ...]
    units: tuple[FleetUnit, ...]

    def unshared(self) -> tuple[str, ...]:
        """Names in `shared` that fewer than two pipelines have (shared with nobody yet)."""
        counts: dict[str, int] = {}
        for unit in self.units:
            for member in unit.config.pipeline.members.values():
                for name in member.components:
                    counts[name] = counts.get(name, 0) + 1
        return tuple(n for n in self.shared if counts.get(n, 0) < 2)

    def unit(self, name: str) -> FleetUnit:
        """The unit `name`, or the unit holding the pipeline `name`; KeyError naming them."""
        for unit in self.units:
            if name == unit.name or name in unit.pipelines:
                return unit
        raise KeyError(f"no unit or pipeline {name!r} (units: {', '.join(self.unit_names)})")

    @property
    def unit_names(self) -> tuple[str, ...]:
        return tuple(u.name for u in self.units)


def is_fleet_mapping(raw: Any) -> bool:
    """Whether parsed YAML is a fleet file (it has a top-level `fleet` key)."""
    return isinstance(raw, Mapping) and "fleet" in raw


def is_fleet_file(path: str | Path) -> bool:
    """Whether the file is a fleet file; a file that cannot be read raises `ConfigError`."""
    return is_fleet_mapping(_read_yaml(Path(path)))


def load_unit(path: str | Path, unit: str | None = None) -> Config:
    """The config of one unit of the fleet file `path`, for the commands that replay one
    pipeline (`backtest`, `capacity`): `unit` names it, or one of its pipelines, and may be
    left out when the fleet has one unit. `ConfigError` names `--unit` when it does not fit."""
    fleet = load_fleet(path)
    if unit is None:
        if len(fleet.units) > 1:
            raise ConfigError(
                [f"--unit: the fleet has {len(fleet.units)} units; name one "
                 f"({', '.join(fleet.unit_names)})"],
                source=str(path),
            )  # fmt: skip
        return fleet.units[0].config
    try:
        return fleet.unit(unit).config
    except KeyError as exc:
        raise ConfigError([f"--unit: {exc.args[0]}"], source=str(path)) from None


@dataclass(frozen=True, slots=True)
class _Listed:
    field: str  # where the fleet file lists it: fleet.pipelines[0]
    label: str  # as the fleet file writes it: rag.yaml, pipelines/rag.yaml
    path: Path


def load_fleet(path: str | Path) -> Fleet:
    """Load a fleet file and its pipeline files into units; `ConfigError` names every problem
    (its `source` is the fleet file; a pipeline file's problems start with that file)."""
    path = Path(path)
    raw = _read_yaml(path)
    source = str(path)
    if not is_fleet_mapping(raw):
        raise ConfigError(["(top level): expected a mapping with a 'fleet' key"], source=source)
    try:
        spec = FleetFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_pydantic_problems(exc), source=source) from None
    problems: list[str] = []
    listed = _listed(spec.fleet, path, problems)
    members: list[tuple[Any, Mapping[str, Any]]] = []  # (Member, raw mapping)
    for item in listed:
        loaded = _load_pipeline(item, problems)
        if loaded is not None:
            config, pipeline_raw = loaded
            members.append((Member(item.label, config), pipeline_raw))
    if problems:
        raise ConfigError(problems, source=source)
    names: dict[str, Any] = {}
    for member, _ in members:
        if member.name in names:
            problems.append(
                f"fleet.pipelines: {member.label} has pipeline name {member.name!r}, as "
                f"{names[member.name].label} has (pipeline names must differ)"
            )
        names[member.name] = member
    shared = spec.fleet.shared
    known = {c for m, _ in members for c in m.config.pipeline.components}
    for i, name in enumerate(shared):
        if name not in known:
            problems.append(f"fleet.shared[{i}]: unknown component {name!r} (no pipeline has it)")
    if problems:
        raise ConfigError(problems, source=source)
    units: list[FleetUnit] = []
    for group in _groups([m for m, _ in members], shared):
        unit_name = UNIT_JOIN.join(sorted(m.name for m in group))
        pipelines = tuple(sorted(m.name for m in group))
        try:
            if len(group) == 1:
                member = group[0]
                pipeline_raw = next(r for m, r in members if m is member)
                config = _lone(pipeline_raw, spec, member.label)
            else:
                ordered = sorted(group, key=lambda m: m.name)
                config = merge_unit(
                    unit_name,
                    ordered,
                    set(shared),
                    daemon=spec.daemon,
                    metrics=spec.metrics,
                    actuator=spec.actuator,
                    label=source,
                )
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        units.append(FleetUnit(unit_name, pipelines, config))
    problems += pool_problems(unit.config for unit in units)  # minimums are a promise
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)), source=source)
    units.sort(key=lambda u: u.name)
    return Fleet(name=spec.fleet.name, shared=shared, units=tuple(units))


def _listed(fleet: FleetSection, fleet_path: Path, problems: list[str]) -> list[_Listed]:
    """The pipeline files the fleet names, each once (a directory's without the fleet file,
    should it sit among them)."""
    base = fleet_path.parent
    out: list[_Listed] = []
    if fleet.pipelines is not None:
        for i, name in enumerate(fleet.pipelines):
            out.append(_Listed(f"fleet.pipelines[{i}]", name, base / name))
    else:
        assert fleet.pipelines_dir is not None
        folder = base / fleet.pipelines_dir
        if not folder.is_dir():
            problems.append(f"fleet.pipelines_dir: {fleet.pipelines_dir!r} is not a directory")
            return []
        itself = fleet_path.resolve()
        files = sorted(
            p
            for p in folder.iterdir()
            if p.suffix in (".yaml", ".yml") and p.is_file() and p.resolve() != itself
        )
        if not files:
            problems.append(f"fleet.pipelines_dir: no *.yaml or *.yml file in {folder}")
        for p in files:
            label = str(Path(fleet.pipelines_dir) / p.name)
            out.append(_Listed("fleet.pipelines_dir", label, p))
    seen: dict[Path, _Listed] = {}
    unique = []
    for item in out:
        key = item.path.resolve()
        if key in seen:
            problems.append(f"{item.field}: {item.label} is listed twice (also {seen[key].field})")
            continue
        seen[key] = item
        unique.append(item)
    return unique


def _load_pipeline(item: _Listed, problems: list[str]) -> tuple[Config, Mapping[str, Any]] | None:
    """A pipeline file as its own config, or None with its problems appended (each line
    starting with the file as the fleet names it)."""
    try:
        raw = _read_yaml(item.path)
        if not isinstance(raw, Mapping):
            raise ConfigError(["(top level): expected a mapping with a 'pipeline' key"])
        if "fleet" in raw:
            raise ConfigError(["fleet: a pipeline file of a fleet cannot be a fleet file"])
        for key, why in (
            ("daemon", "the fleet file's daemon section runs every pipeline"),
            ("scenario", "a drift scenario is given to a backtest (--scenario)"),
        ):
            if key in raw:
                raise ConfigError([f"{key}: not allowed in a pipeline of a fleet ({why})"])
        return validate_mapping(raw), raw
    except ConfigError as exc:
        problems.extend(f"{item.label}: {p}" for p in exc.problems)
        return None


def _lone(raw: Mapping[str, Any], spec: FleetFile, label: str) -> Config:
    """A lone pipeline's config: its own file, with the fleet's daemon section and, when it
    has none, the fleet's metric source and actuator."""
    merged: dict[str, Any] = {**raw, "daemon": spec.daemon.model_dump(mode="json")}
    for section in ("metrics", "actuator"):
        fallback: PluginSpec | None = getattr(spec, section)
        if section not in raw and fallback is not None:
            merged[section] = fallback.model_dump(mode="json")
    try:
        return validate_mapping(merged)
    except ConfigError as exc:
        raise ConfigError([f"{label}: {p}" for p in exc.problems]) from None


def _groups(members: list[Any], shared: tuple[str, ...]) -> list[list[Any]]:
    """Connected groups of the "shares a component" relation, in file order."""
    parent = list(range(len(members)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_holder: dict[str, int] = {}
    for i, member in enumerate(members):
        for name in member.config.pipeline.components:
            if name not in shared:
                continue
            if name in first_holder:
                parent[root(i)] = root(first_holder[name])
            else:
                first_holder[name] = i
    groups: dict[int, list[Any]] = {}
    for i, member in enumerate(members):
        groups.setdefault(root(i), []).append(member)
    return list(groups.values())
