"""The pipeline: the stages in order and the loop that runs them. The one function the CLI calls.

A run does its SQL in a private in-memory DuckDB connection. Each stage is a function named `run`
in its module that takes records of earlier stages and the run's context by parameter name (see
`flashcast.wiring`) and returns one record. Around every stage the hooks run: the lineage recorder
writes stage_started / stage_completed entries and the progress callback reports the stage. The
tables a stage reads and writes are declared here and checked; after the last stage the outputs are
written, the kept tables go to the warehouse under its lock (guarded rows replace those of the files
read again, decisions are appended: see `flashcast.history`) and the run is completed.
A failure is recorded (redacted) and raised as StageError naming the step.

Adding a stage (3 places): a module in `stages/` with a `run` function returning a record with a
`lineage()` method (defined in the module; in `records.py` once other stages read it), one line in
STAGES, and (if it writes files) a writer in `outputs.py`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import duckdb

from flashcast.approvals import latest_decisions
from flashcast.config import Settings
from flashcast.delivery import record_payload
from flashcast.engine import DuckEngine, Engine
from flashcast.errors import FlashcastError, StageError
from flashcast.history import WarehouseSnapshot, persist_run, row_count
from flashcast.keys import PiiKey
from flashcast.lineage import DatasetRef, LogHead, OpenLineageEmitter, RunRecorder, new_lineage_id
from flashcast.llm.base import Provider
from flashcast.llm.tasks import build_client
from flashcast.outputs import keep_failed, publish, remove_stale_staging, staging_folder, write_outputs
from flashcast.privacy import redact_message
from flashcast.records import (
    AllocationPlan,
    CreativeLibrary,
    ForecastPlan,
    GuardReport,
    KpiSummary,
    RunContext,
    RunInputs,
    Segmentation,
    Skipped,
    StagedExport,
    Table,
)
from flashcast.stages import allocate, creatives, forecast, guard, ingest, kpis, payload, segments
from flashcast.stages.payload import Payload
from flashcast.store import OpsStore, transform_connection
from flashcast.wiring import call, missing_inputs, parameters

JOB = "run"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Stage:
    """A step of the pipeline: its name (also the name its record is passed on by), its function,
    the tables it reads and writes, and which of those the warehouse keeps."""

    name: str
    run: Callable[..., Any]
    reads: tuple[Table, ...] = ()
    writes: tuple[Table, ...] = ()
    keeps: tuple[Table, ...] = ()


T = Table
STAGES: tuple[Stage, ...] = (
    Stage("ingest", ingest.run, writes=(T.STAGED, T.FILES), keeps=(T.FILES,)),
    Stage("guard", guard.run, reads=(T.STAGED, T.FILES),
          writes=(T.GUARDED_EVENTS, T.QUARANTINE, T.CONSENT_DROPS, T.DUPLICATES, T.DAILY_OUTCOMES),
          keeps=(T.GUARDED_EVENTS, T.QUARANTINE, T.CONSENT_DROPS, T.DUPLICATES, T.DAILY_OUTCOMES)),
    Stage("kpis", kpis.run, reads=(T.GUARDED_EVENTS,), writes=(T.SPEND, T.SESSIONS, T.DAILY_KPIS),
          keeps=(T.SESSIONS, T.DAILY_KPIS)),
    Stage("segments", segments.run, reads=(T.GUARDED_EVENTS, T.SESSIONS),
          writes=(T.USER_FEATURES, T.USER_SEGMENTS), keeps=(T.USER_SEGMENTS,)),
    Stage("creatives", creatives.run, writes=(T.CREATIVES,), keeps=(T.CREATIVES,)),
    Stage("forecast", forecast.run, reads=(T.DAILY_KPIS, T.GUARDED_EVENTS, T.USER_SEGMENTS),
          writes=(T.FORECAST_SELECTIONS,), keeps=(T.FORECAST_SELECTIONS,)),
    Stage("allocate", allocate.run, reads=(T.DAILY_KPIS,), writes=(T.ALLOCATIONS,), keeps=(T.ALLOCATIONS,)),
    Stage("payload", payload.run, reads=(T.USER_SEGMENTS, T.GUARDED_EVENTS)),
)
# What every stage may ask for besides earlier stages' records.
CONTEXT = ("con", "engine", "settings", "inputs", "context", "key", "llm", "head", "snapshot")
# The warehouse's tables, in catalog order.
KEPT_TABLES: tuple[Table, ...] = tuple(t for t in Table if any(t in s.keeps for s in STAGES))


def check_wiring(stages: tuple[Stage, ...]) -> None:
    """Every stage's inputs are context or records of earlier stages; it keeps only what it writes."""
    available = set(CONTEXT)
    for stage in stages:
        missing = missing_inputs(stage.run, available)
        if missing:
            raise TypeError(f"stage {stage.name} needs {missing}: neither context nor an earlier stage's record")
        if not set(stage.keeps) <= set(stage.writes):
            raise TypeError(f"stage {stage.name} keeps tables it does not write")
        available.add(stage.name)


