"""A stand-in ad platform: the order endpoint as Flashcast meets a real one, for tests and sandbox mode.

It speaks the protocol of `flashcast.delivery`: a POSTed order must carry an `Idempotency-Key` and a
valid `Flashcast-Signature` (HMAC-SHA256 over the timestamp and body); each key is applied once (a
resend with the same key and body is answered 200 "duplicate", the same key with another body is
refused 422, as Stripe-style idempotency does). It records every request it received and every
order it applied in a SQLite file, so what it saw survives the processes that talked to it.

It fails on demand, one queued fault per request: "500" and "429" (nothing applied), "400" (a
permanent refusal), "timeout" (applied, then the answer comes too late for the caller) and "drop"
(applied, then the connection is closed without an answer). The last two are the cases where only
the idempotency key keeps a retry from applying an order twice.

Served on loopback by `serve_standin` (a real HTTP server, used by the tests and by
`flashcast dsp-standin`), or in process through an httpx transport (sandbox mode: nothing leaves it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

SIGNATURE_HEADER = "Flashcast-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
FAULTS = ("500", "429", "400", "timeout", "drop")
SIGNATURE_TOLERANCE_S = 300  # a signature older than this is a replay


def sign(secret: bytes, body: bytes, *, timestamp: int | None = None) -> str:
    """The signature header's value: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def signature_valid(secret: bytes, body: bytes, header: str | None, *, now: float | None = None) -> bool:
    try:
        parts = dict(item.split("=", 1) for item in (header or "").split(","))
        t = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - t) > SIGNATURE_TOLERANCE_S:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp=t).split(",", 1)[1], f"v1={parts.get('v1', '')}")


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: Mapping[str, str]
    delay_s: float = 0.0  # wait this long before answering ("timeout")
    drop: bool = False  # close the connection without answering ("drop")


class StandInDsp:
    """The platform's state: applied orders by key, every request received, the queued faults."""

    def __init__(self, path: Path, secret: bytes, *, timeout_delay_s: float = 2.0, latency_s: float = 0.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.secret = secret
        self.timeout_delay_s = timeout_delay_s
        self.latency_s = latency_s  # every answer waits this long after the order is applied
        self._faults: deque[str] = deque()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("""CREATE TABLE IF NOT EXISTS applied (idempotency_key TEXT PRIMARY KEY,
            platform TEXT, body_sha256 TEXT NOT NULL, body TEXT NOT NULL, applied_at REAL NOT NULL)""")
        self._db.execute("""CREATE TABLE IF NOT EXISTS received (seq INTEGER PRIMARY KEY AUTOINCREMENT,
            idempotency_key TEXT, path TEXT, outcome TEXT NOT NULL, at REAL NOT NULL)""")

    def fail_next(self, faults: Iterable[str]) -> None:
        """Queue faults, one per coming request, in order."""
        faults = list(faults)
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {FAULTS}")
        with self._lock:
            self._faults.extend(faults)

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Answer:
        """One request, as the platform would answer it."""
        key = headers.get(IDEMPOTENCY_HEADER.lower()) or headers.get(IDEMPOTENCY_HEADER)
        signature = headers.get(SIGNATURE_HEADER.lower()) or headers.get(SIGNATURE_HEADER)
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
            answer = self._answer(method, path, key, signature, body, fault)
            self._db.execute("INSERT INTO received (idempotency_key, path, outcome, at) VALUES (?, ?, ?, ?)",
                             [key, path, fault or str(answer.body.get("status")), time.time()])
        return answer

    def _answer(self, method: str, path: str, key: str | None, signature: str | None, body: bytes,
                fault: str | None) -> Answer:
        if method != "POST":
            return Answer(405, {"status": "error", "error": "POST an order"}, {"Allow": "POST"})
        if fault == "500":
            return Answer(500, {"status": "error", "error": "injected server error"}, {})
        if fault == "429":
            return Answer(429, {"status": "error", "error": "injected rate limit"}, {"Retry-After": "0"})
        if fault == "400":
            return Answer(400, {"status": "error", "error": "injected permanent refusal"}, {})
        if not signature_valid(self.secret, body, signature):
            return Answer(401, {"status": "error", "error": "missing or invalid signature"}, {})
        if not key:
            return Answer(400, {"status": "error", "error": f"{IDEMPOTENCY_HEADER} is required"}, {})
        try:
            order = json.loads(body)
        except ValueError:
            return Answer(400, {"status": "error", "error": "the body is not JSON"}, {})
        digest = hashlib.sha256(body).hexdigest()
        seen = self._db.execute("SELECT body_sha256 FROM applied WHERE idempotency_key = ?", [key]).fetchone()
        if seen is not None and seen[0] != digest:
            return Answer(422, {"status": "error", "error": "this Idempotency-Key was used with another body"}, {})
        if seen is None:
            self._db.execute("INSERT INTO applied VALUES (?, ?, ?, ?, ?)",
                             [key, order.get("platform") if isinstance(order, dict) else None, digest,
                              body.decode(), time.time()])
        result = Answer(201 if seen is None else 200, {"status": "applied" if seen is None else "duplicate",
                                                       "idempotency_key": key}, {})
        if fault == "timeout":
            return Answer(result.status, result.body, {}, delay_s=self.timeout_delay_s)
        if fault == "drop":
            return Answer(result.status, result.body, {}, drop=True)
        return result

    def applied(self) -> list[dict[str, Any]]:
        """Every order applied, oldest first: key, platform and the order itself."""
        with self._lock:
            rows = self._db.execute(
                "SELECT idempotency_key, platform, body FROM applied ORDER BY applied_at, idempotency_key").fetchall()
        return [{"idempotency_key": k, "platform": p, "order": json.loads(b)} for k, p, b in rows]

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT idempotency_key, path, outcome FROM received ORDER BY seq").fetchall()
        return [{"idempotency_key": k, "path": p, "outcome": o} for k, p, o in rows]

    def close(self) -> None:
        self._db.close()

    def transport(self) -> httpx.MockTransport:
        """An in-process httpx transport to this stand-in: requests never reach a network."""

        def handler(request: httpx.Request) -> httpx.Response:
            answer = self.handle(request.method, request.url.path, dict(request.headers), request.read())
            if answer.drop:
                raise httpx.RemoteProtocolError("the stand-in closed the connection without answering",
                                                request=request)
            if answer.delay_s:
                raise httpx.ReadTimeout("the stand-in answered too late", request=request)
            return httpx.Response(answer.status, json=answer.body, headers=dict(answer.headers))

        return httpx.MockTransport(handler)


class _Handler(BaseHTTPRequestHandler):
    dsp: StandInDsp  # set on the subclass made per server
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self._serve("POST")

    def do_GET(self) -> None:
        self._serve("GET")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        answer = self.dsp.handle(method, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        if answer.drop:
            self.close_connection = True
            return
        time.sleep(answer.delay_s or self.dsp.latency_s)
        data = json.dumps(answer.body).encode()
        try:
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the caller gave up waiting (a "timeout" fault)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the requests are recorded in the stand-in's own table


@contextmanager
def serve_standin(dsp: StandInDsp, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `dsp` over HTTP on `host:port` (0: any free port) in a thread; yields its base URL."""
    handler = type("StandInHandler", (_Handler,), {"dsp": dsp})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="standin-dsp", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
