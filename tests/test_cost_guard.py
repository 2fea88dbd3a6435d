"""The cost guard of `elastiscale` (controllers/cost_guard.py): the burst reserve's share of a
component's need capped at what reactive scaling would hold for the demand without it.

Worked numbers from the docstring (table-driven), the bounds of the rule (hypothesis: never
below the need without the reserve, never above the unguarded need), and the policy on a fake
clock: on a bursty history the guarded policy holds no more than the reactive count over its
base demand, never less than its reactive floors, and spends less than the unguarded one.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastiscale.controllers.cost_guard import guarded_need, reactive_replicas
from test_feedforward import TICK_S, Driver, make_config


@pytest.mark.parametrize(
    ("rate", "capacity", "u", "want"),
    [
        (30.0, 2.0, 0.7, 22),  # the docstring: ceil(21.43)
        (28.0, 2.0, 0.7, 20),  # exactly 20: not rounded up to 21
        (0.0, 2.0, 0.7, 0),
        (1e-6, 2.0, 0.7, 1),
    ],
)
def test_reactive_replicas(rate: float, capacity: float, u: float, want: int) -> None:
    assert reactive_replicas(rate, capacity, u) == want


@pytest.mark.parametrize(
    ("need", "base_need", "base_rps", "want"),
    [
        (40, 17, 30.0, 22),  # the docstring: the reserve lifts 17 to 40; capped at 22
        (20, 17, 30.0, 20),  # below the cap: untouched
        (40, 25, 30.0, 25),  # the sizer's base need above the reactive count: kept
        (5, 5, 0.0, 5),  # no demand: the need without reserve stays
    ],
)
def test_guarded_need_worked_numbers(need: int, base_need: int, base_rps: float, want: int) -> None:
    assert guarded_need(need, base_need, base_rps, 2.0, 0.7) == want


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 500),
    st.integers(0, 500),
    st.floats(0.0, 1e4),
    st.floats(0.01, 100.0),
    st.floats(0.05, 1.0),
)
def test_guarded_need_stays_between_the_base_and_the_unguarded_need(
    need: int, base_need: int, base_rps: float, capacity: float, u: float
) -> None:
    base_need = min(base_need, need)  # the reserve only adds
    got = guarded_need(need, base_need, base_rps, capacity, u)
    assert base_need <= got <= need
    assert got == need or got >= reactive_replicas(base_rps, capacity, u)


def _bursty(t_s: float) -> float:
    """10 req/s with a 6x burst of one minute every 20 minutes."""
    return 60.0 if (t_s % 1200.0) < 60.0 else 10.0


def _run(**params: object) -> tuple[list[float], list[dict[str, dict[str, object]]]]:
    """The writer's count over the fifth hour of the bursty pattern, and every tick's details."""
    driver = Driver(make_config(), self_calibration=False, **params)
    driver.run(0.0, 4 * 3600.0, _bursty)
    writer, ticks = [], []
    for t in np.arange(4 * 3600.0, 5 * 3600.0, TICK_S):
        rate = _bursty(float(t))
        got = driver.tick(float(t), {"router": rate, "planner": 4 * rate, "writer": rate})
        ticks.append({n: dict(p.details) for n, p in got.items()})
        writer.append(float(driver.replicas["writer"]))
    return writer, ticks


def test_guarded_policy_caps_the_reserve_at_reactive_headroom_and_spends_less() -> None:
    held, ticks = _run(burst_reserve_cap="reactive")
    unguarded, _ = _run()
    assert float(np.mean(held)) < float(np.mean(unguarded))
    guarded = 0
    for details in ticks:
        for d in details.values():
            if "cost_guard_replicas" in d:
                guarded += 1
                # `feedforward_replicas` is the unguarded need, the guard's cap below it.
                cap = int(d["cost_guard_replicas"])
                assert int(d["feedforward_replicas"]) > cap >= int(d["feedforward_base_replicas"])
                floors = [int(d.get(f"{k}_replicas", 0)) for k in ("reactive", "upstream")]
                assert int(d["need"]) <= max(cap, *floors)
    assert guarded > 0


@settings(max_examples=20, deadline=None)
@given(st.lists(st.floats(0.0, 80.0), min_size=20, max_size=20))
def test_the_guard_never_proposes_below_the_reactive_floor(rates: list[float]) -> None:
    driver = Driver(make_config(), self_calibration=False, burst_reserve_cap="reactive")
    t = 0.0
    for rate in rates:
        got = driver.tick(t, {"router": rate, "planner": 4 * rate, "writer": rate})
        t += TICK_S
        for name, proposal in got.items():
            d = proposal.details
            floor = max(int(d.get("reactive_replicas", 0)), int(d.get("upstream_replicas", 0)))
            bound = driver.config.pipeline.components[name].replicas.max
            assert proposal.replicas is not None
            assert proposal.replicas >= min(floor, bound), (name, d)
