"""Stage 1: GA4 export files -> a typed, validated staging table, in set-based DuckDB SQL.

The only module that reads export files. Every line of every file becomes exactly one staged row
carrying its file and line; rows that fail validation keep a list of problems that name the field,
never the value. Nothing here is persisted: staging lives in the run's private in-memory
connection (spilling to temp files when large), and only guarded outputs reach the warehouse.

A clean NDJSON file goes through DuckDB's JSON reader; a file with a line that reader would skip
or choke on is read line by line as text (`read_csv` on one column with a record-separator
delimiter, no quoting), so a malformed line is a row to quarantine rather than a reader error or a
silently skipped line. Parquet rows are read by column and cast to the same types. All three go
through the same SQL, so every format is validated by one set of rules (see `stage_export`).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal, cast

import duckdb
import pyarrow as pa

from flashcast.config import Settings
from flashcast.engine import DuckEngine, Engine, land
from flashcast.errors import ExportNotFound, IngestError
from flashcast.history import READ_FILES, FileSelection, WarehouseSnapshot, merge_reused, read_history, select_files
from flashcast.records import ExportFile, RunContext, RunInputs, StagedExport, Table
from flashcast.sql import insert_rows, literal
from flashcast.store import remove_orphans

if TYPE_CHECKING:
    from flashcast.spark import SparkEngine

NDJSON_SUFFIXES = (".json", ".ndjson", ".jsonl", ".json.gz", ".ndjson.gz", ".jsonl.gz")
PARQUET_SUFFIXES = (".parquet",)
MAX_LINE_BYTES = 128 * 2**20  # longer lines stop the reader: the file is named in a clean error
MAX_EVENT_CHARS = 4 * 2**20  # no GA4 event is this long: a longer line is quarantined
# A line that is not UTF-8 is read as this text (in a private copy of its file) and quarantined; a
# file with more such lines than MAX_NOT_UTF8_SHARE, or a line with more such bytes (or a NUL), is
# no text export at all and is refused.
NOT_UTF8_LINE = "\x1fflashcast: line not UTF-8\x1f"
MAX_NOT_UTF8_SHARE = 0.1
# Microsecond timestamps between 2000-01-01 and 2100-01-01: anything else is seconds/ms or garbage.
MIN_MICROS, MAX_MICROS = 946_684_800_000_000, 4_102_444_800_000_000

_VALUE = {"string_value": "VARCHAR", "int_value": "VARCHAR", "float_value": "VARCHAR", "double_value": "VARCHAR"}
# Everything is read as VARCHAR first and cast with TRY_CAST, so a bad value becomes a named
# problem instead of an error for the whole file (Parquet numbers stored as numbers excepted: see
# _NUMBERS).
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
    "device": {"category": "VARCHAR", "operating_system": "VARCHAR"},
    "geo": {"country": "VARCHAR"},
    "traffic_source": {"name": "VARCHAR", "medium": "VARCHAR", "source": "VARCHAR"},
    "ecommerce": {"purchase_revenue": "VARCHAR", "purchase_revenue_in_usd": "VARCHAR", "transaction_id": "VARCHAR"},
    "collected_traffic_source": {"manual_source": "VARCHAR", "manual_medium": "VARCHAR",
                                 "manual_campaign_name": "VARCHAR"},
    "session_traffic_source_last_click": {"manual_campaign": {"source": "VARCHAR", "medium": "VARCHAR",
                                                              "campaign_name": "VARCHAR"}},
}


# What GA4 writes, and what tags send by mistake, for a purchase without a transaction id: none of
# them is an id, and taken for one every such purchase after the first would count as a duplicate.
# (A pattern, not a list: DuckDB plans a long IN list, or list_contains over one, as a join, which does
# not keep the rows' order, and the staged rows' line numbers come from their order.)
_NO_TRANSACTION = r"^(\(not set\)|not set|\(none\)|undefined|null|none|nan)?$"

# GA4's daily tables, its intraday ones and GA4 360's "fresh daily" ones (events_fresh_YYYYMMDD)
_DAY = re.compile(r"events_(?:intraday_|fresh_)?(\d{8})")
DAY_FOLDER_PATTERN = r"events_(?:intraday_|fresh_)?\d{8}"  # a day folder's whole name, in any case
_DAY_FOLDER = re.compile(DAY_FOLDER_PATTERN, re.IGNORECASE)


def discover_exports(source: Path) -> tuple[ExportFile, ...]:
    """One export file, or every `events_*` / `events_intraday_*` file in a folder, in name order.
    A day's files may sit in a folder of their own, named for the day (`events_YYYYMMDD/` holding
    shards of any name, as a sharded extract writes them): each is named `events_YYYYMMDD/NAME`.
    Other folders are not the export's."""
    if not source.exists():
        raise ExportNotFound(f"no GA4 export at {source}")
    if source.is_file():
        if (file := _export_file(source, source.name)) is None:
            raise IngestError(f"{source.name}: unknown export format (expected .json/.ndjson[.gz] or .parquet)")
        return (file,)
    found, unread = _listing(source)
    if not found:
        others = f" (only {len(unread):,} of other formats, such as {unread[0]})" if unread else ""
        if holders := _folders_holding_exports(source):
            listed = ", ".join(f"{name}/" for name in holders[:3]) + (", ..." if len(holders) > 3 else "")
            which = "one of those folders" if len(holders) > 1 else "that folder"
            others = (f" (events_* files are in {listed} inside it: give {which} as the export, "
                      f"e.g. --export {source / holders[0]})")
        elif not unread and (named := _readable_not_named_events(source)):
            others = (f" ({len(named):,} readable file(s) of other names, such as {named[0]}: a GA4 export's "
                      "files are named events_YYYYMMDD, and one file of another name is read when given itself, "
                      "--export FILE)")
        raise ExportNotFound(f"no events_* export files (.json, .ndjson, .parquet) in {source}{others}")
    return found


