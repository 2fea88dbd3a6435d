"""`slot_init` builds the same frozen objects as the dataclass's own `__init__`."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass, field

import pytest

from elastiscale.decision import DecisionRecord, Proposal
from elastiscale.observations import SIGNALS, Observation
from elastiscale.slotinit import slot_init


@dataclass(frozen=True, slots=True)
class Plain:
    a: int
    b: float = 2.5
    c: dict[str, int] = field(default_factory=dict)


@slot_init
@dataclass(frozen=True, slots=True)
class Fast:
    a: int
    b: float = 2.5
    c: dict[str, int] = field(default_factory=dict)


def test_the_same_fields_defaults_and_factories() -> None:
    for args, kwargs in [((1,), {}), ((1, 3.0), {}), ((1,), {"c": {"x": 1}}), ((), {"a": 4})]:
        plain, fast = Plain(*args, **kwargs), Fast(*args, **kwargs)
        assert dataclasses.astuple(plain) == dataclasses.astuple(fast)
    first, second = Fast(1), Fast(1)
    assert first.c == {} and first.c is not second.c  # a new default per object
    with pytest.raises(TypeError):
        Fast()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Fast(1, d=2)  # type: ignore[call-arg]
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.a = 2  # type: ignore[misc]


def test_records_still_behave_as_dataclasses() -> None:
    obs = Observation.unavailable("llm", 10.0, "no data")
    assert obs.missing == dict.fromkeys(SIGNALS, "no data") and obs.demand_rps is None
    record = DecisionRecord(10.0, "llm", obs, 2, (Proposal("hpa", 3, "up"),), 3, (), 3, "scaled")
    assert record.demand_by_pipeline == {}
    assert pickle.loads(pickle.dumps(record)) == record
    assert dataclasses.replace(record, outcome="unchanged").outcome == "unchanged"
    assert Proposal.none("hpa", "no data", value=1.0).details == {"value": 1.0}


def test_unsupported_classes_are_refused() -> None:
    @dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclass(frozen=True, slots=True)
    class PostInit:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, slots=True)
    class KeywordOnly:
        a: int = field(kw_only=True)

    for cls in (NoSlots, PostInit, KeywordOnly):
        with pytest.raises(TypeError):
            slot_init(cls)
