"""The forecasting edges: read daily series from a CSV or Parquet file into the long
(series_id, ds, y) frame the forecasting functions take (DuckDB reads and checks the file; a bad
row is named, not guessed at), and write forecasts, leaderboards and fan charts."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from flashcast.errors import ForecastError
from flashcast.forecasting.charts import plot_fan_chart
from flashcast.forecasting.forecast import Forecast, leaderboards, tidy_all
from flashcast.sql import identifier
from flashcast.tablefile import TableFile, open_table_file


def read_series_file(path: Path, *, date_col: str | None = None, value_col: str | None = None,
                     series_col: str | None = None, default_id: str | None = None,
                     date_format: str | None = None, sum_by_date: bool = False) -> pd.DataFrame:
    """Long frame (series_id, ds, y) from `path`, with the file's column names in `frame.attrs`
    ("date_col", "value_col"). Columns not named are found as `find_columns` says. Without
    `series_col` the file holds one series, named `default_id` (the file's stem by default). Dates
    may mix the common forms (see `parse_dates`); `date_format` (strptime codes) fixes one.
    `sum_by_date`: a series' rows of one day (by the hour, one per order) are added up into one (a
    day whose values are all blank stays blank). Errors name the file, the column and the row
    (1-based, header not counted), never a value."""
    con = duckdb.connect()
    try:
        table = open_table_file(con, path, ForecastError)
        date_col, value_col = find_columns(table, date_col, value_col, series_col)
        date, value, number = identifier(date_col), identifier(value_col), table.number_sql(con, value_col)
        bad = con.execute(f"SELECT _row FROM source WHERE {value} IS NOT NULL AND {number} IS NULL "
                          "ORDER BY _row LIMIT 1").fetchall()
        if bad:
            raise ForecastError(f"{path}: row {bad[0][0]}: {value_col} {table.not_a_number(con, value_col, bad[0][0])}")
        empty = con.execute(f"SELECT min(_row) FROM source WHERE {date} IS NULL").fetchall()[0][0]
        if empty is not None:
            raise ForecastError(f"{path}: row {empty}: {date_col} is empty")
        series = f"{identifier(series_col)}::VARCHAR" if series_col else "?"
        params = [] if series_col else [default_id or path.stem]
        frame = con.execute(
            f"SELECT {series} AS series_id, {date}::VARCHAR AS ds, {number} AS y FROM source ORDER BY _row",
            params).df()
    finally:
        con.close()
    try:
        frame["ds"] = parse_dates(frame["ds"], date_format=date_format)
    except DateProblem as exc:
        raise ForecastError(f"{path}: row {exc.row + 1}: {date_col} {exc.problem}") from None
    if sum_by_date:
        frame = frame.groupby(["series_id", "ds"], as_index=False, sort=True)["y"].sum(min_count=1)
    frame.attrs.update(date_col=date_col, value_col=value_col)
    return frame


DATE_NAMES = ("ds", "date", "day", "week")


def find_columns(table: TableFile, date_col: str | None, value_col: str | None,
                 series_col: str | None) -> tuple[str, str]:
    """The date and value columns: the ones named, else found only where nothing is guessed. Dates:
    `ds`, else the one column called date, day or week (any case), else the one whose name holds
    "date" (date_week, order_date), else the first of a file's two columns. Values: `y`, else the
    one column left besides the dates and the series id."""
    table.require([date_col, value_col, series_col])
    path, columns, shown = table.path, table.columns, ", ".join(table.columns)
    if date_col is None:
        named = [c for c in columns if c.lower() in DATE_NAMES]
        dated = [c for c in columns if "date" in c.lower() and c != series_col]
        others = [c for c in columns if c != series_col]
        if "ds" in columns:
            date_col = "ds"
        elif len(named) == 1:
            date_col = named[0]
        elif not named and len(dated) == 1:
            date_col = dated[0]
        elif len(others) == 2 and value_col in (None, others[1]):
            date_col = others[0]
        else:
            raise ForecastError(f"{path}: which column holds the dates? give --date-col (columns: {shown})")
    if value_col is None:
        rest = [c for c in columns if c not in (date_col, series_col)]
        if "y" in columns and date_col != "y":
            value_col = "y"
        elif len(rest) == 1:
            value_col = rest[0]
        else:
            raise ForecastError(f"{path}: which column holds the values? give --value-col (columns: {shown})")
    return date_col, value_col


class DateProblem(ValueError):
    def __init__(self, row: int, problem: str) -> None:
        super().__init__(problem)
        self.row, self.problem = row, problem


_YEAR_FIRST = re.compile(r"^\s*(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[ T].*)?\s*$")
_COMPACT = re.compile(r"^\s*(\d{4})(\d{2})(\d{2})(?:\.0)?\s*$")  # 20141001, GA4's event_date (a number, read as one)
_YEAR_LAST = re.compile(r"^\s*(\d{1,2})[-/.](\d{1,2})[-/.](\d{4}|\d{2})\s*$")


def parse_dates(values: pd.Series, *, date_format: str | None = None) -> pd.Series:
    """Dates from text that may mix the common forms: 2014-10-01, 2014/10/01, 20141001, 10/01/2014,
    1.10.2014, 9/14/2014 and 10-01-2014 in one column. Year-first is always year-month-day. For day
    and month with the year last, the file's unambiguous values decide the order (14/9 is day-first,
    9/14 month-first); raises DateProblem (0-based row) when the column holds both orders, when every
    such value is ambiguous (say which with `date_format`), or a value is not a date."""
    text = values.astype(str)
    first = text.str.extract(_YEAR_FIRST)
    first = first.where(first[0].notna(), text.str.extract(_COMPACT))
    if date_format:  # it decides every value but the year-first ones, which are never ambiguous
        parsed = pd.to_datetime(text, format=date_format, errors="coerce")
        iso = pd.to_datetime(first.fillna("1").astype(int).rename(columns={0: "year", 1: "month", 2: "day"}),
                             errors="coerce").where(first[0].notna())
        parsed = parsed.fillna(iso)
        if parsed.isna().any():
            raise DateProblem(int(np.flatnonzero(parsed.isna())[0]), f"does not match --date-format {date_format}")
        return parsed.dt.normalize()
    last = text.str.extract(_YEAR_LAST)
    year_first, year_last = first[0].notna().to_numpy(), last[0].notna().to_numpy()
    neither = np.flatnonzero(~year_first & ~year_last)
    if len(neither):
        raise DateProblem(int(neither[0]), "is not a date (use YYYY-MM-DD, or give --date-format)")
    a, b = last[0].astype(float).to_numpy(), last[1].astype(float).to_numpy()
    day_first = np.flatnonzero(year_last & (a > 12))
    month_first = np.flatnonzero(year_last & (b > 12))
    if len(day_first) and len(month_first):
        later, earlier = max(day_first[0], month_first[0]), min(day_first[0], month_first[0])
        order = "day" if day_first[0] > month_first[0] else "month"
        raise DateProblem(int(later), f"is {order}-first but row {earlier + 1} is not: give --date-format")
    if year_last.any() and not len(day_first) and not len(month_first):
        raise DateProblem(int(np.flatnonzero(year_last)[0]), "is ambiguous (day or month first): give --date-format, "
                          "e.g. %m/%d/%Y or %d/%m/%Y")
    years = last[2].astype(float).to_numpy()
    years = np.where(years < 100, 2000 + years, years)
    parts = pd.DataFrame({
        "year": np.where(year_first, first[0].astype(float), years),
        "month": np.where(year_first, first[1].astype(float), a if not len(day_first) else b),
        "day": np.where(year_first, first[2].astype(float), b if not len(day_first) else a),
    })
    parsed = pd.to_datetime(parts.fillna(1).astype(int), errors="coerce")
    invalid = np.flatnonzero(parsed.isna())
    if len(invalid):
        raise DateProblem(int(invalid[0]), "is not a date (no such day)")
    return parsed


def write_forecast_outputs(results: Sequence[Forecast], out: Path, *, charts: int = 12,
                           ylabel: str = "value") -> dict[str, Path]:
    """forecast.csv (tidy: series_id, ds, engine, point, band bounds), forecast_backtest.csv (every
    series' leaderboard, the winner flagged with why) and a fan chart for each of the first
    `charts` series."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"forecast": out / "forecast.csv", "forecast_backtest": out / "forecast_backtest.csv"}
    tidy_all(results).to_csv(files["forecast"], index=False, float_format="%.6g")
    leaderboards(results).to_csv(files["forecast_backtest"], index=False)
    used: set[str] = set()
    for result in list(results)[:charts]:
        name = chart_file_name(result.series_id, used)
        files[f"fan_chart:{result.series_id}"] = plot_fan_chart(result, out / name, ylabel=ylabel)
    return files


def chart_file_name(series_id: str, used: set[str]) -> str:
    """`fan_chart_<id>.png` with letters of any script kept (Unicode word characters), the rest as
    `_`; a name already taken (two ids that differ only in punctuation) gets a short hash of the id."""
    safe = re.sub(r"[^\w.-]+", "_", series_id).strip("._") or "series"
    name = f"fan_chart_{safe[:80]}.png"
    if name.casefold() in used:
        name = f"fan_chart_{safe[:80]}_{hashlib.sha256(series_id.encode()).hexdigest()[:8]}.png"
    used.add(name.casefold())
    return name
