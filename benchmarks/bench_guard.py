"""Ingest + guard + daily KPIs throughput on simulated GA4 exports (NDJSON and Parquet), side by side
with DuckDB's own parse floor and a plain Python loop on the same files (../shared/bench/guard_floor.py,
each measurement in its own process with its peak memory)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

from flashcast.config import Settings, StoreConfig
from flashcast.keys import PiiKey
from flashcast.pipeline import GOVERNED_DATA, RunResult, run_pipeline
from flashcast.records import RunContext, RunInputs
from flashcast.simulate import SimulationSpec, simulate
from flashcast.stages.guard import guard_export, install_privacy_functions
from flashcast.stages.ingest import stage_export
from flashcast.stages.kpis import daily_channel_kpis, load_spend
from flashcast.store import transform_connection

FLOOR = Path(__file__).resolve().parents[2] / "shared" / "bench" / "guard_floor.py"


def main() -> None:
    settings = Settings(property_timezone="America/New_York")
    key = PiiKey(b"benchmark-key-0123456789")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        sim = simulate(SimulationSpec(days=400, users=20000, sessions_per_day=150, seed=5,
                                      end_date=date(2026, 6, 30)), Path(tmp))
        print(f"simulate: {sum(sim.rows_by_format.values()):,} rows (both formats) in {time.perf_counter() - t0:.1f} s")
        for fmt, folder in sim.export_dirs.items():
            con = transform_connection()
            t = time.perf_counter()
            staged = stage_export(con, folder)
            t_ingest = time.perf_counter() - t
            install_privacy_functions(con, key, settings.policy)
            report = guard_export(con, staged, policy=settings.policy,
                                  run=RunContext("bench", datetime.now(UTC), key.key_id))
            t_guard = time.perf_counter() - t - t_ingest
            load_spend(con, sim.spend_file, mapping=settings.channels)
            daily_channel_kpis(con, mapping=settings.channels, timezone=settings.property_timezone)
            total = time.perf_counter() - t
            rows = staged.input_rows
            print(f"{fmt:8s} {rows:>9,} rows  ingest {t_ingest:5.2f} s  guard {t_guard:5.2f} s  "
                  f"total {total:5.2f} s  = {rows / total:,.0f} rows/s  (accepted {report.totals['accepted']:,})")
            con.close()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS (this process, both formats): {peak:,.0f} MiB")
        incremental(sim.export_dirs["ndjson"], sim.spend_file, settings, key, Path(tmp))
        engines(sim.export_dirs["ndjson"], sim.spend_file, Path(tmp))
        scale(Path(tmp))
        if FLOOR.exists():
            for fmt, folder in sim.export_dirs.items():
                print(f"--- {fmt}: the same files against DuckDB's floor and a Python loop ({FLOOR.name}; the "
                      "project figure includes its imports)")
                subprocess.run([sys.executable, str(FLOOR), str(folder), "--python-rows", "100000"], check=False)
                print(read_floor(folder), flush=True)
        else:
            print(f"({FLOOR} not found: floor comparison skipped)")


_READ_FLOOR = """
import resource, sys, time
from pathlib import Path
t = time.perf_counter()
from flashcast.stages import ingest
from flashcast.store import transform_connection
con = transform_connection()
files = [f for f in ingest.discover_exports(Path(sys.argv[1]))]
paths = "[" + ", ".join(ingest.literal(f.path) for f in files) + "]"
if files[0].format == "parquet":
    read = ingest._parquet_rows_sql(con, files)
else:  # malformed lines are skipped here: this is only the read
    read = (f"SELECT * FROM read_json({paths}, format='newline_delimited', ignore_errors=true, "
            f"columns={ingest._JSON_COLUMNS})")
