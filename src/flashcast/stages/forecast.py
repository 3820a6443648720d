"""Stage 5: the revenue forecast (total, for the fan chart) and every channel's and segment's revenue.

The total is forecast by the configured engine, or (`auto`) by the engine that wins the backtest,
with conformal bands; a history too short for a backtest is forecast by Prophet's own sample paths
instead, and the forecast says so. A history too short for any forecast (MIN_HISTORY_DAYS) fails
the stage softly: the record says why, the rest of the run stands and no payload is made. An
`auto` selection is kept (`forecast_selections`) and reused by the next runs for `[forecast]
reselect_days` days of new history unless it drifted: a daily run then refits one engine. The
breakdown uses the fast default line-up, all series in one parallel call. Money is rounded to cents.
"""

from __future__ import annotations

import json
from dataclasses import replace

import duckdb
import pandas as pd

from flashcast.config import ForecastConfig, Settings
from flashcast.errors import ForecastError, HistoryTooShort
from flashcast.forecasting.backtest import BacktestSpec
from flashcast.forecasting.engines import DEFAULT_ENGINES, EngineOptions
from flashcast.forecasting.forecast import (
    Calibration,
    Forecast,
    auto_forecast,
    bands_are_nested,
    forecast_each,
    refit_forecast,
    short_history_forecast,
    tidy_all,
)
from flashcast.records import ForecastPlan, GuardReport, KpiSummary, RunContext, Segmentation, Table
from flashcast.sql import insert_rows

SERIES_ID = "revenue_total"


def run(con: duckdb.DuckDBPyConnection, *, guard: GuardReport, kpis: KpiSummary, segments: Segmentation,
        settings: Settings, context: RunContext) -> ForecastPlan:
    """The forecast stage: total revenue with nested bands, then the per-channel and per-segment series.
    A day whose export rows fell far under its usual (`guard.outage_days`: a tag that stopped firing, a
    day without a file) is a missing day to every series, filled like any gap: its zero is not a sale."""
    stored = stored_calibrations(con) if settings.forecast.reselect_days > 0 else {}
    missing = pd.to_datetime(list(guard.outage_days))
    try:
        forecast = revenue_forecast(without(revenue_history(con, kpis), missing), settings.forecast,
                                    stored=stored.get(SERIES_ID))
    except ForecastError as exc:  # a history too short (or too broken): the governed data, segments and copy stand
        keep_selections(con, [], stored, context)
        return ForecastPlan(None, pd.DataFrame(), failure=f"{type(exc).__name__}: {exc}")
    if not bands_are_nested(forecast):
        raise ForecastError(f"{SERIES_ID}: forecast bands are not nested")
    done, skipped = forecast_each(without(breakdown_series(con, kpis, segments.table), missing),
                                  engines=DEFAULT_ENGINES, spec=BacktestSpec(horizon=settings.forecast.horizon),
                                  keep_last_day=True,
                                  calibrations=stored, max_age_days=settings.forecast.reselect_days)
    keep_selections(con, [forecast, *done], stored, context)
    breakdown = tidy_all(done)
    reasons = tuple(s.reason for s in skipped)
    breakdown.attrs["skipped"] = list(reasons)
    return ForecastPlan(forecast, breakdown, reasons)


def without(history: pd.DataFrame, days: pd.DatetimeIndex) -> pd.DataFrame:
    """`history` (ds, y, ...) with no value on `days`: missing days, which the forecaster fills."""
    if not len(days):
        return history
    out = history.copy()
    out.loc[pd.to_datetime(out["ds"]).isin(days), "y"] = float("nan")
    return out


def revenue_history(con: duckdb.DuckDBPyConnection, kpis: KpiSummary) -> pd.DataFrame:
    """Total daily revenue over complete days (the partial last day is left out)."""
    rows = con.execute(
        f"""SELECT event_date, sum(revenue) FROM {kpis.table} WHERE event_date <= ?
        GROUP BY event_date ORDER BY event_date""",
        [kpis.last_complete_day],
    ).fetchall()
    return pd.DataFrame({"ds": pd.to_datetime([r[0] for r in rows]), "y": [float(r[1]) for r in rows]})


