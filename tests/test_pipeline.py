"""End to end: CLI run, warehouse contents, ops records, OpenLineage events, PII scan, concurrency."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from conftest import TEST_KEY, FinishedRun, write_config
from flashcast.cli import app
from flashcast.config import Settings, StoreConfig
from flashcast.errors import StageError
from flashcast.keys import PiiKey
from flashcast.lineage import LineageLog, read_head_file, run_anchors
from flashcast.pipeline import KEPT_TABLES, run_pipeline
from flashcast.privacy import PiiNeedles, PiiScanner, ScanReport, scan_run
from flashcast.records import RunInputs
from flashcast.simulate import SimulationResult
from flashcast.store import OpsStore, transform_connection, warehouse_session


def _scan(settings: Settings, out: Path, needles: PiiNeedles | None) -> ScanReport:
    return scan_run(warehouse=settings.store.warehouse_path, ops_url=settings.store.ops_database_url,
                    folders=[out], needles=needles)


def test_cli_run_writes_stamped_reconciled_outputs(finished_run: FinishedRun) -> None:
    config, out, summary = finished_run.config, finished_run.out, finished_run.summary
    lineage_id = summary["lineage_id"]
    assert summary["totals"]["input_rows"] == finished_run.truth["rows"]["ndjson"]
    for name in ("daily_kpis.csv", "reconciliation.csv", "quarantine.csv", "lineage_head.json", "openlineage.jsonl"):
        assert (out / name).exists(), name
    settings = Settings(store=StoreConfig(home=config.parent / "home"))
    con = transform_connection()
    with warehouse_session(con, settings.store.warehouse_path, timeout_s=10, read_only=True):
        for table in KEPT_TABLES:
            stamps = con.execute(f"SELECT DISTINCT lineage_id FROM wh.main.{table}").fetchall()
            assert stamps in ([(lineage_id,)], []), table
        accepted = con.execute("SELECT count(*) FROM wh.main.guarded_events").fetchall()[0][0]
    assert accepted == summary["totals"]["accepted"]
    ops = OpsStore(settings.store.ops_database_url)
    with ops.engine.connect() as conn:
        rec = conn.execute(sa.select(sa.func.sum(ops.reconciliation.c.input_rows))).scalar_one()
        status = conn.execute(sa.select(ops.runs.c.status)).scalar_one()
    assert rec == summary["totals"]["input_rows"] and status == "completed"
    head = read_head_file(out / "lineage_head.json")
    LineageLog(ops).verify([head, *run_anchors(ops)])
    entries = LineageLog(ops).entries(lineage_id)
    assert entries[0]["kind"] == "run_started" and entries[-1]["kind"] == "run_completed"
    # The hook brackets every stage: started with the rows it reads, completed with the rows it wrote.
    kinds = [(e["kind"], e["body"].get("stage")) for e in entries[1:-1]]
    names = ["ingest", "guard", "kpis", "segments", "creatives", "forecast", "allocate", "payload"]
    assert kinds == [(k, n) for n in names for k in ("stage_started", "stage_completed")]
    guard_started, guard_done = entries[3]["body"], entries[4]["body"]
    totals = summary["totals"]
    assert guard_started["reads"] == {"staged": totals["input_rows"], "files": 150}
    assert guard_done["writes"]["guarded_events"] == totals["accepted"]
    assert guard_done["writes"]["quarantine"] == totals["quarantined"] and guard_done["seconds"] >= 0
    events = [json.loads(line) for line in (out / "openlineage.jsonl").read_text().splitlines()]
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert {e["run"]["runId"] for e in events} == {lineage_id}
    assert events[1]["outputs"], "COMPLETE names its output datasets"


def test_cli_run_produces_a_schema_valid_payload_anchored_in_the_log(finished_run: FinishedRun) -> None:
    import jsonschema

    from flashcast.stages.payload import committed_schema

    config, out, summary = finished_run.config, finished_run.out, finished_run.summary
    document = json.loads((out / "payload.json").read_text())
    jsonschema.validate(document, committed_schema())
    assert document["lineage_id"] == summary["lineage_id"]
    ops = OpsStore(Settings(store=StoreConfig(home=config.parent / "home")).store.ops_database_url)
    log = LineageLog(ops)
    log.verify([read_head_file(out / "lineage_head.json")])
    entries = log.entries(document["lineage_id"])
    anchored = [e for e in entries if e["seq"] == document["lineage_head"]["seq"]]
    assert anchored and anchored[0]["lineage_id"] == document["lineage_id"]
    stages = [e["body"].get("stage") for e in entries if e["kind"] == "stage_completed"]
    assert stages == ["ingest", "guard", "kpis", "segments", "creatives", "forecast", "allocate", "payload"]
    spends = [c["spend"] for c in document["allocations"]["channels"]]
    assert document["allocations"]["budget"] == pytest.approx(sum(spends))
    assert all(c["light"] != "red" for c in document["creatives"])
    assert document["allocations"]["method"] == "curves/point"
    assert all(c["marginal_cpa"] is None or c["marginal_cpa"] > 0 for c in document["allocations"]["channels"])
    for name in ("report.md", "segments.csv", "creatives.csv", "allocation.csv", "forecast.csv", "fan_chart.png",
                 "response_curves.png", "whatif.csv", "whatif.png", "forecast_backtest.csv"):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    for link in ("payload.json", "fan_chart.png", "segments.csv", "allocation.csv", "reconciliation.csv"):
        assert f"({link})" in report


def test_no_planted_pii_reaches_any_store_or_output(finished_run: FinishedRun) -> None:
    config, out = finished_run.config, finished_run.out
    needles = PiiNeedles.from_truth(finished_run.truth)
    assert len(needles.emails) > 10 and len(needles.phones) > 5 and len(needles.identifiers) > 100
    settings = Settings(store=StoreConfig(home=config.parent / "home"))
    report = _scan(settings, out, needles)
    assert report.columns_scanned > 50 and report.files_scanned >= 6 and report.values_scanned > 50_000
    assert report.clean, report.findings
    patterns_only = _scan(settings, out, None)  # what a real export gets: no truth, only what PII looks like
    assert patterns_only.clean, patterns_only.findings


def test_a_run_id_whose_groups_are_all_digits_is_not_a_phone_number() -> None:
    run_id = "019ac1f4-2127-7123-8456-5a2b3c4d5e6f"  # a UUID v7 as it sometimes comes: 2127-7123-8456
    scanner = PiiScanner()
    try:
        scanner._add_values("ids.txt", [run_id, f'{{"lineage_id": "{run_id}"}}'], False)
        scanner._add_values("notes.txt", [f"run {run_id}: call 555-123-4567"], False)
        found = {(f.where, f.kind) for f in scanner.findings().findings}
    finally:
        scanner.close()
    assert found == {("notes.txt", "phone-shaped text")}


def test_a_planted_phone_s_digits_inside_an_hmac_are_no_leak_but_the_number_written_out_is() -> None:
    # An HMAC's 64 hex characters hold a run of ten digits by chance (8% of them); with a random key
    # per install, a demo's ~950,000 HMACs met one of its 1,088 planted numbers about once in 120 demos.
    phone = "5555044322"
    scanner = PiiScanner(PiiNeedles(emails=frozenset(), phones=frozenset({phone}), identifiers=frozenset()))
    try:
        scanner._add_values("wh.guarded_events.transaction_key",
                            [f"294c8639e722c418479b0d451d546253ef58d0ff{phone}f992eed34c2fa1",
                             f"{phone}c418479b0d451d546253ef58d0ff294c8639e722c418479b0d451d5462"], True)
        for place, text in (("a.txt", f"tel:{phone}"), ("b.txt", f"call +1 ({phone[:3]}) {phone[3:6]}-{phone[6:]}"),
                            ("c.txt", f"{phone},1{phone}"), ("d.txt", f"phone={phone[:3]}.{phone[3:6]}.{phone[6:]}&x")):
            scanner._add_values(place, [text], False)
        planted = {f.where for f in scanner.findings().findings if f.kind == "planted value"}
    finally:
        scanner.close()
    assert planted == {"a.txt", "b.txt", "c.txt", "d.txt"}


def test_a_charts_pixels_are_not_scanned_as_text_but_its_text_chunks_are(tmp_path: Path) -> None:
    """PNG pixel bytes can spell an email by chance (uncompressed here, so they do): not a finding.
    Text written into the PNG's metadata is."""
    import struct
    import zlib

    from PIL import Image, PngImagePlugin

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"leak@example.com"  # filter byte 0 (none), then 16 grey pixels
    (tmp_path / "pixels.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 1, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(row, 0)) + chunk(b"IEND", b""))
    assert b"leak@example.com" in (tmp_path / "pixels.png").read_bytes()
    assert Image.open(tmp_path / "pixels.png").tobytes() == b"leak@example.com"
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "contact jane.doe@example.com")
    Image.new("L", (4, 4)).save(tmp_path / "tagged.png", pnginfo=info)
    scanner = PiiScanner()
    try:
        scanner.add_folder(tmp_path)
        found = {(Path(f.where).name, f.kind) for f in scanner.findings().findings}
    finally:
        scanner.close()
    assert found == {("tagged.png", "email-shaped text")}