con.execute(f"CREATE TEMP TABLE fields AS {read}")
rows = con.execute("SELECT count(*) FROM fields").fetchall()[0][0]
took = time.perf_counter() - t
print(rows, took, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def read_floor(folder: Path) -> str:
    """DuckDB's own read of every GA4 field Flashcast keeps (read_json with its columns, or its
    Parquet read), materialized in a table: the floor under ingest + guard + KPIs that the parse
    floor of guard_floor.py (four fields, grouped) is not. Its own process, imports included."""
    done = subprocess.run([sys.executable, "-c", _READ_FLOOR, str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        return f"read floor: failed ({last})"
    rows, took, rss = done.stdout.split()
    return (f'{{"kind": "read-floor (every field Flashcast keeps, materialized)", "rows": {rows}, '
            f'"s": {float(took):.2f}, "rows_per_s": {int(rows) / float(took):.0f}, "peak_mib": {int(rss) // 1024}}}')


def incremental(folder: Path, spend: Path, settings: Settings, key: PiiKey, tmp: Path) -> None:
    """The daily loop as `flashcast ingest` meets it (stores, lineage, outputs included): a backfill of
    every day but the last, then the run the next morning, when one new file has arrived."""
    files = sorted(folder.iterdir())
    export = tmp / "daily_export"
    export.mkdir()
    for path in files[:-1]:
        os.link(path, export / path.name)
    home_settings = settings.model_copy(update={"store": StoreConfig(home=tmp / "home")})

    def ingest() -> tuple[float, RunResult]:
        start = time.perf_counter()
        result = run_pipeline(home_settings, RunInputs(export, spend), tmp / "out", key=key, through=GOVERNED_DATA,
                              job="ingest")
        return time.perf_counter() - start, result

    t_backfill, backfill = ingest()
    os.link(files[-1], export / files[-1].name)
    t_daily, daily = ingest()
    read = ", ".join(f"{n} {r}" for r, n in daily.ingest.read_counts.items())
    print(f"incremental (ndjson, flashcast ingest in-process): backfill of {len(files) - 1} files, "
          f"{backfill.ingest.input_rows:,} rows: {t_backfill:.1f} s; next day, one new file: read "
          f"{len(daily.ingest.reasons)} files ({read}), {daily.ingest.input_rows:,} rows, "
          f"{len(daily.ingest.reused_files)} reused: {t_daily:.1f} s "
          f"(history {daily.guard.totals['input_rows']:,} rows; {t_daily / t_backfill:.1%} of the backfill)")


def _cli_ingest(config: Path, export: Path, spend: Path, out: Path) -> tuple[int, float, int]:
    """`flashcast ingest` in its own process: exit code, seconds, peak RSS in KiB."""
    measure = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "code = subprocess.run(sys.argv[1:], capture_output=True).returncode; "
               "print(code, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    cli = [str(Path(sys.executable).with_name("flashcast")), "ingest", "-c", str(config), "--export", str(export),
           "--spend", str(spend), "--out", str(out)]
    env = {**os.environ, "FLASHCAST_PII_KEY": "benchmark-key-0123456789abcdef"}
    done = subprocess.run([sys.executable, "-c", measure, *cli], capture_output=True, text=True, env=env)
    code, took, rss_kib = done.stdout.split()
    return int(code), float(took), int(rss_kib)


def engines(export: Path, spend: Path, tmp: Path) -> None:
    """`flashcast ingest` (a cold warehouse, its own process) on DuckDB and on Spark local[2], same
    files: rows/s only (Spark's memory is mostly its JVM's, which this does not measure)."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("pyspark") is None or shutil.which("java") is None:
        print("engines: PySpark or Java missing: Spark figure skipped")
        return
    rows = 0
    for name in ("duckdb", "spark"):
        home = tmp / f"engine-{name}"
        home.mkdir()
        config = home / "flashcast.toml"
        config.write_text(f'property_timezone = "America/New_York"\n[store]\nhome = "{home}"\n'
                          f'[engine]\nname = "{name}"\n')
        code, took, _ = _cli_ingest(config, export, spend, home / "out")
        rows = rows or sum(1 for path in export.iterdir() for _ in path.open("rb"))
        status = "" if code == 0 else f"  FAILED (exit {code})"
        print(f"engine {name:6s}: flashcast ingest on {rows:,} NDJSON rows: {took:6.1f} s = {rows / took:,.0f} rows/s"
              f"{' (local[2], session start included)' if name == 'spark' else ''}{status}", flush=True)


# Sessions a day for about 1M and 10M events over 400 days (about 6 events a session).
SCALES = {"1M": 400, "10M": 4000}
CACHE = Path(os.environ.get("FLASHCAST_BENCH_CACHE", Path.home() / ".cache" / "flashcast-bench"))


def scale(tmp: Path) -> None:
    """`flashcast ingest` as a user runs it (its own process, [store] memory_limit = "1GB") on 1M and
    10M simulated events as Parquet, and 1M as gzipped NDJSON: time, rows/s, peak RSS, and how time
    grows from 1M to 10M. On Parquet the backfill holds back the newest file, which then arrives for
    the next morning's run. Simulations are cached in FLASHCAST_BENCH_CACHE (same spec, same files)."""
    import pyarrow.parquet as pq

    from flashcast.simulate import simulate_once

    seconds: dict[str, float] = {}
    rows_of: dict[str, int] = {}
    for label, fmt in (("1M", "parquet"), ("10M", "parquet"), ("1M", "ndjson.gz")):
        start = time.perf_counter()
        spec = SimulationSpec(days=400, users=20 * SCALES[label] * 2, sessions_per_day=SCALES[label], seed=17,
                              end_date=date(2026, 6, 30), formats=(fmt,))
        sim, reused = simulate_once(spec, CACHE / f"{label}-{fmt}")
        made = "reused" if reused else f"simulated in {time.perf_counter() - start:.0f} s"
        home = tmp / f"scale-{label}-{fmt}"
        home.mkdir()
        config = home / "flashcast.toml"
        config.write_text(f'property_timezone = "America/New_York"\n[store]\nhome = "{home}"\nmemory_limit = "1GB"\n')
        rows = sim.rows_by_format[fmt]
        export, newest = sim.export_dirs[fmt], None
        if fmt == "parquet":
            export, newest = home / "export", max(sim.export_dirs[fmt].iterdir())
            export.mkdir()
            for path in sim.export_dirs[fmt].iterdir():
                if path != newest:
                    os.link(path, export / path.name)
            rows -= pq.ParquetFile(newest).metadata.num_rows
        code, took, rss_kib = _cli_ingest(config, export, sim.spend_file, home / "out")
        seconds[f"{label} {fmt}"], rows_of[f"{label} {fmt}"] = took, rows
        status = "" if code == 0 else f"  FAILED (exit {code})"
        print(f"scale: {fmt:9s} {rows:>10,} rows ({made}): flashcast ingest {float(took):6.1f} s = "
              f"{rows / float(took):,.0f} rows/s, peak RSS {int(rss_kib) / 1024:,.0f} MiB "
              f"(memory_limit 1GB){status}", flush=True)
        if newest is not None:
            os.link(newest, export / newest.name)
            code, took, rss_kib = _cli_ingest(config, export, sim.spend_file, home / "out")
            status = "" if code == 0 else f"  FAILED (exit {code})"
            print(f"scale: the next morning, one new file ({pq.ParquetFile(newest).metadata.num_rows:,} rows) on "
                  f"that history: flashcast ingest {took:6.1f} s, peak RSS {rss_kib / 1024:,.0f} MiB "
                  f"(reads it and the look-back days){status}", flush=True)
        if label == "1M" and fmt == "parquet":
            history_length(sim.export_dirs[fmt], sim.spend_file, tmp)
        if label == "10M":
            ratio = seconds["10M parquet"] / seconds["1M parquet"]
            print(f"scale: 1M -> 10M Parquet events: x{rows / rows_of['1M parquet']:.1f} the rows took "
                  f"x{ratio:.1f} the time (linear would be the same factor)")


def history_length(files: Path, spend: Path, tmp: Path, short: int = 60, runs: int = 3) -> None:
    """The next morning's `flashcast ingest` (its own process) after a backfill of `short` days and
    after one of every day, at the same daily volume: the median of `runs` runs each (each reads the
    new file and the look-back days). Time should follow the day read, not the history stored."""
    days = sorted(files.iterdir())
    newest, older = days[-1], days[:-1]
    medians = {}
    for kept in (older[-short:], older):
        home = tmp / f"history-{len(kept)}"
        export = home / "export"
        export.mkdir(parents=True)
        config = home / "flashcast.toml"
        config.write_text(f'property_timezone = "America/New_York"\n[store]\nhome = "{home}"\n'
                          'memory_limit = "1GB"\n')
        for path in kept:
            os.link(path, export / path.name)
        code, _, _ = _cli_ingest(config, export, spend, home / "out")
        os.link(newest, export / newest.name)
        took = sorted(_cli_ingest(config, export, spend, home / "out")[1] for _ in range(runs))
        medians[len(kept)] = took[runs // 2]
        status = "" if code == 0 else f"  (backfill FAILED, exit {code})"
        print(f"history: next morning after a {len(kept)}-day history: flashcast ingest "
              f"{', '.join(f'{t:.1f}' for t in took)} s (median {medians[len(kept)]:.1f} s){status}", flush=True)
    (few, few_s), (many, many_s) = sorted(medians.items())
    print(f"history: x{many / few:.1f} the stored days, x{many_s / few_s:.2f} the next morning's time "
          "(the same daily volume; whole commands, process start included)")
