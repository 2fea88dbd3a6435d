"""What every fuzz target shares: the mutators and the contract types."""

from __future__ import annotations

import copy
import math
import random
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

# --------------------------------------------------------------------------------------------
# The pipeline every target's config is built on


def fuzz_pipeline(with_llm: bool) -> dict[str, Any]:
    """A one-component pipeline (a router), or a router calling an LLM twice per request."""
    components: dict[str, Any] = {
        "router": {
            "ingress": True,
            "capacity_per_replica": 10,
            "service_time_s": 0.1,
            "replicas": {"min": 1, "max": 8},
        },
    }
    pipeline: dict[str, Any] = {
        "name": "fuzz",
        "slo": {"latency_p95_s": 10},
        "components": components,
    }
    if with_llm:
        components["llm"] = {"capacity_per_replica": 2, "service_time_s": 1, "replicas": {"max": 8}}
        pipeline["edges"] = [{"from": "router", "to": "llm", "fanout": 2}]
    return pipeline


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