def test_the_scan_catches_a_planted_leak(finished_run: FinishedRun, tmp_path: Path) -> None:
    run = finished_run.copy_to(tmp_path)
    out, settings = run.out, run.settings
    needles = PiiNeedles.from_truth(run.truth)
    email, phone = sorted(needles.emails)[0], sorted(needles.phones)[0]
    (out / "notes.txt").write_text(f"contact: {email.upper().replace('@', '%40')}\n")
    con = duckdb.connect(str(settings.store.warehouse_path))
    con.execute("CREATE TABLE leak AS SELECT ? AS note", [f"call ({phone[:3]}) {phone[3:6]}-{phone[6:]}"])
    con.close()
    report = _scan(settings, out, needles)
    where = {f.where for f in report.findings}
    assert str(out / "notes.txt") in where
    assert "wh.leak.note" in where
    # Without the truth, the same leaks and others are found by their shape.
    con = duckdb.connect(str(settings.store.warehouse_path))
    con.execute("CREATE TABLE leak_ids AS SELECT '1234567890.1712345678' AS user_key")
    con.close()
    (out / "urls.txt").write_text("https://shop.example.com/?utm_source=x&first_name=Jane\n")
    found = {(f.where, f.kind) for f in _scan(settings, out, None).findings}
    assert {(str(out / "notes.txt"), "email-shaped text"), ("wh.leak.note", "phone-shaped text"),
            ("wh.leak_ids.user_key", "identifier that is not an HMAC"),
            ("wh.leak_ids.user_key", "client-id-shaped text"),
            (str(out / "urls.txt"), "personal URL query value")} <= found


