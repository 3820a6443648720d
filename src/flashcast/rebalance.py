"""The daily loop in one call, for cron, a systemd timer or `flashcast serve`'s schedule: read what
is new in the configured export, plan again, push the plan or hold it for approval, then send the
marketing lead the summary (a copy kept as summary.eml in the output folder, mailed or not). Never
two at once: a lock file in the store's home.

Outcomes (and `flashcast rebalance`'s exit codes): pushed (0), held for a person (3), undelivered:
an order is still pending or a platform refused it (4), no plan: the run made no payload (5). A
run that fails exits 1 like every other command.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from flashcast.config import Settings
from flashcast.delivery import Delivery, approved_creatives, deliver, deliveries, load_payload, push
from flashcast.errors import ConfigError, DeliveryError, EmailFailed, PushHeld, StoreBusy
from flashcast.inplace import write_whole
from flashcast.keys import PiiKey
from flashcast.lineage import LineageLog
from flashcast.pipeline import Progress, run_pipeline
from flashcast.records import RunInputs, Skipped
from flashcast.store import OpsStore, file_lock
from flashcast.summary import send_email, summary_email

EXIT_CODES = {"pushed": 0, "held": 3, "undelivered": 4, "no_plan": 5}


@dataclass(frozen=True)
class RebalanceResult:
    lineage_id: str
    outcome: str  # pushed | held | undelivered | no_plan
    detail: str
    orders: tuple[Delivery, ...]
    email: str  # sent | not configured | failed: <why>
    attention: tuple[str, ...] = ()  # what the run's report asks a person to look at (the email lists it too)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def to_json(self) -> dict[str, Any]:
        return {"lineage_id": self.lineage_id, "outcome": self.outcome, "detail": self.detail,
                "email": self.email, "attention": list(self.attention), "orders": [o.to_json() for o in self.orders]}


def rebalance(settings: Settings, *, key: PiiKey, by: str, progress: Progress | None = None,
              lineage_id: str | None = None) -> RebalanceResult:
    """One rebalance on `settings.source` (its run gets `lineage_id` when given). Raises StoreBusy
    when another is running."""
    source = settings.source
    if source.export is None:
        raise ConfigError("rebalance reads [source] export (and spend): set them in flashcast.toml, or the "
                          "file -c names (the annotated flashcast.toml lists both)")
    lock = settings.store.home / "rebalance.lock"
    with _only_one(lock):
        result = run_pipeline(settings, RunInputs(source.export, source.spend), source.out, key=key,
                              progress=progress, job="rebalance", lineage_id=lineage_id)
        ops = OpsStore(settings.store.ops_database_url)
        attention = tuple(result.attention(approvals=False))  # the email counts what waits for approval itself
        try:
            outcome, detail = _push_or_hold(ops, settings, result.lineage_id, result.payload, by=by)
            orders = tuple(deliveries(ops, result.lineage_id))
            email, summary = _email(ops, settings, result.lineage_id, outcome, detail, orders, attention)
            LineageLog(ops).append("rebalance_finished", result.lineage_id,
                                   {"by": by, "outcome": outcome, "email": email.split(":")[0],
                                    **({"summary_sha256": summary} if summary else {})})
        finally:
            ops.dispose()
    return RebalanceResult(result.lineage_id, outcome, detail, orders, email, attention)


@contextmanager
def _only_one(lock: Path) -> Iterator[None]:
    try:
        with file_lock(lock, timeout_s=0.0):
            yield
    except StoreBusy:
        raise StoreBusy(f"another rebalance is running (it holds {lock})") from None


def _push_or_hold(ops: OpsStore, settings: Settings, lineage_id: str, payload: Any, *, by: str) -> tuple[str, str]:
    if isinstance(payload, Skipped):
        return "no_plan", payload.reason
    if not settings.delivery.auto_push:
        _drain(ops, settings)
        return "held", "delivery.auto_push is off: a person pushes it (flashcast push, or the dashboard)"
    try:
        orders = push(ops, settings, lineage_id, by=by)
    except PushHeld as exc:
        _drain(ops, settings)
        return "held", str(exc)
    late = [o for o in orders if o.state != "delivered"]
    if late:
        return "undelivered", "; ".join(f"{o.platform}: {o.state}" + (f" ({o.attempts[-1].detail})" if o.attempts
                                                                        else "") for o in late)
    return "pushed", f"{len(orders)} order(s) delivered"


def _keep_copy(message: EmailMessage, path: Path) -> str:
    """The summary as an .eml file (any mail client opens it), replaced whole: what was mailed, or
    what would have been without [email]. Without its To: the lead's address is an email address
    in the output folder, which the privacy scan rightly flags. Returns the file's SHA-256."""
    kept = copy.deepcopy(message)
    del kept["To"]
    data = bytes(kept)
    write_whole(path, data)
    return hashlib.sha256(data).hexdigest()


def _drain(ops: OpsStore, settings: Settings) -> None:
    """Orders an earlier push left pending go out now, whatever today's plan waits for."""
    if any(o.state == "pending" for o in deliveries(ops)):
        with suppress(DeliveryError):  # reported by `flashcast deliveries`; today's outcome is about today's plan
            deliver(ops, settings)


def _email(ops: OpsStore, settings: Settings, lineage_id: str, outcome: str, detail: str,
           orders: tuple[Delivery, ...], attention: Sequence[str]) -> tuple[str, str | None]:
    """Mail the summary when [email] is set; either way a copy goes beside the run's outputs.
    Returns what happened and the copy's SHA-256 (None without a plan)."""
    config = settings.email
    try:
        document = load_payload(ops, lineage_id)
    except DeliveryError:
        return ("not sent: no plan" if config.to else "not configured"), None
    message = summary_email(document, outcome=outcome, detail=detail, orders=orders,
                            approved=approved_creatives(document, ops), config=config, attention=attention)
    path = settings.source.out / "summary.eml"
    digest = _keep_copy(message, path)
    if not config.to:
        return f"not configured: [email] to is empty; what it would send is in {path}", digest
    try:
        send_email(message, config)
    except EmailFailed as exc:
        return f"failed: {exc}", digest
    return "sent", digest

