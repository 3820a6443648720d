"""The simulator writes GA4-shaped exports, deterministically, with the truth behind them."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from flashcast.simulate import ChannelTruth, SimulationResult, adstock


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_arguments_give_byte_identical_files_across_processes(tmp_path: Path) -> None:
    args = ["simulate", "--days", "12", "--users", "120", "--seed", "3", "--end-date", "2026-01-31"]
    for name in ("a", "b"):
        code = "from flashcast.cli import main; import sys; main(sys.argv[1:])"
        subprocess.run([sys.executable, "-c", code, *args, "--out", str(tmp_path / name)], check=True,
                       capture_output=True)
    first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert first.keys() == second.keys()
    assert len(first) > 20
    assert first == second


def test_a_different_seed_gives_different_data(tmp_path: Path) -> None:
    from datetime import date

    from flashcast.simulate import SimulationSpec, simulate

    spec = SimulationSpec(days=5, users=50, seed=1, end_date=date(2026, 1, 5), formats=("ndjson",))
    a = simulate(spec, tmp_path / "a")
    b = simulate(replace(spec, seed=2), tmp_path / "b")
    assert _files(a.export_dirs["ndjson"]) != _files(b.export_dirs["ndjson"])


def test_ndjson_is_shaped_like_a_bigquery_export(small_sim: SimulationResult) -> None:
    files = sorted(small_sim.export_dirs["ndjson"].iterdir())
    assert files[-1].name.startswith("events_intraday_")
    assert all(f.name.startswith("events_") for f in files)
    lines = files[1].read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.startswith("{") and line.endswith("}")]
    row = rows[0]
    assert isinstance(row["event_timestamp"], str) and row["event_timestamp"].isdigit()  # INT64 as string
    ints = [p["value"]["int_value"] for r in rows for p in r["event_params"] if p["value"]["int_value"] is not None]
    assert ints and all(isinstance(v, str) for v in ints)
    assert {"session_traffic_source_last_click", "collected_traffic_source", "traffic_source",
            "privacy_info", "ecommerce"} <= set(row)
    consents = {r["privacy_info"]["analytics_storage"] for r in rows}
    assert consents == {"Yes", "No", None}
    denied = [r for r in rows if r["privacy_info"]["analytics_storage"] == "No"]
    assert all(r["user_pseudo_id"] is None for r in denied)
    assert not any(p["key"] == "ga_session_id" for r in denied for p in r["event_params"])


def test_parquet_holds_the_same_rows_typed(small_sim: SimulationResult, small_truth: dict) -> None:
    tables = [pq.read_table(p) for p in sorted(small_sim.export_dirs["parquet"].iterdir())]
    assert sum(t.num_rows for t in tables) == small_truth["rows"]["parquet"]
    assert str(tables[0].schema.field("event_timestamp").type) == "int64"
    ndjson_only = {"truncated_json", "timestamp_not_integer"}
    planted = small_truth["planted"]["malformed"]
    assert small_truth["rows"]["ndjson"] - small_truth["rows"]["parquet"] == sum(
        n for k, n in planted.items() if k in ndjson_only)


def test_pii_is_planted_in_every_form(small_sim: SimulationResult, small_truth: dict) -> None:
    text = "".join(p.read_text() for p in small_sim.export_dirs["ndjson"].iterdir())
    forms = small_truth["planted"]["pii_forms"]
    for form in ("user_id_email", "url_email_plain", "url_email_encoded", "url_email_mixed_case",
                 "url_phone_formatted_encoded", "url_phone_dashes", "url_phone_dots", "search_term_email"):
        assert forms.get(form, 0) > 0, form
    assert "%40example.com" in text
    assert "%2B1%20(" in text
    assert any(e.upper() in text for e in small_truth["pii_needles"]["emails"])


def test_paid_sessions_really_depend_on_spend(small_sim: SimulationResult, small_truth: dict) -> None:
    """Observed sessions per channel-day follow that channel's true response to its flighted spend."""
    import csv

    import duckdb

    spend: dict[str, list[float]] = {}
    with small_sim.spend_file.open() as handle:
        for row in csv.DictReader(handle):
            spend.setdefault(row["channel"], []).append(float(row["spend"]))
    medium_to_channel = {"display": "Display", "cpm": "Display", "ctv": "CTV", "video": "CTV", "cpc": "PPC",
                         "email": "Email"}
    observed = duckdb.sql(
        f"""SELECT event_date, session_traffic_source_last_click.manual_campaign.medium AS medium, count(*) AS n
        FROM read_parquet('{small_sim.export_dirs["parquet"]}/*.parquet')
        WHERE event_name = 'session_start' GROUP BY ALL"""
    ).fetchall()
    dates = small_truth["demand"]["dates"]
    counts = {c: np.zeros(len(dates)) for c in small_truth["channels"]}
    index = {d.replace("-", ""): i for i, d in enumerate(dates)}
    for day, medium, n in observed:
        if medium in medium_to_channel and day in index:
            counts[medium_to_channel[medium]][index[day]] += n
    demand = np.array(small_truth["demand"]["multiplier"])
    for channel, raw in small_truth["channels"].items():
        truth = ChannelTruth(**raw)
        x = np.array(spend[channel])
        assert x.std() / max(x.mean(), 1e-9) > 0.2, f"{channel} spend is not varied enough"
        expected = truth.expected_sessions(x, demand)[:-1]  # the last day is partial
        assert np.corrcoef(expected, counts[channel][:-1])[0, 1] > 0.5, channel
    forms = {c["form"] for c in small_truth["channels"].values()}
    assert len(forms) >= 2, "channels should respond with different curve forms"


