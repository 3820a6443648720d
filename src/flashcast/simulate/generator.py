"""Write realistic GA4 BigQuery export files, a spend file and the ground truth behind them.

The simulation runs in three steps: draw the daily world (demand, flighted spend, expected
sessions per channel) with numpy; realise sessions and their events per day; then serialise as
BigQuery exports them (NDJSON with INT64 values as strings, and Parquet), planting the defects
real exports have: PII in identifiers and URLs, consent-denied rows, malformed rows, exact
duplicates and purchases re-sent with the same transaction_id. Everything draws from one seeded
generator in a fixed order, so the same arguments give byte-identical files.
"""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flashcast.simulate.parquet_schema import GA4_ARROW_SCHEMA, INT64_PATHS
from flashcast.simulate.people import FIRST_NAMES, LAST_NAMES, PAGES, PRODUCTS
from flashcast.simulate.response import ChannelTruth, CurveForm

STREAM_ID = "4178290135"
HOST = "https://shop.example.com"
PAID: tuple[str, ...] = ("Display", "CTV", "PPC", "Email")
# Session source/medium per channel, as UTM tags would set them.
UTM: dict[str, list[tuple[str, str, str]]] = {
    "Display": [("dv360", "display", "prospecting"), ("criteo", "cpm", "retargeting")],
    "CTV": [("roku", "ctv", "brand_ctv"), ("hulu", "video", "brand_ctv")],
    "PPC": [("google", "cpc", "search_brand"), ("bing", "cpc", "search_generic")],
    "Email": [("newsletter", "email", "weekly_digest")],
    "Organic": [("google", "organic", "(organic)"), ("(direct)", "(none)", "(direct)"),
                ("facebook.com", "referral", "(referral)")],
}
CONVERSION_RATE = {"Display": 0.035, "CTV": 0.025, "PPC": 0.07, "Email": 0.08, "Organic": 0.05}
BASE_SPEND = {"Display": 1200.0, "CTV": 1500.0, "PPC": 2000.0, "Email": 300.0}
SESSION_SHARE = {"Display": 0.18, "CTV": 0.12, "PPC": 0.25, "Email": 0.08, "Organic": 0.37}
USER_TYPES = ("Brand Loyalist", "Value Shopper", "Speed Seeker")
MALFORMED_KINDS = (
    "truncated_json", "timestamp_not_integer", "timestamp_milliseconds",
    "missing_event_name", "negative_revenue", "bad_event_date",
)
NDJSON_ONLY_KINDS = frozenset({"truncated_json", "timestamp_not_integer"})


@dataclass(frozen=True)
class SimulationSpec:
    """What to simulate. `end_date` is the export's last (partial, intraday) day."""

    days: int = 450
    users: int = 4000
    seed: int = 7
    end_date: date = date(2026, 11, 23)
    timezone: str = "America/New_York"
    formats: tuple[str, ...] = ("ndjson", "parquet")
    malformed_rows: int | None = None  # default: one every ~15 days, at least 6
    sessions_per_day: float | None = None  # default: 3 sessions per user over the window, at least 20/day

    @property
    def daily_sessions(self) -> float:
        if self.sessions_per_day is not None:
            return self.sessions_per_day
        return max(20.0, 3.0 * self.users / self.days)

    def __post_init__(self) -> None:
        if self.days < 2:
            raise ValueError("days must be at least 2")
        if self.users < 10:
            raise ValueError("users must be at least 10")
        unknown = set(self.formats) - {"ndjson", "parquet"}
        if unknown or not self.formats:
            raise ValueError(f"formats must be a non-empty subset of ndjson, parquet (got {self.formats})")


@dataclass(frozen=True)
class SimulationResult:
    out_dir: Path
    export_dirs: dict[str, Path]
    spend_file: Path
    truth_file: Path
    rows_by_format: dict[str, int]


@dataclass
class _User:
    pseudo_id: str
    kind: str
    consent: str | None
    email: str
    phone: str
    user_id: str | None
    first_touch: tuple[str, str, str] | None = None
    first_ts: int | None = None
    sessions: int = 0
    country: tuple[str, str, str, str] = ("North America", "Northern America", "United States", "New York")
    device: tuple[str, str, str] = ("desktop", "Windows", "Chrome")


