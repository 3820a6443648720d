"""The guard: keyed hashing, redaction, consent, quarantine, dedup and reconciliation."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from conftest import REAL_GA4, TEST_KEY, ga4_row, write_lines
from flashcast.config import PrivacyPolicy
from flashcast.errors import ReconciliationError
from flashcast.keys import PiiKey
from flashcast.records import DayOutcome, GuardReport, RunContext
from flashcast.simulate import SimulationResult
from flashcast.stages import guard as guard_module
from flashcast.stages.guard import guard_export, install_privacy_functions
from flashcast.stages.ingest import stage_export

KEY = PiiKey(TEST_KEY.encode())
RUN = RunContext("01900000-0000-7000-8000-000000000000", datetime(2026, 3, 31, tzinfo=UTC), KEY.key_id)


def _guard(con: duckdb.DuckDBPyConnection, source: Path, policy: PrivacyPolicy | None = None) -> GuardReport:
    policy = policy or PrivacyPolicy()
    install_privacy_functions(con, KEY, policy)
    return guard_export(con, stage_export(con, source), policy=policy, run=RUN)


@pytest.mark.parametrize("message", ["abc", "123.456", "x" * 200, "ünïcödé@example.com"])
def test_sql_hmac_matches_python_hmac(con: duckdb.DuckDBPyConnection, message: str) -> None:
    install_privacy_functions(con, KEY, PrivacyPolicy())
    expected = hmac.new(TEST_KEY.encode(), message.encode(), hashlib.sha256).hexdigest()
    assert con.execute("SELECT hmac_hex(?)", [message]).fetchall()[0][0] == expected


def test_long_keys_are_hashed_first_as_rfc2104_says(con: duckdb.DuckDBPyConnection) -> None:
    long_key = PiiKey(b"k" * 100)
    install_privacy_functions(con, long_key, PrivacyPolicy())
    expected = hmac.new(b"k" * 100, b"abc", hashlib.sha256).hexdigest()
    assert con.execute("SELECT hmac_hex('abc')").fetchall()[0][0] == expected


@pytest.mark.parametrize(
    ("raw", "leak"),
    [
        ("https://s.example.com/?email=jane.doe1@example.com", "jane.doe1@example.com"),
        ("https://s.example.com/?email=jane.doe1%40example.com", "jane.doe1"),
        ("https://s.example.com/?email=jane.doe1%2540example.com", "jane.doe1"),  # double-encoded
        ("https://s.example.com/?Contact=JANE.DOE1@EXAMPLE.COM", "JANE.DOE1"),
        ("https://s.example.com/?phone=%2B1%20(555)%20123-4567", "123-4567"),
        ("https://s.example.com/?tel=555-123-4567", "555-123-4567"),
        ("https://s.example.com/?m=555.123.4567", "555.123.4567"),
        ("https://s.example.com/?m=5551234567", "5551234567"),
        ("https://s.example.com/?m=%2B44+20+7946+0958", "7946"),
    ],
)
def test_redaction_catches_each_form(con: duckdb.DuckDBPyConnection, raw: str, leak: str) -> None:
    install_privacy_functions(con, KEY, PrivacyPolicy())
    redacted = con.execute("SELECT redact_text(?)", [raw]).fetchall()[0][0]
    assert leak not in redacted
    assert "[redacted-" in redacted


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://s.example.com/?first_name=Jane&utm_source=x", "https://s.example.com/?first_name=[redacted]&utm_source=x"),
        ("https://s.example.com/p?Address=1%20Main%20St#top", "https://s.example.com/p?Address=[redacted]#top"),
        ("https://s.example.com/?zip=10001&name=", "https://s.example.com/?zip=[redacted]&name="),
        ("https://s.example.com/?email=jane@example.com", "https://s.example.com/?email=[redacted-email]"),
    ],
)
def test_values_of_personal_query_keys_are_redacted(con: duckdb.DuckDBPyConnection, raw: str, expected: str) -> None:
    install_privacy_functions(con, KEY, PrivacyPolicy())
    assert con.execute("SELECT redact_text(?)", [raw]).fetchall()[0][0] == expected


def test_redaction_keeps_ordinary_text(con: duckdb.DuckDBPyConnection) -> None:
    install_privacy_functions(con, KEY, PrivacyPolicy())
    text = "https://s.example.com/sale?utm_source=google&date=2024-01-15&sku=12345678"
    assert con.execute("SELECT redact_text(?)", [text]).fetchall()[0][0] == text


@pytest.mark.parametrize("null_means", ["granted", "denied"])
def test_consent_rule_for_null(small_sim: SimulationResult, small_truth: dict, null_means: str) -> None:
    con = duckdb.connect()
    report = _guard(con, small_sim.export_dirs["parquet"], PrivacyPolicy(consent_null_means=null_means))
    values = dict(con.execute("SELECT consent_value, count(*) FROM consent_drops GROUP BY 1").fetchall())
    accepted_consent = {r[0] for r in con.execute("SELECT DISTINCT consent_value FROM guarded_events").fetchall()}
    if null_means == "granted":
        assert set(values) == {"No"}
        assert accepted_consent == {"Yes", None}
    else:
        assert set(values) == {"No", "null"}
        assert accepted_consent == {"Yes"}
    assert report.totals["dropped_consent"] == sum(values.values())
    assert all(0.0 <= d.dropped_share <= 1.0 for d in report.days)
    assert any(d.dropped_share > 0 for d in report.days)


def test_outcomes_match_what_the_simulator_planted(small_sim: SimulationResult, small_truth: dict) -> None:
    con = duckdb.connect()
    report = _guard(con, small_sim.export_dirs["ndjson"])
    planted = small_truth["planted"]
    totals = report.totals
    assert totals["input_rows"] == small_truth["rows"]["ndjson"]
    assert totals["quarantined"] == planted["malformed_by_format"]["ndjson"]
    kinds = dict(con.execute("SELECT kind, count(*) FROM duplicates GROUP BY 1").fetchall())
    # NULL consent counts as granted by default, so duplicates of 'Yes' and NULL rows are duplicates.
    assert kinds["exact"] == planted["exact_duplicates"].get("Yes", 0) + planted["exact_duplicates"].get("null", 0)
    assert kinds["transaction"] == (planted["transaction_duplicates"].get("Yes", 0)
                                    + planted["transaction_duplicates"].get("null", 0))
    assert totals["input_rows"] == sum(totals[k] for k in ("accepted", "dropped_consent", "quarantined", "duplicate"))
    # Each transaction (by its key) appears once among accepted purchases.
    assert con.execute("SELECT count(*) - count(DISTINCT transaction_key) FROM guarded_events "
                       "WHERE event_name = 'purchase'").fetchall()[0][0] == 0


def test_quarantine_is_stored_hashed_with_a_reason(tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    lines = [json.dumps(ga4_row(event_timestamp="1772370000000", user_id="jane@example.com")),
             json.dumps(ga4_row(user_pseudo_id=None))]  # consented but no identifier
    _guard(con, write_lines(tmp_path / "events_20260301.json", lines))
    rows = con.execute("SELECT source_line, field, reason, row_hmac, user_key FROM quarantine ORDER BY 1").fetchall()
    assert [r[0] for r in rows] == [1, 2]
    assert rows[0][1] == "event_timestamp"
    assert rows[0][2].startswith("events_20260301.json line 1: event_timestamp:")
    assert rows[0][4] == hmac.new(TEST_KEY.encode(), b"123.456", hashlib.sha256).hexdigest()
    assert rows[1][2].endswith("user_pseudo_id: missing on a row with consent")
    columns = [d[0] for d in con.execute("SELECT * FROM quarantine").description]
    assert "raw_line" not in columns and "user_pseudo_id" not in columns
    dump = json.dumps(con.execute("SELECT * FROM quarantine").fetchall(), default=str)
    assert "jane@example.com" not in dump and "123.456" not in dump


def test_guarded_events_hold_no_raw_identifiers(con: duckdb.DuckDBPyConnection) -> None:
    _guard(con, REAL_GA4)
    columns = {d[0] for d in con.execute("SELECT * FROM guarded_events LIMIT 0").description}
    assert not columns & {"user_pseudo_id", "user_id", "ga_session_id", "raw_line"}
    raw = {json.loads(line)["user_pseudo_id"] for line in REAL_GA4.read_text().splitlines()}
    keys = {r[0] for r in con.execute("SELECT user_key FROM guarded_events").fetchall()}
    assert keys == {hmac.new(TEST_KEY.encode(), u.encode(), hashlib.sha256).hexdigest() for u in raw}
    stamp = con.execute("SELECT DISTINCT lineage_id, key_id FROM guarded_events").fetchall()
    assert stamp == [(RUN.lineage_id, KEY.key_id)]


def test_a_session_key_is_the_hmac_of_its_user_and_session(tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    """A session is its user's id and its GA4 session id (or, where GA4 gave none, the day), keyed:
    the same session id under two users is two sessions; rows without one are a session per day."""
    def row(user: str, session: str | None, date: str, i: int) -> str:
        params = [] if session is None else [{"key": "ga_session_id", "value": {
            "string_value": None, "int_value": session, "float_value": None, "double_value": None}}]
        return json.dumps(ga4_row(user_pseudo_id=user, event_params=params, event_date=date,
                                  event_timestamp=str(1772370000000000 + i * 1_000_000)))

    specs = [("1.1", "77", "20260301"), ("1.1", "77", "20260301"), ("2.2", "77", "20260301"),
             ("1.1", "78", "20260301"), ("1.1", None, "20260301"), ("1.1", None, "20260302")]
    _guard(con, write_lines(tmp_path / "events_20260301.json",
                            [row(*spec, i) for i, spec in enumerate(specs)]))
    keys = dict(con.execute("SELECT source_line, session_key FROM guarded_events").fetchall())
    assert len(keys) == len(specs)
    for line, (user, session, day) in enumerate(specs, start=1):
        text = f"{user}:{session}" if session else f"{user}:day:{day[:4]}-{day[4:6]}-{day[6:]}"
        assert keys[line] == hmac.new(TEST_KEY.encode(), text.encode(), hashlib.sha256).hexdigest()
    assert len(set(keys.values())) == 5  # rows 1 and 2 are one session


def test_an_exact_copy_is_a_duplicate_whatever_the_order_of_its_params(tmp_path: Path,
                                                                        con: duckdb.DuckDBPyConnection) -> None:
    """Two rows differing only in the order of their event params are one event; a row whose param
    value differs is another."""
    row = ga4_row()
    reordered = ga4_row(event_params=list(reversed(row["event_params"])))
    other = json.loads(json.dumps(row))
    other["event_params"][1]["value"]["string_value"] = "https://shop.example.com/cart"
    report = _guard(con, write_lines(tmp_path / "events_20260301.json",
                                     [json.dumps(row), json.dumps(reordered), json.dumps(other)]))
    assert (report.totals["accepted"], report.totals["duplicate"]) == (2, 1)
    assert con.execute("SELECT source_line, kind, kept_line FROM duplicates").fetchall() == [(2, "exact", 1)]
    kept = con.execute("SELECT source_line FROM guarded_events ORDER BY 1").fetchall()
    assert kept == [(1,), (3,)]


def test_page_urls_and_string_params_are_redacted_value_by_value(tmp_path: Path,
                                                                 con: duckdb.DuckDBPyConnection) -> None:
    """Page URLs are redacted once per distinct URL and joined back: every row's URL columns (page and
    referrer) and every string param still equal the per-value redaction, whichever rows share a URL or which param
    carries it (a second page_location, a referrer that is another row's page)."""
    def param(key: str, value: str) -> dict:
        return {"key": key, "value": {"string_value": value, "int_value": None, "float_value": None,
                                      "double_value": None}}

    with_email = "https://shop.example.com/thanks?email=jane%40example.com&step=2"
    with_phone = "https://shop.example.com/call?tel=+1 415 555 0100"
    plain = "https://shop.example.com/p/42"
    rows = [
        {"page_location": with_email, "extra": []},
        {"page_location": with_email, "extra": [param("page_referrer", plain)]},
        {"page_location": plain, "extra": [param("page_referrer", with_email)]},
        {"page_location": with_phone, "extra": [param("page_location", with_email), param("page_title", "Call")]},
    ]
    lines = []
    for i, spec in enumerate(rows):
        params = [{"key": "ga_session_id", "value": {"string_value": None, "int_value": str(1772370000 + i),
                                                     "float_value": None, "double_value": None}},
                  param("page_location", spec["page_location"]), *spec["extra"]]
        lines.append(json.dumps(ga4_row(event_params=params, event_timestamp=str(1772370000000000 + i))))
    _guard(con, write_lines(tmp_path / "events_20260301.json", lines))
    assert con.execute("SELECT count(*) FROM guarded_events").fetchall() == [(4,)]
    for line, spec in enumerate(rows, start=1):
        url, referrer, params = con.execute(
            "SELECT page_location, page_referrer, params FROM guarded_events WHERE source_line = ?", [line]
        ).fetchall()[0]
        assert url == con.execute("SELECT redact_text(?)", [spec["page_location"]]).fetchall()[0][0]
        raw_referrer = next((p["value"]["string_value"] for p in spec["extra"] if p["key"] == "page_referrer"), None)
        assert referrer == con.execute("SELECT redact_text(?)", [raw_referrer]).fetchall()[0][0]
        raw = [p for p in json.loads(lines[line - 1])["event_params"] if p["value"]["string_value"] is not None]
        assert [(p["key"], p["string_value"]) for p in params if p["string_value"] is not None] == [
            (p["key"], con.execute("SELECT redact_text(?)", [p["value"]["string_value"]]).fetchall()[0][0])
            for p in raw]
    dump = json.dumps(con.execute("SELECT * FROM guarded_events").fetchall(), default=str)
    assert "jane" not in dump and "555" not in dump


def test_every_kept_text_column_is_redacted_and_a_stream_id_stays_an_id(tmp_path: Path,
                                                                       con: duckdb.DuckDBPyConnection) -> None:
    """Device category, country, platform and stream id are kept as GA4 writes them, which an export
    does not promise: an email or phone number there was stored raw (found by filling every field of
    GA4's schema with planted values). A stream id of digits stays as it is (the phone pattern takes
    ten digits for a number)."""
    leak = "jane.doe@example.com +1 (415) 555-0100"
    lines = [json.dumps(ga4_row(device={"category": f"desktop {leak}"}, geo={"country": leak}, platform=leak,
                                stream_id=leak)),
             json.dumps(ga4_row(device={"category": "mobile"}, geo={"country": "United States"}, platform="WEB",
                                stream_id="2100450278", event_timestamp="1772370000000001"))]
    _guard(con, write_lines(tmp_path / "events_20260301.json", lines))
    planted, plain = con.execute("""SELECT device_category, country, platform, stream_id FROM guarded_events
        ORDER BY source_line""").fetchall()
    assert all("jane" not in v and "555" not in v and "[redacted-email]" in v for v in planted), planted
    assert plain == ("mobile", "United States", "WEB", "2100450278")


def test_purchases_without_a_real_transaction_id_are_not_duplicates_of_each_other(
        tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    """GA4 writes "(not set)" for a purchase without a transaction id, and broken tags send "" or
    "undefined": two such purchases are two sales, not one and a duplicate. A real id repeated is."""
    ids = ["(not set)", "(not set)", "", " ", "undefined", "Undefined", "null", "T1", "T1"]
    lines = [json.dumps(ga4_row(event_name="purchase", user_pseudo_id=f"{i}.1",
                                event_timestamp=str(1772370000000000 + i),
                                ecommerce={"purchase_revenue": 10.0, "transaction_id": tid}))
             for i, tid in enumerate(ids)]
    report = _guard(con, write_lines(tmp_path / "events_20260301.json", lines))
    assert report.totals["accepted"] == len(ids) - 1 and report.totals["duplicate"] == 1
    assert con.execute("SELECT count(transaction_key) FROM guarded_events").fetchall() == [(1,)]  # T1 only


def test_user_id_not_listed_as_identifier_is_dropped(tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    path = write_lines(tmp_path / "events_20260301.json", [json.dumps(ga4_row(user_id="cust-1"))])
    _guard(con, path, PrivacyPolicy(identifier_fields=("user_pseudo_id",)))
    assert con.execute("SELECT user_id_key FROM guarded_events").fetchall() == [(None,)]


def test_a_row_lost_between_tables_fails_the_run(
    small_sim: SimulationResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reconciliation is checked on every run: make one accepted row vanish and the guard refuses."""
    original = guard_module._day_outcomes

    def lossy(con: duckdb.DuckDBPyConnection, staged_table: str, *stored: str | None):  # type: ignore[no-untyped-def]
        con.execute("DELETE FROM guarded_events WHERE rowid = (SELECT min(rowid) FROM guarded_events)")
        return original(con, staged_table, *stored)

    monkeypatch.setattr(guard_module, "_day_outcomes", lossy)
    with pytest.raises(ReconciliationError, match="do not add up"):
        _guard(duckdb.connect(), small_sim.export_dirs["ndjson"])


def _usual_days(n: int = 70, rows: int = 1000) -> list[DayOutcome]:
    """`n` ordinary days from 2026-01-01: weekends a little quieter, 16% dropped for consent, a few
    rows quarantined."""
    days = []
    for i in range(n):
        day = date(2026, 1, 1) + timedelta(days=i)
        total = int(rows * (0.8 if day.weekday() >= 5 else 1.0)) + (i % 7) * 3
        consent, held = int(total * 0.16), 2 + i % 3
        days.append(DayOutcome(day.isoformat(), total, total - consent - held - 5, consent, held, 5))
    return days


def _day(days: list[DayOutcome], i: int, *, rows: int | None = None, consent: float | None = None,
         held: float | None = None) -> None:
    d = days[i]
    total = rows if rows is not None else d.input_rows
    dropped = int(total * (consent if consent is not None else d.dropped_share))
    quarantined = int(total * (held if held is not None else d.quarantined / d.input_rows))
    days[i] = DayOutcome(d.event_date, total, total - dropped - quarantined, dropped, quarantined, 0)


def _alerts(days: list[DayOutcome], read: set[str]) -> tuple[str, ...]:
    return guard_module.day_alerts(days, read, guard_module.outage_days(days))


def test_a_day_whose_counts_break_from_its_usual_is_named() -> None:
    days = _usual_days()
    _day(days, 60, rows=90)  # a Monday when the tag stopped firing: 90 rows against ~1,000
    _day(days, 61, consent=0.97)  # a banner that denied everyone
    _day(days, 62, held=0.4)  # an export change: 40% of the rows fail validation
    read = {d.event_date for d in days[50:]}
    alerts = _alerts(days, read)
    assert len(alerts) == 3, alerts
    assert alerts[0].startswith(f"{days[60].event_date}: 90 rows, 9% of a usual Monday (1,012): did tracking stop?")
    assert alerts[1] == (f"{days[61].event_date}: 97% of its rows dropped for consent, against 16% usually: check "
                         "the consent banner and the tags' consent mode")
    assert alerts[2].startswith(f"{days[62].event_date}: 40.0% of its rows quarantined, against 0.3% usually")
    # only the days read this run (a daily run does not repeat last month's alerts)
    assert _alerts(days, {d.event_date for d in days[63:]}) == ()
    # nothing out of the ordinary, nothing named: weekends, slow growth, the usual consent mix
    assert _alerts(_usual_days(), {d.event_date for d in _usual_days()}) == ()


def test_a_small_propertys_noisy_day_is_not_named_but_the_same_break_at_volume_is() -> None:
    # A shop with a handful of visitors a day: its consent share swings 0-60% (consent is a visitor's)
    small = []
    for i in range(60):
        day = (date(2026, 1, 1) + timedelta(days=i)).isoformat()
        total = 12 + i % 5
        dropped, held = (0, 2, 4, 7, 3)[i % 5], (0, 0, 1, 0, 0)[i % 5]
        small.append(DayOutcome(day, total, total - dropped - held, dropped, held, 0))
    small[55] = DayOutcome(small[55].event_date, 7, 2, 4, 1, 0)  # 57% dropped, 14% quarantined: 7 rows
    assert _alerts(small, {d.event_date for d in small[50:]}) == ()
    # a steady property: the same shares on a day of a thousand rows are named
    days = _usual_days()
    _day(days, 55, consent=0.57, held=0.14)
    alerts = _alerts(days, {d.event_date for d in days[50:]})
    assert [a.split(":")[0] for a in alerts] == [days[55].event_date] * 2, alerts


def test_the_newest_day_and_days_without_a_usual_are_not_judged() -> None:
    days = _usual_days()
    _day(days, len(days) - 1, rows=40)  # the newest: an intraday file still filling
    _day(days, 10, rows=50, consent=0.9)  # too early: not 4 same weekdays nor 14 days before it
    assert _alerts(days, {d.event_date for d in days}) == ()


def test_many_days_alike_are_named_a_few_then_counted() -> None:
    days = _usual_days()
    for i in range(40, 50):
        _day(days, i, consent=0.95)
    alerts = _alerts(days, {d.event_date for d in days})
    # the consent share's usual follows the broken days, so the later ones stop standing out
    assert 4 <= len(alerts) <= guard_module.MAX_ALERTS_EACH + 1
    assert alerts[-1].startswith("... and ") and alerts[-1].endswith("more day(s) like these: see reconciliation.csv")


def test_a_day_without_rows_or_without_a_file_is_an_outage_and_the_newest_day_is_not() -> None:
    days = _usual_days()
    empty = days[55]
    days[55] = DayOutcome(empty.event_date, 0, 0, 0, 0, 0)  # an empty file
    gone = days.pop(56)  # no file at all: no outcome that day
    _day(days, len(days) - 1, rows=10)  # the newest: may still be filling
    found = guard_module.outage_days(days)
    assert [(day.isoformat(), rows) for day, rows, _ in found] == [(empty.event_date, 0), (gone.event_date, 0)]
    alerts = _alerts(days, {days[50].event_date, days[60].event_date})  # the days between count
    assert [a.split(":")[0] for a in alerts] == [empty.event_date, gone.event_date]
    assert ": no rows (a usual " in alerts[1] and "no export file, or did tracking stop?" in alerts[1]
