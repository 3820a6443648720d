"""Write realistic GA4 BigQuery export files, a spend file and the ground truth behind them.

The simulation draws the daily world (demand, flighted spend, expected sessions per channel), then
day by day realises sessions and their events as numpy arrays and writes them as BigQuery exports
them (NDJSON with INT64 values as strings, and Parquet), planting the defects real exports have:
PII in identifiers and URLs, consent-denied rows, malformed rows, exact duplicates and purchases
re-sent with the same transaction_id. Everything draws from one seeded generator in a fixed order,
so the same arguments give byte-identical files.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flashcast.inplace import files_in_place
from flashcast.simulate.parquet_schema import GA4_ARROW_SCHEMA
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
# Written to the folder of the same name (ndjson.gz: ndjson_gz/, files events_*.json.gz).
FORMATS = ("ndjson", "ndjson.gz", "parquet")


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
        if self.seed < 0:
            raise ValueError("seed must be 0 or more")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone {self.timezone!r} is not an IANA time zone name (like America/New_York)"
                             ) from None
        if self.sessions_per_day is not None and not self.sessions_per_day > 0:
            raise ValueError("sessions_per_day must be more than 0")
        unknown = set(self.formats) - set(FORMATS)
        if unknown or not self.formats:
            raise ValueError(f"formats must be a non-empty subset of {', '.join(FORMATS)} (got {self.formats})")


@dataclass(frozen=True)
class SimulationResult:
    out_dir: Path
    export_dirs: dict[str, Path]
    spend_file: Path
    truth_file: Path
    rows_by_format: dict[str, int]


@dataclass
class _Users:
    """Every simulated visitor, one array element each, plus what their sessions so far have set."""

    pseudo_id: np.ndarray  # str
    kind: np.ndarray  # index into USER_TYPES
    consent: np.ndarray  # index into CONSENTS
    email: list[str]
    phone: list[str]
    user_id: np.ndarray  # str or None (not logged in)
    country: np.ndarray  # index into COUNTRIES
    device: np.ndarray  # index into DEVICES
    sessions: np.ndarray  # sessions so far
    first_ts: np.ndarray  # first session's start (micros), -1 before it
    first_utm: np.ndarray  # first session's UTM (index into UTM_ROWS), -1 before it

    def __len__(self) -> int:
        return len(self.kind)


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
    malformed: list[str] = field(default_factory=list)


CONSENTS: tuple[str | None, ...] = ("Yes", "No", None)
COUNTRIES = (("North America", "Northern America", "United States", "New York"),
             ("North America", "Northern America", "United States", "California"),
             ("Europe", "Western Europe", "Germany", "Berlin"),
             ("Europe", "Northern Europe", "United Kingdom", "England"),
             ("North America", "Northern America", "Canada", "Ontario"))
DEVICES = (("desktop", "Windows", "Chrome"), ("mobile", "iOS", "Safari"), ("mobile", "Android", "Chrome"),
           ("tablet", "iOS", "Safari"))
CHANNELS: tuple[str, ...] = (*PAID, "Organic")
# Every channel's UTM tags in one table; a session holds an index into it.
UTM_ROWS: tuple[tuple[str, str, str], ...] = tuple(utm for c in CHANNELS for utm in UTM[c])
UTM_FIRST = np.cumsum([0] + [len(UTM[c]) for c in CHANNELS])[:-1]
UTM_COUNT = np.array([len(UTM[c]) for c in CHANNELS])
EVENT_NAMES = ("first_visit", "session_start", "page_view", "view_search_results", "user_engagement",
               "add_to_cart", "begin_checkout", "purchase")
(FIRST_VISIT, SESSION_START, PAGE_VIEW, SEARCH, ENGAGEMENT, ADD_TO_CART, BEGIN_CHECKOUT,
 PURCHASE) = range(len(EVENT_NAMES))
_NAME_ORDER = np.argsort(np.argsort(np.array(EVENT_NAMES)))  # a name's place in alphabetical order
# By user type (USER_TYPES order): pages are `extra + geometric(p)`, dwell seconds uniform(low, high).
PAGES_P, PAGES_EXTRA = np.array([0.4, 0.45, 0.7]), np.array([1, 0, 0])
DWELL_LOW, DWELL_HIGH = np.array([20.0, 15.0, 5.0]), np.array([70.0, 50.0, 25.0])
AOV_MULT = np.array([1.5, 0.55, 0.9])
LEAK_FORMS = ("url_email_plain", "url_email_encoded", "url_email_mixed_case", "url_phone_formatted_encoded",
              "url_phone_dashes", "url_phone_dots")


def simulate(spec: SimulationSpec, out_dir: Path, *, progress: Callable[[str], None] | None = None
             ) -> SimulationResult:
    """Write `ndjson/` and/or `parquet/` export folders, `spend.csv` and `truth.json` under `out_dir`.
    `progress` hears how far it is (days simulated and events so far).

    Vectorized by day: each day's sessions and events are drawn as numpy arrays and become one Arrow
    table, written at once (Parquet by pyarrow, NDJSON by DuckDB's JSON writer), so memory holds a
    day, not the export."""
    say = progress or (lambda _message: None)
    # Written aside and moved into place at the end: a simulation killed midway leaves the previous
    # one whole (an export folder, spend and truth that belong together), not a mix.
    with files_in_place(out_dir) as staging:
        rows_by_format = _write_export(spec, staging, say)
    return SimulationResult(out_dir, {fmt: out_dir / _folder_name(fmt) for fmt in spec.formats},
                            out_dir / "spend.csv", out_dir / "truth.json", rows_by_format)


def _folder_name(fmt: str) -> str:
    return fmt.replace(".", "_")


def _write_export(spec: SimulationSpec, out_dir: Path, say: Callable[[str], None]) -> dict[str, int]:
    """The export folders, spend.csv and truth.json in `out_dir`; returns the rows per format."""
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
    malformed_days = _malformed_days(rng, spec)
    last_key = spec.end_date.strftime("%Y%m%d")
    cutoff = _to_micros(datetime.combine(spec.end_date, datetime.min.time()).replace(hour=14), tz)

    export_dirs = {fmt: out_dir / _folder_name(fmt) for fmt in spec.formats}
    for folder in export_dirs.values():
        folder.mkdir()
    rows_by_format = dict.fromkeys(spec.formats, 0)
    rows_per_day: dict[str, int] = {}
    writer = duckdb.connect()
    carry = pa.Table.from_pylist([], schema=GA4_ARROW_SCHEMA)  # events past midnight, for the next day
    txn_counter = 0
    events_so_far = 0
    for day_index, day in enumerate(dates):
        counts = [int(rng.poisson(expected[c][day_index])) for c in CHANNELS]
        table, txn_counter = _day_events(rng, users, counts, day, tz, day in promo_days, txn_counter, plant)
        key = day.strftime("%Y%m%d")
        dated = table.column("event_date")
        own = pa.concat_tables([carry, table.filter(pc.equal(dated, key))])
        carry = table.filter(pc.not_equal(dated, key))
        if key == last_key:
            own = own.filter(pc.less(own.column("event_timestamp"), cutoff))
        rows, kinds = _plant_defects(rng, own, malformed_days.get(day_index, []), plant)
        rows_per_day[key] = rows.num_rows
        events_so_far += rows.num_rows
        stem = f"events_intraday_{key}" if key == last_key else f"events_{key}"
        for fmt, folder in export_dirs.items():
            rows_by_format[fmt] += _write_day(fmt, folder / stem, rows, kinds, writer)
        if day_index % 10 == 9 or day_index == len(dates) - 1:
            say(f"simulated {day_index + 1:,} of {len(dates):,} days, {events_so_far:,} events")
    writer.close()
    spend_file = out_dir / "spend.csv"
    _write_spend(spend_file, dates, spend)
    truth_file = out_dir / "truth.json"
    truth = _truth(spec, dates, demand, promo_days, channels, users, plant, rows_by_format, rows_per_day)
    truth_file.write_text(json.dumps(truth, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return rows_by_format


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


def _users(rng: np.random.Generator, n: int) -> _Users:
    # Users are picked with a skew towards low indices (`_pick_users`), so sorting loyalists towards
    # the front (with noise) makes them the frequent visitors they are.
    drawn = rng.choice(len(USER_TYPES), size=n, p=[0.2, 0.45, 0.35])
    kinds = drawn[np.argsort(np.where(drawn == 0, 0.0, 0.6) + rng.random(n), kind="stable")]
    consent = rng.choice(3, size=n, p=[0.7, 0.15, 0.15])
    first = rng.integers(len(FIRST_NAMES), size=n)
    last = rng.integers(len(LAST_NAMES), size=n)
    area, line = rng.integers(200, 999, size=n), rng.integers(0, 9999, size=n)
    logged_in = rng.random(n) < 0.35
    email_as_id = logged_in & (rng.random(n) < 0.3)
    title_case = rng.random(n) < 0.5
    client, since = rng.integers(10**8, 10**9, size=n), rng.integers(1_600_000_000, 1_700_000_000, size=n)
    emails = [f"{FIRST_NAMES[f]}.{LAST_NAMES[la]}{i}@example.com" for i, (f, la) in enumerate(zip(first, last,
                                                                                                   strict=True))]
    user_ids = np.full(n, None, dtype=object)
    for i in np.flatnonzero(logged_in):
        user_ids[i] = _mixed_case(emails[i], bool(title_case[i])) if email_as_id[i] else f"cust-{100000 + i}"
    return _Users(
        pseudo_id=np.array([f"{c}.{s}" for c, s in zip(client, since, strict=True)], dtype=object),
        kind=kinds, consent=consent, email=emails,
        phone=[f"555{a:03d}{b:04d}" for a, b in zip(area, line, strict=True)],
        user_id=user_ids, country=rng.integers(len(COUNTRIES), size=n), device=rng.integers(len(DEVICES), size=n),
        sessions=np.zeros(n, dtype=np.int64), first_ts=np.full(n, -1, dtype=np.int64),
        first_utm=np.full(n, -1, dtype=np.int64),
    )


def _mixed_case(email: str, title: bool) -> str:
    local, domain = email.split("@")
    return f"{local.title()}@{domain.capitalize()}" if title else email.upper()


# ---------------------------------------------------------------- sessions and events

def _day_events(rng: np.random.Generator, users: _Users, counts: list[int], day: date, tz: ZoneInfo,
                is_promo: bool, txn_counter: int, plant: _Plant) -> tuple[pa.Table, int]:
    """One day's sessions (`counts` per channel) and their events, sorted by time and name, as one
    Arrow table in the export schema. Users' session counts and first touches are updated."""
    channel = np.repeat(np.arange(len(CHANNELS)), counts)
    n = len(channel)
    # A skewed pick: low indices come back often, giving repeat visitors next to one-off ones.
    user = np.minimum((len(users) * rng.beta(0.6, 1.4, size=n)).astype(np.int64), len(users) - 1)
    utm = UTM_FIRST[channel] + rng.integers(0, UTM_COUNT[channel])
    hour = np.clip(rng.normal(14.5, 4.5, size=n), 0, 23.9)
    start = _local_micros(day, hour, tz)
    session_id = start // 1_000_000
    # Sessions count per user in the order drawn; a user's first session ever is a first visit.
    order = np.argsort(user, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    sorted_user = user[order]
    group_start = np.flatnonzero(np.r_[True, sorted_user[1:] != sorted_user[:-1]]) if n else np.array([], int)
    rank[order] = np.arange(n) - np.repeat(group_start, np.diff(np.r_[group_start, n]))
    session_number = users.sessions[user] + rank + 1
    first_visit = (users.first_ts[user] < 0) & (rank == 0)
    users.first_ts[user[first_visit]] = start[first_visit]
    users.first_utm[user[first_visit]] = utm[first_visit]
    users.sessions += np.bincount(user, minlength=len(users))
    kind = users.kind[user]
    pages = PAGES_EXTRA[kind] + rng.geometric(PAGES_P[kind])
    dwell = rng.uniform(DWELL_LOW[kind], DWELL_HIGH[kind])
    conv_mult = np.array([1.8, 2.2 if is_promo else 0.6, 1.0])[kind]
    rate = np.array([CONVERSION_RATE[c] for c in CHANNELS])[channel]
    converts = rng.random(n) < rate * conv_mult
    searches = rng.random(n) < 0.15
    has_user_id = np.array([u is not None for u in users.user_id[user]], dtype=bool)
    email_ids = np.array([u is not None and "@" in u for u in users.user_id[user]], dtype=bool)
    plant.pii_forms["user_id_email"] += int(email_ids.sum())
    plant.emails.update(str(u).lower() for u in users.user_id[user[email_ids]])

    # Events: [first_visit] session_start page_view*pages [view_search_results] user_engagement
    # [add_to_cart begin_checkout purchase].
    per_session = first_visit + 1 + pages + searches + 1 + 3 * converts
    s = np.repeat(np.arange(n), per_session)  # each event's session
    offsets = (np.cumsum(per_session) - per_session).astype(np.int64)
    index = np.arange(len(s)) - offsets[s]  # place in its session
    after = index - first_visit[s]  # place after the first_visit event
    ps, ss = pages[s], searches[s]
    name = np.select(
        [first_visit[s] & (index == 0), after == 0, after <= ps, ss & (after == ps + 1), after == ps + 1 + ss],
        [FIRST_VISIT, SESSION_START, PAGE_VIEW, SEARCH, ENGAGEMENT],
        ADD_TO_CART + (after - ps - 2 - ss))
    step = (rng.uniform(0.2, 1.0, size=len(s)) * dwell[s] * 1_000_000).astype(np.int64)
    step[index == 0] = 0
    walked = np.cumsum(step)
    clock = start[s] + walked - walked[offsets[s]]
    e_user, e_utm = user[s], utm[s]

    page = rng.integers(len(PAGES), size=len(s))
    tagged = np.isin(name, (SESSION_START, PAGE_VIEW)) & (index <= 2)
    location = np.char.add(np.array([HOST + p for p in PAGES], dtype=object)[page].astype(str),
                           np.where(tagged, _UTM_QUERY[e_utm], ""))
    locations: np.ndarray = location.astype(object)
    leak = (name == PAGE_VIEW) & has_user_id[s] & (rng.random(len(s)) < 0.04)
    leak_form = rng.integers(len(LEAK_FORMS), size=len(s))
    for i in np.flatnonzero(leak):
        locations[i] = _leaky_url(str(locations[i]), LEAK_FORMS[leak_form[i]], users, int(e_user[i]), plant)
    term_product = rng.integers(len(PRODUCTS), size=len(s))
    term_email = has_user_id[s] & (rng.random(len(s)) < 0.2)
    search = name == SEARCH
    terms = np.full(len(s), None, dtype=object)
    for i in np.flatnonzero(search):
        if term_email[i]:  # people type their address into the search box
            terms[i] = users.email[e_user[i]]
            plant.pii_forms["search_term_email"] += 1
            plant.emails.add(users.email[e_user[i]].lower())
        else:
            terms[i] = PRODUCTS[term_product[i]][1].lower()
    engagement = np.where(name == ENGAGEMENT,
                          (dwell[s] * ps * 1000 * rng.uniform(0.6, 1.2, size=len(s))).astype(np.int64), 0)
    purchase = name == PURCHASE
    purchases, txn_counter = _purchases(rng, users.kind[e_user[purchase]], is_promo, txn_counter)
    consented = CONSENTS_ARRAY[users.consent[e_user]] != "No"
    table = _event_table(
        name=name, clock=clock, e_user=e_user, e_utm=e_utm, users=users, consented=consented,
        session_id=session_id[s], session_number=session_number[s], locations=locations, terms=terms,
        engagement=engagement, purchase=purchase, purchases=purchases, day=day, tz=tz,
        bundle=rng.integers(1, 2**31, size=len(s)), server_offset=rng.integers(100, 900_000, size=len(s)))
    return table.take(np.lexsort((_NAME_ORDER[name], clock))), txn_counter


CONSENTS_ARRAY = np.array(CONSENTS, dtype=object)
_UTM_QUERY = np.array([f"?utm_source={a}&utm_medium={b}&utm_campaign={c}" for a, b, c in UTM_ROWS])


def _local_micros(day: date, hours: np.ndarray, tz: ZoneInfo) -> np.ndarray:
    """Epoch microseconds of `day` at local `hours` in `tz` (a time skipped by a DST change moves
    forward, a repeated one takes its first occurrence)."""
    local = pd.Timestamp(day) + pd.to_timedelta(hours, unit="h")
    stamped = pd.DatetimeIndex(local).tz_localize(tz, ambiguous=np.ones(len(hours), dtype=bool),
                                                  nonexistent="shift_forward")
    return np.asarray(stamped.as_unit("us").asi8, dtype=np.int64)


def _leaky_url(location: str, form: str, users: _Users, user: int, plant: _Plant) -> str:
    sep = "&" if "?" in location else "?"
    email, p = users.email[user], users.phone[user]
    leaked = {
        "url_email_plain": f"email={email}",
        "url_email_encoded": f"email={email.replace('@', '%40')}",
        "url_email_mixed_case": f"Contact={email.upper()}",
        "url_phone_formatted_encoded": f"phone=%2B1%20({p[:3]})%20{p[3:6]}-{p[6:]}",
        "url_phone_dashes": f"tel={p[:3]}-{p[3:6]}-{p[6:]}",
        "url_phone_dots": f"mobile={p[:3]}.{p[3:6]}.{p[6:]}",
    }[form]
    plant.pii_forms[form] += 1
    if "email" in form:
        plant.emails.add(email.lower())
    else:
        plant.phones.add(p)
    return f"{location}{sep}{leaked}"


@dataclass(frozen=True)
class _Purchase:
    transaction_id: str
    revenue: float
    coupon: str | None
    items: list[dict[str, Any]]


def _purchases(rng: np.random.Generator, kinds: np.ndarray, is_promo: bool, txn_counter: int
               ) -> tuple[list[_Purchase], int]:
    out = []
    for kind in kinds:
        txn_counter += 1
        n_items = 1 + int(rng.poisson(0.7))
        items: list[dict[str, Any]] = []
        coupon = "PROMO20" if is_promo and USER_TYPES[kind] == "Value Shopper" else None
        for product, qty in zip(rng.integers(len(PRODUCTS), size=n_items), 1 + rng.poisson(0.3, size=n_items),
                                strict=True):
            item_id, item_name, price = PRODUCTS[product]
            unit = round(price * AOV_MULT[kind] * (0.8 if is_promo else 1.0), 2)
            revenue = round(unit * int(qty), 2)
            items.append({"item_id": item_id, "item_name": item_name, "price": unit, "quantity": int(qty),
                          "item_revenue": revenue, "price_in_usd": unit, "item_revenue_in_usd": revenue,
                          "coupon": coupon})
        out.append(_Purchase(f"T{txn_counter:08d}", round(sum(i["item_revenue"] for i in items), 2), coupon, items))
    return out, txn_counter


def _event_table(*, name: np.ndarray, clock: np.ndarray, e_user: np.ndarray, e_utm: np.ndarray, users: _Users,
                 consented: np.ndarray, session_id: np.ndarray, session_number: np.ndarray, locations: np.ndarray,
                 terms: np.ndarray, engagement: np.ndarray, purchase: np.ndarray, purchases: list[_Purchase],
                 day: date, tz: ZoneInfo, bundle: np.ndarray, server_offset: np.ndarray) -> pa.Table:
    """The events as columns of the export schema, built from arrays (no row dicts)."""
    n = len(name)
    revenue = np.full(n, np.nan)
    revenue[purchase] = [p.revenue for p in purchases]
    has_revenue = ~np.isnan(revenue)
    first_utm = np.where(users.first_utm[e_user] >= 0, users.first_utm[e_user], e_utm)
    consent = CONSENTS_ARRAY[users.consent[e_user]]
    device, geo = users.device[e_user], users.country[e_user]
    session_started = name == SESSION_START
    null = pa.nulls(n, pa.string())
    columns = {
        "event_date": _event_dates(clock, day, tz),
        "event_timestamp": pa.array(clock, pa.int64()),
        "event_name": pa.array(np.array(EVENT_NAMES, dtype=object)[name], pa.string()),
        "event_params": _params(name, consented, session_id, session_number, locations, terms, engagement,
                                e_utm, purchase, purchases),
        "event_previous_timestamp": pa.nulls(n, pa.int64()),
        "event_value_in_usd": pa.array(revenue, pa.float64(), mask=~has_revenue),
        "event_bundle_sequence_id": pa.array(bundle, pa.int64()),
        "event_server_timestamp_offset": pa.array(server_offset, pa.int64()),
        "user_id": pa.array(np.where(consented, users.user_id[e_user], None), pa.string()),
        "user_pseudo_id": pa.array(np.where(consented, users.pseudo_id[e_user], None), pa.string()),
        "privacy_info": _struct({"analytics_storage": pa.array(consent, pa.string()),
                                 "ads_storage": pa.array(consent, pa.string()),
                                 "uses_transient_token": pa.array(["No"] * n, pa.string())}),
        "user_properties": pa.array([[]] * n, GA4_ARROW_SCHEMA.field("user_properties").type),
        "user_first_touch_timestamp": pa.array(users.first_ts[e_user], pa.int64(), mask=~consented),
        "user_ltv": _struct({"revenue": pa.array(np.zeros(n), pa.float64()),
                             "currency": pa.array(["USD"] * n, pa.string())}, mask=~consented),
        "device": _struct({"category": _pick(DEVICES, 0, device), "operating_system": _pick(DEVICES, 1, device),
                           "language": pa.array(["en-us"] * n, pa.string()),
                           "web_info": _struct({"browser": _pick(DEVICES, 2, device),
                                                "browser_version": pa.array(["120.0"] * n, pa.string()),
                                                "hostname": pa.array([HOST[8:]] * n, pa.string())})}),
        "geo": _struct({"continent": _pick(COUNTRIES, 0, geo), "sub_continent": _pick(COUNTRIES, 1, geo),
                        "country": _pick(COUNTRIES, 2, geo), "region": _pick(COUNTRIES, 3, geo),
                        "city": pa.array(["(not set)"] * n, pa.string()),
                        "metro": pa.array(["(not set)"] * n, pa.string())}),
        "traffic_source": _struct({"name": _pick(UTM_ROWS, 2, first_utm), "medium": _pick(UTM_ROWS, 1, first_utm),
                                   "source": _pick(UTM_ROWS, 0, first_utm)}),
        "stream_id": pa.array([STREAM_ID] * n, pa.string()),
        "platform": pa.array(["WEB"] * n, pa.string()),
        "ecommerce": _ecommerce(purchase, purchases),
        "items": _items(purchase, purchases),
        "collected_traffic_source": _struct({"manual_campaign_name": _pick(UTM_ROWS, 2, e_utm),
                                             "manual_source": _pick(UTM_ROWS, 0, e_utm),
                                             "manual_medium": _pick(UTM_ROWS, 1, e_utm)}, mask=~session_started),
        "is_active_user": pa.array(np.ones(n, dtype=bool), pa.bool_()),
        "session_traffic_source_last_click": _struct({"manual_campaign": _struct({
            "campaign_id": null, "campaign_name": _pick(UTM_ROWS, 2, e_utm), "source": _pick(UTM_ROWS, 0, e_utm),
            "medium": _pick(UTM_ROWS, 1, e_utm), "term": null, "content": null, "source_platform": null,
            "creative_format": null, "marketing_tactic": null})}),
    }
    return pa.Table.from_arrays([columns[f.name].cast(f.type) for f in GA4_ARROW_SCHEMA], schema=GA4_ARROW_SCHEMA)


def _pick(rows: tuple[tuple[str, ...], ...], position: int, index: np.ndarray) -> pa.Array:
    """Field `position` of `rows[index]`, for each index, as strings."""
    return pa.array([row[position] for row in rows], pa.string()).take(pa.array(index))


def _event_dates(clock: np.ndarray, day: date, tz: ZoneInfo) -> pa.Array:
    """Each event's local date (YYYYMMDD): a session that runs past midnight moves to the next day."""
    later = [day + timedelta(days=k) for k in range(4)]
    midnights = [_to_micros(datetime.combine(d, datetime.min.time()), tz) for d in later[1:]]
    keys = pa.array([d.strftime("%Y%m%d") for d in later], pa.string())
    return keys.take(pa.array(np.searchsorted(midnights, clock, side="right")))


def _struct(fields: dict[str, pa.Array], mask: np.ndarray | None = None) -> pa.StructArray:
    return pa.StructArray.from_arrays(list(fields.values()), names=list(fields),
                                      mask=pa.array(mask, pa.bool_()) if mask is not None else None)


def _params(name: np.ndarray, consented: np.ndarray, session_id: np.ndarray, session_number: np.ndarray,
            locations: np.ndarray, terms: np.ndarray, engagement: np.ndarray, utm: np.ndarray,
            purchase: np.ndarray, purchases: list[_Purchase]) -> pa.ListArray:
    """event_params in the export's order, built in long form (event, place, key, value) and sorted."""
    n = len(name)
    every, tagged = np.arange(n), np.flatnonzero(np.isin(name, (SESSION_START, PAGE_VIEW)))
    bought = np.flatnonzero(purchase)
    with_coupon = bought[[p.coupon is not None for p in purchases]] if len(bought) else bought
    utm_rows = np.array(UTM_ROWS, dtype=object)
    pieces: list[tuple[np.ndarray, str, Any]] = [  # (events, key, values: str/int/float array or constant)
        (every, "page_location", locations),
        (every, "page_title", "Shop"),
        (every, "engaged_session_event", 1),
        (np.flatnonzero(consented), "ga_session_id", session_id[consented]),
        (np.flatnonzero(consented), "ga_session_number", session_number[consented]),
        (tagged, "source", np.array([r[0] for r in utm_rows[utm[tagged]]], dtype=object)),
        (tagged, "medium", np.array([r[1] for r in utm_rows[utm[tagged]]], dtype=object)),
        (tagged, "campaign", np.array([r[2] for r in utm_rows[utm[tagged]]], dtype=object)),
        (np.flatnonzero(name == SEARCH), "search_term", terms[name == SEARCH]),
        (np.flatnonzero(name == ENGAGEMENT), "engagement_time_msec", engagement[name == ENGAGEMENT]),
        (bought, "transaction_id", np.array([p.transaction_id for p in purchases], dtype=object)),
        (bought, "currency", "USD"),
        (bought, "value", np.array([p.revenue for p in purchases], dtype=float)),
        (with_coupon, "coupon", np.array([p.coupon for p in purchases if p.coupon], dtype=object)),
    ]
    events, places, keys, strings, ints, has_int, doubles = [], [], [], [], [], [], []
    for rank, (where, key, given) in enumerate(pieces):
        k = len(where)
        values = np.full(k, given, dtype=object if isinstance(given, str) else type(given)) if np.isscalar(given) \
            else np.asarray(given)
        is_str, is_int = values.dtype == object, np.issubdtype(values.dtype, np.integer)
        events.append(where)
        places.append(np.full(k, rank))
        keys.append(np.full(k, key, dtype=object))
        strings.append(values if is_str else np.full(k, None, dtype=object))
        ints.append(values.astype(np.int64) if is_int else np.zeros(k, dtype=np.int64))
        has_int.append(np.full(k, is_int))
        doubles.append(values.astype(np.float64) if not is_str and not is_int else np.full(k, np.nan))
    event = np.concatenate(events)
    order = np.lexsort((np.concatenate(places), event))
    double_values = np.concatenate(doubles)[order]
    value = _struct({
        "string_value": pa.array(np.concatenate(strings)[order], pa.string()),
        "int_value": pa.array(np.concatenate(ints)[order], pa.int64(), mask=~np.concatenate(has_int)[order]),
        "float_value": pa.nulls(len(order), pa.float64()),
        "double_value": pa.array(double_values, pa.float64(), mask=np.isnan(double_values)),
    })
    entries = _struct({"key": pa.array(np.concatenate(keys)[order], pa.string()), "value": value})
    offsets = np.r_[0, np.cumsum(np.bincount(event, minlength=n))].astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), entries)


