"""The allocator summary for the marketing lead: what moved, why, the forecast, what waits for
approval, how delivery went, with links to the run. Plain text and HTML, sent over SMTP.

Built only from the payload (aggregates: channels, segments, counts), the run's attention list
(file names, days, channels, counts) and the delivery records, so it cannot carry personal data;
every value is HTML-escaped.
"""

from __future__ import annotations

import html
import os
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from flashcast.config import EmailConfig
from flashcast.delivery import Delivery
from flashcast.errors import EmailFailed


def summary_email(document: dict[str, Any], *, outcome: str, detail: str, orders: Sequence[Delivery],
                  approved: set[str], config: EmailConfig, attention: Sequence[str] = ()) -> EmailMessage:
    """The message for one rebalance. `outcome`: pushed, held, undelivered or no_plan; `approved`:
    the creative ids approved so far (the rest of the payload's wait for a person); `attention`: what
    the run's report asks a person to look at (about the data and the stages: file names, days,
    channels, counts; never a value)."""
    sandbox = bool(document.get("sandbox"))
    allocations, forecast = document["allocations"], document["forecast"]
    currency = allocations["currency"]
    waiting = [c for c in document["creatives"] if c["creative_id"] not in approved]
    # The dashboard (flashcast serve at `dashboard_url`) shows the latest run; the API's JSON for this
    # very run needs a key, so it is named for the record, not linked for the reader.
    run_link = f"{config.dashboard_url.rstrip('/')}/#run-section"
    payload_link = f"{config.dashboard_url.rstrip('/')}/#delivery-section"
    approve_link = f"{config.dashboard_url.rstrip('/')}/#creatives-section"
    # Held with every creative approved: only the push waits (delivery.auto_push off), not copy.
    held = "waiting for your approval" if waiting else "approved, ready for a person to push"
    headline = {"pushed": "pushed to the platforms", "held": held,
                "undelivered": "not delivered yet", "no_plan": "no plan today"}.get(outcome, outcome)
    subject = f"{'[SANDBOX] ' if sandbox else ''}Flashcast plan for {document['for_date']}: {headline}"

    def money(x: float) -> str:
        return f"{x:,.2f} {currency}"

    moves = []
    for c in sorted(allocations["channels"], key=lambda c: -abs(c["change"])):  # `why` names a binding guardrail
        moves.append((c["channel"], money(c["yesterday_spend"]), money(c["spend"]), f"{c['change']:+,.2f}", c["why"]))
    days = forecast["days"]
    if forecast.get("total_lo_80") is not None:  # the total's own calibrated interval (payloads since 2.1.0)
        band = f"80% interval for the total {money(forecast['total_lo_80'])} to {money(forecast['total_hi_80'])}"
    else:
        band = (f"80% band of the daily values summed {money(sum(d['lo_80'] for d in days))} to "
                f"{money(sum(d['hi_80'] for d in days))}")
    forecast_line = (f"{forecast['series_id']} over the next {forecast['horizon_days']} day(s): "
                     f"{money(forecast['total_point'])} expected ({band}), engine {forecast['engine']}.")
    rec = document["reconciliation"]
    data_line = (f"{rec['input_rows']:,} export rows: {rec['accepted']:,} accepted, {rec['dropped_consent']:,} "
                 f"dropped for consent, {rec['quarantined']:,} quarantined, {rec['duplicate']:,} duplicates.")
    delivery_lines = [f"{o.platform} v{o.version}: {o.state} after {len(o.attempts)} attempt(s)" for o in orders]

    text = [subject, "", f"Status: {headline}. {detail}", "",
            *(["Needs attention:", *(f"  - {item}" for item in attention), ""] if attention else []),
            f"Budget {money(allocations['budget'])} ({allocations['method']}). What moved, yesterday -> tomorrow:"]
    text += [f"  {ch}: {y} -> {t} ({d}); {why}" for ch, y, t, d, why in moves]
    text += ["", "Forecast: " + forecast_line, "", "Data: " + data_line, ""]
    text += ([f"Awaiting approval: {len(waiting)} creative(s). Review them: {approve_link}"]
             if waiting else ["Every creative in the plan is approved."])
    text += ["", "Delivery:", *(f"  {line}" for line in delivery_lines or ["nothing pushed"]), "",
             f"The run (lineage id {document['lineage_id']}): {run_link}", f"Delivery: {payload_link}", "",
             "This summary holds aggregates only, no personal data."]

    e = html.escape
    rows = "".join(f"<tr><th scope='row'>{e(ch)}</th>" + "".join(f"<td>{e(v)}</td>" for v in rest) + "</tr>"
                   for ch, *rest in moves)
    banner = "<p><strong>SANDBOX: nothing was sent to a real platform.</strong></p>" if sandbox else ""
    approvals = (f"<p>Awaiting approval: <strong>{len(waiting)}</strong> creative(s). "
                 f"<a href='{e(approve_link)}'>Review them</a>.</p>" if waiting
                 else "<p>Every creative in the plan is approved.</p>")
    needs = (f"<h2>Needs attention</h2><ul>{''.join(f'<li>{e(item)}</li>' for item in attention)}</ul>"
             if attention else "")
    body_html = f"""<!doctype html><html lang="en"><body>
<h1>{e(subject)}</h1>{banner}
<p>Status: <strong>{e(headline)}</strong>. {e(detail)}</p>{needs}
<h2>What moved</h2>
<p>Budget {e(money(allocations['budget']))} ({e(allocations['method'])}).</p>
<table><thead><tr><th scope="col">Channel</th><th scope="col">Yesterday</th><th scope="col">Tomorrow</th>
<th scope="col">Change</th><th scope="col">Why</th></tr></thead><tbody>{rows}</tbody></table>
<h2>Forecast</h2><p>{e(forecast_line)}</p>
<h2>Data</h2><p>{e(data_line)}</p>
<h2>Approval</h2>{approvals}
<h2>Delivery</h2><ul>{"".join(f"<li>{e(line)}</li>" for line in delivery_lines) or "<li>nothing pushed</li>"}</ul>
<p><a href="{e(run_link)}">The run</a> (lineage id {e(document['lineage_id'])}) ·
<a href="{e(payload_link)}">Delivery</a></p>
<p><small>This summary holds aggregates only, no personal data.</small></p>
</body></html>"""

    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = config.sender
    message["To"] = ", ".join(config.to)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="flashcast")
    message["X-Flashcast-Lineage-Id"] = document["lineage_id"]
    if sandbox:
        message["X-Flashcast-Sandbox"] = "true"
    message.set_content("\n".join(text))
    message.add_alternative(body_html, subtype="html")
    return message


def send_email(message: EmailMessage, config: EmailConfig) -> None:
    """Send over SMTP with the configured TLS: STARTTLS (default), implicit TLS, or none."""
    context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
    try:
        if config.security == "ssl":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(config.host, config.port, timeout=config.timeout_s, context=context)
        else:
            smtp = smtplib.SMTP(config.host, config.port, timeout=config.timeout_s)
        with smtp:
            if config.security == "starttls":
                smtp.starttls(context=context)
            if config.username:
                smtp.login(config.username, os.environ.get(config.password_env, ""))
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        raise EmailFailed(f"summary email to {config.host}:{config.port} failed: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
