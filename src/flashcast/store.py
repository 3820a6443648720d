"""Stores at the edges of the pipeline.

* `Warehouse`: analytical tables in one DuckDB file. DuckDB allows a single writing process per
  file, so runs do their heavy SQL in a private in-memory connection and only copy finished,
  guarded tables into the warehouse while holding an exclusive file lock (`warehouse_session`).
  Concurrent runs therefore queue for a few seconds instead of failing on DuckDB's lock.
* `OpsStore`: operational records (runs, reconciliation, lineage log) through SQLAlchemy, SQLite
  in WAL mode by default, so several processes (CLI, API server, cron) write safely; PostgreSQL
  works with the same code.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from flashcast.errors import StoreBusy
from flashcast.inplace import make_folder
from flashcast.sql import literal, without_progress_bar


@contextmanager
def file_lock(path: Path, *, timeout_s: float, shared: bool = False) -> Iterator[None]:
    """An advisory lock (flock) on `path`, waited for up to `timeout_s` seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    with path.open("a+") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle.fileno(), mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreBusy(f"{path} stayed locked for more than {timeout_s:.0f} s") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def transform_connection(*, threads: int | None = None, memory_limit: str | None = None,
                         temp_directory: Path | None = None) -> duckdb.DuckDBPyConnection:
    """A private in-memory DuckDB connection for a run's set-based transforms, within `memory_limit`,
    spilling to `temp_directory` what does not fit."""
    con = duckdb.connect(":memory:")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if memory_limit:
        con.execute(f"SET memory_limit = {literal(memory_limit)}")
    if temp_directory:
        make_folder(temp_directory, "[store] temp_directory (where DuckDB spills)")
        con.execute(f"SET temp_directory = {literal(temp_directory)}")
    con.execute("SET preserve_insertion_order = true")
    without_progress_bar(con)
    # An in-memory database still checkpoints (compresses its tables) each time 16 MB of changes pile
    # up: seconds of work a throwaway run connection never needs (measured 1.3-1.9 s per checkpoint on
    # a year of events). Data over memory_limit still spills to temp_directory.
    con.execute("SET checkpoint_threshold = '1TB'")
    return con


@contextmanager
def warehouse_session(
    con: duckdb.DuckDBPyConnection, warehouse: Path, *, timeout_s: float, read_only: bool = False
) -> Iterator[str]:
    """Attach the warehouse file to `con` under its lock; yields the catalog alias `wh`."""
    make_folder(warehouse.parent, "[store] home or warehouse")
    lock = warehouse.with_name(warehouse.name + ".lock")
    with file_lock(lock, timeout_s=timeout_s, shared=read_only):
        if read_only and not warehouse.exists():
            raise FileNotFoundError(f"no warehouse at {warehouse}: run the pipeline first")
        mode = " (READ_ONLY)" if read_only else ""
        con.execute(f"ATTACH {literal(warehouse)} AS wh{mode}")
        try:
            yield "wh"
        finally:
            con.execute("DETACH wh")


