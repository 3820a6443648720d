"""Stages 3-7 on top of the guarded data: segments, creatives, forecast, allocation, payload.

Each function takes the run's transform connection (holding guarded_events, sessions and
daily_kpis) plus settings, and returns plain records; the pipeline brackets each with lineage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from flashcast.config import Settings
from flashcast.errors import ForecastError
from flashcast.forecasting.backtest import BacktestSpec, auto_forecast, forecast_many
from flashcast.forecasting.engines import DEFAULT_ENGINES
from flashcast.lineage import LogHead
from flashcast.llm.base import ProviderFailed
from flashcast.llm.client import StructuredClient
from flashcast.llm.tasks import label_clusters, llm_creatives
from flashcast.stages.allocate import Allocation, ChannelHistory, allocate_inverse_cpa
from flashcast.stages.allocate_curves import ChannelSeries, CurvePlan, allocate_by_curves
from flashcast.stages.clusters import kmeans_segments
from flashcast.stages.creatives import Creative, template_creatives
from flashcast.stages.forecast import Forecast, ProphetForecaster, forecast_series, from_auto
from flashcast.stages.guard import GuardReport, RunContext
from flashcast.stages.kpis import KpiSummary
from flashcast.stages.payload import Payload
from flashcast.stages.response import demand_index
from flashcast.stages.segments import SEGMENTS, Segmentation, rule_segments, user_features


def last_complete_day(kpis: KpiSummary) -> date:
    return kpis.last_day - timedelta(days=1) if kpis.partial_last_day else kpis.last_day


def segment_users(
    con: duckdb.DuckDBPyConnection, kpis: KpiSummary, settings: Settings, client: StructuredClient | None = None
) -> tuple[Segmentation, str | None]:
    """Segments, and a note when an LLM was configured but the offline method had to be used."""
    user_features(con, as_of=last_complete_day(kpis))
    note = None
    if client is not None:
        llm = client

        def namer(profiles: dict[int, dict[str, float]]) -> dict[int, tuple[str, str]]:
            labels = label_clusters(llm, profiles)  # one call for all clusters, never one per user
            return {label.cluster: (label.segment, label.reason) for label in labels.labels}

        try:
            return kmeans_segments(con, clusters=settings.segments.clusters, seed=settings.segments.seed,
                                   namer=namer), None
        except ProviderFailed as exc:
            note = f"LLM segment labels failed, used the offline {settings.segments.method} method: {exc}"
    if settings.segments.method == "kmeans":
        return kmeans_segments(con, clusters=settings.segments.clusters, seed=settings.segments.seed), note
    return rule_segments(con), note


def creative_library(
    settings: Settings, segmentation: Segmentation | None = None, client: StructuredClient | None = None
) -> tuple[list[Creative], str | None]:
    """The creative library from the LLM when configured (falling back to templates), else templates."""
    note = None
    if client is not None and segmentation is not None:
        try:
            return llm_creatives(client, settings.brand, segmentation.profiles, settings.channels.paid_channels,
                                 regenerate_red=settings.llm.regenerate_red,
                                 auto_approve_green=settings.brand.auto_approve_green), None
        except ProviderFailed as exc:
            note = f"LLM copy failed, used the templates: {exc}"
    return template_creatives(SEGMENTS, settings.channels.paid_channels, brand=settings.brand,
                              auto_approve_green=settings.brand.auto_approve_green), note


def revenue_history(con: duckdb.DuckDBPyConnection, kpis: KpiSummary) -> pd.DataFrame:
    """Total daily revenue over complete days (the partial last day is left out)."""
    rows = con.execute(
        f"""SELECT event_date, sum(revenue) FROM {kpis.table} WHERE event_date <= ?
        GROUP BY event_date ORDER BY event_date""",
        [last_complete_day(kpis)],
    ).fetchall()
    return pd.DataFrame({"ds": pd.to_datetime([r[0] for r in rows]), "y": [float(r[1]) for r in rows]})


def revenue_forecast(con: duckdb.DuckDBPyConnection, kpis: KpiSummary, settings: Settings) -> Forecast:
    """The configured engine, or (auto) the engine that wins the backtest; Prophet when the history is
    too short for a backtest."""
    history = revenue_history(con, kpis)
    if history.empty:
        raise ForecastError("revenue_total: no complete days of history")
    config = settings.forecast
    if config.engine == "prophet":
        return forecast_series(history, series_id="revenue_total", horizon=config.horizon,
                               engine=ProphetForecaster(countries=config.holiday_countries))
    engines = config.engines if config.engine == "auto" else (config.engine,)
    try:
        auto = auto_forecast(history, series_id="revenue_total", engines=engines,
                             spec=BacktestSpec(horizon=config.horizon), countries=config.holiday_countries)
    except ForecastError as exc:
        if "too short for a backtest" not in str(exc):
            raise
        fallback = forecast_series(history, series_id="revenue_total", horizon=config.horizon)
        return replace(fallback, notes=(f"{exc}; used Prophet without selection",))
    return from_auto(auto, history)


BREAKDOWN_ENGINES = DEFAULT_ENGINES  # always the fast line-up for the per-channel / per-segment series


def breakdown_series(con: duckdb.DuckDBPyConnection, kpis: KpiSummary, segments_table: str) -> pd.DataFrame:
    """Daily revenue per channel and per segment (zero-filled, complete days), plus the total."""
    end = last_complete_day(kpis)
    return con.execute(
        f"""WITH spine AS (SELECT d::DATE AS ds FROM generate_series(?::DATE, ?::DATE, INTERVAL 1 DAY) g(d)),
        by_channel AS (SELECT 'channel:' || channel AS series_id, event_date AS ds, revenue AS y
                       FROM {kpis.table} WHERE event_date <= ?),
        seg_revenue AS (
          SELECT 'segment:' || s.segment AS series_id, e.event_date AS ds, sum(e.revenue) AS y
          FROM guarded_events e JOIN {segments_table} s USING (user_key)
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


def breakdown_forecasts(con: duckdb.DuckDBPyConnection, kpis: KpiSummary, segments_table: str,
                        settings: Settings) -> pd.DataFrame:
    """Every channel's and segment's revenue, forecast in one parallel call (fast line-up)."""
    frame = breakdown_series(con, kpis, segments_table)
    return forecast_many(frame, engines=BREAKDOWN_ENGINES, spec=BacktestSpec(horizon=settings.forecast.horizon))


def channel_histories(con: duckdb.DuckDBPyConnection, kpis: KpiSummary, settings: Settings) -> list[ChannelHistory]:
    """Yesterday's spend and the lookback window's spend and purchases per paid channel."""
    yesterday = last_complete_day(kpis)
    start = yesterday - timedelta(days=settings.guardrails.lookback_days - 1)
    rows = con.execute(
        f"""SELECT channel,
          sum(spend) FILTER (WHERE event_date = ?::DATE),
          sum(spend) FILTER (WHERE event_date >= ?::DATE),
          sum(purchases) FILTER (WHERE event_date >= ?::DATE)
        FROM {kpis.table} WHERE event_date <= ?::DATE GROUP BY channel""",
        [yesterday, start, start, yesterday],
    ).fetchall()
    found = {r[0]: r for r in rows}
    return [ChannelHistory(c, float(found[c][1] or 0), float(found[c][2] or 0), float(found[c][3] or 0))
            if c in found else ChannelHistory(c, 0.0, 0.0, 0.0) for c in settings.channels.paid_channels]


def channel_series(con: duckdb.DuckDBPyConnection, kpis: KpiSummary, settings: Settings) -> list[ChannelSeries]:
    """Daily spend and outcome per paid channel over the fit window (complete days only), with a
    demand index from the unpaid channel's sessions so curves are fitted per unit of demand."""
    end = last_complete_day(kpis)
    start = end - timedelta(days=settings.allocation.fit_days - 1)
    outcome = "purchases" if settings.allocation.kpi == "conversions" else "revenue"
    organic = con.execute(
        f"""SELECT sessions FROM {kpis.table} WHERE channel = ? AND event_date BETWEEN ? AND ? ORDER BY event_date""",
        [settings.channels.default_channel, start, end]).fetchall()
    demand = demand_index(np.array([float(r[0]) for r in organic])) if organic else None
    out = []
    for channel in settings.channels.paid_channels:
        rows = con.execute(
            f"""SELECT spend, {outcome} FROM {kpis.table} WHERE channel = ? AND event_date BETWEEN ? AND ?
            ORDER BY event_date""", [channel, start, end]).fetchall()
        spend, result = np.array([float(r[0]) for r in rows]), np.array([float(r[1]) for r in rows])
        out.append(ChannelSeries(channel, spend, result, demand if demand is not None and len(demand) == len(rows)
                                 else None))
    return out


def budget_allocation(
    con: duckdb.DuckDBPyConnection, kpis: KpiSummary, settings: Settings
) -> tuple[Allocation, CurvePlan | None]:
    histories = channel_histories(con, kpis, settings)
    if settings.allocation.method == "inverse_cpa":
        return allocate_inverse_cpa(histories, settings.guardrails), None
    plan = allocate_by_curves(histories, channel_series(con, kpis, settings), settings.guardrails,
                              settings.allocation)
    return plan.allocation, plan


@dataclass(frozen=True)
class PlanParts:
    segmentation: Segmentation
    creatives: list[Creative]
    forecast: Forecast
    allocation: Allocation
    curves: CurvePlan | None = None
    breakdown: pd.DataFrame = field(default_factory=pd.DataFrame)  # per-channel / per-segment forecasts


def build_payload(
    parts: PlanParts, *, run: RunContext, report: GuardReport, head: LogHead, for_date: date
) -> Payload:
    """Assemble the payload document; red creatives are left out here (and refused by the schema)."""
    f = parts.forecast
    bands = {b.level: b for b in f.bands}
    days = [
        {"date": d, "point": p, **{f"{k}_{lvl}": getattr(bands[lvl], "lower" if k == "lo" else "upper")[i]
                                   for lvl in (50, 80, 95) for k in ("lo", "hi")}}
        for i, (d, p) in enumerate(zip(f.dates, f.point, strict=True))
    ]
    allocation = parts.allocation
    return Payload.model_validate({
        "lineage_id": run.lineage_id,
        "lineage_head": head.to_json(),
        "generated_at": datetime.now(UTC),
        "for_date": for_date,
        "reconciliation": report.totals,
        "segments": [{"segment": p.segment, "users": p.users, "share": round(p.share, 6)}
                     for p in parts.segmentation.profiles],
        "forecast": {"series_id": f.series_id, "engine": f.engine, "horizon_days": len(f.dates),
                     "total_point": round(sum(f.point), 2), "days": days},
        "allocations": {
            "method": allocation.method, "budget": allocation.budget,
            "expected_conversions": allocation.expected_conversions,
            "gain_vs_inverse_cpa": allocation.gain_vs_inverse_cpa,
            "channels": [{"channel": r.channel, "spend": r.spend, "share": r.share,
                          "yesterday_spend": r.yesterday_spend, "change": r.change, "bound": r.bound, "why": r.why,
                          "marginal_cpa": r.marginal_cpa, "expected_conversions": r.expected_conversions}
                         for r in allocation.rows],
        },
        "creatives": [
            {"creative_id": c.creative_id, "segment": c.segment, "channel": c.channel, "variant": c.variant,
             "headline": c.headline, "body": c.body, "light": c.light, "status": c.status,
             "reasons": [r.message for r in c.reasons]}
            for c in parts.creatives if c.light != "red" and c.status != "rejected"
        ],
    })


def creatives_frame(creatives: list[Creative], lineage_id: str) -> pd.DataFrame:
    return pd.DataFrame([
        {"lineage_id": lineage_id, **{k: v for k, v in asdict(c).items() if k != "reasons"},
         "reasons": "; ".join(f"{r.light}: {r.field}: {r.message}" for r in c.reasons)}
        for c in creatives
    ])


def allocation_frame(allocation: Allocation, lineage_id: str) -> pd.DataFrame:
    return pd.DataFrame([{"lineage_id": lineage_id, "method": allocation.method, **asdict(r)}
                         for r in allocation.rows])


def write_frame(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False, lineterminator="\n")
    return path
