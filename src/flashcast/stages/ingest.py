"""Stage 1: GA4 export files -> a typed, validated staging table, in set-based DuckDB SQL.

The only module that reads export files. Every line of every file becomes exactly one staged row
carrying its file and line; rows that fail validation keep a list of problems that name the field,
never the value. Nothing here is persisted: staging lives in the run's private in-memory
connection (spilling to temp files when large), and only guarded outputs reach the warehouse.

NDJSON is read line by line as text (`read_csv` on one column with a record-separator delimiter,
no quoting), so a malformed line is a row to quarantine rather than a reader error or a silently
skipped line. Parquet rows are rendered to JSON with `to_json` and go through the same SQL, so both
formats are validated by one set of rules.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import duckdb

from flashcast.config import Settings
from flashcast.errors import ExportNotFound, IngestError
from flashcast.records import ExportFile, RunContext, RunInputs, StagedExport, Table
from flashcast.sql import literal

NDJSON_SUFFIXES = (".json", ".ndjson", ".jsonl", ".json.gz", ".ndjson.gz", ".jsonl.gz")
PARQUET_SUFFIXES = (".parquet",)
MAX_LINE_BYTES = 128 * 2**20  # longer lines stop the reader: the file is named in a clean error
MAX_EVENT_CHARS = 4 * 2**20  # no GA4 event is this long: a longer line is quarantined
# Microsecond timestamps between 2000-01-01 and 2100-01-01: anything else is seconds/ms or garbage.
MIN_MICROS, MAX_MICROS = 946_684_800_000_000, 4_102_444_800_000_000

_VALUE = {"string_value": "VARCHAR", "int_value": "VARCHAR", "float_value": "VARCHAR", "double_value": "VARCHAR"}
# Everything is read as VARCHAR first and cast with TRY_CAST, so a bad value becomes a named
# problem instead of an error for the whole file.
GA4_JSON_STRUCTURE = {
    "event_date": "VARCHAR",
    "event_timestamp": "VARCHAR",
    "event_name": "VARCHAR",
    "event_params": [{"key": "VARCHAR", "value": _VALUE}],
    "event_value_in_usd": "VARCHAR",
    "user_id": "VARCHAR",
    "user_pseudo_id": "VARCHAR",
    "stream_id": "VARCHAR",
    "platform": "VARCHAR",
    "privacy_info": {"analytics_storage": "VARCHAR", "ads_storage": "VARCHAR"},
    "user_properties": [{"key": "VARCHAR", "value": _VALUE}],
    "device": {"category": "VARCHAR", "operating_system": "VARCHAR"},
    "geo": {"country": "VARCHAR"},
    "traffic_source": {"name": "VARCHAR", "medium": "VARCHAR", "source": "VARCHAR"},
    "ecommerce": {"purchase_revenue": "VARCHAR", "purchase_revenue_in_usd": "VARCHAR", "transaction_id": "VARCHAR"},
    "collected_traffic_source": {"manual_source": "VARCHAR", "manual_medium": "VARCHAR",
                                 "manual_campaign_name": "VARCHAR"},
    "session_traffic_source_last_click": {"manual_campaign": {"source": "VARCHAR", "medium": "VARCHAR",
                                                              "campaign_name": "VARCHAR"}},
}


def discover_exports(source: Path) -> tuple[ExportFile, ...]:
    """One export file, or every `events_*` / `events_intraday_*` file in a folder, in name order."""
    if not source.exists():
        raise ExportNotFound(f"no GA4 export at {source}")
    candidates = [source] if source.is_file() else sorted(p for p in source.iterdir() if p.name.startswith("events_"))
    files = []
    for path in candidates:
        name = path.name.lower()
        if name.endswith(NDJSON_SUFFIXES):
            fmt = "ndjson"
        elif name.endswith(PARQUET_SUFFIXES):
            fmt = "parquet"
        elif source.is_file():
            raise IngestError(f"{path.name}: unknown export format (expected .json/.ndjson[.gz] or .parquet)")
        else:
            continue
        day = re.search(r"events_(?:intraday_)?(\d{8})", name)
        try:
            file_date = datetime.strptime(day.group(1), "%Y%m%d").date() if day else None
        except ValueError:
            file_date = None
        files.append(ExportFile(path, fmt, name.startswith("events_intraday_"), file_date))
    if not files:
        raise ExportNotFound(f"no events_* export files (.json, .ndjson, .parquet) in {source}")
    return tuple(files)


def _lines_sql(file: ExportFile) -> str:
    path, name, intraday = literal(str(file.path)), literal(file.name), "true" if file.intraday else "false"
    day = f"DATE {literal(file.file_date.isoformat())}" if file.file_date else "NULL::DATE"
    columns = f"{name} AS source_file, {day} AS file_date, {intraday} AS intraday"
    if file.format == "ndjson":
        # \x1e (record separator) cannot occur unescaped in valid JSON, so each line is one field.
        return (
            f"SELECT {columns}, ordinality::BIGINT AS source_line, line "
            f"FROM read_csv({path}, columns={{'line': 'VARCHAR'}}, delim='\\x1e', quote='', escape='', "
            f"header=false, auto_detect=false, strict_mode=false, new_line='\\n', max_line_size={MAX_LINE_BYTES}) "
            "WITH ORDINALITY"
        )
    return (
        f"SELECT {columns}, (file_row_number + 1)::BIGINT AS source_line, "
        f"to_json(t)::VARCHAR AS line FROM read_parquet({path}, file_row_number=true) t"
    )


def _problem(condition: str, field: str, problem: str) -> str:
    return f"CASE WHEN {condition} THEN {literal(f'{field}: {problem}')} END"


def _validation_sql(max_days_from_file_date: int) -> str:
    """SQL list of the row's problems, each 'field: problem'. Empty list: the row is valid."""
    r = "r"
    money = [
        ("event_value_in_usd", f"{r}.event_value_in_usd"),
        ("ecommerce.purchase_revenue", f"{r}.ecommerce.purchase_revenue"),
        ("ecommerce.purchase_revenue_in_usd", f"{r}.ecommerce.purchase_revenue_in_usd"),
    ]
    days = max_days_from_file_date
    checks = [
        _problem("blank", "(line)", "empty line"),
        _problem(f"length(line) > {MAX_EVENT_CHARS}", "(line)",
                 f"longer than {MAX_EVENT_CHARS // 2**20} M characters: not one event"),
        _problem("NOT blank AND NOT is_json", "(line)", "not valid JSON"),
        _problem("is_json AND top_type <> 'OBJECT'", "(line)", "not a JSON object"),
        _problem(f"{r} IS NOT NULL AND {r}.event_date IS NULL", "event_date", "missing"),
        _problem(
            f"{r}.event_date IS NOT NULL AND (NOT regexp_full_match({r}.event_date, '\\d{{8}}') "
            f"OR try_strptime({r}.event_date, '%Y%m%d') IS NULL)",
            "event_date", "not a YYYYMMDD date",
        ),
        _problem(f"abs(date_diff('day', file_date, try_strptime({r}.event_date, '%Y%m%d')::DATE)) > {days}",
                 "event_date", f"more than {days} day(s) from the date in its file's name"),
        _problem(f"{r} IS NOT NULL AND {r}.event_timestamp IS NULL", "event_timestamp", "missing"),
        _problem(
            f"{r}.event_timestamp IS NOT NULL AND TRY_CAST({r}.event_timestamp AS BIGINT) IS NULL",
            "event_timestamp", "not an INT64",
        ),
        _problem(
            f"TRY_CAST({r}.event_timestamp AS BIGINT) NOT BETWEEN {MIN_MICROS} AND {MAX_MICROS}",
            "event_timestamp", "not microseconds since the epoch (2000-2100)",
        ),
        _problem(f"{r} IS NOT NULL AND coalesce(trim({r}.event_name), '') = ''", "event_name", "missing"),
        _problem("types[1] IS NOT NULL AND types[1] NOT IN ('ARRAY', 'NULL')", "event_params", "not an array"),
        _problem(
            f"list_bool_or(list_transform({r}.event_params, lambda p: p.value.int_value IS NOT NULL "
            "AND TRY_CAST(p.value.int_value AS BIGINT) IS NULL))",
            "event_params.value.int_value", "not an INT64",
        ),
        _problem(
            f"list_bool_or(list_transform({r}.event_params, lambda p: TRY_CAST(coalesce(p.value.double_value, "
            "p.value.float_value, '0') AS DOUBLE) IS NULL))",
            "event_params.value.double_value", "not a number",
        ),
        _problem(
            f"coalesce({r}.privacy_info.analytics_storage, 'Yes') NOT IN ('Yes', 'No')",
            "privacy_info.analytics_storage", "not 'Yes', 'No' or NULL",
        ),
        _problem(
            f"coalesce({r}.privacy_info.ads_storage, 'Yes') NOT IN ('Yes', 'No')",
            "privacy_info.ads_storage", "not 'Yes', 'No' or NULL",
        ),
    ]
    for field, expr in money:
        checks.append(_problem(f"{expr} IS NOT NULL AND TRY_CAST({expr} AS DOUBLE) IS NULL", field, "not a number"))
        checks.append(_problem(f"TRY_CAST({expr} AS DOUBLE) < 0", field, "negative"))
    return "list_filter([" + ",\n        ".join(checks) + "], lambda x: x IS NOT NULL)"


