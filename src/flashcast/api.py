"""The REST API: FastAPI over the same stores and libraries as the CLI (`flashcast serve`).

Every endpoint but /health and /ready needs an API key (`Authorization: Bearer <key>` or
`X-API-Key: <key>`, see `flashcast.access`): none or an unknown one is 401, a role without the
right is 403. Errors are JSON `{"detail": ...}` and never carry a stack trace or an input value: a
422 names the field and what is wrong with it, a body over `max_body_bytes` is 413, anything
unexpected is a bare 500. OpenAPI at /openapi.json, the interactive docs at /docs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flashcast import __version__
from flashcast.access import Action, ApiKey, authenticate, create_key, list_keys, revoke_key
from flashcast.approvals import decide, latest_creatives
from flashcast.budget.inverse_cpa import allocate_inverse_cpa
from flashcast.budget.plan import ChannelSeries, allocate_by_curves
from flashcast.budget.records import ChannelHistory
from flashcast.config import ForecastConfig, Guardrails, Settings
from flashcast.dashboard import CHART_FILES, STATIC, dashboard_data, latest_finished_run, plotly_js
from flashcast.delivery import deliver, deliveries, latest_payload_id, load_payload, request_push
from flashcast.errors import (
    ConfigError,
    DecisionRefused,
    DeliveryRefused,
    FlashcastError,
    LineageError,
    PayloadNotFound,
    PushHeld,
)
from flashcast.forecasting.engines import REGISTRY
from flashcast.keys import PiiKey, load_pii_key
from flashcast.lineage import LineageLog, new_lineage_id, run_anchors
from flashcast.pipeline import run_pipeline
from flashcast.rebalance import rebalance
from flashcast.records import RunInputs
from flashcast.stages.forecast import revenue_forecast
from flashcast.store import OpsStore

STATIC_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
# The page runs only its own scripts and talks only to this server.
_PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self' "
                 "'unsafe-inline'", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
MAX_BODY_BYTES = 1_000_000  # a year of daily series for a dozen channels is ~100 KB
log = logging.getLogger("flashcast.api")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SeriesIn(_Body):
    """A daily series: one value per date, ascending or not, no date twice."""

    dates: list[date] = Field(min_length=1, max_length=5000)
    values: list[float] = Field(min_length=1, max_length=5000)

    @model_validator(mode="after")
    def _aligned(self) -> SeriesIn:
        if len(self.dates) != len(self.values):
            raise ValueError(f"dates has {len(self.dates)} items and values {len(self.values)}: one value per date")
        if len(set(self.dates)) != len(self.dates):
            raise ValueError("dates: a date appears twice")
        if not all(np.isfinite(self.values)):
            raise ValueError("values: every value must be a finite number")
        if min(self.dates) < date(1900, 1, 1) or max(self.dates) > date(2200, 12, 31):
            raise ValueError("dates: every date must be between 1900-01-01 and 2200-12-31")
        return self


class ForecastIn(SeriesIn):
    horizon: int = Field(default=14, ge=1, le=90)
    engines: list[str] | None = Field(default=None, min_length=1, max_length=10,
                                      description="The line-up to backtest (default: the config's).")

    @field_validator("engines")
    @classmethod
    def _known(cls, value: list[str] | None) -> list[str] | None:
        unknown = sorted(set(value or ()) - set(REGISTRY))
        if unknown:
            raise ValueError(f"unknown engine(s); choose from {', '.join(REGISTRY)}")
        return value


class ChannelIn(_Body):
    channel: str = Field(min_length=1, max_length=64)
    spend: list[float] = Field(min_length=1, max_length=5000, description="Daily spend, oldest first.")
    outcome: list[float] = Field(min_length=1, max_length=5000, description="Daily conversions (or revenue).")

    @model_validator(mode="after")
    def _aligned(self) -> ChannelIn:
        if len(self.spend) != len(self.outcome):
            raise ValueError(f"spend has {len(self.spend)} days and outcome {len(self.outcome)}: the same days")
        if any(not np.isfinite(v) or v < 0 for v in (*self.spend, *self.outcome)):
            raise ValueError("spend and outcome must be finite and not negative")
        return self


class AllocateIn(_Body):
    """Daily spend and outcome per paid channel (the same days for each, the last one is yesterday),
    with guardrails; the answer is tomorrow's spend per channel."""

    channels: list[ChannelIn] = Field(min_length=1, max_length=50)
    guardrails: Guardrails = Field(default_factory=Guardrails)
    method: Literal["curves", "inverse_cpa"] = "curves"

    @model_validator(mode="after")
    def _same_days(self) -> AllocateIn:
        if len({len(c.spend) for c in self.channels}) > 1:
            raise ValueError("channels: every channel needs the same number of days")
        if len({c.channel for c in self.channels}) != len(self.channels):
            raise ValueError("channels: a channel appears twice")
        return self


