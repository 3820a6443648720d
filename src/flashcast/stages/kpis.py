"""Daily KPIs per channel from guarded events and the spend file, in DuckDB SQL.

Sessions are attributed to a channel by the configured rule (session last click by default: the
session's own source/medium from `session_traffic_source_last_click`, else
`collected_traffic_source`, else the session_start `source`/`medium` params, else the user's first
touch, else direct). Days come from `event_date`, which GA4 writes in the property's time zone.
The date spine is zero-filled for every channel, and the last day is flagged partial when it came
from an intraday export or its latest event is before `PARTIAL_DAY_HOUR` local time, unless a daily
export file is dated that day (GA4 writes the daily table once the day is over: a small property's
last event may well be at 3 pm).

An incremental run recomputes only the sessions its rows touch: those with an event from the day
before the first day it read on. The warehouse's other sessions are read in place, when the
channel mapping that made them (`mapping_digest`) is the current one; otherwise every session is
recomputed (and the warehouse's sessions replaced whole).
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb

from flashcast.config import ChannelMapping, Settings
from flashcast.engine import Engine, engine_of, is_remote, land
from flashcast.errors import IngestError
from flashcast.history import first_day_read
from flashcast.records import GuardReport, KpiSummary, RunContext, RunInputs, Table
from flashcast.sql import identifier, literal
from flashcast.tablefile import (
    PLAIN_NUMBERS,
    formatted_number_sql,
    is_parquet,
    reads_decimal_commas,
    workbook_problem,
)

PARTIAL_DAY_HOUR = 22  # a last day whose latest event is earlier than 22:00 local is still filling in


def run(con: duckdb.DuckDBPyConnection, *, inputs: RunInputs, guard: GuardReport, settings: Settings,
        context: RunContext, engine: Engine) -> KpiSummary:
    """The KPI stage: sessions per channel, then daily KPIs per channel with the day's spend."""
    if not guard.totals["accepted"]:
        raise IngestError(no_accepted_message(con, guard))
    if inputs.spend is None:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {Table.SPEND} (event_date DATE, channel VARCHAR, spend DOUBLE)")
    else:
        load_spend(con, inputs.spend, mapping=settings.channels)
    since = first_day_read(con) if _has_stored_sessions(con, settings.channels) else None
    return daily_channel_kpis(con, spend=Table.SPEND, mapping=settings.channels, timezone=settings.property_timezone,
                              lineage_id=context.lineage_id, engine=engine, stored_sessions_since=since)


def no_accepted_message(con: duckdb.DuckDBPyConnection, guard: GuardReport) -> str:
    """Why nothing was accepted, from the guard's counts and the quarantine's commonest fields, each
    with its first row (file, line, problem; never a value): a failed run writes no quarantine.csv."""
    t = guard.totals
    fields = con.execute(f"""SELECT field, count(*), first(reason ORDER BY source_file, source_line)
        FROM {Table.QUARANTINE} GROUP BY field ORDER BY count(*) DESC, field LIMIT 3""").fetchall()
    why = "; ".join(f"{field} on {n:,} row(s), the first: {reason}" for field, n, reason in fields)
    consent = (f" (a NULL consent counts as {guard.consent_null_means}: [policy] consent_null_means)"
               if t["dropped_consent"] else "")
    # Lines that are not whole JSON objects, most of them: a file of another shape than one event a line
    shape = bool(fields) and fields[0][0] == "(line)" and 2 * fields[0][1] >= t["quarantined"] and any(
        problem in fields[0][2] for problem in ("not valid JSON", "not a JSON object"))
    hint = (". A GA4 export holds one JSON object per line (newline-delimited JSON, as BigQuery's EXPORT DATA "
            "or `bq extract --destination_format NEWLINE_DELIMITED_JSON` writes it): pretty-printed JSON or a "
            "JSON array is not one") if shape else ""
    return (f"no accepted events: of {t['input_rows']:,} rows read, {t['quarantined']:,} were quarantined, "
            f"{t['dropped_consent']:,} dropped for consent{consent} and {t['duplicate']:,} duplicates"
            + (f". Quarantined for {why}" if why else "") + hint)