def stored_calibrations(con: duckdb.DuckDBPyConnection) -> dict[str, Calibration]:
    """The latest run's selection per series, if the warehouse kept them (see history.read_history)."""
    table = f"_stored_{Table.FORECAST_SELECTIONS}"
    present = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [table]).fetchall()[0][0]
    if not present:
        return {}
    found = {}
    for series_id, text in con.execute(f"SELECT series_id, calibration FROM {table}").fetchall():
        try:
            found[str(series_id)] = Calibration.from_json(json.loads(text))
        except (KeyError, TypeError, ValueError):
            continue  # written by another version: that series is selected afresh
    return found


def keep_selections(con: duckdb.DuckDBPyConnection, forecasts: list[Forecast], stored: dict[str, Calibration],
                    context: RunContext) -> None:
    """The run's selection per series, for the warehouse (appended per run, like every decision);
    `reused` says which were a stored one refitted."""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {Table.FORECAST_SELECTIONS} (lineage_id VARCHAR, series_id VARCHAR,
        engine VARCHAR, selected_through DATE, reused BOOLEAN, calibration VARCHAR, created_at TIMESTAMPTZ)""")
    rows = [(context.lineage_id, f.series_id, f.engine, f.calibration.through,
             f.calibration is stored.get(f.series_id), json.dumps(f.calibration.to_json()), context.processed_at)
            for f in forecasts if f.calibration is not None]
    if rows:
        insert_rows(con, Table.FORECAST_SELECTIONS, rows)


def revenue_forecast(history: pd.DataFrame, config: ForecastConfig, *, stored: Calibration | None = None,
                     series_id: str = SERIES_ID) -> Forecast:
    """The configured engine, or (auto) the backtest's winner, rounded to cents. With `stored` (the
    last selection) and `reselect_days`, a fresh selection is reused: one refit, stored bands.
    Errors and notes name the series `series_id`."""
    if history.empty:
        raise ForecastError(f"{series_id}: no complete days of history")
    options = EngineOptions(countries=config.holiday_countries)
    engines = config.engines if config.engine == "auto" else (config.engine,)
    spec = BacktestSpec(horizon=config.horizon)
    reselected = None
    if stored is not None and config.reselect_days > 0:
        reused = refit_forecast(history, stored, spec=spec, options=options, keep_last_day=True,
                                max_age_days=config.reselect_days, line_up=engines)
        if isinstance(reused, Forecast):
            return reused.rounded(2)
        reselected = reused
    try:
        # The daily KPIs hold complete days only: no last day to second-guess.
        forecast = auto_forecast(history, series_id=series_id, engines=engines, spec=spec, options=options,
                                 keep_last_day=True)
        if reselected:
            forecast = replace(forecast, notes=(*forecast.notes, f"selected afresh: the last selection was stale "
                                                                 f"({reselected})"))
    except HistoryTooShort as exc:
        forecast = short_history_forecast(history, exc, series_id=series_id, horizon=config.horizon, options=options,
                                          keep_last_day=True)
    return forecast.rounded(2)


def breakdown_series(con: duckdb.DuckDBPyConnection, kpis: KpiSummary, segments_table: str) -> pd.DataFrame:
    """Daily revenue per channel and per segment (zero-filled, complete days), plus the total."""
    end = kpis.last_complete_day
    return con.execute(
        f"""WITH spine AS (SELECT d::DATE AS ds FROM generate_series(?::DATE, ?::DATE, INTERVAL 1 DAY) g(d)),
        by_channel AS (SELECT 'channel:' || channel AS series_id, event_date AS ds, revenue AS y
                       FROM {kpis.table} WHERE event_date <= ?),
        seg_revenue AS (
          SELECT 'segment:' || s.segment AS series_id, e.event_date AS ds, sum(e.revenue) AS y
          FROM {Table.GUARDED_EVENTS} e JOIN {segments_table} s USING (user_key)
          WHERE e.event_name = 'purchase' AND e.event_date <= ? GROUP BY ALL),
        segs AS (SELECT DISTINCT segment FROM {segments_table}),
        by_segment AS (
          SELECT 'segment:' || segs.segment AS series_id, spine.ds, coalesce(r.y, 0) AS y
          FROM spine CROSS JOIN segs
          LEFT JOIN seg_revenue r ON r.series_id = 'segment:' || segs.segment AND r.ds = spine.ds),
        total AS (SELECT 'total' AS series_id, event_date AS ds, sum(revenue) AS y FROM {kpis.table}
                  WHERE event_date <= ? GROUP BY event_date)
        SELECT * FROM by_channel UNION ALL SELECT * FROM by_segment UNION ALL SELECT * FROM total
        ORDER BY series_id, ds""",
        [kpis.first_day, end, end, end, end],
    ).df()
