"""Lineage: an append-only, hash-chained log in the ops store, OpenLineage run events, and the hook
that writes a run's entries.

Each log entry is canonical JSON (sorted keys, no spaces) holding the previous entry's hash, so
editing or deleting an entry breaks the chain. A truncated tail cannot be seen from the chain
alone; it is caught against anchors kept elsewhere: the head file each run writes to its output
folder and the head recorded with each finished run in the `runs` table.

`RunRecorder` is the only writer of a run's entries: run_started, then stage_started and
stage_completed around every stage (called by the pipeline as a hook, so no stage writes lineage),
llm_call for every LLM call, and run_failed or run_completed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError

from flashcast.config import LineageConfig
from flashcast.errors import LineageError, LineageTampered
from flashcast.privacy import redact_message
from flashcast.records import RunContext
from flashcast.store import OpsStore, this_process

GENESIS_HASH = "0" * 64
PRODUCER = "https://github.com/flashcast/flashcast"


def new_lineage_id() -> str:
    """A fresh OpenLineage run id (UUID v7: time-ordered)."""
    from openlineage.client.uuid import generate_new_uuid

    return str(generate_new_uuid())


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class LogHead:
    seq: int
    entry_hash: str

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "entry_hash": self.entry_hash}


@dataclass(frozen=True)
class VerifyReport:
    entries: int
    head: LogHead
    anchors_checked: int


class LineageLog:
    """The tamper-evident log. Safe for concurrent appenders from several processes."""

    def __init__(self, store: OpsStore) -> None:
        self.store = store
        self.table = store.lineage_log

    def append(self, kind: str, lineage_id: str, body: dict[str, Any]) -> LogHead:
        """Append one entry and return the new head. Retries if another process appended first."""
        for _attempt in range(50):
            try:
                with self.store.transaction() as conn:
                    head = self._head(conn)
                    entry = {
                        "seq": head.seq + 1,
                        "prev_hash": head.entry_hash,
                        "recorded_at": utc_now(),
                        "kind": kind,
                        "lineage_id": lineage_id,
                        "body": body,
                    }
                    text = canonical_json(entry)
                    digest = hashlib.sha256(text.encode()).hexdigest()
                    conn.execute(self.table.insert().values(seq=head.seq + 1, entry=text, entry_hash=digest))
                    return LogHead(head.seq + 1, digest)
            except (IntegrityError, OperationalError):
                continue  # lost the race for this seq (PostgreSQL) or the database was busy; re-read head
        raise LineageError("could not append to the lineage log after 50 attempts")

    def head(self) -> LogHead:
        with self.store.transaction() as conn:
            return self._head(conn)

    def _head(self, conn: sa.Connection) -> LogHead:
        row = conn.execute(
            sa.select(self.table.c.seq, self.table.c.entry_hash).order_by(self.table.c.seq.desc()).limit(1)
        ).first()
        return LogHead(0, GENESIS_HASH) if row is None else LogHead(int(row.seq), str(row.entry_hash))

    def entries(self, lineage_id: str | None = None) -> list[dict[str, Any]]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(sa.select(self.table.c.entry).order_by(self.table.c.seq)).scalars().all()
        parsed = [json.loads(text) for text in rows]
        return [e for e in parsed if lineage_id is None or e.get("lineage_id") == lineage_id]

    def verify(self, anchors: Iterable[LogHead] = ()) -> VerifyReport:
        """Walk the chain; raise LineageTampered naming every problem found."""
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(self.table.c.seq, self.table.c.entry, self.table.c.entry_hash).order_by(self.table.c.seq)
            ).all()
        problems: list[str] = []
        by_seq: dict[int, str] = {}
        expected_seq, prev_hash = 1, GENESIS_HASH
        for seq, text, stored_hash in rows:
            if seq != expected_seq:
                problems.append(f"entries {expected_seq}..{seq - 1} are missing (deleted)")
            actual = hashlib.sha256(text.encode()).hexdigest()
            if actual != stored_hash:
                problems.append(f"entry {seq} was edited: its content no longer matches its hash")
            try:
                entry = json.loads(text)
            except json.JSONDecodeError:
                problems.append(f"entry {seq} is not valid JSON")
                entry = {}
            if entry.get("seq") != seq:
                problems.append(f"entry {seq} records seq {entry.get('seq')}")
            if entry.get("prev_hash") != prev_hash and seq == expected_seq:
                problems.append(f"entry {seq} does not chain to entry {seq - 1}")
            by_seq[seq] = stored_hash
            expected_seq, prev_hash = seq + 1, stored_hash
        anchor_list = list(anchors)
        last_seq = expected_seq - 1
        for anchor in anchor_list:
            if anchor.seq > last_seq:
                problems.append(
                    f"log ends at entry {last_seq} but an anchor records entry {anchor.seq}: tail truncated"
                )
            elif by_seq.get(anchor.seq) != anchor.entry_hash:
                problems.append(f"entry {anchor.seq} differs from its anchor hash")
        if problems:
            raise LineageTampered(problems)
        return VerifyReport(entries=len(rows), head=LogHead(last_seq, prev_hash), anchors_checked=len(anchor_list))


def run_anchors(store: OpsStore) -> list[LogHead]:
    """Heads recorded with finished runs: the anchors kept outside the log itself."""
    with store.engine.connect() as conn:
        summaries = conn.execute(sa.select(store.runs.c.summary).where(store.runs.c.summary.is_not(None))).scalars()
        heads = [s.get("lineage_head") for s in summaries if isinstance(s, dict)]
    return [LogHead(int(h["seq"]), str(h["entry_hash"])) for h in heads if h]


def read_head_file(path: Path) -> LogHead:
    """An anchor written by a run (out/lineage_head.json); LineageError naming the file if unusable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        head = LogHead(int(data["seq"]), str(data["entry_hash"]))
    except FileNotFoundError as exc:
        raise LineageError(f"{path}: no such head file") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise LineageError(f"{path}: not a lineage head file (JSON with seq and entry_hash)") from exc
    if head.seq < 0 or len(head.entry_hash) != 64:
        raise LineageError(f"{path}: not a lineage head file (seq or entry_hash out of shape)")
    return head


