"""What an imported autoscaler carries over, and the error for a file that cannot be imported."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final

from elastiscale.errors import ElastiscaleError

#: Target utilization the `hpa` policy sizes demand metrics against when the source has no CPU
#: target (DESIGN.md: a common HPA target, Knative's default).
DEFAULT_UTILIZATION: Final = 0.7


class ImportRefusedError(ElastiscaleError):
    """A file cannot be imported; the message names the file, document and field."""


@dataclass
class ImportedComponent:
    """One scaled workload: its bounds, the policy that reproduces its autoscaler, and notes.

    `params` are the policy's parameters for this component (`params.components.<name>`);
    `capacity_per_replica` is set when the source's target gives it (a per-replica metric
    target); `missing_data` is a `constraints.missing_data` section (KEDA's fallback);
    `target` is the Kubernetes workload, for the `actuator:` section."""

    name: str
    origin: str
    policy: str
    replicas_min: int
    replicas_max: int
    replicas_initial: int | None = None
    capacity_per_replica: float | None = None
    gpus_per_replica: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    missing_data: dict[str, Any] | None = None
    namespace: str | None = None
    target: dict[str, str] | None = None
    notes: list[str] = field(default_factory=list)

    def note(self, where: str, what: str) -> None:
        self.notes.append(f"{self.origin}: {where}: {what}")


_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)([a-zA-Z]*)$")
_SUFFIX: Final = {
    "": 1.0,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
}


def quantity(value: Any, where: str) -> float:
    """A Kubernetes quantity ("100m", "1.5", "2k", 3) as a float (refused naming `where`)."""
    if isinstance(value, bool):
        raise ImportRefusedError(f"{where}: {value!r} is not a quantity")
    if isinstance(value, int | float):
        return float(value)
    match = _QUANTITY.match(str(value).strip())
    if match is None or match.group(2) not in _SUFFIX:
        raise ImportRefusedError(f"{where}: {value!r} is not a quantity (e.g. 100m, 1.5, 2k)")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def component_name(workload: str) -> str:
    """A component name from a workload name (kept as is: names are the user's)."""
    return workload


def integer(value: Any, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ImportRefusedError(f"{where}: {value!r} is not an integer >= {minimum}")
    return value


def number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            return float(str(value))
        except ValueError:
            raise ImportRefusedError(f"{where}: {value!r} is not a number") from None
    return float(value)


def mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ImportRefusedError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value
