"""Incremental runs: files already held are not read again, a run's rows replace what they supersede,
transactions are deduplicated across runs, and the history equals a run over everything at once."""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from conftest import ga4_row, write_lines
from flashcast.config import IngestConfig, Settings, StoreConfig
from flashcast.keys import PiiKey
from flashcast.lineage import LineageLog
from flashcast.pipeline import GOVERNED_DATA, RunResult, run_pipeline
from flashcast.records import RunContext, RunInputs
from flashcast.simulate import SimulationResult
from flashcast.store import OpsStore, file_lock, transform_connection

# Columns that differ between runs by design (who processed a row, when).
RUN_COLUMNS = ("lineage_id", "processed_at")


def _settings(home: Path, **ingest: object) -> Settings:
    return Settings(property_timezone="America/New_York", store=StoreConfig(home=home),
                    ingest=IngestConfig(**ingest))  # type: ignore[arg-type]


def _ingest(settings: Settings, export: Path, key: PiiKey, out: Path, spend: Path | None = None,
            rebuild: tuple[date, date] | None = None) -> RunResult:
    return run_pipeline(settings, RunInputs(export, spend, rebuild), out, key=key, through=GOVERNED_DATA, job="ingest")


def _rows(home: Path, table: str) -> list[tuple]:
    """A warehouse table's rows without the per-run columns, sorted (a multiset to compare)."""
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        columns = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall() if r[0] not in RUN_COLUMNS]
        listed = ", ".join(f'"{c}"' for c in columns)
        return sorted(con.execute(f"SELECT {listed} FROM {table}").fetchall(), key=repr)


def _count(home: Path, sql: str) -> int:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return int(con.execute(sql).fetchall()[0][0])


@pytest.fixture
def export(small_sim: SimulationResult, tmp_path: Path) -> Path:
    folder = tmp_path / "export"
    shutil.copytree(small_sim.export_dirs["ndjson"], folder)
    return folder


def test_a_new_day_reads_only_new_and_recent_files_and_the_history_equals_a_full_run(
    export: Path, small_sim: SimulationResult, tmp_path: Path, pii_key: PiiKey
) -> None:
    files = sorted(export.iterdir())
    held_back = tmp_path / "later"
    held_back.mkdir()
    for path in files[-2:]:  # the last two days arrive later
        shutil.move(path, held_back / path.name)
    daily = _settings(tmp_path / "daily")
    first = _ingest(daily, export, pii_key, tmp_path / "out1", small_sim.spend_file)
    assert set(first.ingest.reasons.values()) == {"new"} and len(first.ingest.reasons) == len(files) - 2
    for path in held_back.iterdir():
        shutil.move(path, export / path.name)
    second = _ingest(daily, export, pii_key, tmp_path / "out2", small_sim.spend_file)
    reasons = second.ingest.reasons
    assert {n for n, r in reasons.items() if r == "new"} == {p.name for p in files[-2:]}
    assert {n for n, r in reasons.items() if r == "look-back"} == {files[-3].name}  # 3 days back from the newest
    assert len(second.ingest.reused_files) == len(files) - 3
    assert second.ingest.input_rows < first.ingest.input_rows / 5  # proportional to the days read

    full = _settings(tmp_path / "full")
    at_once = _ingest(full, export, pii_key, tmp_path / "out3", small_sim.spend_file)
    assert second.guard.totals == at_once.guard.totals
    assert second.guard.days == at_once.guard.days
    for table in ("guarded_events", "quarantine", "consent_drops", "duplicates", "daily_kpis", "sessions"):
        assert _rows(tmp_path / "daily", table) == _rows(tmp_path / "full", table), table
    # The run's outputs cover the whole history, not just the files read.
    def without_run(path: Path) -> list[str]:
        return [line.split(",", 1)[1] for line in path.read_text().splitlines()]

    assert without_run(tmp_path / "out2" / "reconciliation.csv") == without_run(
        tmp_path / "out3" / "reconciliation.csv")


