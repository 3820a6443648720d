"""Conformance: every registered engine, through the same paths a run takes.

A new engine in `forecasting.engines.REGISTRY` is tested here without another line: point forecasts
of the right shape on a short history, nested bands that hold the point after selection, and a
constant series forecast as that constant.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from flashcast.forecasting.backtest import BacktestSpec
from flashcast.forecasting.engines import REGISTRY, EngineOptions, SamplingEngine, make_engine
from flashcast.forecasting.forecast import auto_forecast, bands_are_nested, sampled_forecast
from flashcast.forecasting.series import WEEKLY as WEEKLY_CADENCE

WEEKLY = np.array([1.0, 0.9, 0.95, 1.0, 1.1, 1.3, 1.2])
QUICK = BacktestSpec(step=7, origins=6, calibration=8)  # 14 origins: enough to band, cheap for slow engines
ENGINES = sorted(REGISTRY)
# AutoARIMA's search costs seconds per fit on daily series: the selection test takes ~30 s.
SELECTED = [pytest.param(n, marks=pytest.mark.slow) if n == "arima" else n for n in ENGINES]


def _frame(y: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"ds": pd.date_range("2025-01-01", periods=len(y)), "y": y})


def _seasonal(n: int, seed: int) -> np.ndarray:
    return 100 * np.resize(WEEKLY, n) + np.random.default_rng(seed).normal(0, 8, n)


@pytest.mark.parametrize("name", SELECTED)
def test_engine_gives_nested_bands_around_its_point(name: str) -> None:
    frame = _frame(_seasonal(180, 1))
    result = auto_forecast(frame, series_id=name, engines=[name], spec=QUICK)
    assert result.engine == name and result.point.shape == (14,)
    assert result.dates[0] == frame["ds"].iloc[-1].date() + timedelta(days=1)
    assert all(b - a == timedelta(days=1) for a, b in zip(result.dates, result.dates[1:], strict=False))
    assert sorted(result.bands) == [50, 80, 95] and bands_are_nested(result)
    assert all(np.isfinite(band).all() for pair in result.bands.values() for band in pair)
    assert np.abs(result.point - 100 * np.resize(np.roll(WEEKLY, -180 % 7), 14)).mean() < 25


@pytest.mark.parametrize("name", ENGINES)
def test_engine_forecasts_from_five_weeks_of_history(name: str) -> None:
    y = _seasonal(35, 2)
    point = make_engine(name).point(y, pd.date_range("2025-01-01", periods=35), 14)
    assert point.shape == (14,) and np.isfinite(point).all()


@pytest.mark.parametrize("name", ENGINES)
def test_engine_forecasts_a_constant_series_as_that_constant(name: str) -> None:
    result = auto_forecast(_frame(np.full(180, 250.0)), series_id=name, engines=[name], spec=QUICK)
    assert np.allclose(result.point, 250.0, rtol=0.01) and bands_are_nested(result)


WEEKLY_SELECTED = [name for name in SELECTED if name != "naive7"]  # naive7's weekly form is naive
QUICK_WEEKLY = BacktestSpec(origins=6, calibration=16)  # an origin every week: 22 origins band the first


@pytest.mark.parametrize("name", WEEKLY_SELECTED)
def test_every_engine_has_a_weekly_form(name: str) -> None:
    """On weekly rows each engine forecasts weeks: a constant as itself, and from a year and a half
    of weeks (too short for a yearly season) finite values, as many as asked."""
    weeks = pd.date_range("2022-01-02", periods=150, freq="7D")
    constant = auto_forecast(pd.DataFrame({"ds": weeks, "y": 250.0}), series_id=name, engines=[name],
                             spec=QUICK_WEEKLY)
    assert np.allclose(constant.point, 250.0, rtol=0.01) and bands_are_nested(constant)
    assert constant.dates[0] == weeks[-1].date() + timedelta(days=7) and len(constant.dates) == 14
    y = 100 + np.random.default_rng(6).normal(0, 8, 78)
    point = make_engine(name, EngineOptions(cadence=WEEKLY_CADENCE)).point(y, weeks[:78], 14)
    assert point.shape == (14,) and np.isfinite(point).all() and np.abs(point - 100).max() < 40


@pytest.mark.parametrize("name", [n for n in ENGINES if isinstance(make_engine(n), SamplingEngine)])
def test_sampling_engines_band_a_short_history_from_their_own_paths(name: str) -> None:
    engine = make_engine(name)
    assert isinstance(engine, SamplingEngine)
    result = sampled_forecast(_frame(_seasonal(60, 3)), series_id=name, engine=engine, n_samples=300)
    assert result.engine == name and bands_are_nested(result) and result.selection is None
    widths = [float(np.mean(result.bands[level].upper - result.bands[level].lower)) for level in (50, 80, 95)]
    assert 0 < widths[0] < widths[1] < widths[2]


@pytest.mark.parametrize("name", SELECTED)
def test_a_series_falling_to_zero_keeps_bands_nested_above_zero_around_the_point(name: str) -> None:
    """Trend engines extrapolate a falling series below zero: clipping must keep the nesting and the
    point inside its narrowest band (a channel that was switched off looks like this)."""
    rng = np.random.default_rng(5)
    y = np.maximum(np.linspace(60, -20, 180) + rng.normal(0, 4, 180), 0.0)
    result = auto_forecast(_frame(y), series_id=name, engines=[name], spec=QUICK)
    assert bands_are_nested(result) and np.all(result.point >= 0)
    assert all((band >= 0).all() for pair in result.bands.values() for band in pair)


def test_nested_bands_hold_the_point_when_clipping_or_a_biased_engine_would_not() -> None:
    from flashcast.forecasting.backtest import nested_bands

    point = np.array([-5.0, 10.0])
    offsets = {50: (np.array([-1.0, 2.0]), np.array([1.0, 4.0])),  # day 2: every error positive (biased low)
               80: (np.array([-3.0, 1.0]), np.array([3.0, 6.0])),
               95: (np.array([-9.0, 0.5]), np.array([9.0, 9.0]))}
    clipped, bands = nested_bands(point, offsets, nonnegative=True)
    assert clipped.tolist() == [0.0, 10.0]
    assert bands[50][0].tolist() == [0.0, 10.0] and bands[50][1].tolist() == [0.0, 14.0]
    assert bands[95][0].tolist() == [0.0, 10.0] and bands[95][1].tolist() == [4.0, 19.0]
