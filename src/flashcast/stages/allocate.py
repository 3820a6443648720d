"""Stage 6: tomorrow's budget across paid channels, within the guardrails, to the cent.

The histories come from the daily KPIs (complete days only); the maths is the `budget` library's:
response curves fitted per channel and optimized exactly (default), or inverse CPA.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import timedelta
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pandas as pd

from flashcast.budget.records import Allocation, ChannelHistory
from flashcast.config import Settings
from flashcast.errors import AllocationError
from flashcast.records import AllocationPlan, GuardReport, KpiSummary, RunContext, Table

if TYPE_CHECKING:
    from flashcast.budget.plan import ChannelSeries


def run(con: duckdb.DuckDBPyConnection, *, guard: GuardReport, kpis: KpiSummary, settings: Settings,
        context: RunContext) -> AllocationPlan:
    """The allocation stage: the configured method on the KPI history; the split in table `allocations`."""
    # The optimizer's maths (scipy) is imported here, not with the pipeline: `flashcast ingest`
    # never allocates and starts about 0.7 s sooner without it.
    from flashcast.budget.inverse_cpa import allocate_inverse_cpa
    from flashcast.budget.plan import allocate_by_curves

    histories = channel_histories(con, kpis, settings)
    try:
        if settings.allocation.method == "inverse_cpa":
            plan = AllocationPlan(allocate_inverse_cpa(histories, settings.guardrails))
        else:
            curves = allocate_by_curves(histories, channel_series(con, kpis, settings, missing=guard.outage_days),
                                        settings.guardrails, settings.allocation)
            plan = AllocationPlan(curves.allocation, curves)
    except AllocationError as exc:  # the governed data, segments and forecast still stand
        plan = AllocationPlan(None, failure=f"{type(exc).__name__}: {exc}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE {Table.ALLOCATIONS} ({ALLOCATION_COLUMNS})")
    if plan.allocation is not None:
        con.register("_allocations_df", allocation_frame(plan.allocation, context.lineage_id))
        con.execute(f"INSERT INTO {Table.ALLOCATIONS} BY NAME SELECT * FROM _allocations_df")
        con.unregister("_allocations_df")
    return plan


ALLOCATION_COLUMNS = ", ".join([
    "lineage_id VARCHAR", "method VARCHAR", "channel VARCHAR",
    *(f"{name} DOUBLE" for name in ("yesterday_spend", "lookback_spend", "conversions", "cpa", "raw_weight",
                                    "target_spend", "spend", "share", "change", "lower", "upper")),
    "bound VARCHAR", "why VARCHAR",
    *(f"{name} DOUBLE" for name in ("marginal_cpa", "expected_conversions", "expected_low", "expected_high")),
])


def allocation_frame(allocation: Allocation, lineage_id: str) -> pd.DataFrame:
    return pd.DataFrame([{"lineage_id": lineage_id, "method": allocation.method, **asdict(r)}
                         for r in allocation.rows])


def channel_histories(con: duckdb.DuckDBPyConnection, kpis: KpiSummary, settings: Settings) -> list[ChannelHistory]:
    """Yesterday's spend and the lookback window's spend and purchases per paid channel."""
    yesterday = kpis.last_spend_day
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


def channel_series(con: duckdb.DuckDBPyConnection, kpis: KpiSummary, settings: Settings, *,
                   missing: Sequence[str] = ()) -> list[ChannelSeries]:
    """Daily spend and outcome per paid channel over the fit window (complete days only), with a
    demand index from the unpaid channel's sessions so curves are fitted per unit of demand. On the
    `missing` days (ISO dates whose export rows fell far under their usual: `GuardReport.outage_days`)
    the outcome and the sessions are interpolated from the days around them: the spend was made, what
    it brought was not recorded."""
    from flashcast.budget.curves import demand_index
    from flashcast.budget.plan import ChannelSeries

    end = kpis.last_spend_day
    start = end - timedelta(days=settings.allocation.fit_days - 1)
    outcome = "purchases" if settings.allocation.kpi == "conversions" else "revenue"
    organic = con.execute(
        f"""SELECT event_date, sessions FROM {kpis.table} WHERE channel = ? AND event_date BETWEEN ? AND ?
        ORDER BY event_date""", [settings.channels.default_channel, start, end]).fetchall()
    gone = set(missing)
    lost = np.array([r[0].isoformat() in gone for r in organic], dtype=bool)
    demand = demand_index(_interpolated(np.array([float(r[1]) for r in organic]), lost)) if organic else None
    out = []
    for channel in settings.channels.paid_channels:
        rows = con.execute(
            f"""SELECT spend, {outcome} FROM {kpis.table} WHERE channel = ? AND event_date BETWEEN ? AND ?
            ORDER BY event_date""", [channel, start, end]).fetchall()
        spend, result = np.array([float(r[0]) for r in rows]), np.array([float(r[1]) for r in rows])
        if len(lost) == len(result):
            result = _interpolated(result, lost)
        out.append(ChannelSeries(channel, spend, result, demand if demand is not None and len(demand) == len(rows)
                                 else None))
    return out


def _interpolated(values: np.ndarray, lost: np.ndarray) -> np.ndarray:
    """`values` with the `lost` days linearly interpolated from the others (as the forecaster fills a gap)."""
    if not lost.any() or lost.all():
        return values
    days = np.arange(len(values))
    return np.where(lost, np.interp(days, days[~lost], values[~lost]), values)