def test_reused_rows_are_read_in_place_from_a_snapshot_held_until_the_run_persists(
    export: Path, tmp_path: Path, pii_key: PiiKey
) -> None:
    from datetime import UTC, datetime

    from flashcast.engine import DuckEngine
    from flashcast.errors import StoreBusy
    from flashcast.history import OUTCOME_TABLES, WarehouseSnapshot, persist_run, row_count
    from flashcast.stages import guard, ingest

    settings = _settings(tmp_path / "home")
    _ingest(settings, export, pii_key, tmp_path / "out1")
    stored_accepted = _count(settings.store.home, "SELECT count(*) FROM guarded_events")
    con = transform_connection()
    context = RunContext("run-2", datetime.now(UTC), pii_key.key_id)
    lock = settings.store.warehouse_path.with_name("warehouse.duckdb.lock")
    with WarehouseSnapshot() as snapshot:
        staged = ingest.run(con, inputs=RunInputs(export), settings=settings, context=context,
                            engine=DuckEngine(con), snapshot=snapshot)
        guard.run(con, ingest=staged, settings=settings, context=context, key=pii_key, engine=DuckEngine(con))
        with pytest.raises(StoreBusy), file_lock(lock, timeout_s=0.2):  # a writer waits for the snapshot
            pass
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE temporary").fetchall()}
        assert {str(t) for t in OUTCOME_TABLES} <= views  # the stored rows are not copied into the run
        files_read = con.execute("SELECT count(DISTINCT source_file) FROM _run_guarded_events").fetchall()[0][0]
        assert files_read == len(staged.reasons) < len(list(export.iterdir()))  # the run holds only what it read
        assert con.execute("SELECT count(*) FROM guarded_events").fetchall()[0][0] == stored_accepted
        for table in OUTCOME_TABLES:  # the stage checks' count: the stored rows counted once, at the join
            assert row_count(con, table) == con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        persist_run(con, settings.store.warehouse_path, [*OUTCOME_TABLES], timeout_s=5, snapshot=snapshot)
        with file_lock(lock, timeout_s=0.2):  # released before the run took the exclusive lock
            pass
    con.close()
    assert _count(settings.store.home, "SELECT count(*) FROM guarded_events") == stored_accepted


def test_a_rerun_with_nothing_new_stores_the_history_once(export: Path, tmp_path: Path, pii_key: PiiKey) -> None:
    settings = _settings(tmp_path / "home")
    first = _ingest(settings, export, pii_key, tmp_path / "out")
    events = _count(tmp_path / "home", "SELECT count(*) FROM guarded_events")
    second = _ingest(settings, export, pii_key, tmp_path / "out")
    assert set(second.ingest.reasons.values()) == {"look-back"} and len(second.ingest.reasons) == 3
    assert _count(tmp_path / "home", "SELECT count(*) FROM guarded_events") == events
    assert _count(tmp_path / "home", "SELECT count(*) FROM files") == len(first.ingest.files)
    assert _count(tmp_path / "home", "SELECT count(*) FROM daily_kpis") == len(
        (tmp_path / "out" / "daily_kpis.csv").read_text().splitlines()) - 1
    assert second.guard.totals == first.guard.totals
    # Rows of files not read keep the run that read them; the files read carry the new run.
    assert _count(tmp_path / "home", f"SELECT count(DISTINCT lineage_id) FROM guarded_events "
                                      f"WHERE lineage_id IN ('{first.lineage_id}', '{second.lineage_id}')") == 2


def test_a_session_running_over_days_is_recomputed_whole_when_a_new_day_touches_it(
    tmp_path: Path, pii_key: PiiKey
) -> None:
    def view(day: date, ts: int, user: str, session: str) -> str:
        row = ga4_row(event_date=day.strftime("%Y%m%d"), event_timestamp=str(ts), user_pseudo_id=user)
        row["event_params"][0]["value"]["int_value"] = session
        return json.dumps(row)

    days = [date(2026, 3, 1) + timedelta(days=i) for i in range(3)]
    start = 1772409000000000  # 2026-03-01 23:50 UTC
    export = tmp_path / "export"
    for i, day in enumerate(days[:2]):  # one session open from day 1 to day 3, a short one each day
        ts = start + i * 86_400_000_000
        lines = [view(day, ts, "1.1", "500"), view(day, ts + 1, "2.2", f"{i}")]
        write_lines(export / f"events_{day:%Y%m%d}.json", lines)
    settings = _settings(tmp_path / "home", look_back_days=1)
    _ingest(settings, export, pii_key, tmp_path / "out")
    write_lines(export / f"events_{days[2]:%Y%m%d}.json", [view(days[2], start + 2 * 86_400_000_000, "1.1", "500")])
    second = _ingest(settings, export, pii_key, tmp_path / "out")
    assert second.ingest.reasons == {f"events_{days[2]:%Y%m%d}.json": "new"}
    _ingest(_settings(tmp_path / "full"), export, pii_key, tmp_path / "out_full")
    assert _rows(tmp_path / "home", "sessions") == _rows(tmp_path / "full", "sessions")
    assert _count(tmp_path / "home", "SELECT count(*) FROM sessions") == 3  # the long one once, two short
    assert _count(tmp_path / "home", "SELECT max(page_views) FROM sessions") == 3
    assert _count(tmp_path / "home", "SELECT min(event_date) = DATE '2026-03-01' FROM sessions WHERE page_views = 3")


