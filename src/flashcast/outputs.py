"""Every file a run writes to its output folder, from the stages' records and the run's tables.

Each writer names what it needs (see `flashcast.wiring`): the output folder, the run connection,
the run context and the records of the stages it reports on, and returns the files it wrote by
name. The report comes last: it links every other file.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from flashcast.config import Settings
from flashcast.errors import ConfigError
from flashcast.forecasting.charts import plot_fan_chart
from flashcast.inplace import exchange
from flashcast.records import (
    AllocationPlan,
    CreativeLibrary,
    ForecastPlan,
    GuardReport,
    KpiSummary,
    RunContext,
    Segmentation,
    Skipped,
    StagedExport,
    Table,
)
from flashcast.report import write_report
from flashcast.stages.allocate import allocation_frame
from flashcast.stages.creatives import creatives_frame
from flashcast.stages.payload import Payload, write_payload
from flashcast.wiring import call, missing_inputs


def write_frame(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False, lineterminator="\n")
    return path


def write_query(con: duckdb.DuckDBPyConnection, query: str, path: Path, params: list[Any] | None = None) -> Path:
    """A query's result as CSV, streamed from the run connection."""
    cursor = con.execute(query, params or [])
    columns = [d[0] for d in cursor.description or []]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        while batch := cursor.fetchmany(10_000):
            writer.writerows(batch)
    return path


OUTCOME_TABLES = (("accepted", Table.GUARDED_EVENTS), ("dropped_consent", Table.CONSENT_DROPS),
                  ("quarantined", Table.QUARANTINE), ("duplicate", Table.DUPLICATES))


def _files_query() -> str:
    """Every export file with its rows and their outcomes (an empty file too: all zeros)."""
    picks = ", ".join(f"coalesce({name}.n, 0) AS {name}" for name, _ in OUTCOME_TABLES)
    joins = " ".join(f"LEFT JOIN (SELECT source_file, count(*) AS n FROM {table} GROUP BY source_file) {name} "
                     "USING (source_file)" for name, table in OUTCOME_TABLES)
    return (f"SELECT source_file, f.file_date, f.format, f.intraday, f.input_rows, {picks} "
            f"FROM {Table.FILES} f {joins} ORDER BY source_file")


def guard_files(con: duckdb.DuckDBPyConnection, out_dir: Path, context: RunContext, settings: Settings,
                guard: GuardReport, kpis: KpiSummary) -> dict[str, Path]:
    """daily_kpis.csv, reconciliation.csv (per day), files.csv (per file), quarantine.csv, run_summary.json."""
    files = {
        "daily_kpis": write_query(con, f"SELECT *, ? AS currency FROM {kpis.table} ORDER BY event_date, channel",
                                  out_dir / "daily_kpis.csv", [settings.currency]),
        "files": write_query(con, _files_query(), out_dir / "files.csv"),
        "reconciliation": write_query(con, f"SELECT * FROM {Table.DAILY_OUTCOMES} ORDER BY event_date",
                                      out_dir / "reconciliation.csv"),
        "quarantine": write_query(con, "SELECT lineage_id, event_date, source_file, source_line, field, reason, "
                                       f"row_hmac FROM {Table.QUARANTINE} ORDER BY source_file, source_line",
                                  out_dir / "quarantine.csv"),
    }
    by_channel = con.execute(
        f"""SELECT channel, sum(sessions)::BIGINT, sum(purchases)::BIGINT, round(sum(revenue), 2),
        round(sum(spend), 2) FROM {kpis.table} GROUP BY channel ORDER BY channel"""
    ).fetchall()
    summary = {
        "lineage_id": context.lineage_id, "processed_at": context.processed_at.isoformat(),
        "key_id": context.key_id, "totals": guard.totals, "consent_null_means": guard.consent_null_means,
        "first_day": kpis.first_day.isoformat(), "last_day": kpis.last_day.isoformat(),
        "partial_last_day": kpis.partial_last_day, "currency": settings.currency,
        "kpis_by_channel": [{"channel": r[0], "sessions": r[1], "purchases": r[2], "revenue": r[3], "spend": r[4]}
                            for r in by_channel],
    }
    files["run_summary"] = out_dir / "run_summary.json"
    files["run_summary"].write_text(json.dumps(summary, indent=2) + "\n")
    return files


def segment_files(con: duckdb.DuckDBPyConnection, out_dir: Path, segments: Segmentation) -> dict[str, Path]:
    query = (f"SELECT lineage_id, user_key, segment, rule, reason, recency_days, sessions, orders, monetary, "
             f"avg_order_value, pages_per_session, session_duration_s, engagement_s, coupon_share "
             f"FROM {segments.table} ORDER BY user_key")
    return {"segments": write_query(con, query, out_dir / "segments.csv")}


def creative_files(out_dir: Path, context: RunContext, creatives: CreativeLibrary) -> dict[str, Path]:
    return {"creatives": write_frame(creatives_frame(creatives, context.lineage_id), out_dir / "creatives.csv")}


def forecast_files(out_dir: Path, context: RunContext, settings: Settings, forecast: ForecastPlan
                   ) -> dict[str, Path]:
    """forecast.csv (total revenue), forecast_series.csv (every channel and segment), the backtest's
    leaderboard and the fan chart."""
    f, currency = forecast.forecast, settings.currency
    if f is None:
        return {}
    total = f.to_frame().assign(currency=currency)
    total.insert(0, "lineage_id", context.lineage_id)
    return {
        "forecast": write_frame(total, out_dir / "forecast.csv"),
        "forecast_series": write_frame(forecast.breakdown.assign(lineage_id=context.lineage_id, currency=currency),
                                       out_dir / "forecast_series.csv"),
        "forecast_backtest": write_frame(pd.DataFrame(list(f.leaderboard)), out_dir / "forecast_backtest.csv"),
        "fan_chart": plot_fan_chart(f, out_dir / "fan_chart.png", ylabel=f"revenue ({currency})",
                                    title=f"Total daily revenue: {len(f.dates)}-day forecast ({f.engine})"),
    }


