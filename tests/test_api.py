"""The REST API: roles on every endpoint, errors that name fields but never echo values, body
limits, and the stateless forecast and allocate endpoints computing what the pipeline computes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from conftest import FinishedRun
from flashcast.access import ROLES, create_key, list_keys
from flashcast.api import create_app
from flashcast.config import Settings, StoreConfig


@pytest.fixture
def served(tmp_path: Path, ops_url: str) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The app on an empty store: SQLite, and a real PostgreSQL server."""
    settings = Settings(store=StoreConfig(home=tmp_path / "home", ops_url=ops_url))
    app = create_app(settings, max_body_bytes=100_000)
    keys = {role: create_key(app.state.ops, role, by="test")[1] for role in ROLES}
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, keys
    app.state.ops.dispose()


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _series(days: int = 200, seed: int = 0) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    start = date(2026, 1, 1)
    t = np.arange(days)
    values = 100 + 0.2 * t + 15 * np.sin(2 * np.pi * t / 7) + rng.normal(0, 3, days)
    return {"dates": [(start + timedelta(days=int(i))).isoformat() for i in t], "values": [float(v) for v in values]}


def _channels(days: int = 90) -> list[dict]:
    rng = np.random.default_rng(3)
    out = []
    for name, scale, half in (("Search", 400.0, 300.0), ("Video", 300.0, 500.0), ("Social", 200.0, 150.0)):
        spend = scale * rng.uniform(0.3, 1.7, days)
        outcome = 40 * spend / (spend + half) + rng.normal(0, 0.5, days)
        out.append({"channel": name, "spend": [round(float(x), 2) for x in spend],
                    "outcome": [max(0.0, round(float(y), 2)) for y in outcome]})
    return out


ENDPOINTS = [  # method, path, body, action needed
    ("get", "/runs", None, "read"),
    ("post", "/runs", None, "operate"),
    ("get", "/runs/nope", None, "read"),
    ("get", "/lineage/verify", None, "read"),
    ("get", "/lineage/nope", None, "read"),
    ("post", "/forecast", _series(), "read"),
    ("post", "/allocate", {"channels": _channels(), "guardrails": {"min_share": {}, "max_share": {}}}, "read"),
    ("get", "/creatives", None, "read"),
    ("post", "/creatives/cr-nope/decision", {"decision": "reject", "comment": "off-brand"}, "approve"),
    ("get", "/forecast/latest", None, "read"),
    ("get", "/payloads/latest", None, "read"),
    ("post", "/payloads/nope/push", None, "operate"),
    ("get", "/payloads/nope/deliveries", None, "read"),
    ("post", "/rebalance", None, "operate"),
    ("get", "/keys", None, "admin"),
    ("post", "/keys", {"role": "viewer"}, "admin"),
    ("delete", "/keys/key_000000000000", None, "admin"),
]
MAY = {"read": set(ROLES), "approve": {"approver", "admin"}, "operate": {"operator", "admin"}, "admin": {"admin"}}


@pytest.mark.parametrize(("method", "path", "body", "action"), ENDPOINTS, ids=[f"{m} {p}" for m, p, *_ in ENDPOINTS])
def test_every_endpoint_needs_a_key_and_the_right_role(served: tuple[TestClient, dict[str, str]], method: str,
                                                       path: str, body: dict | None, action: str) -> None:
    client, keys = served
    send = getattr(client, method)
    kwargs = {"json": body} if body is not None else {}
    assert send(path, **kwargs).status_code == 401
    assert send(path, headers=_auth("fck_not-a-key"), **kwargs).status_code == 401
    for role, secret in keys.items():
        status = send(path, headers=_auth(secret), **kwargs).status_code
        if role in MAY[action]:
            assert status in (200, 201, 404, 409), (role, status)  # 404: no such id; 409: no [source]
        else:
            assert status == 403, (role, status)
    assert send(path, headers={"X-API-Key": keys["admin"]}, **kwargs).status_code != 401