def _folders_holding_exports(source: Path) -> list[str]:
    """The folder's subfolders (not day folders) with export files of their own: a folder of exports
    given one level too high (the simulator's ndjson/ and parquet/, one folder per property)."""
    def holds(folder: Path) -> bool:
        try:
            return folder.is_dir() and not day_folder(folder) and bool(_listing(folder)[0])
        except OSError:  # a folder that cannot be listed holds nothing this run could read
            return False

    return sorted(p.name for p in source.iterdir() if holds(p))


def _readable_not_named_events(source: Path) -> list[str]:
    """The folder's files of a format Flashcast reads but not named events_*: a user's own export."""
    return sorted(p.name for p in source.iterdir()
                  if p.is_file() and not p.name.startswith("events_") and _export_file(p, p.name) is not None)


def unread_files(source: Path) -> tuple[str, ...]:
    """The export folder's `events_*` files (and day folders' shards) of a format Flashcast does not
    read (Avro, CSV...): left out, so a run names them rather than losing their rows unseen. Names
    starting with `_` or `.` in a day folder (a writer's markers: _SUCCESS, .crc) are not counted."""
    return _listing(source)[1] if source.is_dir() else ()


def _listing(source: Path) -> tuple[tuple[ExportFile, ...], tuple[str, ...]]:
    files, unread = [], []
    for path in sorted(p for p in source.iterdir() if p.name.startswith("events_")):
        if not path.is_dir():
            if (file := _export_file(path, path.name)) is None:
                unread.append(path.name)
            else:
                files.append(file)
        elif day_folder(path):
            for shard in sorted(p for p in path.iterdir() if p.is_file()):
                label = f"{path.name}/{shard.name}"
                if (file := _export_file(shard, path.name, label=label)) is not None:
                    files.append(file)
                elif not shard.name.startswith(("_", ".")):
                    unread.append(label)
    return tuple(sorted(files, key=lambda f: f.name)), tuple(unread)


def day_folder(path: Path) -> bool:
    """A folder named for one day of the export (events_YYYYMMDD, events_intraday_YYYYMMDD or
    events_fresh_YYYYMMDD)."""
    return _DAY_FOLDER.fullmatch(path.name) is not None


def _export_file(path: Path, dated_by: str, *, label: str | None = None) -> ExportFile | None:
    """The file at `path`, dated by the name `dated_by` (its own, or its day folder's); None for a
    file of another kind."""
    name = path.name.lower()
    if name.endswith(NDJSON_SUFFIXES):
        fmt = "ndjson"
    elif name.endswith(PARQUET_SUFFIXES):
        fmt = "parquet"
    else:
        return None
    day = _DAY.search(dated_by.lower())
    try:
        file_date = datetime.strptime(day.group(1), "%Y%m%d").date() if day else None
    except ValueError:
        file_date = None
    return ExportFile(path, fmt, dated_by.lower().startswith("events_intraday_"), file_date, label)


def _lines_sql(file: ExportFile) -> str:
    """Every line of an NDJSON file as a row, with its file and line number."""
    return (f"SELECT {literal(file.name)} AS source_file, {_date_sql(file)} AS file_date, "
            f"{str(file.intraday).lower()} AS intraday, ordinality::BIGINT AS source_line, line "
            f"FROM {_read_lines_sql(file)} WITH ORDINALITY")


def _problem(condition: str, field: str, problem: str) -> str:
    return f"CASE WHEN {condition} THEN {literal(f'{field}: {problem}')} END"


def _validation_sql(max_days_from_file_date: int) -> str:
    """SQL list of the row's problems, each 'field: problem'. Empty list: the row is valid."""
    money = [("event_value_in_usd", "event_value_in_usd"),
             ("ecommerce.purchase_revenue", "ecommerce.purchase_revenue"),
             ("ecommerce.purchase_revenue_in_usd", "ecommerce.purchase_revenue_in_usd")]
    obj = "top_type = 'OBJECT'"
    days = max_days_from_file_date
    checks = [
        _problem("blank", "(line)", "empty line"),
        _problem(f"length(line) > {MAX_EVENT_CHARS}", "(line)",
                 f"longer than {MAX_EVENT_CHARS // 2**20} M characters: not one event"),
        _problem(f"line = {literal(NOT_UTF8_LINE)}", "(line)", "not UTF-8 text"),
        _problem(f"NOT blank AND NOT is_json AND line <> {literal(NOT_UTF8_LINE)}", "(line)", "not valid JSON"),
        _problem("is_json AND top_type <> 'OBJECT'", "(line)", "not a JSON object"),
        _problem(f"{obj} AND event_date IS NULL", "event_date", "missing"),
        _problem(
            "event_date IS NOT NULL AND (NOT regexp_full_match(event_date, '\\d{8}') "
            "OR try_strptime(event_date, '%Y%m%d') IS NULL)",
            "event_date", "not a YYYYMMDD date",
        ),
        _problem(f"abs(date_diff('day', file_date, try_strptime(event_date, '%Y%m%d')::DATE)) > {days}",
                 "event_date", f"more than {days} day(s) from the date in its file's name"),
        _problem(f"{obj} AND event_timestamp IS NULL", "event_timestamp", "missing"),
        _problem(
            "event_timestamp IS NOT NULL AND TRY_CAST(event_timestamp AS BIGINT) IS NULL",
            "event_timestamp", "not an INT64",
        ),
        _problem(
            f"TRY_CAST(event_timestamp AS BIGINT) NOT BETWEEN {MIN_MICROS} AND {MAX_MICROS}",
            "event_timestamp", "not microseconds since the epoch (2000-2100)",
        ),
        _problem(f"{obj} AND coalesce(trim(event_name), '') = ''", "event_name", "missing"),
        _problem("types[1] IS NOT NULL AND types[1] NOT IN ('ARRAY', 'NULL')", "event_params", "not an array"),
        _problem(
            "array_length(list_filter(event_params, lambda p: p.value.int_value IS NOT NULL "
            "AND TRY_CAST(p.value.int_value AS BIGINT) IS NULL)) > 0",
            "event_params.value.int_value", "not an INT64",
        ),
        _problem(
            "array_length(list_filter(event_params, lambda p: TRY_CAST(coalesce(p.value.double_value, "
            "p.value.float_value, '0') AS DOUBLE) IS NULL)) > 0",
            "event_params.value.double_value", "not a number",
        ),
        _problem(
            "coalesce(privacy_info.analytics_storage, 'Yes') NOT IN ('Yes', 'No')",
            "privacy_info.analytics_storage", "not 'Yes', 'No' or NULL",
        ),
        _problem(
            "coalesce(privacy_info.ads_storage, 'Yes') NOT IN ('Yes', 'No')",
            "privacy_info.ads_storage", "not 'Yes', 'No' or NULL",
        ),
    ]
    for field, expr in money:
        checks.append(_problem(f"{expr} IS NOT NULL AND TRY_CAST({expr} AS DOUBLE) IS NULL", field, "not a number"))
        checks.append(_problem(f"TRY_CAST({expr} AS DOUBLE) < 0", field, "negative"))
    return "list_filter([" + ",\n        ".join(checks) + "], lambda x: x IS NOT NULL)"