def allocation_files(out_dir: Path, context: RunContext, settings: Settings, allocate: AllocationPlan
                     ) -> dict[str, Path]:
    """allocation.csv and, for the curve method, the curves, the what-if sweep and its chart."""
    if allocate.allocation is None:
        return {}
    currency = settings.currency
    files = {"allocation": write_frame(allocation_frame(allocate.allocation, context.lineage_id)
                                       .assign(currency=currency), out_dir / "allocation.csv")}
    if allocate.curves is not None:
        from flashcast.budget.charts import plot_curves, plot_whatif  # scipy: see stages.allocate.run

        files["response_curves"] = plot_curves(allocate.curves, out_dir / "response_curves.png", currency=currency)
        files["whatif"] = write_frame(pd.DataFrame(allocate.curves.whatif).assign(currency=currency),
                                      out_dir / "whatif.csv")
        files["whatif_chart"] = plot_whatif(allocate.curves.whatif, out_dir / "whatif.png", currency=currency)
    return files


def payload_files(out_dir: Path, payload: Payload | Skipped) -> dict[str, Path]:
    if isinstance(payload, Skipped):
        return {}
    return {"payload": write_payload(payload, out_dir / "payload.json")}


WRITERS: tuple[Callable[..., dict[str, Path]], ...] = (
    guard_files, segment_files, creative_files, forecast_files, allocation_files, payload_files,
)


def report_file(out_dir: Path, published_dir: Path, context: RunContext, settings: Settings, ingest: StagedExport,
                guard: GuardReport, kpis: KpiSummary, segments: Segmentation, creatives: CreativeLibrary,
                forecast: ForecastPlan, allocate: AllocationPlan, files: dict[str, Path]) -> dict[str, Path]:
    return {"report": write_report(out_dir / "report.md", lineage_id=context.lineage_id, currency=settings.currency,
                                   ingest=ingest, guard=guard, kpis=kpis, segments=segments, creatives=creatives,
                                   forecast=forecast, allocate=allocate, files=files,
                                   head_file=published_dir / "lineage_head.json",
                                   buyers=settings.delivery.platform_of)}


def write_outputs(values: Mapping[str, Any]) -> dict[str, Path]:
    """Every writer's files, then report.md linking them. `values` holds `out_dir`, `con`, `context`
    and the stages' records by stage name; a writer whose stages did not run (`flashcast ingest`
    runs only the governed data path) is left out, and so is the report."""
    files: dict[str, Path] = {}
    for writer in WRITERS:
        if not missing_inputs(writer, values):
            files |= call(writer, values)
    full = {**values, "files": files}
    return files | (call(report_file, full) if not missing_inputs(report_file, full) else {})


# ------------------------------------------------------------------ a command's files, whole or not at all

# ------------------------------------------------------------------ one finished run per folder

def staging_folder(out_dir: Path, lineage_id: str) -> Path:
    """A fresh sibling of `out_dir` the run writes into; swapped in whole when the run finishes, so
    `out_dir` always holds exactly one finished run. Partial folders of runs that are no longer
    running (killed) are removed first."""
    out_dir = out_dir.resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is a file, not an output folder")
    staging = out_dir.parent / f".{out_dir.name}.{lineage_id}.partial"
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
    except OSError as exc:  # a read-only or special file system, no permission, a full disk
        raise ConfigError(f"{out_dir}: cannot write an output folder there ({exc.strerror or type(exc).__name__})"
                          ) from exc
    return staging


def remove_stale_staging(out_dir: Path, running: set[str]) -> None:
    """Delete partial folders next to `out_dir` left by runs that are not running any more."""
    out_dir = out_dir.resolve()
    for partial in out_dir.parent.glob(f".{out_dir.name}.*.partial"):
        if partial.name.removeprefix(f".{out_dir.name}.").removesuffix(".partial") not in running:
            shutil.rmtree(partial, ignore_errors=True)


def publish(staging: Path, out_dir: Path) -> None:
    """Put `staging` in the place of `out_dir` in one step (the previous run's folder and any failure
    notice go with it), atomically where the system allows."""
    out_dir = out_dir.resolve()
    if out_dir.exists() and exchange(staging, out_dir):
        shutil.rmtree(staging)  # now the previous run's folder
    else:
        old = out_dir.parent / f".{out_dir.name}.{staging.name}.old"
        if out_dir.exists():
            out_dir.rename(old)
        staging.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(failed_folder(out_dir), ignore_errors=True)


def failed_folder(out_dir: Path) -> Path:
    return out_dir.resolve().parent / f"{out_dir.resolve().name}.failed"


def keep_failed(staging: Path, out_dir: Path, *, lineage_id: str, step: str, message: str) -> Path:
    """After a failure: the failed run's files (its OpenLineage events, whatever it wrote) move to
    `<out>.failed/` with FAILED.md, and `<out>/LAST_RUN_FAILED.md` flags the finished run still there."""
    target = failed_folder(out_dir)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    note = (f"# Run {lineage_id} failed\n\nAt step `{step}`: {message}\n\n"
            "Nothing of this run was published; the output folder still holds the last finished run.\n")
    (target / "FAILED.md").write_text(note, encoding="utf-8")
    if out_dir.is_dir():
        (out_dir / "LAST_RUN_FAILED.md").write_text(
            note + f"\nThe failed run's files: {target}\n", encoding="utf-8")
    return target