check_wiring(STAGES)


class StageHook(Protocol):
    """Called around every stage (Hamilton's node execution hooks)."""

    def before_stage(self, stage: str, reads: Mapping[str, int]) -> None: ...

    def after_stage(self, stage: str, record: Any, writes: Mapping[str, int], seconds: float) -> None: ...


@dataclass(frozen=True)
class ProgressHook:
    progress: Progress

    def before_stage(self, stage: str, reads: Mapping[str, int]) -> None:
        rows = ", ".join(f"{n:,} {table} rows" for table, n in reads.items() if table != Table.FILES)
        self.progress(f"{stage}: {rows}" if rows else stage)

    def after_stage(self, stage: str, record: Any, writes: Mapping[str, int], seconds: float) -> None:
        pass


@dataclass(frozen=True)
class RunResult:
    """A finished run: its id, output folder, every stage's record by stage name, the lineage head
    after it and the files it wrote."""

    lineage_id: str
    out_dir: Path
    records: Mapping[str, Any]
    head: LogHead
    outputs: dict[str, Path] = field(default_factory=dict)

    @property
    def problems(self) -> list[str]:
        """What failed softly (the rest of the run stands): '<stage>: <error>' per stage."""
        return _problems(self.records)

    @property
    def ingest(self) -> StagedExport:
        return self.records["ingest"]

    @property
    def guard(self) -> GuardReport:
        return self.records["guard"]

    @property
    def kpis(self) -> KpiSummary:
        return self.records["kpis"]

    @property
    def segments(self) -> Segmentation:
        return self.records["segments"]

    @property
    def creatives(self) -> CreativeLibrary:
        return self.records["creatives"]

    @property
    def forecast(self) -> ForecastPlan:
        return self.records["forecast"]

    @property
    def allocation(self) -> AllocationPlan:
        return self.records["allocate"]

    @property
    def payload(self) -> Payload | Skipped:
        return self.records["payload"]

    def attention(self, *, approvals: bool = True) -> list[str]:
        """What a person should look at before trusting the plan (see `attention_items`)."""
        return _attention(self.records, approvals=approvals)


def _attention(records: Mapping[str, Any], *, approvals: bool = True) -> list[str]:
    from flashcast.report import attention_items

    return attention_items(ingest=records.get("ingest"), guard=records.get("guard"), kpis=records.get("kpis"),
                           segments=records.get("segments"), creatives=records.get("creatives"),
                           forecast=records.get("forecast"), allocate=records.get("allocate"), approvals=approvals)


def _problems(records: Mapping[str, Any]) -> list[str]:
    return [f"{name}: {failure}" for name, record in records.items()
            if (failure := getattr(record, "failure", None))]


GOVERNED_DATA = "kpis"  # the last stage of the governed data path (ingest, guard, daily KPIs)