def _param(key: str, slot: str = "string_value") -> str:
    """The first event param named `key`, found in the row's list of param names (`param_keys`, made
    once a row: a list_filter per field copied the params a dozen times a row; staging 1M events
    took 0.1 s longer)."""
    # nullif: Spark's array_position says 0 where DuckDB's list_position says NULL; Spark's element_at
    # takes an INT index
    return f"list_extract(event_params, nullif(list_position(param_keys, '{key}'), 0)::INTEGER).value.{slot}"


def run(con: duckdb.DuckDBPyConnection, *, inputs: RunInputs, settings: Settings, context: RunContext,
        engine: Engine, snapshot: WarehouseSnapshot) -> StagedExport:
    """The ingest stage: every line of the files this run must read (see `flashcast.history`),
    validated, in table `staged`; every file the history holds, with its rows, in table `files`.
    The stored rows of the files not read wait in `_stored_<table>` (views over the warehouse
    `snapshot` holds) for the guard."""
    files = discover_exports(inputs.export)
    ingest = settings.ingest
    root = str(inputs.export.resolve())
    selection, other = read_history(
        con, settings.store.warehouse_path, export_root=root, timeout_s=settings.store.lock_timeout_s,
        choose=lambda stored: select_files(files, stored, incremental=ingest.incremental,
                                           look_back_days=ingest.look_back_days, rebuild=inputs.rebuild),
        snapshot=snapshot, key_id=context.key_id)
    if isinstance(engine, DuckEngine):
        staged = stage_export(con, inputs.export, files=selection.read,
                              max_days_from_file_date=ingest.max_days_from_file_date, lineage_id=context.lineage_id,
                              scratch=settings.store.spill_path)
    else:
        staged = stage_export_on(cast("SparkEngine", engine), con, selection.read,
                                 max_days_from_file_date=ingest.max_days_from_file_date, lineage_id=context.lineage_id)
    _register(con, selection, root)
    merge_reused(con, [Table.FILES])
    warnings = staged.warnings
    if unread := unread_files(inputs.export):
        more = f" and {len(unread) - 1:,} more" if len(unread) > 1 else ""
        formats = ", ".join((*NDJSON_SUFFIXES, *PARQUET_SUFFIXES))
        warnings = (f"{unread[0]}{more}: not read (Flashcast reads export files ending {formats}; export those "
                    "days again in one of them)", *warnings)
    dated = [f.file_date for f in files if f.file_date is not None]
    if inputs.rebuild is not None and dated and not any(inputs.rebuild[0] <= d <= inputs.rebuild[1] for d in dated):
        warnings = (f"--rebuild {inputs.rebuild[0]}:{inputs.rebuild[1]}: no export file is dated in that range (the "
                    f"export's files run from {min(dated)} to {max(dated)}); nothing was read again", *warnings)
    if other:
        warnings = (f"the warehouse held the history of another export ({other}): this run replaces it "
                    "(one warehouse keeps one export's history; give each its own [store] home)", *warnings)
    return replace(staged, reasons=selection.reasons, reused_files=selection.reused, warnings=warnings)