class DecisionIn(_Body):
    decision: Literal["approve", "reject"]
    comment: str = Field(min_length=1, max_length=2000)
    override_reason: str | None = Field(default=None, max_length=2000,
                                        description="Required to approve a red creative; recorded in the lineage.")


class NewKeyIn(_Body):
    role: Literal["viewer", "approver", "operator", "admin"]


def _caller(request: Request) -> ApiKey:
    header = request.headers.get("authorization", "")
    secret = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
    key = authenticate(request.app.state.ops, secret) if secret else None
    if key is None:
        raise HTTPException(401, "an API key is required (Authorization: Bearer <key>)",
                            headers={"WWW-Authenticate": "Bearer"})
    return key


def _allowed(action: Action) -> Callable[[ApiKey], ApiKey]:
    def check(key: Annotated[ApiKey, Depends(_caller)]) -> ApiKey:
        if not key.may(action):
            raise HTTPException(403, f"role {key.role} may not {action}")
        return key
    return check


Reader = Annotated[ApiKey, Depends(_allowed("read"))]
Approver = Annotated[ApiKey, Depends(_allowed("approve"))]
Operator = Annotated[ApiKey, Depends(_allowed("operate"))]
Admin = Annotated[ApiKey, Depends(_allowed("admin"))]


# Posted forecasts and allocations (curve fits, backtests) compute one at a time: their work is
# Python-bound, and run side by side in the server's threads they took turns on the GIL, each request
# twice as long as alone (4 clients: 0.8 requests/s against 1.3-1.8 one by one).
_ONE_FIT_AT_A_TIME = threading.Lock()


