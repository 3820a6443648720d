"""POST /allocate under load on loopback (`flashcast serve` in its own process, 4 concurrent clients),
beside the same allocation computed by a direct call: requests/s and p50/p99 latency."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from flashcast.budget.plan import ChannelSeries, allocate_by_curves
from flashcast.budget.records import ChannelHistory
from flashcast.config import Guardrails, Settings

CLIENTS, REQUESTS = 4, 16  # an allocation fits curves with bootstrap: seconds each


def _body(days: int = 90) -> dict:
    rng = np.random.default_rng(3)
    channels = []
    for name, scale, half in (("Search", 400.0, 300.0), ("Video", 300.0, 500.0), ("Social", 200.0, 150.0),
                              ("Display", 250.0, 400.0)):
        spend = scale * rng.uniform(0.3, 1.7, days)
        outcome = np.maximum(0, 40 * spend / (spend + half) + rng.normal(0, 0.5, days))
        channels.append({"channel": name, "spend": spend.round(2).tolist(), "outcome": outcome.round(2).tolist()})
    return {"channels": channels, "guardrails": {"min_share": {}, "max_share": {}}}


def _percentiles(seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    return f"p50 {statistics.median(ms):.1f} ms, p99 {ms[min(len(ms) - 1, int(0.99 * len(ms)))]:.1f} ms"


def main() -> None:
    body = _body()
    settings = Settings()
    histories = [ChannelHistory(c["channel"], c["spend"][-1], sum(c["spend"][-28:]), sum(c["outcome"][-28:]))
                 for c in body["channels"]]
    series = [ChannelSeries(c["channel"], np.array(c["spend"]), np.array(c["outcome"]), None) for c in body["channels"]]
    guard = Guardrails(min_share={}, max_share={})
    direct = []
    for _ in range(5):
        start = time.perf_counter()
        allocate_by_curves(histories, series, guard, settings.allocation)
        direct.append(time.perf_counter() - start)
    print(f"allocate, direct call (4 channels, 90 days): {_percentiles(direct)}, {1 / statistics.median(direct):.1f}/s "
          "on one core")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "flashcast.toml"
        config.write_text(f'[store]\nhome = "{Path(tmp) / "home"}"\n')
        cli = [sys.executable, "-c", "from flashcast.cli import main; main()"]
        made = subprocess.run([*cli, "keys", "create", "--role", "viewer", "-c", str(config)], capture_output=True,
                              text=True, check=True)
        headers = {"Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"}
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([*cli, "serve", "--port", str(port), "-c", str(config)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(200):
                try:
                    httpx.get(f"{base}/health", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
                assert client.post("/allocate", json=body).status_code == 200  # warm-up

                def one(_: int) -> float:
                    start = time.perf_counter()
                    assert client.post("/allocate", json=body).status_code == 200
                    return time.perf_counter() - start

                start = time.perf_counter()
                with ThreadPoolExecutor(CLIENTS) as pool:
                    latencies = list(pool.map(one, range(REQUESTS)))
                wall = time.perf_counter() - start
            print(f"POST /allocate on loopback, {CLIENTS} concurrent clients, {REQUESTS} requests: "
                  f"{REQUESTS / wall:.1f} requests/s, {_percentiles(latencies)} (each request includes key lookup, "
                  "validation, the allocation and JSON both ways)")
        finally:
            server.terminate()
            server.wait(timeout=10)