def _register(con: duckdb.DuckDBPyConnection, selection: FileSelection, root: str) -> None:
    """Each file read gets its export's root, size, modification time, content hash and newest day
    in `files` (what the next run recognizes it by); their names go to `_read_files`."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {READ_FILES} (name VARCHAR)")
    if selection.read:
        insert_rows(con, READ_FILES, [(f.name,) for f in selection.read])
    for column, kind in (("size_bytes", "BIGINT"), ("modified_ns", "BIGINT"), ("content_hash", "VARCHAR"),
                         ("last_day", "DATE")):
        con.execute(f"ALTER TABLE {Table.FILES} ADD COLUMN {column} {kind}")
    con.execute(f"ALTER TABLE {Table.FILES} ADD COLUMN export_root VARCHAR")
    con.execute(f"UPDATE {Table.FILES} SET export_root = ?", [root])
    con.execute("CREATE OR REPLACE TEMP TABLE _identities (name VARCHAR, size_bytes BIGINT, modified_ns BIGINT, "
                "content_hash VARCHAR)")
    insert_rows(con, "_identities", [(name, i.size_bytes, i.modified_ns, i.content_hash)
                                     for name, i in selection.identities.items()])
    con.execute(f"""UPDATE {Table.FILES} f SET size_bytes = i.size_bytes, modified_ns = i.modified_ns,
        content_hash = i.content_hash FROM _identities i WHERE i.name = f.source_file""")
    con.execute(f"""UPDATE {Table.FILES} f SET last_day = d.last_day
        FROM {STAGED_FILES} d
        WHERE d.source_file = f.source_file""")


def stage_export(con: duckdb.DuckDBPyConnection, source: Path, *, files: Sequence[ExportFile] | None = None,
                 table: str = Table.STAGED, max_days_from_file_date: int = 1, lineage_id: str | None = None,
                 scratch: Path | None = None) -> StagedExport:
    """Read and validate every row of the export at `source` (or only its `files`) into temp table
    `table`, and list the files in table `files`. A file DuckDB cannot read at all is an IngestError
    naming it.

    Three readers feed one set of checks: clean NDJSON files go through DuckDB's native JSON reader
    (`read_json`, the fast path); NDJSON files with a line it would skip or choke on (blank, not an
    object, over-long, malformed) are read line by line, so every line is a row with its problems;
    Parquet files are read by column and cast to the same types.

    A file with lines that are not UTF-8 is read from a copy in a private folder under `scratch`
    (the run's spill folder; the system's temp folder when None), removed when done; a folder left
    by a killed run is removed by the next one."""
    files = tuple(files) if files is not None else discover_exports(source)
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True)
        remove_orphans(scratch, _COPY_PREFIX)  # their folders hold raw export lines
    with tempfile.TemporaryDirectory(prefix=f"{_COPY_PREFIX}{os.getpid()}-", dir=scratch) as folder:
        return _stage_files(con, files, table, max_days_from_file_date, lineage_id, Path(folder))


_COPY_PREFIX = "flashcast-utf8-"
STAGED_FILES = "_staged_files"  # per file: staged rows, newest day, rows dated far from the file


def _stage_files(con: duckdb.DuckDBPyConnection, files: tuple[ExportFile, ...], table: str,
                 max_days_from_file_date: int, lineage_id: str | None, scratch: Path) -> StagedExport:
    ndjson = [f for f in files if f.format == "ndjson"]
    parquet = [f for f in files if f.format == "parquet"]
    while True:
        try:
            stats = _line_stats(con, ndjson, check_json=False)
            break
        except _NotUtf8 as exc:  # a line that is not UTF-8: its file is read from a marked copy
            ndjson = _copy_not_utf8(con, ndjson, scratch, exc.error)
    fast = [f for f in ndjson if stats[f.name][0] > 0 and stats[f.name][1] <= MAX_EVENT_CHARS and not stats[f.name][2]]
    checked, parquet_together = False, True
    while True:
        slow = [f for f in ndjson if f not in fast]
        try:
            _create_staged(con, table, fast, slow, parquet, stats, max_days_from_file_date,
                           parquet_together=parquet_together)
        except duckdb.Error as exc:
            if not checked and fast:  # find the files with lines the reader refuses, read those line by line
                checked, odd = True, _line_stats(con, fast, check_json=True)
                fast = [f for f in fast if not odd[f.name][2]]
                continue
            named = [f for f in fast if str(f.path) in str(exc)]
            if not named and parquet_together and len(parquet) > 1:
                # Parquet files whose columns' types differ: one read each, unless one cannot be read
                # at all (found from the files' schemas, in a moment)
                for file in parquet:
                    if problem := _parquet_problem(con, file):
                        raise _fix_or_move(file.name, problem) from exc
                parquet_together = False
                continue
            if not named:
                raise _unreadable(con, files, exc) from exc
            fast = [f for f in fast if f not in named]
            continue
        read = dict(con.execute(f"SELECT source_file, count(*) FROM {table} GROUP BY source_file").fetchall())
        short = [f for f in fast if read.get(f.name, 0) != stats[f.name][0]]  # the reader skipped a line
        if not short:
            break
        fast = [f for f in fast if f not in short]
    return _staged(con, DuckEngine(con), files, table, max_days_from_file_date, lineage_id)


def _staged(con: duckdb.DuckDBPyConnection, engine: Engine, files: tuple[ExportFile, ...], table: str,
            max_days: int, lineage_id: str | None) -> StagedExport:
    """The staged table's summary per file (counted where it is, landed in `con`): the export's record."""
    engine.create(STAGED_FILES, f"""SELECT source_file, count(*) AS input_rows, max(event_date) AS last_day,
        count(*) FILTER (WHERE array_length(list_filter(problems,
          lambda p: starts_with(p, 'event_date: more than'))) > 0) AS far_rows
        FROM {table} GROUP BY source_file""")
    land(con, engine, [STAGED_FILES])
    return StagedExport(table=table, files=files, input_rows=_file_table(con, files, lineage_id),
                        warnings=_warnings(con, max_days))


def stage_export_on(engine: SparkEngine, con: duckdb.DuckDBPyConnection, files: Sequence[ExportFile], *,
                    table: str = Table.STAGED, max_days_from_file_date: int = 1, lineage_id: str | None = None
                    ) -> StagedExport:
    """`stage_export` on Spark: the files' lines read by Spark, then the same checks. The staged
    table stays in Spark; its per-file summary and table `files` are in `con`."""
    engine.register_lines(files, "_parsed")
    engine.create(table, staged_select_sql("SELECT * FROM _parsed", max_days_from_file_date))
    return _staged(con, engine, tuple(files), table, max_days_from_file_date, lineage_id)


def _copy_not_utf8(con: duckdb.DuckDBPyConnection, files: list[ExportFile], scratch: Path, exc: duckdb.Error
                   ) -> list[ExportFile]:
    """The NDJSON files with a line that is not UTF-8 are copied, each such line replaced by
    NOT_UTF8_LINE (so it is quarantined, numbered where it was), and read from the copy. A file
    mostly not UTF-8 (binary, another encoding) is refused, named."""
    originals = [f for f in files if not f.path.is_relative_to(scratch)]  # a copy is never copied again
    named = [f for f in originals if str(f.path) in str(exc)]
    broken = named or [f for f in originals if not _is_utf8(f.path)]
    if not broken:
        raise _unreadable(con, tuple(files), exc) from exc
    copies = {}
    for file in broken:
        with _open_bytes(file.path, "rb") as handle:
            lines = handle.read().split(b"\n")
        bad, binary = 0, False
        for i, line in enumerate(lines):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                # A mis-encoded event is JSON text with a few odd bytes; a binary line is mostly odd bytes.
                binary = binary or b"\x00" in line or sum(b >= 0x80 for b in line) > MAX_NOT_UTF8_SHARE * len(line)
                lines[i], bad = NOT_UTF8_LINE.encode(), bad + 1
        if binary or bad > max(1, MAX_NOT_UTF8_SHARE * len(lines)):
            raise _unreadable(con, (file,), exc) from exc
        copy = scratch / file.name  # the same name (in its day folder, if it has one): rows carry it
        copy.parent.mkdir(exist_ok=True)
        with _open_bytes(copy, "wb") as handle:
            handle.write(b"\n".join(lines))
        copies[file.name] = replace(file, path=copy)
    return [copies.get(f.name, f) for f in files]


class _NotUtf8(Exception):
    def __init__(self, error: duckdb.Error) -> None:
        super().__init__(str(error))
        self.error = error


def _open_bytes(path: Path, mode: Literal["rb", "wb"]) -> IO[bytes]:
    """A file's bytes, through gzip when its name ends in .gz (as DuckDB's readers decide)."""
    return cast(IO[bytes], gzip.open(path, mode)) if path.name.lower().endswith(".gz") else path.open(mode)


def _is_utf8(path: Path) -> bool:
    with _open_bytes(path, "rb") as handle:
        try:
            handle.read().decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


def _create_staged(con: duckdb.DuckDBPyConnection, table: str, fast: list[ExportFile], slow: list[ExportFile],
                   parquet: list[ExportFile], stats: dict[str, tuple[int, int, int]], max_days: int, *,
                   parquet_together: bool = True) -> None:
    """The fast rows first (their line numbers come from their place in the table), then the slow and
    Parquet rows (in one read, or one read a file), all through the same checks."""
    parquet_reads = [parquet] if parquet_together else [[f] for f in parquet]
    sources = [*([_fast_rows_sql(fast)] if fast else []), *(_slow_rows_sql(f) for f in slow),
               *(_parquet_rows_sql(con, each) for each in parquet_reads if each)]
    con.execute(f"DROP TABLE IF EXISTS {table}")
    for i, source in enumerate(sources):
        into = f"CREATE TEMP TABLE {table} AS" if i == 0 else f"INSERT INTO {table} BY NAME"
        con.execute(f"{into} {staged_select_sql(source, max_days)}")
    if fast:
        # With insertion order preserved, the fast rows sit in the table in file order from rowid 0,
        # one per line: a row's line is its rowid less the lines of the files before it (numbering in
        # the reader itself, WITH ORDINALITY, costs the scan its parallelism: measured 2x slower).
        # Each file's first rowid comes by a join: a lookup in a list of names would cost every row a
        # scan of the list (rows x files).
        starts, before = [], 0
        for f in fast:
            starts.append(f"({literal(f.name)}, {before})")
            before += stats[f.name][0]
        con.execute(f"""UPDATE {table} SET source_line = {table}.rowid + 1 - first.start
            FROM (VALUES {", ".join(starts)}) first(name, start)
            WHERE first.name = {table}.source_file AND {table}.rowid < {before}""")
        # Rows out of file order would be named by wrong lines. A plan that does not keep order (DuckDB
        # plans a long IN list as a join) moves some row before its file's first rowid: line < 1.
        first_line = con.execute(f"SELECT min(source_line) FROM {table} WHERE rowid < {before}").fetchall()[0][0]
        if first_line is not None and first_line < 1:
            raise RuntimeError("staging lost the export rows' order: their line numbers would be wrong")


def staged_select_sql(parsed: str, max_days_from_file_date: int) -> str:
    """The staged rows from the parsed rows of SELECT `parsed` (file, line, the GA4 fields as read):
    their problems, validity and typed columns. The one definition every engine runs."""
    return f"""WITH checked AS (SELECT *, {_validation_sql(max_days_from_file_date)} AS problems,
          list_transform(event_params, lambda p: p.key) AS param_keys FROM ({parsed}))
        SELECT
          source_file, source_line, file_date, intraday,
          problems,
          array_length(problems) = 0 AS valid,
          -- text to fingerprint a quarantined row by (its line, or its fields as read); never leaves the run
          CASE WHEN array_length(problems) > 0
               THEN coalesce(line, to_json(struct_pack({_FIELDS}))::VARCHAR) END AS raw_line,
          {_columns_sql()}
        FROM checked"""


def _line_stats(con: duckdb.DuckDBPyConnection, files: list[ExportFile], *, check_json: bool
                ) -> dict[str, tuple[int, int, int]]:
    """Per NDJSON file, in one pass over the text: its lines, its longest line and its lines that
    DuckDB's JSON reader would skip or choke on: blank or not framed as an object (cheap, always), or
    (`check_json`) not valid JSON."""
    if not files:
        return {}
    # One scan over every file (a UNION of one scan per file holds a read buffer per file).
    paths = "[" + ", ".join(literal(f.path) for f in files) + "]"
    union = f"SELECT filename AS name, line FROM {_read_lines_sql(paths, filename=True)}"
    # Trimming copies the line, so only a line that does not start and end with a brace is trimmed
    # (CASE evaluates a branch only for the rows that reach it; OR would trim every line: 8x slower).
    framed = "CASE WHEN json_valid(line) THEN 0 ELSE 1 END" if check_json else "0"
    odd = (f"sum(CASE WHEN starts_with(line, '{{') AND ends_with(line, '}}') THEN {framed} WHEN line IS NULL THEN 1 "
           f"WHEN starts_with(ltrim(line), '{{') AND ends_with(rtrim(line, ' \t\r'), '}}') THEN {framed} ELSE 1 END)")
    try:
        rows = con.execute(
            f"SELECT name, count(*), coalesce(max(length(line)), 0), {odd} FROM ({union}) GROUP BY name").fetchall()
    except duckdb.Error as exc:
        if "unicode" in str(exc).lower():
            raise _NotUtf8(exc) from exc
        raise _unreadable(con, tuple(files), exc) from exc
    found = {name: (int(lines), int(longest), int(odd)) for name, lines, longest, odd in rows}
    found = {f.name: found[str(f.path)] for f in files if str(f.path) in found}
    return {f.name: found.get(f.name, (0, 0, 0)) for f in files}


def _read_lines_sql(source: ExportFile | str, *, filename: bool = False) -> str:
    """Every line of a file (or of a SQL list of paths, with `filename`) as a row of column `line`."""
    # \x1e (record separator) cannot occur unescaped in valid JSON, so each line is one field.
    # new_line '\r\n' ends a line at CRLF or at a bare LF, as the JSON reader does; with '\n' DuckDB's
    # reader split each CRLF line in two, the second empty (a Windows-saved export quarantined half
    # its "lines"). A bare CR ends a line in either setting.
    path = literal(source.path) if isinstance(source, ExportFile) else source
    return (f"read_csv({path}, columns={{'line': 'VARCHAR'}}, delim='\\x1e', filename={str(filename).lower()}, "
            f"quote='', escape='', header=false, auto_detect=false, strict_mode=false, new_line='\\r\\n', "
            f"max_line_size={MAX_LINE_BYTES}, buffer_size={_LINES_BUFFER})")


# The line reader's buffer defaults to 16 lines of max_line_size: 2 GB a thread on a .gz file, whose
# size is unknown, far over a modest memory_limit. One longest line (and a margin) is enough.
_LINES_BUFFER = MAX_LINE_BYTES + 2**20


def _fast_rows_sql(files: list[ExportFile]) -> str:
    """The clean NDJSON files through DuckDB's JSON reader, in one parallel scan that keeps file and
    row order (no join: a file's name and date are picked from lists by the reader's `file_index`,
    its place in the list of paths; line numbers are set afterwards, see `_create_staged`)."""
    def listed(values: list[str]) -> str:
        return "[" + ", ".join(values) + "]"

    paths = listed([literal(f.path) for f in files])
    i = "(raw.file_index::BIGINT + 1)"
    return f"""SELECT {listed([literal(f.name) for f in files])}[{i}] AS source_file,
        {listed([_date_sql(f) for f in files])}[{i}] AS file_date,
        {listed([str(f.intraday).lower() for f in files])}[{i}] AS intraday, NULL::BIGINT AS source_line,
        NULL::VARCHAR AS line, false AS blank, true AS is_json, 'OBJECT' AS top_type,
        {", ".join(f"raw.{k}" for k in GA4_JSON_STRUCTURE)},
        [CASE WHEN raw.event_params IS NULL THEN 'NULL' ELSE 'ARRAY' END] AS types
      FROM read_json({paths}, format='newline_delimited', maximum_object_size={MAX_LINE_BYTES},
                     columns={_JSON_COLUMNS}) raw"""


def _slow_rows_sql(file: ExportFile) -> str:
    """One row per line, however broken, with what the checks need to name its problems."""
    structure = literal(json.dumps(GA4_JSON_STRUCTURE))
    return f"""SELECT *,
        unnest(CASE WHEN top_type = 'OBJECT' THEN from_json(line, {structure}) END),
        CASE WHEN top_type = 'OBJECT' THEN json_type(line, ['$.event_params']) END AS types
      FROM (SELECT *, line IS NULL OR trim(line) = '' AS blank, coalesce(json_valid(line), false) AS is_json,
              CASE WHEN json_valid(line) THEN json_type(line) END AS top_type
            FROM ({_lines_sql(file)}))"""


def _parquet_rows_sql(con: duckdb.DuckDBPyConnection, files: list[ExportFile]) -> str:
    """Parquet rows cast by column (and by name inside structs) to the NDJSON reader's types, except
    that a number stored as a number stays one (see `_parquet_type`); a column a file lacks is NULL."""
    paths = "[" + ", ".join(literal(f.path) for f in files) + "]"
    scan = f"read_parquet({paths}, union_by_name=true, filename=true, file_row_number=true)"
    present = {f.name: f.type for f in con.sql(f"SELECT * FROM {scan} LIMIT 0").to_arrow_table().schema}
    fields = ", ".join(f"{_parquet_field(k, v, present[k])} AS {k}" if k in present
                       else f"NULL::{_duck_type(v)} AS {k}" for k, v in GA4_JSON_STRUCTURE.items())
    meta = ", ".join(f"({literal(f.path)}, {literal(f.name)}, {_date_sql(f)}, {str(f.intraday).lower()})"
                     for f in files)
    return f"""SELECT meta.name AS source_file, meta.file_date, meta.intraday,
        (p.file_row_number + 1)::BIGINT AS source_line, NULL::VARCHAR AS line, false AS blank, true AS is_json,
        'OBJECT' AS top_type, {fields},
        [CASE WHEN p.event_params IS NULL THEN 'NULL' ELSE 'ARRAY' END] AS types
      FROM {scan} p JOIN (VALUES {meta}) meta(path, name, file_date, intraday) ON meta.path = p.filename"""


# GA4's numeric fields (BigQuery INT64 / FLOAT64), by path ("[]" steps into a list). A Parquet column
# that holds them as numbers is read as numbers: turning them into text for the checks to turn back
# cost 0.2-0.3 s per 1M events. Stored as text (or any other type) they are read as text, as NDJSON
# is, so a bad value is a named problem on its row rather than an error for the whole file.
_NUMBERS = {("event_timestamp",): "BIGINT", ("event_value_in_usd",): "DOUBLE",
            ("event_params", "[]", "value", "int_value"): "BIGINT",
            ("event_params", "[]", "value", "float_value"): "DOUBLE",
            ("event_params", "[]", "value", "double_value"): "DOUBLE",
            ("ecommerce", "purchase_revenue"): "DOUBLE", ("ecommerce", "purchase_revenue_in_usd"): "DOUBLE"}


def _parquet_field(name: str, structure: object, stored: pa.DataType) -> str:
    """Top-level column `name` of a Parquet scan `p` as the checks read it. GA4's schema has the
    event's day as text (YYYYMMDD) and its time as microseconds since the epoch; a file that stores
    them as a date and a timestamp (a pipeline's own Parquet, not BigQuery's) says the same thing,
    so they are turned into GA4's form rather than quarantined (a timestamp without a time zone is
    read as UTC, as GA4's are)."""
    if name == "event_date" and pa.types.is_date(stored):
        return "strftime(p.event_date, '%Y%m%d')"
    if name == "event_timestamp" and pa.types.is_timestamp(stored):
        return "epoch_us(p.event_timestamp)"
    return f"p.{name}::{_parquet_type(structure, stored, (name,))}"


