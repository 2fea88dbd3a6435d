"""One log line when a component's load signal goes missing, and one when it is back.

The engine holds a component whose load is missing (NaN, no series, stale, ambiguous) without
a word: the reason is in the decision record. An operator reading the log should still learn
that the daemon is holding on bad data, and which data, without a line at every tick. The
metric source being down is said by the engine itself (reason `source error: ...`), so it is
not repeated here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from elastiscale.decision import DecisionRecord

log = logging.getLogger("elastiscale.daemon")


def load_signal(capacity_unit: str) -> str:
    """The signal a component's capacity is measured in."""
    return "demand_rps" if capacity_unit == "requests" else "tokens_per_s"


class MissingLoadLog:
    """Remembers each component's last missing-load reason; logs the changes."""

    def __init__(self) -> None:
        self._reasons: dict[str, str] = {}

    def observe(self, records: Iterable[DecisionRecord], signals: dict[str, str]) -> None:
        """`signals`: each component's load signal name."""
        for record in records:
            signal = signals.get(record.component, "demand_rps")
            reason = record.observation.missing.get(signal)
            if reason is not None and reason.startswith("source error"):
                reason = None  # the engine says it once per outage
            before = self._reasons.get(record.component)
            if reason is not None and before is None:
                log.warning(
                    "%s: %s missing (%s); holding its replicas until it is back",
                    record.component,
                    signal,
                    reason,
                )
            elif reason is None and before is not None:
                log.info("%s: %s is back (was %s)", record.component, signal, before)
            if reason is None:
                self._reasons.pop(record.component, None)
            else:
                self._reasons[record.component] = reason
