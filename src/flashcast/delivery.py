"""Pushing an approved plan to the ad platforms: never lost, never applied twice.

A push is two steps with a commit between them (a transactional outbox):

1. `request_push` builds each platform's order from the run's stored payload, with only the
   creatives a person approved (a funded line item without one holds the whole push), and commits
   the orders to the `outbox` table before anything is sent.
2. `deliver` sends every pending order: a POST to the platform's endpoint with an `Idempotency-Key`
   (`<lineage_id>:<platform>:v<version>`) and a `Flashcast-Signature` (HMAC-SHA256 over a timestamp
   and the body; the secret from the environment). Timeouts, dropped connections, 5xx and 429 are
   retried with exponential backoff and jitter (429's Retry-After is honoured); any other 4xx is a
   permanent refusal, reported and not retried. Every attempt is recorded.

If the process dies after the platform applied an order but before the answer was recorded, the
order is still pending; the next `deliver` (any later push, rebalance or `flashcast push`) resends
it byte for byte with the same key, and a platform that honours keys applies it once. A sender
holds a lease on the order it sends, so two processes never send one order at once; the lease of a
process that died on this host is void at once, another host's after it expires.

Pushing the same plan again adds nothing; pushing it after more approvals makes a new version.
In sandbox mode every order goes to the built-in stand-in platform (`flashcast.standin`) through an
in-process transport, marked sandbox: no configured endpoint is ever contacted. A plan made in
sandbox mode is never pushed live.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa

from flashcast.approvals import latest_decisions
from flashcast.config import Settings
from flashcast.errors import DeliveryRefused, PayloadNotFound, PushHeld
from flashcast.lineage import LineageLog, utc_now
from flashcast.standin import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, StandInDsp, sign
from flashcast.store import OpsStore, process_token, token_alive

FAULT_ENV = "FLASHCAST_FAULT"  # "after-send": the process dies between the platform's answer and its record
SANDBOX_SECRET = b"flashcast-sandbox"  # sandbox mode's signing secret when none is set


@dataclass(frozen=True)
class Attempt:
    attempt: int
    started_at: str
    seconds: float
    outcome: str  # delivered | retry | rejected
    http_status: int | None
    detail: str | None


@dataclass(frozen=True)
class Delivery:
    """One platform's order of one payload version and what became of it."""

    outbox_id: int
    lineage_id: str
    platform: str
    version: int
    idempotency_key: str
    endpoint: str
    state: str  # pending | delivered | failed
    created_at: str
    finished_at: str | None
    attempts: tuple[Attempt, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"outbox_id": self.outbox_id, "lineage_id": self.lineage_id, "platform": self.platform,
                "version": self.version, "idempotency_key": self.idempotency_key, "endpoint": self.endpoint,
                "state": self.state, "created_at": self.created_at, "finished_at": self.finished_at,
                "attempts": [a.__dict__ for a in self.attempts]}


# ------------------------------------------------------------------ payloads in the ops store

def record_payload(ops: OpsStore, document: dict[str, Any]) -> None:
    """Keep a run's payload document, what a later push reads."""
    with ops.transaction() as conn:
        conn.execute(ops.payloads.insert().values(
            lineage_id=document["lineage_id"], schema_version=document["schema_version"],
            for_date=str(document["for_date"]), created_at=utc_now(), document=json.dumps(document)))


def load_payload(ops: OpsStore, lineage_id: str) -> dict[str, Any]:
    with ops.engine.connect() as conn:
        text = conn.execute(sa.select(ops.payloads.c.document)
                            .where(ops.payloads.c.lineage_id == lineage_id)).scalar_one_or_none()
    if text is None:
        raise PayloadNotFound(f"no payload for lineage_id {lineage_id}: the run made none or it is unknown")
    return dict(json.loads(text))


def latest_payload_id(ops: OpsStore) -> str | None:
    with ops.engine.connect() as conn:
        return conn.execute(sa.select(ops.payloads.c.lineage_id)
                            .order_by(ops.payloads.c.created_at.desc()).limit(1)).scalar_one_or_none()


# ------------------------------------------------------------------ orders

def approved_creatives(document: dict[str, Any], ops: OpsStore) -> set[str]:
    """Creative ids approved when the run made the payload or by a person since (a later rejection wins)."""
    decided = {i: d.decision for i, d in latest_decisions(ops).items()}
    return {c["creative_id"] for c in document["creatives"]
            if decided.get(c["creative_id"], c["status"]) == "approved"}


