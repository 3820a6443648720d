"""The warehouse as the governed history: which export files it holds, which files a run must read,
and how a run's rows replace the ones they supersede.

A run reads only the export files the warehouse does not hold unchanged (by name, size and content
hash), the files of the latest `look_back_days` days (GA4 rewrites recent days: late hits, the
daily table replacing the intraday one), every file sharing a date with one of those, and the days
a user asks to rebuild. The guarded rows of every other file are taken from the warehouse, so the
run's connection still holds the whole history for the stages after the guard.

How the warehouse keeps each table:

* by file (`BY_FILE`): rows carry their `source_file`; a file read again replaces its rows.
* by day (`BY_DAY`): sessions. A run recomputes the sessions its rows touch (see `stages.kpis`);
  they and the stored rows from the day before the earliest day read on are replaced. A run that
  recomputed every session (another channel mapping, a remote engine) replaces them whole.
* whole (`WHOLE`): daily KPIs and daily outcomes, small and recomputed every run over the whole
  history (a corrected spend file changes old days too).
* everything else (segments, creatives, allocations: decisions) is appended, one copy per run.

Files no longer in the export folder keep their rows: the warehouse is the history, and `prune`
(or `[store] retention_days`) is how rows leave it. A warehouse keeps one export's history (its
`export_root`): a run on another export replaces it rather than mixing the two.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import duckdb

from flashcast.errors import PiiKeyMismatch
from flashcast.lineage import LineageLog
from flashcast.records import ExportFile, Table
from flashcast.sql import identifier, insert_rows, literal
from flashcast.store import warehouse_session

BY_FILE: tuple[Table, ...] = (Table.FILES, Table.GUARDED_EVENTS, Table.QUARANTINE, Table.CONSENT_DROPS,
                              Table.DUPLICATES)
OUTCOME_TABLES: tuple[Table, ...] = (Table.GUARDED_EVENTS, Table.QUARANTINE, Table.CONSENT_DROPS, Table.DUPLICATES)
BY_DAY: tuple[Table, ...] = (Table.SESSIONS,)
WHOLE: tuple[Table, ...] = (Table.DAILY_KPIS, Table.DAILY_OUTCOMES)
PRUNED: tuple[Table, ...] = (*OUTCOME_TABLES, Table.SESSIONS)
PENDING_PRUNES = "pending_prunes"  # a prune's lineage record until the lineage log has it (`_log_prunes`)
READ_FILES = "_read_files"  # the names of the files this run reads, in the run's connection
_STORED_ROWS = "_stored_rows"  # rows of each reused stored outcome table, counted when joined


@dataclass(frozen=True)
class StoredFile:
    """A file the warehouse holds rows of, as it was when read."""

    name: str
    size_bytes: int
    modified_ns: int
    content_hash: str
    file_date: date | None
    last_day: date | None  # the newest event_date among its rows


@dataclass(frozen=True)
class FileIdentity:
    size_bytes: int
    modified_ns: int
    content_hash: str


@dataclass(frozen=True)
class FileSelection:
    """Which of the export's files a run reads (and why), and which stored files it reuses."""

    read: tuple[ExportFile, ...]
    reasons: dict[str, str]  # file name -> new | changed | look-back | rebuild | latest | same day | every run
    reused: tuple[str, ...]
    identities: dict[str, FileIdentity] = field(default_factory=dict)


class WarehouseSnapshot:
    """The warehouse attached read-only to a run's connection, under its shared lock, from the run's
    choice of files until `release` (before the run takes the exclusive lock to persist): the stored
    rows the run reuses are read in place, one consistent snapshot. A context manager (releases)."""

    def __init__(self) -> None:
        self._session = ExitStack()

    def attach(self, con: duckdb.DuckDBPyConnection, warehouse: Path, *, timeout_s: float) -> str:
        """The warehouse's catalog alias in `con`."""
        return self._session.enter_context(warehouse_session(con, warehouse, timeout_s=timeout_s, read_only=True))

    def release(self) -> None:
        self._session.close()

    def __enter__(self) -> WarehouseSnapshot:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def file_identity(path: Path, stored: StoredFile | None) -> FileIdentity:
    """Size, modification time and SHA-256 of a file; the hash is taken from the warehouse when
    size and modification time match what was stored (as make and git do), so unchanged files
    are not read to be recognized."""
    stat = path.stat()
    if stored is not None and stored.size_bytes == stat.st_size and stored.modified_ns == stat.st_mtime_ns:
        return FileIdentity(stat.st_size, stat.st_mtime_ns, stored.content_hash)
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return FileIdentity(stat.st_size, stat.st_mtime_ns, digest)


