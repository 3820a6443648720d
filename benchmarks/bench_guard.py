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
        if FLOOR.exists():
            for fmt, folder in sim.export_dirs.items():
                print(f"--- {fmt}: the same files against DuckDB's floor and a Python loop ({FLOOR.name}; the "
                      "project figure includes its imports)")
                subprocess.run([sys.executable, str(FLOOR), str(folder), "--python-rows", "100000"], check=False)
        else:
            print(f"({FLOOR} not found: floor comparison skipped)")


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
