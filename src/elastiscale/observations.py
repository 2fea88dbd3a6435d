"""What a metric source reports about one component at one moment.

A signal is either a number or missing; a missing signal carries the reason (`"no data"`,
`"stale"`, `"nan"`, `"ambiguous"`, `"source error: ..."`) in `Observation.missing`. A missing
value is never replaced by zero: code that needs a signal checks for `None`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from elastiscale.slotinit import slot_init

#: The numeric signals an `Observation` may carry, with their units.
SIGNALS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "demand_rps": "arrivals per second over the source's rate window",
        "tokens_per_s": "tokens per second (input + output) over the rate window",
        "in_flight": "requests being served, summed over replicas",
        "queue_length": "requests waiting for a replica",
        "utilization": "busy fraction of ready capacity, 0..1 (what a CPU metric shows)",
        "latency_p95_s": "95th percentile of the component's latency over the window, seconds",
        "ttft_p95_s": "95th percentile of an LLM's time to first token over the window, seconds",
        "itl_p95_s": "95th percentile of an LLM's time between output tokens, seconds",
        "ready_replicas": "replicas ready to serve",
        "desired_replicas": "replicas the platform has been asked for",
    }
)


@slot_init
@dataclass(frozen=True, slots=True)
class Observation:
    """Signals of one component, sampled at `at_s` (seconds, the source's time base).

    `at_s` is the timestamp of the oldest sample used, so `now_s - at_s` is the observation's age.
    """

    component: str
    at_s: float
    demand_rps: float | None = None
    tokens_per_s: float | None = None
    in_flight: float | None = None
    queue_length: float | None = None
    utilization: float | None = None
    latency_p95_s: float | None = None
    ttft_p95_s: float | None = None
    itl_p95_s: float | None = None
    ready_replicas: int | None = None
    desired_replicas: int | None = None
    missing: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def unavailable(cls, component: str, at_s: float, reason: str) -> Observation:
        """An observation with every signal missing for the same `reason`."""
        return cls(component=component, at_s=at_s, missing=dict.fromkeys(SIGNALS, reason))

    def value(self, signal: str) -> float | None:
        """The value of `signal` by name, or None when it is missing."""
        if signal not in SIGNALS:
            raise KeyError(f"unknown signal {signal!r}; known: {', '.join(SIGNALS)}")
        got = getattr(self, signal)
        return None if got is None else float(got)

    def why_missing(self, signal: str) -> str:
        """Why `signal` is missing ("no data" when the source gave no reason)."""
        return self.missing.get(signal, "no data")

    def age_s(self, now_s: float) -> float:
        return now_s - self.at_s

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"component": self.component, "at_s": self.at_s}
        for name in SIGNALS:
            got = getattr(self, name)
            if got is not None:
                out[name] = got
        if self.missing:
            out["missing"] = dict(self.missing)
        return out


@slot_init
@dataclass(frozen=True, slots=True)
class ReplicaState:
    """Replica counts of one component as the platform reports them."""

    desired: int
    ready: int
