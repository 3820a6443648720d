"""A stored payload and a stand-in platform for the push tests (test_delivery, test_api, test_rebalance)."""

from __future__ import annotations

import json
import uuid
from datetime import date
from pathlib import Path
from typing import Any

from flashcast.config import Settings
from flashcast.delivery import record_payload
from flashcast.records import Creative
from flashcast.stages.payload import Payload, platform_order
from flashcast.store import OpsStore

SECRET = "test-signing-secret"
SEGMENTS = {"Value Shopper": 40, "Browser": 25, "Brand Loyalist": 0}  # consented users; 0: no line item


def creatives(status: str = "approved") -> list[Creative]:
    out = []
    for segment in SEGMENTS:
        for channel in ("Display", "CTV", "PPC", "Email"):
            for variant in ("A", "B"):
                out.append(Creative(f"cr-{segment[:5].lower()}-{channel.lower()}-{variant.lower()}", segment, channel,
                                    variant, f"{segment} offer {variant}", "Our offer for you. Terms apply.", "green",
                                    status))  # type: ignore[arg-type]
    return out


def payload_document(settings: Settings, *, status: str = "approved", sandbox: bool = False,
                     spend: dict[str, float] | None = None) -> dict[str, Any]:
    """A valid payload (the model checks it) whose creatives all have `status`."""
    spend = spend or {"Display": 300.0, "CTV": 250.0, "PPC": 400.0, "Email": 50.0}
    library = creatives(status)
    budget = sum(spend.values())
    document = {
        "sandbox": sandbox,
        "lineage_id": str(uuid.uuid4()),
        "lineage_head": {"seq": 3, "entry_hash": "a" * 64},
        "generated_at": "2026-11-24T10:00:00Z",
        "for_date": "2026-11-25",
        "reconciliation": {"input_rows": 10, "accepted": 7, "dropped_consent": 1, "quarantined": 1, "duplicate": 1},
        "segments": [{"segment": s, "users": 50, "share": round(1 / len(SEGMENTS), 6)} for s in SEGMENTS],
        "forecast": {"series_id": "revenue_total", "engine": "mstl", "horizon_days": 1, "total_point": 10.0,
                     "days": [{"date": "2026-11-25", "point": 10.0, "lo_50": 9, "hi_50": 11, "lo_80": 8, "hi_80": 12,
                               "lo_95": 7, "hi_95": 13}]},
        "allocations": {"method": "curves", "currency": "EUR", "budget": budget, "channels": [
            {"channel": c, "spend": v, "share": v / budget, "yesterday_spend": v, "change": 0.0, "bound": None,
             "why": "test"} for c, v in spend.items()]},
        "creatives": [{"creative_id": c.creative_id, "segment": c.segment, "channel": c.channel, "variant": c.variant,
                       "headline": c.headline, "body": c.body, "light": c.light, "status": c.status, "reasons": []}
                      for c in library],
        "orders": [platform_order(p, spend=spend, audiences=SEGMENTS, creatives=library, for_date=date(2026, 11, 25),
                                  settings=settings) for p in settings.delivery.platforms],
    }
    return json.loads(Payload.model_validate(document).model_dump_json())


def stored_payload(ops: OpsStore, settings: Settings, **options: Any) -> dict[str, Any]:
    document = payload_document(settings, **options)
    record_payload(ops, document)
    return document


def live_settings(home: Path, endpoint: str, **delivery: Any) -> Settings:
    """Settings whose three platforms POST to `<endpoint>/<platform>/orders`, with fast retries."""
    platforms = [{"name": n, "kind": k, "channels": [c], "endpoint": f"{endpoint}/{n}/orders"}
                 for n, k, c in (("display", "display", "Display"), ("ctv", "ctv", "CTV"), ("search", "search", "PPC"))]
    return Settings.model_validate({
        "store": {"home": str(home)},
        "delivery": {"platforms": platforms, "read_timeout_s": 0.5, "connect_timeout_s": 0.5, "backoff_s": 0.0,
                     "max_backoff_s": 0.0, **delivery},
    })


def write_live_config(path: Path, home: Path, endpoint: str, ops_url: str) -> Path:
    """`live_settings` as a flashcast.toml, for tests that run the CLI in its own process."""
    lines = [f'[store]\nhome = "{home}"\nops_url = "{ops_url}"\n',
             "[delivery]\nread_timeout_s = 2.0\nconnect_timeout_s = 1.0\nbackoff_s = 0.05\nmax_backoff_s = 0.2\n"]
    for name, kind, channel in (("display", "display", "Display"), ("ctv", "ctv", "CTV"), ("search", "search", "PPC")):
        lines.append(f'[[delivery.platforms]]\nname = "{name}"\nkind = "{kind}"\nchannels = ["{channel}"]\n'
                     f'endpoint = "{endpoint}/{name}/orders"\n')
    path.write_text("\n".join(lines))
    return path
