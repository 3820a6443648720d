"""Quoting for the few SQL texts that cannot take bound parameters (file paths in table functions,
JSON structures, identifiers). Everything else is passed as a parameter."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import duckdb


def literal(value: str | Path) -> str:
    """A SQL string literal: 'it''s'."""
    return "'" + str(value).replace("'", "''") + "'"


def identifier(name: str) -> str:
    """A quoted SQL identifier, inner double quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


def insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: Iterable[Sequence[Any]]) -> None:
    """Insert `rows` (tuples in the table's column order) in one statement: each column is bound as a
    list and unnested (DuckDB's executemany runs one statement per row: 1 ms each)."""
    columns = list(zip(*rows, strict=True))
    if columns:
        con.execute(f"INSERT INTO {table} SELECT {', '.join('unnest(?)' for _ in columns)}", [list(c) for c in columns])


def without_progress_bar(con: duckdb.DuckDBPyConnection) -> None:
    """DuckDB draws its own progress bar on the terminal for a query over 2 s, in the middle of the
    CLI's output (which reports progress by stage itself): off. In a Jupyter kernel without
    ipywidgets DuckDB refuses to change the setting at all (and has no bar to draw there)."""
    with contextlib.suppress(duckdb.InvalidInputException):
        con.execute("SET enable_progress_bar = false")