def select_files(files: Sequence[ExportFile], stored: dict[str, StoredFile], *, incremental: bool,
                 look_back_days: int, rebuild: tuple[date, date] | None = None) -> FileSelection:
    """The files a run must read (see the module docstring) and the stored files whose rows it reuses."""
    identities = {f.name: file_identity(f.path, stored.get(f.name)) for f in files}
    reasons: dict[str, str] = {}
    for f in files:
        before = stored.get(f.name)
        if not incremental:
            reasons[f.name] = "every run"
        elif before is None:
            reasons[f.name] = "new"
        elif before.content_hash != identities[f.name].content_hash:
            reasons[f.name] = "changed"
    day_of = {f.name: f.file_date or (stored[f.name].last_day if f.name in stored else None) for f in files}
    known = [d for d in day_of.values() if d is not None]
    if known and look_back_days > 0:
        first_recent = max(known) - timedelta(days=look_back_days - 1)
        for f in files:
            day = day_of[f.name]
            if f.name not in reasons and (day is None or day >= first_recent):
                reasons[f.name] = "look-back"
    if rebuild is not None:
        for f in files:
            day = day_of[f.name]
            if f.name not in reasons and day is not None and rebuild[0] <= day <= rebuild[1]:
                reasons[f.name] = "rebuild"
    if not reasons and files:  # nothing new: the newest file is read, so a run always has rows of its own
        reasons[max(files, key=lambda f: (day_of[f.name] or date.min, f.name)).name] = "latest"
    # A day is read whole: files sharing a date with a file read are read too (intraday and daily).
    read_days = {day_of[n] for n in reasons if day_of[n] is not None}
    for f in files:
        if f.name not in reasons and day_of[f.name] in read_days:
            reasons[f.name] = "same day"
    read = tuple(f for f in files if f.name in reasons)
    reused = tuple(sorted(name for name in stored if name not in reasons))
    return FileSelection(read, reasons, reused, {n: identities[n] for n in reasons})


def read_history(con: duckdb.DuckDBPyConnection, warehouse: Path, *, export_root: str, timeout_s: float,
                 choose: Callable[[dict[str, StoredFile]], FileSelection], snapshot: WarehouseSnapshot,
                 key_id: str | None = None) -> tuple[FileSelection, str | None]:
    """Attach the warehouse (`snapshot`, under its shared lock): the stored files, the run's choice
    among them, and views `_stored_<table>` over the rows of every reused file (the small `files`
    registry and the latest forecast selections are copied). When nothing is reused the snapshot is
    released at once. A warehouse holds the history of one export (file or folder): when it holds
    another's, nothing is reused and the other export's root is returned (the run then replaces
    that history). A history keyed with another PII key than `key_id` is refused (PiiKeyMismatch):
    its user, session and transaction keys would not join this run's."""
    if not warehouse.exists():
        selection = choose({})
        for table in (*OUTCOME_TABLES, Table.FILES, *BY_DAY):
            _create_empty_stored(con, table)
        return selection, None
    wh = snapshot.attach(con, warehouse, timeout_s=timeout_s)
    other = _other_root(con, wh, export_root)
    if key_id is not None and not other:
        _check_key(con, wh, key_id)
    stored = {} if other else _stored_files(con, wh)
    selection = choose(stored)
    con.execute("CREATE OR REPLACE TEMP TABLE _reused (name VARCHAR)")
    if selection.reused:
        insert_rows(con, "_reused", [(n,) for n in selection.reused])
    present = _tables(con, wh)
    if Table.FORECAST_SELECTIONS in present and not other:  # the latest run's selections, for reuse
        selections = f"{wh}.main.{Table.FORECAST_SELECTIONS}"
        con.execute(f"""CREATE OR REPLACE TEMP TABLE _stored_{Table.FORECAST_SELECTIONS} AS
            SELECT * FROM {selections}
            WHERE lineage_id = (SELECT lineage_id FROM {selections} ORDER BY created_at DESC LIMIT 1)""")
    reusing = bool(stored and selection.reused)
    for table in (*OUTCOME_TABLES, Table.FILES):
        if table in present and reusing:
            kind = "TABLE" if table == Table.FILES else "VIEW"
            con.execute(f"""CREATE OR REPLACE TEMP {kind} _stored_{table} AS
                SELECT * FROM {wh}.main.{table} WHERE source_file IN (SELECT name FROM _reused)""")
        else:
            _create_empty_stored(con, table)
    for table in BY_DAY:  # the KPI stage decides which of them it can keep
        if table in present and reusing:
            con.execute(f"CREATE OR REPLACE TEMP VIEW _stored_{table} AS SELECT * FROM {wh}.main.{table}")
        else:
            _create_empty_stored(con, table)
    if not reusing:
        snapshot.release()
    return selection, other