@dataclass
class _Plant:
    """Counts of what was planted, for truth.json."""

    pii_forms: Counter[str] = field(default_factory=Counter)
    emails: set[str] = field(default_factory=set)
    phones: set[str] = field(default_factory=set)
    # Keyed by the row's consent value ('Yes', 'No', 'null'): whether a duplicate is counted as a
    # duplicate or as dropped for consent depends on the consent rule in force.
    exact_duplicates: Counter[str] = field(default_factory=Counter)
    transaction_duplicates: Counter[str] = field(default_factory=Counter)


def simulate(spec: SimulationSpec, out_dir: Path, *, progress: Callable[[str], None] | None = None
             ) -> SimulationResult:
    """Write `ndjson/` and/or `parquet/` export folders, `spend.csv` and `truth.json` under `out_dir`.
    `progress` hears how far it is (days simulated and events so far, then the files written)."""
    say = progress or (lambda _message: None)
    rng = np.random.default_rng(spec.seed)
    tz = ZoneInfo(spec.timezone)
    dates = [spec.end_date - timedelta(days=spec.days - 1 - i) for i in range(spec.days)]
    demand, promo_days = _demand(rng, dates)
    daily_sessions = spec.daily_sessions
    channels = _channel_truths(rng, daily_sessions, spend_scale=daily_sessions / 1000)
    spend = {c.channel: _flighted_spend(rng, c, len(dates)) for c in channels}
    expected = {c.channel: c.expected_sessions(spend[c.channel], demand) for c in channels}
    expected["Organic"] = daily_sessions * SESSION_SHARE["Organic"] * demand
    users = _users(rng, spec.users)
    plant = _Plant()
    rnd = random.Random(int(rng.integers(2**63)))  # fast scalar draws for per-event noise
    rows_by_day: dict[str, list[dict[str, Any]]] = {}
    txn_counter = 0
    for day_index, day in enumerate(dates):
        rows: list[dict[str, Any]] = []
        is_promo = day in promo_days
        for channel in (*PAID, "Organic"):
            n_sessions = int(rng.poisson(expected[channel][day_index]))
            for _ in range(n_sessions):
                user = users[_pick_user(rng, len(users))]
                txn_counter = _session_events(rng, rows, user, channel, day, tz, is_promo, txn_counter, plant, rnd)
        rows.sort(key=lambda r: (r["event_timestamp"], r["event_name"]))
        for row in rows:
            rows_by_day.setdefault(row["event_date"], []).append(row)
        if day_index % 10 == 9 or day_index == len(dates) - 1:
            say(f"simulated {day_index + 1:,} of {len(dates):,} days, "
                f"{sum(len(v) for v in rows_by_day.values()):,} events")
    last_key = spec.end_date.strftime("%Y%m%d")
    cutoff = _to_micros(datetime.combine(spec.end_date, datetime.min.time()).replace(hour=14), tz)
    rows_by_day = {k: v for k, v in rows_by_day.items() if k <= last_key}
    rows_by_day[last_key] = [r for r in rows_by_day.get(last_key, []) if r["event_timestamp"] < cutoff]
    malformed = _plant_malformed(rng, rows_by_day, spec)
    _plant_duplicates(rng, rows_by_day, plant)

    out_dir.mkdir(parents=True, exist_ok=True)
    export_dirs: dict[str, Path] = {}
    rows_by_format: dict[str, int] = {}
    for fmt in spec.formats:
        say(f"writing {len(rows_by_day):,} {fmt} export files")
        export_dirs[fmt] = out_dir / fmt
        rows_by_format[fmt] = _write_exports(fmt, export_dirs[fmt], rows_by_day, last_key)
    spend_file = out_dir / "spend.csv"
    _write_spend(spend_file, dates, spend)
    truth_file = out_dir / "truth.json"
    truth = _truth(spec, dates, demand, promo_days, channels, users, plant, malformed, rows_by_format, rows_by_day)
    truth_file.write_text(json.dumps(truth, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return SimulationResult(out_dir, export_dirs, spend_file, truth_file, rows_by_format)


# ---------------------------------------------------------------- the daily world

def _demand(rng: np.random.Generator, dates: list[date]) -> tuple[np.ndarray, set[date]]:
    t = np.arange(len(dates), dtype=float)
    trend = 1.0 + 0.35 * t / 365.0
    weekly = np.array([1.0, 0.97, 0.95, 0.98, 1.05, 1.18, 1.12])[[d.weekday() for d in dates]]
    doy = np.array([d.timetuple().tm_yday for d in dates], dtype=float)
    yearly = 1.0 + 0.18 * np.cos(2 * np.pi * (doy - 340) / 365.25) + 0.06 * np.sin(4 * np.pi * doy / 365.25)
    promo = np.ones(len(dates))
    promo_days: set[date] = set()
    n_promos = min(max(2, len(dates) // 90), max(1, len(dates) // 5))
    for start in rng.choice(max(len(dates) - 4, 1), size=min(n_promos, max(len(dates) - 4, 1)), replace=False):
        length = int(rng.integers(2, 5))
        lift = float(rng.uniform(1.5, 2.3))
        promo[start : start + length] *= lift
        promo_days.update(dates[start : start + length])
    return trend * weekly * yearly * promo, promo_days


def _channel_truths(rng: np.random.Generator, daily_sessions: float, *, spend_scale: float) -> list[ChannelTruth]:
    """Per-channel curves; BASE_SPEND is for a shop with 1,000 sessions a day and scales with traffic."""
    forms: list[CurveForm] = ["hill", "hill", "exponential", "log"]
    order = rng.permutation(len(forms))
    truths = []
    for channel, form_index in zip(PAID, order, strict=True):
        form = forms[form_index]
        decay = float(rng.uniform(0.1, 0.6))
        base = round(BASE_SPEND[channel] * spend_scale, 2)
        steady = base / (1.0 - decay)  # adstock level at base spend
        params: dict[str, float]
        if form == "hill":
            params = {"half_saturation": float(steady * rng.uniform(0.7, 1.6)), "slope": float(rng.uniform(0.8, 2.0))}
        else:
            params = {"scale": float(steady * rng.uniform(0.6, 1.4))}
        probe = ChannelTruth(channel, form, params, decay, 1.0, CONVERSION_RATE[channel], base)
        at_base = float(probe.expected_sessions(np.full(60, base), np.ones(60))[-1])
        beta = daily_sessions * SESSION_SHARE[channel] / at_base  # base spend buys the channel's share
        truths.append(ChannelTruth(channel, form, params, decay, beta, CONVERSION_RATE[channel], base))
    return truths


def _flighted_spend(rng: np.random.Generator, truth: ChannelTruth, n_days: int) -> np.ndarray:
    """Spend in flights of 5-20 days at deliberately varied levels (0x to 2.5x base), plus noise."""
    levels = np.array([0.0, 0.3, 0.6, 1.0, 1.4, 1.9, 2.5])
    out = np.empty(n_days)
    t = 0
    while t < n_days:
        length = int(rng.integers(5, 21))
        out[t : t + length] = levels[rng.integers(0, len(levels))]
        t += length
    noise = rng.normal(1.0, 0.08, n_days).clip(0.7, 1.3)
    spend = truth.base_daily_spend * out * noise
    if truth.channel == "Email":  # sends go out on some weekdays only
        spend *= rng.random(n_days) < 0.6
    return np.round(spend, 2)


def _users(rng: np.random.Generator, n: int) -> list[_User]:
    # Users are picked with a skew towards low indices (`_pick_user`), so sorting loyalists towards
    # the front (with noise) makes them the frequent visitors they are.
    drawn = rng.choice(len(USER_TYPES), size=n, p=[0.2, 0.45, 0.35])
    kinds = drawn[np.argsort(np.where(drawn == 0, 0.0, 0.6) + rng.random(n), kind="stable")]
    consent = rng.choice(3, size=n, p=[0.7, 0.15, 0.15])
    users = []
    for i in range(n):
        first = FIRST_NAMES[int(rng.integers(len(FIRST_NAMES)))]
        last = LAST_NAMES[int(rng.integers(len(LAST_NAMES)))]
        email = f"{first}.{last}{i}@example.com"
        phone = f"555{int(rng.integers(200, 999)):03d}{int(rng.integers(0, 9999)):04d}"
        logged_in = rng.random() < 0.35
        email_as_id = logged_in and rng.random() < 0.3
        user_id = None
        if logged_in:
            user_id = _mixed_case(email, rng) if email_as_id else f"cust-{100000 + i}"
        user = _User(
            pseudo_id=f"{int(rng.integers(10**8, 10**9))}.{int(rng.integers(1_600_000_000, 1_700_000_000))}",
            kind=USER_TYPES[int(kinds[i])],
            consent=("Yes", "No", None)[int(consent[i])],
            email=email,
            phone=phone,
            user_id=user_id,
        )
        user.country = [
            ("North America", "Northern America", "United States", "New York"),
            ("North America", "Northern America", "United States", "California"),
            ("Europe", "Western Europe", "Germany", "Berlin"),
            ("Europe", "Northern Europe", "United Kingdom", "England"),
            ("North America", "Northern America", "Canada", "Ontario"),
        ][int(rng.integers(5))]
        user.device = [("desktop", "Windows", "Chrome"), ("mobile", "iOS", "Safari"),
                       ("mobile", "Android", "Chrome"), ("tablet", "iOS", "Safari")][int(rng.integers(4))]
        users.append(user)
    return users


def _pick_user(rng: np.random.Generator, n: int) -> int:
    # A skewed pick: low indices come back often, giving repeat visitors next to one-off ones.
    return min(int(n * rng.beta(0.6, 1.4)), n - 1)


def _mixed_case(email: str, rng: np.random.Generator) -> str:
    local, domain = email.split("@")
    return f"{local.title()}@{domain.capitalize()}" if rng.random() < 0.5 else email.upper()


# ---------------------------------------------------------------- sessions and events

def _session_events(
    rng: np.random.Generator, rows: list[dict[str, Any]], user: _User, channel: str, day: date,
    tz: ZoneInfo, is_promo: bool, txn_counter: int, plant: _Plant, rnd: random.Random,
) -> int:
    utm = UTM[channel][int(rng.integers(len(UTM[channel])))]
    hour = float(np.clip(rng.normal(14.5, 4.5), 0, 23.9))
    start_local = datetime.combine(day, datetime.min.time()) + timedelta(hours=hour)
    ts = _to_micros(start_local, tz)
    user.sessions += 1
    session_id = ts // 1_000_000
    first_visit = user.first_ts is None
    if first_visit:
        user.first_ts, user.first_touch = ts, utm
    if user.kind == "Speed Seeker":
        pages, dwell = int(rng.geometric(0.7)), rng.uniform(5, 25)
    elif user.kind == "Brand Loyalist":
        pages, dwell = 1 + int(rng.geometric(0.4)), rng.uniform(20, 70)
    else:
        pages, dwell = int(rng.geometric(0.45)), rng.uniform(15, 50)
    conv_mult = {"Brand Loyalist": 1.8, "Value Shopper": 2.2 if is_promo else 0.6, "Speed Seeker": 1.0}[user.kind]
    converts = rng.random() < CONVERSION_RATE[channel] * conv_mult
    ctx = _EventContext(user, utm, session_id, day, tz)
    names = (["first_visit"] if first_visit else []) + ["session_start"] + ["page_view"] * pages
    if rng.random() < 0.15:
        names.append("view_search_results")
    names.append("user_engagement")
    if converts:
        names += ["add_to_cart", "begin_checkout", "purchase"]
    clock = ts
    for index, name in enumerate(names):
        clock += int(rng.uniform(0.2, 1.0) * dwell * 1_000_000) if index else 0
        extra: dict[str, Any] = {}
        page = PAGES[int(rng.integers(len(PAGES)))]
        location = f"{HOST}{page}"
        if name in ("session_start", "page_view") and index <= 2:
            location += f"?utm_source={utm[0]}&utm_medium={utm[1]}&utm_campaign={utm[2]}"
        if name == "page_view" and user.user_id is not None and rng.random() < 0.04:
            location = _leaky_url(rng, location, user, plant)
        extra["page_location"] = location
        if name == "view_search_results":
            term = PRODUCTS[int(rng.integers(len(PRODUCTS)))][1].lower()
            if user.user_id is not None and rng.random() < 0.2:
                term = user.email  # people type their address into the search box
                plant.pii_forms["search_term_email"] += 1
                plant.emails.add(user.email.lower())
            extra["search_term"] = term
        if name == "user_engagement":
            extra["engagement_time_msec"] = int(dwell * pages * 1000 * rng.uniform(0.6, 1.2))
        if name == "purchase":
            txn_counter += 1
            extra["purchase"] = _purchase(rng, user, txn_counter, is_promo)
        rows.append(ctx.row(name, clock, extra, rnd))
    if user.user_id is not None and "@" in user.user_id:
        plant.pii_forms["user_id_email"] += 1
        plant.emails.add(user.user_id.lower())
    return txn_counter


def _leaky_url(rng: np.random.Generator, location: str, user: _User, plant: _Plant) -> str:
    sep = "&" if "?" in location else "?"
    p = user.phone
    forms = {
        "url_email_plain": f"email={user.email}",
        "url_email_encoded": f"email={user.email.replace('@', '%40')}",
        "url_email_mixed_case": f"Contact={user.email.upper()}",
        "url_phone_formatted_encoded": f"phone=%2B1%20({p[:3]})%20{p[3:6]}-{p[6:]}",
        "url_phone_dashes": f"tel={p[:3]}-{p[3:6]}-{p[6:]}",
        "url_phone_dots": f"mobile={p[:3]}.{p[3:6]}.{p[6:]}",
    }
    form = list(forms)[int(rng.integers(len(forms)))]
    plant.pii_forms[form] += 1
    if "email" in form:
        plant.emails.add(user.email.lower())
    else:
        plant.phones.add(p)
    return f"{location}{sep}{forms[form]}"


def _purchase(rng: np.random.Generator, user: _User, txn: int, is_promo: bool) -> dict[str, Any]:
    aov_mult = {"Brand Loyalist": 1.5, "Value Shopper": 0.55, "Speed Seeker": 0.9}[user.kind]
    n_items = 1 + int(rng.poisson(0.7))
    items: list[dict[str, Any]] = []
    for _ in range(n_items):
        item_id, name, price = PRODUCTS[int(rng.integers(len(PRODUCTS)))]
        unit = round(price * aov_mult * (0.8 if is_promo else 1.0), 2)
        qty = 1 + int(rng.poisson(0.3))
        items.append({"item_id": item_id, "item_name": name, "price": unit, "quantity": qty,
                      "item_revenue": round(unit * qty, 2)})
    revenue = round(sum(float(i["item_revenue"]) for i in items), 2)
    return {"transaction_id": f"T{txn:08d}", "items": items, "revenue": revenue,
            "coupon": "PROMO20" if is_promo and user.kind == "Value Shopper" else None}


@dataclass
class _EventContext:
    user: _User
    utm: tuple[str, str, str]
    session_id: int
    day: date
    tz: ZoneInfo
    date_key: str = ""
    next_midnight: int = 0

    def __post_init__(self) -> None:
        self._enter_day(self.day)

    def _enter_day(self, day: date) -> None:
        self.day = day
        self.date_key = day.strftime("%Y%m%d")
        self.next_midnight = _to_micros(datetime.combine(day + timedelta(days=1), datetime.min.time()), self.tz)

    def row(self, name: str, ts: int, extra: dict[str, Any], rnd: random.Random) -> dict[str, Any]:
        user, consented = self.user, self.user.consent != "No"
        if ts >= self.next_midnight:  # sessions that run past midnight land on the next event_date
            self._enter_day(self.day + timedelta(days=1))
        params: list[tuple[str, Any]] = [("page_location", extra["page_location"]),
                                         ("page_title", "Shop"), ("engaged_session_event", 1)]
        if consented:
            params += [("ga_session_id", self.session_id), ("ga_session_number", user.sessions)]
        if name in ("session_start", "page_view"):
            params += [("source", self.utm[0]), ("medium", self.utm[1]), ("campaign", self.utm[2])]
        for key in ("search_term", "engagement_time_msec"):
            if key in extra:
                params.append((key, extra[key]))
        purchase = extra.get("purchase")
        if purchase:
            params += [("transaction_id", purchase["transaction_id"]), ("currency", "USD"),
                       ("value", purchase["revenue"])]
            if purchase["coupon"]:
                params.append(("coupon", purchase["coupon"]))
        country = user.country
        campaign = {"campaign_id": None, "campaign_name": self.utm[2], "source": self.utm[0],
                    "medium": self.utm[1], "term": None, "content": None, "source_platform": None,
                    "creative_format": None, "marketing_tactic": None}
        first = user.first_touch or self.utm
        return {
            "event_date": self.date_key,
            "event_timestamp": ts,
            "event_name": name,
            "event_params": [_param(k, v) for k, v in params],
            "event_previous_timestamp": None,
            "event_value_in_usd": purchase["revenue"] if purchase else None,
            "event_bundle_sequence_id": rnd.randrange(1, 2**31),
            "event_server_timestamp_offset": rnd.randrange(100, 900_000),
            "user_id": user.user_id if consented else None,
            "user_pseudo_id": user.pseudo_id if consented else None,
            "privacy_info": {"analytics_storage": user.consent, "ads_storage": user.consent,
                             "uses_transient_token": "No"},
            "user_properties": [],
            "user_first_touch_timestamp": user.first_ts if consented else None,
            "user_ltv": {"revenue": 0.0, "currency": "USD"} if consented else None,
            "device": {"category": user.device[0], "operating_system": user.device[1], "language": "en-us",
                       "web_info": {"browser": user.device[2], "browser_version": "120.0", "hostname": HOST[8:]}},
            "geo": {"continent": country[0], "sub_continent": country[1], "country": country[2],
                    "region": country[3], "city": "(not set)", "metro": "(not set)"},
            "traffic_source": {"name": first[2], "medium": first[1], "source": first[0]},
            "stream_id": STREAM_ID,
            "platform": "WEB",
            "ecommerce": _ecommerce(purchase),
            "items": [{**item, "price_in_usd": item["price"], "item_revenue_in_usd": item["item_revenue"],
                       "coupon": purchase["coupon"]} for item in purchase["items"]] if purchase else [],
            "collected_traffic_source": {"manual_campaign_name": self.utm[2], "manual_source": self.utm[0],
                                         "manual_medium": self.utm[1]} if name == "session_start" else None,
            "is_active_user": True,
            "session_traffic_source_last_click": {"manual_campaign": campaign},
        }


def _param(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, int):
        return {"key": key, "value": {"string_value": None, "int_value": int(value), "float_value": None,
                                      "double_value": None}}
    if isinstance(value, float):
        return {"key": key, "value": {"string_value": None, "int_value": None, "float_value": None,
                                      "double_value": value}}
    return {"key": key, "value": {"string_value": value, "int_value": None, "float_value": None,
                                  "double_value": None}}


def _ecommerce(purchase: dict[str, Any] | None) -> dict[str, Any] | None:
    if not purchase:
        return None
    quantity = sum(i["quantity"] for i in purchase["items"])
    return {"total_item_quantity": quantity, "purchase_revenue_in_usd": purchase["revenue"],
            "purchase_revenue": purchase["revenue"], "refund_value_in_usd": None, "refund_value": None,
            "shipping_value_in_usd": 0.0, "shipping_value": 0.0, "tax_value_in_usd": 0.0, "tax_value": 0.0,
            "unique_items": len(purchase["items"]), "transaction_id": purchase["transaction_id"]}


def _to_micros(local: datetime, tz: ZoneInfo) -> int:
    return int(local.replace(tzinfo=tz).timestamp() * 1_000_000)


# ---------------------------------------------------------------- defects

def _plant_duplicates(rng: np.random.Generator, rows_by_day: dict[str, list[dict[str, Any]]], plant: _Plant) -> None:
    for key in sorted(rows_by_day):
        rows = rows_by_day[key]
        out: list[dict[str, Any]] = []
        for row in rows:
            out.append(row)
            if "_malformed" in row:
                continue  # keep defects separate so each planted row has one expected outcome
            consent = row["privacy_info"]["analytics_storage"] or "null"
            if rng.random() < 0.004:  # the export repeats an event verbatim
                out.append(row)
                plant.exact_duplicates[consent] += 1
            if row["event_name"] == "purchase" and rng.random() < 0.04:  # thank-you page reloaded
                resent = json.loads(json.dumps(row))
                resent["event_timestamp"] = row["event_timestamp"] + int(rng.integers(2, 90)) * 1_000_000
                resent["event_bundle_sequence_id"] = int(rng.integers(1, 2**31))
                out.append(resent)
                plant.transaction_duplicates[consent] += 1
        rows_by_day[key] = out


def _plant_malformed(
    rng: np.random.Generator, rows_by_day: dict[str, list[dict[str, Any]]], spec: SimulationSpec
) -> list[dict[str, Any]]:
    """Mark rows to corrupt at write time. Returns the plan: day, row index, kind."""
    count = spec.malformed_rows if spec.malformed_rows is not None else max(6, spec.days // 15)
    keys = sorted(rows_by_day)
    plan: list[dict[str, Any]] = []
    taken: set[tuple[str, int]] = set()
    purchases = [(k, i) for k in keys for i, r in enumerate(rows_by_day[k]) if r["event_name"] == "purchase"]
    for n in range(count):
        kind = MALFORMED_KINDS[n % len(MALFORMED_KINDS)]
        for _try in range(100):
            if kind == "negative_revenue" and purchases:
                key, index = purchases[int(rng.integers(len(purchases)))]
            else:
                key = keys[int(rng.integers(len(keys)))]
                if not rows_by_day[key]:
                    continue
                index = int(rng.integers(len(rows_by_day[key])))
            if (key, index) not in taken:
                break
        taken.add((key, index))
        row = rows_by_day[key][index]
        corrupt = dict(row)
        corrupt["_malformed"] = kind
        rows_by_day[key][index] = corrupt
        plan.append({"file_day": key, "kind": kind})
    return plan


# ---------------------------------------------------------------- writers

def _write_exports(fmt: str, folder: Path, rows_by_day: dict[str, list[dict[str, Any]]], last_key: str) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("events_*"):  # an earlier simulation's days must not mix with this one's
        stale.unlink()
    written = 0
    for key in sorted(rows_by_day):
        stem = f"events_intraday_{key}" if key == last_key else f"events_{key}"
        rows = rows_by_day[key]
        if fmt == "ndjson":
            lines = [_ndjson_line(row) for row in rows]
            (folder / f"{stem}.json").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
            written += len(lines)
        else:
            records = [r for r in (_parquet_record(row) for row in rows) if r is not None]
            table = pa.Table.from_pylist(records, schema=GA4_ARROW_SCHEMA)
            pq.write_table(table, folder / f"{stem}.parquet", compression="zstd")
            written += len(records)
    return written


def _ndjson_line(row: dict[str, Any]) -> str:
    kind = row.get("_malformed")
    clean = {k: v for k, v in row.items() if k != "_malformed"}
    clean = _corrupt(clean, kind) if kind else clean
    text = json.dumps(_int64_as_string(clean), separators=(",", ":"))
    return text[: len(text) // 2] if kind == "truncated_json" else text


def _parquet_record(row: dict[str, Any]) -> dict[str, Any] | None:
    kind = row.get("_malformed")
    if kind in NDJSON_ONLY_KINDS:
        return None  # a typed Parquet column cannot hold these defects
    clean = {k: v for k, v in row.items() if k != "_malformed"}
    return _corrupt(clean, kind) if kind else clean


def _corrupt(row: dict[str, Any], kind: str) -> dict[str, Any]:
    row = json.loads(json.dumps(row))
    if kind == "timestamp_not_integer":
        row["event_timestamp"] = "2024-05-01T10:00:00Z"
    elif kind == "timestamp_milliseconds":
        row["event_timestamp"] = row["event_timestamp"] // 1000
    elif kind == "missing_event_name":
        row["event_name"] = None
    elif kind == "negative_revenue":
        if row.get("ecommerce"):
            row["ecommerce"]["purchase_revenue"] = -abs(row["ecommerce"]["purchase_revenue"] or 10.0)
        else:
            row["event_value_in_usd"] = -12.5
    elif kind == "bad_event_date":
        row["event_date"] = row["event_date"][:4] + "1345"
    return row


_TOP_INT64 = tuple(p for p in INT64_PATHS if "." not in p)


def _int64_as_string(row: dict[str, Any]) -> dict[str, Any]:
    """BigQuery's JSON export writes INT64 as strings; do the same for every INT64 path we write."""
    out = dict(row)
    for key in _TOP_INT64:
        if isinstance(out.get(key), int):
            out[key] = str(out[key])
    out["event_params"] = [_param_as_string(p) for p in row["event_params"]]
    if row.get("ecommerce"):
        out["ecommerce"] = {k: str(v) if k in ("total_item_quantity", "unique_items") and isinstance(v, int) else v
                            for k, v in row["ecommerce"].items()}
    if row.get("items"):
        out["items"] = [{**item, "quantity": str(item["quantity"])} for item in row["items"]]
    return out


def _param_as_string(param: dict[str, Any]) -> dict[str, Any]:
    value = param["value"]
    if isinstance(value.get("int_value"), int):
        return {"key": param["key"], "value": {**value, "int_value": str(value["int_value"])}}
    return param


def _write_spend(path: Path, dates: list[date], spend: dict[str, np.ndarray]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["date", "channel", "spend"])
        for i, day in enumerate(dates):
            for channel in PAID:
                writer.writerow([day.isoformat(), channel, f"{spend[channel][i]:.2f}"])


def _truth(
    spec: SimulationSpec, dates: list[date], demand: np.ndarray, promo_days: set[date],
    channels: list[ChannelTruth], users: list[_User], plant: _Plant, malformed: list[dict[str, Any]],
    rows_by_format: dict[str, int], rows_by_day: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    kinds = Counter(m["kind"] for m in malformed)
    return {
        "spec": {"days": spec.days, "users": spec.users, "seed": spec.seed, "end_date": spec.end_date.isoformat(),
                 "timezone": spec.timezone},
        "channels": {c.channel: c.to_json() for c in channels},
        "organic_conversion_rate": CONVERSION_RATE["Organic"],
        "demand": {"dates": [d.isoformat() for d in dates], "multiplier": [round(float(x), 6) for x in demand],
                   "promo_days": sorted(d.isoformat() for d in promo_days)},
        "partial_last_day": spec.end_date.isoformat(),
        "rows": rows_by_format,
        "rows_per_day": {k: len(v) for k, v in sorted(rows_by_day.items())},
        "planted": {
            "malformed": dict(sorted(kinds.items())),
            "malformed_by_format": {
                fmt: sum(n for k, n in kinds.items() if fmt == "ndjson" or k not in NDJSON_ONLY_KINDS)
                for fmt in spec.formats
            },
            "exact_duplicates": dict(sorted(plant.exact_duplicates.items())),
            "transaction_duplicates": dict(sorted(plant.transaction_duplicates.items())),
            "pii_forms": dict(sorted(plant.pii_forms.items())),
        },
        # Raw PII planted in the export, so tests can prove none of it gets past the guard.
        "pii_needles": {"emails": sorted(plant.emails), "phones": sorted(plant.phones),
                        "user_pseudo_ids": sorted(u.pseudo_id for u in users if u.sessions)},
        "user_types": dict(sorted(Counter(u.kind for u in users if u.sessions).items())),
    }


def simulate_once(spec: SimulationSpec, out_dir: Path, *, progress: Callable[[str], None] | None = None
                  ) -> tuple[SimulationResult, bool]:
    """`simulate`, unless `out_dir` already holds a finished simulation of the same spec: then that
    one, unchanged (the same arguments give the same files). Returns the result and whether it was
    reused. `spec.json` is written last, so an interrupted simulation is never reused."""
    stamp = out_dir / "spec.json"
    wanted = json.dumps(asdict(spec), sort_keys=True, default=str)
    truth_file = out_dir / "truth.json"
    if stamp.exists() and stamp.read_text(encoding="utf-8") == wanted and truth_file.exists():
        rows = json.loads(truth_file.read_text(encoding="utf-8"))["rows"]
        dirs = {fmt: out_dir / fmt for fmt in spec.formats}
        if all(d.is_dir() for d in dirs.values()):
            return SimulationResult(out_dir, dirs, out_dir / "spend.csv", truth_file, dict(rows)), True
    stamp.unlink(missing_ok=True)
    result = simulate(spec, out_dir, progress=progress)
    stamp.write_text(wanted, encoding="utf-8")
    return result, False
