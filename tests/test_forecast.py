"""Forecast records: Prophet's sample bands (short histories), the fan chart, the series validator,
the stage's fallback and the record an auto forecast makes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flashcast.config import ForecastConfig
from flashcast.errors import ForecastError
from flashcast.forecasting.charts import plot_fan_chart
from flashcast.forecasting.engines import ProphetEngine
from flashcast.forecasting.forecast import Forecast, bands_are_nested, sampled_forecast
from flashcast.forecasting.series import validate_history
from flashcast.stages.forecast import revenue_forecast


def _series(days: int = 800, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(days)
    y = 1000 + 150 * np.sin(2 * np.pi * t / 7) + 200 * np.sin(2 * np.pi * t / 365.25) + rng.normal(0, 60, days)
    return pd.DataFrame({"ds": pd.date_range("2025-01-01", periods=days), "y": y})


@pytest.fixture(scope="module")
def prophet_forecast() -> Forecast:
    return sampled_forecast(_series(), series_id="revenue_total", engine=ProphetEngine(), horizon=14, n_samples=500)


def test_bands_are_nested_and_ordered(prophet_forecast: Forecast) -> None:
    f = prophet_forecast
    assert f.engine == "prophet" and len(f.dates) == 14 and len(f.point) == 14
    assert sorted(f.bands) == [50, 80, 95]
    assert bands_are_nested(f)
    widths = [np.mean(f.bands[level].upper - f.bands[level].lower) for level in (50, 80, 95)]
    assert widths[0] < widths[1] < widths[2]


def test_forecast_tracks_the_series(prophet_forecast: Forecast) -> None:
    f = prophet_forecast
    t = np.arange(800, 814)
    truth = 1000 + 150 * np.sin(2 * np.pi * t / 7) + 200 * np.sin(2 * np.pi * t / 365.25)
    assert np.mean(np.abs(np.array(f.point) - truth)) < 80  # noise sd is 60
    inside = np.mean((truth >= np.array(f.band(95).lower)) & (truth <= np.array(f.band(95).upper)))
    assert inside >= 0.85
    assert f.dates[0] == pd.Timestamp("2025-01-01").date() + pd.Timedelta(days=800)


def test_nesting_check_can_fail(prophet_forecast: Forecast) -> None:
    from dataclasses import replace

    bands = dict(prophet_forecast.bands)
    bands[50] = bands[50]._replace(upper=bands[50].upper + 10_000)
    assert not bands_are_nested(replace(prophet_forecast, bands=bands))


def test_revenue_is_never_negative() -> None:
    low = _series(120)
    low["y"] = np.clip(low["y"] - 1000, 0, None)
    f = sampled_forecast(low, series_id="low", engine=ProphetEngine(), horizon=14, n_samples=300)
    assert min(f.band(95).lower) >= 0 and bands_are_nested(f)


def test_fan_chart_png(prophet_forecast: Forecast, tmp_path: Path) -> None:
    path = plot_fan_chart(prophet_forecast, tmp_path / "fan.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_a_fan_chart_titled_in_chinese_japanese_and_korean_has_every_glyph(
        prophet_forecast: Forecast, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CJK font is found (make test installs Debian's fonts-noto-cjk) and takes the glyphs DejaVu
    Sans lacks; without one the chart is still written and the warning names what to install."""
    import warnings

    from conftest import skip_or_fail
    from flashcast import charts

    if not charts.fallback_families():
        skip_or_fail("no CJK font is installed (Debian package fonts-noto-cjk; make test installs it)")
    title = "売上 東京店 / 서울 매출 / 销售额"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plot_fan_chart(prophet_forecast, tmp_path / "cjk.png", title=title)
    assert not [str(w.message) for w in caught if "font" in str(w.message)]

    monkeypatch.setattr(charts, "fallback_families", lambda: ())
    with pytest.warns(UserWarning, match="no installed font covers some of its characters.*fonts-noto-cjk"):
        plot_fan_chart(prophet_forecast, tmp_path / "boxes.png", title=title)
    assert (tmp_path / "boxes.png").read_bytes() != (tmp_path / "cjk.png").read_bytes()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda df: df.head(10), "at least 28 needed"),
        (lambda df: df.iloc[::2], "days missing"),
        (lambda df: pd.concat([df, df.tail(1)]), "duplicate date"),
        (lambda df: df.assign(y=df["y"].where(df.index != 30, -5.0)), "negative value on"),
    ],
)
def test_bad_series_are_refused(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ForecastError, match=message):
        validate_history(mutate(_series(120)), series_id="revenue_total")


def test_a_missing_day_is_filled_by_the_documented_rule() -> None:
    series = _series(120)
    clean = validate_history(series.drop(index=50), series_id="revenue_total")
    assert len(clean.y) == 120 and clean.filled_days == 1
    assert clean.y[50] == pytest.approx((series["y"].iloc[49] + series["y"].iloc[51]) / 2)


def test_an_auto_forecast_carries_its_leaderboard_and_is_rounded_to_cents() -> None:
    from flashcast.forecasting.backtest import BacktestSpec
    from flashcast.forecasting.forecast import auto_forecast

    history = _series(300)
    auto = auto_forecast(history, series_id="revenue_total", engines=["naive7", "linear"],
                         spec=BacktestSpec(step=7, origins=20, calibration=20))
    assert auto.selection is not None and bands_are_nested(auto)
    assert [row["engine"] for row in auto.leaderboard] == [s.engine for s in auto.selection.leaderboard]
    assert auto.notes[0].startswith(auto.engine) and "lowest mean MASE" in auto.notes[0]
    cents = auto.rounded(2)
    assert all(round(x, 2) == x for x in cents.point) and bands_are_nested(cents)
    assert cents.to_frame().columns.tolist() == ["series_id", "date", "point", "lo_50", "hi_50", "lo_80", "hi_80",
                                                 "lo_95", "hi_95", "engine"]


def test_a_history_too_short_to_backtest_is_banded_by_prophet_with_the_configured_holidays(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from flashcast.forecasting import forecast as library

    built: list[ProphetEngine] = []

    def spy(**kwargs: object) -> ProphetEngine:
        built.append(ProphetEngine(**kwargs))  # type: ignore[arg-type]
        return built[-1]

    monkeypatch.setattr(library, "ProphetEngine", spy)
    f = revenue_forecast(_series(60), ForecastConfig(holiday_countries=("US",)))
    assert [e.countries for e in built] == [("US",)]
    assert f.engine == "prophet" and bands_are_nested(f) and f.selection is None
    assert "too short for a backtest" in f.notes[0] and "used Prophet without selection" in f.notes[0]


def test_a_named_engine_is_banded_like_the_selected_ones() -> None:
    f = revenue_forecast(_series(300), ForecastConfig(engine="naive7"))
    assert f.engine == "naive7" and f.selection is not None and bands_are_nested(f)
    assert [s.engine for s in f.selection.leaderboard] == ["naive7"]
