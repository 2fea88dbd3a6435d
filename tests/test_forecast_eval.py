"""Rolling-origin evaluation and the `forecast-eval` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from elastiscale import registry
from elastiscale.cli import main
from elastiscale.errors import TraceError
from elastiscale.forecasting import Forecaster
from elastiscale.forecasting.evaluation import demand_series, evaluate
from elastiscale.trace import parse_trace

AZURE = "examples/traces/azure_llm_2023_conv_1s.csv"


def build(name: str, **params: object) -> Forecaster:
    fc = registry.build("forecaster", name, None, params)
    assert isinstance(fc, Forecaster)
    return fc


def periodic_series(bins: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """10-minute bins, a 4-hour cycle, noise: seasonal-naive is a fair baseline here."""
    rng = np.random.default_rng(seed)
    i = np.arange(bins)
    y = 40 + 30 * np.sin(2 * np.pi * i / 24) + rng.normal(0, 3, bins)
    return i * 600.0, np.maximum(y, 0.0)


def test_scores_are_relative_to_the_better_baseline() -> None:
    t, y = periodic_series(24 * 8)
    ev = evaluate(
        t,
        y,
        {"ewma": build("ewma", step_s=600.0)},
        (600.0, 3600.0),
        train_s=4 * 86400 / 6,
        refit_every_s=6 * 3600.0,
    )
    s = ev.summary
    assert s["selected"] == "ewma" and set(s["models"]) == {"ewma"}
    for key in ("600", "3600"):
        base = s["baselines"][key]
        maes = {b: base[f"{b}_mae"] for b in ("last-value", "seasonal-naive")}
        assert base["name"] == min(maes, key=lambda b: maes[b])
        cell = s["models"]["ewma"]["horizons"][key]
        assert cell["rel_mae"] == pytest.approx(cell["mae"] / base["mae"])
        assert 0 <= cell["p90_coverage"] <= cell["p99_coverage"] <= 1
    # at an hour ahead the cycle has moved on: seasonal-naive is the baseline, ewma far behind
    assert s["baselines"]["3600"]["name"] == "seasonal-naive"
    assert s["models"]["ewma"]["horizons"]["3600"]["rel_mae"] > 1.5
    assert s["models"]["ewma"]["fits"] == 3  # origins 96..186, refits every 36 bins


def test_auto_uses_only_data_before_each_origin() -> None:
    """Changing the series after an origin cannot change any forecast made up to it."""
    t, y = periodic_series(24 * 6, seed=2)
    changed = y.copy()
    cut = 24 * 4 + 5
    changed[cut:] = changed[cut:] * 3 + 50

    def forecasts(series: np.ndarray) -> np.ndarray:
        fc = build("auto", step_s=600.0, horizons_s=[600.0, 1800.0])
        ev = evaluate(t, series, {"auto": fc}, (600.0, 1800.0), train_s=3 * 86400 / 6)
        return ev.runs["auto"].mean

    before, after = forecasts(y), forecasts(changed)
    origin_of_cut = cut - 24 * 3  # origins start at bin 72
    np.testing.assert_array_equal(before[: origin_of_cut + 1], after[: origin_of_cut + 1])
    assert not np.array_equal(before[origin_of_cut + 1 :], after[origin_of_cut + 1 :])


def test_demand_series_resamples_and_refuses_uneven_bins() -> None:
    trace = parse_trace("t_seconds,requests\n" + "\n".join(f"{i},{i % 3}" for i in range(12)))
    t, rate = demand_series(trace, 3.0)
    assert t.tolist() == [0, 3, 6, 9] and rate.tolist() == [1.0, 1.0, 1.0, 1.0]
    with pytest.raises(TraceError, match=r"resample_s = 2\.5 is not a whole multiple"):
        demand_series(trace, 2.5)


def test_too_short_a_series_is_refused_clearly() -> None:
    t, y = periodic_series(30)
    with pytest.raises(ValueError, match="leaves no origin"):
        evaluate(t, y, {"ewma": build("ewma")}, (3600.0 * 10,), train_s=600.0)


def test_forecast_eval_command_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "forecast-eval",
            "--trace",
            AZURE,
            "--horizon-s",
            "60",
            "300",
            "--model",
            "ewma",
            "--model",
            "auto",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads((out / "forecast.json").read_text())
    assert report["selected"] == "auto"
    assert report["baseline"] in ("last-value", "seasonal-naive")
    assert set(report["models"]) == {"ewma", "auto"}
    for model in report["models"].values():
        assert set(model["horizons"]) == {"60", "300"}
        cell = model["horizons"]["300"]
        assert {"rel_mae", "asymmetric_error", "p90_coverage", "p99_coverage"} <= set(cell)
        assert model["fit_s"] >= 0 and model["predict_ms"] > 0
    assert "choices" in report["models"]["auto"]
    assert (out / "forecast.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trace", "no/such.csv"], "cannot read"),
        (["--trace", AZURE, "--horizon-s", "-60"], "horizons must be > 0"),
        (["--trace", AZURE, "--model", "prophet"], "unknown forecaster 'prophet'"),
        (["--trace", AZURE, "--resample-s", "1.5"], "not a whole multiple"),
        (["--trace", AZURE, "--train-s", "86400"], "leaves no origin"),
    ],
)
def test_forecast_eval_bad_input_exits_2_with_one_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["forecast-eval", *args, "--out", str(tmp_path), "--no-plot"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1