def test_cli_lineage_verify_fails_on_tampering(finished_run: FinishedRun, tmp_path: Path) -> None:
    run = finished_run.copy_to(tmp_path)
    config, out = run.config, run.out
    runner = CliRunner()
    ok = runner.invoke(app, ["lineage", "verify", "--head", str(out / "lineage_head.json"), "-c", str(config)])
    assert ok.exit_code == 0, ok.output
    ops = OpsStore(Settings(store=StoreConfig(home=config.parent / "home")).store.ops_database_url)
    with ops.transaction() as conn:
        conn.execute(sa.text("UPDATE lineage_log SET entry = replace(entry, 'ingest', 'ingestX') WHERE seq = 2"))
    bad = runner.invoke(app, ["lineage", "verify", "--head", str(out / "lineage_head.json"), "-c", str(config)])
    assert bad.exit_code == 1 and "LineageTampered" in bad.output


def test_a_failing_stage_is_named_and_recorded(tmp_path: Path, pii_key: PiiKey) -> None:
    bad_export = tmp_path / "events_20260301.json"
    bad_export.write_text("")
    spend = tmp_path / "spend.csv"
    spend.write_text("date,channel,spend\n2026-03-01,PPC,-1\n")
    settings = Settings(store=StoreConfig(home=tmp_path / "home"))
    from conftest import ga4_row

    bad_export.write_text(json.dumps(ga4_row()) + "\n")
    # the spend file is checked before the export is read (minutes on a large one), not after
    with pytest.raises(StageError, match=r"stage inputs: IngestError: spend.csv: line 2: spend: negative"):
        run_pipeline(settings, RunInputs(bad_export, spend), tmp_path / "out", key=pii_key)
    ops = OpsStore(settings.store.ops_database_url)
    kinds = [e["kind"] for e in LineageLog(ops).entries()]
    assert kinds == ["run_started", "run_failed"]  # no stage ran
    events = [json.loads(x) for x in (tmp_path / "out.failed" / "openlineage.jsonl").read_text().splitlines()]
    assert events[-1]["eventType"] == "FAIL"