def _parquet_type(structure: object, stored: pa.DataType, path: tuple[str, ...]) -> str:
    """The DuckDB type to cast a Parquet column (Arrow type `stored`) to: `structure`'s, with the
    numeric fields kept numeric where the file stores them as numbers that fit."""
    if isinstance(structure, str):
        number = _NUMBERS.get(path)
        integer = (pa.types.is_integer(stored) and stored != pa.uint64()) or pa.types.is_null(stored)
        # (a 32-bit float is read as text, as before: widened in place, 0.1 would become 0.10000000149)
        fits = integer if number == "BIGINT" else integer or pa.types.is_float64(stored)
        return number if number and fits else structure
    if isinstance(structure, list):
        if pa.types.is_list(stored) or pa.types.is_large_list(stored):
            return _parquet_type(structure[0], stored.value_type, (*path, "[]")) + "[]"
        return _duck_type(structure)
    assert isinstance(structure, dict)
    inner = _fields(stored) if pa.types.is_struct(stored) else {}
    types = {k: _parquet_type(v, inner[k], (*path, k)) if k in inner else _duck_type(v) for k, v in structure.items()}
    # A struct's numbers stay numbers only all together: the checks coalesce them (int_value with
    # double_value), which a number and a text cannot be.
    numbers = [k for k in structure if (*path, k) in _NUMBERS]
    if not inner or not all(k in inner and types[k] == _NUMBERS[(*path, k)] for k in numbers):
        types |= {k: _duck_type(structure[k]) for k in numbers}
    return "STRUCT(" + ", ".join(f"{k} {t}" for k, t in types.items()) + ")"