def _check_key(con: duckdb.DuckDBPyConnection, wh: str, key_id: str) -> None:
    """Refuse to add rows keyed with `key_id` to a history keyed with another key: its users would
    become strangers to it, each transaction new again (a rotated key, or a mistyped one)."""
    table = f"{wh}.main.{Table.GUARDED_EVENTS}"
    if Table.GUARDED_EVENTS not in _tables(con, wh) or "key_id" not in _columns(con, table):
        return
    stored = sorted(r[0] for r in con.execute(f"SELECT DISTINCT key_id FROM {table}").fetchall() if r[0] != key_id)
    if stored:
        raise PiiKeyMismatch(
            f"the warehouse's guarded history is keyed with PII key id {', '.join(map(str, stored))}, this run's "
            f"key is {key_id}: users, sessions and transactions would not join across the two. Run with the key "
            "the history was written with ($FLASHCAST_PII_KEY or [policy] key_file; `flashcast keys pii` shows "
            "which is in force), or give the new key its own [store] home and read the export afresh")


def _other_root(con: duckdb.DuckDBPyConnection, wh: str, export_root: str) -> str | None:
    """The export the warehouse's history came from, when it is not `export_root`."""
    if _registry_is_legacy(con, wh) or "export_root" not in _columns(con, f"{wh}.main.{Table.FILES}"):
        return None
    roots = [r[0] for r in con.execute(f"SELECT DISTINCT export_root FROM {wh}.main.{Table.FILES}").fetchall()]
    others = [str(r) for r in roots if r != export_root]  # a NULL root (written before roots were kept) too
    return others[0] if others else None


def _create_empty_stored(con: duckdb.DuckDBPyConnection, table: Table) -> None:
    """No stored rows of `table` to reuse (the guard checks `_stored_guarded_events` for its columns,
    the KPI stage `_stored_sessions` for its)."""
    dated = ", event_date DATE" if table != Table.FILES else ""
    con.execute(f"CREATE OR REPLACE TEMP TABLE _stored_{table} (source_file VARCHAR{dated})")


def _tables(con: duckdb.DuckDBPyConnection, catalog: str) -> set[str]:
    return {r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [catalog]).fetchall()}


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]


def _stored_files(con: duckdb.DuckDBPyConnection, wh: str) -> dict[str, StoredFile]:
    """The registry; empty for a warehouse written before runs were incremental (no content hashes),
    whose rows the next run then replaces."""
    if _registry_is_legacy(con, wh):
        return {}
    rows = con.execute(f"""SELECT source_file, size_bytes, modified_ns, content_hash, file_date, last_day
        FROM {wh}.main.{Table.FILES} WHERE content_hash IS NOT NULL""").fetchall()
    return {r[0]: StoredFile(r[0], int(r[1]), int(r[2]), str(r[3]), r[4], r[5]) for r in rows}


def _common_columns(con: duckdb.DuckDBPyConnection, table: str, stored: str) -> list[str]:
    have = set(_columns(con, table))
    return [c for c in _columns(con, stored) if c in have]


def merge_reused(con: duckdb.DuckDBPyConnection, tables: Iterable[Table]) -> None:
    """Append the reused stored rows to the run's tables (columns a table lacks on either side are
    left out or NULL, so a warehouse written by an older version still merges)."""
    for table in tables:
        stored = f"_stored_{table}"
        common = _common_columns(con, table, stored)
        if not common or not con.execute(f"SELECT count(*) FROM {stored}").fetchall()[0][0]:
            continue
        names = ", ".join(identifier(c) for c in common)
        con.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {stored}")