class OpsStore:
    """Operational records in a SQL database reachable by several processes at once."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _make_engine(url)
        self.metadata = sa.MetaData()
        self.runs = sa.Table(
            "runs", self.metadata,
            sa.Column("lineage_id", sa.String(36), primary_key=True),
            sa.Column("job", sa.String(64), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("started_at", sa.String(32), nullable=False),
            sa.Column("finished_at", sa.String(32)),
            sa.Column("config_digest", sa.String(64), nullable=False),
            sa.Column("key_id", sa.String(32)),
            sa.Column("summary", sa.JSON),
            sa.Column("error", sa.Text),
            # Who runs it and when it last showed life: a run whose process is gone is 'abandoned'.
            sa.Column("host", sa.String(255)),
            sa.Column("pid", sa.Integer),
            sa.Column("process_start", sa.String(32)),
            sa.Column("heartbeat_at", sa.String(32)),
        )
        self.reconciliation = sa.Table(
            "reconciliation", self.metadata,
            sa.Column("lineage_id", sa.String(36), primary_key=True),
            sa.Column("event_date", sa.String(10), primary_key=True),  # 'unknown' for undated rows
            sa.Column("input_rows", sa.BigInteger, nullable=False),
            sa.Column("accepted", sa.BigInteger, nullable=False),
            sa.Column("dropped_consent", sa.BigInteger, nullable=False),
            sa.Column("quarantined", sa.BigInteger, nullable=False),
            sa.Column("duplicate", sa.BigInteger, nullable=False),
        )
        self.lineage_log = sa.Table(
            "lineage_log", self.metadata,
            sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("entry", sa.Text, nullable=False),  # canonical JSON, hashed as stored
            sa.Column("entry_hash", sa.String(64), nullable=False, unique=True),
        )
        self.api_keys = sa.Table(  # see flashcast.access: the hash of each key, never the key
            "api_keys", self.metadata,
            sa.Column("key_id", sa.String(32), primary_key=True),
            sa.Column("role", sa.String(16), nullable=False),
            sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
            sa.Column("created_at", sa.String(32), nullable=False),
            sa.Column("revoked_at", sa.String(32)),
        )
        self.creative_decisions = sa.Table(  # see flashcast.approvals: the latest per creative counts
            "creative_decisions", self.metadata,
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("creative_id", sa.String(32), nullable=False, index=True),
            sa.Column("decision", sa.String(16), nullable=False),
            sa.Column("comment", sa.Text, nullable=False),
            sa.Column("override_reason", sa.Text),
            sa.Column("key_id", sa.String(32), nullable=False),
            sa.Column("decided_at", sa.String(32), nullable=False),
        )
        self.payloads = sa.Table(  # each run's payload document, what a push reads
            "payloads", self.metadata,
            sa.Column("lineage_id", sa.String(36), primary_key=True),
            sa.Column("schema_version", sa.String(16), nullable=False),
            sa.Column("for_date", sa.String(10), nullable=False),
            sa.Column("created_at", sa.String(32), nullable=False),
            sa.Column("document", sa.Text, nullable=False),
        )
        self.outbox = sa.Table(  # see flashcast.delivery: an order is committed here before any send
            "outbox", self.metadata,
            sa.Column("outbox_id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("lineage_id", sa.String(36), nullable=False, index=True),
            sa.Column("platform", sa.String(32), nullable=False),
            sa.Column("version", sa.Integer, nullable=False),
            sa.Column("idempotency_key", sa.String(128), nullable=False, unique=True),
            sa.Column("endpoint", sa.Text, nullable=False),
            sa.Column("body", sa.Text, nullable=False),
            sa.Column("body_sha256", sa.String(64), nullable=False),
            sa.Column("state", sa.String(16), nullable=False),  # pending | delivered | failed
            sa.Column("requested_by", sa.String(32), nullable=False),
            sa.Column("created_at", sa.String(32), nullable=False),
            sa.Column("finished_at", sa.String(32)),
            sa.Column("claimed_by", sa.String(300)),  # a sender's process_token and lease (unix seconds):
            sa.Column("claimed_until", sa.Float),  # two never send one order at once
            sa.UniqueConstraint("lineage_id", "platform", "version"),
        )
        self.delivery_attempts = sa.Table(
            "delivery_attempts", self.metadata,
            sa.Column("attempt_id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("outbox_id", sa.Integer, nullable=False, index=True),
            sa.Column("attempt", sa.Integer, nullable=False),
            sa.Column("started_at", sa.String(32), nullable=False),
            sa.Column("seconds", sa.Float, nullable=False),
            sa.Column("outcome", sa.String(16), nullable=False),  # delivered | retry | rejected
            sa.Column("http_status", sa.Integer),
            sa.Column("detail", sa.Text),
        )
        # Inside one (IMMEDIATE, on SQLite) transaction, so two processes creating a fresh store
        # cannot both decide a table is missing.
        with self.engine.begin() as conn:
            self.metadata.create_all(conn)
            _add_missing_columns(conn, self.metadata)

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        with self.engine.begin() as conn:
            yield conn

    def insert(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        if rows:
            with self.transaction() as conn:
                conn.execute(table.insert(), rows)

    def record_reconciliation(self, lineage_id: str, days: Sequence[Any]) -> None:
        """A run's row outcomes per day (DayOutcome records)."""
        self.insert(self.reconciliation, [
            {"lineage_id": lineage_id, "event_date": d.event_date, "input_rows": d.input_rows,
             "accepted": d.accepted, "dropped_consent": d.dropped_consent, "quarantined": d.quarantined,
             "duplicate": d.duplicate}
            for d in days
        ])

    def dispose(self) -> None:
        self.engine.dispose()

    def mark_abandoned(self, *, lease_s: float = 6 * 3600) -> list[str]:
        """Runs still 'running' whose process is gone (same host: pid and start time no longer match;
        other hosts: no heartbeat for `lease_s`) become 'abandoned'. Returns their lineage ids."""
        now = datetime.now(UTC)
        runs = self.runs
        with self.transaction() as conn:
            rows = conn.execute(sa.select(runs.c.lineage_id, runs.c.host, runs.c.pid, runs.c.process_start,
                                          runs.c.heartbeat_at, runs.c.started_at)
                                .where(runs.c.status == "running")).all()
            gone = [r.lineage_id for r in rows if not _alive(r, now, lease_s)]
            if gone:
                conn.execute(runs.update().where(runs.c.lineage_id.in_(gone)).values(
                    status="abandoned", finished_at=now.isoformat(),
                    error="the run's process ended without finishing (killed or crashed)"))
        return gone

    def latest_runs(self, limit: int) -> list[dict[str, Any]]:
        """The latest runs, newest first (runs whose process is gone marked abandoned first)."""
        self.mark_abandoned()
        r = self.runs
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(r.c.lineage_id, r.c.job, r.c.status, r.c.started_at, r.c.finished_at,
                                          r.c.error).order_by(r.c.started_at.desc()).limit(limit)).all()
        return [dict(row._mapping) for row in rows]

    def running(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(self.runs.c.lineage_id).where(self.runs.c.status == "running"))
                       .scalars())


