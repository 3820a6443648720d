"""The one configuration model, loaded from `flashcast.toml`.

Sections: [store], [source], [ingest], [policy], [channels], [guardrails], [allocation], [forecast],
[segments], [llm], [brand], [lineage], [delivery], [email], [schedule]. Every field has a
documented default so an empty file is a valid config; `flashcast.toml` in the repository root is
the annotated example.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flashcast.errors import ConfigError, describe_validation_error

PAID_CHANNELS: tuple[str, ...] = ("Display", "CTV", "PPC", "Email")
DEFAULT_MIN_SHARE, DEFAULT_MAX_SHARE = 0.02, 0.6  # each paid channel's, unless [guardrails] says otherwise


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StoreConfig(_Frozen):
    """Where analytical tables (DuckDB) and operational records (SQLAlchemy URL) live."""

    home: Path = Path(".flashcast")
    warehouse: Path | None = None  # default: <home>/warehouse.duckdb
    ops_url: str | None = None  # default: sqlite:///<home>/ops.sqlite (WAL); PostgreSQL URLs work too
    lock_timeout_s: float = 600.0
    # DuckDB's working memory for a run (e.g. "4GB"; default: DuckDB's, 80% of RAM) and where it
    # spills what does not fit (default: <home>/tmp).
    memory_limit: str | None = Field(default=None, pattern=r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$",
                                     description="a size such as 4GB or 512MiB")
    temp_directory: Path | None = None
    # Guarded rows (events, quarantine, consent drops, duplicates, sessions) dated more than this many
    # days before the newest day are removed from the warehouse after each run (0: keep everything).
    retention_days: int = Field(default=0, ge=0)

    @property
    def spill_path(self) -> Path:
        return self.temp_directory or self.home / "tmp"

    @property
    def warehouse_path(self) -> Path:
        return self.warehouse or self.home / "warehouse.duckdb"

    @property
    def ops_database_url(self) -> str:
        return self.ops_url or f"sqlite:///{self.home / 'ops.sqlite'}"


class SparkConfig(_Frozen):
    """The Spark session of `[engine] name = "spark"`: `master` is local[N], spark://host:7077,
    yarn, k8s://...; `conf` passes any other Spark setting (executor memory, a cluster's options)."""

    master: str = "local[2]"
    shuffle_partitions: int = Field(default=8, ge=1)
    conf: dict[str, str] = Field(default_factory=dict)
    stop_session: bool = True  # False: leave the session for the caller (a notebook, a test)


class EngineConfig(_Frozen):
    """Where ingest, guard and daily KPIs run: the run's DuckDB connection (default), or Apache Spark
    (same SQL, transpiled; results land in the warehouse as usual). Needs `flashcast[spark]` and Java."""

    name: Literal["duckdb", "spark"] = "duckdb"
    spark: SparkConfig = SparkConfig()


class SourceConfig(_Frozen):
    """What a run reads and where it writes when not told: the service's runs (API, schedule),
    `flashcast rebalance`, and `flashcast run`/`ingest` without --export (--spend, --out)."""

    export: Path | None = None  # a GA4 events_* file or folder
    spend: Path | None = None  # daily spend CSV (date, channel, spend)
    out: Path = Path("out")


class IngestConfig(_Frozen):
    """Stage 1. GA4 writes each day's events to events_YYYYMMDD; a row dated further than this from
    the date in its file's name is quarantined (a clock or export problem, not a real event)."""

    max_days_from_file_date: int = Field(default=1, ge=0)
    # Runs are incremental: an export file the warehouse already holds unchanged (same name, size and
    # content hash) is not read again, except the files of the latest `look_back_days` days, which
    # GA4 rewrites (late events; the daily table replacing the intraday one). false: every run
    # re-reads every file.
    incremental: bool = True
    look_back_days: int = Field(default=3, ge=0)