def join_reused(con: duckdb.DuckDBPyConnection, tables: Iterable[Table]) -> None:
    """Make each of `tables` the run's rows (renamed `_run_<table>`) followed by the reused stored
    rows (`_stored_<table>`), as a view: no stored row is copied. Stored columns the run lacks are
    left out, run columns the stored rows lack are NULL (a warehouse written by an older version)."""
    for table in tables:
        stored = f"_stored_{table}"
        common = set(_common_columns(con, table, stored))
        if not common:
            continue
        con.execute(f"ALTER TABLE {table} RENAME TO _run_{table}")
        columns = con.execute(f"DESCRIBE _run_{table}").fetchall()
        stored_types = dict((r[0], r[1]) for r in con.execute(f"DESCRIBE {stored}").fetchall())
        picks = ", ".join(
            identifier(name) if name in common and stored_types[name] == dtype
            else f"CAST({identifier(name) if name in common else 'NULL'} AS {dtype}) AS {identifier(name)}"
            for name, dtype, *_ in columns)
        con.execute(f"CREATE TEMP VIEW {table} AS SELECT * FROM _run_{table} UNION ALL SELECT {picks} FROM {stored}")
        # The stored rows do not change during a run: counted once here, not at every stage check.
        con.execute(f"CREATE TEMP TABLE IF NOT EXISTS {_STORED_ROWS} (name VARCHAR, n BIGINT)")
        con.execute(f"INSERT INTO {_STORED_ROWS} SELECT ?, count(*) FROM {stored}", [str(table)])


def row_count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    """Rows of a run table; for an outcome table joining stored rows, its own rows plus the stored
    ones as counted when they were joined."""
    own = run_rows(con, table)
    n = int(con.execute(f"SELECT count(*) FROM {own}").fetchall()[0][0])
    if own != table and str(table) in OUTCOME_TABLES:
        n += int(con.execute(f"SELECT n FROM {_STORED_ROWS} WHERE name = ?", [str(table)]).fetchall()[0][0])
    return n


def run_rows(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """Where the run's own rows of `table` are: `_run_<table>` when `table` joins stored rows."""
    own = f"_run_{table}"
    present = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [own]).fetchall()[0][0]
    return own if present else table


def persist_run(con: duckdb.DuckDBPyConnection, warehouse: Path, tables: Sequence[Table], *, timeout_s: float,
                retention_days: int = 0, snapshot: WarehouseSnapshot | None = None,
                log: LineageLog | None = None, lineage_id: str = "") -> None:
    """Write the run's kept tables to the warehouse in one transaction under its lock (see the module
    docstring for how each is kept), then prune by `retention_days` in the same transaction, which
    `log` then records (see `_log_prunes`). The run's `snapshot` is released first (its shared lock
    would block the exclusive one)."""
    if snapshot is not None:
        snapshot.release()
    read_files = f"(SELECT name FROM {READ_FILES})"
    with warehouse_session(con, warehouse, timeout_s=timeout_s) as wh:
        # A new warehouse, one whose runs appended whole copies, or one holding another export's history.
        root = con.execute(f"SELECT any_value(export_root) FROM {Table.FILES}").fetchall()[0][0]
        legacy = _registry_is_legacy(con, wh) or _other_root(con, wh, root) is not None
        with _transaction(con):
            for table in tables:
                target = f"{wh}.main.{table}"
                own = run_rows(con, table)
                _create_or_widen(con, own, target)
                if table in BY_FILE:
                    where = "" if legacy else f" WHERE source_file IN {read_files}"
                    con.execute(f"DELETE FROM {target}{where}")
                    con.execute(f"INSERT INTO {target} BY NAME SELECT * FROM {own} WHERE source_file IN {read_files}")
                elif table in BY_DAY and own != table and not legacy:
                    # The run recomputed the sessions it touched: they and every stored one from the
                    # day before its first day read on are replaced (see stages.kpis).
                    since = first_day_read(con)
                    where = "TRUE" if since is None else f"event_date >= {literal(since.isoformat())}::DATE - 1"
                    con.execute(f"DELETE FROM {target} WHERE {where} OR session_key IN (SELECT session_key FROM {own})")
                    con.execute(f"INSERT INTO {target} BY NAME SELECT * FROM {own}")
                elif table in WHOLE or table in BY_DAY:  # sessions recomputed whole replace the stored ones
                    con.execute(f"DELETE FROM {target}")
                    con.execute(f"INSERT INTO {target} BY NAME SELECT * FROM {table}")
                else:
                    con.execute(f"INSERT INTO {target} BY NAME SELECT * FROM {table}")
            if retention_days:
                _prune(con, wh, retention_days, lineage_id)
        if log is not None:
            _log_prunes(con, wh, log, lineage_id)


def prune(con: duckdb.DuckDBPyConnection, warehouse: Path, *, keep_days: int, timeout_s: float,
          log: LineageLog, lineage_id: str) -> dict[str, int]:
    """Remove guarded rows dated more than `keep_days` before the warehouse's newest day; `log`
    records it (as `lineage_id`). Returns rows pruned per table."""
    with warehouse_session(con, warehouse, timeout_s=timeout_s) as wh:
        with _transaction(con):
            pruned = _prune(con, wh, keep_days, lineage_id)
        _log_prunes(con, wh, log, lineage_id)
    return pruned