STORED_SESSIONS = f"_stored_{Table.SESSIONS}"  # the warehouse's sessions, a view (flashcast.history)


def mapping_digest(mapping: ChannelMapping) -> str:
    """Which channel mapping a session was attributed by (stored with it)."""
    return hashlib.sha256(mapping.model_dump_json().encode()).hexdigest()[:16]


def _has_stored_sessions(con: duckdb.DuckDBPyConnection, mapping: ChannelMapping) -> bool:
    """Stored sessions to reuse: present, and all attributed by the current mapping."""
    columns = {r[0] for r in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE table_name = ?", [STORED_SESSIONS]).fetchall()}
    if "mapping_digest" not in columns:
        return False
    other, n = con.execute(f"""SELECT count(*) FILTER (WHERE mapping_digest IS DISTINCT FROM ?), count(*)
        FROM {STORED_SESSIONS}""", [mapping_digest(mapping)]).fetchall()[0]
    return n > 0 and other == 0


def load_spend(con: duckdb.DuckDBPyConnection, path: Path, *, mapping: ChannelMapping,
               table: str = Table.SPEND) -> int:
    """Read a long spend file (CSV or Parquet: date, channel, spend; headers in any case) into
    `table`; errors name the file, line (a Parquet file's row) and field, never a value. A file with
    more columns (an ad platform's report by campaign, ad group...) may hold several rows a day and
    channel: they are summed; a row the same as another in every column is refused, as is a repeated
    day and channel in a file of the three columns only (two files pasted together, or a corrected
    row beside the old one)."""
    if not path.exists():
        raise IngestError(f"spend file not found: {path}")
    if path.stat().st_size == 0:
        raise IngestError(f"{path.name}: empty; expected columns date, channel, spend and a row per day and channel")
    if problem := workbook_problem(path):
        raise IngestError(f"{path.name}: {problem}")
    parquet = is_parquet(path)
    reader = (f"read_parquet({literal(path)})" if parquet
              else f"read_csv({literal(path)}, header=true, all_varchar=true)")
    where = "row" if parquet else "line"  # a CSV's line counts its header
    try:
        found = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()]
        by_name = {name.strip().lower(): name for name in found}
        missing = [name for name in ("date", "channel", "spend") if name not in by_name]
        if missing:
            raise IngestError(f"{path.name}: no column {missing[0]!r} (columns: {', '.join(found)}); "
                              "expected date, channel, spend")
        others = [name for name in found if name.strip().lower() not in ("date", "channel", "spend")]
        # as text, as a CSV is read: a Parquet file's typed dates and numbers go through the same checks
        picks = ", ".join([*(f"{identifier(by_name[n])}::VARCHAR AS {n}" for n in ("date", "channel", "spend")),
                           *(f"{identifier(name)}::VARCHAR AS _other{i}" for i, name in enumerate(others))])
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE _spend_raw AS
            SELECT ordinality + {0 if parquet else 1} AS line, {picks} FROM {reader} WITH ORDINALITY"""
        )
        delimiter = None if parquet else con.execute(
            f"SELECT Delimiter FROM sniff_csv({literal(path)})").fetchall()[0][0]
    except duckdb.Error as exc:  # its text can quote a line of the file
        raise IngestError(f"{path.name}: not a readable {'Parquet file' if parquet else 'CSV'} "
                          f"({type(exc).__name__})") from exc
    if not con.execute("SELECT count(*) FROM _spend_raw").fetchall()[0][0]:
        raise IngestError(f"{path.name}: no rows{'' if parquet else ' under its header'}; expected a row per day and "
                          "channel")
    if delimiter == ";" and reads_decimal_commas(con, "_spend_raw", "spend"):  # 1234,50 from a spreadsheet
        con.execute("UPDATE _spend_raw SET spend = replace(trim(spend), ',', '.')")
    # An ad platform's report may spell a channel in other case or with spaces around it ("ppc ").
    if mapping.paid_channels:
        paid = ", ".join(f"({literal(name)})" for name in mapping.paid_channels)
        con.execute(f"""UPDATE _spend_raw SET channel = paid.name FROM (VALUES {paid}) paid(name)
            WHERE lower(trim(_spend_raw.channel)) = lower(paid.name) AND _spend_raw.channel <> paid.name""")
    if others:
        repeat_key = ", ".join(["date", "channel", "spend", *(f"_other{i}" for i in range(len(others)))])
        repeated = "'date, channel: repeated (the same row twice)'"
    else:
        repeat_key, repeated = "date, channel", "'date, channel: repeated'"
    problems = con.execute(
        f"""SELECT line, problem FROM (
          SELECT line, CASE
            WHEN TRY_CAST(date AS DATE) IS NULL THEN 'date: not a YYYY-MM-DD date'
            WHEN NOT list_contains(?::VARCHAR[], channel) THEN 'channel: not a paid channel in the config'
            WHEN TRY_CAST(spend AS DOUBLE) IS NULL AND {formatted_number_sql("spend")}
              THEN 'spend: not a number{PLAIN_NUMBERS}'
            WHEN TRY_CAST(spend AS DOUBLE) IS NULL THEN 'spend: not a number'
            WHEN TRY_CAST(spend AS DOUBLE) < 0 THEN 'spend: negative'
            WHEN count(*) OVER (PARTITION BY {repeat_key}) > 1 THEN {repeated}
          END AS problem FROM _spend_raw) WHERE problem IS NOT NULL ORDER BY line LIMIT 5""",
        [list(mapping.paid_channels)],
    ).fetchall()
    if problems:
        detail = "; ".join(f"{where} {line}: {problem}" for line, problem in problems)
        unknown_channel = any(problem.startswith("channel:") for _, problem in problems)
        paid = (f" (paid channels: {', '.join(mapping.paid_channels)}; a channel of another name needs its entry in "
                "[channels] paid_channels and a [[channels.rules]] that finds its sessions, in flashcast.toml)"
                if unknown_channel else "")
        raise IngestError(f"{path.name}: {detail}{paid}")
    _refuse_weekly_spend(con, path)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {table} AS
        SELECT CAST(date AS DATE) AS event_date, channel, sum(CAST(spend AS DOUBLE)) AS spend FROM _spend_raw
        GROUP BY ALL ORDER BY event_date, channel"""
    )
    return int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])