def run_pipeline(
    settings: Settings, inputs: RunInputs, out_dir: Path, *, key: PiiKey, progress: Progress | None = None,
    llm_provider: Provider | None = None, through: str | None = None, job: str = JOB, lineage_id: str | None = None,
) -> RunResult:
    """Every stage on `inputs`, stamped with one lineage_id; outputs in `out_dir`, guarded tables in the
    warehouse, the run and its lineage in the ops store. `llm_provider` overrides the configured one.

    The outputs are written to a staging folder next to `out_dir` and swapped in whole at the end, so
    `out_dir` always holds exactly one finished run; a failed run's files go to `<out_dir>.failed/`
    and `out_dir` gets a LAST_RUN_FAILED.md note. Runs left 'running' by a killed process are marked
    'abandoned' first. `through` stops after that stage (`GOVERNED_DATA`: `flashcast ingest`).
    `lineage_id`: the run's id when the caller must know it before the run starts (the API)."""
    names = [s.name for s in STAGES]
    stages = STAGES[: names.index(through) + 1] if through else STAGES
    kept = tuple(t for t in KEPT_TABLES if any(t in s.keeps for s in stages))
    # the run's connection first: a setting it cannot use ([store] temp_directory) stops the run before
    # it is recorded or has a staging folder
    con = transform_connection(memory_limit=settings.store.memory_limit, temp_directory=settings.store.spill_path)
    ops = OpsStore(settings.store.ops_database_url)
    ops.mark_abandoned()
    remove_stale_staging(out_dir, ops.running())
    decided = {i: d.decision for i, d in latest_decisions(ops).items()}
    context = RunContext(lineage_id or new_lineage_id(), datetime.now(UTC), key.key_id, decided)
    staging = staging_folder(out_dir, context.lineage_id)
    recorder = RunRecorder(ops, context, job=job, config_digest=settings.digest(),
                           emitter=OpenLineageEmitter(settings.lineage, staging))
    hooks: list[StageHook] = [recorder, ProgressHook(progress or (lambda _stage: None))]
    recorder.started(_input_refs(inputs))
    scope = ExitStack()
    step = "start"
    try:
        llm = build_client(settings.llm, settings.store.home / "llm_cache.sqlite", record=recorder.llm_call,
                           provider=llm_provider)
        engine = scope.enter_context(_engine(settings, con))
        snapshot = scope.enter_context(WarehouseSnapshot())  # the stored history, read in place
        values: dict[str, Any] = {"con": con, "engine": engine, "settings": settings, "inputs": inputs,
                                  "context": context, "key": key, "llm": llm, "out_dir": staging,
                                  "published_dir": out_dir, "snapshot": snapshot}
        if inputs.spend is not None and any(s.name == "kpis" for s in stages):
            step = "inputs"  # a bad spend file is named before the export is read, not after
            kpis.check_spend(inputs.spend, mapping=settings.channels)
        for stage in stages:
            step = stage.name
            values[stage.name] = _run_stage(stage, values, hooks, head=recorder.log.head)
        step = "outputs"
        outputs = write_outputs(values)
        step = "persist"
        persist_run(con, settings.store.warehouse_path, kept, timeout_s=settings.store.lock_timeout_s,
                    retention_days=settings.store.retention_days, snapshot=snapshot, log=recorder.log,
                    lineage_id=context.lineage_id)
        ops.record_reconciliation(context.lineage_id, values["guard"].days)
        if isinstance(values.get("payload"), Payload):
            record_payload(ops, json.loads(values["payload"].model_dump_json()))
        step = "publish"
        head = _complete(recorder, values, outputs, settings, out_dir, kept)
        publish(staging, out_dir)
    except BaseException as exc:
        recorder.failed(step, exc)
        failed = keep_failed(staging, out_dir, lineage_id=context.lineage_id, step=step,
                             message=redact_message(f"{type(exc).__name__}: {exc}")[:2000])
        if isinstance(exc, FlashcastError | duckdb.Error | OSError) and not isinstance(exc, StageError):
            raise StageError(step, exc, where=failed) from exc
        if isinstance(exc, StageError):
            exc.where = failed
        raise
    finally:
        scope.close()
        con.close()
        ops.dispose()
    records = {stage.name: values[stage.name] for stage in stages}
    final = {name: out_dir / path.relative_to(staging) for name, path in outputs.items()}
    return RunResult(context.lineage_id, out_dir, records, head, final)


