"""Loading and validating a config file, with one line per problem.

A file is accepted whole or refused whole. Refusal raises `ConfigError` whose `problems` are
lines of the form `path.to.field: message`, one per problem, e.g.

    pipeline.components.llm.replicas: min = 5 is greater than max = 3
    pipeline.edges[1].to: unknown component 'retriver' (components: router, retriever, llm)
    pipeline.edges: cycle planner -> tools -> planner

Three checks run on every file and all their problems are reported together: the pydantic
models (`elastiscale.config.models`), the dependency graph (unknown components, cycles), and
the plugin names and parameters (policies, metric source, actuator) against the registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from elastiscale import spellings
from elastiscale.config import variants
from elastiscale.config.models import Config, _policy_list
from elastiscale.errors import ConfigError


def load_config(source: str | Path | Mapping[str, Any]) -> Config:
    """Load and validate a config from a YAML file path or an already-parsed mapping.

    Raises `ConfigError` listing every problem found; nothing is half-loaded.
    """
    label = ""
    if isinstance(source, str | Path):
        label = str(source)
        raw = _read_yaml(Path(source))
    else:
        raw = dict(source)
    return validate_mapping(raw, label=label)


def load_with_scenario(source: str | Path, scenario: str | Path) -> Config:
    """The config of file `source` with the `scenario:` section of file `scenario` (replacing
    any the config has): a backtest's drift kept apart from the pipeline it drifts."""
    raw = _read_yaml(Path(source))
    extra = _read_yaml(Path(scenario))
    if not isinstance(extra, Mapping) or "scenario" not in extra:
        raise ConfigError(["(top level): expected a mapping with a 'scenario' key"], str(scenario))
    unknown = sorted(str(k) for k in extra if k != "scenario")
    if unknown:
        raise ConfigError([f"{unknown[0]}: unknown key (only 'scenario')"], source=str(scenario))
    if not isinstance(raw, Mapping):
        raise ConfigError(["(top level): expected a mapping with a 'pipeline' key"], str(source))
    return validate_mapping({**raw, "scenario": extra["scenario"]}, label=str(source))


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing a key given twice in one mapping (last-wins hides typos)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read file: {exc.strerror or exc}"], source=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"byte {exc.start + 1}: not UTF-8 text ({exc.reason})"], source=str(path)
        ) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        # The problem is often found a line after the mistake (a key missing its colon is
        # noticed on the next line), so say where the construct being read began.
        context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and start is not None and (mark is None or start.line != mark.line):
            problem = f"{problem} ({context} at line {start.line + 1})"
        if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow
            where = f"character {exc.position + 1}: "
            problem = f"unacceptable character #x{exc.character:04x}"
        problem = " ".join(str(problem).split())  # one line, whatever the parser said
        raise ConfigError([f"{where}invalid YAML: {problem}"], source=str(path)) from None


def validate_mapping(raw: Any, label: str = "") -> Config:
    """Validate parsed YAML; raise `ConfigError` with every problem, or return the `Config`."""
    if not isinstance(raw, Mapping):
        raise ConfigError(["(top level): expected a mapping with a 'pipeline' key"], source=label)
    problems: list[str] = []
    config: Config | None = None
    file_pipeline = raw.get("pipeline")
    expansion = variants.Expansion({})
    if isinstance(file_pipeline, Mapping):  # variants become components (`config.variants`)
        expansion = variants.expand(file_pipeline)
        problems.extend(expansion.problems)
        raw = {**raw, "pipeline": expansion.pipeline}
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc))
    pipeline_raw = raw.get("pipeline")
    if isinstance(pipeline_raw, Mapping):
        problems.extend(graph_problems(pipeline_raw))
        problems.extend(scenario_problems(raw.get("scenario"), pipeline_raw))
    if isinstance(file_pipeline, Mapping):
        problems.extend(traffic_problems(raw.get("scenario"), file_pipeline))
    problems.extend(_plugin_problems(raw))
    if problems:
        lines = [expansion.file_path(p) for p in problems]
        raise ConfigError(_dedupe([_printable(p) for p in lines]), source=label)
    assert config is not None
    return config


def _dedupe(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(lines))