class PrivacyPolicy(_Frozen):
    """How the guard treats identifiers, consent and free text."""

    identifier_fields: tuple[str, ...] = ("user_pseudo_id", "user_id")
    consent_field: Literal["analytics_storage", "ads_storage"] = "analytics_storage"
    # NULL consent means consent mode is not set up on the property (common, see docs/governance.md).
    # 'granted' keeps those rows; EU properties with consent mode should choose 'denied'.
    consent_null_means: Literal["granted", "denied"] = "granted"
    redact_emails: bool = True
    redact_phones: bool = True
    redact_personal_query_values: bool = True  # URL query values of email=, phone=, name=, address=, zip=...
    key_env: str = "FLASHCAST_PII_KEY"
    key_file: Path | None = None  # default: <store.home>/pii.key, created by the demo with a warning

    @field_validator("identifier_fields")
    @classmethod
    def _known_identifiers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = set(value) - {"user_pseudo_id", "user_id"}
        if unknown:
            raise ValueError(f"unknown identifier field(s): {sorted(unknown)}")
        if "user_pseudo_id" not in value:
            raise ValueError("user_pseudo_id must be hashed: it is the join key of every later stage")
        return value


class ChannelRule(_Frozen):
    """Session source/medium matching both regular expressions (case-insensitive) maps to `channel`."""

    channel: str
    source: str = ".*"
    medium: str = ".*"

    @field_validator("source", "medium")
    @classmethod
    def _valid_regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from exc
        return value


def _default_rules() -> tuple[ChannelRule, ...]:
    return (
        ChannelRule(channel="PPC", medium=r"^(cpc|ppc|paid[-_ ]?search|sem)$"),
        ChannelRule(channel="Display", medium=r"^(display|banner|cpm|programmatic)$"),
        ChannelRule(channel="CTV", medium=r"^(ctv|ott|video|connected[-_ ]?tv)$"),
        ChannelRule(channel="Email", medium=r"^(e-?mail|newsletter)$"),
        ChannelRule(channel="Email", source=r"^(newsletter|e-?mail)$"),
    )


class ChannelMapping(_Frozen):
    """Maps each session to a channel. First matching rule wins; unmatched sessions are `default_channel`."""

    attribution: Literal["session_last_click", "first_touch"] = "session_last_click"
    rules: tuple[ChannelRule, ...] = Field(default_factory=_default_rules)
    paid_channels: tuple[str, ...] = PAID_CHANNELS
    default_channel: str = "Organic"

    @property
    def channels(self) -> tuple[str, ...]:
        return (*self.paid_channels, self.default_channel)

    @model_validator(mode="after")
    def _rules_name_known_channels(self) -> ChannelMapping:
        unknown = {r.channel for r in self.rules} - set(self.channels)
        if unknown:
            whose = "" if "rules" in self.model_fields_set else (
                " (the default rules, as none are given: write [[channels.rules]] that find each paid channel's "
                "sessions by source and medium)")
            raise ValueError(f"rules name channels not in paid_channels/default_channel: {sorted(unknown)}{whose}")
        return self


class Guardrails(_Frozen):
    """Spend guardrails for the allocator (stage 6)."""

    total_budget: float | None = Field(default=None, gt=0)  # None: keep yesterday's total
    min_share: dict[str, float] = Field(default_factory=lambda: dict.fromkeys(PAID_CHANNELS, DEFAULT_MIN_SHARE))
    max_share: dict[str, float] = Field(default_factory=lambda: dict.fromkeys(PAID_CHANNELS, DEFAULT_MAX_SHARE))
    max_daily_change: float = 0.25  # fraction of yesterday's spend a channel may move in one day
    # A channel may always move at least this share of the total budget, so a paused channel can
    # restart (25% of zero is zero).
    min_daily_move_share: float = 0.05
    caps: dict[str, float] = Field(default_factory=dict)  # absolute daily maximum per channel
    hold: tuple[str, ...] = ()  # channels kept at yesterday's spend
    lookback_days: int = Field(default=28, ge=1)

    @model_validator(mode="after")
    def _shares_can_hold(self) -> Guardrails:
        crossed = sorted(c for c, low in self.min_share.items() if low > self.max_share.get(c, 1.0))
        if crossed:
            raise ValueError(f"min_share is above max_share for {crossed}")
        if sum(self.min_share.values()) > 1.0 + 1e-9:
            raise ValueError(f"min_share adds to {sum(self.min_share.values()):.0%} of the budget, more than all of it")
        return self

    @field_validator("max_daily_change", "min_daily_move_share")
    @classmethod
    def _nonnegative_fraction(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must be >= 0")
        return value

    @field_validator("caps")
    @classmethod
    def _nonnegative_caps(cls, value: dict[str, float]) -> dict[str, float]:
        for channel, cap in value.items():
            if cap < 0:
                raise ValueError(f"cap for {channel} must be >= 0")
        return value

    @field_validator("min_share", "max_share")
    @classmethod
    def _shares_in_unit_interval(cls, value: dict[str, float]) -> dict[str, float]:
        for channel, share in value.items():
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"share for {channel} must be within [0, 1]")
        return value


