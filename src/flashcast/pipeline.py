"""The pipeline: wires the stages in order. The one function the CLI and the API both call.

A run does its SQL in a private in-memory DuckDB connection, copies guarded tables into the
warehouse under its lock, records operational facts (run, reconciliation, lineage entries) in the
ops store, and writes its human- and machine-readable outputs to `out_dir`. Every stage is
bracketed by lineage entries; a failure is recorded (redacted) and re-raised as StageError.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from flashcast.config import Settings
from flashcast.errors import FlashcastError, StageError
from flashcast.keys import PiiKey
from flashcast.lineage import DatasetRef, LineageLog, LogHead, OpenLineageEmitter, job_name, new_lineage_id
from flashcast.llm.base import Provider
from flashcast.llm.tasks import build_client
from flashcast.plan import (
    PlanParts,
    allocation_frame,
    breakdown_forecasts,
    budget_allocation,
    build_payload,
    creative_library,
    creatives_frame,
    last_complete_day,
    revenue_forecast,
    segment_users,
    write_frame,
)
from flashcast.privacy import redact_message
from flashcast.report import write_report
from flashcast.stages.allocate_curves import plot_curves, plot_whatif
from flashcast.stages.forecast import bands_are_nested, plot_fan_chart, summarize
from flashcast.stages.guard import (
    GUARD_TABLES,
    GuardReport,
    RunContext,
    guard_export,
    install_privacy_functions,
)
from flashcast.stages.ingest import stage_export
from flashcast.stages.kpis import KpiSummary, daily_channel_kpis, load_spend
from flashcast.stages.payload import write_payload
from flashcast.store import OpsStore, transform_connection, warehouse_session

JOB = "run"
PERSISTED_TABLES = (*GUARD_TABLES, "sessions", "daily_kpis", "daily_outcomes", "user_segments", "creatives",
                    "allocations")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RunInputs:
    """Where a run reads from: a GA4 export (file or folder) and, optionally, a spend file."""

    export: Path
    spend: Path | None = None


@dataclass(frozen=True)
class RunResult:
    lineage_id: str
    out_dir: Path
    guard: GuardReport
    kpis: KpiSummary
    head: LogHead
    plan: PlanParts
    outputs: dict[str, Path] = field(default_factory=dict)


@dataclass
class _RunState:
    settings: Settings
    run: RunContext
    ops: OpsStore
    log: LineageLog
    emitter: OpenLineageEmitter
    progress: Progress
    stage: str = "start"
    llm_provider: Provider | None = None  # overrides the configured provider (tests, stand-ins)


def run_pipeline(
    settings: Settings, inputs: RunInputs, out_dir: Path, *, key: PiiKey, progress: Progress | None = None,
    llm_provider: Provider | None = None,
) -> RunResult:
    """Ingest -> guard -> daily KPIs -> warehouse + outputs, stamped with one lineage_id."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ops = OpsStore(settings.store.ops_database_url)
    run = RunContext(new_lineage_id(), datetime.now(UTC), key.key_id)
    state = _RunState(settings, run, ops, LineageLog(ops), OpenLineageEmitter(settings.lineage, out_dir),
                      progress or (lambda _msg: None), llm_provider=llm_provider)
    input_refs = _input_refs(inputs)
    _start(state, inputs, input_refs)
    try:
        result = _run_stages(state, inputs, out_dir, key)
    except BaseException as exc:
        _fail(state, exc, input_refs)
        if isinstance(exc, FlashcastError | duckdb.Error | OSError | ValueError):
            raise StageError(state.stage, exc) from exc
        raise
    finally:
        ops.dispose()
    return result


