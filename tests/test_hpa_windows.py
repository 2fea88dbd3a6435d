"""The HPA's stabilization windows kept as monotonic queues give what a scan of every
recommendation in the window gives (the lowest of the scale-up window, the highest of the
scale-down one), whatever the sequence."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from elastiscale.controllers.hpa import _Recommendations


@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 50)), min_size=1, max_size=60),
    st.sampled_from([0.0, 15.0, 60.0]),
    st.sampled_from([0.0, 45.0, 300.0]),
)
def test_windows_match_a_scan_of_the_recommendations(
    steps: list[tuple[int, int]], up_window_s: float, down_window_s: float
) -> None:
    now_s = 0.0
    kept = _Recommendations(now_s, steps[0][1])
    # a window of 0 s keeps no queue, and gives the same limits
    lean = _Recommendations(now_s, steps[0][1], lows=up_window_s > 0, highs=down_window_s > 0)
    seen = [(now_s, steps[0][1])]
    for gap, value in steps:
        now_s += 15.0 * gap  # ticks of 15 s, sometimes in the same second
        up_cut, down_cut = now_s - up_window_s, now_s - down_window_s
        want_low = min([value] + [v for t, v in seen if t > up_cut])
        want_high = max([value] + [v for t, v in seen if t > down_cut])
        assert kept.limits(up_cut, down_cut, value) == (want_low, want_high)
        assert lean.limits(up_cut, down_cut, value) == (want_low, want_high)
        kept.add(now_s, value)
        lean.add(now_s, value)
        seen.append((now_s, value))
