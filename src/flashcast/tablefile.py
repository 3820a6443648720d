"""A user's CSV or Parquet file opened in DuckDB, the one way `flashcast forecast FILE` and
`flashcast allocate FILE` read them: every column as the file has it (CSV as text, so no sniffed
type can refuse a row before it is named), in view `source` with its 1-based row number `_row`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from flashcast.errors import FlashcastError
from flashcast.sql import identifier, literal

# A number written with a decimal comma: 12 or -3,75 (no thousands separators).
_DECIMAL_COMMA = r"-?[0-9]+(,[0-9]+)?"
# A number formatted for reading: a currency sign, thousands separators, a percent sign, spaces.
_FORMATTED_NUMBER = r"[-(]?\s*[$€£¥]?\s*[0-9][0-9,. ']*\s*[%)]?"


@dataclass(frozen=True)
class TableFile:
    path: Path
    columns: tuple[str, ...]
    rows: int
    delimiter: str | None  # CSV only
    error: type[FlashcastError]  # what its problems are raised as

    def require(self, names: Iterable[str | None]) -> None:
        """Raise `error` naming the first of `names` (None: not asked for) the file lacks, listing its columns."""
        missing = [name for name in names if name is not None and name not in self.columns]
        if missing:
            raise self.error(f"{self.path}: no column {missing[0]!r} (columns: {', '.join(self.columns)})")

    def number_sql(self, con: duckdb.DuckDBPyConnection, column: str) -> str:
        """SQL for `column` as DOUBLE, NULL where it is not a number. In a ';'-separated CSV (how
        spreadsheets write CSV where the comma is the decimal mark) a column whose every value reads
        as a decimal-comma number is read that way; a column mixing 1,5 and 1.5 is not guessed at."""
        c = identifier(column)
        if self.delimiter == ";" and reads_decimal_commas(con, "source", column):
            return f"try_cast(replace(trim({c}::VARCHAR), ',', '.') AS DOUBLE)"
        return f"try_cast({c} AS DOUBLE)"

    def not_a_number(self, con: duckdb.DuckDBPyConnection, column: str, row: int) -> str:
        """"is not a number", saying how to write it when the cell is a number formatted for reading
        ($1,234.50, 12%): the file is not guessed at, and the message never quotes the value."""
        formatted = con.execute(f"SELECT {formatted_number_sql(identifier(column))} FROM source WHERE _row = ?",
                                [row]).fetchall()
        return f"is not a number{PLAIN_NUMBERS if formatted and formatted[0][0] else ''}"


PLAIN_NUMBERS = " (write plain numbers: no currency sign, thousands separator or percent sign)"


def formatted_number_sql(column: str) -> str:
    """SQL: is the text of `column` a number formatted for reading ($1,234.50, 12%)?"""
    return f"regexp_full_match(trim({column}::VARCHAR), {literal(_FORMATTED_NUMBER)})"


def reads_decimal_commas(con: duckdb.DuckDBPyConnection, relation: str, column: str) -> bool:
    """Whether every non-empty value of `column` in `relation` reads as a decimal-comma number (and
    one has a comma): how spreadsheets write numbers in ';'-separated CSV where the comma is the
    decimal mark. A column mixing 1,5 and 1.5 is not guessed at."""
    text = f"trim({identifier(column)}::VARCHAR)"
    return bool(con.execute(
        f"SELECT bool_or(contains({text}, ',')) AND bool_and(regexp_full_match({text}, '{_DECIMAL_COMMA}')) "
        f"FROM {relation} WHERE {text} <> ''").fetchall()[0][0])


def is_parquet(path: Path) -> bool:
    """A table file is Parquet by its suffix (anything else is read as CSV)."""
    return path.suffix.lower() in (".parquet", ".pq")


# A workbook's first bytes: a zip (xlsx, xlsm, ods, numbers) or an OLE2 compound file (xls).
_WORKBOOK_MAGIC = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")
_WORKBOOK_SUFFIXES = (".xlsx", ".xlsm", ".xlsb", ".xls", ".ods", ".numbers")


def workbook_problem(path: Path) -> str | None:
    """Why `path` cannot be read as a table when it is a spreadsheet workbook (by its name or its
    first bytes): read as CSV, a workbook's zipped XML was "no rows" or columns of noise."""
    with path.open("rb") as handle:
        head = handle.read(8)
    if path.suffix.lower() in _WORKBOOK_SUFFIXES or (not is_parquet(path) and head.startswith(_WORKBOOK_MAGIC)):
        return ("a spreadsheet workbook, not a CSV or Parquet file; save the sheet as CSV "
                "(in Excel: File > Save As > CSV UTF-8)")
    return None


def open_table_file(con: duckdb.DuckDBPyConnection, path: Path, error: type[FlashcastError]) -> TableFile:
    """Create view `source` over `path` in `con`. Raises `error`, naming the file, when it is missing,
    a spreadsheet workbook, unreadable or holds no rows."""
    if not path.is_file():
        raise error(f"{path}: no such file")
    if problem := workbook_problem(path):
        raise error(f"{path}: {problem}")
    parquet = is_parquet(path)
    try:
        raw = con.read_parquet(str(path)) if parquet else con.read_csv(str(path), all_varchar=True)
        raw.create_view("raw_file")
        # Insertion order is preserved, so row_number() is the row's position in the file.
        con.execute("CREATE TEMP VIEW source AS SELECT *, row_number() OVER () AS _row FROM raw_file")
        columns = tuple(c[0] for c in con.execute("DESCRIBE source").fetchall() if c[0] != "_row")
        rows = int(con.execute("SELECT count(*) FROM source").fetchall()[0][0])
        if not rows:
            raise error(f"{path}: no rows (the file is empty or holds only its header)")
        delimiter = None if parquet else str(con.execute(
            f"SELECT Delimiter FROM sniff_csv({literal(path)})").fetchall()[0][0])
    except duckdb.Error as exc:
        raise error(f"{path}: cannot be read as {'Parquet' if parquet else 'CSV'} ({type(exc).__name__})") from exc
    return TableFile(path, columns, rows, delimiter, error)