class AllocationConfig(_Frozen):
    """How stage 6 splits the budget. `curves` fits adstock + saturation per channel and optimizes on
    them; `inverse_cpa` reweights by recent cost per conversion. Both respect [guardrails]."""

    method: Literal["curves", "inverse_cpa"] = "curves"
    kpi: Literal["conversions", "revenue"] = "conversions"
    objective: Literal["point", "mean", "quantile"] = "point"  # fitted curve, bootstrap mean, or a pessimistic draw
    risk_quantile: float = Field(default=0.2, gt=0, lt=1)
    target_cpa: float | None = Field(default=None, gt=0)  # spend less than the budget if needed to meet it
    target_roas: float | None = Field(default=None, gt=0)  # with kpi = "revenue"
    fit_days: int = Field(default=365, ge=28)
    # Curves are not trusted far beyond the spend they were fitted on: a channel gets at most this
    # multiple of its largest daily spend in the fit window (bound "extrapolation").
    max_extrapolation: float = Field(default=1.5, ge=1.0)
    bootstrap_draws: int = Field(default=40, ge=0, le=500)
    whatif_multipliers: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)

    @model_validator(mode="after")
    def _one_target(self) -> AllocationConfig:
        if self.target_cpa is not None and self.target_roas is not None:
            raise ValueError("set target_cpa or target_roas, not both")
        if self.target_roas is not None and self.kpi != "revenue":
            raise ValueError("target_roas needs kpi = 'revenue'")
        return self


class LLMConfig(_Frozen):
    """Optional LLM provider for segment labels and ad copy. `offline` (default) uses the rules and
    templates. Keys come from OPENAI_API_KEY / ANTHROPIC_API_KEY; `base_url` points `openai` at
    any OpenAI-compatible server (vLLM, Ollama, LM Studio)."""

    provider: Literal["offline", "openai", "anthropic"] = "offline"
    model: str = ""
    base_url: str | None = None
    max_calls: int = Field(default=40, ge=1)
    max_tokens: int = Field(default=200_000, ge=1000)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=60.0, gt=0)
    regenerate_red: int = Field(default=2, ge=0, le=5)  # re-asks for a variant the checker marks red

    @model_validator(mode="after")
    def _model_named(self) -> LLMConfig:
        if self.provider != "offline" and not self.model:
            raise ValueError(f"provider {self.provider!r} needs a model name")
        return self


class SegmentsConfig(_Frozen):
    """Stage 3. `rules` (default) explains each user by the rule that fired; `kmeans` clusters the
    standardized features and names clusters by their centroid profile."""

    method: Literal["rules", "kmeans"] = "rules"
    clusters: int = Field(default=0, ge=0, le=12)  # 0: choose 3-6 by silhouette
    seed: int = 0