@dataclass(frozen=True)
class DatasetRef:
    """An OpenLineage dataset: namespace (e.g. file://host, duckdb://path) and name."""

    namespace: str
    name: str


class OpenLineageEmitter:
    """START / COMPLETE / FAIL run events through openlineage-python's transports."""

    def __init__(self, config: LineageConfig, out_dir: Path) -> None:
        self.config = config
        self.out_dir = out_dir
        self._client: Any = None

    @property
    def event_file(self) -> Path:
        return self.out_dir / "openlineage.jsonl"

    def _get_client(self) -> Any:
        if self._client is None and self.config.transport != "none":
            from openlineage.client import OpenLineageClient

            if self.config.transport == "http":
                from openlineage.client.transport.http import HttpConfig, HttpTransport

                assert self.config.url is not None
                transport: Any = HttpTransport(HttpConfig(url=self.config.url, endpoint=self.config.endpoint))
            else:
                from openlineage.client.transport.file import FileConfig, FileTransport

                self.out_dir.mkdir(parents=True, exist_ok=True)
                transport = FileTransport(FileConfig(log_file_path=str(self.event_file), append=True))
            self._client = OpenLineageClient(transport=transport)
        return self._client

    def emit(
        self,
        state: str,
        *,
        run_id: str,
        job: str,
        inputs: Sequence[DatasetRef] = (),
        outputs: Sequence[DatasetRef] = (),
        error: str | None = None,
    ) -> None:
        client = self._get_client()
        if client is None:
            return
        from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
        from openlineage.client.facet_v2 import error_message_run

        facets: dict[str, Any] = {}
        if error is not None:
            facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=error, programmingLanguage="python"
            )
        client.emit(
            RunEvent(
                eventType=getattr(RunState, state),
                eventTime=utc_now(),
                run=Run(runId=run_id, facets=facets),
                job=Job(namespace=self.config.namespace, name=job),
                producer=PRODUCER,
                inputs=[InputDataset(namespace=d.namespace, name=d.name) for d in inputs],
                outputs=[OutputDataset(namespace=d.namespace, name=d.name) for d in outputs],
            )
        )