def _run_stages(state: _RunState, inputs: RunInputs, out_dir: Path, key: PiiKey) -> RunResult:
    settings, run = state.settings, state.run
    con = transform_connection()
    try:
        with _stage(state, "ingest"):
            staged = stage_export(con, inputs.export)
            state.log.append("stage_completed", run.lineage_id, {
                "stage": "ingest", "files": [f.name for f in staged.files], "input_rows": staged.input_rows})
        with _stage(state, "guard"):
            install_privacy_functions(con, key, settings.policy)
            report = guard_export(con, staged, policy=settings.policy, run=run)
            _daily_outcomes_table(con, report, run)
            state.log.append("stage_completed", run.lineage_id, {
                "stage": "guard", "key_id": run.key_id, "consent_null_means": settings.policy.consent_null_means,
                "totals": report.totals})
        with _stage(state, "kpis"):
            spend_table = None
            if inputs.spend is not None:
                load_spend(con, inputs.spend, mapping=settings.channels)
                spend_table = "spend"
            kpis = daily_channel_kpis(con, spend=spend_table, mapping=settings.channels,
                                      timezone=settings.property_timezone)
            state.log.append("stage_completed", run.lineage_id, {
                "stage": "kpis", "first_day": kpis.first_day.isoformat(), "last_day": kpis.last_day.isoformat(),
                "partial_last_day": kpis.partial_last_day})
        parts = _plan_stages(state, con, kpis)
        with _stage(state, "payload"):
            outputs = _write_outputs(con, out_dir, report, kpis, run)
            outputs |= _write_plan(con, out_dir, parts, run)
            head = state.log.head()
            payload = build_payload(parts, run=run, report=report, head=head,
                                    for_date=last_complete_day(kpis) + timedelta(days=2))
            outputs["payload"] = write_payload(payload, out_dir / "payload.json")
            state.log.append("stage_completed", run.lineage_id, {
                "stage": "payload", "schema_version": payload.schema_version, "creatives": len(payload.creatives),
                "budget": payload.allocations.budget, "anchored_head": head.to_json()})
            outputs["report"] = write_report(out_dir / "report.md", lineage_id=run.lineage_id, report=report,
                                             kpis=kpis, parts=parts, files=outputs)
        with _stage(state, "persist"):
            _persist(con, settings)
            _record_reconciliation(state.ops, report, run)
    finally:
        con.close()
    return _complete(state, out_dir, report, kpis, parts, outputs)


def _plan_stages(state: _RunState, con: duckdb.DuckDBPyConnection, kpis: KpiSummary) -> PlanParts:
    settings, run = state.settings, state.run
    def record_call(entry: dict[str, Any]) -> None:
        state.log.append("llm_call", run.lineage_id, entry)  # every LLM call is on the record

    client = build_client(settings.llm, settings.store.home / "llm_cache.sqlite", record=record_call,
                          provider=state.llm_provider)
    llm_name = "offline" if client is None else f"{client.provider.name}:{client.provider.model}"
    with _stage(state, "segments"):
        segmentation, seg_note = segment_users(con, kpis, settings, client)
        state.log.append("stage_completed", run.lineage_id, {
            "stage": "segments", "method": settings.segments.method if client is None or seg_note else "llm-kmeans",
            "llm": llm_name, "fallback": seg_note, "users": segmentation.users,
            "sizes": {p.segment: p.users for p in segmentation.profiles}, "rules": segmentation.rule_counts,
            "thresholds": segmentation.thresholds})
    with _stage(state, "creatives"):
        creatives, copy_note = creative_library(settings, segmentation, client)
        state.log.append("stage_completed", run.lineage_id, {
            "stage": "creatives", "generator": "templates" if client is None or copy_note else llm_name,
            "fallback": copy_note,
            "lights": {light: sum(c.light == light for c in creatives) for light in ("green", "amber", "red")}})
    with _stage(state, "forecast"):
        forecast = revenue_forecast(con, kpis, settings)
        if not bands_are_nested(forecast):
            raise ValueError("forecast bands are not nested")
        breakdown = breakdown_forecasts(con, kpis, segmentation.table, settings)
        state.log.append("stage_completed", run.lineage_id, {
            "stage": "forecast", **summarize(forecast), "notes": list(forecast.notes),
            "breakdown_series": sorted(breakdown["series_id"].unique().tolist()) if len(breakdown) else [],
            "breakdown_skipped": [redact_message(m) for m in breakdown.attrs.get("skipped", [])]})
    with _stage(state, "allocate"):
        allocation, curves = budget_allocation(con, kpis, settings)
        fit_summary = {} if curves is None else {
            c: {"form": f.curve.form, "decay": f.curve.decay, "slope": round(f.curve.slope, 4), "r2": f.diagnostics.r2,
                "fallback": f.fallback} for c, f in curves.fits.items()}
        state.log.append("stage_completed", run.lineage_id, {
            "stage": "allocate", "method": allocation.method, "budget": allocation.budget,
            "spend": allocation.spends, "bounds": {r.channel: r.bound for r in allocation.rows},
            "expected": allocation.expected_conversions, "gain_vs_inverse_cpa": allocation.gain_vs_inverse_cpa,
            "curves": fit_summary, "notes": list(allocation.notes)})
    return PlanParts(segmentation, creatives, forecast, allocation, curves, breakdown)


