"""PromQL text: escaping, durations, signal templates, and the plan of one tick's queries.

Nothing here talks to a server; it turns configuration into query strings and says which
component each answer belongs to.

Escaping. Every label value that comes from configuration (a component name, a selector value)
enters a query through `quote` (a double-quoted PromQL string literal) or `regex_alternation`
(an RE2 alternation of literal values, then quoted), so no name can close the string and add
PromQL of its own: `llm"} or vector(1) #` becomes one harmless label value.

Templates. A signal's query is a `string.Template` with three placeholders:

    $selector  the component's label matchers, without braces: model_name="llm",job="vllm"
    $by        the label that tells components apart, for `sum by ($by) (...)`
    $window    the rate window as a PromQL duration: 60s

A template that uses both `$selector` and `$by` can answer many components at once: the
selector becomes `model_name=~"a|b|c"` and the answer has one series per label value. So a tick
for 50 components sharing a preset costs one query per signal, not 50. Write `$$` for a literal
dollar sign.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

#: What a Prometheus label name may look like; names are checked, never escaped.
LABEL_NAME: Final = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

#: The placeholders a template may use.
PLACEHOLDERS: Final = ("selector", "by", "window")

#: Label added to the sample-time half of a combined query (see `SignalQuery.combined`).
SAMPLE_TIME_LABEL: Final = "elastiscale_part"
SAMPLE_TIME_VALUE: Final = "sample_time"


# --------------------------------------------------------------------------------------------
# Escaping


def quote(value: str) -> str:
    """`value` as a PromQL double-quoted string literal.

    JSON string syntax is a subset of PromQL's (Go's) escapes: `"` and `\\` are escaped, control
    characters become `\\n` or `\\u00XX`, other characters stay as they are.
    """
    return json.dumps(value, ensure_ascii=False)


def regex_alternation(values: Iterable[str]) -> str:
    """A quoted RE2 regex that matches exactly the given values (Prometheus anchors it).

    Each value is escaped with `re.escape`, whose escapes are all valid in RE2 (a backslash
    before any ASCII punctuation or space is that character).
    """
    ordered = sorted(set(values))
    if not ordered:
        raise ValueError("regex_alternation needs at least one value")
    return quote("|".join(re.escape(v) for v in ordered))


def check_label_name(name: str) -> str:
    """`name` when it is a valid label name; ValueError otherwise."""
    if not LABEL_NAME.match(name):
        raise ValueError(f"{name!r} is not a valid label name (letters, digits, _)")
    return name


def matchers(fixed: Mapping[str, str], label: str, values: Sequence[str]) -> str:
    """Label matchers without braces: the `fixed` ones, then `label` equal to one of `values`.

    matchers({"job": "vllm"}, "model_name", ["a", "b"]) == 'job="vllm",model_name=~"a|b"'
    """
    parts = [f"{check_label_name(k)}={quote(v)}" for k, v in sorted(fixed.items()) if k != label]
    check_label_name(label)
    if len(set(values)) == 1:
        parts.append(f"{label}={quote(values[0])}")
    else:
        parts.append(f"{label}=~{regex_alternation(values)}")
    return ",".join(parts)


# --------------------------------------------------------------------------------------------
# Durations

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_S: Final = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "y": 31536000.0,
}


def parse_duration_s(text: str | float) -> float:
    """Seconds in a duration: a number of seconds (`10`, `2.5`) or Prometheus style (`10s`,
    `1m30s`, `250ms`, `1h`, `7d`). Raises ValueError naming the text; the result is > 0."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        raw = text.strip()
        try:
            seconds = float(raw)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _DURATION_PART.finditer(raw):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNIT_S[match.group(2)]
                pos = match.end()
            if pos != len(raw) or not raw:
                raise ValueError(
                    f"{text!r} is not a duration (e.g. 10s, 1m30s, 250ms, 1h, 7d, or seconds)"
                ) from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration {text!r} must be a positive, finite number of seconds")
    return seconds


def format_duration(seconds: float) -> str:
    """A PromQL duration for `seconds`: whole seconds as `60s`, else milliseconds (`1500ms`).

    PromQL durations take integers only, so 0.0004 s (below a millisecond) is refused.
    """
    if seconds <= 0 or not math.isfinite(seconds):
        raise ValueError(f"duration {seconds} s must be positive and finite")
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    millis = round(seconds * 1000)
    if millis <= 0:
        raise ValueError(f"duration {seconds} s is below PromQL's resolution of 1 ms")
    return f"{millis}ms"


# --------------------------------------------------------------------------------------------
# Templates