def _ecommerce(purchase: np.ndarray, purchases: list[_Purchase]) -> pa.StructArray:
    n = len(purchase)
    at = np.flatnonzero(purchase)

    def column(values: list[Any], kind: pa.DataType) -> pa.Array:
        full = np.full(n, None, dtype=object)
        full[at] = values
        return pa.array(full, kind)

    revenue = [p.revenue for p in purchases]
    zero = [0.0] * len(purchases)
    none = [None] * len(purchases)
    return _struct({
        "total_item_quantity": column([sum(i["quantity"] for i in p.items) for p in purchases], pa.int64()),
        "purchase_revenue_in_usd": column(revenue, pa.float64()), "purchase_revenue": column(revenue, pa.float64()),
        "refund_value_in_usd": column(none, pa.float64()), "refund_value": column(none, pa.float64()),
        "shipping_value_in_usd": column(zero, pa.float64()), "shipping_value": column(zero, pa.float64()),
        "tax_value_in_usd": column(zero, pa.float64()), "tax_value": column(zero, pa.float64()),
        "unique_items": column([len(p.items) for p in purchases], pa.int64()),
        "transaction_id": column([p.transaction_id for p in purchases], pa.string()),
    }, mask=~purchase)


def _items(purchase: np.ndarray, purchases: list[_Purchase]) -> pa.ListArray:
    counts = np.zeros(len(purchase), dtype=np.int64)
    counts[purchase] = [len(p.items) for p in purchases]
    kind = GA4_ARROW_SCHEMA.field("items").type
    flat = pa.array([item for p in purchases for item in p.items], kind.value_type)
    return pa.ListArray.from_arrays(pa.array(np.r_[0, np.cumsum(counts)], pa.int32()), flat)


