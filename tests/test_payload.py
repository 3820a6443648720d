"""Stage 7: the payload model, its committed JSON Schema, and refusals."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from flashcast.errors import PayloadInvalid
from flashcast.stages.payload import Payload, committed_schema, model_schema, validate_payload, write_payload

ROOT = Path(__file__).resolve().parents[1]


def good_document() -> dict:
    return {
        "schema_version": "2.1.0",
        "lineage_id": "01a20da6-d8e7-71c8-8c77-5f781cdab97b",
        "lineage_head": {"seq": 3, "entry_hash": "a" * 64},
        "generated_at": "2026-11-24T10:00:00Z",
        "for_date": "2026-11-25",
        "reconciliation": {"input_rows": 10, "accepted": 7, "dropped_consent": 1, "quarantined": 1, "duplicate": 1},
        "segments": [{"segment": "Value Shopper", "users": 5, "share": 1.0}],
        "forecast": {"series_id": "revenue_total", "engine": "prophet", "horizon_days": 1, "total_point": 10.0,
                     "days": [{"date": "2026-11-25", "point": 10.0, "lo_50": 9, "hi_50": 11, "lo_80": 8, "hi_80": 12,
                               "lo_95": 7, "hi_95": 13}]},
        "allocations": {"method": "inverse_cpa", "currency": "USD", "budget": 100.0, "channels": [
            {"channel": "PPC", "spend": 60.0, "share": 0.6, "yesterday_spend": 50.0, "change": 10.0, "bound": None,
             "why": "CPA 10"},
            {"channel": "Email", "spend": 40.0, "share": 0.4, "yesterday_spend": 50.0, "change": -10.0,
             "bound": "min_share", "why": "CPA 20"}]},
        "creatives": [
            {"creative_id": "cr-1", "segment": "Value Shopper", "channel": "PPC", "variant": "A", "headline": "Save",
             "body": "Offers. Terms apply.", "light": "green", "status": "approved", "reasons": []},
            {"creative_id": "cr-2", "segment": "Value Shopper", "channel": "Email", "variant": "A",
             "headline": "Best", "body": "Offers.", "light": "amber", "status": "pending",
             "reasons": ["unprovable claim 'best'"]}],
    }


def test_committed_schema_matches_the_model() -> None:
    """Fails when the model changes without regenerating src/flashcast/schemas/payload.schema.json."""
    assert committed_schema() == json.loads(json.dumps(model_schema()))
    published = ROOT / "src" / "flashcast" / "schemas" / "payload.schema.json"
    assert json.loads(published.read_text()) == committed_schema()


def test_a_good_document_validates() -> None:
    payload = validate_payload(good_document())
    assert isinstance(payload, Payload) and payload.allocations.budget == 100.0


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("lineage_id"), "'lineage_id' is a required property"),
        (lambda d: d.update(lineage_id="not-a-uuid"), "lineage_id"),
        (lambda d: d["creatives"][0].update(light="red"), "creatives/0/light"),
        (lambda d: d["creatives"][0].update(status="rejected"), "creatives/0/status"),
        (lambda d: d["allocations"]["channels"][0].update(spend=61.0), "not the budget 100.00"),
        (lambda d: d["allocations"]["channels"][0].update(share=0.9), "shares do not add up"),
        (lambda d: d["reconciliation"].update(accepted=6), "do not add up to input_rows"),
        (lambda d: d.update(creatives=[d["creatives"][0]]), "no usable creative for funded channel"),
        (lambda d: d.update(extra="field"), "Additional properties"),
    ],
)
def test_bad_documents_are_refused(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    document = copy.deepcopy(good_document())
    mutate(document)
    with pytest.raises(PayloadInvalid, match=message):
        validate_payload(document)


def test_an_invalid_payload_is_never_written(tmp_path: Path) -> None:
    document = good_document()
    document["allocations"]["channels"][0]["spend"] = 61.0
    payload = Payload.model_construct(**Payload.model_validate(good_document()).__dict__)
    broken = payload.model_copy(update={"allocations": payload.allocations.model_copy(update={
        "channels": [c.model_copy(update={"spend": 61.0}) if c.channel == "PPC" else c
                     for c in payload.allocations.channels]})})
    with pytest.raises(PayloadInvalid):
        write_payload(broken, tmp_path / "payload.json")
    assert not (tmp_path / "payload.json").exists()
    write_payload(payload, tmp_path / "payload.json")
    assert validate_payload(json.loads((tmp_path / "payload.json").read_text())).lineage_id == payload.lineage_id