def this_process() -> dict[str, Any]:
    """Host, pid and the process's start time (so a reused pid is not mistaken for the run)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "process_start": _process_start(os.getpid())}


def process_token() -> str:
    """This process as one string: host, pid, start time."""
    me = this_process()
    return f"{me['host']}|{me['pid']}|{me['process_start']}"


def token_alive(token: str | None) -> bool:
    """Whether the process a `process_token` names may still run (another host's: assumed so)."""
    if not token:
        return False
    host, pid, start = token.split("|")
    if host != socket.gethostname():
        return True
    return pid_alive(int(pid)) and (start == "None" or _process_start(int(pid)) == start)


def _process_start(pid: int) -> str | None:
    return _stat_field(pid, 22)  # clock ticks since boot


def _stat_field(pid: int, field: int) -> str | None:
    """Field `field` (numbered as in proc(5)) of Linux's /proc/<pid>/stat; None where it cannot be
    read. The process name (field 2) may hold spaces: fields are counted after its closing ')'."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[field - 3]
    except (OSError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (someone else's counts). A zombie does not:
    a killed process stays one until its parent reaps it, which a hung or careless parent never does."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return _stat_field(pid, 3) != "Z"  # the state: Z for a zombie (unreadable: taken as running)


def remove_orphans(parent: Path, prefix: str) -> None:
    """Remove the folders in `parent` named `<prefix><pid>[-...]` whose process is gone (a command
    killed while it wrote them)."""
    for folder in parent.glob(f"{prefix}*"):
        pid = folder.name[len(prefix):].split("-")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(row: Any, now: datetime, lease_s: float) -> bool:
    if row.host == socket.gethostname() and row.pid:
        if not pid_alive(int(row.pid)):
            return False
        return row.process_start is None or _process_start(int(row.pid)) == row.process_start
    seen = row.heartbeat_at or row.started_at
    return (now - datetime.fromisoformat(seen)).total_seconds() < lease_s


def _add_missing_columns(conn: sa.Connection, metadata: sa.MetaData) -> None:
    """Ops stores made by an older version get the columns a newer one added (NULL for old rows)."""
    inspector = sa.inspect(conn)
    for table in metadata.sorted_tables:
        existing = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in existing:
                kind = column.type.compile(dialect=conn.dialect)
                conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        make_folder(Path(url.removeprefix("sqlite:///")).parent, "[store] home or ops_url")
    connect_args = {"timeout": 30.0} if url.startswith("sqlite") else {}
    engine = sa.create_engine(url, connect_args=connect_args)
    if engine.dialect.name == "sqlite":
        _sqlite_wal_with_immediate_transactions(engine)
    return engine


def _enable_wal(cursor: Any) -> None:
    """Switch a SQLite file to WAL (persistent). The switch can fail with 'locked' without waiting
    on the busy handler while another process opens the new file, so retry for a while."""
    import sqlite3

    deadline = time.monotonic() + 30.0
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _sqlite_wal_with_immediate_transactions(engine: Engine) -> None:
    # pysqlite's default BEGIN is deferred, so two writers can both read the lineage head and then
    # collide; BEGIN IMMEDIATE takes the write lock up front (SQLAlchemy's documented recipe).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