def _to_micros(local: datetime, tz: ZoneInfo) -> int:
    return int(local.replace(tzinfo=tz).timestamp() * 1_000_000)


# ---------------------------------------------------------------- defects

def _malformed_days(rng: np.random.Generator, spec: SimulationSpec) -> dict[int, list[str]]:
    """Which day gets which malformed rows: kinds in turn, days at random."""
    count = spec.malformed_rows if spec.malformed_rows is not None else max(6, spec.days // 15)
    days: dict[int, list[str]] = {}
    for n, day in enumerate(rng.integers(spec.days, size=count)):
        days.setdefault(int(day), []).append(MALFORMED_KINDS[n % len(MALFORMED_KINDS)])
    return days


def _plant_defects(rng: np.random.Generator, rows: pa.Table, malformed: list[str], plant: _Plant
                   ) -> tuple[pa.Table, np.ndarray]:
    """Corrupt a day's planned malformed rows, then repeat some rows verbatim (the export's own
    duplicates) and re-send some purchases (a reloaded thank-you page). Returns the rows and each
    row's malformed kind ('' for none)."""
    n = rows.num_rows
    kinds = np.full(n, "", dtype=object)
    if malformed and n:
        names = rows.column("event_name").to_numpy(zero_copy_only=False)
        purchases = np.flatnonzero(names == "purchase")
        taken: set[int] = set()
        for kind in malformed[:n]:
            pool = purchases if kind == "negative_revenue" and len(purchases) else np.arange(n)
            free = [int(i) for i in pool if int(i) not in taken] or [int(i) for i in range(n) if i not in taken]
            index = free[int(rng.integers(len(free)))]
            taken.add(index)
            kinds[index] = kind
            plant.malformed.append(kind)
            if kind not in NDJSON_ONLY_KINDS:  # the others are written as text (see _write_day)
                fixed = pa.Table.from_pylist([_corrupt(rows.slice(index, 1).to_pylist()[0], kind)],
                                             schema=GA4_ARROW_SCHEMA)
                rows = pa.concat_tables([rows.slice(0, index), fixed, rows.slice(index + 1)])
    consent = pc.struct_field(rows.column("privacy_info"), "analytics_storage").to_numpy(zero_copy_only=False)
    is_purchase = rows.column("event_name").to_numpy(zero_copy_only=False) == "purchase"
    clean = kinds == ""
    exact = clean & (rng.random(n) < 0.004)
    resend = clean & is_purchase & (rng.random(n) < 0.04)
    delay, new_bundle = rng.integers(2, 90, size=n) * 1_000_000, rng.integers(1, 2**31, size=n)
    for mask, counter in ((exact, plant.exact_duplicates), (resend, plant.transaction_duplicates)):
        counter.update("null" if c is None else str(c) for c in consent[mask])
    # Each copy follows its row: the row, its verbatim copy, its re-sent purchase.
    copies = 1 + exact.astype(np.int64) + resend
    source = np.repeat(np.arange(n), copies)
    place = np.arange(len(source)) - np.repeat(np.cumsum(copies) - copies, copies)
    resent = resend[source] & (place == copies[source] - 1)
    out = rows.take(source)
    timestamps = out.column("event_timestamp").to_numpy() + np.where(resent, delay[source], 0)
    bundles = np.where(resent, new_bundle[source], out.column("event_bundle_sequence_id").to_numpy())
    out = out.set_column(out.schema.get_field_index("event_timestamp"), "event_timestamp", pa.array(timestamps))
    out = out.set_column(out.schema.get_field_index("event_bundle_sequence_id"), "event_bundle_sequence_id",
                         pa.array(bundles))
    return out, kinds[source]


def _corrupt(row: dict[str, Any], kind: str) -> dict[str, Any]:
    row = json.loads(json.dumps(row))
    if kind == "timestamp_milliseconds":
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


# ---------------------------------------------------------------- writers

def _write_day(fmt: str, stem: Path, rows: pa.Table, kinds: np.ndarray, writer: duckdb.DuckDBPyConnection) -> int:
    """One export file; returns its rows. NDJSON has BigQuery's INT64-as-string and the text-only
    defects; Parquet leaves out the rows those defects hit (a typed column cannot hold them)."""
    text_only = np.isin(kinds, list(NDJSON_ONLY_KINDS))
    if fmt == "parquet":
        kept = rows.filter(pa.array(~text_only))
        pq.write_table(kept, stem.with_suffix(".parquet"), compression="zstd")
        return kept.num_rows
    gz = fmt == "ndjson.gz"
    path = stem.with_name(stem.name + (".json.gz" if gz else ".json"))
    writer.register("_day", rows.cast(_JSON_SCHEMA))
    writer.execute(f"COPY _day TO '{path}' (FORMAT json{', COMPRESSION gzip' if gz else ''})")
    writer.unregister("_day")
    if text_only.any():
        with gzip.open(path, "rt", encoding="utf-8") if gz else path.open(encoding="utf-8") as handle:
            lines = handle.read().split("\n")
        for index in np.flatnonzero(text_only):
            line = lines[index]
            if kinds[index] == "timestamp_not_integer":
                lines[index] = re.sub(r'"event_timestamp":"\d+"', '"event_timestamp":"2024-05-01T10:00:00Z"', line,
                                      count=1)
            else:  # truncated_json
                lines[index] = line[: len(line) // 2]
        with gzip.open(path, "wt", encoding="utf-8") if gz else path.open("w", encoding="utf-8") as handle:
            handle.write("\n".join(lines))
    return rows.num_rows


def _json_type(kind: pa.DataType) -> pa.DataType:
    """BigQuery's JSON export writes INT64 as strings."""
    if pa.types.is_int64(kind):
        return pa.string()
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, _json_type(f.type)) for f in kind])
    if pa.types.is_list(kind):
        return pa.list_(_json_type(kind.value_type))
    return kind


