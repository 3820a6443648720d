"""Shared fixtures: a small simulated export (both formats), settings in a temp store, a test key."""

from __future__ import annotations

import json
import shutil
import threading
import time
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
