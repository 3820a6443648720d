"""The command line as a newcomer meets it: one clean line for every mistake, never a traceback."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import TEST_KEY, FinishedRun, write_config
from flashcast import __version__
from flashcast.cli import app
from flashcast.errors import ConfigError


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def _one_clean_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert "Traceback" not in output
    assert len(lines) == 1, output
    return lines[0]


def test_version() -> None:
    assert _run("--version") == (0, f"flashcast {__version__}\n")


def test_a_config_given_before_the_command_applies_to_it(finished_run: FinishedRun) -> None:
    code, output = _run("-c", str(finished_run.config), "lineage", "show", "--lineage-id",
                        finished_run.summary["lineage_id"])
    assert code == 0 and json.loads(output.splitlines()[0])["kind"] == "run_started"


def test_an_unknown_run_id_is_an_error(finished_run: FinishedRun) -> None:
    code, output = _run("lineage", "show", "--lineage-id", "no-such-run", "-c", str(finished_run.config))
    assert code == 1 and _one_clean_line(output) == "LineageError: no lineage entries for run no-such-run"


@pytest.mark.parametrize(("content", "expected"), [
    (None, "no such head file"), ("not json", "not a lineage head file"), ('{"seq": 3}', "not a lineage head file"),
])
def test_a_missing_or_corrupt_head_file_is_named(finished_run: FinishedRun, tmp_path: Path, content: str | None,
                                                 expected: str) -> None:
    head = tmp_path / "lineage_head.json"
    if content is not None:
        head.write_text(content)
    code, output = _run("lineage", "verify", "--head", str(head), "-c", str(finished_run.config))
    line = _one_clean_line(output)
    assert code == 1 and line.startswith("LineageError: ") and str(head) in line and expected in line


def test_out_pointing_at_a_file_is_refused_before_reading(finished_run: FinishedRun, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASHCAST_PII_KEY", "a-test-key-of-enough-length")
    target = tmp_path / "report.txt"
    target.write_text("mine")
    code, output = _run("run", "--export", str(finished_run.sim.export_dirs["ndjson"]), "--out", str(target),
                        "-c", str(write_config(tmp_path, tmp_path / "home")))
    assert code == 1 and "is a file" in _one_clean_line(output) and target.read_text() == "mine"
    # a folder under it cannot be made: one line naming the folder, not an internal partial folder's name
    code, output = _run("run", "--export", str(finished_run.sim.export_dirs["ndjson"]), "--out",
                        str(target / "out"), "-c", str(write_config(tmp_path, tmp_path / "home")))
    said = _one_clean_line(output)
    assert code == 1 and said == f"ConfigError: --out {target / 'out'}: {target} is a file, not a folder"


def test_an_output_folder_that_cannot_be_made_is_one_line_naming_it() -> None:
    from flashcast.outputs import staging_folder

    # /proc takes no folders, whoever runs the test (root too): an internal partial folder was named
    with pytest.raises(ConfigError, match=r"^/proc/flashcast-test/out: cannot write an output folder there \("):
        staging_folder(Path("/proc/flashcast-test/out"), "01900000-0000-7000-8000-000000000001")


def test_an_llm_without_its_sdk_or_key_is_refused_before_reading(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path, tmp_path / "home")
    monkeypatch.setenv("FLASHCAST_PII_KEY", "a-test-key-of-enough-length")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    args = ("run", "--export", str(tmp_path / "nowhere"), "--llm", "openai:gpt-4o-mini", "-c", str(config))
    code, output = _run(*args)
    assert code == 1 and _one_clean_line(output) == ("ConfigError: LLM provider 'openai' needs an API key: set "
                                                     "$OPENAI_API_KEY")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openai" else real(name, *a))
    code, output = _run(*args)
    assert code == 1 and _one_clean_line(output) == ("ConfigError: LLM provider 'openai' needs its SDK: pip install "
                                                     "'flashcast[openai]'")


def test_brackets_in_help_and_errors_are_printed_not_eaten(tmp_path: Path) -> None:
    code, output = _run("run", "--help")
    assert code == 0 and "(overrides [llm])" in " ".join(output.split())
    config = tmp_path / "flashcast.toml"
    config.write_text("[guardrails]\ncaps = {Facebook = 1}\n")
    code, output = _run("runs", "-c", str(config))
    assert code == 1 and "['Facebook']" in _one_clean_line(output)


def test_keys_pii_creates_the_key_once_and_reports_its_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLASHCAST_PII_KEY", raising=False)
    config = write_config(tmp_path, tmp_path / "home")
    code, first = _run("keys", "pii", "-c", str(config))
    key_file = tmp_path / "home" / "pii.key"
    assert code == 0 and first.startswith("created the PII key in") and key_file.stat().st_mode & 0o777 == 0o600
    code, again = _run("keys", "pii", "-c", str(config))
    assert code == 0 and again.startswith("using") and first.split()[-1] == again.split()[-1]
    assert [p.name for p in key_file.parent.iterdir()] == ["pii.key"]  # written aside, renamed: no partial left


@pytest.mark.parametrize("content", [b"", b"\n", b"short\n", b"\xff\xfe" * 20])
def test_an_empty_or_cut_key_file_is_refused_not_used_as_a_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes) -> None:
    monkeypatch.delenv("FLASHCAST_PII_KEY", raising=False)
    config = write_config(tmp_path, tmp_path / "home")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "pii.key").write_bytes(content)  # a key file cut short (a disk full, a bad copy)
    code, output = _run("keys", "pii", "-c", str(config))
    line = _one_clean_line(output)
    assert code == 1 and line.startswith("ConfigError:") and "pii.key: the PII key file holds no key" in line
    assert (tmp_path / "home" / "pii.key").read_bytes() == content  # left for the user to restore, not replaced


def test_an_unexpected_error_is_one_line_naming_it_a_bug(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from flashcast import cli

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "load_settings", broken)
    code, output = _run("runs")
    line = _one_clean_line(output)
    assert code == 2 and line.startswith("InternalError: ZeroDivisionError") and "FLASHCAST_DEBUG=1" in line


def test_running_out_of_memory_is_one_line_naming_the_setting_not_a_file(
        finished_run: FinishedRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASHCAST_PII_KEY", "flashcast-test-key-0123456789abcdef")
    config = write_config(tmp_path, tmp_path / "home")
    config.write_text(config.read_text() + 'memory_limit = "1MB"\n')
    code, output = _run("ingest", "--export", str(finished_run.sim.export_dirs["ndjson"]), "--out",
                        str(tmp_path / "out"), "-c", str(config))
    lines = [line for line in output.splitlines() if line.strip()]
    line = lines[-1]  # after the export's description, the error and nothing more
    assert code == 1 and "Traceback" not in output, output
    assert line.startswith("StageError: stage ingest: OutOfMemoryException") and "StageError" not in lines[-2]
    assert "raise [store] memory_limit" in line and "events_" not in line


def test_an_export_file_of_a_format_not_read_is_named_by_the_run(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import ga4_row, write_lines

    monkeypatch.setenv("FLASHCAST_PII_KEY", "flashcast-test-key-0123456789abcdef")
    export = tmp_path / "export"
    write_lines(export / "events_20260301.json", [json.dumps(ga4_row())])
    for day in ("20260302", "20260303"):
        (export / f"events_{day}.avro").write_bytes(b"Obj\x01")
    code, output = _run("ingest", "--export", str(export), "--out", str(tmp_path / "out"),
                        "-c", str(write_config(tmp_path, tmp_path / "home")))
    assert code == 0, output
    assert ("events_20260302.avro and 1 more: not read (Flashcast reads export files ending .json, .ndjson, .jsonl, "
            ".json.gz, .ndjson.gz, .jsonl.gz, .parquet; export those days again" in " ".join(output.split()))


def test_serve_or_the_standin_on_a_port_in_use_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, output = _run("serve", "--port", str(port), "-c", str(write_config(tmp_path, tmp_path / "home")))
        assert code == 1
        assert _one_clean_line(output) == (f"ConfigError: cannot listen on 127.0.0.1:{port}: in use (by another "
                                           "server?); choose another with --port")
        monkeypatch.setenv("FLASHCAST_DSP_SECRET", "standin-secret")
        code, output = _run("dsp-standin", "--port", str(port), "--db", str(tmp_path / "standin.sqlite"))
    assert code == 1 and _one_clean_line(output).startswith(f"ConfigError: cannot listen on 127.0.0.1:{port}: in use")


def test_ingest_runs_only_the_governed_data_path(finished_run: FinishedRun, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import duckdb

    monkeypatch.setenv("FLASHCAST_PII_KEY", "flashcast-test-key-0123456789abcdef")
    config, out = write_config(tmp_path, tmp_path / "home"), tmp_path / "out"
    code, output = _run("ingest", "--export", str(finished_run.sim.export_dirs["ndjson"]), "--spend",
                        str(finished_run.sim.spend_file), "--out", str(out), "-c", str(config))
    assert code == 0, output
    rows = finished_run.summary['totals']['input_rows']
    assert f"read {rows:,} rows from 150 file(s) (150 new)" in output and "rows/s" in output
    assert f"history: {rows:,} rows (0 file(s) reused" in output
    assert sorted(p.name for p in out.iterdir()) == ["daily_kpis.csv", "files.csv", "lineage_head.json",
                                                     "openlineage.jsonl", "quarantine.csv", "reconciliation.csv",
                                                     "run_summary.json"]
    with duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert {"guarded_events", "daily_kpis", "files"} <= tables and "user_segments" not in tables
    # The next morning: nothing new, so the latest 3 days; a backfill of two chosen days besides.
    code, output = _run("ingest", "--export", str(finished_run.sim.export_dirs["ndjson"]), "--out", str(out),
                        "--rebuild", "2026-03-01:2026-03-02", "-c", str(config))
    assert code == 0, output
    assert "from 5 file(s) (3 look-back, 2 rebuild)" in output
    assert f"history: {rows:,} rows (145 file(s) reused" in output
    code, output = _run("ingest", "--export", str(out), "--rebuild", "2026-03-40", "-c", str(config))
    assert code == 1 and "ConfigError: --rebuild: expected FROM[:TO] as YYYY-MM-DD dates" in output
    code, output = _run("prune", "--keep-days", "30", "-c", str(config))
    assert code == 0 and "pruned " in output and "guarded_events" in output, output
    with duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT date_diff('day', min(event_date), max(event_date)) FROM guarded_events"
                           ).fetchall()[0][0] <= 30


@pytest.mark.parametrize(("option", "says"), [(["--format", "csv"], "formats must be"),
                                              (["--days", "1"], "days must be at least 2"),
                                              (["--sessions-per-day", "0"], "sessions_per_day must be more than 0"),
                                              (["--seed", "-1"], "seed must be 0 or more"),
                                              (["--timezone", "Mars/Base"], "timezone 'Mars/Base' is not an IANA")])
def test_a_bad_simulate_option_is_one_line_naming_it(tmp_path: Path, option: list[str], says: str) -> None:
    code, output = _run("simulate", "--users", "100", "--out", str(tmp_path), *option)
    assert code == 1
    assert _one_clean_line(output).startswith(f"ConfigError: simulate: {says}")


@pytest.mark.parametrize(("section", "command", "says"), [
    ('home = "{blocked}/home"', "demo", "[store] home: "),
    ('home = "{blocked}/home"', "runs", "[store] home or ops_url: "),
    ('temp_directory = "{blocked}/spill"', "ingest", "[store] temp_directory (where DuckDB spills): "),
])
def test_a_state_folder_that_cannot_be_made_names_its_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              section: str, command: str, says: str) -> None:
    monkeypatch.setenv("FLASHCAST_PII_KEY", "state-test-key-0123456789abcdef")
    monkeypatch.chdir(tmp_path)  # where `ingest` would put its outputs ([source] out)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    config = tmp_path / "flashcast.toml"
    home = "" if "home" in section else f'home = "{tmp_path / "home"}"\n'
    config.write_text(f"[store]\n{home}{section.format(blocked=blocked)}\n")
    export = tmp_path / "events_20260301.json"
    export.write_text("{}\n")
    extra = {"demo": ["--out", str(tmp_path / "out")], "runs": [], "ingest": ["--export", str(export)]}[command]
    code, output = _run(command, "-c", str(config), *extra)
    last = [line for line in output.splitlines() if line.strip()][-1]
    assert code == 1 and "Traceback" not in output
    assert last.startswith(f"ConfigError: {says}{blocked}") and "cannot be made (Not a directory)" in last, output
    assert not list(tmp_path.glob(".out*")) and not list(tmp_path.glob("out*")), "stopped before any run began"


@pytest.mark.parametrize(("option", "says"), [(["--days", "1"], "days must be at least 2"),
                                              (["--seed", "-1"], "seed must be 0 or more")])
def test_a_demo_that_cannot_be_simulated_is_one_line_naming_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 option: list[str], says: str) -> None:
    monkeypatch.setenv("FLASHCAST_PII_KEY", "demo-test-key-0123456789abcdef")
    config = tmp_path / "flashcast.toml"
    config.write_text(f'[store]\nhome = "{tmp_path / "home"}"\n')
    code, output = _run("demo", "--out", str(tmp_path / "out"), "-c", str(config), *option)
    assert code == 1 and not (tmp_path / "out").exists()
    assert _one_clean_line(output).startswith(f"ConfigError: simulate: {says}")


def test_a_demo_of_other_settings_starts_its_history_afresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every simulation was written to the same folder: the warehouse took the new world's files
    for changed files of the old one and kept the old world's other days beside them."""
    import pandas as pd

    monkeypatch.setenv("FLASHCAST_PII_KEY", "demo-test-key-0123456789abcdef")
    config = tmp_path / "flashcast.toml"
    config.write_text(f'[store]\nhome = "{tmp_path / "home"}"\n')
    demo = ["demo", "--out", str(tmp_path / "out"), "-c", str(config), "--users", "200", "--sessions-per-day", "20"]
    first, output = _run(*demo, "--days", "45", "--seed", "1")
    assert first == 0, output
    second, output = _run(*demo, "--days", "35", "--seed", "2")
    assert second == 0, output
    simulations = list((tmp_path / "home" / "demo-export").iterdir())
    assert len(simulations) == 1 and "-seed2-" in simulations[0].name  # the first one is gone
    lines = sum(len(f.read_text().splitlines()) for f in (simulations[0] / "ndjson").iterdir())
    reconciliation = pd.read_csv(tmp_path / "out" / "reconciliation.csv")
    dated = reconciliation[reconciliation["event_date"] != "unknown"]
    assert reconciliation["input_rows"].sum() == lines and len(dated) <= 35
    again, output = _run(*demo, "--days", "35", "--seed", "2")
    assert again == 0 and "reused the" in output
    assert list((tmp_path / "home" / "demo-export").iterdir()) == simulations