def _fields(struct: pa.StructType) -> dict[str, pa.DataType]:
    return {struct.field(i).name: struct.field(i).type for i in range(struct.num_fields)}


def _date_sql(file: ExportFile) -> str:
    return f"DATE {literal(file.file_date.isoformat())}" if file.file_date else "NULL::DATE"


def _duck_type(structure: object) -> str:
    """GA4_JSON_STRUCTURE's JSON-structure notation as a DuckDB type."""
    if isinstance(structure, str):
        return structure
    if isinstance(structure, list):
        return _duck_type(structure[0]) + "[]"
    assert isinstance(structure, dict)
    return "STRUCT(" + ", ".join(f"{k} {_duck_type(v)}" for k, v in structure.items()) + ")"


_FIELDS = ", ".join(f"{k} := {k}" for k in GA4_JSON_STRUCTURE)
_JSON_COLUMNS = "{" + ", ".join(f"{literal(k)}: {literal(_duck_type(v))}" for k, v in GA4_JSON_STRUCTURE.items()) + "}"


def _columns_sql() -> str:
    """The staged columns, from the GA4 fields as read."""
    return f"""try_strptime(event_date, '%Y%m%d')::DATE AS event_date,
      TRY_CAST(event_timestamp AS BIGINT) AS event_timestamp,
      event_name AS event_name,
      user_pseudo_id AS user_pseudo_id,
      user_id AS user_id,
      stream_id AS stream_id,
      platform AS platform,
      privacy_info.analytics_storage AS analytics_storage,
      privacy_info.ads_storage AS ads_storage,
      TRY_CAST({_param('ga_session_id', 'int_value')} AS BIGINT) AS ga_session_id,
      TRY_CAST({_param('ga_session_number', 'int_value')} AS BIGINT) AS ga_session_number,
      TRY_CAST({_param('engagement_time_msec', 'int_value')} AS BIGINT) AS engagement_time_msec,
      {_param('page_location')} AS page_location,
      {_param('page_referrer')} AS page_referrer,
      {_param('search_term')} AS search_term,
      list_transform(event_params, lambda p: {{
        'key': p.key,
        'string_value': p.value.string_value,
        'int_value': TRY_CAST(p.value.int_value AS BIGINT),
        'double_value': TRY_CAST(coalesce(p.value.double_value, p.value.float_value) AS DOUBLE)
      }}) AS params,
      coalesce(
        TRY_CAST(ecommerce.purchase_revenue AS DOUBLE),
        TRY_CAST(event_value_in_usd AS DOUBLE),
        TRY_CAST(coalesce({_param('value', 'double_value')}, {_param('value', 'int_value')}) AS DOUBLE)
      ) AS revenue,
      CASE WHEN regexp_matches(lower(trim(coalesce(ecommerce.transaction_id, {_param('transaction_id')}))),
                               {literal(_NO_TRANSACTION)})
        THEN NULL ELSE coalesce(ecommerce.transaction_id, {_param('transaction_id')}) END AS transaction_id,
      coalesce(session_traffic_source_last_click.manual_campaign.source,
               collected_traffic_source.manual_source, {_param('source')}) AS session_source,
      coalesce(session_traffic_source_last_click.manual_campaign.medium,
               collected_traffic_source.manual_medium, {_param('medium')}) AS session_medium,
      coalesce(session_traffic_source_last_click.manual_campaign.campaign_name,
               collected_traffic_source.manual_campaign_name, {_param('campaign')}) AS session_campaign,
      traffic_source.source AS first_touch_source,
      traffic_source.medium AS first_touch_medium,
      traffic_source.name AS first_touch_campaign,
      device.category AS device_category,
      geo.country AS country"""


