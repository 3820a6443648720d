"""The records passed between stages, and the names of the tables they leave in a run's connection.

Every stage takes records (and the run's DuckDB connection) and returns one record; `lineage()`
on a record is what the lineage log keeps about it. Records are frozen: a later stage never
changes an earlier one's result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from flashcast.privacy import redact_message

if TYPE_CHECKING:  # the libraries' records, for annotations only: importing them costs a second
    import pandas as pd

    from flashcast.budget.plan import CurvePlan
    from flashcast.budget.records import Allocation
    from flashcast.forecasting.forecast import Forecast


class Table(StrEnum):
    """Tables in a run's connection, in the warehouse's catalog order. Stages declare which they
    read and write (see `pipeline.STAGES`); the pipeline checks both."""

    STAGED = "staged"  # every input line, validated; raw values, never leaves the run
    FILES = "files"  # every export file read, with its rows
    GUARDED_EVENTS = "guarded_events"
    QUARANTINE = "quarantine"
    CONSENT_DROPS = "consent_drops"
    DUPLICATES = "duplicates"
    SPEND = "spend"
    SESSIONS = "sessions"
    DAILY_KPIS = "daily_kpis"
    DAILY_OUTCOMES = "daily_outcomes"
    USER_FEATURES = "user_features"
    USER_SEGMENTS = "user_segments"
    CREATIVES = "creatives"
    FORECAST_SELECTIONS = "forecast_selections"  # each run's engine choice and conformal scores, reused
    ALLOCATIONS = "allocations"


@dataclass(frozen=True)
class RunInputs:
    """Where a run reads from: a GA4 export (file or folder) and, optionally, a spend file."""

    export: Path
    spend: Path | None = None
    rebuild: tuple[date, date] | None = None  # days read again even if their files are unchanged


@dataclass(frozen=True)
class RunContext:
    """Who is running: stamped on every output row and every lineage entry."""

    lineage_id: str
    processed_at: datetime
    key_id: str
    # People's latest decisions on creatives (creative id -> 'approved' / 'rejected'), read from the
    # ops store when the run starts; ids are content hashes, so a decision holds for the same copy.
    creative_decisions: Mapping[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------ ingest


@dataclass(frozen=True)
class ExportFile:
    path: Path
    format: str  # 'ndjson' | 'parquet'
    intraday: bool
    file_date: date | None = None  # the date in the file's name (events_YYYYMMDD), if any
    # its name in the export when it sits in a day folder (a sharded extract): events_YYYYMMDD/NAME
    label: str | None = None

    @property
    def name(self) -> str:
        return self.label or self.path.name


@dataclass(frozen=True)
class StagedExport:
    """The staged table's name in the run connection, the files it came from and its row count."""

    table: str
    files: tuple[ExportFile, ...]
    input_rows: int
    warnings: tuple[str, ...] = ()  # empty files, rows far from their file's date
    # Incremental runs: why each file was read (new, changed, look-back...), and the stored files
    # whose guarded rows were reused instead.
    reasons: Mapping[str, str] = field(default_factory=dict)
    reused_files: tuple[str, ...] = ()

    @property
    def read_counts(self) -> dict[str, int]:
        """How many files were read for each reason, by reason."""
        counts: dict[str, int] = {}
        for reason in sorted(self.reasons.values()):
            counts[reason] = counts.get(reason, 0) + 1
        return counts

    def lineage(self) -> dict[str, Any]:
        return {"files": [f.name for f in self.files], "input_rows": self.input_rows,
                **({"read_because": self.read_counts, "reused_files": len(self.reused_files)} if self.reasons else {}),
                **({"warnings": list(self.warnings)} if self.warnings else {})}


# ------------------------------------------------------------------ guard

OUTCOMES = ("accepted", "dropped_consent", "quarantined", "duplicate")


@dataclass(frozen=True)
class DayOutcome:
    event_date: str  # ISO date, or 'unknown' for rows whose date could not be parsed
    input_rows: int
    accepted: int
    dropped_consent: int
    quarantined: int
    duplicate: int

    @property
    def dropped_share(self) -> float:
        return self.dropped_consent / self.input_rows if self.input_rows else 0.0


@dataclass(frozen=True)
class GuardReport:
    """Outcome counts per day and in total. `totals` always reconciles (checked when built)."""

    days: tuple[DayOutcome, ...]
    key_id: str
    consent_null_means: str
    alerts: tuple[str, ...] = ()  # days read this run whose counts break from their usual (see `day_alerts`)
    outage_days: tuple[str, ...] = ()  # ISO days of the history whose rows fell far under their usual

    @property
    def totals(self) -> dict[str, int]:
        fields = ("input_rows", *OUTCOMES)
        return {f: sum(getattr(d, f) for d in self.days) for f in fields}

    def lineage(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "consent_null_means": self.consent_null_means, "totals": self.totals,
                **({"alerts": list(self.alerts)} if self.alerts else {})}


# ------------------------------------------------------------------ kpis