def template_problem(text: str) -> str | None:
    """Why `text` is not a usable template (unknown placeholder, stray `$`), or None."""
    try:
        template = string.Template(text)
        names = template.get_identifiers()
        if not template.is_valid():
            return "stray '$' (write $$ for a literal dollar sign)"
    except ValueError as exc:  # pragma: no cover - get_identifiers reports via is_valid
        return str(exc)
    unknown = [n for n in names if n not in PLACEHOLDERS]
    if unknown:
        known = ", ".join(f"${p}" for p in PLACEHOLDERS)
        return f"unknown placeholder ${unknown[0]} (known: {known})"
    if not text.strip():
        return "empty query"
    return None


def uses(text: str, placeholder: str) -> bool:
    return placeholder in string.Template(text).get_identifiers()


@dataclass(frozen=True, slots=True)
class SignalQuery:
    """How to read one signal: `expr` computes the value; `series`, when given, is the raw
    selector whose samples the value is computed from, used to date the value (a rate or a sum
    is stamped by Prometheus at evaluation time, so the age of the data must be asked for
    separately: `timestamp()` of the raw series gives the time of each newest sample)."""

    expr: str
    series: str | None = None

    @property
    def batchable(self) -> bool:
        """Whether one query can answer many components (it groups by `$by`)."""
        return uses(self.expr, "selector") and uses(self.expr, "by")

    def render(self, selector: str, by: str, window: str) -> str:
        """The query text: the value, and when `series` is set the oldest newest-sample time
        of each group in the same answer, told apart by the `elastiscale_part` label.

        `a or b` keeps every series of `a` and those of `b` whose labels differ, and the added
        label makes every series of `b` differ, so both halves come back in one request.
        """
        values = {"selector": selector, "by": by, "window": window}
        expr = string.Template(self.expr).substitute(values)
        if self.series is None:
            return expr
        series = string.Template(self.series).substitute(values)
        stamp = (
            f'label_replace(min by ({by}) (timestamp({series})), "{SAMPLE_TIME_LABEL}", '
            f'"{SAMPLE_TIME_VALUE}", "", "")'
        )
        return f"({expr}) or {stamp}"


# --------------------------------------------------------------------------------------------
# The plan of one tick


@dataclass(frozen=True, slots=True)
class ComponentQueries:
    """Everything needed to query one component: the label that identifies it (`label` =
    `value`), other fixed matchers, and its query per signal."""

    component: str
    label: str
    value: str
    selector: Mapping[str, str]
    queries: Mapping[str, SignalQuery]


@dataclass(frozen=True, slots=True)
class PlannedQuery:
    """One request: a signal for one or more components.

    `by_value` maps a value of `label` to the components it answers; when `batched` is False
    the whole answer belongs to the single component in `components`.
    """

    signal: str
    promql: str
    label: str
    components: tuple[str, ...]
    batched: bool
    by_value: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


class _BatchKey(NamedTuple):
    """What components must share to be read by one query."""

    signal: str
    query: SignalQuery
    label: str
    fixed: tuple[tuple[str, str], ...]


def plan_queries(
    specs: Iterable[ComponentQueries], window_s: float, batch: bool = True
) -> list[PlannedQuery]:
    """The requests that read every signal of every component in `specs`.

    Components whose query for a signal has the same template, label and fixed matchers share
    one request (when `batch` and the template is batchable); the others get one each.
    Worked example: 50 vLLM components, 7 signals in the preset -> 7 requests (350 unbatched).
    """
    window = format_duration(window_s)
    groups: dict[_BatchKey, list[ComponentQueries]] = {}
    singles: list[tuple[str, ComponentQueries]] = []
    for spec in specs:
        for signal, query in spec.queries.items():
            if batch and query.batchable:
                key = _BatchKey(signal, query, spec.label, tuple(sorted(spec.selector.items())))
                groups.setdefault(key, []).append(spec)
            else:
                singles.append((signal, spec))
    planned: list[PlannedQuery] = []
    for key, members in groups.items():
        by_value: dict[str, tuple[str, ...]] = {}
        for m in members:
            by_value[m.value] = (*by_value.get(m.value, ()), m.component)
        selector = matchers(dict(key.fixed), key.label, [m.value for m in members])
        planned.append(
            PlannedQuery(
                signal=key.signal,
                promql=key.query.render(selector, key.label, window),
                label=key.label,
                components=tuple(m.component for m in members),
                batched=True,
                by_value=by_value,
            )
        )
    for signal, spec in singles:
        query = spec.queries[signal]
        selector = matchers(spec.selector, spec.label, [spec.value])
        planned.append(
            PlannedQuery(
                signal=signal,
                promql=query.render(selector, spec.label, window),
                label=spec.label,
                components=(spec.component,),
                batched=False,
            )
        )
    return planned
