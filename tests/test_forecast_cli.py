"""`flashcast forecast`: any daily series file in, tidy forecasts, leaderboards and fan charts out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flashcast.cli import app
from flashcast.errors import ForecastError
from flashcast.forecasting.files import read_series_file

WEEKLY = np.array([1.0, 0.9, 0.95, 1.0, 1.1, 1.3, 1.2])


def _stores(n_days: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    frames = []
    for store, level in (("north", 100.0), ("south", 400.0), ("east", 50.0)):
        y = level * np.resize(WEEKLY, n_days) + rng.normal(0, level * 0.05, n_days)
        frames.append(pd.DataFrame({"store": store, "day": pd.date_range("2025-01-01", periods=n_days).date,
                                    "sales": y}))
    return pd.concat(frames, ignore_index=True)


def test_many_series_from_parquet_give_tidy_forecasts_leaderboards_and_charts(tmp_path: Path) -> None:
    data = tmp_path / "stores.parquet"
    _stores().to_parquet(data)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["forecast", str(data), "--date-col", "day", "--value-col", "sales",
                                      "--series-col", "store", "--out", str(out), "--horizon", "7", "--charts", "2"])
    assert result.exit_code == 0, result.output
    forecasts = pd.read_csv(out / "forecast.csv")
    assert sorted(forecasts["series_id"].unique()) == ["east", "north", "south"]
    assert len(forecasts) == 3 * 7
    assert (forecasts["lo_95"] <= forecasts["lo_80"]).all() and (forecasts["hi_80"] <= forecasts["hi_95"]).all()
    south = forecasts[forecasts["series_id"] == "south"]["point"]
    assert 300 < south.mean() < 500  # the south store's level, not another store's
    board = pd.read_csv(out / "forecast_backtest.csv")
    assert board.groupby("series_id")["selected"].sum().tolist() == [1, 1, 1]
    assert board[board["selected"]]["reason"].str.len().gt(0).all()
    assert len(list(out.glob("fan_chart_*.png"))) == 2


def test_a_bad_row_is_named(tmp_path: Path) -> None:
    frame = _stores(60)[["day", "sales"]].head(60).astype({"day": str})
    frame.loc[41, "day"] = "2025-02-30"
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(ForecastError, match=r"row 42: day is not a date"):
        read_series_file(path, date_col="day", value_col="sales")
    result = CliRunner().invoke(app, ["forecast", str(path), "--date-col", "day", "--value-col", "revenue"])
    output = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == 1
    assert "no column 'revenue' (columns: day, sales)" in output


def test_one_bad_series_does_not_sink_the_others(tmp_path: Path) -> None:
    frame = _stores()
    frame = frame[~((frame["store"] == "east") & (frame.index % 300 > 40))]  # east: 41 days only
    path = tmp_path / "stores.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["forecast", str(path), "--date-col", "day", "--value-col", "sales",
                                      "--series-col", "store", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "skipped east: history too short" in " ".join(result.output.split())
    assert sorted(pd.read_csv(out / "forecast.csv")["series_id"].unique()) == ["north", "south"]