@pytest.mark.slow
def test_two_runs_at_once_both_land(tmp_path: Path, small_sim: SimulationResult) -> None:
    config = write_config(tmp_path, tmp_path / "home")
    env = {**os.environ, "FLASHCAST_PII_KEY": TEST_KEY}
    code = "from flashcast.cli import main; import sys; main(sys.argv[1:])"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, "run", "--export", str(small_sim.export_dirs[fmt]),
                          "--spend", str(small_sim.spend_file), "--out", str(tmp_path / f"out-{fmt}"),
                          "-c", str(config)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for fmt in ("ndjson", "parquet")
    ]
    for proc in procs:
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output.decode()
    settings = Settings(store=StoreConfig(home=tmp_path / "home"))
    ops = OpsStore(settings.store.ops_database_url)
    heads = [read_head_file(tmp_path / f"out-{fmt}" / "lineage_head.json") for fmt in ("ndjson", "parquet")]
    report = LineageLog(ops).verify([*heads, *run_anchors(ops)])
    assert report.entries == 2 * 18  # run_started, 8 stages started and completed, run_completed
    # Both wrote under the lock, one after the other; a warehouse keeps one export's history, so the
    # later write (the other export) replaced the earlier one whole: no mix, no double copy.
    summaries = [json.loads((tmp_path / f"out-{fmt}" / "run_summary.json").read_text())
                 for fmt in ("ndjson", "parquet")]
    con = transform_connection()
    with warehouse_session(con, settings.store.warehouse_path, timeout_s=10, read_only=True):
        held = con.execute("SELECT lineage_id, count(*) FROM wh.main.guarded_events GROUP BY 1").fetchall()
    assert len(held) == 1
    assert held[0][1] == next(s["totals"]["accepted"] for s in summaries if s["lineage_id"] == held[0][0])
    with ops.engine.connect() as conn:
        per_run = conn.execute(sa.text("SELECT lineage_id, sum(input_rows) FROM reconciliation GROUP BY 1")).all()
    assert len(per_run) == 2


@pytest.mark.slow
def test_an_allocation_failure_keeps_the_rest_of_the_run(finished_run: FinishedRun, tmp_path: Path,
                                                          pii_key: PiiKey) -> None:
    config = write_config(tmp_path, tmp_path / "home", extra='[guardrails]\nhold = ["CTV"]\ncaps = {CTV = 1.0}')
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", "--export", str(finished_run.sim.export_dirs["ndjson"]), "--spend",
                                      str(finished_run.sim.spend_file), "--out", str(out), "-c", str(config)])
    assert result.exit_code == 1
    assert "failed allocate: AllocationInfeasible: guardrails cross for CTV" in " ".join(result.output.split())
    for name in ("daily_kpis.csv", "segments.csv", "forecast.csv", "fan_chart.png", "reconciliation.csv"):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "payload.json").exists() and not (out / "allocation.csv").exists()
    assert "**The allocation failed**: AllocationInfeasible" in (out / "report.md").read_text()
    ops = OpsStore(Settings(store=StoreConfig(home=tmp_path / "home")).store.ops_database_url)
    with ops.engine.connect() as conn:
        status, summary = conn.execute(sa.select(ops.runs.c.status, ops.runs.c.summary)).one()
    assert status == "partial" and summary["problems"][0].startswith("allocate: AllocationInfeasible")
    LineageLog(ops).verify([read_head_file(out / "lineage_head.json")])