def test_creatives_are_listed_and_decided_from_the_command_line(finished_run: FinishedRun, tmp_path: Path) -> None:
    import pandas as pd

    from flashcast.approvals import latest_decisions
    from flashcast.store import OpsStore

    run = finished_run.copy_to(tmp_path)
    runner = CliRunner()
    listed = runner.invoke(app, ["creatives", "list", "-c", str(run.config)], terminal_width=200)
    assert listed.exit_code == 0, listed.output
    pending = [line.split("│")[1].strip() for line in listed.output.splitlines() if "pending" in line]
    assert len(pending) >= 2 and all(i.startswith("cr-") and "…" not in i for i in pending)
    narrow = runner.invoke(app, ["creatives", "list", "-c", str(run.config)], terminal_width=80).output
    assert max(len(line) for line in narrow.splitlines()) <= 80 and "…" not in narrow
    assert all(creative_id in narrow for creative_id in pending)  # ids whole: they are typed back
    segments = set(pd.read_csv(run.out / "creatives.csv")["segment"])
    assert all(f"│ {segment} " in narrow for segment in segments), narrow  # each a section
    approved = runner.invoke(app, ["creatives", "approve", pending[0], "--comment", "on brand", "-c", str(run.config)])
    rejected = runner.invoke(app, ["creatives", "reject", pending[1], "-c", str(run.config)])
    assert approved.exit_code == 0 and rejected.exit_code == 0, approved.output + rejected.output
    ops = OpsStore(run.settings.store.ops_database_url)
    decided = latest_decisions(ops)
    ops.dispose()
    assert (decided[pending[0]].decision, decided[pending[0]].key_id, decided[pending[0]].comment) == (
        "approved", "cli", "on brand")
    assert decided[pending[1]].decision == "rejected"
    unknown = runner.invoke(app, ["creatives", "approve", "cr-nope", "-c", str(run.config)])
    assert unknown.exit_code == 1 and "UnknownCreative" in unknown.output and "Traceback" not in unknown.output