def job_name(stage: str) -> str:
    return f"flashcast.{stage}"



class RunRecorder:
    """Writes one run's lineage entries, OpenLineage events and `runs` row. The pipeline calls
    `before_stage` / `after_stage` around every stage; nothing else writes a run's entries."""

    def __init__(self, ops: OpsStore, context: RunContext, *, job: str, config_digest: str,
                 emitter: OpenLineageEmitter) -> None:
        self.ops, self.context, self.job, self.digest, self.emitter = ops, context, job, config_digest, emitter
        self.log = LineageLog(ops)
        self.inputs: list[DatasetRef] = []

    def _append(self, kind: str, body: dict[str, Any]) -> LogHead:
        return self.log.append(kind, self.context.lineage_id, body)

    def started(self, inputs: Sequence[DatasetRef]) -> None:
        run, self.inputs = self.context, list(inputs)
        with self.ops.transaction() as conn:
            conn.execute(self.ops.runs.insert().values(
                lineage_id=run.lineage_id, job=self.job, status="running", started_at=run.processed_at.isoformat(),
                config_digest=self.digest, key_id=run.key_id, heartbeat_at=utc_now(), **this_process()))
        self._append("run_started", {"job": self.job, "processed_at": run.processed_at.isoformat(),
                                     "config_digest": self.digest, "key_id": run.key_id,
                                     "inputs": [r.name for r in self.inputs]})
        self.emitter.emit("START", run_id=run.lineage_id, job=job_name(self.job), inputs=self.inputs)

    def before_stage(self, stage: str, reads: Mapping[str, int]) -> None:
        """The tables the stage is about to read, with their row counts; the run shows it is alive."""
        self._append("stage_started", {"stage": stage, "reads": dict(reads)})
        runs = self.ops.runs
        with self.ops.transaction() as conn:
            conn.execute(runs.update().where(runs.c.lineage_id == self.context.lineage_id)
                         .values(heartbeat_at=utc_now()))

    def after_stage(self, stage: str, record: Any, writes: Mapping[str, int], seconds: float) -> None:
        """What the stage produced (its record's `lineage()`), the tables it wrote and how long it took."""
        self._append("stage_completed", {"stage": stage, **record.lineage(), "writes": dict(writes),
                                         "seconds": round(seconds, 3)})

    def llm_call(self, entry: dict[str, Any]) -> None:
        self._append("llm_call", entry)

    def failed(self, step: str, exc: BaseException) -> None:
        """Record the failure (its message redacted); never raise, so the failure itself is what surfaces."""
        message = redact_message(f"{type(exc).__name__}: {exc}")[:2000]
        try:
            self._append("run_failed", {"stage": step, "error": message})
            self._finish("failed", error=message)
            self.emitter.emit("FAIL", run_id=self.context.lineage_id, job=job_name(self.job), inputs=self.inputs,
                              error=message)
        except Exception:  # recording the failure must not hide the failure itself
            pass

    def completed(self, outputs: Mapping[str, Path], *, totals: dict[str, int], summary: dict[str, Any],
                  datasets: Sequence[DatasetRef], problems: Sequence[str] = ()) -> LogHead:
        """run_completed with a digest of every output file; the head is recorded with the run as an
        anchor. A run where a stage failed softly (`problems`) is 'partial'."""
        digests = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in sorted(outputs.items())}
        head = self._append("run_completed", {"outputs": digests, "totals": totals,
                                              **({"problems": list(problems)} if problems else {})})
        self._finish("partial" if problems else "completed",
                     summary={"totals": totals, "lineage_head": head.to_json(), **summary,
                              **({"problems": list(problems)} if problems else {})})
        self.emitter.emit("COMPLETE", run_id=self.context.lineage_id, job=job_name(self.job), inputs=[],
                          outputs=datasets)
        return head

    def _finish(self, status: str, **values: Any) -> None:
        runs = self.ops.runs
        with self.ops.transaction() as conn:
            conn.execute(runs.update().where(runs.c.lineage_id == self.context.lineage_id).values(
                status=status, finished_at=datetime.now(UTC).isoformat(), **values))
