"""Stage 7: the DSP-ready payload, validated against a published JSON Schema before it is written.

The pydantic model is the source of the schema; `schemas/payload.schema.json` is the committed,
published copy, and a test fails when the two drift apart. Validation runs twice on every
payload: the committed JSON Schema (what a DSP integrator sees: required fields, no red
creatives) and the model's own invariants, which JSON Schema cannot express (allocations add up
to the budget to the cent, shares add up to one, every allocated channel is known, each platform
order's line items add up to its channel's spend).

Version 2.0.0 added `sandbox` and `orders`: the plan in each ad platform's own terms (a campaign per
channel with its daily budget, flight and pacing; display and CTV line items, or search ad groups,
per segment, each with its audience reference and creative assignments). What is pushed is one
platform's order with only approved creatives (flashcast.delivery). Version 2.1.0 added the
forecast's `total_lo_80` and `total_hi_80`: the calibrated 80% interval of the horizon's total (the
daily bands' bounds do not add up to it).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import duckdb
import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from flashcast.config import PlatformConfig, Settings
from flashcast.errors import PayloadInvalid, describe_validation_error
from flashcast.lineage import LogHead
from flashcast.records import (
    AllocationPlan,
    Creative,
    CreativeLibrary,
    ForecastPlan,
    GuardReport,
    KpiSummary,
    RunContext,
    Segmentation,
    Skipped,
    Table,
)

SCHEMA_VERSION: Literal["2.1.0"] = "2.1.0"
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
    # the horizon's total: its own calibrated 80% interval (None in a payload made before 2.1.0)
    total_lo_80: float | None = None
    total_hi_80: float | None = None
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


class Audience(_Model):
    """A segment as an audience the platform can target: only users whose ads consent allows it."""

    segment_id: str
    segment: str
    consented_users: int = Field(ge=0)


class LineItem(_Model):
    """A display or CTV line item (a search ad group has no budget of its own: `daily_budget` None)."""

    line_item_id: str
    name: str
    segment: str
    audience: Audience | None  # None: untargeted, no segment has consented users
    daily_budget: float | None = Field(default=None, ge=0)
    creative_ids: list[str]


class Flight(_Model):
    start: date
    end: date


class Campaign(_Model):
    campaign_id: str  # stable across days: each rebalance updates the same campaign's budget
    name: str
    channel: str
    daily_budget: float = Field(ge=0)
    flight: Flight
    pacing: Literal["even", "asap"]
    line_items: list[LineItem] = Field(default_factory=list)  # display, ctv
    ad_groups: list[LineItem] = Field(default_factory=list)  # search: they share the campaign budget

    @model_validator(mode="after")
    def _units_add_up(self) -> Campaign:
        if self.line_items and self.ad_groups:
            raise ValueError(f"campaign {self.campaign_id}: line items or ad groups, not both")
        if self.line_items:
            cents = sum(round((li.daily_budget or 0) * 100) for li in self.line_items)
            if cents != round(self.daily_budget * 100):
                raise ValueError(f"campaign {self.campaign_id}: line items add to {cents / 100:.2f}, "
                                 f"not its budget {self.daily_budget:.2f}")
        return self


class PlatformOrder(_Model):
    """One platform's part of the plan, in its own terms."""

    platform: str
    kind: Literal["display", "ctv", "search"]
    campaigns: list[Campaign]

    @model_validator(mode="after")
    def _units_match_kind(self) -> PlatformOrder:
        for c in self.campaigns:
            if (self.kind == "search" and c.line_items) or (self.kind != "search" and c.ad_groups):
                raise ValueError(f"{self.platform}: a {self.kind} platform buys "
                                 f"{'ad groups' if self.kind == 'search' else 'line items'}")
        return self