def order_body(document: dict[str, Any], order: dict[str, Any], approved: set[str]) -> dict[str, Any]:
    """What one platform receives: its campaigns with only approved creatives assigned, and those
    creatives' copy. Raises PushHeld naming the units that have no approved creative."""
    campaigns, waiting = [], []
    for campaign in order["campaigns"]:
        units_key = "ad_groups" if order["kind"] == "search" else "line_items"
        units = []
        for unit in campaign[units_key]:
            ids = [i for i in unit["creative_ids"] if i in approved]
            funded = campaign["daily_budget"] > 0 and (unit["daily_budget"] is None or unit["daily_budget"] > 0)
            if funded and not ids:
                waiting.append(f"{unit['line_item_id']} (awaiting {', '.join(unit['creative_ids']) or 'copy'})")
            units.append({**unit, "creative_ids": ids})
        campaigns.append({**campaign, units_key: units})
    if waiting:
        more = f"; and {len(waiting) - 2} more" if len(waiting) > 2 else ""
        raise PushHeld(f"{order['platform']}: {len(waiting)} funded line item(s) have no approved creative: "
                       + "; ".join(waiting[:2]) + more)
    used = {i for c in campaigns for u in c["line_items"] + c["ad_groups"] for i in u["creative_ids"]}
    return {
        "schema_version": document["schema_version"], "sandbox": document.get("sandbox", False),
        "lineage_id": document["lineage_id"], "lineage_head": document["lineage_head"],
        "platform": order["platform"], "kind": order["kind"], "for_date": document["for_date"],
        "currency": document["allocations"]["currency"], "campaigns": campaigns,
        "creatives": [{k: c[k] for k in ("creative_id", "segment", "channel", "variant", "headline", "body", "light")}
                      for c in document["creatives"] if c["creative_id"] in used],
    }


