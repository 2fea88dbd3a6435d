"""`elastiscale validate --check-sources`: ask the configured metric source to run each of its
queries once, so a misspelt metric or a broken template shows at start-up, one line each.

A source takes part by having `check(components) -> list of problems` (each with a `line()`),
as `PrometheusMetricSource` does; sources without it have nothing to check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from elastiscale import registry
from elastiscale.errors import ElastiscaleError

if TYPE_CHECKING:
    from elastiscale.config import Config


def check_sources(config: Config) -> list[str]:
    """One line per bad query (naming component and signal), or per source that cannot be
    built or reached; empty when every query runs."""
    spec = config.metrics
    if spec is None:
        return []
    try:
        source: Any = registry.build("metric_source", spec.type, config, spec.options())
    except (ElastiscaleError, ValueError) as exc:
        return [f"metrics: cannot build the {spec.type} source: {exc}"]
    check = getattr(source, "check", None)
    if check is None:
        return []
    lines: list[str] = []
    try:
        missing = getattr(source, "missing_load_queries", None)
        if missing is not None:
            lines += [p.line() for p in missing(config)]
        lines += [p.line() for p in check(list(config.pipeline.components))]
    except ElastiscaleError as exc:
        lines.append(f"metrics: {exc}")
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
    return lines