_JSON_SCHEMA = pa.schema([pa.field(f.name, _json_type(f.type)) for f in GA4_ARROW_SCHEMA])


def _write_spend(path: Path, dates: list[date], spend: dict[str, np.ndarray]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["date", "channel", "spend"])
        for i, day in enumerate(dates):
            for channel in PAID:
                writer.writerow([day.isoformat(), channel, f"{spend[channel][i]:.2f}"])


def _truth(
    spec: SimulationSpec, dates: list[date], demand: np.ndarray, promo_days: set[date],
    channels: list[ChannelTruth], users: _Users, plant: _Plant, rows_by_format: dict[str, int],
    rows_per_day: dict[str, int],
) -> dict[str, Any]:
    kinds = Counter(plant.malformed)
    visited = users.sessions > 0
    return {
        "spec": {"days": spec.days, "users": spec.users, "seed": spec.seed, "end_date": spec.end_date.isoformat(),
                 "timezone": spec.timezone},
        "channels": {c.channel: c.to_json() for c in channels},
        "organic_conversion_rate": CONVERSION_RATE["Organic"],
        "demand": {"dates": [d.isoformat() for d in dates], "multiplier": [round(float(x), 6) for x in demand],
                   "promo_days": sorted(d.isoformat() for d in promo_days)},
        "partial_last_day": spec.end_date.isoformat(),
        "rows": rows_by_format,
        "rows_per_day": dict(sorted(rows_per_day.items())),
        "planted": {
            "malformed": dict(sorted(kinds.items())),
            "malformed_by_format": {
                fmt: sum(n for k, n in kinds.items() if fmt != "parquet" or k not in NDJSON_ONLY_KINDS)
                for fmt in spec.formats
            },
            "exact_duplicates": dict(sorted(plant.exact_duplicates.items())),
            "transaction_duplicates": dict(sorted(plant.transaction_duplicates.items())),
            "pii_forms": dict(sorted(plant.pii_forms.items())),
        },
        # Raw PII planted in the export, so tests can prove none of it gets past the guard.
        "pii_needles": {"emails": sorted(plant.emails), "phones": sorted(plant.phones),
                        "user_pseudo_ids": sorted(str(u) for u in users.pseudo_id[visited])},
        "user_types": dict(sorted(Counter(USER_TYPES[k] for k in users.kind[visited]).items())),
    }