def test_health_and_readiness_need_no_key(served: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = served
    assert client.get("/health").json()["status"] == "ok"
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["checks"] == {"ops_store": "ok", "warehouse": "ok"}
    assert "/allocate" in client.get("/openapi.json").json()["paths"]


def test_a_bad_body_names_the_field_and_never_echoes_a_value(served: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = served
    body = _series(30)
    body["values"][3] = "jane.doe@example.com"
    response = client.post("/forecast", json=body, headers=_auth(keys["viewer"]))
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "values.3"
    assert "jane.doe" not in response.text and "Traceback" not in response.text
    uneven = {**_series(30), "values": [1.0] * 29}
    problem = client.post("/forecast", json=uneven, headers=_auth(keys["viewer"])).json()["detail"][0]["problem"]
    assert "one value per date" in problem
    unknown = client.post("/forecast", json={**_series(30), "surprise": 1}, headers=_auth(keys["viewer"]))
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["field"] == "surprise"
    assert client.get("/runs?limit=0", headers=_auth(keys["viewer"])).status_code == 422


def test_an_oversized_body_is_refused_with_413(served: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = served
    big = json.dumps(_series(5000)).encode()
    assert len(big) > 100_000
    response = client.post("/forecast", content=big, headers={**_auth(keys["viewer"]),
                                                              "content-type": "application/json"})
    assert response.status_code == 413 and "over 100,000 bytes" in response.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(big), 50_000):
            yield big[start:start + 50_000]

    chunked = client.post("/forecast", content=chunks(), headers={**_auth(keys["viewer"]),
                                                                 "content-type": "application/json"})
    assert chunked.status_code == 413


def test_the_forecast_endpoint_gives_the_pipelines_forecast(served: tuple[TestClient, dict[str, str]]) -> None:
    import pandas as pd

    from flashcast.stages.forecast import revenue_forecast

    client, keys = served
    body = {**_series(), "horizon": 10}
    answer = client.post("/forecast", json=body, headers=_auth(keys["viewer"])).json()
    history = pd.DataFrame({"ds": pd.to_datetime(body["dates"]), "y": body["values"]})
    direct = revenue_forecast(history, Settings().forecast.model_copy(update={"horizon": 10}))
    assert answer["engine"] == direct.engine
    assert [d["point"] for d in answer["days"]] == [float(x) for x in direct.point]
    days = answer["days"]
    assert len(days) == 10 and days[0]["date"] == "2026-07-20"
    assert all(d["lo_95"] <= d["lo_80"] <= d["lo_50"] <= d["point"] <= d["hi_50"] <= d["hi_80"] <= d["hi_95"]
               for d in days)
    short = client.post("/forecast", json=_series(5), headers=_auth(keys["viewer"]))
    assert short.status_code == 422
    assert short.json()["detail"] == "ForecastError: the posted series: 5 days of history; at least 28 needed"
    weekly = {**_series(100), "dates": [(date(2024, 1, 7) + timedelta(weeks=i)).isoformat() for i in range(100)],
              "horizon": 4}
    weeks = client.post("/forecast", json=weekly, headers=_auth(keys["viewer"])).json()["days"]
    assert [d["date"] for d in weeks] == ["2025-12-07", "2025-12-14", "2025-12-21", "2025-12-28"]


def test_the_allocate_endpoint_splits_within_the_guardrails(served: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = served
    channels = _channels()
    guardrails = {"min_share": {}, "max_share": {"Search": 0.5}, "max_daily_change": 0.3, "total_budget": 900.0}
    answer = client.post("/allocate", json={"channels": channels, "guardrails": guardrails},
                         headers=_auth(keys["viewer"])).json()
    spend = {r["channel"]: r["spend"] for r in answer["channels"]}
    assert answer["method"].startswith("curves") and set(spend) == {"Search", "Video", "Social"}
    assert sum(spend.values()) == pytest.approx(900.0, abs=0.011)
    yesterday = {c["channel"]: c["spend"][-1] for c in channels}
    for row in answer["channels"]:
        assert row["lower"] - 0.005 <= row["spend"] <= row["upper"] + 0.005
        assert row["why"]
    assert spend["Search"] <= 450.0 + 0.01
    assert all(answer["binding"][c] == r["bound"] for r in answer["channels"] if r["bound"] for c in [r["channel"]])
    assert all(abs(spend[c] - yesterday[c]) <= 0.3 * yesterday[c] + 0.05 * 900 + 0.01 for c in spend)
    crossed = client.post("/allocate", json={"channels": channels, "guardrails": {"min_share": {"Search": 0.9},
                                                                                "max_share": {"Search": 0.5}}},
                          headers=_auth(keys["viewer"]))
    assert crossed.status_code == 422 and "min_share is above max_share" in crossed.text


def test_posted_allocations_and_forecasts_compute_one_at_a_time(served: tuple[TestClient, dict[str, str]],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import flashcast.api as api

    client, keys = served
    active, most, lock = [0], [0], threading.Lock()

    def timed(real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            with lock:
                active[0] += 1
                most[0] = max(most[0], active[0])
            time.sleep(0.2)  # long enough for the other requests to arrive meanwhile
            try:
                return real(*args, **kwargs)
            finally:
                with lock:
                    active[0] -= 1
        return call

    monkeypatch.setattr(api, "allocate_by_curves", timed(api.allocate_by_curves))
    monkeypatch.setattr(api, "revenue_forecast", timed(api.revenue_forecast))
    body = {"channels": _channels(), "guardrails": {"min_share": {}, "max_share": {}}}
    calls = [("/allocate", body)] * 3 + [("/forecast", _series(60))] * 2
    with ThreadPoolExecutor(len(calls)) as pool:
        codes = list(pool.map(lambda c: client.post(c[0], json=c[1], headers=_auth(keys["viewer"])).status_code,
                              calls))
    assert codes == [200] * len(calls)
    assert most[0] == 1


def test_keys_are_stored_hashed_and_changes_are_logged_with_who(served: tuple[TestClient, dict[str, str]]) -> None:
    import sqlalchemy as sa

    client, keys = served
    made = client.post("/keys", json={"role": "approver"}, headers=_auth(keys["admin"]))
    assert made.status_code == 201
    secret, key_id = made.json()["key"], made.json()["key_id"]
    assert client.get("/runs", headers=_auth(secret)).status_code == 200
    listed = client.get("/keys", headers=_auth(keys["admin"])).text
    assert key_id in listed and secret not in listed and "fck_" not in listed
    assert client.delete(f"/keys/{key_id}", headers=_auth(keys["admin"])).status_code == 200
    assert client.get("/runs", headers=_auth(secret)).status_code == 401
    ops = client.app.state.ops  # type: ignore[attr-defined]
    with ops.engine.connect() as conn:
        dump = "\n".join(str(tuple(row)) for table in ops.metadata.sorted_tables
                         for row in conn.execute(sa.select(table)))
        entries = [json.loads(e) for e in conn.execute(sa.text("SELECT entry FROM lineage_log ORDER BY seq")).scalars()]
    assert all(s not in dump for s in (*keys.values(), secret))
    admin_id = next(e["body"]["key_id"] for e in entries if e["kind"] == "api_key_created"
                    and e["body"]["role"] == "admin")
    assert [(e["kind"], e["body"]["by"]) for e in entries[-2:]] == [("api_key_created", admin_id),
                                                                    ("api_key_revoked", admin_id)]
    verify = client.get("/lineage/verify", headers=_auth(keys["viewer"])).json()
    assert verify["ok"] and verify["entries"] == len(entries)


def test_flashcast_serve_answers_on_loopback_with_a_key_made_by_the_cli(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys
    import time

    import httpx

    from conftest import write_config

    config = write_config(tmp_path, tmp_path / "home")
    cli = [sys.executable, "-c", "from flashcast.cli import main; main()"]
    made = subprocess.run([*cli, "keys", "create", "--role", "viewer", "-c", str(config)], capture_output=True,
                          text=True, check=True)
    secret = made.stdout.strip().splitlines()[-1]
    assert secret.startswith("fck_") and "viewer key key_" in made.stdout
    listed = subprocess.run([*cli, "keys", "list", "-c", str(config)], capture_output=True, text=True, check=True)
    assert "viewer" in listed.stdout and secret not in listed.stdout
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([*cli, "serve", "--port", str(port), "-c", str(config)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        assert httpx.get(f"{base}/runs", timeout=5).status_code == 401
        assert httpx.get(f"{base}/runs", headers=_auth(secret), timeout=5).json() == []
        assert httpx.get(f"{base}/openapi.json", timeout=5).json()["info"]["title"] == "Flashcast"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_person_approves_or_rejects_creatives_and_red_needs_an_override(finished_run: FinishedRun,
                                                                          tmp_path: Path) -> None:
    import duckdb

    run = finished_run.copy_to(tmp_path)  # its own warehouse and ops store: decisions change them
    with duckdb.connect(str(run.settings.store.warehouse_path)) as con:  # one red creative, as a checker finds
        con.execute("""INSERT INTO creatives SELECT * REPLACE ('cr-red0000000' AS creative_id, 'red' AS light,
            'rejected' AS status, 'red: body: an email address' AS reasons)
            FROM creatives WHERE lineage_id = (SELECT max(lineage_id) FROM creatives) LIMIT 1""")
    app = create_app(run.settings)
    keys = {role: create_key(app.state.ops, role, by="test")[1] for role in ROLES}
    with TestClient(app, raise_server_exceptions=False) as client:
        library = client.get("/creatives", headers=_auth(keys["viewer"])).json()
        assert len(library) > 10 and {"light", "status", "reasons", "headline"} <= set(library[0])
        pending = next(c for c in library if c["status"] == "pending")
        url = f"/creatives/{pending['creative_id']}/decision"
        body = {"decision": "approve", "comment": "fine; questions to jane.doe@example.com"}
        assert client.post(url, json=body, headers=_auth(keys["viewer"])).status_code == 403
        assert client.post(url, json=body, headers=_auth(keys["operator"])).status_code == 403
        decided = client.post(url, json=body, headers=_auth(keys["approver"]))
        assert decided.status_code == 200 and "jane.doe" not in decided.text
        after = {c["creative_id"]: c for c in client.get("/creatives", headers=_auth(keys["viewer"])).json()}
        assert after[pending["creative_id"]]["status"] == "approved"
        red = "/creatives/cr-red0000000/decision"
        refused = client.post(red, json={"decision": "approve", "comment": "ok"}, headers=_auth(keys["approver"]))
        assert refused.status_code == 409 and "override_reason" in refused.text
        overridden = client.post(red, json={"decision": "approve", "comment": "ok", "override_reason": "legal signed"},
                                 headers=_auth(keys["approver"]))
        assert overridden.status_code == 200
        assert client.post("/creatives/cr-nope/decision", json=body, headers=_auth(keys["approver"])).status_code == 404
        approver_id = next(k["key_id"] for k in client.get("/keys", headers=_auth(keys["admin"])).json()
                           if k["role"] == "approver")
        entries = [e for e in client.get(f"/lineage/{library[0]['lineage_id']}", headers=_auth(keys["viewer"])).json()
                   if e["kind"] == "creative_decided"]
    assert [(e["body"]["by"], e["body"]["light"], e["body"]["override"]) for e in entries] == [
        (approver_id, pending["light"], False), (approver_id, "red", True)]


def test_an_operator_starts_a_run_on_the_configured_source_and_follows_it(
        finished_run: FinishedRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from conftest import TEST_KEY
    from flashcast.config import SourceConfig

    monkeypatch.setenv("FLASHCAST_PII_KEY", TEST_KEY)
    run = finished_run.copy_to(tmp_path)
    source = SourceConfig(export=finished_run.sim.export_dirs["ndjson"], spend=finished_run.sim.spend_file,
                          out=tmp_path / "api-out")
    app = create_app(run.settings.model_copy(update={"source": source}))
    keys = {role: create_key(app.state.ops, role, by="test")[1] for role in ROLES}
    with TestClient(app, raise_server_exceptions=False) as client:
        # A person's decisions before the run: they hold for the same copy in the run's library.
        library = client.get("/creatives", headers=_auth(keys["viewer"])).json()
        pending = [c for c in library if c["status"] == "pending"]
        approved, rejected = pending[0]["creative_id"], pending[1]["creative_id"]
        for creative_id, decision in ((approved, "approve"), (rejected, "reject")):
            assert client.post(f"/creatives/{creative_id}/decision", json={"decision": decision, "comment": "seen"},
                               headers=_auth(keys["approver"])).status_code == 200
        started = client.post("/runs", headers=_auth(keys["operator"]))
        assert started.status_code == 202
        lineage_id = started.json()["lineage_id"]
        assert client.post("/runs", headers=_auth(keys["operator"])).status_code == 409  # one at a time
        deadline = time.monotonic() + 300
        first = client.get(f"/runs/{lineage_id}", headers=_auth(keys["viewer"])).json()
        assert first["status"] in ("requested", "running")  # known at once, even before its thread records it
        while (state := client.get(f"/runs/{lineage_id}", headers=_auth(keys["viewer"])).json())["status"] in (
                "requested", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert state["status"] == "completed", state.get("error")
        assert state["job"] == "api" and state["stage"] == "payload" and state["reconciliation"]
        assert client.get("/runs/latest", headers=_auth(keys["viewer"])).json() == state
        assert {"payload", "report", "forecast"} <= set(state["outputs"])
        assert len(state["outputs"]["payload"]) == 64  # its SHA-256, as the lineage log recorded it
        assert all(d["input_rows"] == d["accepted"] + d["dropped_consent"] + d["quarantined"] + d["duplicate"]
                   for d in state["reconciliation"])
        assert (tmp_path / "api-out" / "report.md").exists()
        payload = json.loads((tmp_path / "api-out" / "payload.json").read_text())
        statuses = {c["creative_id"]: c["status"] for c in payload["creatives"]}
        assert statuses[approved] == "approved" and rejected not in statuses
        assert sum(s == "pending" for s in statuses.values()) == len(pending) - 2
        entries = client.get(f"/lineage/{lineage_id}", headers=_auth(keys["viewer"])).json()
    operator_id = next(k.key_id for k in list_keys(app.state.ops) if k.role == "operator")
    assert entries[0]["kind"] == "run_requested" and entries[0]["body"] == {"by": operator_id}


def test_starting_a_run_without_a_source_or_a_pii_key_says_what_the_server_lacks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flashcast.config import SourceConfig

    monkeypatch.delenv("FLASHCAST_PII_KEY", raising=False)
    settings = Settings(store=StoreConfig(home=tmp_path / "home"))
    for source, says in ((SourceConfig(), "no [source] export"), (SourceConfig(export=tmp_path), "ConfigError")):
        app = create_app(settings.model_copy(update={"source": source}))
        secret = create_key(app.state.ops, "operator", by="test")[1]
        with TestClient(app, raise_server_exceptions=False) as client:
            answer = client.post("/runs", headers=_auth(secret))
            none_yet = client.get("/runs/latest", headers=_auth(secret))
        assert answer.status_code == 409 and says in answer.json()["detail"]
        assert none_yet.status_code == 404 and none_yet.json()["detail"] == "no run yet"
        app.state.ops.dispose()


def test_an_operator_pushes_a_payload_and_follows_its_delivery(tmp_path: Path, ops_url: str) -> None:
    """Sandbox mode: the orders go to the built-in stand-in platform; the API shows each attempt."""
    import time

    from delivery_helpers import stored_payload

    settings = Settings(mode="sandbox", store=StoreConfig(home=tmp_path / "home", ops_url=ops_url))
    app = create_app(settings)
    keys = {role: create_key(app.state.ops, role, by="test")[1] for role in ROLES}
    held = stored_payload(app.state.ops, settings, status="pending", sandbox=True)
    ready = stored_payload(app.state.ops, settings, sandbox=True)
    with TestClient(app, raise_server_exceptions=False) as client:
        latest = client.get("/payloads/latest", headers=_auth(keys["viewer"])).json()
        assert latest["lineage_id"] == ready["lineage_id"] and latest["orders"] and latest["sandbox"] is True
        forecast = client.get("/forecast/latest", headers=_auth(keys["viewer"])).json()
        assert forecast["lineage_id"] == ready["lineage_id"] and "lo_80" in forecast["days"][0]
        refused = client.post(f"/payloads/{held['lineage_id']}/push", headers=_auth(keys["operator"]))
        assert refused.status_code == 409 and "PushHeld" in refused.json()["detail"]
        assert client.post(f"/payloads/{ready['lineage_id']}/push", headers=_auth(keys["viewer"])).status_code == 403
        pushed = client.post(f"/payloads/{ready['lineage_id']}/push", headers=_auth(keys["operator"]))
        assert pushed.status_code == 202 and len(pushed.json()["orders"]) == 3
        deadline = time.monotonic() + 30
        while True:
            orders = client.get(f"/payloads/{ready['lineage_id']}/deliveries", headers=_auth(keys["viewer"])).json()
            if {o["state"] for o in orders} == {"delivered"}:
                break
            assert time.monotonic() < deadline, orders
            time.sleep(0.1)
        assert all(o["attempts"][-1]["outcome"] == "delivered" for o in orders)
        again = client.post(f"/payloads/{ready['lineage_id']}/push", headers=_auth(keys["operator"])).json()
        assert [o["version"] for o in again["orders"]] == [1, 1, 1]  # pushing again adds nothing
        assert client.get("/payloads/nope", headers=_auth(keys["viewer"])).status_code == 404
        entries = client.get(f"/lineage/{ready['lineage_id']}", headers=_auth(keys["viewer"])).json()
    operator_id = next(k.key_id for k in list_keys(app.state.ops) if k.role == "operator")
    requested = [e for e in entries if e["kind"] == "push_requested"]
    assert len(requested) == 1 and requested[0]["body"]["by"] == operator_id and requested[0]["body"]["sandbox"]
    assert sum(e["kind"] == "payload_delivered" for e in entries) == 3
    app.state.ops.dispose()
