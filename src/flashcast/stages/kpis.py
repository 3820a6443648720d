"""Daily KPIs per channel from guarded events and the spend file, in DuckDB SQL.

Sessions are attributed to a channel by the configured rule (session last click by default: the
session's own source/medium from `session_traffic_source_last_click`, else
`collected_traffic_source`, else the session_start `source`/`medium` params, else the user's first
touch, else direct). Days come from `event_date`, which GA4 writes in the property's time zone.
The date spine is zero-filled for every channel, and the last day is flagged partial when it came
from an intraday export or its latest event is before `PARTIAL_DAY_HOUR` local time.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from flashcast.config import ChannelMapping, Settings
from flashcast.errors import IngestError
from flashcast.records import KpiSummary, RunContext, RunInputs, Table
from flashcast.sql import insert_rows, literal

PARTIAL_DAY_HOUR = 22  # a last day whose latest event is earlier than 22:00 local is still filling in


def run(con: duckdb.DuckDBPyConnection, *, inputs: RunInputs, settings: Settings, context: RunContext
        ) -> KpiSummary:
    """The KPI stage: sessions per channel, then daily KPIs per channel with the day's spend."""
    if inputs.spend is None:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {Table.SPEND} (event_date DATE, channel VARCHAR, spend DOUBLE)")
    else:
        load_spend(con, inputs.spend, mapping=settings.channels)
    return daily_channel_kpis(con, spend=Table.SPEND, mapping=settings.channels, timezone=settings.property_timezone,
                              lineage_id=context.lineage_id)


def load_spend(con: duckdb.DuckDBPyConnection, path: Path, *, mapping: ChannelMapping,
               table: str = Table.SPEND) -> int:
    """Read a long spend file (date, channel, spend) into `table`; errors name the file line and field."""
    if not path.exists():
        raise IngestError(f"spend file not found: {path}")
    try:
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE _spend_raw AS
            SELECT ordinality + 1 AS line, * FROM read_csv({literal(path)}, header=true, all_varchar=true)
            WITH ORDINALITY"""
        )
    except duckdb.Error as exc:
        raise IngestError(f"{path.name}: not a readable CSV: {exc}") from exc
    columns = {r[0] for r in con.execute("DESCRIBE _spend_raw").fetchall()}
    missing = {"date", "channel", "spend"} - columns
    if missing:
        raise IngestError(f"{path.name}: missing column(s) {sorted(missing)}; expected date, channel, spend")
    problems = con.execute(
        """SELECT line, problem FROM (
          SELECT line, CASE
            WHEN TRY_CAST(date AS DATE) IS NULL THEN 'date: not a YYYY-MM-DD date'
            WHEN NOT list_contains(?::VARCHAR[], channel) THEN 'channel: not a paid channel in the config'
            WHEN TRY_CAST(spend AS DOUBLE) IS NULL THEN 'spend: not a number'
            WHEN TRY_CAST(spend AS DOUBLE) < 0 THEN 'spend: negative'
            WHEN count(*) OVER (PARTITION BY date, channel) > 1 THEN 'date, channel: repeated'
          END AS problem FROM _spend_raw) WHERE problem IS NOT NULL ORDER BY line LIMIT 5""",
        [list(mapping.paid_channels)],
    ).fetchall()
    if problems:
        detail = "; ".join(f"line {line}: {problem}" for line, problem in problems)
        raise IngestError(f"{path.name}: {detail}")
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {table} AS
        SELECT CAST(date AS DATE) AS event_date, channel, CAST(spend AS DOUBLE) AS spend FROM _spend_raw"""
    )
    return int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])


def _install_channel_rules(con: duckdb.DuckDBPyConnection, mapping: ChannelMapping) -> None:
    con.execute("CREATE OR REPLACE TEMP TABLE _channel_rules (priority INT, channel VARCHAR, src VARCHAR, med VARCHAR)")
    rows = [(i, r.channel, "(?i)" + r.source, "(?i)" + r.medium) for i, r in enumerate(mapping.rules)]
    if rows:
        insert_rows(con, "_channel_rules", rows)