def _write_plan(con: duckdb.DuckDBPyConnection, out_dir: Path, parts: PlanParts, run: RunContext) -> dict[str, Path]:
    """Write the plan's files and register its tables in the run connection for the warehouse."""
    creatives = creatives_frame(parts.creatives, run.lineage_id)
    allocations = allocation_frame(parts.allocation, run.lineage_id)
    con.register("_creatives_df", creatives)
    con.register("_allocations_df", allocations)
    con.execute("CREATE OR REPLACE TEMP TABLE creatives AS SELECT * FROM _creatives_df")
    con.execute("CREATE OR REPLACE TEMP TABLE allocations AS SELECT * FROM _allocations_df")
    forecast = parts.forecast.to_frame()
    forecast.insert(0, "lineage_id", run.lineage_id)
    if parts.curves is not None:
        extra = {"response_curves": plot_curves(parts.curves, out_dir / "response_curves.png"),
                 "whatif": write_frame(pd.DataFrame(parts.curves.whatif), out_dir / "whatif.csv"),
                 "whatif_chart": plot_whatif(parts.curves.whatif, out_dir / "whatif.png")}
    else:
        extra = {}
    files = {
        **extra,
        "segments": out_dir / "segments.csv",
        "creatives": write_frame(creatives, out_dir / "creatives.csv"),
        "allocation": write_frame(allocations, out_dir / "allocation.csv"),
        "forecast": write_frame(forecast, out_dir / "forecast.csv"),
        "forecast_series": write_frame(parts.breakdown.assign(lineage_id=run.lineage_id),
                                       out_dir / "forecast_series.csv"),
        "forecast_backtest": write_frame(pd.DataFrame(list(parts.forecast.leaderboard)),
                                         out_dir / "forecast_backtest.csv"),
        "fan_chart": plot_fan_chart(parts.forecast, out_dir / "fan_chart.png"),
    }
    _write_csv(con, f"SELECT lineage_id, user_key, segment, rule, reason, recency_days, sessions, orders, monetary, "
                    f"avg_order_value, pages_per_session, session_duration_s, engagement_s, coupon_share "
                    f"FROM {parts.segmentation.table} ORDER BY user_key", files["segments"])
    return files


@contextmanager
def _stage(state: _RunState, name: str) -> Iterator[None]:
    state.stage = name
    state.progress(name)
    yield


def _input_refs(inputs: RunInputs) -> list[DatasetRef]:
    refs = [DatasetRef("file", str(inputs.export.resolve()))]
    if inputs.spend is not None:
        refs.append(DatasetRef("file", str(inputs.spend.resolve())))
    return refs


def _start(state: _RunState, inputs: RunInputs, refs: list[DatasetRef]) -> None:
    run = state.run
    with state.ops.transaction() as conn:
        conn.execute(state.ops.runs.insert().values(
            lineage_id=run.lineage_id, job=JOB, status="running", started_at=run.processed_at.isoformat(),
            config_digest=state.settings.digest(), key_id=run.key_id))
    state.log.append("run_started", run.lineage_id, {
        "job": JOB, "processed_at": run.processed_at.isoformat(), "config_digest": state.settings.digest(),
        "key_id": run.key_id, "inputs": [r.name for r in refs]})
    state.emitter.emit("START", run_id=run.lineage_id, job=job_name(JOB), inputs=refs)


def _fail(state: _RunState, exc: BaseException, refs: list[DatasetRef]) -> None:
    message = redact_message(f"{type(exc).__name__}: {exc}")[:2000]
    run = state.run
    try:
        state.log.append("run_failed", run.lineage_id, {"stage": state.stage, "error": message})
        with state.ops.transaction() as conn:
            conn.execute(state.ops.runs.update().where(state.ops.runs.c.lineage_id == run.lineage_id).values(
                status="failed", finished_at=datetime.now(UTC).isoformat(), error=message))
        state.emitter.emit("FAIL", run_id=run.lineage_id, job=job_name(JOB), inputs=refs, error=message)
    except Exception:  # recording the failure must not hide the failure itself
        pass


def _complete(
    state: _RunState, out_dir: Path, report: GuardReport, kpis: KpiSummary, parts: PlanParts,
    outputs: dict[str, Path],
) -> RunResult:
    run = state.run
    digests = {name: _file_sha256(path) for name, path in sorted(outputs.items())}
    head = state.log.append("run_completed", run.lineage_id, {"outputs": digests, "totals": report.totals})
    head_file = out_dir / "lineage_head.json"
    head_file.write_text(json.dumps({"lineage_id": run.lineage_id, **head.to_json()}, indent=2) + "\n")
    summary = {"totals": report.totals, "lineage_head": head.to_json(), "out_dir": str(out_dir.resolve()),
               "first_day": kpis.first_day.isoformat(), "last_day": kpis.last_day.isoformat()}
    with state.ops.transaction() as conn:
        conn.execute(state.ops.runs.update().where(state.ops.runs.c.lineage_id == run.lineage_id).values(
            status="completed", finished_at=datetime.now(UTC).isoformat(), summary=summary))
    warehouse = state.settings.store.warehouse_path.resolve()
    state.emitter.emit("COMPLETE", run_id=run.lineage_id, job=job_name(JOB), inputs=[],
                       outputs=[DatasetRef(f"duckdb://{warehouse}", t) for t in PERSISTED_TABLES])
    outputs = {**outputs, "lineage_head": head_file}
    if state.emitter.event_file.exists():
        outputs["openlineage"] = state.emitter.event_file
    return RunResult(run.lineage_id, out_dir, report, kpis, head, parts, outputs)