def test_all_green_approves_the_pending_green_creatives_and_leaves_the_rest(finished_run: FinishedRun,
                                                                           tmp_path: Path) -> None:
    import duckdb

    from flashcast.approvals import latest_creatives, latest_decisions
    from flashcast.store import OpsStore

    run = finished_run.copy_to(tmp_path)
    code, output = _run("creatives", "approve", "-c", str(run.config))
    assert code == 1 and _one_clean_line(output) == \
        "ConfigError: creatives: give creative ids (flashcast creatives list) or --all-green"
    with duckdb.connect(str(run.settings.store.warehouse_path)) as con:  # copy a checker flagged, for a person
        ids = [r[0] for r in con.execute("SELECT creative_id FROM creatives ORDER BY creative_id").fetchall()]
        con.execute("UPDATE creatives SET light = 'amber' WHERE creative_id = ?", [ids[0]])
        con.execute("UPDATE creatives SET light = 'red' WHERE creative_id = ?", [ids[1]])
    assert _run("creatives", "reject", ids[2], "-c", str(run.config))[0] == 0
    code, output = _run("creatives", "approve", "--all-green", "--comment", "read them", "-c", str(run.config))
    assert code == 0 and f"approved {len(set(ids)) - 3} creative(s)" in output, output
    ops = OpsStore(run.settings.store.ops_database_url)
    try:
        status = {c["creative_id"]: c["status"] for c in latest_creatives(
            run.settings.store.warehouse_path, ops, timeout_s=5)}
        decided = latest_decisions(ops)
    finally:
        ops.dispose()
    assert (status[ids[0]], status[ids[1]], status[ids[2]]) == ("pending", "pending", "rejected")
    assert all(status[i] == "approved" and decided[i].comment == "read them" for i in ids[3:])
    assert _run("creatives", "approve", "--all-green", "-c", str(run.config))[1].strip() == "approved 0 creative(s)"