def _param(key: str, slot: str = "string_value") -> str:
    return f"list_extract(list_filter(r.event_params, lambda p: p.key = '{key}'), 1).value.{slot}"


def run(con: duckdb.DuckDBPyConnection, *, inputs: RunInputs, settings: Settings, context: RunContext
        ) -> StagedExport:
    """The ingest stage: every line of the export, validated, in table `staged`; every file, with its
    row count, in table `files`."""
    return stage_export(con, inputs.export, max_days_from_file_date=settings.ingest.max_days_from_file_date,
                        lineage_id=context.lineage_id)


def stage_export(con: duckdb.DuckDBPyConnection, source: Path, *, table: str = Table.STAGED,
                 max_days_from_file_date: int = 1, lineage_id: str | None = None) -> StagedExport:
    """Read and validate every row of the export at `source` into temp table `table`, and list the
    files in table `files`. A file DuckDB cannot read at all is an IngestError naming it."""
    files = discover_exports(source)
    union = "\nUNION ALL\n".join(_lines_sql(f) for f in files)
    structure = literal(json.dumps(GA4_JSON_STRUCTURE))
    sql = f"""
    CREATE OR REPLACE TEMP TABLE {table} AS
    WITH lines AS ({union}),
    -- MATERIALIZED: the JSON checks below are referenced many times, and an inlined CTE would
    -- re-run them per reference (measured: 1.7x slower on NDJSON).
    parsed AS MATERIALIZED (
      SELECT *,
        line IS NULL OR trim(line) = '' AS blank,
        coalesce(json_valid(line), false) AS is_json,
        CASE WHEN json_valid(line) THEN json_type(line) END AS top_type
      FROM lines
    ),
    typed AS (
      SELECT *,
        CASE WHEN top_type = 'OBJECT' THEN from_json(line, {structure}) END AS r,
        CASE WHEN top_type = 'OBJECT' THEN json_type(line, ['$.event_params']) END AS types
      FROM parsed
    ),
    checked AS (SELECT *, {_validation_sql(max_days_from_file_date)} AS problems FROM typed)
    SELECT
      source_file, source_line, file_date, intraday,
      problems,
      len(problems) = 0 AS valid,
      -- the raw line stays only for fingerprinting quarantined rows; it never leaves this connection
      line AS raw_line,
      try_strptime(r.event_date, '%Y%m%d')::DATE AS event_date,
      TRY_CAST(r.event_timestamp AS BIGINT) AS event_timestamp,
      r.event_name AS event_name,
      r.user_pseudo_id AS user_pseudo_id,
      r.user_id AS user_id,
      r.stream_id AS stream_id,
      r.platform AS platform,
      r.privacy_info.analytics_storage AS analytics_storage,
      r.privacy_info.ads_storage AS ads_storage,
      TRY_CAST({_param('ga_session_id', 'int_value')} AS BIGINT) AS ga_session_id,
      TRY_CAST({_param('ga_session_number', 'int_value')} AS BIGINT) AS ga_session_number,
      TRY_CAST({_param('engagement_time_msec', 'int_value')} AS BIGINT) AS engagement_time_msec,
      {_param('page_location')} AS page_location,
      {_param('page_referrer')} AS page_referrer,
      {_param('search_term')} AS search_term,
      list_transform(r.event_params, lambda p: {{
        'key': p.key,
        'string_value': p.value.string_value,
        'int_value': TRY_CAST(p.value.int_value AS BIGINT),
        'double_value': TRY_CAST(coalesce(p.value.double_value, p.value.float_value) AS DOUBLE)
      }}) AS params,
      coalesce(
        TRY_CAST(r.ecommerce.purchase_revenue AS DOUBLE),
        TRY_CAST(r.event_value_in_usd AS DOUBLE),
        TRY_CAST(coalesce({_param('value', 'double_value')}, {_param('value', 'int_value')}) AS DOUBLE)
      ) AS revenue,
      nullif(coalesce(r.ecommerce.transaction_id, {_param('transaction_id')}), '(not set)') AS transaction_id,
      coalesce(r.session_traffic_source_last_click.manual_campaign.source,
               r.collected_traffic_source.manual_source, {_param('source')}) AS session_source,
      coalesce(r.session_traffic_source_last_click.manual_campaign.medium,
               r.collected_traffic_source.manual_medium, {_param('medium')}) AS session_medium,
      coalesce(r.session_traffic_source_last_click.manual_campaign.campaign_name,
               r.collected_traffic_source.manual_campaign_name, {_param('campaign')}) AS session_campaign,
      r.traffic_source.source AS first_touch_source,
      r.traffic_source.medium AS first_touch_medium,
      r.traffic_source.name AS first_touch_campaign,
      r.device.category AS device_category,
      r.geo.country AS country
    FROM checked
    """
    try:
        con.execute(sql)
    except duckdb.Error as exc:
        raise _unreadable(con, files, exc) from exc
    return StagedExport(table=table, files=files, input_rows=_file_table(con, files, table, lineage_id),
                        warnings=_warnings(con, table, max_days_from_file_date))