def daily_channel_kpis(
    con: duckdb.DuckDBPyConnection,
    *,
    events: str = Table.GUARDED_EVENTS,
    spend: str | None = Table.SPEND,
    mapping: ChannelMapping,
    timezone: str,
    table: str = Table.DAILY_KPIS,
    lineage_id: str | None = None,
) -> KpiSummary:
    """Build `table`: one row per (event_date, channel) on a zero-filled spine, with the lineage stamp."""
    _install_channel_rules(con, mapping)
    first = "first_touch" if mapping.attribution == "first_touch" else "session"
    other = "session" if first == "first_touch" else "first_touch"
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {Table.SESSIONS} AS
        WITH per_session AS (
          SELECT session_key, any_value(lineage_id) AS lineage_id, any_value(user_key) AS user_key,
            min(event_date) AS event_date,
            arg_min({{'s': session_source, 'm': session_medium}}, event_timestamp)
              FILTER (WHERE session_source IS NOT NULL OR session_medium IS NOT NULL) AS session,
            arg_min({{'s': first_touch_source, 'm': first_touch_medium}}, event_timestamp)
              FILTER (WHERE first_touch_source IS NOT NULL OR first_touch_medium IS NOT NULL) AS first_touch,
            count(*) FILTER (WHERE event_name = 'page_view') AS page_views,
            coalesce(sum(engagement_time_msec), 0) AS engagement_msec,
            (max(event_timestamp) - min(event_timestamp)) / 1e6 AS duration_s
          FROM {events} GROUP BY session_key
        ), sourced AS (
          SELECT *, coalesce({first}, {other}, {{'s': '(direct)', 'm': '(none)'}}) AS sm FROM per_session
        ), pairs AS (
          SELECT DISTINCT coalesce(sm.s, '') AS s, coalesce(sm.m, '') AS m FROM sourced
        ), mapped AS (
          SELECT p.s, p.m, coalesce(
            (SELECT r.channel FROM _channel_rules r
             WHERE regexp_matches(p.s, r.src) AND regexp_matches(p.m, r.med) ORDER BY r.priority LIMIT 1),
            ?) AS channel
          FROM pairs p
        )
        SELECT s.lineage_id, s.session_key, s.user_key, s.event_date, s.sm.s AS source, s.sm.m AS medium, m.channel,
               s.page_views, s.engagement_msec, s.duration_s
        FROM sourced s JOIN mapped m ON m.s = coalesce(s.sm.s, '') AND m.m = coalesce(s.sm.m, '')""",
        [mapping.default_channel],
    )
    bounds = con.execute(
        f"""SELECT min(event_date), max(event_date),
          bool_or(intraday) FILTER (WHERE event_date = (SELECT max(event_date) FROM {events})),
          max(hour(timezone(?, to_timestamp(event_timestamp / 1e6))))
            FILTER (WHERE event_date = (SELECT max(event_date) FROM {events}))
        FROM {events}""",
        [timezone],
    ).fetchall()[0]
    if bounds[0] is None:
        raise IngestError("no accepted events: nothing to aggregate (check consent rule and quarantine)")
    first_day, last_day = bounds[0], bounds[1]
    partial = bool(bounds[2]) or (bounds[3] is not None and bounds[3] < PARTIAL_DAY_HOUR)
    channels = list(mapping.channels)
    spend_join = (
        f"LEFT JOIN {spend} sp ON sp.event_date = spine.event_date AND sp.channel = spine.channel" if spend else ""
    )
    spend_col = "coalesce(sp.spend, 0)" if spend else "0.0"
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {table} AS
        WITH spine AS (
          SELECT d::DATE AS event_date, c AS channel
          FROM generate_series(?::DATE, ?::DATE, INTERVAL 1 DAY) g(d), unnest(?::VARCHAR[]) u(c)
        ), sess AS (
          SELECT event_date, channel, count(*) AS sessions FROM {Table.SESSIONS} GROUP BY ALL
        ), buys AS (
          SELECT e.event_date, s.channel, count(*) AS purchases, sum(e.revenue) AS revenue
          FROM {events} e JOIN {Table.SESSIONS} s USING (session_key)
          WHERE e.event_name = 'purchase' GROUP BY ALL
        ), stamp AS (SELECT coalesce(?, any_value(lineage_id)) AS lineage_id FROM {events})
        SELECT stamp.lineage_id, spine.event_date, spine.channel,
          coalesce(sess.sessions, 0)::BIGINT AS sessions,
          coalesce(buys.purchases, 0)::BIGINT AS purchases,
          round(coalesce(buys.revenue, 0), 2)::DOUBLE AS revenue,
          round({spend_col}, 2)::DOUBLE AS spend,
          (spine.event_date = ?::DATE AND ?) AS is_partial
        FROM spine CROSS JOIN stamp
        LEFT JOIN sess USING (event_date, channel)
        LEFT JOIN buys USING (event_date, channel)
        {spend_join}
        ORDER BY spine.event_date, spine.channel""",
        [first_day, last_day, channels, lineage_id, last_day, partial],
    )
    return KpiSummary(table, first_day, last_day, partial, tuple(channels))
