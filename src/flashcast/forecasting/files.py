"""The forecasting edges: read daily series from a CSV or Parquet file into the long
(series_id, ds, y) frame the forecasting functions take (DuckDB reads and checks the file; a bad
row is named, not guessed at), and write forecasts, leaderboards and fan charts."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pandas as pd

from flashcast.errors import ForecastError
from flashcast.forecasting.charts import plot_fan_chart
from flashcast.forecasting.forecast import Forecast, leaderboards, tidy_all
from flashcast.sql import identifier


def read_series_file(path: Path, *, date_col: str = "ds", value_col: str = "y", series_col: str | None = None,
                     default_id: str | None = None) -> pd.DataFrame:
    """Long frame (series_id, ds, y) from `path`. Without `series_col` the file holds one series,
    named `default_id` (the file's stem by default). Errors name the file, the column and the row
    (1-based, header not counted)."""
    if not path.is_file():
        raise ForecastError(f"{path}: no such file")
    con = duckdb.connect()
    try:
        kind = "parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv"
        try:
            raw = con.read_parquet(str(path)) if kind == "parquet" else con.read_csv(str(path))
            raw.create_view("raw_file")
            # Insertion order is preserved, so row_number() is the row's position in the file.
            con.execute("CREATE TEMP VIEW source AS SELECT *, row_number() OVER () AS _row FROM raw_file")
            columns = [c[0] for c in con.execute("DESCRIBE source").fetchall()]
        except duckdb.Error as exc:
            raise ForecastError(f"{path}: cannot be read as {kind}: {exc}") from exc
        wanted = [c for c in (date_col, value_col, series_col) if c]
        missing = [c for c in wanted if c not in columns]
        if missing:
            shown = ", ".join(c for c in columns if c != "_row")
            raise ForecastError(f"{path}: no column {missing[0]!r} (columns: {shown})")
        date, value = identifier(date_col), identifier(value_col)
        for column, check in ((date_col, f"try_cast({date} AS DATE)"), (value_col, f"try_cast({value} AS DOUBLE)")):
            bad = con.execute(
                f"SELECT _row, {identifier(column)}::VARCHAR FROM source "
                f"WHERE {identifier(column)} IS NOT NULL AND {check} IS NULL ORDER BY _row LIMIT 1").fetchall()
            if bad:
                expected = "a date" if column == date_col else "a number"
                raise ForecastError(f"{path}: row {bad[0][0]}: {column} is not {expected}")
        empty = con.execute(f"SELECT min(_row) FROM source WHERE {date} IS NULL").fetchall()[0][0]
        if empty is not None:
            raise ForecastError(f"{path}: row {empty}: {date_col} is empty")
        series = f"{identifier(series_col)}::VARCHAR" if series_col else "?"
        params = [] if series_col else [default_id or path.stem]
        frame = con.execute(
            f"SELECT {series} AS series_id, {date}::DATE AS ds, {value}::DOUBLE AS y FROM source ORDER BY _row",
            params).df()
    finally:
        con.close()
    frame["ds"] = pd.to_datetime(frame["ds"])
    return frame


def write_forecast_outputs(results: Sequence[Forecast], out: Path, *, charts: int = 12,
                           ylabel: str = "value") -> dict[str, Path]:
    """forecast.csv (tidy: series_id, ds, engine, point, band bounds), forecast_backtest.csv (every
    series' leaderboard, the winner flagged with why) and a fan chart for each of the first
    `charts` series."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"forecast": out / "forecast.csv", "forecast_backtest": out / "forecast_backtest.csv"}
    tidy_all(results).to_csv(files["forecast"], index=False, float_format="%.6g")
    leaderboards(results).to_csv(files["forecast_backtest"], index=False)
    for result in list(results)[:charts]:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", result.series_id)
        files[f"fan_chart:{result.series_id}"] = plot_fan_chart(result, out / f"fan_chart_{safe}.png", ylabel=ylabel)
    return files