def test_another_channel_mapping_reattributes_every_stored_session(
    export: Path, tmp_path: Path, pii_key: PiiKey
) -> None:
    from flashcast.config import ChannelMapping
    from flashcast.stages.kpis import mapping_digest

    _ingest(_settings(tmp_path / "home"), export, pii_key, tmp_path / "out")
    first_touch = ChannelMapping(attribution="first_touch")
    changed = _settings(tmp_path / "home").model_copy(update={"channels": first_touch})
    second = _ingest(changed, export, pii_key, tmp_path / "out")
    assert len(second.ingest.reused_files) > 0
    with duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True) as con:
        digests = con.execute("SELECT DISTINCT mapping_digest FROM sessions").fetchall()
    assert digests == [(mapping_digest(first_touch),)]
    full = _settings(tmp_path / "full").model_copy(update={"channels": first_touch})
    _ingest(full, export, pii_key, tmp_path / "out_full")
    assert _rows(tmp_path / "home", "sessions") == _rows(tmp_path / "full", "sessions")
    assert _rows(tmp_path / "home", "daily_kpis") == _rows(tmp_path / "full", "daily_kpis")


def test_a_changed_file_is_read_again_and_replaces_its_rows(export: Path, tmp_path: Path, pii_key: PiiKey) -> None:
    settings = _settings(tmp_path / "home", look_back_days=1)
    first = _ingest(settings, export, pii_key, tmp_path / "out")
    old_file = sorted(export.iterdir())[5]
    lines = old_file.read_text().splitlines(keepends=True)
    old_file.write_text("".join(lines[:-10]))  # GA4 rewrote the day: ten rows fewer
    second = _ingest(settings, export, pii_key, tmp_path / "out")
    assert second.ingest.reasons[old_file.name] == "changed"
    assert second.guard.totals["input_rows"] == first.guard.totals["input_rows"] - 10
    home = tmp_path / "home"
    stored = sum(_count(home, f"SELECT count(*) FROM {t} WHERE source_file = '{old_file.name}'")
                 for t in ("guarded_events", "quarantine", "consent_drops", "duplicates"))
    assert stored == len(lines) - 10
    assert _count(home, f"SELECT input_rows FROM files WHERE source_file = '{old_file.name}'") == len(lines) - 10


def test_a_transaction_stored_by_an_earlier_run_is_a_duplicate(tmp_path: Path, pii_key: PiiKey) -> None:
    def purchase(day: date, ts: int, user: str) -> str:
        return json.dumps(ga4_row(
            event_date=day.strftime("%Y%m%d"), event_timestamp=str(ts), event_name="purchase", user_pseudo_id=user,
            ecommerce={"purchase_revenue": "40.0", "transaction_id": "T-77"}))

    day1, day2 = date(2026, 3, 1), date(2026, 3, 2)
    export = tmp_path / "export"
    write_lines(export / "events_20260301.json", [purchase(day1, 1772370000000000, "1.1")])
    settings = _settings(tmp_path / "home", look_back_days=1)
    _ingest(settings, export, pii_key, tmp_path / "out")
    write_lines(export / "events_20260302.json", [purchase(day2, 1772456400000000, "2.2")])  # re-sent a day later
    second = _ingest(settings, export, pii_key, tmp_path / "out")
    assert second.ingest.reasons == {"events_20260302.json": "new"}
    assert second.guard.totals == {"input_rows": 2, "accepted": 1, "dropped_consent": 0, "quarantined": 0,
                                   "duplicate": 1}
    with duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT source_file, kind, kept_file FROM duplicates").fetchall() == [
            ("events_20260302.json", "transaction", "events_20260301.json")]
        # The stored key is an HMAC, never the transaction id itself.
        keys = [r[0] for r in con.execute("SELECT transaction_key FROM guarded_events").fetchall()]
    assert len(keys) == 1 and keys[0] != "T-77" and len(keys[0]) == 64