def canonical_bytes(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def request_push(ops: OpsStore, settings: Settings, lineage_id: str, *, by: str) -> list[Delivery]:
    """Commit each platform's order of this payload to the outbox (step 1). Idempotent: the same
    content is not queued twice; changed content (more approvals) becomes the next version."""
    document = load_payload(ops, lineage_id)
    sandbox = settings.mode == "sandbox"
    if not sandbox and document.get("sandbox"):
        raise DeliveryRefused(f"payload {lineage_id} was made in sandbox mode: it never goes to a real platform")
    endpoints = {p.name: (f"http://sandbox.invalid/{p.name}/orders" if sandbox else p.endpoint)
                 for p in settings.delivery.platforms}
    approved = approved_creatives(document, ops)
    sendable, held = [], []
    for order in document["orders"]:
        if url := endpoints.get(order["platform"]):
            try:
                content = order_body(document, order, approved)
                content["sandbox"] = content["sandbox"] or sandbox  # a live plan tried in sandbox says so too
                sendable.append((order["platform"], url, canonical_bytes(content)))
            except PushHeld as exc:
                held.append(str(exc))
    if held:
        raise PushHeld(" | ".join(held))
    if not sendable:
        raise DeliveryRefused("no platform has an endpoint: set [[delivery.platforms]] endpoint, or mode = \"sandbox\"")
    now, queued = utc_now(), []
    outbox = ops.outbox
    with ops.transaction() as conn:
        for name, url, body in sendable:
            digest = hashlib.sha256(body).hexdigest()
            rows = conn.execute(sa.select(outbox).where(outbox.c.lineage_id == lineage_id,
                                                        outbox.c.platform == name)).all()
            same = [r for r in rows if r.body_sha256 == digest]
            if same:
                if same[0].state == "failed":  # an operator asks again after fixing the platform's side
                    conn.execute(outbox.update().where(outbox.c.outbox_id == same[0].outbox_id)
                                 .values(state="pending", finished_at=None))
                continue
            version = max((r.version for r in rows), default=0) + 1
            conn.execute(outbox.insert().values(
                lineage_id=lineage_id, platform=name, version=version,
                idempotency_key=f"{lineage_id}:{name}:v{version}", endpoint=url, body=body.decode(),
                body_sha256=digest, state="pending", requested_by=by, created_at=now))
            queued.append({"platform": name, "version": version})
    if queued:
        LineageLog(ops).append("push_requested", lineage_id, {"by": by, "orders": queued, "sandbox": sandbox})
    return deliveries(ops, lineage_id)


# ------------------------------------------------------------------ sending

def deliver(ops: OpsStore, settings: Settings, *, lineage_id: str | None = None, client: httpx.Client | None = None,
            sleep: Callable[[float], None] = time.sleep, after_send: Callable[[], None] | None = None,
            rng: random.Random | None = None) -> list[Delivery]:
    """Send every pending order (of `lineage_id`, or all) and record each attempt (step 2). Returns
    the orders it tried, in their state after. `after_send` runs between the platform's answer and
    its record (the crash point the tests inject a fault at; FLASHCAST_FAULT=after-send does the
    same to a whole process)."""
    if after_send is None and os.environ.get(FAULT_ENV) == "after-send":
        after_send = _die
    rng = rng or random.Random()
    outbox = ops.outbox
    query = sa.select(outbox.c.outbox_id).where(outbox.c.state == "pending").order_by(outbox.c.outbox_id)
    if lineage_id is not None:
        query = query.where(outbox.c.lineage_id == lineage_id)
    with ops.engine.connect() as conn:
        pending = list(conn.execute(query).scalars())
    tried = []
    with _client(settings, client) as http:
        for outbox_id in pending:
            with _lease(ops, outbox_id, settings) as row:
                if row is None:
                    continue  # another sender holds it, or it was finished meanwhile
                _send(ops, settings, row, http, sleep=sleep, after_send=after_send, rng=rng)
                tried.append(outbox_id)
    return [d for d in deliveries(ops) if d.outbox_id in tried]


def push(ops: OpsStore, settings: Settings, lineage_id: str, *, by: str, **deliver_options: Any) -> list[Delivery]:
    """Queue this payload's orders, then deliver every pending order (an earlier push's too: the
    outbox drains). Returns this payload's orders."""
    request_push(ops, settings, lineage_id, by=by)
    deliver(ops, settings, **deliver_options)
    return deliveries(ops, lineage_id)


def deliveries(ops: OpsStore, lineage_id: str | None = None) -> list[Delivery]:
    """Every queued order (of `lineage_id`, or all) with its attempts, oldest first."""
    outbox, attempts = ops.outbox, ops.delivery_attempts
    query = sa.select(outbox).order_by(outbox.c.outbox_id)
    if lineage_id is not None:
        query = query.where(outbox.c.lineage_id == lineage_id)
    with ops.engine.connect() as conn:
        rows = conn.execute(query).all()
        ids = [r.outbox_id for r in rows]
        tried = conn.execute(sa.select(attempts).where(attempts.c.outbox_id.in_(ids))
                             .order_by(attempts.c.attempt_id)).all() if ids else []
    by_order: dict[int, list[Attempt]] = {}
    for a in tried:
        by_order.setdefault(a.outbox_id, []).append(
            Attempt(a.attempt, a.started_at, a.seconds, a.outcome, a.http_status, a.detail))
    return [Delivery(r.outbox_id, r.lineage_id, r.platform, r.version, r.idempotency_key, r.endpoint, r.state,
                     r.created_at, r.finished_at, tuple(by_order.get(r.outbox_id, ()))) for r in rows]


def _send(ops: OpsStore, settings: Settings, row: Any, http: httpx.Client, *, sleep: Callable[[float], None],
          after_send: Callable[[], None] | None, rng: random.Random) -> None:
    config = settings.delivery
    secret = _secret(settings)
    body = row.body.encode()
    with ops.engine.connect() as conn:
        done = conn.execute(sa.select(sa.func.count()).where(ops.delivery_attempts.c.outbox_id == row.outbox_id)
                            ).scalar_one()
    for n in range(1, config.max_attempts + 1):
        started, t0 = utc_now(), time.perf_counter()
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: row.idempotency_key,
                   SIGNATURE_HEADER: sign(secret, body)}
        status: int | None = None
        wait = min(config.max_backoff_s, config.backoff_s * 2 ** (n - 1)) * rng.uniform(0.5, 1.0)
        try:
            response = http.post(row.endpoint, content=body, headers=headers)
            status = response.status_code
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            outcome, detail = "retry", f"{type(exc).__name__}: no answer"
        else:
            if response.is_success:
                outcome, detail = "delivered", _answer_status(response)
            elif status == 429 or status >= 500:
                outcome, detail = "retry", f"HTTP {status}"
                if status == 429:
                    wait = _retry_after(response, default=wait, cap=config.max_backoff_s)
            else:
                outcome, detail = "rejected", f"HTTP {status}: {response.text[:200]}"
        if after_send is not None:
            after_send()
        _record_attempt(ops, row, Attempt(done + n, started, round(time.perf_counter() - t0, 4), outcome, status,
                                          detail))
        if outcome != "retry":
            return
        if n < config.max_attempts:
            sleep(wait)