class Payload(_Model):
    """The document a DSP receives: what to say (creatives), where to spend (allocations), and why."""

    schema_version: Literal["2.1.0"] = SCHEMA_VERSION
    sandbox: bool = False  # made in sandbox mode: never pushed to a real endpoint
    lineage_id: str = Field(pattern=_UUID)
    lineage_head: LineageHead
    generated_at: datetime
    for_date: date
    reconciliation: Reconciliation
    segments: list[SegmentOut]
    forecast: ForecastSummary
    allocations: Allocations
    creatives: list[CreativeOut] = Field(min_length=1)
    orders: list[PlatformOrder] = Field(default_factory=list)

    @model_validator(mode="after")
    def _creatives_cover_allocated_channels(self) -> Payload:
        funded = {c.channel for c in self.allocations.channels if c.spend > 0}
        covered = {c.channel for c in self.creatives}
        missing = funded - covered
        if missing:
            raise ValueError(f"creatives: no usable creative for funded channel(s) {sorted(missing)}")
        return self

    @model_validator(mode="after")
    def _orders_spend_the_allocation(self) -> Payload:
        spend = {c.channel: round(c.spend * 100) for c in self.allocations.channels}
        known = {c.creative_id for c in self.creatives}
        for order in self.orders:
            for campaign in order.campaigns:
                if spend.get(campaign.channel) != round(campaign.daily_budget * 100):
                    raise ValueError(f"orders: {order.platform} campaign {campaign.campaign_id} budget is not "
                                     f"the {campaign.channel} allocation")
                unknown = {i for u in campaign.line_items + campaign.ad_groups for i in u.creative_ids} - known
                if unknown:
                    raise ValueError(f"orders: {campaign.campaign_id} assigns unknown creatives {sorted(unknown)}")
        return self

    def lineage(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "creatives": len(self.creatives),
                "budget": self.allocations.budget, "anchored_head": self.lineage_head.model_dump()}


def run(con: duckdb.DuckDBPyConnection, *, guard: GuardReport, kpis: KpiSummary, segments: Segmentation,
        creatives: CreativeLibrary, forecast: ForecastPlan, allocate: AllocationPlan, context: RunContext,
        head: LogHead, settings: Settings) -> Payload | Skipped:
    """The payload stage: assemble the document for the day after the last complete day's morning,
    anchored to the lineage head it was built on, and validate it (red creatives are left out).
    Without an allocation there is nothing to push: skipped, saying why."""
    f, allocation = forecast.forecast, allocate.allocation
    if allocation is None:
        return Skipped(f"no payload: the budget could not be allocated ({allocate.failure})")
    if f is None:
        return Skipped(f"no payload: revenue could not be forecast ({forecast.failure})")
    days = [{"date": d, "point": float(p), **{f"{k}_{level}": float(f.bands[level][0 if k == "lo" else 1][i])
                                               for level in (50, 80, 95) for k in ("lo", "hi")}}
            for i, (d, p) in enumerate(zip(f.dates, f.point, strict=True))]
    usable = [c for c in creatives.creatives if c.light != "red" and c.status != "rejected"]
    for_date = kpis.last_complete_day + timedelta(days=2)
    spend = {r.channel: r.spend for r in allocation.rows}
    audiences = consented_audiences(con, consent_null_means=settings.policy.consent_null_means)
    document = {
        "sandbox": settings.mode == "sandbox",
        "lineage_id": context.lineage_id,
        "lineage_head": head.to_json(),
        "generated_at": datetime.now(UTC),
        "for_date": for_date,
        "reconciliation": guard.totals,
        "segments": [{"segment": p.segment, "users": p.users, "share": round(p.share, 6)} for p in segments.profiles],
        "forecast": {"series_id": f.series_id, "engine": f.engine, "horizon_days": len(f.dates),
                     "total_point": round(sum(float(x) for x in f.point), 2),
                     **({"total_lo_80": round(f.total_bands[80][0], 2), "total_hi_80": round(f.total_bands[80][1], 2)}
                        if 80 in f.total_bands else {}),
                     "days": days},
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
            for c in usable
        ],
        "orders": [platform_order(p, spend=spend, audiences=audiences, creatives=usable, for_date=for_date,
                                  settings=settings) for p in settings.delivery.platforms],
    }
    try:
        return Payload.model_validate(document)
    except ValidationError as exc:
        raise PayloadInvalid(f"payload fails its invariants: {describe_validation_error(exc)}") from exc


