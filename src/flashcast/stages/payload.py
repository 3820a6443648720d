"""Stage 7: the DSP-ready payload, validated against a published JSON Schema before it is written.

The pydantic model is the source of the schema; `schemas/payload.schema.json` is the committed,
published copy, and a test fails when the two drift apart. Validation runs twice on every
payload: the committed JSON Schema (what a DSP integrator sees: required fields, no red
creatives) and the model's own invariants, which JSON Schema cannot express (allocations add up
to the budget to the cent, shares add up to one, every allocated channel is known).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from flashcast.config import Settings
from flashcast.errors import PayloadInvalid, describe_validation_error
from flashcast.lineage import LogHead
from flashcast.records import (
    AllocationPlan,
    CreativeLibrary,
    ForecastPlan,
    GuardReport,
    KpiSummary,
    RunContext,
    Segmentation,
    Skipped,
)

SCHEMA_VERSION: Literal["1.1.0"] = "1.1.0"
SCHEMA_RESOURCE = "payload.schema.json"
_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LineageHead(_Model):
    seq: int = Field(ge=0)
    entry_hash: str = Field(pattern=r"^[0-9a-f]{64}$")


class Reconciliation(_Model):
    input_rows: int = Field(ge=0)
    accepted: int = Field(ge=0)
    dropped_consent: int = Field(ge=0)
    quarantined: int = Field(ge=0)
    duplicate: int = Field(ge=0)

    @model_validator(mode="after")
    def _adds_up(self) -> Reconciliation:
        if self.accepted + self.dropped_consent + self.quarantined + self.duplicate != self.input_rows:
            raise ValueError("reconciliation: outcomes do not add up to input_rows")
        return self


class ForecastDay(_Model):
    date: date
    point: float
    lo_50: float
    hi_50: float
    lo_80: float
    hi_80: float
    lo_95: float
    hi_95: float


class ForecastSummary(_Model):
    series_id: str
    engine: str
    horizon_days: int = Field(ge=1)
    total_point: float
    days: list[ForecastDay]


class ChannelAllocation(_Model):
    channel: str
    spend: float = Field(ge=0)
    share: float = Field(ge=0, le=1)
    yesterday_spend: float = Field(ge=0)
    change: float
    bound: str | None
    why: str
    marginal_cpa: float | None = None  # curve method: cost of one more conversion at this spend
    expected_conversions: float | None = None  # curve method: per day at this spend


class Allocations(_Model):
    method: str
    currency: str = "USD"
    budget: float = Field(gt=0)
    channels: list[ChannelAllocation] = Field(min_length=1)
    expected_conversions: float | None = None
    gain_vs_inverse_cpa: float | None = None

    @model_validator(mode="after")
    def _adds_up(self) -> Allocations:
        cents = sum(round(c.spend * 100) for c in self.channels)
        if cents != round(self.budget * 100):
            raise ValueError(f"allocations: spends add to {cents / 100:.2f}, not the budget {self.budget:.2f}")
        if abs(sum(c.share for c in self.channels) - 1.0) > 1e-3:
            raise ValueError("allocations: shares do not add up to 1")
        return self


class CreativeOut(_Model):
    creative_id: str
    segment: str
    channel: str
    variant: str
    headline: str = Field(min_length=1)
    body: str = Field(min_length=1)
    light: Literal["green", "amber"]  # red copy never enters a payload
    status: Literal["pending", "approved"]
    reasons: list[str] = Field(default_factory=list)


class SegmentOut(_Model):
    segment: str
    users: int = Field(ge=0)
    share: float = Field(ge=0, le=1)


class Payload(_Model):
    """The document a DSP receives: what to say (creatives), where to spend (allocations), and why."""

    schema_version: Literal["1.1.0"] = SCHEMA_VERSION
    lineage_id: str = Field(pattern=_UUID)
    lineage_head: LineageHead
    generated_at: datetime
    for_date: date
    reconciliation: Reconciliation
    segments: list[SegmentOut]
    forecast: ForecastSummary
    allocations: Allocations
    creatives: list[CreativeOut] = Field(min_length=1)

    @model_validator(mode="after")
    def _creatives_cover_allocated_channels(self) -> Payload:
        funded = {c.channel for c in self.allocations.channels if c.spend > 0}
        covered = {c.channel for c in self.creatives}
        missing = funded - covered
        if missing:
            raise ValueError(f"creatives: no usable creative for funded channel(s) {sorted(missing)}")
        return self

    def lineage(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "creatives": len(self.creatives),
                "budget": self.allocations.budget, "anchored_head": self.lineage_head.model_dump()}


def run(*, guard: GuardReport, kpis: KpiSummary, segments: Segmentation, creatives: CreativeLibrary,
        forecast: ForecastPlan, allocate: AllocationPlan, context: RunContext, head: LogHead,
        settings: Settings) -> Payload | Skipped:
    """The payload stage: assemble the document for the day after the last complete day's morning,
    anchored to the lineage head it was built on, and validate it (red creatives are left out).
    Without an allocation there is nothing to push: skipped, saying why."""
    f, allocation = forecast.forecast, allocate.allocation
    if allocation is None:
        return Skipped(f"no payload: the budget could not be allocated ({allocate.failure})")
    days = [{"date": d, "point": float(p), **{f"{k}_{level}": float(f.bands[level][0 if k == "lo" else 1][i])
                                               for level in (50, 80, 95) for k in ("lo", "hi")}}
            for i, (d, p) in enumerate(zip(f.dates, f.point, strict=True))]
    document = {
        "lineage_id": context.lineage_id,
        "lineage_head": head.to_json(),
        "generated_at": datetime.now(UTC),
        "for_date": kpis.last_complete_day + timedelta(days=2),
        "reconciliation": guard.totals,
        "segments": [{"segment": p.segment, "users": p.users, "share": round(p.share, 6)} for p in segments.profiles],
        "forecast": {"series_id": f.series_id, "engine": f.engine, "horizon_days": len(f.dates),
                     "total_point": round(sum(float(x) for x in f.point), 2), "days": days},
        "allocations": {
            "method": allocation.method, "currency": settings.currency, "budget": allocation.budget,
            "expected_conversions": allocation.expected_conversions,
            "gain_vs_inverse_cpa": allocation.gain_vs_inverse_cpa,
            "channels": [{"channel": r.channel, "spend": r.spend, "share": r.share,
                          "yesterday_spend": r.yesterday_spend, "change": r.change, "bound": r.bound, "why": r.why,
                          "marginal_cpa": r.marginal_cpa, "expected_conversions": r.expected_conversions}
                         for r in allocation.rows],
        },
        "creatives": [
            {"creative_id": c.creative_id, "segment": c.segment, "channel": c.channel, "variant": c.variant,
             "headline": c.headline, "body": c.body, "light": c.light, "status": c.status,
             "reasons": [r.message for r in c.reasons]}
            for c in creatives.creatives if c.light != "red" and c.status != "rejected"
        ],
    }
    try:
        return Payload.model_validate(document)
    except ValidationError as exc:
        raise PayloadInvalid(f"payload fails its invariants: {describe_validation_error(exc)}") from exc


def model_schema() -> dict[str, Any]:
    """The JSON Schema generated from the model (what the committed file must equal)."""
    schema = Payload.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://flashcast.dev/schemas/payload-{SCHEMA_VERSION}.json"
    return schema


def committed_schema() -> dict[str, Any]:
    text = resources.files("flashcast.schemas").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    return dict(json.loads(text))


def validate_payload(document: dict[str, Any]) -> Payload:
    """Check a payload document against the committed schema and the model's invariants."""
    validator = jsonschema.Draft202012Validator(committed_schema())
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        problems = "; ".join(f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
                             for e in errors[:10])
        raise PayloadInvalid(f"payload fails its JSON Schema: {problems}")
    try:
        return Payload.model_validate(document)
    except ValidationError as exc:
        raise PayloadInvalid(f"payload fails its invariants: {describe_validation_error(exc)}") from exc


def write_payload(payload: Payload, path: Path) -> Path:
    """Validate, then write; an invalid payload is never written."""
    document = json.loads(payload.model_dump_json())
    validate_payload(document)
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path
