"""`elastiscale capacity`: the highest rate scale each policy holds on N GPUs, capacity.json's
shape, the bisection, the GPU check, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import elastiscale
from elastiscale.backtest.capacity import (
    MAX_SCALE,
    Probe,
    _search,
    capacity,
    fit_initial,
    peak_gpus,
)
from elastiscale.cli import main
from test_backtest_api import small_config, synthetic
from test_backtest_scoring import result, series


def _threshold(limit: float) -> object:
    def run(scale: float) -> Probe:
        return Probe(scale, scale <= limit, 0.99 if scale <= limit else 0.5, scale, scale)

    return run


@pytest.mark.parametrize("limit", [0.3, 1.0, 3.0, 17.5])
def test_the_bisection_ends_within_2_percent_below_the_limit(limit: float) -> None:
    got = _search(_threshold(limit), "p", 0.02)
    assert got.max_rate_scale is not None
    assert limit / 1.02 <= got.max_rate_scale <= limit
    failed = [p.rate_scale for p in got.probes if not p.holds]
    assert min(failed) <= got.max_rate_scale * 1.02 + 1e-12  # the bracket is closed


def test_nothing_holds_is_null_and_everything_holds_stops_at_the_cap() -> None:
    none = _search(_threshold(0.0), "p", 0.02)
    assert none.to_dict() == {"max_rate_scale": None, "slo_attainment": None, "gpu_hours": None}
    assert _search(_threshold(1e9), "p", 0.02).max_rate_scale == MAX_SCALE


def test_capacity_json_has_the_issues_shape_and_static_gets_all_the_gpus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = small_config()
    trace = tmp_path / "t.csv"
    t = np.arange(0, 1200, 2.0)
    rates = np.where((t > 400) & (t < 700), 8.0, 4.0)
    trace.write_text("t_seconds,requests\n" + "".join(f"{a:g},{r * 2:g}\n" for a, r in
                     zip(t, rates, strict=True)))  # fmt: skip
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(json.dumps(config.model_dump(by_alias=True, exclude_unset=True)))
    out = tmp_path / "out"
    code = main(["capacity", str(pipeline), "--trace", str(trace), "--gpus", "12",
                 "--policy", "static-peak", "--policy", "hpa", "--out", str(out)])  # fmt: skip
    stdout, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads((out / "capacity.json").read_text())
    assert set(doc) == {"gpus", "policies"} and doc["gpus"] == 12
    assert list(doc["policies"]) == ["static-peak", "hpa"]
    for entry in doc["policies"].values():
        assert set(entry) == {"max_rate_scale", "slo_attainment", "gpu_hours"}
        assert entry["slo_attainment"] >= 0.99
    # all 12 GPUs, all 20 minutes; 12 replicas of 2 calls/s serve 24 calls/s and the burst
    # brings 8 req/s x 2 calls = 16 calls/s x the scale, for 5 minutes: queues absorb a little
    static = doc["policies"]["static-peak"]
    assert static["gpu_hours"] == pytest.approx(12 * 1200 / 3600)
    assert 24 / 16 * 0.9 <= static["max_rate_scale"] <= 24 / 16 * 1.2
    md = (out / "capacity.md").read_text()
    assert "| static-peak |" in md and "| hpa |" in md and "## Runs" in md
    assert "| static-peak |" in stdout


def test_a_run_over_the_gpu_budget_does_not_hold() -> None:
    config = small_config()
    trace = synthetic(np.full(300, 5.0))  # 10 calls/s: hpa at 0.7 wants 8 LLM replicas
    got = capacity(config, trace, 4.0, ["hpa"])["hpa"]
    assert got.max_rate_scale is not None
    for probe in got.probes:
        if probe.peak_gpus > 4.0 + 1e-6:
            assert not probe.holds


def test_peak_gpus_counts_billed_replicas_times_gpus() -> None:
    config = small_config()
    components = {
        "router": series(4, ready=3, desired=3),
        "llm": series(4, ready=[2, 2, 4, 4], starting=[0, 2, 0, 0], desired=4),
    }
    got = result([1.0], [1.0], [2.0], **components)
    assert peak_gpus(got, config, -np.inf, np.inf) == 4.0


def test_starting_counts_are_scaled_into_the_budget() -> None:
    config = small_config()
    assert fit_initial(config, {"router": 2, "llm": 30}, 10) == {"router": 2, "llm": 10}
    assert fit_initial(config, {"router": 2, "llm": 6}, 10) == {"router": 2, "llm": 6}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--gpus", "0"], "gpus = 0, must be > 0"),
        (["--gpus", "4", "--precision", "2"], "precision = 2"),
        (["--gpus", "4", "--policy", "no-such-policy"], "no-such-policy"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = Path(__file__).resolve().parents[1]
    code = main(["capacity", str(root / "examples" / "pipelines" / "agent.yaml"), "--trace",
                 str(root / "examples" / "traces" / "azure_llm_2023_conv_1s.csv"), "--end", "60",
                 "--out", str(tmp_path), *argv])  # fmt: skip
    _, err = capsys.readouterr()
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_pipeline_without_gpus_is_refused() -> None:
    raw = small_config().model_dump(by_alias=True, exclude_unset=True)
    raw["pipeline"]["components"]["llm"]["gpus_per_replica"] = 0
    with pytest.raises(ValueError, match="no component has gpus_per_replica"):
        capacity(elastiscale.load_config(raw), synthetic(np.full(30, 1.0)), 4.0)