def test_rebuild_reads_chosen_days_again_and_full_mode_reads_everything(
    export: Path, tmp_path: Path, pii_key: PiiKey
) -> None:
    settings = _settings(tmp_path / "home", look_back_days=0)
    first = _ingest(settings, export, pii_key, tmp_path / "out")
    days = sorted(f.file_date for f in first.ingest.files if f.file_date)
    rebuilt = _ingest(settings, export, pii_key, tmp_path / "out", rebuild=(days[3], days[4]))
    chosen = {f.name for f in first.ingest.files if f.file_date in (days[3], days[4])}
    assert {n for n, r in rebuilt.ingest.reasons.items() if r in ("rebuild", "same day")} == chosen
    assert rebuilt.guard.totals == first.guard.totals
    assert not [w for w in rebuilt.ingest.warnings if w.startswith("--rebuild")]
    # Days the export does not have: said, not silently a run like any other.
    beyond = days[-1] + timedelta(days=30)
    missed = _ingest(settings, export, pii_key, tmp_path / "out", rebuild=(beyond, beyond))
    assert "rebuild" not in missed.ingest.reasons.values()
    assert [w for w in missed.ingest.warnings if w.startswith("--rebuild")] == [
        f"--rebuild {beyond}:{beyond}: no export file is dated in that range (the export's files run from "
        f"{days[0]} to {days[-1]}); nothing was read again"]
    everything = _ingest(_settings(tmp_path / "home", incremental=False), export, pii_key, tmp_path / "out")
    assert set(everything.ingest.reasons.values()) == {"every run"}
    assert everything.guard.totals == first.guard.totals


def test_retention_prunes_old_rows_and_the_log_records_it(export: Path, tmp_path: Path, pii_key: PiiKey) -> None:
    settings = _settings(tmp_path / "home").model_copy(update={"store": StoreConfig(home=tmp_path / "home",
                                                                                    retention_days=10)})
    result = _ingest(settings, export, pii_key, tmp_path / "out")
    home = tmp_path / "home"
    newest = result.kpis.last_day
    for table in ("guarded_events", "consent_drops", "sessions"):
        oldest = _count(home, f"SELECT date_diff('day', min(event_date), DATE '{newest}') FROM {table}")
        assert oldest <= 10, table
    ops = OpsStore(settings.store.ops_database_url)
    entries = [e for e in LineageLog(ops).entries(result.lineage_id) if e["kind"] == "warehouse_pruned"]
    ops.dispose()
    assert entries and entries[0]["body"]["keep_days"] == 10 and entries[0]["body"]["rows"]["guarded_events"] > 0
    # The next run does not bring the pruned rows back from unchanged files, and every file's rows
    # still add up to its outcomes.
    _ingest(settings, export, pii_key, tmp_path / "out")
    for line in (tmp_path / "out" / "files.csv").read_text().splitlines()[1:]:
        counts = [int(v) for v in line.split(",")[4:9]]
        assert counts[0] == sum(counts[1:]), line
    cutoff = newest - timedelta(days=10)
    assert _count(home, f"SELECT count(*) FROM guarded_events WHERE event_date < DATE '{cutoff}'") == 0


def test_a_prune_cut_off_before_its_lineage_entry_is_logged_by_the_next_prune_or_run(
        export: Path, tmp_path: Path, pii_key: PiiKey, monkeypatch: pytest.MonkeyPatch) -> None:
    """The warehouse and the lineage log are two databases: a process dying between the prune's
    commit and its log entry (kill -9, simulated here by an append that never returns) must not leave
    a prune the log never heard of."""
    from flashcast.history import prune

    settings = _settings(tmp_path / "home")
    _ingest(settings, export, pii_key, tmp_path / "out")
    ops = OpsStore(settings.store.ops_database_url)
    log = LineageLog(ops)
    real_append = LineageLog.append

    def killed(self: LineageLog, kind: str, lineage_id: str, body: dict) -> object:
        if kind == "warehouse_pruned":
            raise SystemExit(137)
        return real_append(self, kind, lineage_id, body)

    monkeypatch.setattr(LineageLog, "append", killed)
    con = transform_connection()
    with pytest.raises(SystemExit):
        prune(con, settings.store.warehouse_path, keep_days=10, timeout_s=5, log=log, lineage_id="prune-1")
    assert _count(tmp_path / "home", "SELECT count(*) FROM guarded_events WHERE event_date < "
                                     "(SELECT max(event_date) - 10 FROM guarded_events)") == 0  # committed
    assert not [e for e in log.entries() if e["kind"] == "warehouse_pruned"]
    monkeypatch.setattr(LineageLog, "append", real_append)

    # The next prune logs the lost one (with what it removed) before its own; nothing is logged twice.
    again = prune(con, settings.store.warehouse_path, keep_days=10, timeout_s=5, log=log, lineage_id="prune-2")
    pruned = {e["lineage_id"]: e["body"] for e in log.entries() if e["kind"] == "warehouse_pruned"}
    assert list(pruned) == ["prune-1", "prune-2"]
    assert pruned["prune-1"]["late"] and pruned["prune-1"]["rows"]["guarded_events"] > 0
    assert pruned["prune-2"]["rows"] == again and sum(again.values()) == 0 and "late" not in pruned["prune-2"]

    # Dying after the entry was appended, before the pending record was cleared: the next run (which
    # logs pending prunes as a prune does) does not log it twice.
    def killed_after(self: LineageLog, kind: str, lineage_id: str, body: dict) -> object:
        real_append(self, kind, lineage_id, body)
        raise SystemExit(137)

    monkeypatch.setattr(LineageLog, "append", killed_after)
    with pytest.raises(SystemExit):
        prune(con, settings.store.warehouse_path, keep_days=5, timeout_s=5, log=log, lineage_id="prune-3")
    monkeypatch.setattr(LineageLog, "append", real_append)
    con.close()
    run = _ingest(settings, export, pii_key, tmp_path / "out")
    kinds = [(e["kind"], e["lineage_id"]) for e in log.entries() if e["kind"] == "warehouse_pruned"]
    assert kinds == [("warehouse_pruned", "prune-1"), ("warehouse_pruned", "prune-2"), ("warehouse_pruned", "prune-3")]
    assert run.lineage_id not in {lineage_id for _, lineage_id in kinds}  # retention is off: the run pruned nothing
    assert _count(tmp_path / "home", "SELECT count(*) FROM pending_prunes") == 0
    ops.dispose()