def _unreadable(con: duckdb.DuckDBPyConnection, files: tuple[ExportFile, ...], exc: duckdb.Error) -> IngestError:
    """Name the file (and line) DuckDB could not read, and why, without quoting its content (DuckDB's
    message carries the offending line)."""
    for file in files:
        try:
            con.execute(f"SELECT count(*) FROM ({_lines_sql(file)})").fetchall()
        except duckdb.Error as file_exc:
            text = str(file_exc)
            line = re.search(r"on Line: (\d+)", text)
            where = f"{file.name}: line {line.group(1)}" if line else file.name
            for marker, why in (("unicode", "not UTF-8 text (a binary or mis-encoded file?)"),
                                ("line size", f"a line longer than {MAX_LINE_BYTES // 2**20} MB"),
                                ("gzip", "not a complete gzip file"), ("GZIP", "not a complete gzip file"),
                                ("arquet", "not a readable Parquet file")):
                if marker in text:
                    return IngestError(f"{where}: {why}; move it out of the export folder or fix it")
            return IngestError(f"{where}: cannot be read as a GA4 {file.format} export ({type(file_exc).__name__})")
    return IngestError(f"the export could not be read ({type(exc).__name__})")


def _file_table(con: duckdb.DuckDBPyConnection, files: tuple[ExportFile, ...], staged: str,
                lineage_id: str | None) -> int:
    """Table `files`: every export file (empty ones too) with its format, date and rows; returns the rows."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {Table.FILES} (lineage_id VARCHAR, source_file VARCHAR, "
                "file_date DATE, format VARCHAR, intraday BOOLEAN, input_rows BIGINT)")
    con.executemany(f"INSERT INTO {Table.FILES} VALUES (?, ?, ?, ?, ?, 0)",
                    [(lineage_id, f.name, f.file_date, f.format, f.intraday) for f in files])
    con.execute(f"""UPDATE {Table.FILES} f SET input_rows = c.n
        FROM (SELECT source_file, count(*) AS n FROM {staged} GROUP BY source_file) c
        WHERE c.source_file = f.source_file""")
    return int(con.execute(f"SELECT coalesce(sum(input_rows), 0) FROM {Table.FILES}").fetchall()[0][0])


def _warnings(con: duckdb.DuckDBPyConnection, staged: str, max_days: int) -> tuple[str, ...]:
    """Files and rows a person should know about: empty files, rows dated far from their file."""
    empty = [r[0] for r in con.execute(
        f"SELECT source_file FROM {Table.FILES} WHERE input_rows = 0 ORDER BY source_file").fetchall()]
    far = con.execute(
        f"""SELECT source_file, count(*) FROM {staged}
        WHERE list_contains(list_transform(problems, lambda p: starts_with(p, 'event_date: more than')), true)
        GROUP BY source_file ORDER BY source_file""").fetchall()
    return (*(f"{name} is empty: its day has no events (spend for that day still counts)" for name in empty),
            *(f"{n:,} row(s) of {name} are dated more than {max_days} day(s) from the date in its name: quarantined"
              for name, n in far))