@dataclass(frozen=True)
class KpiSummary:
    table: str
    first_day: date
    last_day: date
    partial_last_day: bool
    channels: tuple[str, ...]
    spend_through: date | None = None  # the spend data's last day (None: no spend file)
    unspent: tuple[str, ...] = ()  # paid channels without any spend in the spend data (when there are some)

    @property
    def spend_ends_early(self) -> bool:
        """The spend data stop before the last complete day: the days after count as no spend."""
        return self.spend_through is not None and self.spend_through < self.last_complete_day

    @property
    def last_complete_day(self) -> date:
        return self.last_day - timedelta(days=1) if self.partial_last_day else self.last_day

    @property
    def last_spend_day(self) -> date:
        """The last complete day the spend data cover: the allocation's "yesterday" and the end of its
        fit window. Spend reports often come a day or two late; the days after are unknown, not zero."""
        known = self.spend_ends_early and self.spend_through is not None and self.spend_through >= self.first_day
        return self.spend_through if known and self.spend_through is not None else self.last_complete_day

    def lineage(self) -> dict[str, Any]:
        return {"first_day": self.first_day.isoformat(), "last_day": self.last_day.isoformat(),
                "partial_last_day": self.partial_last_day}


# ------------------------------------------------------------------ segments

SegmentName = Literal["Brand Loyalist", "Value Shopper", "Speed Seeker", "New Customer", "Browser"]
SEGMENTS: tuple[SegmentName, ...] = get_args(SegmentName)


@dataclass(frozen=True)
class SegmentProfile:
    segment: str
    users: int
    share: float
    recency_days: float
    sessions: float
    orders: float
    monetary: float
    pages_per_session: float
    session_duration_s: float


@dataclass(frozen=True)
class Segmentation:
    table: str  # user_segments: user_key, features, segment, rule, reason
    profiles: tuple[SegmentProfile, ...]
    rule_counts: dict[str, int]
    thresholds: dict[str, float]
    method: str = "rules"  # rules | kmeans | llm-kmeans
    llm: str = "offline"
    fallback: str | None = None  # why a configured LLM was not used

    @property
    def users(self) -> int:
        return sum(p.users for p in self.profiles)

    def lineage(self) -> dict[str, Any]:
        return {"method": self.method, "llm": self.llm, "fallback": self.fallback, "users": self.users,
                "sizes": {p.segment: p.users for p in self.profiles}, "rules": self.rule_counts,
                "thresholds": self.thresholds}


# ------------------------------------------------------------------ creatives

Light = Literal["green", "amber", "red"]
Status = Literal["pending", "approved", "rejected"]
LIGHTS: tuple[Light, ...] = get_args(Light)


@dataclass(frozen=True)
class Reason:
    code: str  # pii_email, pii_phone, banned_word, too_long, risky_claim, no_disclaimer, caps, punctuation
    field: str  # headline | body
    light: Light
    message: str


@dataclass(frozen=True)
class Creative:
    creative_id: str
    segment: str
    channel: str
    variant: str
    headline: str
    body: str
    light: Light
    status: Status
    reasons: tuple[Reason, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class CreativeLibrary:
    creatives: tuple[Creative, ...]
    generator: str = "templates"  # or the LLM's provider:model
    fallback: str | None = None  # why a configured LLM was not used

    @property
    def lights(self) -> dict[str, int]:
        return {light: sum(c.light == light for c in self.creatives) for light in LIGHTS}

    def lineage(self) -> dict[str, Any]:
        return {"generator": self.generator, "fallback": self.fallback, "lights": self.lights}


# ------------------------------------------------------------------ forecast


@dataclass(frozen=True)
class ForecastPlan:
    """Total revenue's forecast (the fan chart), and every channel's and segment's in one tidy frame;
    or, when the history cannot be forecast (too short, too broken), why (the rest of the run still
    stands)."""

    forecast: Forecast | None
    breakdown: pd.DataFrame  # series_id, ds, engine, point, bands
    skipped: tuple[str, ...] = ()  # breakdown series that could not be forecast, and why
    failure: str | None = None

    def lineage(self) -> dict[str, Any]:
        if self.forecast is None:
            return {"failure": self.failure}
        series = sorted(self.breakdown["series_id"].unique().tolist()) if len(self.breakdown) else []
        return {**self.forecast.summary(), "notes": list(self.forecast.notes), "breakdown_series": series,
                "breakdown_skipped": [redact_message(m) for m in self.skipped]}


# ------------------------------------------------------------------ allocation


@dataclass(frozen=True)
class AllocationPlan:
    """Tomorrow's split, and (curve method) the fitted curves and what-if sweep behind it; or, when
    the budget could not be allocated, why (the rest of the run still stands)."""

    allocation: Allocation | None
    curves: CurvePlan | None = None
    failure: str | None = None

    def lineage(self) -> dict[str, Any]:
        a, fits = self.allocation, {} if self.curves is None else self.curves.fits
        if a is None:
            return {"failure": self.failure}
        return {"method": a.method, "budget": a.budget, "spend": a.spends,
                "bounds": {r.channel: r.bound for r in a.rows}, "expected": a.expected_conversions,
                "gain_vs_inverse_cpa": a.gain_vs_inverse_cpa, "notes": list(a.notes),
                "curves": {c: {"form": f.curve.form, "decay": f.curve.decay, "slope": round(f.curve.slope, 4),
                               "r2": f.diagnostics.r2, "fallback": f.fallback} for c, f in fits.items()}}


@dataclass(frozen=True)
class Skipped:
    """A stage that could not run because an earlier stage failed softly (its record says why)."""

    reason: str

    def lineage(self) -> dict[str, Any]:
        return {"skipped": self.reason}