@contextmanager
def _engine(settings: Settings, con: duckdb.DuckDBPyConnection) -> Iterator[Engine]:
    """Where ingest, guard and KPIs run: the run's connection, or a Spark session for the run."""
    if settings.engine.name == "spark":
        from flashcast.spark import spark_session

        with spark_session(settings.engine.spark, scratch=settings.store.spill_path / "spark") as spark:
            yield spark
    else:
        yield DuckEngine(con)


def _run_stage(stage: Stage, values: dict[str, Any], hooks: list[StageHook], *,
               head: Callable[[], LogHead]) -> Any:
    """One stage between its hooks, its declared tables checked before and after (in the run's
    connection, or for a table kept in a remote engine, there)."""
    con: duckdb.DuckDBPyConnection = values["con"]
    engine: Engine | None = values.get("engine")
    before = _tables(con, engine)
    absent = [str(t) for t in stage.reads if t not in before]
    if absent:
        raise StageError(stage.name, TypeError(f"tables {absent} are missing: no earlier stage wrote them"))
    for hook in hooks:
        hook.before_stage(stage.name, _row_counts(con, engine, stage.reads))
    if "head" in parameters(stage.run):  # the log's head as the stage starts, for anchoring
        values["head"] = head()
    start = time.perf_counter()
    record = call(stage.run, values)
    seconds = time.perf_counter() - start
    after = _tables(con, engine)
    undeclared = sorted(after - before - set(stage.writes))
    unwritten = [str(t) for t in stage.writes if t not in after]
    if undeclared or unwritten:
        raise StageError(stage.name, TypeError(
            f"tables written do not match the declaration: undeclared {undeclared}, declared but absent {unwritten}"))
    for hook in hooks:
        hook.after_stage(stage.name, record, _row_counts(con, engine, stage.writes), seconds)
    return record


def _tables(con: duckdb.DuckDBPyConnection, engine: Engine | None = None) -> set[str]:
    """The run's tables (helpers start with '_'; an outcome table joining stored rows is a view)."""
    remote = {n for n in engine.counts() if not n.startswith("_")} if engine is not None else set()
    return remote | {r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE temporary AND NOT starts_with(table_name, '_') "
        "UNION ALL SELECT view_name FROM duckdb_views() WHERE temporary AND NOT internal "
        "AND NOT starts_with(view_name, '_')").fetchall()}


def _row_counts(con: duckdb.DuckDBPyConnection, engine: Engine | None, tables: tuple[Table, ...]) -> dict[str, int]:
    """Rows of `tables`, counted where they are (only these: a view over the stored history is a scan)."""
    remote = engine.counts() if engine is not None else {}
    return {str(t): remote[str(t)] if str(t) in remote else row_count(con, t) for t in tables}


def _input_refs(inputs: RunInputs) -> list[DatasetRef]:
    refs = [DatasetRef("file", str(inputs.export.resolve()))]
    if inputs.spend is not None:
        refs.append(DatasetRef("file", str(inputs.spend.resolve())))
    return refs


def _complete(recorder: RunRecorder, values: dict[str, Any], outputs: dict[str, Path], settings: Settings,
              final_out: Path, kept: tuple[Table, ...]) -> LogHead:
    """run_completed, then the head file (an anchor kept outside the log) and the OpenLineage event file."""
    out_dir: Path = values["out_dir"]
    kpi_summary: KpiSummary = values["kpis"]
    warehouse = settings.store.warehouse_path.resolve()
    head = recorder.completed(
        outputs, totals=values["guard"].totals, problems=_problems(values),
        summary={"out_dir": str(final_out.resolve()), "first_day": kpi_summary.first_day.isoformat(),
                 "last_day": kpi_summary.last_day.isoformat(),
                 # for the dashboard, which shows the creatives that wait for approval on their own
                 "attention": _attention(values, approvals=False)},
        datasets=[DatasetRef(f"duckdb://{warehouse}", t) for t in kept])
    head_file = out_dir / "lineage_head.json"
    head_file.write_text(json.dumps({"lineage_id": recorder.context.lineage_id, **head.to_json()}, indent=2) + "\n")
    outputs["lineage_head"] = head_file
    if recorder.emitter.event_file.exists():
        outputs["openlineage"] = recorder.emitter.event_file
    return head

