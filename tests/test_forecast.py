"""Stage 5: Prophet fan chart with nested bands, and refusals for bad series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flashcast.errors import ForecastError
from flashcast.stages.forecast import Forecast, bands_are_nested, forecast_series, plot_fan_chart, validate_history


def _series(days: int = 420, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(days)
    y = 1000 + 150 * np.sin(2 * np.pi * t / 7) + 200 * np.sin(2 * np.pi * t / 365.25) + rng.normal(0, 60, days)
    return pd.DataFrame({"ds": pd.date_range("2025-01-01", periods=days), "y": y})


@pytest.fixture(scope="module")
def prophet_forecast() -> Forecast:
    return forecast_series(_series(), series_id="revenue_total", horizon=14, n_samples=500)


def test_bands_are_nested_and_ordered(prophet_forecast: Forecast) -> None:
    f = prophet_forecast
    assert f.engine == "prophet" and len(f.dates) == 14 and len(f.point) == 14
    assert [b.level for b in f.bands] == [50, 80, 95]
    assert bands_are_nested(f)
    widths = [np.mean(np.array(b.upper) - np.array(b.lower)) for b in f.bands]
    assert widths[0] < widths[1] < widths[2]


def test_forecast_tracks_the_series(prophet_forecast: Forecast) -> None:
    f = prophet_forecast
    t = np.arange(420, 434)
    truth = 1000 + 150 * np.sin(2 * np.pi * t / 7) + 200 * np.sin(2 * np.pi * t / 365.25)
    assert np.mean(np.abs(np.array(f.point) - truth)) < 80  # noise sd is 60
    inside = np.mean((truth >= np.array(f.band(95).lower)) & (truth <= np.array(f.band(95).upper)))
    assert inside >= 0.85
    assert f.dates[0] == pd.Timestamp("2025-01-01").date() + pd.Timedelta(days=420)


def test_nesting_check_can_fail(prophet_forecast: Forecast) -> None:
    from dataclasses import replace

    b50, b80, b95 = prophet_forecast.bands
    crossed = replace(b50, upper=tuple(x + 10_000 for x in b50.upper))
    assert not bands_are_nested(replace(prophet_forecast, bands=(crossed, b80, b95)))


def test_revenue_is_never_negative() -> None:
    low = _series(120)
    low["y"] = np.clip(low["y"] - 1000, 0, None)
    f = forecast_series(low, series_id="low", horizon=14, n_samples=300)
    assert min(f.band(95).lower) >= 0 and bands_are_nested(f)


def test_fan_chart_png(prophet_forecast: Forecast, tmp_path: Path) -> None:
    path = plot_fan_chart(prophet_forecast, tmp_path / "fan.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda df: df.head(10), "at least 28 needed"),
        (lambda df: df.iloc[::2], "days missing"),
        (lambda df: pd.concat([df, df.tail(1)]), "duplicate date"),
        (lambda df: df.assign(y=df["y"].where(df.index != 30, -5.0)), "negative value on"),
        (lambda df: df.assign(y=df["y"].where(df.index != 31, np.nan)), "missing value on"),
    ],
)
def test_bad_series_are_refused(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ForecastError, match=message):
        validate_history(mutate(_series(120)), series_id="revenue_total")


def test_a_missing_day_is_filled_by_the_documented_rule() -> None:
    series = _series(120)
    clean = validate_history(series.drop(index=50), series_id="revenue_total")
    assert len(clean) == 120
    assert clean["y"].iloc[50] == pytest.approx((series["y"].iloc[49] + series["y"].iloc[51]) / 2)


def test_an_auto_forecast_becomes_the_stage_record() -> None:
    from flashcast.forecasting.backtest import BacktestSpec, auto_forecast
    from flashcast.stages.forecast import from_auto

    history = _series(300)
    auto = auto_forecast(history, series_id="revenue_total", engines=["naive7", "linear"],
                         spec=BacktestSpec(step=7, origins=20, calibration=20))
    f = from_auto(auto, history)
    assert f.engine == auto.engine and bands_are_nested(f)
    assert [row["engine"] for row in f.leaderboard] == [s.engine for s in auto.selection.leaderboard]
    assert f.notes[0].startswith(auto.engine) and "lowest mean MASE" in f.notes[0]
    assert f.to_frame().columns.tolist() == ["series_id", "date", "point", "lo_50", "hi_50", "lo_80", "hi_80",
                                             "lo_95", "hi_95", "engine"]