def _printable(line: str) -> str:
    """`line` with control characters escaped (a key or value holding a newline), so that
    every problem stays one line."""
    if line.isprintable():
        return line
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)


def _loc_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "union[", "list[", "tuple[")):
            continue
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def _pydantic_problems(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors(include_url=False):
        path = _loc_path(tuple(err["loc"]))
        if err["type"] == "extra_forbidden":
            hint = spellings.hint_for(err["loc"][-1] if err["loc"] else None)
            message = f"unknown key; {hint}" if hint else "unknown key (check the spelling)"
        elif err["type"] == "missing":
            message = "required field is missing"
        else:
            message = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
            given = err.get("input")
            if isinstance(given, int | float | str) and err["type"] not in ("value_error",):
                message = f"{message} (got {given!r})"
        if path == "(top level)" and message.startswith(_CROSS_FIELD):
            lines.append(message)  # a whole-file check that names its own field
        else:
            lines.append(f"{path}: {message}")
    return lines


#: Fields whose checks run on the whole file (they name the field in their message).
_CROSS_FIELD = ("control.combine",)


def scenario_problems(scenario: Any, pipeline: Mapping[str, Any]) -> list[str]:
    """Drift events naming a component the pipeline does not have."""
    components = pipeline.get("components")
    if not isinstance(scenario, Mapping) or not isinstance(components, Mapping):
        return []
    drift = scenario.get("drift") or []
    if not isinstance(drift, list | tuple):
        return []
    names = ", ".join(str(n) for n in components)
    return [
        f"scenario.drift[{i}].component: unknown component {event['component']!r} "
        f"(components: {names})"
        for i, event in enumerate(drift)
        if isinstance(event, Mapping)
        and isinstance(event.get("component"), str)
        and event["component"] not in components
    ]


def traffic_problems(scenario: Any, pipeline: Mapping[str, Any]) -> list[str]:
    """Traffic events naming a component without variants, or variants it does not have."""
    components = pipeline.get("components")
    if not isinstance(scenario, Mapping) or not isinstance(components, Mapping):
        return []
    events = scenario.get("traffic") or []
    if not isinstance(events, list | tuple):
        return []
    problems = []
    for i, event in enumerate(events):
        if not isinstance(event, Mapping) or not isinstance(event.get("component"), str):
            continue
        name = event["component"]
        comp = components.get(name)
        own = comp.get("variants") if isinstance(comp, Mapping) else None
        if not isinstance(own, Mapping):
            split = sorted(str(n) for n, c in components.items()
                           if isinstance(c, Mapping) and "variants" in c)  # fmt: skip
            problems.append(
                f"scenario.traffic[{i}].component: {name!r} has no variants "
                f"(components with variants: {', '.join(split) or 'none'})"
            )
            continue
        percent = event.get("percent")
        if isinstance(percent, Mapping):
            given, known = {str(k) for k in percent}, {str(k) for k in own}
            if given != known:
                problems.append(
                    f"scenario.traffic[{i}].percent: give every variant of {name} "
                    f"({', '.join(sorted(known))}), got {', '.join(sorted(given)) or 'none'}"
                )
    return problems


def graph_problems(pipeline: Mapping[str, Any]) -> list[str]:
    """Problems of the dependency graph, checked on the raw mapping so that they are reported
    together with field errors: unknown endpoints, self-edges, duplicates, cycles, no ingress."""
    components = pipeline.get("components")
    if not isinstance(components, Mapping) or not components:
        return []
    names = [str(n) for n in components]
    problems: list[str] = []
    ingress = [n for n, c in components.items() if isinstance(c, Mapping) and c.get("ingress")]
    if not ingress:
        problems.append("pipeline.components: no component has ingress: true")
    edges = pipeline.get("edges") or []
    if not isinstance(edges, list | tuple):
        return problems
    adjacency: dict[str, list[str]] = {n: [] for n in names}
    seen: set[tuple[str, str]] = set()
    for i, edge in enumerate(edges):
        if not isinstance(edge, Mapping):
            continue
        src, dst = edge.get("from"), edge.get("to")
        ok = True
        for key, end in (("from", src), ("to", dst)):
            if isinstance(end, str) and end not in components:
                problems.append(
                    f"pipeline.edges[{i}].{key}: unknown component {end!r} "
                    f"(components: {', '.join(names)})"
                )
                ok = False
        if not (isinstance(src, str) and isinstance(dst, str)) or not ok:
            continue
        if src == dst:
            problems.append(f"pipeline.edges[{i}]: self-edge {src} -> {dst}")
            continue
        if (src, dst) in seen:
            problems.append(f"pipeline.edges[{i}]: duplicate edge {src} -> {dst}")
            continue
        seen.add((src, dst))
        adjacency[src].append(dst)
    cycle = find_cycle(adjacency)
    if cycle:
        problems.append("pipeline.edges: cycle " + " -> ".join(cycle))
    problems.extend(_hand_over_problems(edges))
    problems.extend(_member_problems(pipeline.get("members"), components))
    return problems


def _hand_over_problems(edges: list[Any] | tuple[Any, ...]) -> list[str]:
    """An edge with `via` must be a sequential, waited-for call, and its caller must call
    `via` on an earlier sequential edge (whose last call then makes these calls)."""
    problems: list[str] = []
    for i, edge in enumerate(edges):
        if not isinstance(edge, Mapping) or edge.get("via") is None:
            continue
        src, via = edge.get("from"), edge.get("via")
        if edge.get("mode", "sequential") != "sequential":
            problems.append(f"pipeline.edges[{i}].via: only a sequential edge can be handed over")
        elif edge.get("caller_waits") is not True:
            problems.append(
                f"pipeline.edges[{i}].via: needs caller_waits: true (a hand-over only moves"
                " who waits for the calls)"
            )
        elif not any(
            isinstance(e, Mapping)
            and e.get("from") == src
            and e.get("to") == via
            and e.get("mode", "sequential") == "sequential"
            for e in edges[:i]
        ):
            problems.append(
                f"pipeline.edges[{i}].via: {via!r} is not called by {src!r} on an earlier"
                " sequential edge"
            )
    return problems


def _member_problems(members: Any, components: Mapping[str, Any]) -> list[str]:
    """A member of a fleet unit naming a component the merged pipeline does not have."""
    if not isinstance(members, Mapping):
        return []
    problems = []
    for member, spec in members.items():
        listed = spec.get("components") if isinstance(spec, Mapping) else None
        if not isinstance(listed, list | tuple):
            continue
        for i, name in enumerate(listed):
            if isinstance(name, str) and name not in components:
                problems.append(
                    f"pipeline.members.{member}.components[{i}]: unknown component {name!r}"
                )
    return problems


def find_cycle(adjacency: Mapping[str, list[str]]) -> list[str]:
    """A cycle as a list of names whose first and last are equal, or [] when there is none."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(adjacency, white)
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        color[node] = grey
        stack.append(node)
        for nxt in adjacency.get(node, []):
            if color.get(nxt, white) == grey:
                return [*stack[stack.index(nxt) :], nxt]
            if color.get(nxt, white) == white:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        color[node] = black
        return []

    for start in adjacency:
        if color[start] == white:
            found = visit(start)
            if found:
                return found
    return []


def _plugin_problems(raw: Mapping[str, Any]) -> list[str]:
    """Policy, metric-source and actuator names that do not resolve, and their bad parameters."""
    from elastiscale import registry

    problems: list[str] = []
    pipeline = raw.get("pipeline")
    components = pipeline.get("components") if isinstance(pipeline, Mapping) else None
    names = [str(n) for n in components] if isinstance(components, Mapping) else None
    context = {"components": names} if names is not None else {}
    policies = _policy_list(raw.get("policies", []))
    if isinstance(policies, list):
        for i, spec in enumerate(policies):
            if isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
                params = spec.get("params") or {}
                problems.extend(
                    registry.check("policy", spec["name"], params, f"policies[{i}]", context)
                )
    for section, kind in (("metrics", "metric_source"), ("actuator", "actuator")):
        spec = raw.get(section)
        if isinstance(spec, Mapping) and isinstance(spec.get("type"), str):
            options = {k: v for k, v in spec.items() if k != "type"}
            problems.extend(registry.check(kind, spec["type"], options, section, context))
    return problems