def test_adstock_carries_over() -> None:
    out = adstock(np.array([100.0, 0.0, 0.0]), 0.5)
    assert out.tolist() == [100.0, 50.0, 25.0]


def test_an_unchanged_simulation_is_reused_and_a_changed_one_replaces_every_file(tmp_path: Path) -> None:
    from datetime import date

    from flashcast.simulate import SimulationSpec, simulate_once

    spec = SimulationSpec(days=12, users=50, seed=2, end_date=date(2026, 2, 12), formats=("ndjson",))
    first, reused = simulate_once(spec, tmp_path / "sim")
    assert not reused
    stamps = {p.name: p.stat().st_mtime_ns for p in first.export_dirs["ndjson"].iterdir()}
    again, reused = simulate_once(spec, tmp_path / "sim")
    assert reused and again.rows_by_format == first.rows_by_format
    assert {p.name: p.stat().st_mtime_ns for p in again.export_dirs["ndjson"].iterdir()} == stamps
    shorter, reused = simulate_once(SimulationSpec(days=5, users=50, seed=2, end_date=date(2026, 2, 13),
                                                   formats=("ndjson",)), tmp_path / "sim")
    names = sorted(p.name for p in shorter.export_dirs["ndjson"].iterdir())
    assert not reused and len(names) == 5 and names[-1] == "events_intraday_20260213.json"


def test_gzipped_ndjson_holds_the_same_lines_as_plain_ndjson(tmp_path: Path) -> None:
    import gzip
    from datetime import date

    from flashcast.simulate import SimulationSpec, simulate

    spec = SimulationSpec(days=8, users=60, seed=4, end_date=date(2026, 3, 8), formats=("ndjson", "ndjson.gz"))
    result = simulate(spec, tmp_path)
    plain, packed = _files(result.export_dirs["ndjson"]), _files(result.export_dirs["ndjson.gz"])
    assert result.export_dirs["ndjson.gz"].name == "ndjson_gz"
    assert [name + ".gz" for name in plain] == list(packed)
    assert all(gzip.decompress(packed[name + ".gz"]) == text for name, text in plain.items())
    assert result.rows_by_format["ndjson"] == result.rows_by_format["ndjson.gz"]


def test_days_without_a_session_still_get_their_file(tmp_path: Path) -> None:
    from datetime import date

    from flashcast.simulate import SimulationSpec, simulate

    spec = SimulationSpec(days=10, users=20, seed=1, end_date=date(2026, 3, 10), sessions_per_day=0.3)
    result = simulate(spec, tmp_path)
    files = sorted(result.export_dirs["ndjson"].iterdir())
    assert len(files) == 10 and any(f.stat().st_size == 0 for f in files)
    assert sum(len(f.read_text().splitlines()) for f in files) == result.rows_by_format["ndjson"]


_KILLED_BEFORE_THE_SPEND = """
import os, signal, sys
from flashcast.simulate import generator
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # every export file is written; spend and truth are not
generator._write_spend = die
from flashcast.cli import main
main(sys.argv[1:])
"""


def test_a_simulation_killed_midway_leaves_the_previous_one_whole(tmp_path: Path) -> None:
    out = tmp_path / "sim"

    def simulate(seed: str, code: str) -> int:
        args = ["simulate", "--days", "6", "--users", "60", "--seed", seed, "--end-date", "2026-01-31",
                "--out", str(out)]
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, timeout=300).returncode

    plain = "import sys; from flashcast.cli import main; main(sys.argv[1:])"
    assert simulate("1", plain) == 0
    before = _files(out)
    assert simulate("2", _KILLED_BEFORE_THE_SPEND) == -9
    after = {name: data for name, data in _files(out).items() if not name.startswith(".partial-")}
    assert after == before  # seed 1's export, spend and truth, none of seed 2's files mixed in
    assert simulate("2", plain) == 0
    replaced = _files(out)
    assert not any(name.startswith(".partial-") for name in replaced)  # the killed one's folder is gone
    assert replaced.keys() == before.keys() and replaced != before
    assert json.loads(replaced["truth.json"])["spec"]["seed"] == 2


def test_an_unchanged_gzipped_simulation_is_reused(tmp_path: Path) -> None:
    from datetime import date

    from flashcast.simulate import SimulationSpec, simulate_once

    spec = SimulationSpec(days=3, users=30, seed=5, end_date=date(2026, 2, 3), formats=("ndjson.gz",))
    first, reused = simulate_once(spec, tmp_path)
    again, reused_again = simulate_once(spec, tmp_path)
    assert not reused and reused_again and again.export_dirs == first.export_dirs
    assert again.export_dirs["ndjson.gz"] == tmp_path / "ndjson_gz"
