"""Daily rebalancing: `flashcast rebalance` end to end (hold, then push in sandbox mode), the lead's
summary email over real SMTP (aiosmtpd, plain and STARTTLS), never two at once, and the schedule."""

from __future__ import annotations

import email
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from conftest import TEST_KEY, FinishedRun, skip_or_fail
from delivery_helpers import payload_document
from flashcast.approvals import decide, latest_creatives
from flashcast.config import EmailConfig, Settings, SourceConfig
from flashcast.delivery import deliveries
from flashcast.errors import EmailFailed, StoreBusy
from flashcast.keys import PiiKey
from flashcast.lineage import LineageLog
from flashcast.privacy import PiiNeedles, scan_run
from flashcast.rebalance import rebalance
from flashcast.store import OpsStore, file_lock
from flashcast.summary import send_email, summary_email


@dataclass
class Inbox:
    messages: list[EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=default_policy))  # type: ignore[arg-type]
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


def _text_and_html(message: EmailMessage) -> tuple[str, str]:
    plain = message.get_body(("plain",))
    rich = message.get_body(("html",))
    assert plain is not None and rich is not None
    return plain.get_content(), rich.get_content()


def test_the_summary_goes_over_starttls_to_a_private_ca_server(tmp_path: Path) -> None:
    import ssl

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                        str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    except FileNotFoundError:
        skip_or_fail("openssl is not installed (to make the test server's certificate)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    inbox, port = Inbox(), _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True)
    controller.start()
    try:
        config = EmailConfig(to=("lead@example.com",), host="127.0.0.1", port=port, security="starttls",
                             ca_file=cert, dashboard_url="http://127.0.0.1:8000")
        document = payload_document(Settings())
        message = summary_email(document, outcome="held", detail="two creatives wait", orders=[], approved=set(),
                                config=config)
        send_email(message, config)
        untrusted = config.model_copy(update={"ca_file": None})  # the system's CAs do not know this server
        with pytest.raises(EmailFailed, match="SSL"):
            send_email(message, untrusted)
    finally:
        controller.stop()
    assert len(inbox.messages) == 1
    received = inbox.messages[0]
    assert received["Subject"] == "Flashcast plan for 2026-11-25: waiting for your approval"
    text, html = _text_and_html(received)
    assert "PPC: 400.00 EUR -> 400.00 EUR" in text and "Awaiting approval: 24 creative(s)" in text
    assert f"lineage id {document['lineage_id']}): http://127.0.0.1:8000/#run-section" in text
    assert "Review them: http://127.0.0.1:8000/#creatives-section" in text
    assert "<table>" in html and "<th scope='row'>PPC</th>" in html


def test_an_unreachable_mail_server_is_one_line(tmp_path: Path) -> None:
    config = EmailConfig(to=("lead@example.com",), host="127.0.0.1", port=_free_port(), security="none",
                         timeout_s=2.0)
    message = summary_email(payload_document(Settings()), outcome="pushed", detail="", orders=[], approved=set(),
                            config=config)
    with pytest.raises(EmailFailed) as caught:
        send_email(message, config)
    assert "\n" not in str(caught.value) and f"127.0.0.1:{config.port}" in str(caught.value)


def test_a_held_summary_says_whether_copy_or_only_the_push_waits_and_names_a_guardrail_once() -> None:
    config = EmailConfig(to=("lead@example.com",))
    document = payload_document(Settings())
    every_id = {c["creative_id"] for c in document["creatives"]}
    held = document["allocations"]["channels"][0]
    held.update(bound="max_daily_change", why="hill curve (R^2 0.40); held by max_daily_change (8.00..20.00)")
    waiting = summary_email(document, outcome="held", detail="copy waits", orders=[], approved=set(), config=config)
    approved = summary_email(document, outcome="held", detail="delivery.auto_push is off", orders=[],
                             approved=every_id, config=config)
    assert waiting["Subject"].endswith(": waiting for your approval")
    assert approved["Subject"].endswith(": approved, ready for a person to push")
    text, html = _text_and_html(approved)
    assert "Every creative in the plan is approved." in text
    line = next(t for t in text.splitlines() if t.startswith(f"  {held['channel']}:"))
    assert line.count("held by") == 1 and html.count("held by") == 1, line


def test_the_summary_gives_the_forecast_total_its_own_interval_and_an_older_payload_the_summed_days() -> None:
    config = EmailConfig(to=("lead@example.com",))
    document = payload_document(Settings())
    document["forecast"].update(total_lo_80=8.5, total_hi_80=11.5)
    text, _ = _text_and_html(summary_email(document, outcome="pushed", detail="", orders=[], approved=set(),
                                           config=config))
    assert "10.00 EUR expected (80% interval for the total 8.50 EUR to 11.50 EUR)" in text
    del document["forecast"]["total_lo_80"], document["forecast"]["total_hi_80"]  # a payload made before 2.1.0
    text, _ = _text_and_html(summary_email(document, outcome="pushed", detail="", orders=[], approved=set(),
                                           config=config))
    assert "10.00 EUR expected (80% band of the daily values summed 8.00 EUR to 12.00 EUR)" in text


@pytest.mark.slow
def test_rebalance_holds_for_approval_then_pushes_in_sandbox_and_mails_the_lead(
        finished_run: FinishedRun, tmp_path: Path, smtp_server: tuple[Inbox, int],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from conftest import write_config
    from flashcast.cli import app

    inbox, port = smtp_server
    monkeypatch.setenv("FLASHCAST_PII_KEY", TEST_KEY)
    run = finished_run.copy_to(tmp_path)
    export = finished_run.sim.export_dirs["ndjson"]
    # a spend file two days short: the run's report asks a person to look, and so does the email
    header, *rows = finished_run.sim.spend_file.read_text().splitlines()
    last_days = sorted({row[:10] for row in rows})[-2:]
    spend = tmp_path / "spend.csv"
    spend.write_text("\n".join([header, *(row for row in rows if row[:10] not in last_days)]) + "\n")
    config = write_config(tmp_path, tmp_path / "home", extra=(
        f'mode = "sandbox"\n[source]\nexport = "{export}"\nspend = "{spend}"\nout = "{tmp_path / "out"}"\n'
        f'[email]\nto = ["lead@example.com"]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'))
    # 1. auto_push off: the plan is held for a person; the lead is told what waits.
    held = CliRunner().invoke(app, ["rebalance", "-c", str(config)])
    assert held.exit_code == 3, held.output
    assert "[SANDBOX] rebalance" in held.output and "held" in held.output and "summary email: sent" in held.output
    assert "attention The spend data end on" in " ".join(held.output.split())  # in the cron log too
    assert len(inbox.messages) == 1
    first = inbox.messages[0]
    assert first["Subject"].startswith("[SANDBOX] Flashcast plan for") and first["X-Flashcast-Sandbox"] == "true"
    kept = email.message_from_bytes((tmp_path / "out" / "summary.eml").read_bytes())  # what was mailed, beside the run
    assert (kept["Subject"], kept["Message-ID"]) == (first["Subject"], first["Message-ID"])
    text, html = _text_and_html(first)
    assert "Awaiting approval" in text and "SANDBOX: nothing was sent" in html
    lines = text.replace("\r\n", "\n")  # as it came over SMTP
    attention = lines.split("Needs attention:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert any(item.startswith("  - The spend data end on ") for item in attention), attention
    assert not any("wait for a person's approval" in item for item in attention)  # counted under Awaiting approval
    assert "<h2>Needs attention</h2><ul><li>" in html and "The spend data end on" in html
    # 2. A person approves every creative; with auto_push on, the next rebalance pushes (to the stand-in).
    settings = run.settings.model_copy(update={
        "mode": "sandbox", "source": SourceConfig(export=export, spend=spend, out=tmp_path / "out"),
        "email": EmailConfig(to=("lead@example.com",), host="127.0.0.1", port=port, security="none"),
        "delivery": run.settings.delivery.model_copy(update={"auto_push": True})})
    ops = OpsStore(settings.store.ops_database_url)
    for creative in latest_creatives(settings.store.warehouse_path, ops, timeout_s=60):
        if creative["light"] != "red":
            decide(ops, creative, "approved", comment="fine", override_reason=None, by="approver1")
    result = rebalance(settings, key=PiiKey(TEST_KEY.encode()), by="test")
    assert result.outcome == "pushed" and result.exit_code == 0, result.detail
    assert {o.state for o in result.orders} == {"delivered"} and len(result.orders) == 3
    assert all(o.endpoint.startswith("http://sandbox.invalid/") for o in deliveries(ops))
    kinds = [e["kind"] for e in LineageLog(ops).entries(result.lineage_id)]
    assert kinds[-1] == "rebalance_finished" and "payload_delivered" in kinds
    ops.dispose()
    assert len(inbox.messages) == 2
    text, _ = _text_and_html(inbox.messages[1])
    assert "pushed to the platforms" in inbox.messages[1]["Subject"] and "delivered after 1 attempt(s)" in text
    # Nothing personal in the emails (their bodies: the headers name the lead on purpose), the sandbox
    # platform's records or the outputs.
    mail = tmp_path / "mail"
    mail.mkdir()
    for i, message in enumerate(inbox.messages):
        text, html = _text_and_html(message)
        (mail / f"{i}.txt").write_text(f"{message['Subject']}\n{text}")
        (mail / f"{i}.html").write_text(html)
    needles = PiiNeedles.from_truth(finished_run.truth)
    report = scan_run(warehouse=None, ops_url=f"sqlite:///{tmp_path / 'home' / 'sandbox_dsp.sqlite'}",
                      folders=[mail, tmp_path / "out"], needles=needles)
    assert report.files_scanned >= 3 and report.clean, report.findings


def test_two_rebalances_never_run_at_once(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"source": SourceConfig(export=tmp_path)})
    with file_lock(settings.store.home / "rebalance.lock", timeout_s=1.0), \
            pytest.raises(StoreBusy, match="another rebalance is running"):
        rebalance(settings, key=PiiKey(TEST_KEY.encode()), by="test")


def test_the_schedule_starts_rebalances_and_skips_a_firing_while_one_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import datetime, timedelta

    from fastapi.testclient import TestClient

    import flashcast.api
    from flashcast.api import create_app
    from flashcast.config import ScheduleConfig, StoreConfig

    monkeypatch.setenv("FLASHCAST_PII_KEY", TEST_KEY)
    release, calls = threading.Event(), []

    def slow_rebalance(_settings: Settings, **options: Any) -> Any:
        calls.append(options["lineage_id"])
        release.wait(30)
        return SimpleNamespace(outcome="held")

    monkeypatch.setattr(flashcast.api, "rebalance", slow_rebalance)
    settings = Settings(property_timezone="Europe/Paris", store=StoreConfig(home=tmp_path / "home"),
                        source=SourceConfig(export=tmp_path), schedule=ScheduleConfig(rebalance="30 6 * * *"))
    app = create_app(settings)
    with TestClient(app):
        job = app.state.scheduler.get_job("rebalance")
        next_run = job.next_run_time
        assert (next_run.hour, next_run.minute, str(next_run.tzinfo)) == (6, 30, "Europe/Paris")
        assert next_run - datetime.now(next_run.tzinfo) <= timedelta(days=1)
        job.func()  # the firing
        job.func()  # a second firing while the first still runs: skipped
        release.set()
        for thread in threading.enumerate():
            if thread.name.startswith("rebalance-"):
                thread.join(10)
    assert len(calls) == 1
    with pytest.raises(ValueError, match="cron"):
        ScheduleConfig(rebalance="every morning")