def _unreadable(con: duckdb.DuckDBPyConnection, files: tuple[ExportFile, ...], exc: duckdb.Error) -> IngestError:
    """Name the file (and line) DuckDB could not read, and why, without quoting its content (DuckDB's
    message carries the offending line). Running out of memory is no fault of a file: raised as is."""
    if isinstance(exc, duckdb.OutOfMemoryException):
        raise exc
    for file in files:
        if file.format == "parquet":
            if problem := _parquet_problem(con, file):
                return _fix_or_move(file.name, problem)
            continue
        try:
            con.execute(f"SELECT count(*) FROM ({_lines_sql(file)})").fetchall()
        except duckdb.Error as file_exc:
            if isinstance(file_exc, duckdb.OutOfMemoryException):
                raise
            text = str(file_exc)
            line = re.search(r"on Line: (\d+)", text)
            where = f"{file.name}: line {line.group(1)}" if line else file.name
            for marker, why in (("unicode", "not UTF-8 text (a binary or mis-encoded file?)"),
                                ("line size", f"a line longer than {MAX_LINE_BYTES // 2**20} MB"),
                                ("gzip", "not a complete gzip file"), ("GZIP", "not a complete gzip file"),
                                ("arquet", "not a readable Parquet file")):
                if marker in text:
                    return _fix_or_move(where, why)
            return IngestError(f"{where}: cannot be read as a GA4 {file.format} export ({type(file_exc).__name__})")
    return IngestError(f"the export could not be read ({type(exc).__name__})")


