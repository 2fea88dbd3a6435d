"""The exceptions elastiscale raises, as one tree.

    ElastiscaleError
    ├── ConfigError            a pipeline or daemon file is invalid (every problem listed)
    ├── TraceError             a trace file cannot be read (file, row, column named)
    ├── RegistryError          a policy, forecaster, source or actuator name cannot be resolved
    ├── MetricSourceError      the metric source as a whole is unreachable this tick
    ├── ActuatorError          the actuator cannot be reached or configured
    └── FutureDataError        a simulated source was asked for data after `now`

Per-signal problems (a NaN, a stale series) are not exceptions: they are typed missing values in
an `Observation`. Per-call actuation failures are `ActuationResult` values, not exceptions.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import ValidationError


class ElastiscaleError(Exception):
    """Base class of every error elastiscale raises on purpose."""


class ConfigError(ElastiscaleError):
    """A configuration was refused. `problems` holds one `path.to.field: message` line each."""

    def __init__(self, problems: Iterable[str], source: str = "") -> None:
        self.problems = list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        super().__init__(head + "; ".join(self.problems))


class TraceError(ElastiscaleError):
    """A trace file is malformed; the message names the file, row and column."""


class RegistryError(ElastiscaleError):
    """A plugin name did not resolve to an object."""


class MetricSourceError(ElastiscaleError):
    """The metric source could not answer at all (down, timed out, refused)."""


class ActuatorError(ElastiscaleError):
    """The actuator could not be set up or reached."""


class FutureDataError(ElastiscaleError):
    """A simulated metric source was asked for a time after the simulation's `now`."""


def one_line(exc: Exception) -> str:
    """The first problem of a pydantic error as `field: message` (the arguments a command
    validated), any other error as its text: what a command prints before exiting 2."""
    if isinstance(exc, ValidationError):
        err = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in err["loc"]) or "arguments"
        return f"{field}: {err['msg'].removeprefix('Value error, ')}"
    return str(exc)