def simulate_once(spec: SimulationSpec, out_dir: Path, *, progress: Callable[[str], None] | None = None
                  ) -> tuple[SimulationResult, bool]:
    """`simulate`, unless `out_dir` already holds a finished simulation of the same spec: then that
    one, unchanged (the same arguments give the same files). Returns the result and whether it was
    reused. `spec.json` is written last, so an interrupted simulation is never reused."""
    stamp = out_dir / "spec.json"
    wanted = _spec_text(spec)
    truth_file = out_dir / "truth.json"
    if stamp.exists() and stamp.read_text(encoding="utf-8") == wanted and truth_file.exists():
        rows = json.loads(truth_file.read_text(encoding="utf-8"))["rows"]
        dirs = {fmt: out_dir / _folder_name(fmt) for fmt in spec.formats}
        if all(d.is_dir() for d in dirs.values()):
            return SimulationResult(out_dir, dirs, out_dir / "spend.csv", truth_file, dict(rows)), True
    stamp.unlink(missing_ok=True)
    result = simulate(spec, out_dir, progress=progress)
    stamp.write_text(wanted, encoding="utf-8")
    return result, False


def simulate_into(spec: SimulationSpec, folder: Path, *, progress: Callable[[str], None] | None = None
                  ) -> tuple[SimulationResult, bool]:
    """`simulate_once` in a folder of the simulation's own inside `folder`, named for its end date,
    seed and a digest of the whole spec. Once it is whole, everything else in `folder` (earlier
    simulations, what a killed one left) is removed: `folder` holds the simulations of one caller
    (`flashcast demo`). Another spec is thus another export folder, so a run on it starts the
    warehouse's history afresh instead of mixing two simulated worlds (or one world with the same
    days of another), as it did when every simulation was written to the same folder."""
    digest = hashlib.sha256(_spec_text(spec).encode()).hexdigest()[:10]
    own = folder / f"{spec.end_date:%Y%m%d}-seed{spec.seed}-{digest}"
    result = simulate_once(spec, own, progress=progress)
    for other in folder.iterdir():
        if other == own:
            continue
        if other.is_dir() and not other.is_symlink():
            shutil.rmtree(other)
        else:
            other.unlink()
    return result


def _spec_text(spec: SimulationSpec) -> str:
    return json.dumps(asdict(spec), sort_keys=True, default=str)
