"""Where the governed data path's SQL runs: DuckDB (the run's own connection) or Apache Spark.

Ingest's checks, the guard and the daily KPIs are written once, as SQL in DuckDB's dialect that
keeps to what both engines can do (no macros, no bound parameters, no DuckDB-only table functions).
`DuckEngine` runs that text as is; `flashcast.spark.SparkEngine` transpiles it with SQLGlot. Only
reading the export files is engine-specific, as I/O at the edge.
"""

from __future__ import annotations

from typing import Any, Protocol

import duckdb
import pyarrow as pa

from flashcast.sql import insert_rows


class Engine(Protocol):
    """The few operations the governed transforms need from an engine."""

    name: str

    def create(self, table: str, select: str) -> None:
        """Materialize `select` as temporary table `table` (replacing one of that name)."""

    def view(self, name: str, select: str) -> None:
        """`select` under `name`, computed where it is read (an engine that caches may materialize it)."""

    def rows(self, select: str) -> list[tuple[Any, ...]]:
        """The result of `select`, fetched."""

    def put(self, table: str, columns: dict[str, str], rows: list[tuple[Any, ...]]) -> None:
        """A small temporary table from Python rows; `columns` maps names to DuckDB types."""

    def arrow(self, table: str) -> pa.Table:
        """A table's rows as Arrow (to land them in the run's DuckDB connection)."""

    def load(self, table: str, data: pa.Table) -> None:
        """A temporary table from Arrow rows (to send tables of the run's connection to the engine)."""

    def counts(self) -> dict[str, int]:
        """Rows of the tables this engine holds apart from the run's connection (none for DuckDB)."""


class DuckEngine:
    """The default engine: the run's private DuckDB connection."""

    name = "duckdb"

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def create(self, table: str, select: str) -> None:
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS {select}")

    def view(self, name: str, select: str) -> None:
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {select}")

    def rows(self, select: str) -> list[tuple[Any, ...]]:
        return self.con.execute(select).fetchall()

    def put(self, table: str, columns: dict[str, str], rows: list[tuple[Any, ...]]) -> None:
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {table} ({', '.join(f'{k} {t}' for k, t in columns.items())})")
        if rows:
            insert_rows(self.con, table, rows)

    def arrow(self, table: str) -> pa.Table:
        return self.con.sql(f"SELECT * FROM {table}").to_arrow_table()

    def load(self, table: str, data: pa.Table) -> None:
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM data")

    def counts(self) -> dict[str, int]:
        return {}


def engine_of(con: duckdb.DuckDBPyConnection, engine: Engine | None) -> Engine:
    return engine if engine is not None else DuckEngine(con)


def is_remote(con: duckdb.DuckDBPyConnection, engine: Engine | None) -> bool:
    """Whether `engine` holds its tables apart from the run's connection `con`."""
    return engine is not None and not (isinstance(engine, DuckEngine) and engine.con is con)


def land(con: duckdb.DuckDBPyConnection, engine: Engine, tables: list[str]) -> None:
    """Copy `tables` from a remote engine into the run's DuckDB connection (same names)."""
    if is_remote(con, engine):
        local = DuckEngine(con)
        for table in tables:
            local.load(table, engine.arrow(table))