def test_a_rebalance_without_email_keeps_the_summary_and_a_sandbox_push_says_where_it_went(
        finished_run: FinishedRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from email import message_from_bytes

    monkeypatch.setenv("FLASHCAST_PII_KEY", TEST_KEY)
    run = finished_run.copy_to(tmp_path)
    write_config(tmp_path, tmp_path / "home", extra=f'mode = "sandbox"\n[source]\nexport = '
                 f'"{run.sim.export_dirs["ndjson"]}"\nspend = "{run.sim.spend_file}"\nout = "{run.out}"\n')
    listed = CliRunner().invoke(app, ["creatives", "list", "-c", str(run.config)], terminal_width=200).output
    ids = re.findall(r"cr-[0-9a-f]{12}", listed)
    assert _run("creatives", "approve", *ids, "-c", str(run.config))[0] == 0
    code, output = _run("rebalance", "-c", str(run.config))
    said = " ".join(output.split())
    assert code == 3 and f"summary email: not configured: [email] to is empty; what it would send is in {run.out}" \
        in said, output
    summary = message_from_bytes((run.out / "summary.eml").read_bytes())
    subject = " ".join(summary["Subject"].split())  # unfolded: a long subject spans lines
    # every creative is approved: only the push waits (auto_push is off)
    assert subject.startswith("[SANDBOX] Flashcast plan for") and subject.endswith(
        ": approved, ready for a person to push"), subject
    lineage_id = re.search(r"rebalance ([0-9a-f-]{36}): held", output)
    assert lineage_id, output
    entries = [json.loads(line) for line in _run("lineage", "show", "--lineage-id", lineage_id[1],
                                                  "-c", str(run.config))[1].splitlines()]
    finished = [e["body"] for e in entries if e["kind"] == "rebalance_finished"]
    assert finished == [{"by": "cli", "outcome": "held", "email": "not configured",
                         "summary_sha256": hashlib.sha256((run.out / "summary.eml").read_bytes()).hexdigest()}]
    code, output = _run("push", "-c", str(run.config))
    assert code == 0, output
    assert output.startswith("[SANDBOX] sent to the built-in stand-in platform; nothing reached a real one")
    assert output.count("delivered") == 3
    code, again = _run("push", "-c", str(run.config))  # exactly once: the second push sends nothing, and says so
    assert code == 0 and again.startswith("nothing sent: every order of this plan was delivered before"), again
    assert "[SANDBOX] sent" not in again and re.findall(r"delivered\s+│\s+1\s", again) == \
        re.findall(r"delivered\s+│\s+1\s", output)


def test_an_export_whose_every_row_is_quarantined_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An export of another shape: no row has an event_date. Nothing can be aggregated; the error
    # gives the guard's counts and the quarantine's first row (a failed run writes no quarantine.csv).
    from datetime import date

    from flashcast.simulate import SimulationSpec, simulate

    monkeypatch.setenv("FLASHCAST_PII_KEY", "flashcast-test-key-0123456789abcdef")
    sim = simulate(SimulationSpec(days=5, users=40, sessions_per_day=8, seed=2, end_date=date(2026, 5, 31),
                                  formats=("ndjson",)), tmp_path / "sim")
    rows, dated, first = 0, 0, sorted(sim.export_dirs["ndjson"].iterdir())[0].name
    for path in sim.export_dirs["ndjson"].iterdir():
        lines = path.read_text().splitlines()
        path.write_text("".join(line.replace('"event_date":', '"event_day":') + "\n" for line in lines))
        rows += len(lines)
        dated += sum(_is_json(line) for line in lines)  # the simulator's malformed lines aside
    config = write_config(tmp_path, tmp_path / "home")
    for command in ("ingest", "run"):
        code, output = _run(command, "--export", str(sim.export_dirs["ndjson"]), "--out", str(tmp_path / command),
                            "-c", str(config))
        said = " ".join(output.split())
        assert code == 1 and "Traceback" not in output
        assert (f"IngestError: no accepted events: of {rows:,} rows read, {rows:,} were quarantined, 0 dropped for "
                f"consent and 0 duplicates. Quarantined for event_date on {dated:,} row(s), the first: {first} line 1: "
                "event_date: missing") in said, said


def test_a_pretty_printed_export_is_told_what_an_export_line_is(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import ga4_row

    monkeypatch.setenv("FLASHCAST_PII_KEY", "flashcast-test-key-0123456789abcdef")
    export = tmp_path / "export"
    export.mkdir()
    rows = [ga4_row(event_timestamp=str(1772323200000000 + i)) for i in range(3)]
    (export / "events_20260301.json").write_text("\n".join(json.dumps(r, indent=2) for r in rows) + "\n")
    (export / "events_20260302.json").write_text(json.dumps(rows) + "\n")  # one array
    code, output = _run("ingest", "--export", str(export), "--out", str(tmp_path / "out"),
                        "-c", str(write_config(tmp_path, tmp_path / "home")))
    said = " ".join(output.split())
    assert code == 1 and "Traceback" not in output
    assert "events_20260301.json line 1: (line): not valid JSON. A GA4 export holds one JSON object per line" in said
    assert "pretty-printed JSON or a JSON array is not one" in said


def test_ingest_and_run_read_the_configured_source_when_not_told(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import date

    import pandas as pd

    from flashcast.simulate import SimulationSpec, simulate

    monkeypatch.setenv("FLASHCAST_PII_KEY", "flashcast-test-key-0123456789abcdef")
    monkeypatch.chdir(tmp_path)  # the default output folder, "out", is beside the test's files
    sim = simulate(SimulationSpec(days=5, users=40, sessions_per_day=8, seed=2, end_date=date(2026, 5, 31),
                                  formats=("ndjson",)), tmp_path / "sim")
    (tmp_path / "bare").mkdir()
    bare = write_config(tmp_path / "bare", tmp_path / "bare" / "home")
    code, output = _run("ingest", "-c", str(bare))
    assert code == 1 and _one_clean_line(output) == \
        "ConfigError: no export to read: give --export, or set [source] export in flashcast.toml"
    config = write_config(tmp_path, tmp_path / "home", extra=(
        f'[source]\nexport = "{sim.export_dirs["ndjson"]}"\nspend = "{sim.spend_file}"\n'
        f'out = "{tmp_path / "configured"}"\n'))
    code, output = _run("ingest", "-c", str(config))
    assert code == 0, output
    kpis = pd.read_csv(tmp_path / "configured" / "daily_kpis.csv")
    assert kpis["spend"].sum() > 0  # the configured spend file came with the configured export
    # Another export named on the command line does not take the configured spend file with it
    code, output = _run("ingest", "--export", str(sim.export_dirs["ndjson"]), "-c", str(config))
    assert code == 0, output
    assert pd.read_csv(tmp_path / "configured" / "daily_kpis.csv")["spend"].sum() == 0


def test_an_export_without_consent_anywhere_says_which_setting_decides(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import date

    from flashcast.simulate import SimulationSpec, simulate

    monkeypatch.setenv("FLASHCAST_PII_KEY", "flashcast-test-key-0123456789abcdef")
    sim = simulate(SimulationSpec(days=5, users=40, sessions_per_day=8, seed=2, end_date=date(2026, 5, 31),
                                  formats=("ndjson",)), tmp_path / "sim")
    for path in sim.export_dirs["ndjson"].iterdir():  # consent mode not set up: NULL everywhere
        path.write_text(path.read_text().replace('"analytics_storage":"Yes"', '"analytics_storage":null'))
    config = write_config(tmp_path, tmp_path / "home", extra='[policy]\nconsent_null_means = "denied"')
    code, output = _run("ingest", "--export", str(sim.export_dirs["ndjson"]), "--out", str(tmp_path / "out"),
                        "-c", str(config))
    said = " ".join(output.split())
    assert code == 1 and "Traceback" not in output
    assert "dropped for consent (a NULL consent counts as denied: [policy] consent_null_means)" in said, said


def test_an_export_of_only_a_partial_day_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Only today's intraday table: the governed data is stored (tomorrow's run builds on it), but
    # there is no complete day to plan from, and the run says that rather than "no users".
    from datetime import date

    from flashcast.simulate import SimulationSpec, simulate

    monkeypatch.setenv("FLASHCAST_PII_KEY", "flashcast-test-key-0123456789abcdef")
    sim = simulate(SimulationSpec(days=3, users=40, sessions_per_day=8, seed=2, end_date=date(2026, 5, 31),
                                  formats=("ndjson",)), tmp_path / "sim")
    for path in sim.export_dirs["ndjson"].iterdir():
        if not path.name.startswith("events_intraday_"):
            path.unlink()
    config = write_config(tmp_path, tmp_path / "home")
    export = str(sim.export_dirs["ndjson"])
    ingested = _run("ingest", "--export", export, "-c", str(config))
    assert ingested[0] == 0, ingested[1]
    code, output = _run("run", "--export", export, "--out", str(tmp_path / "out"), "-c", str(config))
    said = " ".join(output.split())
    assert code == 1 and "Traceback" not in output
    assert ("SegmentationError: no complete day to segment users on: every accepted event is on 2026-05-31, a "
            "partial day") in said, said
    # `flashcast runs` at 80 columns: ids whole on their lines (they are copied), the error under the table
    code, listing = _run("runs", "-c", str(config))
    ids = re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", listing)
    assert code == 0 and len(ids) == 3 and ids[0] == ids[2] != ids[1], listing  # the run, the ingest, the error
    assert f"failed {ids[0]}: SegmentationError: no complete day" in " ".join(listing.split())
    assert max(len(line) for line in listing.splitlines()) <= 80


def test_push_and_rebalance_before_anything_is_set_up_say_what_is_missing(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASHCAST_PII_KEY", "flashcast-test-key-0123456789abcdef")
    config = write_config(tmp_path, tmp_path / "home")
    assert "[source]" not in config.read_text()
    code, output = _run("push", "-c", str(config))
    assert code == 1 and _one_clean_line(output).startswith("PayloadNotFound: no payload yet: no run has made one")
    code, output = _run("rebalance", "-c", str(config))
    assert code == 1 and "ConfigError: rebalance reads [source] export (and spend): set them in" in _one_clean_line(
        " ".join(output.split()))


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def test_a_day_the_tag_stopped_firing_on_is_named_by_the_run(finished_run: FinishedRun, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    monkeypatch.setenv("FLASHCAST_PII_KEY", "flashcast-test-key-0123456789abcdef")
    export = tmp_path / "export"
    shutil.copytree(finished_run.sim.export_dirs["ndjson"], export)
    broken = sorted(export.glob("events_2*.json"))[-20]  # a day of the last weeks: 10 lines left of it
    broken.write_text("\n".join(broken.read_text().splitlines()[:10]) + "\n")
    day = f"{broken.name[7:11]}-{broken.name[11:13]}-{broken.name[13:15]}"
    missing = sorted(export.glob("events_2*.json"))[-30]  # and a day GA4 wrote no file for
    missing.unlink()
    gone = f"{missing.name[7:11]}-{missing.name[11:13]}-{missing.name[13:15]}"
    code, output = _run("run", "--export", str(export), "--spend", str(finished_run.sim.spend_file), "--out",
                        str(tmp_path / "out"), "-c", str(write_config(tmp_path, tmp_path / "home")))
    assert code == 0, output
    said = " ".join(output.split())
    assert f"attention {day}: 10 rows, " in said and f"attention {gone}: no rows (a usual " in said
    assert said.count("did tracking stop?") == 2  # the simulator's other days are ordinary
    # the forecast takes both for missing days (their zero, or near zero, is no sale), filled like any gap
    report = (tmp_path / "out" / "report.md").read_text()
    assert "- 2 missing days filled by interpolation" in report
