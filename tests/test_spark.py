"""The Spark engine: the shared SQL transpiled to Spark gives the same governed tables as DuckDB,
row for row, on an export with broken lines, duplicates and a purchase repeated in a later run."""

from __future__ import annotations

import gc
import importlib.util
import json
import shutil
from datetime import date
from pathlib import Path

import duckdb
import pytest

from conftest import skip_or_fail
from flashcast.config import EngineConfig, Settings, SparkConfig, StoreConfig
from flashcast.keys import PiiKey
from flashcast.pipeline import GOVERNED_DATA, run_pipeline
from flashcast.records import RunInputs
from flashcast.simulate import SimulationSpec, simulate

# Columns that differ between runs by design (who processed a row, when), and the quarantined
# row's fingerprint, taken of the row as each engine read it (DuckDB's fast reader keeps no line).
PER_RUN = ("lineage_id", "processed_at")
PER_ENGINE = {"quarantine": ("row_hmac",)}
# py4j leaves its pooled sockets to the garbage collector when a session stops.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
TABLES = ("files", "guarded_events", "quarantine", "consent_drops", "duplicates", "daily_outcomes", "sessions",
          "daily_kpis")


def test_the_shared_sql_is_transpiled_with_spark_s_own_functions() -> None:
    if importlib.util.find_spec("sqlglot") is None:
        skip_or_fail("sqlglot is not installed (pip install 'flashcast[spark]')")
    from flashcast.spark import to_spark

    sql = to_spark("""SELECT hash(a, b), list_extract(xs, 1), try_strptime(d, '%Y%m%d'), regexp_full_match(d, '\\d{8}'),
        regexp_replace(s, '(a=)[^&]*', '\\1x', 'g'), coalesce(try(url_decode(s)), s), make_timestamp(t) FROM x""")
    assert "XXHASH64(a, b)" in sql  # 64-bit, like DuckDB's hash (Spark's HASH is 32-bit)
    assert "TRY_ELEMENT_AT(xs, 1)" in sql
    assert "TRY_TO_TIMESTAMP(d, 'yyyyMMdd')" in sql
    assert "RLIKE '^(?:\\\\d{8})$'" in sql
    assert "'$1x'" in sql and ", 'g'" not in sql
    assert "TRY_URL_DECODE(REPLACE(s, '+', '%2B'))" in sql and "TRY(" not in sql.upper().replace("TRY_", "")
    assert "CAST(TIMESTAMP_MICROS(t) AS TIMESTAMP_NTZ)" in sql


@pytest.fixture(scope="module")
def spark_ready() -> None:
    if importlib.util.find_spec("pyspark") is None:
        skip_or_fail("PySpark is not installed (pip install 'flashcast[spark]')")
    if shutil.which("java") is None:
        skip_or_fail("Java is not installed (make test installs default-jre-headless)")