def test_a_warehouse_of_appended_copies_is_replaced_not_added_to(export: Path, tmp_path: Path, pii_key: PiiKey) -> None:
    settings = _settings(tmp_path / "home")
    _ingest(settings, export, pii_key, tmp_path / "out")
    home = tmp_path / "home"
    events = _count(home, "SELECT count(*) FROM guarded_events")
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:  # what an older version left: copies per run
        con.execute("INSERT INTO guarded_events SELECT * FROM guarded_events")
        con.execute("ALTER TABLE files DROP COLUMN content_hash")
    again = _ingest(settings, export, pii_key, tmp_path / "out")
    assert set(again.ingest.reasons.values()) == {"new"}
    assert _count(home, "SELECT count(*) FROM guarded_events") == events


def test_another_export_replaces_the_history_not_mixes_with_it(export: Path, tmp_path: Path, pii_key: PiiKey) -> None:
    settings = _settings(tmp_path / "home")
    _ingest(settings, export, pii_key, tmp_path / "out")
    other = tmp_path / "other"
    other.mkdir()
    for path in sorted(export.iterdir())[-10:]:  # another property's (or seed's) export: fewer days
        shutil.copy(path, other / path.name)
    second = _ingest(settings, other, pii_key, tmp_path / "out")
    assert set(second.ingest.reasons.values()) == {"new"} and not second.ingest.reused_files
    assert any("held the history of another export" in w for w in second.ingest.warnings)
    home = tmp_path / "home"
    assert _count(home, "SELECT count(DISTINCT source_file) FROM guarded_events") == 10
    assert _count(home, "SELECT count(*) FROM files") == 10
    assert second.guard.totals["input_rows"] == sum(len(p.read_text().splitlines()) for p in other.iterdir())


def test_a_history_keyed_with_another_pii_key_is_refused_and_left_as_it_was(
        export: Path, tmp_path: Path, pii_key: PiiKey) -> None:
    from flashcast.errors import StageError

    settings, home = _settings(tmp_path / "home"), tmp_path / "home"
    _ingest(settings, export, pii_key, tmp_path / "out")
    before = _rows(home, "guarded_events")
    rotated = PiiKey(b"a-rotated-or-mistyped-key-0123456789")
    with pytest.raises(StageError, match="PiiKeyMismatch") as refused:
        _ingest(settings, export, rotated, tmp_path / "out")
    message = str(refused.value)
    # both key ids named, never a key; what to do next said
    assert pii_key.key_id in message and rotated.key_id in message and "[store] home" in message
    assert rotated.secret.decode() not in message and pii_key.secret.decode() not in message
    assert _rows(home, "guarded_events") == before
    assert _ingest(settings, export, pii_key, tmp_path / "out").guard.totals["accepted"] == len(before)
    # The new key in its own store reads the export afresh.
    fresh = _ingest(_settings(tmp_path / "home2"), export, rotated, tmp_path / "out2")
    assert fresh.guard.totals["accepted"] == len(before)