def _fix_or_move(where: str, why: str) -> IngestError:
    return IngestError(f"{where}: {why}; move it out of the export folder or fix it")


def _parquet_problem(con: duckdb.DuckDBPyConnection, file: ExportFile) -> str | None:
    """Why a Parquet file cannot be staged: unreadable, or a GA4 record or list stored as something
    else (named by column and type, never by value; read from the file's schema, no rows scanned);
    None when it can be."""
    import pyarrow.parquet as pq  # only here, on the way to an error

    try:
        stored = {f.name: f.type for f in pq.read_schema(file.path)}
        con.execute(f"SELECT count(*) FROM read_parquet({literal(file.path)})").fetchall()
    except (duckdb.Error, pa.ArrowException, OSError) as exc:
        if isinstance(exc, duckdb.OutOfMemoryException):
            raise
        return "not a readable Parquet file"
    for name, structure in GA4_JSON_STRUCTURE.items():
        if name in stored and (where := _misshapen(structure, stored[name], name)):
            return f"column {where[0]} is stored as {where[1]}, which is not how a GA4 export stores it"
    return None


def _misshapen(structure: object, stored: pa.DataType, path: str) -> tuple[str, pa.DataType] | None:
    """The first place (a dotted path, and its Arrow type there) where a column cannot be cast to
    `structure`: a record or a list stored as something else. Any leaf can be read (as text)."""
    if isinstance(structure, str):
        return None
    if isinstance(structure, list):
        if not (pa.types.is_list(stored) or pa.types.is_large_list(stored)):
            return None if pa.types.is_null(stored) else (path, stored)
        return _misshapen(structure[0], stored.value_type, path)
    assert isinstance(structure, dict)
    if not pa.types.is_struct(stored):
        return None if pa.types.is_null(stored) else (path, stored)
    inner = _fields(stored)
    return next((where for k, v in structure.items() if k in inner
                 and (where := _misshapen(v, inner[k], f"{path}.{k}"))), None)


def _file_table(con: duckdb.DuckDBPyConnection, files: tuple[ExportFile, ...], lineage_id: str | None) -> int:
    """Table `files`: every export file (empty ones too) with its format, date and rows; returns the rows."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {Table.FILES} (lineage_id VARCHAR, source_file VARCHAR, "
                "file_date DATE, format VARCHAR, intraday BOOLEAN, input_rows BIGINT)")
    insert_rows(con, Table.FILES, [(lineage_id, f.name, f.file_date, f.format, f.intraday, 0) for f in files])
    con.execute(f"""UPDATE {Table.FILES} f SET input_rows = c.input_rows
        FROM {STAGED_FILES} c WHERE c.source_file = f.source_file""")
    return int(con.execute(f"SELECT coalesce(sum(input_rows), 0) FROM {Table.FILES}").fetchall()[0][0])


def _warnings(con: duckdb.DuckDBPyConnection, max_days: int) -> tuple[str, ...]:
    """Files and rows a person should know about: empty files, rows dated far from their file."""
    empty = [r[0] for r in con.execute(
        f"SELECT source_file FROM {Table.FILES} WHERE input_rows = 0 ORDER BY source_file").fetchall()]
    far = con.execute(
        f"SELECT source_file, far_rows FROM {STAGED_FILES} WHERE far_rows > 0 ORDER BY source_file").fetchall()
    return (*(f"{name} is empty: its day has no events (spend for that day still counts)" for name in empty),
            *(f"{n:,} row(s) of {name} are dated more than {max_days} day(s) from the date in its name: quarantined"
              for name, n in far))