def create_app(settings: Settings, *, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The API over `settings`' stores. One ops store (a pooled engine) for the app's life."""
    ops = OpsStore(settings.store.ops_database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler = _schedule(settings, app)
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.shutdown(wait=False)

    app = FastAPI(title="Flashcast", version=__version__, lifespan=lifespan,
                  description="Governed forecast & optimize: runs, lineage, forecasts, allocations, pushes.")
    app.state.ops = ops
    app.add_middleware(_BodyLimit, max_bytes=max_body_bytes)
    _error_handlers(app)

    @app.get("/", include_in_schema=False)
    def dashboard_page() -> Response:
        """The approval dashboard (it holds no data: the page asks the API with the key typed in)."""
        return Response(STATIC.joinpath("index.html").read_bytes(), media_type="text/html; charset=utf-8",
                        headers=_PAGE_HEADERS)

    @app.get("/static/{name}", include_in_schema=False)
    def static_file(name: str) -> Response:
        if name == "plotly.min.js":
            return FileResponse(plotly_js(), media_type="text/javascript", headers=_PAGE_HEADERS)
        if name not in STATIC_FILES:
            raise HTTPException(404, "no such file")
        return Response(STATIC.joinpath(name).read_bytes(), media_type=STATIC_FILES[name], headers=_PAGE_HEADERS)

    @app.get("/session", tags=["service"])
    def session(who: Reader) -> dict[str, Any]:
        """Who the key is (id and role, what it may do) and how the server runs (mode, currency)."""
        return {"key_id": who.key_id, "role": who.role,
                "may": [a for a in ("read", "approve", "operate", "admin") if who.may(a)],
                "mode": settings.mode, "currency": settings.currency}

    @app.get("/dashboard/data", tags=["dashboard"])
    def dashboard(_: Reader) -> dict[str, Any]:
        """What the dashboard draws for the latest finished run: reconciliation per day, forecasts
        with history and bands per series, the engine leaderboard, the allocation, the what-if sweep."""
        return dashboard_data(ops)

    @app.get("/dashboard/files/{name}", tags=["dashboard"], responses={404: {"description": "no such chart"}})
    def dashboard_file(name: str, _: Reader) -> FileResponse:
        """A chart the latest finished run drew (response_curves.png, whatif.png, fan_chart.png)."""
        run = latest_finished_run(ops)
        path = Path((run or {}).get("summary", {}).get("out_dir", "")) / name if run else None
        if name not in CHART_FILES or path is None or not path.is_file():
            raise HTTPException(404, "no such chart for the latest run")
        return FileResponse(path, media_type="image/png")

    @app.get("/health", tags=["service"])
    def health() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok", "version": __version__}

    @app.get("/ready", tags=["service"], responses={503: {"description": "a store is not reachable"}})
    def ready() -> JSONResponse:
        """The ops store answers a query, and the warehouse path is a file (or not made yet)."""
        checks: dict[str, str] = {}
        try:
            with ops.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            checks["ops_store"] = "ok"
        except sa.exc.SQLAlchemyError as exc:
            checks["ops_store"] = type(exc).__name__
        warehouse = settings.store.warehouse_path
        checks["warehouse"] = "ok" if not warehouse.exists() or warehouse.is_file() else "not a file"
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    @app.get("/runs", tags=["runs"])
    def runs(_: Reader, limit: Annotated[int, Query(ge=1, le=500)] = 20) -> list[dict[str, Any]]:
        """The latest runs, newest first; a run whose process is gone shows as abandoned."""
        return ops.latest_runs(limit)

    running: dict[str, threading.Thread] = {}
    starting = threading.Lock()  # two requests at once must not both start a run

    def run_in_background(inputs: RunInputs, key: PiiKey, lineage_id: str) -> None:
        try:
            run_pipeline(settings, inputs, settings.source.out, key=key, lineage_id=lineage_id, job="api")
        except FlashcastError as exc:  # recorded with the run (status failed); nobody to raise it to
            log.warning("run %s failed: %s", lineage_id, type(exc).__name__)

    def rebalance_in_background(key: PiiKey, lineage_id: str, by: str) -> None:
        try:
            result = rebalance(settings, key=key, by=by, lineage_id=lineage_id)
            log.info("rebalance %s: %s", lineage_id, result.outcome)
        except FlashcastError as exc:
            log.warning("rebalance %s failed: %s", lineage_id, type(exc).__name__)

    def start(kind: str, by: str) -> str:
        """Start a run or a rebalance on [source] in a thread: one at a time per server."""
        if settings.source.export is None:
            raise HTTPException(409, "no [source] export in the config: set it to run from the API")
        try:
            key = load_pii_key(settings.policy, settings.pii_key_file)
        except ConfigError as exc:  # the server's setup, not the request, is missing something
            raise HTTPException(409, f"ConfigError: {exc}") from exc
        with starting:
            if any(t.is_alive() for t in running.values()):
                raise HTTPException(409, "a run started by this server is still running")
            lineage_id = new_lineage_id()
            LineageLog(ops).append(f"{kind}_requested", lineage_id, {"by": by})
            running.clear()
            target, args = ((run_in_background, (RunInputs(settings.source.export, settings.source.spend), key,
                                                 lineage_id)) if kind == "run"
                            else (rebalance_in_background, (key, lineage_id, by)))
            running[lineage_id] = threading.Thread(target=target, args=args, name=f"{kind}-{lineage_id}",
                                                   daemon=True)
            running[lineage_id].start()
        return lineage_id

    app.state.start = start  # the schedule starts rebalances the same way

    @app.post("/runs", tags=["runs"], status_code=202,
              responses={409: {"description": "no [source] export or PII key configured, or this server's run "
                                              "is running"}})
    def start_run(who: Operator) -> dict[str, Any]:
        """Start a run on the configured `[source]` (export, spend, out) in the background; follow it
        at /runs/{lineage_id}. One at a time per server; runs from elsewhere queue at the warehouse."""
        return {"lineage_id": start("run", who.key_id), "status": "started"}

    @app.post("/rebalance", tags=["runs"], status_code=202,
              responses={409: {"description": "no [source] export or PII key configured, or this server's run "
                                              "is running"}})
    def start_rebalance(who: Operator) -> dict[str, Any]:
        """Start a rebalance (run, then push or hold per [delivery] auto_push, then the summary email)
        in the background; follow it at /runs/{lineage_id} and /payloads/{lineage_id}/deliveries."""
        return {"lineage_id": start("rebalance", who.key_id), "status": "started"}

    @app.get("/runs/{lineage_id}", tags=["runs"], responses={404: {"description": "no such run"}})
    def run(lineage_id: str, _: Reader) -> dict[str, Any]:
        """One run: its state, the stage it is in, its summary (out_dir), its output files with their
        SHA-256, and its reconciliation per day; `latest` for the newest (whatever its state)."""
        if lineage_id == "latest":
            newest = ops.latest_runs(1)
            if not newest:
                raise HTTPException(404, "no run yet")
            lineage_id = newest[0]["lineage_id"]
        r, rec = ops.runs, ops.reconciliation
        with ops.engine.connect() as conn:
            row = conn.execute(sa.select(r).where(r.c.lineage_id == lineage_id)).first()
            days = conn.execute(sa.select(rec).where(rec.c.lineage_id == lineage_id)
                                .order_by(rec.c.event_date)).all()
        entries = LineageLog(ops).entries(lineage_id)
        if row is None:
            # Accepted by POST /runs, its thread not yet recorded the start: requested, not unknown.
            if any(e["kind"] in ("run_requested", "rebalance_requested") for e in entries):
                return {"lineage_id": lineage_id, "status": "requested", "stage": None, "stages_started": 0,
                        "reconciliation": []}
            raise HTTPException(404, "no run with this lineage_id")
        run = {k: v for k, v in row._mapping.items() if k not in ("host", "pid", "process_start")}
        stages = [e["body"]["stage"] for e in entries if e["kind"] == "stage_started"]
        # Each output file of a finished run with its SHA-256, as the lineage log recorded it.
        outputs: dict[str, str] = next((e["body"]["outputs"] for e in entries if e["kind"] == "run_completed"), {})
        return {**run, "stage": stages[-1] if stages else None, "stages_started": len(stages), "outputs": outputs,
                "reconciliation": [{k: v for k, v in d._mapping.items() if k != "lineage_id"} for d in days]}

    @app.get("/lineage/verify", tags=["lineage"])
    def lineage_verify(_: Reader) -> dict[str, Any]:
        """Verify the whole hash chain and the heads recorded with finished runs."""
        try:
            report = LineageLog(ops).verify(run_anchors(ops))
        except LineageError as exc:
            return {"ok": False, "problem": str(exc)}
        return {"ok": True, "entries": report.entries, "head": report.head.to_json(),
                "anchors_checked": report.anchors_checked}

    @app.get("/lineage/{lineage_id}", tags=["lineage"], responses={404: {"description": "no entries"}})
    def lineage(lineage_id: str, _: Reader) -> list[dict[str, Any]]:
        """A run's lineage entries, oldest first."""
        entries = LineageLog(ops).entries(lineage_id)
        if not entries:
            raise HTTPException(404, "no lineage entries for this lineage_id")
        return entries

    @app.post("/forecast", tags=["forecast"])
    def forecast(body: ForecastIn, _: Reader) -> dict[str, Any]:
        """Forecast a posted daily series with the pipeline's engines, selection and conformal bands."""
        config = settings.forecast.model_copy(update={"horizon": body.horizon})
        if body.engines is not None:
            config = ForecastConfig.model_validate({**config.model_dump(), "engines": tuple(body.engines)})
        history = pd.DataFrame({"ds": pd.to_datetime(body.dates), "y": body.values}).sort_values("ds")
        with _ONE_FIT_AT_A_TIME:
            result = revenue_forecast(history, config, series_id="the posted series")
        frame = result.to_frame().drop(columns=["series_id", "engine"])
        frame["date"] = [d.isoformat() for d in result.dates]
        return {"engine": result.engine, "summary": result.summary(), "notes": list(result.notes),
                "leaderboard": list(result.leaderboard), "days": frame.to_dict(orient="records")}

    @app.post("/allocate", tags=["allocate"])
    def allocate(body: AllocateIn, _: Reader) -> dict[str, Any]:
        """Tomorrow's spend per channel from posted history, within the posted guardrails: each
        channel's reason and the guardrail that binds it."""
        guard = body.guardrails
        window = guard.lookback_days
        histories = [ChannelHistory(c.channel, c.spend[-1], float(sum(c.spend[-window:])),
                                    float(sum(c.outcome[-window:]))) for c in body.channels]
        if body.method == "inverse_cpa":
            allocation = allocate_inverse_cpa(histories, guard)
        else:
            series = [ChannelSeries(c.channel, np.array(c.spend), np.array(c.outcome), None) for c in body.channels]
            with _ONE_FIT_AT_A_TIME:
                allocation = allocate_by_curves(histories, series, guard, settings.allocation).allocation
        rows = [asdict(r) for r in allocation.rows]
        return {"method": allocation.method, "budget": allocation.budget, "channels": rows,
                "binding": {r["channel"]: r["bound"] for r in rows if r["bound"]}}

    @app.get("/forecast/latest", tags=["forecast"], responses={404: {"description": "no payload yet"}})
    def latest_forecast(_: Reader) -> dict[str, Any]:
        """The latest run's forecast with its 50/80/95% bands, from its payload."""
        lineage_id = latest_payload_id(ops)
        if lineage_id is None:
            raise HTTPException(404, "no run has made a payload yet")
        return {"lineage_id": lineage_id, **load_payload(ops, lineage_id)["forecast"]}

    @app.get("/payloads/{lineage_id}", tags=["payloads"], responses={404: {"description": "no such payload"}})
    def payload(lineage_id: str, _: Reader) -> dict[str, Any]:
        """A run's payload document (JSON Schema 2.1.0); `latest` for the newest."""
        return load_payload(ops, _payload_id(lineage_id))

    @app.post("/payloads/{lineage_id}/push", tags=["payloads"], status_code=202,
              responses={404: {"description": "no such payload"},
                         409: {"description": "held for approval, or delivery not configured"}})
    def push_payload(lineage_id: str, who: Operator) -> dict[str, Any]:
        """Commit each platform's order (approved creatives only) to the outbox, then deliver in the
        background; follow it at /payloads/{lineage_id}/deliveries. Pushing again adds nothing."""
        lineage_id = _payload_id(lineage_id)
        try:
            orders = request_push(ops, settings, lineage_id, by=who.key_id)
        except (PushHeld, DeliveryRefused) as exc:
            raise HTTPException(409, f"{type(exc).__name__}: {exc}") from exc
        threading.Thread(target=deliver_in_background, name=f"push-{lineage_id}", daemon=True).start()
        return {"lineage_id": lineage_id, "orders": [o.to_json() for o in orders]}

    def deliver_in_background() -> None:
        try:
            deliver(ops, settings)
        except FlashcastError as exc:
            log.warning("delivery failed: %s", type(exc).__name__)

    @app.get("/payloads/{lineage_id}/deliveries", tags=["payloads"])
    def payload_deliveries(lineage_id: str, _: Reader) -> list[dict[str, Any]]:
        """Each platform's order of this payload, by version, with every delivery attempt."""
        return [o.to_json() for o in deliveries(ops, _payload_id(lineage_id))]

    def _payload_id(lineage_id: str) -> str:
        if lineage_id != "latest":
            return lineage_id
        latest = latest_payload_id(ops)
        if latest is None:
            raise HTTPException(404, "no run has made a payload yet")
        return latest

    def library() -> list[dict[str, Any]]:
        return latest_creatives(settings.store.warehouse_path, ops, timeout_s=settings.store.lock_timeout_s)

    @app.get("/creatives", tags=["creatives"])
    def creatives(_: Reader) -> list[dict[str, Any]]:
        """The latest run's creatives: traffic light, the checker's reasons, status after decisions."""
        return library()

    @app.post("/creatives/{creative_id}/decision", tags=["creatives"],
              responses={404: {"description": "not in the latest library"},
                         409: {"description": "a red creative approved without an override reason"}})
    def decide_creative(creative_id: str, body: DecisionIn, who: Approver) -> dict[str, Any]:
        """Approve or reject a creative with a comment; a red one needs an override reason to be
        approved. Recorded with the deciding key's id in the lineage log."""
        creative = next((c for c in library() if c["creative_id"] == creative_id), None)
        if creative is None:
            raise HTTPException(404, "no creative with this id in the latest run's library")
        try:
            record = decide(ops, creative, "approved" if body.decision == "approve" else "rejected",
                            comment=body.comment, override_reason=body.override_reason, by=who.key_id)
        except DecisionRefused as exc:
            raise HTTPException(409, str(exc)) from exc
        return asdict(record)

    @app.get("/keys", tags=["keys"])
    def keys(_: Admin) -> list[dict[str, Any]]:
        """Every key (live and revoked): id, role, dates. Never a secret."""
        return [asdict(k) for k in list_keys(ops)]

    @app.post("/keys", tags=["keys"], status_code=201)
    def new_key(body: NewKeyIn, who: Admin) -> dict[str, Any]:
        """A new key; its secret is in this response only."""
        key, secret = create_key(ops, body.role, by=who.key_id)
        return {**asdict(key), "key": secret}

    @app.delete("/keys/{key_id}", tags=["keys"], responses={404: {"description": "no live key with this id"}})
    def delete_key(key_id: str, who: Admin) -> dict[str, Any]:
        """Revoke a key (recorded in the lineage log with who did it)."""
        if not revoke_key(ops, key_id, by=who.key_id):
            raise HTTPException(404, "no live key with this id")
        return {"key_id": key_id, "revoked": True}

    return app


def _schedule(settings: Settings, app: FastAPI) -> BackgroundScheduler | None:
    """[schedule] rebalance as an APScheduler cron job in property_timezone. A firing while a run or
    rebalance of this server still runs is skipped (and one of another process is refused by the
    rebalance lock); missed firings while the server was down are not made up."""
    if settings.schedule.rebalance is None:
        return None

    def fire() -> None:
        try:
            lineage_id = app.state.start("rebalance", "schedule")
            log.info("scheduled rebalance %s started", lineage_id)
        except HTTPException as exc:
            log.warning("scheduled rebalance skipped: %s", exc.detail)

    scheduler = BackgroundScheduler(timezone=settings.property_timezone)
    scheduler.add_job(fire, CronTrigger.from_crontab(settings.schedule.rebalance, timezone=settings.property_timezone),
                      id="rebalance", max_instances=1, coalesce=True, misfire_grace_time=None)
    scheduler.start()
    app.state.scheduler = scheduler
    return scheduler


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes the input; ours names the field and the problem only.
        problems = [{"field": ".".join(str(p) for p in e["loc"] if p != "body") or "(body)",
                     "problem": str(e["msg"]).removeprefix("Value error, ")} for e in exc.errors()]
        return JSONResponse({"detail": problems}, status_code=422)

    @app.exception_handler(PayloadNotFound)
    async def not_found(_request: Request, exc: PayloadNotFound) -> JSONResponse:
        return JSONResponse({"detail": f"PayloadNotFound: {exc}"}, status_code=404)

    @app.exception_handler(FlashcastError)
    async def refused(_request: Request, exc: FlashcastError) -> JSONResponse:
        # What the libraries refuse (too short a history, infeasible guardrails) is the caller's to fix.
        return JSONResponse({"detail": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"},
                            status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected %s in a request", type(exc).__name__)
        return JSONResponse({"detail": "internal error"}, status_code=500)


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


class _BodyLimit:
    """Refuse a request body over `max_bytes` with 413: by its Content-Length, or (chunked, no
    length) by reading it first, at most `max_bytes` of it, and replaying it to the app."""

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.max_bytes:
                await _too_large(send, self.max_bytes)
                return
            await self.app(scope, receive, send)
            return
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                await _too_large(send, self.max_bytes)
                return
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        pending = iter(messages)

        async def replay() -> Message:
            return next(pending, None) or await receive()

        await self.app(scope, replay, send)


async def _too_large(send: Callable[[Message], Awaitable[None]], limit: int) -> None:
    body = JSONResponse({"detail": f"request body over {limit:,} bytes"}, status_code=413).body
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