def consented_audiences(con: duckdb.DuckDBPyConnection, *, consent_null_means: str) -> dict[str, int]:
    """Users per segment whose latest event's ads consent (GA4 `privacy_info.ads_storage`) allows ads;
    a NULL consent counts as the policy says."""
    allowed = "latest = 'Yes'" + (" OR latest IS NULL" if consent_null_means == "granted" else "")
    rows = con.execute(
        f"""SELECT s.segment, count(*) FILTER (WHERE {allowed}) FROM {Table.USER_SEGMENTS} s
        LEFT JOIN (SELECT user_key, arg_max(ads_consent, event_timestamp) AS latest
                   FROM {Table.GUARDED_EVENTS} GROUP BY user_key) a USING (user_key)
        GROUP BY s.segment ORDER BY s.segment"""
    ).fetchall()
    return {str(segment): int(n) for segment, n in rows}


def slug(name: str) -> str:
    """'Brand Loyalist' -> 'brand-loyalist': ids the platforms accept and people can read."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "x"


def platform_order(platform: PlatformConfig, *, spend: dict[str, float], audiences: dict[str, int],
                   creatives: list[Creative], for_date: date, settings: Settings) -> dict[str, Any]:
    """A campaign per channel the platform buys; within it a line item (ad group, for search) per
    segment that has consented users and usable copy for the channel, the channel's budget split by
    consented users (to the cent). Without any consented audience one untargeted unit gets it all."""
    delivery = settings.delivery
    flight = {"start": for_date, "end": for_date + timedelta(days=delivery.flight_days - 1)}
    campaigns = []
    for channel in platform.channels:
        budget = round(spend.get(channel, 0.0), 2)
        copy: dict[str, list[str]] = {}
        for c in creatives:
            if c.channel == channel:
                copy.setdefault(c.segment, []).append(c.creative_id)
        targeted = {s: n for s, n in audiences.items() if n > 0 and s in copy}
        units = []
        if targeted:
            for (segment, users), cents in zip(targeted.items(), _split_cents(budget, list(targeted.values())),
                                               strict=True):
                units.append({"line_item_id": f"flashcast-{slug(channel)}-{slug(segment)}",
                              "name": f"{channel} · {segment}", "segment": segment,
                              "audience": {"segment_id": f"flashcast-segment-{slug(segment)}", "segment": segment,
                                           "consented_users": users},
                              "daily_budget": cents / 100, "creative_ids": copy[segment]})
        elif copy:
            units.append({"line_item_id": f"flashcast-{slug(channel)}-all", "name": f"{channel} · untargeted",
                          "segment": "all", "audience": None, "daily_budget": budget,
                          "creative_ids": [i for ids in copy.values() for i in ids]})
        if platform.kind == "search":
            for unit in units:
                unit["daily_budget"] = None
        campaigns.append({"campaign_id": f"flashcast-{slug(channel)}", "name": f"Flashcast {channel}",
                          "channel": channel, "daily_budget": budget, "flight": flight, "pacing": delivery.pacing,
                          "ad_groups" if platform.kind == "search" else "line_items": units})
    return {"platform": platform.name, "kind": platform.kind, "campaigns": campaigns}


def _split_cents(amount: float, weights: list[int]) -> list[int]:
    """`amount` in cents split by `weights`, largest remainders first, adding up exactly."""
    total_cents, total = round(amount * 100), sum(weights)
    exact = [total_cents * w / total for w in weights]
    cents = [int(x) for x in exact]
    for i in sorted(range(len(weights)), key=lambda i: cents[i] - exact[i])[: total_cents - sum(cents)]:
        cents[i] += 1
    return cents


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