def _export_with_faults(folder: Path) -> tuple[Path, Path, Path]:
    """A simulated export with broken lines and duplicates; returns (export, spend, the last day's
    file, kept aside for a second run). The last file repeats a day-1 purchase: a duplicate only
    across runs."""
    sim = simulate(SimulationSpec(days=10, users=250, seed=5, end_date=date(2026, 4, 10), formats=("ndjson",)),
                   folder / "sim")
    export = sim.export_dirs["ndjson"]
    files = sorted(export.iterdir())
    first = files[0].read_text().splitlines()
    purchase = json.loads(next(line for line in first if '"purchase"' in line))
    with files[1].open("a") as handle:
        handle.write("\n".join(['{"event_date": "2026040', "", "[1, 2]", first[3],  # broken, blank, array, copy
                                json.dumps({**json.loads(first[4]), "event_timestamp": "soon"}),
                                json.dumps({**json.loads(first[5]), "event_params": {"key": "x"}})]) + "\n")
    later = dict(purchase, event_timestamp=str(int(purchase["event_timestamp"]) + 7_000_000),
                 event_date=files[-1].name[7:15])
    with files[-1].open("a") as handle:
        handle.write(json.dumps(later) + "\n")
    crlf = files[2].read_bytes().replace(b"\n", b"\r\n", 3)  # Windows line ends on its first lines,
    files[2].write_bytes(crlf.replace(b"\r\n", b"\r\n\r\n", 1))  # and a blank line among them
    for file in files[3:5]:  # two days as a sharded extract writes them: a folder each, shards of the same names
        lines = file.read_text().splitlines(keepends=True)
        (export / file.stem).mkdir()
        (export / file.stem / "000000000000.json").write_text("".join(lines[: len(lines) // 2]))
        (export / file.stem / "000000000001.json").write_text("".join(lines[len(lines) // 2:]))
        file.unlink()
    aside = folder / files[-1].name
    shutil.move(files[-1], aside)
    return export, sim.spend_file, aside


def _rows(home: Path, table: str) -> list[tuple]:
    skip = (*PER_RUN, *PER_ENGINE.get(table, ()))
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        columns = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall() if r[0] not in skip]
        listed = ", ".join(f'"{c}"' for c in columns)
        return sorted(con.execute(f"SELECT {listed} FROM {table}").fetchall(), key=repr)


@pytest.mark.slow
def test_spark_and_duckdb_give_the_same_governed_tables_over_two_runs(
    spark_ready: None, tmp_path: Path, pii_key: PiiKey
) -> None:
    export, spend, aside = _export_with_faults(tmp_path)
    engines = {"duckdb": EngineConfig(), "spark": EngineConfig(name="spark", spark=SparkConfig(shuffle_partitions=2))}
    homes = {name: tmp_path / name for name in engines}
    for round_ in (1, 2):
        if round_ == 2:  # the next morning: one new file, read incrementally
            shutil.copy(aside, export / aside.name)
        for name, engine in engines.items():
            settings = Settings(property_timezone="America/New_York", store=StoreConfig(home=homes[name]),
                                engine=engine)
            result = run_pipeline(settings, RunInputs(export, spend), tmp_path / f"out-{name}", key=pii_key,
                                  through=GOVERNED_DATA, job="ingest")
            if round_ == 2:
                assert result.records["ingest"].reused_files, "the second run reads only what is new or recent"
        for table in TABLES:
            duck, spark = _rows(homes["duckdb"], table), _rows(homes["spark"], table)
            assert len(duck) == len(spark), (round_, table)
            assert duck == spark, (round_, table)

    with duckdb.connect(str(homes["spark"] / "warehouse.duckdb"), read_only=True) as con:
        days, channels = con.execute("SELECT count(DISTINCT event_date), count(DISTINCT channel) FROM daily_kpis"
                                     ).fetchall()[0]
        assert con.execute("SELECT count(*) FROM daily_kpis").fetchall()[0][0] == days * channels  # one row each
        assert con.execute("SELECT count(*) FROM quarantine").fetchall()[0][0] >= 5
        # the copied line, and the purchase repeated in the next run's file
        assert {r[0] for r in con.execute("SELECT kind FROM duplicates").fetchall()} == {"exact", "transaction"}
        assert con.execute("""SELECT count(*) FROM daily_outcomes
            WHERE input_rows <> accepted + dropped_consent + quarantined + duplicate""").fetchall()[0][0] == 0
    gc.collect()  # py4j's sockets are closed here, under this module's warning filter


@pytest.mark.slow
def test_a_parquet_export_gives_the_same_guarded_rows_on_both_engines(spark_ready: None, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from flashcast.config import PrivacyPolicy
    from flashcast.records import RunContext
    from flashcast.spark import spark_session
    from flashcast.stages.guard import guard_export, install_privacy_functions
    from flashcast.stages.ingest import discover_exports, stage_export, stage_export_on

    sim = simulate(SimulationSpec(days=5, users=200, seed=8, end_date=date(2026, 5, 5), formats=("parquet",)),
                   tmp_path / "sim")
    export, key, policy = sim.export_dirs["parquet"], PiiKey(b"spark-test-key"), PrivacyPolicy()
    plain = shutil.copytree(export, tmp_path / "plain")
    _store_day_and_time_typed(sorted(export.glob("events_*.parquet"))[1:3])
    run = RunContext("parity", datetime(2026, 5, 6, tzinfo=UTC), key.key_id)
    tables = ("guarded_events", "consent_drops", "duplicates")
    with duckdb.connect() as duck, duckdb.connect() as landed:
        install_privacy_functions(duck, key, policy)
        guard_export(duck, stage_export(duck, export), policy=policy, run=run)
        with spark_session(SparkConfig(shuffle_partitions=2), scratch=tmp_path / "spark") as engine:
            install_privacy_functions(landed, key, policy, engine=engine)
            guard_export(landed, stage_export_on(engine, landed, discover_exports(export)), policy=policy, run=run,
                         engine=engine)
        for table in tables:
            order = f"SELECT * FROM {table} ORDER BY source_file, source_line"
            assert duck.execute(order).fetchall() == landed.execute(order).fetchall(), table
        assert duck.execute("SELECT count(*) FROM guarded_events").fetchall()[0][0] > 1000
        # the rewritten files' rows are guarded as the simulator's text and numbers are
        with duckdb.connect() as untyped:
            install_privacy_functions(untyped, key, policy)
            guard_export(untyped, stage_export(untyped, plain), policy=policy, run=run)
            for table in tables:
                order = f"SELECT * FROM {table} ORDER BY source_file, source_line"
                assert duck.execute(order).fetchall() == untyped.execute(order).fetchall(), table
    gc.collect()


def _store_day_and_time_typed(files: list[Path]) -> None:
    """Rewrite Parquet files with event_date as a DATE and event_timestamp as a TIMESTAMP, one file
    with a time zone and one without (as a pipeline's own Parquet might); unparseable values stay NULL."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for file, zone in zip(files, ("UTC", None), strict=True):
        table = pq.read_table(file)
        day = pc.cast(pc.strptime(table["event_date"], format="%Y%m%d", unit="s", error_is_null=True), pa.date32())
        micros = pc.cast(table["event_timestamp"], pa.int64())
        table = table.set_column(table.schema.get_field_index("event_date"), "event_date", day)
        table = table.set_column(table.schema.get_field_index("event_timestamp"), "event_timestamp",
                                 micros.cast(pa.timestamp("us", tz=zone)))
        pq.write_table(table, file)


_KILL_AFTER_GUARD_LANDS = """
import os, signal, sys
from flashcast.stages import guard
real = guard.land
def land_then_die(con, engine, tables):
    real(con, engine, tables)
    os.kill(os.getpid(), signal.SIGKILL)  # Spark has run the guard; nothing is in the warehouse yet
guard.land = land_then_die
from flashcast.cli import main
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_kill_9_mid_run_on_spark_leaves_the_warehouse_as_it_was_and_the_next_run_completes(
    spark_ready: None, tmp_path: Path, pii_key: PiiKey
) -> None:
    import os
    import subprocess
    import sys

    export, spend, aside = _export_with_faults(tmp_path)
    homes = {"spark": tmp_path / "spark", "duckdb": tmp_path / "duckdb"}
    configs = {}
    for name, home in homes.items():
        engine = '[engine]\nname = "spark"\n[engine.spark]\nshuffle_partitions = 2\n' if name == "spark" else ""
        configs[name] = tmp_path / f"{name}.toml"
        configs[name].write_text(f'property_timezone = "America/New_York"\n[store]\nhome = "{home}"\n{engine}')

    def ingest(name: str, *, script: str | None = None) -> subprocess.CompletedProcess[str]:
        command = ["ingest", "--export", str(export), "--spend", str(spend), "--out", str(tmp_path / f"out-{name}"),
                   "-c", str(configs[name])]
        launcher = script or "import sys\nfrom flashcast.cli import main\nmain(sys.argv[1:])"
        return subprocess.run([sys.executable, "-c", launcher, *command], capture_output=True, text=True, timeout=600,
                              env=os.environ)

    first = ingest("spark")
    assert first.returncode == 0, first.stderr[-2000:]
    # Spark's start-up notices (its default log profile, the host's name, a default level) stay out of the run's output
    noise = [line for line in first.stderr.splitlines() if " WARN " in line or "log level" in line or "log4j" in line]
    assert noise == [], noise
    before = {table: _rows(homes["spark"], table) for table in TABLES}
    shutil.copy2(aside, export / aside.name)  # the next morning's file (copy2: the same mtime each time)
    killed = ingest("spark", script=_KILL_AFTER_GUARD_LANDS)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert {table: _rows(homes["spark"], table) for table in TABLES} == before, "the warehouse is as it was"

    finished = ingest("spark")
    assert finished.returncode == 0, finished.stderr[-2000:]
    shutil.move(export / aside.name, aside)
    assert ingest("duckdb").returncode == 0  # the same two mornings on DuckDB, without the kill
    shutil.copy2(aside, export / aside.name)
    assert ingest("duckdb").returncode == 0
    for table in TABLES:
        assert _rows(homes["spark"], table) == _rows(homes["duckdb"], table), table
