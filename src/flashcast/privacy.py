"""PII patterns (shared by the SQL guard, Python-side redaction, the compliance checker and LLM
containment) and the PII scanner.

The scanner is the test of the guard: it reads every column of every table in every store through
SQL and every file in an output folder (after URL-decoding), looking for the planted values and for
anything shaped like an email address. It reports where, never what.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import sqlalchemy as sa

from flashcast.sql import identifier, literal

EMAIL_PATTERN = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
# International prefix, an area code (bracketed or not), then 3-4 and 4 digits with optional
# separators: catches 555-123-4567, (555) 123-4567, +1 555.123.4567, +44 20 7946 0958, 5551234567,
# but not dates (2024-01-15) or short numbers.
PHONE_PATTERN = r"(\+\d{1,3}[\s.\-]?)?(\(\d{2,4}\)|\d{2,4})[\s.\-]?\d{3,4}[\s.\-]?\d{4}"
EMAIL_TOKEN, PHONE_TOKEN = "[redacted-email]", "[redacted-phone]"
EMAIL_RE = re.compile(EMAIL_PATTERN)
PHONE_RE = re.compile(PHONE_PATTERN)


def redact_message(text: str) -> str:
    """Redact emails and phone numbers from free text (error messages, prompts) after URL-decoding."""
    decoded = _decode(text)
    return PHONE_RE.sub(PHONE_TOKEN, EMAIL_RE.sub(EMAIL_TOKEN, decoded))


def _decode(text: str) -> str:
    return urllib.parse.unquote_plus(urllib.parse.unquote_plus(text))


@dataclass(frozen=True)
class PiiNeedles:
    """Raw values known to be personal (e.g. the simulator's planted PII), lower-cased."""

    emails: frozenset[str] = frozenset()
    phones: frozenset[str] = frozenset()  # 10-digit national numbers
    identifiers: frozenset[str] = frozenset()  # raw user_pseudo_id / user_id values

    @classmethod
    def from_truth(cls, truth: dict[str, object]) -> PiiNeedles:
        raw = truth["pii_needles"]
        assert isinstance(raw, dict)
        return cls(
            emails=frozenset(e.lower() for e in raw["emails"]),
            phones=frozenset(raw["phones"]),
            identifiers=frozenset(raw["user_pseudo_ids"]),
        )

    def strings(self) -> list[str]:
        """Every form to look for: emails, ids and the usual ways a phone number is written."""
        forms: set[str] = set(self.emails) | set(self.identifiers)
        for p in self.phones:
            a, b, c = p[:3], p[3:6], p[6:]
            forms |= {p, f"{a}-{b}-{c}", f"{a}.{b}.{c}", f"({a}) {b}-{c}", f"{a} {b} {c}"}
        return sorted(forms)


@dataclass(frozen=True)
class Finding:
    where: str  # store/table.column or file path
    kind: str  # 'planted value' or 'email-shaped text'
    count: int


@dataclass
class ScanReport:
    findings: list[Finding] = field(default_factory=list)
    columns_scanned: int = 0
    files_scanned: int = 0

    @property
    def clean(self) -> bool:
        return not self.findings


def scan_duckdb(con: duckdb.DuckDBPyConnection, needles: PiiNeedles, *, catalog: str, report: ScanReport) -> None:
    """Scan every column of every table in `catalog` (an attached DuckDB database)."""
    con.execute("CREATE OR REPLACE TEMP TABLE _needles (needle VARCHAR)")
    strings = needles.strings()
    if strings:
        con.executemany("INSERT INTO _needles VALUES (?)", [(s,) for s in strings])
    tables = con.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_catalog = ? "
        "ORDER BY table_name, ordinal_position",
        [catalog],
    ).fetchall()
    for table, column in tables:
        report.columns_scanned += 1
        value = f"lower(to_json({identifier(column)})::VARCHAR)"
        decoded = f"coalesce(try(url_decode(url_decode(replace({value}, '+', ' ')))), {value})"
        planted, shaped = con.execute(
            f"""WITH v AS (SELECT DISTINCT {decoded} AS v FROM {catalog}.main.{identifier(table)})
            SELECT (SELECT count(*) FROM v JOIN _needles n ON contains(v.v, n.needle)),
                   (SELECT count(*) FROM v WHERE regexp_matches(v.v, '{EMAIL_PATTERN}'))"""
        ).fetchall()[0]
        _add(report, f"{catalog}.{table}.{column}", planted, shaped)


def scan_sql_store(url: str, needles: PiiNeedles, report: ScanReport) -> None:
    """Scan every column of every table of an SQLAlchemy database (the ops store)."""
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        with engine.connect() as conn:
            for table in inspector.get_table_names():
                for col in inspector.get_columns(table):
                    report.columns_scanned += 1
                    query = f"SELECT {identifier(col['name'])} FROM {identifier(table)}"
                    values = conn.execute(sa.text(query)).scalars()
                    planted, shaped = _scan_texts((str(v) for v in values if v is not None), needles)
                    _add(report, f"ops.{table}.{col['name']}", planted, shaped)
    finally:
        engine.dispose()


def scan_files(folder: Path, needles: PiiNeedles, report: ScanReport) -> None:
    """Scan every file under `folder`; Parquet and DuckDB files through SQL, the rest as text."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        report.files_scanned += 1
        if path.suffix == ".parquet":
            con = duckdb.connect()
            sub = ScanReport()
            con.execute("ATTACH ':memory:' AS scanmem")
            con.execute(f"CREATE TABLE scanmem.main.t AS SELECT * FROM read_parquet({literal(path)})")
            scan_duckdb(con, needles, catalog="scanmem", report=sub)
            con.close()
            _add(report, str(path), sum(f.count for f in sub.findings if f.kind == "planted value"),
                 sum(f.count for f in sub.findings if f.kind != "planted value"))
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        planted, shaped = _scan_texts([text], needles)
        _add(report, str(path), planted, shaped)


def _scan_texts(texts: Iterable[str], needles: PiiNeedles) -> tuple[int, int]:
    strings = needles.strings()
    planted = shaped = 0
    for text in texts:
        decoded = _decode(text).lower()
        planted += sum(1 for s in strings if s in decoded)
        shaped += len(EMAIL_RE.findall(decoded))
    return planted, shaped


def _add(report: ScanReport, where: str, planted: int, shaped: int) -> None:
    if planted:
        report.findings.append(Finding(where, "planted value", int(planted)))
    if shaped:
        report.findings.append(Finding(where, "email-shaped text", int(shaped)))
