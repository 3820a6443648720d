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

from flashcast.sql import identifier, literal, without_progress_bar

EMAIL_PATTERN = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
# International prefix, an area code (bracketed or not), then 3-4 and 4 digits with optional
# separators: catches 555-123-4567, (555) 123-4567, +1 555.123.4567, +44 20 7946 0958, 5551234567,
# but not dates (2024-01-15) or short numbers.
PHONE_PATTERN = r"(\+\d{1,3}[\s.\-]?)?(\(\d{2,4}\)|\d{2,4})[\s.\-]?\d{3,4}[\s.\-]?\d{4}"
EMAIL_TOKEN, PHONE_TOKEN, REDACTED_TOKEN = "[redacted-email]", "[redacted-phone]", "[redacted]"
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
    where: str  # store.table.column or file path
    kind: str  # 'planted value', 'email-shaped text', 'phone-shaped text', ...
    count: int  # values (or lines) with the finding


@dataclass
class ScanReport:
    findings: list[Finding] = field(default_factory=list)
    columns_scanned: int = 0
    files_scanned: int = 0
    values_scanned: int = 0

    @property
    def clean(self) -> bool:
        return not self.findings


# Query parameters that name personal data; the guard redacts their values and the scan looks for
# any that are left.
PII_QUERY_KEYS = ("email", "e-mail", "mail", "phone", "tel", "mobile", "name", "first_?name", "last_?name",
                  "full_?name", "address", "street", "zip", "postcode", "postal_?code", "dob", "birth_?date")
QUERY_PII_PATTERN = r"[?&](" + "|".join(PII_QUERY_KEYS) + r")=([^&#\s]*)"
# A phone number written with separators (555-123-4567, (555) 123 4567, +44 20 7946 0958): bare
# digit runs are left alone, they are ids, timestamps and amounts far more often.
PHONE_SHAPED = r"(^|[^0-9a-z.])(\+[0-9]{1,3}[ .-]?)?\(?[0-9]{2,4}\)?[ .-][0-9]{3,4}[ .-][0-9]{4}([^0-9]|$)"
CLIENT_ID_SHAPED = r"(^|[^0-9.])[0-9]{6,10}\.[0-9]{9,10}([^0-9.]|$)"  # GA4's user_pseudo_id
# A UUID is never a phone number, but some run ids (UUID v7: about 0.15%, measured) have three
# all-digit groups in a row, which read as one: UUIDs are blanked before the phone check.
UUID_SHAPED = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
ID_COLUMN = r"^(user|client|pseudo|visitor|customer|session)[a-z_]*(_id|_key)$|^user_pseudo_id$"
HMAC_HEX = r"^[0-9a-f]{64}$"


