"""A person's decisions on creatives: approve or reject, with a comment, recorded with who decided.

Creative ids are content hashes (segment, channel, variant, copy), so a decision holds for the same
copy in every later run. A red creative (the compliance checker found a breach) can be approved
only with an override reason, and the lineage log records it. The latest decision on a creative
counts; every decision is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import duckdb
import sqlalchemy as sa

from flashcast.errors import DecisionRefused
from flashcast.lineage import LineageLog, utc_now
from flashcast.privacy import redact_message
from flashcast.records import Table
from flashcast.store import OpsStore, warehouse_session

Decision = Literal["approved", "rejected"]


@dataclass(frozen=True)
class CreativeDecision:
    creative_id: str
    decision: Decision
    comment: str
    override_reason: str | None
    key_id: str
    decided_at: str


def latest_creatives(warehouse: Path, ops: OpsStore, *, timeout_s: float) -> list[dict[str, Any]]:
    """The latest run's creative library with each creative's status after people's decisions
    (`decided_by` and `comment` when a person decided). Empty before the first run."""
    if not warehouse.exists():
        return []
    con = duckdb.connect()
    try:
        with warehouse_session(con, warehouse, timeout_s=timeout_s, read_only=True) as wh:
            present = con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = ?",
                                  [wh, Table.CREATIVES]).fetchall()[0][0]
            if not present:
                return []
            cursor = con.execute(f"""SELECT creative_id, segment, channel, variant, headline, body, light, status,
                reasons, lineage_id FROM {wh}.{Table.CREATIVES}
                WHERE lineage_id = (SELECT max(lineage_id) FROM {wh}.{Table.CREATIVES})
                ORDER BY segment, channel, variant""")
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()
    decided = latest_decisions(ops)
    for row in rows:
        decision = decided.get(row["creative_id"])
        if decision is not None:
            row.update(status=decision.decision, decided_by=decision.key_id, comment=decision.comment,
                       override_reason=decision.override_reason)
    return rows


def latest_decisions(ops: OpsStore) -> dict[str, CreativeDecision]:
    table = ops.creative_decisions
    with ops.engine.connect() as conn:
        rows = conn.execute(sa.select(table).order_by(table.c.seq)).all()
    return {r.creative_id: CreativeDecision(r.creative_id, r.decision, r.comment, r.override_reason, r.key_id,
                                            r.decided_at) for r in rows}


def decide(ops: OpsStore, creative: dict[str, Any], decision: Decision, *, comment: str,
           override_reason: str | None, by: str) -> CreativeDecision:
    """Record a decision on `creative` (a row of `latest_creatives`) by key `by`, in the ops store and
    the lineage log. A red creative needs `override_reason` to be approved."""
    if decision == "approved" and creative["light"] == "red" and not (override_reason or "").strip():
        raise DecisionRefused(f"{creative['creative_id']} is red ({creative['reasons']}): approving it needs an "
                              "override_reason")
    # Free text from a person: emails and phone numbers typed into it are redacted before storing.
    comment, override_reason = redact_message(comment), redact_message(override_reason) if override_reason else None
    record = CreativeDecision(creative["creative_id"], decision, comment, override_reason, by, utc_now())
    with ops.transaction() as conn:
        conn.execute(ops.creative_decisions.insert().values(
            creative_id=record.creative_id, decision=decision, comment=comment,
            override_reason=record.override_reason, key_id=by, decided_at=record.decided_at))
    LineageLog(ops).append("creative_decided", creative["lineage_id"], {
        "creative_id": record.creative_id, "decision": decision, "light": creative["light"], "by": by,
        "override": record.override_reason is not None})
    return record