@pytest.mark.slow
def test_a_history_too_short_to_forecast_keeps_the_rest_of_the_run(tmp_path: Path, pii_key: PiiKey) -> None:
    # A property three weeks into its GA4 export: no forecast yet, but its data, customers and copy
    from datetime import date

    from flashcast.forecasting.series import MIN_HISTORY_DAYS
    from flashcast.simulate import SimulationSpec, simulate

    sim = simulate(SimulationSpec(days=MIN_HISTORY_DAYS - 7, users=300, sessions_per_day=30, seed=11,
                                  end_date=date(2026, 5, 31), formats=("ndjson",)), tmp_path / "sim")
    config, out = write_config(tmp_path, tmp_path / "home"), tmp_path / "out"
    result = CliRunner().invoke(app, ["run", "--export", str(sim.export_dirs["ndjson"]), "--spend",
                                      str(sim.spend_file), "--out", str(out), "-c", str(config)])
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert f"failed forecast: ForecastError: revenue_total: {MIN_HISTORY_DAYS - 8} days of history" in output
    for name in ("daily_kpis.csv", "segments.csv", "creatives.csv", "reconciliation.csv", "allocation.csv"):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "payload.json").exists() and not (out / "forecast.csv").exists()
    report = (out / "report.md").read_text()
    assert "**The forecast failed**: ForecastError" in report and "No DSP payload: revenue was not forecast" in report
    ops = OpsStore(Settings(store=StoreConfig(home=tmp_path / "home")).store.ops_database_url)
    with ops.engine.connect() as conn:
        status, summary = conn.execute(sa.select(ops.runs.c.status, ops.runs.c.summary)).one()
    assert status == "partial" and summary["problems"][0].startswith("forecast: ForecastError")
    LineageLog(ops).verify([read_head_file(out / "lineage_head.json")])
    # Without the spend file the allocation fails too: the report names both, the payload once
    again = CliRunner().invoke(app, ["run", "--export", str(sim.export_dirs["ndjson"]), "--out", str(tmp_path / "o2"),
                                     "-c", str(config)])
    assert again.exit_code == 1, again.output
    report = (tmp_path / "o2" / "report.md").read_text()
    assert "No DSP payload: revenue was not forecast and the budget was not allocated" in report
    attention = report.split("## Needs attention")[1].split("##")[0]
    assert "AllocationInfeasible" in attention and attention.count("No DSP payload was written") == 1, attention


def test_every_forecast_row_of_a_run_is_nested_non_negative_and_holds_its_point(finished_run: FinishedRun) -> None:
    import pandas as pd

    for name in ("forecast.csv", "forecast_series.csv"):
        f = pd.read_csv(finished_run.out / name)
        chain = ["lo_95", "lo_80", "lo_50", "point", "hi_50", "hi_80", "hi_95"]
        for inner, outer in itertools.pairwise(chain):
            assert (f[inner] <= f[outer] + 1e-9).all(), (name, inner, outer)
        assert (f["lo_95"] >= 0).all(), name


