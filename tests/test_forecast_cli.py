"""`flashcast forecast`: any daily series file in, tidy forecasts, leaderboards and fan charts out."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flashcast import forecast_series
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
    frame = frame[~((frame["store"] == "east") & (frame.index % 300 > 19))]  # east: 20 days only
    path = tmp_path / "stores.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["forecast", str(path), "--date-col", "day", "--value-col", "sales",
                                      "--series-col", "store", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "skipped east: 20 days of history; at least 28 needed" in " ".join(result.output.split())
    assert sorted(pd.read_csv(out / "forecast.csv")["series_id"].unique()) == ["north", "south"]


def test_many_series_too_short_to_backtest_are_noted_ten_at_most(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    frame = pd.concat(pd.DataFrame({"shop": f"shop{i:02d}", "day": pd.date_range("2025-01-01", periods=35).date,
                                    "sales": 100 * np.resize(WEEKLY, 35) + rng.normal(0, 5, 35)}) for i in range(12))
    path = tmp_path / "shops.csv"
    frame.to_csv(path, index=False)
    result = CliRunner().invoke(app, ["forecast", str(path), "--date-col", "day", "--value-col", "sales",
                                      "--series-col", "shop", "--out", str(tmp_path / "out"), "--charts", "0"])
    output = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert output.count("used Prophet without selection") == 10
    assert "and 2 more series too short for a backtest, forecast by Prophet without selection" in output
    assert pd.read_csv(tmp_path / "out" / "forecast.csv")["series_id"].nunique() == 12


@pytest.mark.parametrize("n_days", [45, 100])
def test_a_series_too_short_to_backtest_is_forecast_by_prophet_and_says_so(tmp_path: Path, n_days: int) -> None:
    # 100 days: backtest origins at the default horizon, but none with calibration history before it
    # (once a crash)
    frame = _stores(n_days)
    frame = frame[frame["store"] == "south"]
    path = tmp_path / "south.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["forecast", str(path), "--date-col", "day", "--value-col", "sales",
                                      "--out", str(out)])
    output = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert "note south: history too short for a backtest" in output and "skipped" not in output
    assert "used Prophet without selection" in output
    forecasts = pd.read_csv(out / "forecast.csv")
    assert len(forecasts) == 14 and (forecasts["engine"] == "prophet").all()
    assert (forecasts["lo_95"] <= forecasts["lo_80"]).all() and (forecasts["lo_80"] <= forecasts["point"]).all()
    assert 300 < forecasts["point"].mean() < 500
    board = pd.read_csv(out / "forecast_backtest.csv")  # nothing was backtested: the columns, no rows
    assert board.empty and {"series_id", "engine", "mase", "reason"} <= set(board.columns)


def test_a_series_below_zero_is_skipped_with_the_option_that_takes_it(tmp_path: Path) -> None:
    frame = _stores()
    frame.loc[frame["store"] == "east", "sales"] -= 60.0  # a margin, say: it goes below zero
    path = tmp_path / "stores.csv"
    frame.to_csv(path, index=False)
    args = ["forecast", str(path), "--date-col", "day", "--value-col", "sales", "--series-col", "store", "--out",
            str(tmp_path / "out"), "--horizon", "7", "--charts", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "skipped east: negative value on 2025-01-01 (--signed takes series that may go below zero)" in " ".join(
        result.output.split())
    signed = CliRunner().invoke(app, [*args, "--signed"])
    assert signed.exit_code == 0 and "skipped" not in signed.output
    east = pd.read_csv(tmp_path / "out" / "forecast.csv").query("series_id == 'east'")
    assert len(east) == 7 and (east["lo_95"] < 0).any()


def _weekly(n_days: int = 280, start: str = "2025-01-01", seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    days = pd.date_range(start, periods=n_days)
    return pd.DataFrame({"ds": days, "y": 100 * np.resize(WEEKLY, n_days) + rng.normal(0, 4, n_days)})


def test_dates_may_mix_the_common_forms_and_an_ambiguous_column_asks_for_a_format(tmp_path: Path) -> None:
    data = tmp_path / "mixed.csv"
    data.write_text("Date,Sales\n9/14/2014,10\n10-01-2014,11\n2014-10-02,12\n2014/10/03,13\n20141004,14\n")
    frame = read_series_file(data, date_col="Date", value_col="Sales")
    assert [d.date().isoformat() for d in frame["ds"]] == ["2014-09-14", "2014-10-01", "2014-10-02", "2014-10-03",
                                                          "2014-10-04"]
    compact = tmp_path / "ga4_days.csv"  # GA4's event_date, YYYYMMDD: numbers to a CSV reader
    compact.write_text("event_date,revenue\n20141001,1\n20141002,2\n")
    days = read_series_file(compact, date_col="event_date", value_col="revenue")["ds"]
    assert [d.date().isoformat() for d in days] == ["2014-10-01", "2014-10-02"]
    no_day = tmp_path / "no_day.csv"
    no_day.write_text("Date,Sales\n20141001,1\n20141332,2\n")
    with pytest.raises(ForecastError, match=r"row 2: Date is not a date \(no such day\)"):
        read_series_file(no_day, date_col="Date", value_col="Sales")
    ambiguous = tmp_path / "ambiguous.csv"
    ambiguous.write_text("Date,Sales\n2014-01-01,1\n01/02/2014,2\n03/04/2014,3\n")
    with pytest.raises(ForecastError, match=r"row 2: Date is ambiguous .*--date-format") as caught:
        read_series_file(ambiguous, date_col="Date", value_col="Sales")
    assert "01/02" not in str(caught.value)  # the row and field are named, never the value
    days = read_series_file(ambiguous, date_col="Date", value_col="Sales", date_format="%d/%m/%Y")
    assert days["ds"].iloc[1].date().isoformat() == "2014-02-01"  # the ISO row does not match: named
    both = tmp_path / "both.csv"
    both.write_text("Date,Sales\n14/9/2014,1\n9/15/2014,2\n")
    with pytest.raises(ForecastError, match=r"row 2: Date is month-first but row 1 is not"):
        read_series_file(both, date_col="Date", value_col="Sales")


def test_date_and_value_columns_are_found_only_where_nothing_is_guessed(tmp_path: Path) -> None:
    two = tmp_path / "births.csv"
    two.write_text("Date,Births\n1959-01-01,35\n1959-01-02,32\n")
    frame = read_series_file(two)
    assert frame["y"].tolist() == [35.0, 32.0]
    assert frame.attrs == {"date_col": "Date", "value_col": "Births"}
    named = tmp_path / "named.csv"  # a column called day, whatever its place; the one value column left
    named.write_text("Revenue,DAY\n5,2025-01-01\n6,2025-01-02\n")
    assert read_series_file(named).attrs == {"date_col": "DAY", "value_col": "Revenue"}
    weekly = tmp_path / "mmm.csv"  # PyMC-Marketing's example names its dates date_week
    weekly.write_text("date_week,y,x1\n2018-04-02,3984.6,0.31\n2018-04-09,3762.8,0.11\n")
    assert read_series_file(weekly).attrs == {"date_col": "date_week", "value_col": "y"}
    (tmp_path / "week.csv").write_text("Week,sales\n2018-04-02,3984.6\n2018-04-09,3762.8\n")
    assert read_series_file(tmp_path / "week.csv").attrs == {"date_col": "Week", "value_col": "sales"}
    wide = tmp_path / "wide.csv"
    wide.write_text("instant,dteday,casual,cnt\n1,2011-01-01,3,9\n")
    with pytest.raises(ForecastError, match=r"wide.csv: which column holds the dates\? give --date-col "
                                            r"\(columns: instant, dteday, casual, cnt\)"):
        read_series_file(wide)
    with pytest.raises(ForecastError, match=r"which column holds the values\? give --value-col"):
        read_series_file(wide, date_col="dteday")
    with pytest.raises(ForecastError, match=r"no column 'ds' \(columns: instant, dteday, casual, cnt\)"):
        read_series_file(wide, date_col="ds", value_col="cnt")  # a missing date column named, not a reader error
    result = CliRunner().invoke(app, ["forecast", str(wide)])
    assert result.exit_code == 1 and "--date-col" in result.output and "Traceback" not in result.output
    for name, text in (("header_only.csv", "ds,y\n"), ("empty.csv", "")):
        (tmp_path / name).write_text(text)
        with pytest.raises(ForecastError, match=rf"{name}: no rows \(the file is empty or holds only its header\)"):
            read_series_file(tmp_path / name)
    book = tmp_path / "sales.xlsx"  # a workbook was "no rows": its zipped XML read as CSV
    with zipfile.ZipFile(book, "w") as parts:
        parts.writestr("xl/worksheets/sheet1.xml", "<worksheet/>")
    with pytest.raises(ForecastError, match=r"sales.xlsx: a spreadsheet workbook, not a CSV or Parquet file; save"):
        read_series_file(book)


def test_a_semicolon_file_from_a_spreadsheet_reads_its_decimal_commas(tmp_path: Path) -> None:
    european = tmp_path / "umsatz.csv"
    european.write_bytes("\ufeffDatum;Umsatz\n14.09.2014;1,5\n15.09.2014;-2\n16.09.2014;1234,25\n".encode())
    frame = read_series_file(european, date_col="Datum", value_col="Umsatz")
    assert frame["y"].tolist() == [1.5, -2.0, 1234.25]
    assert [d.date().isoformat() for d in frame["ds"]] == ["2014-09-14", "2014-09-15", "2014-09-16"]
    mixed = tmp_path / "mixed.csv"  # 1,5 beside 1.5: which mark is the decimal one is not guessed
    mixed.write_text("Datum;Umsatz\n2014-09-14;1,5\n2014-09-15;1.5\n")
    with pytest.raises(ForecastError, match=r"row 1: Umsatz is not a number"):
        read_series_file(mixed, date_col="Datum", value_col="Umsatz")
    commas = tmp_path / "commas.csv"  # in a comma-separated file a quoted 1,5 stays text
    commas.write_text('ds,y\n2014-09-14,"1,5"\n')
    with pytest.raises(ForecastError, match=r"row 1: y is not a number"):
        read_series_file(commas)


def test_a_number_formatted_for_reading_is_named_with_how_to_write_it(tmp_path: Path) -> None:
    formatted = tmp_path / "formatted.csv"
    formatted.write_text('ds,y\n2014-09-14,12\n2014-09-15,"$1,234.50"\n2014-09-16,n/a\n')
    with pytest.raises(ForecastError) as raised:
        read_series_file(formatted)
    assert str(raised.value).endswith("row 2: y is not a number (write plain numbers: no currency sign, thousands "
                                      "separator or percent sign)")
    assert "1,234" not in str(raised.value)
    formatted.write_text("ds,y\n2014-09-14,12\n2014-09-15,n/a\n")
    with pytest.raises(ForecastError) as raised:
        read_series_file(formatted)
    assert str(raised.value).endswith("row 2: y is not a number")


def test_monthly_data_is_named_not_forecast_as_a_daily_series(tmp_path: Path) -> None:
    said = "31 days apart (monthly data)"
    history = pd.DataFrame({"ds": pd.date_range("2022-01-03", periods=80, freq="MS"), "y": np.arange(80.0) + 10})
    with pytest.raises(ForecastError, match=rf"series: the dates are typically {re.escape(said)}; the forecaster takes "
                                            "daily or weekly series"):
        forecast_series(history)
    path = tmp_path / "monthly.csv"
    history.to_csv(path, index=False)
    out = tmp_path / "out"
    daily = tmp_path / "daily.csv"
    _weekly(120).to_csv(daily, index=False)  # a forecast made earlier in the same folder
    assert CliRunner().invoke(app, ["forecast", str(daily), "--horizon", "7", "--out", str(out)]).exit_code == 0
    before = (out / "forecast.csv").read_bytes()
    result = CliRunner().invoke(app, ["forecast", str(path), "--out", str(out)], terminal_width=400)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.splitlines()[-1].startswith(f"ForecastError: nothing forecast: monthly: the dates are "
                                                      f"typically {said}"), result.output
    assert (out / "forecast.csv").read_bytes() == before, "nothing forecast: the earlier forecast stays"


def _weeks(n: int, seed: int = 4) -> pd.DataFrame:
    """Weekly sales (Sundays): a trend, a yearly cycle and noise."""
    t = np.arange(n)
    y = 1000 + 2 * t + 250 * np.sin(2 * np.pi * t / 52.18) + np.random.default_rng(seed).normal(0, 40, n)
    return pd.DataFrame({"week": pd.date_range("2021-01-03", periods=n, freq="7D").date, "sales": y})


def test_a_weekly_file_is_forecast_in_weeks(tmp_path: Path) -> None:
    """A media-mix team's weekly sales: forecast week by week (the horizon counts weeks), by the
    weekly line-up (`naive` for `naive7`), with the yearly cycle the data show."""
    data = tmp_path / "weekly_sales.csv"
    frame = _weeks(200)
    frame.to_csv(data, index=False)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["forecast", str(data), "--out", str(out), "--horizon", "13"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "13-week forecasts (1 series)" in result.output
    forecast = pd.read_csv(out / "forecast.csv", parse_dates=["ds"])
    assert len(forecast) == 13
    assert forecast["ds"].iloc[0] == pd.Timestamp(frame["week"].iloc[-1]) + pd.Timedelta(days=7)
    assert (forecast["ds"].diff().dropna() == pd.Timedelta(days=7)).all()
    board = pd.read_csv(out / "forecast_backtest.csv")
    assert set(board["engine"]) == {"naive", "ses", "theta", "linear", "ensemble"}
    t = np.arange(200, 213)
    truth = 1000 + 2 * t + 250 * np.sin(2 * np.pi * t / 52.18)
    naive_error = np.abs(frame["sales"].iloc[-1] - truth).mean()
    assert np.abs(forecast["point"].to_numpy() - truth).mean() < 0.5 * naive_error
    assert (forecast["lo_80"] <= forecast["point"]).all() and (forecast["point"] <= forecast["hi_80"]).all()


def test_a_glitch_in_the_file_is_named_beside_the_table(tmp_path: Path) -> None:
    history = _weekly()
    history.loc[len(history) // 2, "y"] *= 1000  # a test order of a million
    data = tmp_path / "glitch.csv"
    history.to_csv(data, index=False)
    result = CliRunner().invoke(app, ["forecast", str(data), "--out", str(tmp_path / "out")], terminal_width=200)
    assert result.exit_code == 0, result.output
    day = pd.Timestamp(history.loc[len(history) // 2, "ds"]).date()
    words = " ".join(result.output.split())  # the console wraps long notes
    assert f"note glitch: 1 isolated spike(s) ({day}), 10x or more the same weekday's level" in words
    assert "1 spike" in result.output  # in the table's history column


def test_a_series_with_regular_closed_days_is_forecast_closed_and_says_so(tmp_path: Path) -> None:
    history = _weekly()
    history = history[history["ds"].dt.dayofweek != 5]  # never open on Saturdays
    data = tmp_path / "shop.csv"
    history.to_csv(data, index=False)
    result = CliRunner().invoke(app, ["forecast", str(data), "--out", str(tmp_path / "out")], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "closed on Saturdays" in result.output
    assert "closed on Saturdays: no value on those days, forecast as 0" in result.output  # the note in full
    forecast = pd.read_csv(tmp_path / "out" / "forecast.csv", parse_dates=["ds"])
    saturdays = forecast[forecast["ds"].dt.dayofweek == 5]
    assert len(saturdays) == 2 and (saturdays[["point", "lo_95", "hi_95"]] == 0).all().all()
    assert (forecast[forecast["ds"].dt.dayofweek != 5]["point"] > 50).all()


def test_blank_cells_are_missing_days_and_blank_last_days_are_left_out(tmp_path: Path) -> None:
    history = _weekly()
    history["y"] = history["y"].astype(object)
    history.loc[history.index[[40, 41]], "y"] = ""  # cells left empty in a spreadsheet
    last_value = history["ds"].iloc[-3]
    history.loc[history.index[-2:], "y"] = ""  # days not yet filled in
    data = tmp_path / "blanks.csv"
    history.to_csv(data, index=False)
    result = CliRunner().invoke(app, ["forecast", str(data), "--out", str(tmp_path / "out")], terminal_width=200)
    assert result.exit_code == 0, result.output
    history_column = re.sub(r"[│\s]+", " ", result.output)  # the column's cells, wrapped over rows
    assert "2 days filled; 2 blank last days left out" in history_column
    forecast = pd.read_csv(tmp_path / "out" / "forecast.csv", parse_dates=["ds"])
    assert forecast["ds"].iloc[0] == last_value + pd.Timedelta(days=1)


def test_a_partly_filled_last_day_is_left_out_unless_kept(tmp_path: Path) -> None:
    from flashcast import forecast_series

    history = _weekly()
    history.loc[history.index[-1], "y"] *= 0.2  # the export ran mid-day
    last = history["ds"].iloc[-1]
    dropped = forecast_series(history, horizon=7)
    assert dropped["ds"].iloc[0] == last  # the partial day is forecast, not learned from
    assert any("left out as partly filled" in n for n in dropped.attrs["notes"])
    assert dropped["point"].iloc[0] > 0.7 * 100 * WEEKLY[last.dayofweek]
    kept = forecast_series(history, horizon=7, keep_last_day=True)
    assert kept["ds"].iloc[0] == last + pd.Timedelta(days=1)
    assert not any("partly filled" in n for n in kept.attrs["notes"])
    data = tmp_path / "partial.csv"
    history.to_csv(data, index=False)
    result = CliRunner().invoke(app, ["forecast", str(data), "--out", str(tmp_path / "out")], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "partly filled last day left out" in re.sub(r"[│\s]+", " ", result.output)  # the history column
    assert re.search(r"note \S+: the last day \(" + str(last.date()), result.output)  # and the note in full
    # A series that may be negative (a profit, a change) has no level a last value is a share of:
    # a last day below its median is kept (it was dropped as "at -4303% of the median").
    signed = history.assign(y=history["y"] - 100.0)
    signed.loc[signed.index[-1], "y"] = -60.0
    assert forecast_series(signed, horizon=7, nonnegative=False)["ds"].iloc[0] == last + pd.Timedelta(days=1)


def test_forecast_series_is_the_command_s_default_path(tmp_path: Path) -> None:
    from flashcast import forecast_series

    history = _weekly(200)
    ours = forecast_series(history, horizon=10)
    assert list(ours.columns) == ["ds", "point", "lo_50", "hi_50", "lo_80", "hi_80", "lo_95", "hi_95"]
    data = tmp_path / "one.csv"
    history.to_csv(data, index=False)
    result = CliRunner().invoke(app, ["forecast", str(data), "--horizon", "10", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    command = pd.read_csv(tmp_path / "out" / "forecast.csv")
    assert command["engine"].iloc[0] == ours.attrs["engine"]
    assert np.allclose(command["point"].to_numpy(), ours["point"].to_numpy(), rtol=1e-5)
    assert np.allclose(command["hi_95"].to_numpy(), ours["hi_95"].to_numpy(), rtol=1e-5)
    with pytest.raises(ForecastError, match="columns ds and y"):
        forecast_series(history.rename(columns={"y": "sales"}))


def test_every_series_gets_its_own_readable_chart_file(tmp_path: Path) -> None:
    from flashcast.forecasting.files import chart_file_name

    used: set[str] = set()
    names = [chart_file_name(s, used) for s in ("東京", "大阪", "a/b", "a_b", "Ünïcode café", "")]
    assert names[0] == "fan_chart_東京.png" and names[1] == "fan_chart_大阪.png"
    assert len(set(names)) == len(names)  # a/b and a_b no longer share a file
    assert names[4] == "fan_chart_Ünïcode_café.png" and names[5] == "fan_chart_series.png"


def test_a_horizon_of_zero_is_refused_not_taken_for_the_default(tmp_path: Path) -> None:
    data = tmp_path / "one.csv"
    _weekly(200).to_csv(data, index=False)
    result = CliRunner().invoke(app, ["forecast", str(data), "--horizon", "0", "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "horizon: Input should be greater than or equal to 1" in result.output
    assert not (tmp_path / "out").exists()


def test_rows_by_the_hour_or_by_order_are_summed_by_day_when_asked(tmp_path: Path) -> None:
    """An orders export (a row per order, with its time) is not a daily series: without
    --sum-by-date the series is skipped saying so and how; with it, each day is its rows' sum."""
    daily = _weekly(150)
    rows = []
    for day, value in zip(daily["ds"], daily["y"], strict=True):
        for hour, share in ((9, 0.5), (13, 0.3), (20, 0.2)):
            rows.append((day + pd.Timedelta(hours=hour), value * share))
    orders = pd.DataFrame(rows, columns=["created_at", "amount"])
    data = tmp_path / "orders.csv"
    orders.to_csv(data, index=False)
    refused = CliRunner().invoke(app, ["forecast", str(data), "--out", str(tmp_path / "no")], terminal_width=200)
    assert refused.exit_code == 1 and "duplicate date" in refused.output
    assert "several rows a day: --sum-by-date adds them up" in " ".join(refused.output.split())
    summed = CliRunner().invoke(app, ["forecast", str(data), "--sum-by-date", "--horizon", "7",
                                      "--out", str(tmp_path / "out")])
    assert summed.exit_code == 0, summed.output
    from flashcast import forecast_series

    direct = forecast_series(daily, horizon=7)
    command = pd.read_csv(tmp_path / "out" / "forecast.csv")
    assert np.allclose(command["point"].to_numpy(), direct["point"].to_numpy(), rtol=1e-4)
