"""Shared fixtures: a small simulated export (both formats), settings in a temp store, a test key."""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import pytest

from flashcast.config import Settings, StoreConfig
from flashcast.keys import PiiKey
from flashcast.simulate import SimulationResult, SimulationSpec, simulate

REAL_GA4 = Path(__file__).parent / "data" / "ga4_obfuscated_sample_ecommerce_jan2021.ndjson"  # see data/SOURCES.md
TEST_KEY = "flashcast-test-key-0123456789abcdef"
SMALL_SPEC = SimulationSpec(days=45, users=600, seed=11, end_date=date(2026, 3, 31))
# Long enough for the forecast backtest (the default path), small enough to run in seconds.
RUN_SPEC = SimulationSpec(days=150, users=600, seed=3, end_date=date(2026, 5, 31), formats=("ndjson",))


@pytest.fixture(scope="session")
def small_sim(tmp_path_factory: pytest.TempPathFactory) -> SimulationResult:
    return simulate(SMALL_SPEC, tmp_path_factory.mktemp("sim"))


@pytest.fixture(scope="session")
def small_truth(small_sim: SimulationResult) -> dict:
    return json.loads(small_sim.truth_file.read_text())


def write_config(folder: Path, home: Path, extra: str = "") -> Path:
    path = folder / "flashcast.toml"
    path.write_text(f'property_timezone = "America/New_York"\n{extra}\n[store]\nhome = "{home}"\n')
    return path


@dataclass(frozen=True)
class FinishedRun:
    """One `flashcast run` on RUN_SPEC's export, shared by every test that only reads its results."""

    sim: SimulationResult
    truth: dict
    config: Path
    out: Path
    summary: dict

    @property
    def settings(self) -> Settings:
        return Settings(store=StoreConfig(home=self.config.parent / "home"))

    def copy_to(self, folder: Path) -> FinishedRun:
        """A private copy (stores, outputs, config) for a test that changes things."""
        shutil.copytree(self.config.parent / "home", folder / "home")
        shutil.copytree(self.out, folder / "out")
        return FinishedRun(self.sim, self.truth, write_config(folder, folder / "home"), folder / "out", self.summary)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    from typer.testing import CliRunner

    from flashcast.cli import app

    root = tmp_path_factory.mktemp("run")
    sim = simulate(RUN_SPEC, root / "sim")
    config, out = write_config(root, root / "home"), root / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FLASHCAST_PII_KEY", TEST_KEY)
        result = CliRunner().invoke(app, ["run", "--export", str(sim.export_dirs["ndjson"]), "--spend",
                                          str(sim.spend_file), "--out", str(out), "-c", str(config)])
    assert result.exit_code == 0, result.output
    return FinishedRun(sim, json.loads(sim.truth_file.read_text()), config, out,
                       json.loads((out / "run_summary.json").read_text()))


@pytest.fixture
def pii_key(monkeypatch: pytest.MonkeyPatch) -> PiiKey:
    monkeypatch.setenv("FLASHCAST_PII_KEY", TEST_KEY)
    return PiiKey(TEST_KEY.encode())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(property_timezone="America/New_York", store=StoreConfig(home=tmp_path / "home"))


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    yield connection
    connection.close()


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def ga4_row(**overrides: object) -> dict:
    """A minimal valid GA4 export row (INT64 as strings, as BigQuery writes them)."""
    row: dict = {
        "event_date": "20260301",
        "event_timestamp": "1772370000000000",
        "event_name": "page_view",
        "event_params": [
            {"key": "ga_session_id", "value": {"string_value": None, "int_value": "1772370000",
                                               "float_value": None, "double_value": None}},
            {"key": "page_location", "value": {"string_value": "https://shop.example.com/", "int_value": None,
                                               "float_value": None, "double_value": None}},
        ],
        "user_pseudo_id": "123.456",
        "stream_id": "1",
        "privacy_info": {"analytics_storage": "Yes", "ads_storage": "Yes"},
        "ecommerce": None,
    }
    row.update(overrides)
    return row


# ---------------------------------------------------------------- LLM stand-in server

class StandIn:
    """Scripted replies: each item is (status, body dict or raw text, headers, delay seconds)."""

    def __init__(self) -> None:
        self.script: list[tuple[int, Any, dict[str, str], float]] = []
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def openai_ok(self, content: str) -> tuple[int, Any, dict[str, str], float]:
        return (200, {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "stand-in",
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                   "finish_reason": "stop"}],
                      "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}, {}, 0.0)

    def anthropic_ok(self, data: dict[str, Any]) -> tuple[int, Any, dict[str, str], float]:
        return (200, {"id": "msg_1", "type": "message", "role": "assistant", "model": "stand-in",
                      "content": [{"type": "tool_use", "id": "toolu_1", "name": "Copy", "input": data}],
                      "stop_reason": "tool_use", "stop_sequence": None,
                      "usage": {"input_tokens": 12, "output_tokens": 8}}, {}, 0.0)

    @staticmethod
    def error(status: int, headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str], float]:
        return (status, {"error": {"type": "error", "message": f"status {status}"}}, headers or {}, 0.0)


@pytest.fixture
def stand_in() -> Iterator[tuple[str, StandIn]]:
    state = StandIn()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append((self.path, body))
            status, reply, headers, delay = state.script.pop(0) if state.script else state.error(500)
            time.sleep(delay)
            data = reply.encode() if isinstance(reply, str) else json.dumps(reply).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and left

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
    server.server_close()


# ------------------------------------------------------------------ a real PostgreSQL server

def skip_or_fail(reason: str) -> None:
    """Skip a test whose service is missing; under CI=true a missing service fails the run instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: a skipped service test fails the run)")
    pytest.skip(reason)


def _postgres_bin() -> Path | None:
    for candidate in [shutil.which("initdb"), *sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)]:
        if candidate:
            return Path(candidate).resolve().parent
    return None


@dataclass(frozen=True)
class PostgresServer:
    socket_dir: Path
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}&port={self.port}"


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster on a Unix socket (Debian's postgresql package; `make test`
    installs it). As root, the server runs as the `postgres` user, which initdb requires."""
    bindir = _postgres_bin()
    if bindir is None:
        skip_or_fail("PostgreSQL is not installed (Debian package postgresql; make test installs it)")
    assert bindir is not None
    root = Path(tempfile.mkdtemp(prefix="flashcast-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    options = f"-k {sockets} -p {port} -c listen_addresses='' -c fsync=off"
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-l", str(root / "log"),
                    "start"], check=True, capture_output=True)
    try:
        yield PostgresServer(sockets, port)
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def ops_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty operational store: a SQLite file, or a fresh database on the PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ops.sqlite'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    import sqlalchemy as sa

    name = f"flashcast_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(server.url(), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return server.url(name)