_KILL_DURING_OUTPUTS = """
import os, signal, sys
from flashcast import outputs
real = outputs.write_frame
def write_then_die(frame, path):
    real(frame, path)
    os.kill(os.getpid(), signal.SIGKILL)  # mid-way through writing the outputs
outputs.write_frame = write_then_die
from flashcast.cli import main
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_kill_9_while_writing_outputs_leaves_the_last_finished_run_and_marks_the_run_abandoned(
        finished_run: FinishedRun, tmp_path: Path) -> None:
    run = finished_run.copy_to(tmp_path)
    before = {p.name: p.read_bytes() for p in run.out.iterdir()}
    env = {**os.environ, "FLASHCAST_PII_KEY": TEST_KEY}
    killed = subprocess.run([sys.executable, "-c", _KILL_DURING_OUTPUTS, "run", "--export",
                             str(run.sim.export_dirs["ndjson"]), "--spend", str(run.sim.spend_file), "--out",
                             str(run.out), "-c", str(run.config)], env=env, capture_output=True, timeout=300)
    assert killed.returncode == -9
    assert {p.name: p.read_bytes() for p in run.out.iterdir()} == before, "out/ is still exactly the last run"
    assert list(tmp_path.glob(".out.*.partial")), "the killed run's half-written folder is beside it"
    listing = CliRunner().invoke(app, ["runs", "-c", str(run.config)])
    assert listing.exit_code == 0 and "abandoned" in listing.output
    ops = OpsStore(run.settings.store.ops_database_url)
    with ops.engine.connect() as conn:
        statuses = sorted(conn.execute(sa.select(ops.runs.c.status)).scalars())
    assert statuses == ["abandoned", "completed"]


def test_a_killed_process_not_yet_reaped_is_not_alive() -> None:
    import signal

    from flashcast.store import pid_alive

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert pid_alive(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10  # until the kernel has made it a zombie (not reaped: no wait yet)
        while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not pid_alive(child.pid), "a run killed and not yet reaped showed as still running"
    finally:
        child.kill()
        child.wait()


@pytest.mark.slow
def test_a_failure_while_writing_outputs_keeps_the_last_run_and_flags_it(
        finished_run: FinishedRun, tmp_path: Path, pii_key: PiiKey, monkeypatch: pytest.MonkeyPatch) -> None:
    from flashcast import outputs

    run = finished_run.copy_to(tmp_path)
    before = {p.name: p.read_bytes() for p in run.out.iterdir()}
    real = outputs.write_frame

    def fail_on_forecast(frame: object, path: Path) -> Path:
        if path.name == "forecast.csv":
            raise OSError(28, "No space left on device", str(path))
        return real(frame, path)  # type: ignore[arg-type]

    monkeypatch.setattr(outputs, "write_frame", fail_on_forecast)
    with pytest.raises(StageError, match="stage outputs: OSError") as info:
        run_pipeline(run.settings, RunInputs(run.sim.export_dirs["ndjson"], run.sim.spend_file), run.out,
                     key=pii_key)
    assert str(tmp_path / "out.failed") in str(info.value)
    after = {p.name: p.read_bytes() for p in run.out.iterdir()}
    notice = after.pop("LAST_RUN_FAILED.md").decode()
    assert after == before and "failed" in notice and "outputs" in notice
    assert (tmp_path / "out.failed" / "FAILED.md").exists()
    assert not list(tmp_path.glob(".out.*")), "nothing half-written is left behind"
    # The next successful run replaces the folder whole: the notice and the failed copy go.
    monkeypatch.setattr(outputs, "write_frame", real)
    run_pipeline(run.settings, RunInputs(run.sim.export_dirs["ndjson"], run.sim.spend_file), run.out, key=pii_key)
    assert not (run.out / "LAST_RUN_FAILED.md").exists() and not (tmp_path / "out.failed").exists()
    assert json.loads((run.out / "run_summary.json").read_text())["lineage_id"] != finished_run.summary["lineage_id"]


def test_money_says_its_currency_everywhere(finished_run: FinishedRun) -> None:
    import pandas as pd

    out = finished_run.out
    for name in ("daily_kpis.csv", "forecast.csv", "forecast_series.csv", "allocation.csv", "whatif.csv"):
        assert set(pd.read_csv(out / name)["currency"]) == {"USD"}, name
    assert "Money in USD." in (out / "report.md").read_text()
    assert json.loads((out / "payload.json").read_text())["allocations"]["currency"] == "USD"
    assert finished_run.summary["currency"] == "USD"


@pytest.mark.slow
def test_the_next_run_reuses_the_forecast_selection_until_told_not_to(finished_run: FinishedRun, tmp_path: Path,
                                                                      pii_key: PiiKey) -> None:
    run = finished_run.copy_to(tmp_path)
    inputs = RunInputs(finished_run.sim.export_dirs["ndjson"], finished_run.sim.spend_file)
    again = run_pipeline(run.settings, inputs, tmp_path / "again", key=pii_key)
    assert "reused" in again.forecast.forecast.notes[0]
    fresh_settings = run.settings.model_copy(update={"forecast": run.settings.forecast.model_copy(
        update={"reselect_days": 0})})
    fresh = run_pipeline(fresh_settings, inputs, tmp_path / "fresh", key=pii_key)
    assert "reused" not in fresh.forecast.forecast.notes[0]
    assert again.forecast.forecast.engine == fresh.forecast.forecast.engine
    assert np.allclose(again.forecast.forecast.point, fresh.forecast.forecast.point)  # same engine, same history
    con = duckdb.connect(str(run.settings.store.warehouse_path), read_only=True)
    rows = con.execute("SELECT lineage_id, reused FROM forecast_selections WHERE series_id = 'revenue_total' "
                       "ORDER BY created_at").fetchall()
    breakdown = con.execute("SELECT count(*) FILTER (WHERE reused), count(*) FROM forecast_selections "
                            "WHERE lineage_id = ?", [again.lineage_id]).fetchall()[0]
    con.close()
    assert [r[1] for r in rows] == [False, True, False]
    assert rows[1][0] == again.lineage_id
    assert breakdown[1] > 5 and breakdown[0] == breakdown[1]  # every channel's and segment's too