def _daily_outcomes_table(con: duckdb.DuckDBPyConnection, report: GuardReport, run: RunContext) -> None:
    con.execute(
        """CREATE OR REPLACE TEMP TABLE daily_outcomes (lineage_id VARCHAR, event_date VARCHAR, input_rows BIGINT,
        accepted BIGINT, dropped_consent BIGINT, quarantined BIGINT, duplicate BIGINT, dropped_share DOUBLE)"""
    )
    rows = [(run.lineage_id, d.event_date, d.input_rows, d.accepted, d.dropped_consent, d.quarantined,
             d.duplicate, round(d.dropped_share, 6)) for d in report.days]
    if rows:
        con.executemany("INSERT INTO daily_outcomes VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)


def _persist(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """Append this run's guarded tables to the warehouse, holding its lock only for the copy."""
    with warehouse_session(con, settings.store.warehouse_path, timeout_s=settings.store.lock_timeout_s) as wh:
        con.execute("BEGIN TRANSACTION")
        try:
            for table in PERSISTED_TABLES:
                con.execute(f"CREATE TABLE IF NOT EXISTS {wh}.main.{table} AS SELECT * FROM {table} WITH NO DATA")
                _add_new_columns(con, f"{wh}.main.{table}", table)
                con.execute(f"INSERT INTO {wh}.main.{table} BY NAME SELECT * FROM {table}")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise


def _add_new_columns(con: duckdb.DuckDBPyConnection, target: str, source: str) -> None:
    """Warehouse tables only grow: a column a newer version adds is added (NULL for older runs)."""
    existing = {r[0] for r in con.execute(f"DESCRIBE {target}").fetchall()}
    for name, dtype, *_ in con.execute(f"DESCRIBE {source}").fetchall():
        if name not in existing:
            con.execute(f'ALTER TABLE {target} ADD COLUMN "{name}" {dtype}')


def _write_outputs(
    con: duckdb.DuckDBPyConnection, out_dir: Path, report: GuardReport, kpis: KpiSummary, run: RunContext
) -> dict[str, Path]:
    outputs = {
        "daily_kpis": out_dir / "daily_kpis.csv",
        "reconciliation": out_dir / "reconciliation.csv",
        "quarantine": out_dir / "quarantine.csv",
    }
    queries = {
        "daily_kpis": f"SELECT * FROM {kpis.table} ORDER BY event_date, channel",
        "reconciliation": "SELECT * FROM daily_outcomes ORDER BY event_date",
        "quarantine": "SELECT lineage_id, event_date, source_file, source_line, field, reason, row_hmac "
                      "FROM quarantine ORDER BY source_file, source_line",
    }
    for name, query in queries.items():
        _write_csv(con, query, outputs[name])
    summary_file = out_dir / "run_summary.json"
    summary_file.write_text(json.dumps({
        "lineage_id": run.lineage_id, "processed_at": run.processed_at.isoformat(), "key_id": run.key_id,
        "totals": report.totals, "consent_null_means": report.consent_null_means,
        "first_day": kpis.first_day.isoformat(), "last_day": kpis.last_day.isoformat(),
        "partial_last_day": kpis.partial_last_day,
        "kpis_by_channel": _channel_totals(con, kpis),
    }, indent=2) + "\n")
    outputs["run_summary"] = summary_file
    return outputs


def _write_csv(con: duckdb.DuckDBPyConnection, query: str, path: Path) -> None:
    cursor = con.execute(query)
    columns = [d[0] for d in cursor.description or []]
    rows = cursor.fetchall()
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)


def _channel_totals(con: duckdb.DuckDBPyConnection, kpis: KpiSummary) -> list[dict[str, Any]]:
    rows = con.execute(
        f"""SELECT channel, sum(sessions)::BIGINT, sum(purchases)::BIGINT, round(sum(revenue), 2),
        round(sum(spend), 2) FROM {kpis.table} GROUP BY channel ORDER BY channel"""
    ).fetchall()
    return [{"channel": r[0], "sessions": r[1], "purchases": r[2], "revenue": r[3], "spend": r[4]} for r in rows]


def _record_reconciliation(ops: OpsStore, report: GuardReport, run: RunContext) -> None:
    ops.insert(ops.reconciliation, [
        {"lineage_id": run.lineage_id, "event_date": d.event_date, "input_rows": d.input_rows,
         "accepted": d.accepted, "dropped_consent": d.dropped_consent, "quarantined": d.quarantined,
         "duplicate": d.duplicate}
        for d in report.days
    ])


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()

