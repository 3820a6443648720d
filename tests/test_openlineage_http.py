"""OpenLineage over HTTP: run events reach a lineage server stand-in on 127.0.0.1 in the real wire format."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from flashcast.config import LineageConfig
from flashcast.lineage import DatasetRef, OpenLineageEmitter


@pytest.fixture
def lineage_server() -> Iterator[tuple[str, list[tuple[str, dict]]]]:
    received: list[tuple[str, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, json.loads(body)))
            self.send_response(201)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def test_run_events_are_posted_to_the_lineage_api(lineage_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, received = lineage_server
    emitter = OpenLineageEmitter(LineageConfig(transport="http", url=url, namespace="shop"), tmp_path)
    run_id = "01a20da6-d8e7-71c8-8c77-5f781cdab97b"
    emitter.emit("START", run_id=run_id, job="flashcast.run", inputs=[DatasetRef("file", "/data/export")])
    emitter.emit("FAIL", run_id=run_id, job="flashcast.run", error="stage guard: ReconciliationError: x")
    assert [path for path, _ in received] == ["/api/v1/lineage", "/api/v1/lineage"]
    start, fail = (event for _, event in received)
    assert start["eventType"] == "START" and fail["eventType"] == "FAIL"
    assert start["run"]["runId"] == run_id and start["job"] == {"namespace": "shop", "name": "flashcast.run",
                                                                 "facets": {}}
    assert start["inputs"][0]["name"] == "/data/export"
    assert fail["run"]["facets"]["errorMessage"]["message"].startswith("stage guard")
    assert start["schemaURL"].startswith("https://openlineage.io/spec/")
    assert not (tmp_path / "openlineage.jsonl").exists()