def _log_prunes(con: duckdb.DuckDBPyConnection, wh: str, log: LineageLog, own: str) -> None:
    """Append the warehouse's pending prunes to the lineage log, then clear them. A prune writes its
    record into the warehouse in its own transaction (the lineage log lives in another database),
    so a process killed between the two leaves the record pending, and the next run or prune logs
    it: the log never misses a prune. A pending record of another process is first looked up in the
    log, where it is when that process died after appending (the warehouse lock is held throughout,
    so two processes never log the same record)."""
    if PENDING_PRUNES not in _tables(con, wh):
        return
    pending = con.execute(
        f"SELECT lineage_id, keep_days, cutoff, pruned FROM {wh}.main.{PENDING_PRUNES} ORDER BY recorded_at").fetchall()
    for lineage_id, keep_days, cutoff, pruned in pending:
        late = lineage_id != own
        if not (late and any(e["kind"] == "warehouse_pruned" for e in log.entries(lineage_id))):
            body = {"keep_days": keep_days, "cutoff": cutoff.isoformat(), "rows": json.loads(pruned)}
            log.append("warehouse_pruned", lineage_id, {**body, "late": True} if late else body)
        con.execute(f"DELETE FROM {wh}.main.{PENDING_PRUNES} WHERE lineage_id = ?", [lineage_id])


@contextmanager
def _transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def _prune(con: duckdb.DuckDBPyConnection, wh: str, keep_days: int, lineage_id: str) -> dict[str, int]:
    """Delete the guarded rows dated before the cutoff, with the record the lineage log gets (pending)."""
    present = _tables(con, wh)
    if Table.GUARDED_EVENTS not in present:
        return {}
    newest = con.execute(f"SELECT max(event_date) FROM {wh}.main.{Table.GUARDED_EVENTS}").fetchall()[0][0]
    if newest is None:
        return {}
    cutoff = newest - timedelta(days=keep_days)
    outcome_tables = [t for t in OUTCOME_TABLES if t in present]
    if Table.FILES in present and outcome_tables:  # a file's input_rows keeps matching its stored rows
        pruned_rows = " UNION ALL ".join(
            f"SELECT source_file FROM {wh}.main.{t} WHERE event_date < $cutoff" for t in outcome_tables)
        con.execute(f"""UPDATE {wh}.main.{Table.FILES} f SET input_rows = f.input_rows - p.n
            FROM (SELECT source_file, count(*) AS n FROM ({pruned_rows}) GROUP BY source_file) p
            WHERE p.source_file = f.source_file""", {"cutoff": cutoff})
    pruned = {}
    for table in PRUNED:
        if table in present:
            pruned[str(table)] = int(con.execute(
                f"DELETE FROM {wh}.main.{table} WHERE event_date < ?", [cutoff]).fetchall()[0][0])
    con.execute(f"""CREATE TABLE IF NOT EXISTS {wh}.main.{PENDING_PRUNES} (lineage_id VARCHAR, keep_days INTEGER,
        cutoff DATE, pruned VARCHAR, recorded_at TIMESTAMP)""")
    con.execute(f"INSERT INTO {wh}.main.{PENDING_PRUNES} VALUES (?, ?, ?, ?, now())",
                [lineage_id, keep_days, cutoff, json.dumps(pruned)])
    return pruned


def _registry_is_legacy(con: duckdb.DuckDBPyConnection, wh: str) -> bool:
    return Table.FILES not in _tables(con, wh) or "content_hash" not in _columns(con, f"{wh}.main.{Table.FILES}")


def first_day_read(con: duckdb.DuckDBPyConnection) -> date | None:
    day = con.execute(f"SELECT min(event_date) FROM {run_rows(con, Table.GUARDED_EVENTS)} "
                      f"WHERE source_file IN (SELECT name FROM {READ_FILES})").fetchall()[0][0]
    return day if isinstance(day, date) else None


def _create_or_widen(con: duckdb.DuckDBPyConnection, table: str, target: str) -> None:
    """The warehouse table, created like the run's; a column a newer version adds is added (NULL for
    older rows)."""
    con.execute(f"CREATE TABLE IF NOT EXISTS {target} AS SELECT * FROM {table} WITH NO DATA")
    existing = set(_columns(con, target))
    for name, dtype, *_ in con.execute(f"DESCRIBE {table}").fetchall():
        if name not in existing:
            con.execute(f"ALTER TABLE {target} ADD COLUMN {identifier(name)} {dtype}")