class PiiScanner:
    """Collects every value of every column of the stores and every line of every output file into
    one table, then finds PII with set-based SQL: emails, phone numbers written with separators,
    GA4 client ids, personal URL query values, identifier columns that are not HMACs and, given the
    simulator's truth, the planted values themselves (tokens joined to them, phones by digits)."""

    def __init__(self, needles: PiiNeedles | None = None) -> None:
        self.con = duckdb.connect()
        without_progress_bar(self.con)
        self.con.execute("CREATE TABLE texts (place VARCHAR, id_column BOOLEAN, v VARCHAR)")
        self.needles = needles
        self.report = ScanReport()

    def add_duckdb(self, path: Path, *, label: str = "wh") -> None:
        """Every column of every table of a DuckDB file (attached read-only)."""
        self.con.execute(f"ATTACH {literal(path)} AS {label} (READ_ONLY)")
        try:
            self._add_catalog(label)
        finally:
            self.con.execute(f"DETACH {label}")

    def _add_catalog(self, catalog: str) -> None:
        columns = self.con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_catalog = ? "
            "ORDER BY table_name, ordinal_position", [catalog]).fetchall()
        for table, column, dtype in columns:
            self.report.columns_scanned += 1
            col = identifier(column)
            value = col if dtype == "VARCHAR" else f"to_json({col})::VARCHAR"
            is_id = bool(re.search(ID_COLUMN, column.lower()))
            self.con.execute(
                f"INSERT INTO texts SELECT DISTINCT ?, ?, {value} FROM {catalog}.main.{identifier(table)} "
                f"WHERE {col} IS NOT NULL", [f"{catalog}.{table}.{column}", is_id])

    def add_sql_store(self, url: str) -> None:
        """Every column of every table of an SQLAlchemy database (the ops store)."""
        import sqlalchemy as sa

        engine = sa.create_engine(url)
        try:
            inspector = sa.inspect(engine)
            with engine.connect() as conn:
                for table in inspector.get_table_names():
                    for col in inspector.get_columns(table):
                        self.report.columns_scanned += 1
                        query = f"SELECT {identifier(col['name'])} FROM {identifier(table)}"
                        values = [str(v) for v in conn.execute(sa.text(query)).scalars() if v is not None]
                        is_id = bool(re.search(ID_COLUMN, col["name"].lower()))
                        self._add_values(f"ops.{table}.{col['name']}", values, is_id)
        finally:
            engine.dispose()

    def add_folder(self, folder: Path) -> None:
        """Every file under `folder`: Parquet and DuckDB files by column, anything else line by line."""
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            self.report.files_scanned += 1
            if path.suffix == ".parquet":
                self.con.execute(f"CREATE OR REPLACE TEMP VIEW _file AS SELECT * FROM read_parquet({literal(path)})")
                names = [r[0] for r in self.con.execute("DESCRIBE _file").fetchall()]
                rows = " UNION ALL ".join(f"SELECT to_json({identifier(n)})::VARCHAR AS v FROM _file" for n in names)
                if rows:
                    self.con.execute(f"INSERT INTO texts SELECT DISTINCT ?, false, v FROM ({rows}) WHERE v IS NOT NULL",
                                     [str(path)])
            elif path.suffix == ".duckdb":
                self.add_duckdb(path, label="scanfile")
            elif path.suffix == ".png":
                self._add_values(str(path), _png_texts(path), False)
            else:
                text = path.read_bytes().decode("utf-8", errors="replace")
                self._add_values(str(path), text.splitlines(), False)

    def _add_values(self, place: str, values: list[str], is_id: bool) -> None:
        if values:
            import pyarrow as pa

            batch = pa.table({"v": pa.array(values, pa.string())})
            self.con.register("_batch", batch)
            self.con.execute("INSERT INTO texts SELECT ?, ?, v FROM _batch", [place, is_id])
            self.con.unregister("_batch")

    def findings(self) -> ScanReport:
        """Run every check over everything collected; where and what, never the value."""
        con = self.con
        self.report.values_scanned = int(con.execute("SELECT count(*) FROM texts").fetchall()[0][0])
        con.execute("""CREATE TEMP TABLE decoded AS SELECT place, id_column, v,
            lower(coalesce(try(url_decode(url_decode(replace(v, '+', ' ')))), v)) AS t FROM texts""")
        checks = {
            "email-shaped text": f"regexp_matches(t, {literal(EMAIL_PATTERN.lower())})",
            "phone-shaped text": (f"regexp_matches(regexp_replace(t, {literal(UUID_SHAPED)}, ' ', 'g'), "
                                  f"{literal(PHONE_SHAPED)})"),
            "client-id-shaped text": f"regexp_matches(t, {literal(CLIENT_ID_SHAPED)})",
            "personal URL query value": (
                f"len(list_filter(regexp_extract_all(t, {literal(QUERY_PII_PATTERN)}, 2), "
                "lambda x: x <> '' AND NOT starts_with(x, '[redacted'))) > 0"),
            "identifier that is not an HMAC": f"id_column AND NOT regexp_matches(v, {literal(HMAC_HEX)})",
        }
        union = " UNION ALL ".join(f"SELECT place, {literal(kind)} AS kind, count(*) AS n FROM decoded "
                                   f"WHERE {condition} GROUP BY place" for kind, condition in checks.items())
        rows = con.execute(f"SELECT place, kind, n FROM ({union}) ORDER BY place, kind").fetchall()
        if self.needles is not None:
            rows += self._planted()
        self.report.findings = [Finding(str(place), str(kind), int(n)) for place, kind, n in rows]
        return self.report

    def _planted(self) -> list[tuple[str, str, int]]:
        """Values of the truth found as tokens (emails, ids) or as phone digits (10, or 11 with a 1)."""
        assert self.needles is not None
        con = self.con
        con.execute("CREATE OR REPLACE TEMP TABLE _needles (needle VARCHAR)")
        words = sorted(self.needles.emails | {i.lower() for i in self.needles.identifiers})
        phones = sorted(self.needles.phones)
        if words or phones:
            import pyarrow as pa

            con.register("_n", pa.table({"needle": pa.array(words + phones, pa.string())}))
            con.execute("INSERT INTO _needles SELECT needle FROM _n")
            con.unregister("_n")
        return [(str(p), "planted value", int(n)) for p, n in con.execute(
            r"""WITH tokens AS (
                  SELECT place, v, unnest(regexp_extract_all(t, '[a-z0-9._%+@-]+')) AS token FROM decoded
                  UNION ALL
                  SELECT place, v, right(digits, 10) FROM (
                    -- a number as written stands apart from letters: the run of digits and separators
                    -- is taken with any letters and digits glued to it, and one with a letter is no
                    -- phone number (ten digits inside an HMAC's hex are no leak)
                    SELECT place, v, regexp_replace(run, '[^0-9]', '', 'g') AS digits FROM (
                      SELECT place, v, unnest(regexp_extract_all(
                        t, '[a-z0-9]*\+?[0-9][0-9 ().-]{8,}[0-9][a-z0-9]*')) AS run FROM decoded)
                    WHERE NOT regexp_matches(run, '[a-z]'))
                  WHERE length(digits) = 10 OR (length(digits) = 11 AND starts_with(digits, '1')))
                SELECT place, count(DISTINCT v) FROM tokens JOIN _needles ON token = needle
                GROUP BY place ORDER BY place""").fetchall()]

    def close(self) -> None:
        self.con.close()


def _png_texts(path: Path) -> list[str]:
    """A PNG's text: its text chunks (tEXt, zTXt, iTXt), keys and values. Its compressed pixels hold no
    text a pattern could find, only bytes that look like text by chance (an "email" now and then)."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()  # text chunks after the pixel data are read with it
        chunks = getattr(image, "text", {})
    return [f"{key}: {value}" for key, value in chunks.items()]


def scan_run(*, warehouse: Path | None, ops_url: str | None, folders: Iterable[Path],
             needles: PiiNeedles | None = None, lock_timeout_s: float = 600.0) -> ScanReport:
    """Scan a run's stores and output folders (anything missing is skipped). The warehouse is read
    under its shared lock, so a run writing to it is waited for."""
    from flashcast.store import file_lock

    scanner = PiiScanner(needles)
    try:
        if warehouse is not None and warehouse.exists():
            with file_lock(warehouse.with_name(warehouse.name + ".lock"), timeout_s=lock_timeout_s, shared=True):
                scanner.add_duckdb(warehouse)
        if ops_url:
            scanner.add_sql_store(ops_url)
        for folder in folders:
            if folder.is_dir():
                scanner.add_folder(folder)
        return scanner.findings()
    finally:
        scanner.close()