def _record_attempt(ops: OpsStore, row: Any, attempt: Attempt) -> None:
    final = {"delivered": "delivered", "rejected": "failed"}.get(attempt.outcome)
    with ops.transaction() as conn:
        conn.execute(ops.delivery_attempts.insert().values(outbox_id=row.outbox_id, **attempt.__dict__))
        if final:
            conn.execute(ops.outbox.update().where(ops.outbox.c.outbox_id == row.outbox_id)
                         .values(state=final, finished_at=utc_now()))
    if final:
        LineageLog(ops).append("payload_delivered" if final == "delivered" else "payload_rejected", row.lineage_id, {
            "platform": row.platform, "version": row.version, "idempotency_key": row.idempotency_key,
            "attempt": attempt.attempt, "http_status": attempt.http_status, "detail": attempt.detail})


@contextmanager
def _lease(ops: OpsStore, outbox_id: int, settings: Settings) -> Iterator[Any]:
    """Hold a pending order for this process while it is sent (None: someone else holds it)."""
    config = settings.delivery
    span = config.max_attempts * (config.connect_timeout_s + config.read_timeout_s + config.max_backoff_s) + 60
    outbox, me = ops.outbox, process_token()
    with ops.transaction() as conn:
        # FOR UPDATE: on PostgreSQL a second sender waits here until this claim commits (SQLite's
        # BEGIN IMMEDIATE already serializes the whole transaction).
        found = conn.execute(sa.select(outbox).where(outbox.c.outbox_id == outbox_id).with_for_update()).one()
        free = found.claimed_until is None or found.claimed_until < time.time() or not token_alive(found.claimed_by)
        row = found if found.state == "pending" and free else None
        if row is not None:
            conn.execute(outbox.update().where(outbox.c.outbox_id == outbox_id)
                         .values(claimed_by=me, claimed_until=time.time() + span))
    try:
        yield row
    finally:
        if row is not None:
            with ops.transaction() as conn:
                conn.execute(outbox.update().where(outbox.c.outbox_id == outbox_id)
                             .values(claimed_by=None, claimed_until=None))


@contextmanager
def _client(settings: Settings, client: httpx.Client | None) -> Iterator[httpx.Client]:
    if client is not None:
        yield client
        return
    config = settings.delivery
    timeout = httpx.Timeout(config.read_timeout_s, connect=config.connect_timeout_s)
    platform = sandbox_platform(settings) if settings.mode == "sandbox" else None
    try:
        with httpx.Client(timeout=timeout, transport=platform.transport() if platform else None,
                          follow_redirects=False) as http:
            yield http
    finally:
        if platform is not None:
            platform.close()


def sandbox_platform(settings: Settings) -> StandInDsp:
    """The built-in stand-in platform sandbox mode pushes to; it keeps what it received in the store's home."""
    return StandInDsp(settings.store.home / "sandbox_dsp.sqlite", _secret(settings))


def _secret(settings: Settings) -> bytes:
    value = os.environ.get(settings.delivery.secret_env)
    if value:
        return value.encode()
    if settings.mode == "sandbox":
        return SANDBOX_SECRET
    raise DeliveryRefused(f"set {settings.delivery.secret_env} to the secret the platforms verify signatures with")


def _answer_status(response: httpx.Response) -> str:
    try:
        return str(response.json().get("status", f"HTTP {response.status_code}"))
    except (ValueError, AttributeError):
        return f"HTTP {response.status_code}"


def _retry_after(response: httpx.Response, *, default: float, cap: float) -> float:
    """Retry-After in seconds or as an HTTP date, capped; `default` when absent or unreadable."""
    value = response.headers.get("Retry-After")
    if not value:
        return default
    try:
        return min(cap, max(0.0, float(value)))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return min(cap, max(0.0, (when - datetime.now(UTC)).total_seconds()))


def _die() -> None:
    os._exit(99)  # like kill -9: no cleanup, no record of the answer
