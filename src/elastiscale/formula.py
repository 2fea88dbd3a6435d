"""Combining policies' proposals by a formula, as KEDA's `scalingModifiers.formula` combines
its triggers' metrics, with a fallback per term.

    control:
      combine:
        formula: "max(elastiscale, ceil(0.8 * hpa))"
        fallback: {hpa: 2}        # hpa's value when it proposes nothing

A term is a policy's proposed replica count, named as in `policies:` with `-` written `_`
(`static-peak` is `static_peak`). The formula may use numbers, `+ - * /`, parentheses and
`min`, `max`, `ceil`, `floor`, `round`, `abs`. A policy that proposes nothing takes its
fallback; without one the formula has no value this tick and the component holds (missing is
missing, never zero). The result is rounded up to a whole replica count and is at least 0;
bounds and the other constraints apply after it, as after `max`.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

_BINARY: Final[dict[type[ast.operator], Callable[[float, float], float]]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_FUNCTIONS: Final[dict[str, Callable[..., float]]] = {
    "min": min,
    "max": max,
    "ceil": math.ceil,
    "floor": math.floor,
    "round": round,
    "abs": abs,
}


def term_name(policy: str) -> str:
    """The name a policy goes by in a formula (`static-peak` -> `static_peak`)."""
    return policy.replace("-", "_")


@dataclass(frozen=True, slots=True)
class Formula:
    """A parsed formula; `names` are the terms it reads."""

    text: str
    tree: ast.expr
    names: frozenset[str]

    def evaluate(self, values: Mapping[str, float]) -> float:
        """The value with every name in `values` (a missing name raises KeyError)."""
        return _eval(self.tree, values)


def parse(text: str) -> Formula:
    """Parse `text`; ValueError naming what is not allowed."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ValueError(f"{text!r} does not parse: {exc.msg}") from None
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in _FUNCTIONS:
            names.add(node.id)
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
                raise ValueError(f"{text!r}: only {', '.join(_FUNCTIONS)} may be called")
            if node.keywords or not node.args:
                raise ValueError(f"{text!r}: {node.func.id}() takes positional arguments")
        elif isinstance(node, ast.BinOp) and type(node.op) not in _BINARY:
            raise ValueError(f"{text!r}: only + - * / are allowed")
        elif isinstance(node, ast.UnaryOp) and not isinstance(node.op, ast.USub | ast.UAdd):
            raise ValueError(f"{text!r}: only - and + signs are allowed")
        elif isinstance(node, ast.Constant) and (
            isinstance(node.value, bool) or not isinstance(node.value, int | float)
        ):
            raise ValueError(f"{text!r}: {node.value!r} is not a number")
        elif not isinstance(
            node,
            ast.Name
            | ast.Call
            | ast.BinOp
            | ast.UnaryOp
            | ast.Constant
            | ast.Load
            | ast.operator
            | ast.unaryop,
        ):
            raise ValueError(f"{text!r}: {type(node).__name__} is not allowed")
    if not names:
        raise ValueError(f"{text!r} names no policy")
    return Formula(text, tree, frozenset(names))


def _eval(node: ast.expr, values: Mapping[str, float]) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.Name):
        return float(values[node.id])
    if isinstance(node, ast.UnaryOp):
        inner = _eval(node.operand, values)
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, values), _eval(node.right, values)
        if isinstance(node.op, ast.Div) and right == 0:
            return math.inf if left > 0 else 0.0
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return float(_FUNCTIONS[node.func.id](*(_eval(a, values) for a in node.args)))
    raise ValueError(f"{type(node).__name__} is not allowed")  # parse() admits none


def combine(
    formula: Formula, proposals: Mapping[str, int | None], fallback: Mapping[str, float]
) -> tuple[int | None, str]:
    """The combined count and a reason: each term's proposal, else its fallback; None (and
    which term) when a term has neither. `proposals` is keyed by term name."""
    values: dict[str, float] = {}
    used: list[str] = []
    for name in sorted(formula.names):
        given = proposals.get(name)
        if given is not None:
            values[name] = float(given)
        elif name in fallback:
            values[name] = float(fallback[name])
            used.append(name)
        else:
            return None, f"formula: {name} proposed nothing and has no fallback"
    result = formula.evaluate(values)
    if math.isnan(result) or math.isinf(result):
        return None, f"formula: {formula.text} is not finite"
    reason = f"formula {formula.text}" + (f" (fallback for {', '.join(used)})" if used else "")
    return max(0, math.ceil(result - 1e-9)), reason