class ForecastConfig(_Frozen):
    """Stage 5. `auto` backtests the `engines` line-up and picks the best per series; a named engine
    skips the selection. Either way the bands are conformal, calibrated on the backtest. Engine
    names are those of `flashcast.forecasting.engines.REGISTRY`."""

    engine: str = "auto"
    engines: tuple[str, ...] = ("naive7", "ses", "theta", "linear", "ensemble")  # the line-up for `auto`
    horizon: int = Field(default=14, ge=1, le=90)
    holiday_countries: tuple[str, ...] = ()  # e.g. ["US", "GB"]: holidays for `linear` and Prophet
    # `auto` keeps each selection (engine, conformal scores) in the warehouse and reuses it for this
    # many days of new history: a run then refits the chosen engine once instead of backtesting the
    # line-up, unless the days since fell outside its 80% band too often (drift). 0: select every run.
    reselect_days: int = Field(default=7, ge=0, le=365)

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, value: str) -> str:
        known = _engine_names()
        if value != "auto" and value not in known:
            raise ValueError(f"engine must be 'auto' or one of {sorted(known)}")
        return value

    @field_validator("engines")
    @classmethod
    def _known_engines(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        known = _engine_names()
        if set(value) - set(known) or not value:
            raise ValueError(f"engines must be a non-empty subset of {sorted(known)}")
        return value


def _engine_names() -> tuple[str, ...]:
    from flashcast.forecasting.engines import REGISTRY  # the registry, not a copy of its names

    return tuple(REGISTRY)


class ChannelCopyLimits(_Frozen):
    headline: int
    body: int


def _default_limits() -> dict[str, ChannelCopyLimits]:
    return {
        "PPC": ChannelCopyLimits(headline=30, body=90),
        "Display": ChannelCopyLimits(headline=30, body=90),
        "CTV": ChannelCopyLimits(headline=15, body=70),
        "Email": ChannelCopyLimits(headline=60, body=130),
    }


class BrandRules(_Frozen):
    """Brand voice and compliance rules for the creative library (stage 4)."""

    brand_name: str = "Flashcast Store"
    tone_words: tuple[str, ...] = ("friendly", "clear", "confident")
    banned_words: tuple[str, ...] = ("cheap", "miracle", "hate")
    risky_claims: tuple[str, ...] = (
        "guaranteed", "guarantee", "best", "#1", "number one", "risk-free", "cure", "100%", "free",
    )
    disclaimer: str = "Terms apply."
    # Off by default: a person approves every creative. On, green copy is approved without one; amber
    # always waits for a person; red is rejected.
    auto_approve_green: bool = False
    limits: dict[str, ChannelCopyLimits] = Field(default_factory=_default_limits)


class LineageConfig(_Frozen):
    """OpenLineage emission. `file` writes JSON lines under the output folder; `http` posts to `url`."""

    namespace: str = "flashcast"
    transport: Literal["file", "http", "none"] = "file"
    url: str | None = None
    endpoint: str = "api/v1/lineage"

    @model_validator(mode="after")
    def _http_needs_url(self) -> LineageConfig:
        if self.transport == "http" and not self.url:
            raise ValueError("transport 'http' needs url")
        return self


class PlatformConfig(_Frozen):
    """An ad platform the plan is pushed to: which paid channels it buys, in whose terms (`kind`:
    display DSP line items, CTV line items, search ad groups) and where its orders are POSTed."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$",
                      description="a lower-case name of up to 32 letters, digits, - or _, starting with a letter")
    kind: Literal["display", "ctv", "search"]
    channels: tuple[str, ...] = Field(min_length=1)
    # None: the order is built, never sent
    endpoint: str | None = Field(default=None, pattern=r"^https?://", description="an http:// or https:// URL")


def _default_platforms() -> tuple[PlatformConfig, ...]:
    return (PlatformConfig(name="display", kind="display", channels=("Display",)),
            PlatformConfig(name="ctv", kind="ctv", channels=("CTV",)),
            PlatformConfig(name="search", kind="search", channels=("PPC",)))


class DeliveryConfig(_Frozen):
    """Pushing the approved plan to the platforms (see flashcast.delivery): each order is committed to
    an outbox first, then POSTed with an Idempotency-Key and an HMAC-SHA256 signature."""

    platforms: tuple[PlatformConfig, ...] = Field(default_factory=_default_platforms)
    secret_env: str = "FLASHCAST_DSP_SECRET"  # the signing secret's environment variable
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=6, ge=1, le=50)  # per push; a later push or rebalance tries again
    backoff_s: float = Field(default=1.0, ge=0)  # first retry's wait, doubled each time, with jitter
    max_backoff_s: float = Field(default=60.0, ge=0)  # also caps a platform's Retry-After
    flight_days: int = Field(default=1, ge=1, le=31)  # a daily rebalance buys one day
    pacing: Literal["even", "asap"] = "even"
    # false: every plan waits for a person's push. true: `flashcast rebalance` pushes on its own when
    # every funded line item has an approved creative (with brand.auto_approve_green, green copy is).
    auto_push: bool = False

    @model_validator(mode="after")
    def _unique_platforms(self) -> DeliveryConfig:
        names = [p.name for p in self.platforms]
        channels = [c for p in self.platforms for c in p.channels]
        if len(set(names)) != len(names):
            raise ValueError("platform names must be unique")
        if len(set(channels)) != len(channels):
            raise ValueError("a channel may be bought on one platform only")
        return self

    @property
    def platform_of(self) -> dict[str, str]:
        """Each channel a platform buys, and that platform's name (a channel has one at most)."""
        return {c: p.name for p in self.platforms for c in p.channels}


class EmailConfig(_Frozen):
    """The allocator summary sent to the marketing lead after each rebalance (none when `to` is empty)."""

    to: tuple[str, ...] = ()
    sender: str = "flashcast@localhost"
    host: str = "localhost"
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password_env: str = "FLASHCAST_SMTP_PASSWORD"
    ca_file: Path | None = None  # a private CA for the SMTP server's certificate; default: the system's
    timeout_s: float = Field(default=30.0, gt=0)
    dashboard_url: str = "http://127.0.0.1:8000"  # where the links in the email point


class ScheduleConfig(_Frozen):
    """`flashcast serve` runs a rebalance on this cron schedule (five fields, in property_timezone),
    e.g. "30 6 * * *" for 06:30 every day; None: no schedule (use cron or a systemd timer)."""

    rebalance: str | None = None

    @field_validator("rebalance")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(value)
            except ValueError as exc:
                raise ValueError(f"not a five-field cron expression: {exc}") from exc
        return value


class Settings(_Frozen):
    """Everything a run needs besides its inputs."""

    # "sandbox": every push goes to the built-in stand-in DSP (never to a configured endpoint), and
    # every payload, order and email says SANDBOX. For trying Flashcast safely.
    mode: Literal["live", "sandbox"] = "live"
    property_timezone: str = "UTC"
    # ISO 4217 code of the money in the inputs: the GA4 property's currency (purchase_revenue) and
    # the spend file's. Every report, chart and CSV says it.
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$", description="an ISO 4217 code in capitals, such as USD")
    store: StoreConfig = StoreConfig()
    engine: EngineConfig = EngineConfig()
    source: SourceConfig = SourceConfig()
    ingest: IngestConfig = IngestConfig()
    policy: PrivacyPolicy = PrivacyPolicy()
    channels: ChannelMapping = ChannelMapping()
    guardrails: Guardrails = Guardrails()
    allocation: AllocationConfig = AllocationConfig()
    forecast: ForecastConfig = ForecastConfig()
    segments: SegmentsConfig = SegmentsConfig()
    llm: LLMConfig = LLMConfig()
    brand: BrandRules = BrandRules()
    lineage: LineageConfig = LineageConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    email: EmailConfig = EmailConfig()
    schedule: ScheduleConfig = ScheduleConfig()

    @model_validator(mode="before")
    @classmethod
    def _defaults_follow_the_paid_channels(cls, data: Any) -> Any:
        """Defaults that name channels follow the configured paid channels, not the default four (a
        config that renamed its channels was refused for guardrails and platforms it never wrote):
        shares not given apply to each paid channel (a lone one may hold the whole budget), and the
        default platforms keep only those that buy a paid channel."""
        if not isinstance(data, dict):
            return data
        channels, rails, delivery = data.get("channels"), data.get("guardrails", {}), data.get("delivery", {})
        paid = (channels.paid_channels if isinstance(channels, ChannelMapping)
                else channels.get("paid_channels") if isinstance(channels, dict) else None)
        if not isinstance(paid, list | tuple):
            return data
        data = dict(data)
        if isinstance(rails, dict):
            low = DEFAULT_MIN_SHARE if len(paid) * DEFAULT_MIN_SHARE <= 0.5 else 0.0  # dozens of channels: no floor
            high = DEFAULT_MAX_SHARE if len(paid) > 1 else 1.0
            defaults = {"min_share": dict.fromkeys(paid, low), "max_share": dict.fromkeys(paid, high)}
            data["guardrails"] = {**{k: v for k, v in defaults.items() if k not in rails}, **rails}
        if isinstance(delivery, dict) and "platforms" not in delivery:
            platforms = tuple(p for p in _default_platforms() if set(p.channels) <= set(paid))
            data["delivery"] = {**delivery, "platforms": platforms}
        return data

    @model_validator(mode="after")
    def _guardrails_name_paid_channels(self) -> Settings:
        rails, paid = self.guardrails, self.channels.paid_channels
        named = {*rails.min_share, *rails.max_share, *rails.caps, *rails.hold}
        unknown = sorted(named - set(paid))
        if unknown:
            raise ValueError(f"guardrails name channels that are not paid channels: {unknown} (paid: {list(paid)})")
        bought = sorted(set(self.delivery.platform_of) - set(paid))
        if bought:
            raise ValueError(f"delivery.platforms buy channels that are not paid channels: {bought}")
        room = sum(rails.max_share.get(c, 1.0) for c in paid)
        if room < 1.0 - 1e-9:
            raise ValueError(f"max_share of the paid channels adds to {room:.0%}: they cannot hold the whole budget")
        return self

    @field_validator("property_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def pii_key_file(self) -> Path:
        return self.policy.key_file or self.store.home / "pii.key"

    def digest(self) -> str:
        """A stable hash of the settings, recorded in lineage so a run's config can be matched later."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


# Guardrails that bind nothing: what `flashcast allocate FILE` starts from (a file's channels are
# its own, and only the guardrails a user gives apply).
OPEN_GUARDRAILS = {"min_share": {}, "max_share": {}, "max_daily_change": 1e9, "min_daily_move_share": 1.0}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        # utf-8-sig: Windows editors (Notepad) start a UTF-8 file with a byte-order mark, which TOML
        # does not allow ("Invalid statement (at line 1, column 1)")
        return tomllib.loads(Path(path).read_text(encoding="utf-8-sig"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{path}: a folder, not a config file") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start + 1}); save it as UTF-8") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def load_allocation_settings(path: Path | None, **guardrails: object) -> tuple[Guardrails, AllocationConfig, str]:
    """The [guardrails] (over OPEN_GUARDRAILS, then `guardrails` over those), [allocation] and
    currency of a config file, alone: the rest of the file (its channel mapping) is not checked."""
    data = _read_toml(path) if path is not None else {}
    where = f"{path}: " if path else ""
    given = data.get("guardrails", {})
    try:
        section = "guardrails"
        rails = Guardrails.model_validate({**OPEN_GUARDRAILS, **(given if isinstance(given, dict) else {}),
                                           **{k: v for k, v in guardrails.items() if v}})
        section = "allocation"
        allocation = AllocationConfig.model_validate(data.get("allocation", {}))
        section = ""
        currency = Settings.model_validate({"currency": data.get("currency", "USD")}).currency
    except ValidationError as exc:
        model = {"guardrails": Guardrails, "allocation": AllocationConfig}.get(section, Settings)
        raise ConfigError(f"{where}{section + '.' if section else ''}"
                          f"{describe_validation_error(exc, limit=20, model=model)}") from exc
    return rails, allocation, currency


def load_settings(path: Path | None = None) -> Settings:
    """Read `flashcast.toml` (or `path`); defaults when no path is given and none exists."""
    if path is None:
        candidate = Path("flashcast.toml")
        if not candidate.exists():
            return Settings()
        path = candidate
    data = _read_toml(path)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc, limit=50, model=Settings)}") from exc