def check_spend(path: Path, *, mapping: ChannelMapping) -> None:
    """`load_spend` into a scratch connection: raises what it raises (a run checks its spend file
    before it reads the export, which takes minutes on a large one)."""
    with duckdb.connect() as scratch:
        load_spend(scratch, path, mapping=mapping)


def _refuse_weekly_spend(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """A file whose every date falls on one weekday, a week or more apart, holds weekly totals, and
    one whose dates are typically four weeks or more apart monthly ones: read as daily spend, each
    period's money would land on one day and none on the days between (yesterday's spend, the
    budget, would read 0 on most days)."""
    days, weekdays, gap, weekday = con.execute("""SELECT count(*), count(DISTINCT dayofweek(day)),
        median(day - previous), dayname(min(day)) FROM (SELECT day, lag(day) OVER (ORDER BY day) AS previous
          FROM (SELECT DISTINCT CAST(date AS DATE) AS day FROM _spend_raw))""").fetchall()[0]
    if days < 3 or gap is None or gap < 7 or (weekdays > 1 and gap < 28):
        return
    dates = f"every date is a {weekday}, typically" if weekdays == 1 else "the dates are typically"
    raise IngestError(f"{path.name}: date: {dates} {int(gap)} days apart: {'weekly' if gap < 28 else 'monthly'} "
                      "totals, not daily spend; flashcast run takes a row per day and channel (spread a period's "
                      "spend over its days, or write 0 for the days without; a weekly media-mix file goes to "
                      "flashcast allocate)")


# The guarded columns the KPIs read (what travels to a remote engine).
KPI_COLUMNS = ("lineage_id", "session_key", "user_key", "event_date", "event_timestamp", "event_name",
               "session_source", "session_medium", "first_touch_source", "first_touch_medium",
               "engagement_time_msec", "revenue", "intraday")


def daily_channel_kpis(
    con: duckdb.DuckDBPyConnection,
    *,
    events: str = Table.GUARDED_EVENTS,
    spend: str | None = Table.SPEND,
    mapping: ChannelMapping,
    timezone: str,
    table: str = Table.DAILY_KPIS,
    lineage_id: str | None = None,
    engine: Engine | None = None,
    stored_sessions_since: date | None = None,
) -> KpiSummary:
    """Build `table`: one row per (event_date, channel) on a zero-filled spine, with the lineage
    stamp. `engine`: where the SQL runs (default `con`); the events and spend in `con` are sent to
    it, and the sessions and KPIs landed back. `stored_sessions_since`: the first day the run read;
    the sessions it touches are recomputed and the stored ones (`_stored_sessions`) joined as they
    are (on `con`'s own engine only)."""
    sql = engine_of(con, engine)
    # the spend data's last day, read where the spend file was loaded (a remote engine gets a copy)
    spend_through = con.execute(f"SELECT max(event_date) FROM {spend}").fetchall()[0][0] if spend else None
    spent = {r[0] for r in con.execute(f"SELECT channel FROM {spend} GROUP BY channel HAVING sum(spend) > 0")
             .fetchall()} if spend_through is not None else None
    if is_remote(con, sql):
        sql.load("_kpi_events", con.sql(f"SELECT {', '.join(KPI_COLUMNS)} FROM {events}").to_arrow_table())
        events = "_kpi_events"
        if spend:
            sql.load("_kpi_spend", con.sql(f"SELECT event_date, channel, spend FROM {spend}").to_arrow_table())
            spend = "_kpi_spend"
    sql.put("_channel_rules", {"priority": "INT", "channel": "VARCHAR", "src": "VARCHAR", "med": "VARCHAR"},
            [(i, r.channel, "(?i)" + r.source, "(?i)" + r.medium) for i, r in enumerate(mapping.rules)])
    if stored_sessions_since is not None and not is_remote(con, sql):
        _touched_sessions(con, events, mapping, stored_sessions_since)
    else:
        sql.create(Table.SESSIONS, sessions_sql(events, mapping))
    last = f"(SELECT max(event_date) FROM {events})"
    bounds = sql.rows(f"""SELECT min(event_date), max(event_date),
          bool_or(intraday) FILTER (WHERE event_date = {last}),
          max(event_timestamp) FILTER (WHERE event_date = {last})
        FROM {events}""")[0]
    if bounds[0] is None:
        raise IngestError("no accepted events: nothing to aggregate (check consent rule and quarantine)")
    first_day, last_day = bounds[0], bounds[1]
    latest_hour = datetime.fromtimestamp(bounds[3] / 1e6, tz=ZoneInfo(timezone)).hour if bounds[3] is not None else None
    partial = not _daily_file_of(con, last_day) and (
        bool(bounds[2]) or (latest_hour is not None and latest_hour < PARTIAL_DAY_HOUR))
    channels = list(mapping.channels)
    days = (last_day - first_day).days + 1
    sql.put("_spine", {"event_date": "DATE", "channel": "VARCHAR"},
            [(first_day + timedelta(days=d), c) for d in range(days) for c in channels])
    spend_join = (
        f"LEFT JOIN {spend} sp ON sp.event_date = spine.event_date AND sp.channel = spine.channel" if spend else ""
    )
    spend_col = "coalesce(sp.spend, 0)" if spend else "0.0"
    stamp = f"coalesce({literal(lineage_id) if lineage_id else 'NULL'}, any_value(lineage_id))"  # one row
    sql.create(table, f"""WITH sess AS (
          SELECT event_date, channel, count(*) AS sessions FROM {Table.SESSIONS} GROUP BY ALL
        ), buys AS (
          SELECT e.event_date, s.channel, count(*) AS purchases, sum(e.revenue) AS revenue
          FROM {events} e JOIN {Table.SESSIONS} s USING (session_key)
          WHERE e.event_name = 'purchase' GROUP BY ALL
        ), stamp AS (SELECT {stamp} AS lineage_id FROM {events})
        SELECT stamp.lineage_id, spine.event_date, spine.channel,
          coalesce(sess.sessions, 0)::BIGINT AS sessions,
          coalesce(buys.purchases, 0)::BIGINT AS purchases,
          round(coalesce(buys.revenue, 0), 2)::DOUBLE AS revenue,
          round({spend_col}, 2)::DOUBLE AS spend,
          (spine.event_date = DATE {literal(last_day.isoformat())} AND {str(partial).lower()}) AS is_partial
        FROM _spine spine CROSS JOIN stamp
        LEFT JOIN sess USING (event_date, channel)
        LEFT JOIN buys USING (event_date, channel)
        {spend_join}
        ORDER BY spine.event_date, spine.channel""")
    land(con, sql, [Table.SESSIONS, table])
    unspent = tuple(c for c in mapping.paid_channels if c not in spent) if spent is not None else ()
    return KpiSummary(table, first_day, last_day, partial, tuple(channels), spend_through, unspent)


def _daily_file_of(con: duckdb.DuckDBPyConnection, day: date) -> bool:
    """Whether the export has a daily (not intraday) file dated `day` (table `files`, in `con`)."""
    try:
        return bool(con.execute(f"SELECT bool_or(file_date = ? AND NOT intraday) FROM {Table.FILES}",
                                [day]).fetchall()[0][0])
    except duckdb.CatalogException:  # KPIs from events alone (no export read in this connection)
        return False


def _touched_sessions(con: duckdb.DuckDBPyConnection, events: str, mapping: ChannelMapping, since: date) -> None:
    """`_run_sessions`: the sessions with an event from the day before `since` on, recomputed from all
    their events (a session's events are on or after its first day, the stored one where it is
    known); `sessions`: those and the other stored sessions, as a view."""
    day = f"DATE {literal(since.isoformat())} - 1"
    con.execute(f"CREATE OR REPLACE TEMP TABLE _touched AS SELECT DISTINCT session_key FROM {events} "
                f"WHERE event_date >= {day}")
    first = con.execute(f"""SELECT least(min(event_date), {day}) FROM {STORED_SESSIONS}
        WHERE session_key IN (SELECT session_key FROM _touched)""").fetchall()[0][0] or since - timedelta(days=1)
    touched = (f"(SELECT * FROM {events} WHERE event_date >= DATE {literal(first.isoformat())} "
               "AND session_key IN (SELECT session_key FROM _touched))")
    con.execute(f"CREATE OR REPLACE TEMP TABLE _run_{Table.SESSIONS} AS {sessions_sql(touched, mapping)}")
    columns = ", ".join(r[0] for r in con.execute(f"DESCRIBE _run_{Table.SESSIONS}").fetchall())
    con.execute(f"""CREATE OR REPLACE TEMP VIEW {Table.SESSIONS} AS SELECT * FROM _run_{Table.SESSIONS}
        UNION ALL SELECT {columns} FROM {STORED_SESSIONS}
        WHERE event_date < {day} AND session_key NOT IN (SELECT session_key FROM _touched)""")


def sessions_sql(events: str, mapping: ChannelMapping) -> str:
    """One row per session: its first day, user, source/medium by the attribution rule, channel by
    the first matching rule in `_channel_rules` (else the default channel) and engagement."""
    first = "first_touch" if mapping.attribution == "first_touch" else "session"
    other = "session" if first == "first_touch" else "first_touch"
    return f"""WITH per_session AS (
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
          SELECT p.s, p.m, coalesce(arg_min(r.channel, r.priority), {literal(mapping.default_channel)}) AS channel
          FROM pairs p LEFT JOIN _channel_rules r ON regexp_matches(p.s, r.src) AND regexp_matches(p.m, r.med)
          GROUP BY p.s, p.m
        )
        SELECT s.lineage_id, s.session_key, s.user_key, s.event_date, s.sm.s AS source, s.sm.m AS medium, m.channel,
               s.page_views, s.engagement_msec, s.duration_s, {literal(mapping_digest(mapping))} AS mapping_digest
        FROM sourced s JOIN mapped m ON m.s = coalesce(s.sm.s, '') AND m.m = coalesce(s.sm.m, '')"""
