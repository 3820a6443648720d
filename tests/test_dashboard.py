"""The approval dashboard in a real headless Chromium (Debian's package, driven by Playwright) against
`flashcast serve`'s app on 127.0.0.1, in sandbox mode: log in per role, check the fan chart's data,
decide on creatives, reload, push and follow the delivery. Screenshots go to the test's folder."""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from conftest import TEST_KEY, FinishedRun, skip_or_fail
from flashcast.access import ROLES, create_key
from flashcast.api import create_app
from flashcast.config import Settings
from flashcast.keys import PiiKey
from flashcast.pipeline import run_pipeline
from flashcast.records import RunInputs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def sandbox_server(finished_run: FinishedRun, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[tuple[str, dict[str, str], Settings]]:
    """A sandbox-mode run of the test export, served by the API on a loopback port."""
    if CHROMIUM is None:
        skip_or_fail("Chromium is not installed (Debian package chromium; make test installs it)")
    folder = tmp_path_factory.mktemp("dashboard")
    run = finished_run.copy_to(folder)
    settings = run.settings.model_copy(update={"mode": "sandbox"})
    # the spend file a complete day short: the run has something that needs a person's attention
    header, *rows = finished_run.sim.spend_file.read_text().splitlines()
    last_two = sorted({row[:10] for row in rows})[-2:]  # the partial last day and the one before
    spend = folder / "spend.csv"
    spend.write_text("\n".join([header, *(row for row in rows if row[:10] not in last_two)]) + "\n")
    inputs = RunInputs(finished_run.sim.export_dirs["ndjson"], spend)
    run_pipeline(settings, inputs, folder / "out", key=PiiKey(TEST_KEY.encode()))
    app = create_app(settings)
    keys = {role: create_key(app.state.ops, role, by="test")[1] for role in ROLES}
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", keys, settings
    server.should_exit = True
    thread.join(10)
    app.state.ops.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if CHROMIUM is None:
        skip_or_fail("Chromium is not installed (Debian package chromium; make test installs it)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _login(browser: Any, url: str, key: str, *, width: int = 1280) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(url + "/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector("body[data-ready=true]", state="attached", timeout=60_000)
    return page, errors


def _api(url: str, key: str, path: str) -> Any:
    return httpx.get(url + path, headers={"Authorization": f"Bearer {key}"}, timeout=30).json()


@pytest.mark.slow
def test_an_approver_sees_the_fan_chart_and_decides_and_the_decisions_hold(
        sandbox_server: tuple[str, dict[str, str], Settings], browser: Any, tmp_path: Path) -> None:
    url, keys, _settings = sandbox_server
    page, errors = _login(browser, url, keys["approver"])
    assert page.locator("#sandbox").is_visible() and "SANDBOX" in page.inner_text("#sandbox")
    # What the run's report asks a person to look at, before the copy is approved.
    attention = _api(url, keys["viewer"], "/dashboard/data")["run"]["attention"]
    assert attention and attention[0].startswith("The spend data end on ")
    assert page.locator("#run-attention").is_visible()
    assert page.locator("#run-attention li").all_inner_texts() == attention
    # The fan chart draws the API's numbers: history, three bands and the forecast.
    data = _api(url, keys["viewer"], "/dashboard/data")["forecast"]["revenue_total"]
    traces = page.evaluate("Array.from(document.getElementById('fan').data, t => ({name: t.name, y: t.y}))")
    by_name = {t["name"]: t["y"] for t in traces}
    assert set(by_name) == {"95% band", "80% band", "50% band", "history", "forecast"}
    assert by_name["forecast"] == [d["point"] for d in data["days"]] and len(by_name["forecast"]) == 14
    assert by_name["history"] == [h["y"] for h in data["history"]] and len(by_name["history"]) > 30
    assert by_name["95% band"][:14] == [d["hi_95"] for d in data["days"]]
    assert page.locator("#fan .main-svg").count() >= 1  # plotly rendered an SVG
    page.screenshot(path=str(tmp_path / "approver.png"), full_page=True)
    # Approve a green creative and reject an amber one (another green when the run made no amber).
    library = _api(url, keys["viewer"], "/creatives")
    pending = [c for c in library if c["status"] == "pending"]
    green = next(c for c in pending if c["light"] == "green")
    other = next((c for c in pending if c["light"] == "amber"), None) or next(
        c for c in pending if c["light"] == "green" and c["creative_id"] != green["creative_id"])
    for creative, button, done in ((green, "Approve", "approved"), (other, "Reject", "rejected")):
        card = page.locator(f"article[data-creative-id='{creative['creative_id']}']")
        card.get_by_label("Comment").fill(f"{done} in the browser test")
        card.get_by_role("button", name=button).click()
        page.locator(f"article[data-creative-id='{creative['creative_id']}'] .status").filter(
            has_text=done).wait_for(timeout=15_000)
    page.reload()
    page.wait_for_selector("body[data-ready=true]", state="attached", timeout=60_000)
    status = {c: page.inner_text(f"article[data-creative-id='{c}'] .status")
              for c in (green["creative_id"], other["creative_id"])}
    assert status == {green["creative_id"]: "approved", other["creative_id"]: "rejected"}
    decided = {c["creative_id"]: c for c in _api(url, keys["viewer"], "/creatives")}
    assert decided[green["creative_id"]]["comment"] == "approved in the browser test"
    # A light is never colour alone: its word is on the card.
    assert page.inner_text(f"article[data-creative-id='{green['creative_id']}'] .light") == "green"
    # The rest of the green copy in one decision; the rejected one and any amber or red are left.
    rest = [c for c in decided.values() if c["status"] == "pending" and c["light"] == "green"]
    page.get_by_label(f"Comment for all {len(rest)} pending green creatives").fill("read them all")
    page.get_by_role("button", name=f"Approve all {len(rest)} pending green creatives").click()
    page.locator("#bulk-approve").wait_for(state="detached", timeout=30_000)  # none left to approve
    after = {c["creative_id"]: c for c in _api(url, keys["viewer"], "/creatives")}
    assert all(after[c["creative_id"]]["status"] == "approved" and after[c["creative_id"]]["comment"] ==
               "read them all" for c in rest)
    assert after[other["creative_id"]]["status"] == "rejected"
    assert all(c["status"] == "pending" for c in after.values() if c["light"] != "green")
    assert not [e for e in errors if "favicon" not in e], errors
    page.close()


@pytest.mark.slow
def test_a_viewer_sees_no_controls(sandbox_server: tuple[str, dict[str, str], Settings], browser: Any,
                                   tmp_path: Path) -> None:
    url, keys, _settings = sandbox_server
    page, errors = _login(browser, url, keys["viewer"], width=768)  # a tablet's width
    assert page.locator(".creative").count() > 0
    assert page.locator(".creative button").count() == 0 and page.locator(".creative textarea").count() == 0
    assert not page.locator("#push").is_visible()
    assert "role viewer" in page.inner_text("#who")
    page.screenshot(path=str(tmp_path / "viewer-tablet.png"), full_page=True)
    assert not errors, errors
    page.close()


@pytest.mark.slow
def test_an_operator_pushes_in_sandbox_and_sees_the_delivery_state_change(
        sandbox_server: tuple[str, dict[str, str], Settings], browser: Any, tmp_path: Path) -> None:
    url, keys, _settings = sandbox_server
    # Every creative still pending is approved first (through the API), so no line item holds the push.
    for creative in _api(url, keys["viewer"], "/creatives"):
        if creative["status"] == "pending" and creative["light"] != "red":
            httpx.post(f"{url}/creatives/{creative['creative_id']}/decision", timeout=30,
                       headers={"Authorization": f"Bearer {keys['approver']}"},
                       json={"decision": "approve", "comment": "fine"}).raise_for_status()
    page, errors = _login(browser, url, keys["operator"])
    assert "not pushed yet" in page.inner_text("#delivery-state")
    page.get_by_role("button", name="Push the approved plan").click()
    # Every platform delivered: the state reads "...: delivered." (while one is pending it lists both).
    page.locator("#delivery-state").filter(has_text=re.compile(r": delivered\.$")).wait_for(timeout=30_000)
    rows = page.locator("#deliveries tbody tr")
    assert rows.count() == 3 and all("delivered" in rows.nth(i).inner_text() for i in range(3))
    page.screenshot(path=str(tmp_path / "operator-pushed.png"), full_page=True)
    assert "Chain verified" in page.inner_text("#verify")
    assert not errors, errors
    page.close()
