"""Stage 2: the governance guard, as set-based DuckDB SQL over the staged export.

Every staged row ends in exactly one outcome table:

    staged --invalid--------------------------------> quarantine   (reason names file, line, field)
           --consent denied (policy)----------------> consent_drops
           --consented but no user_pseudo_id--------> quarantine
           --same fingerprint as an earlier row-----> duplicates (kind 'exact')
           --purchase, transaction_id seen before---> duplicates (kind 'transaction')
           --otherwise------------------------------> guarded_events (hashed, redacted, stamped)

Identifiers are replaced by HMAC-SHA256 built from `sha256` over BLOBs (RFC 2104), which matches
Python's `hmac` and is portable to Spark. Free text (URLs, string params, campaign tags) is
percent-decoded and then has emails and phone numbers replaced. Quarantined rows keep only an
HMAC of the raw line and of the user, never the line itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta

import duckdb
import numpy as np

from flashcast.config import PrivacyPolicy, Settings
from flashcast.engine import DuckEngine, Engine, engine_of, is_remote, land
from flashcast.errors import ReconciliationError
from flashcast.history import OUTCOME_TABLES, join_reused
from flashcast.keys import PiiKey
from flashcast.privacy import EMAIL_PATTERN, EMAIL_TOKEN, PHONE_PATTERN, PHONE_TOKEN, PII_QUERY_KEYS, REDACTED_TOKEN
from flashcast.records import DayOutcome, GuardReport, RunContext, StagedExport, Table
from flashcast.sql import insert_rows, literal


def run(con: duckdb.DuckDBPyConnection, *, ingest: StagedExport, settings: Settings, context: RunContext,
        key: PiiKey, engine: Engine) -> GuardReport:
    """The guard stage: split the staged rows into the outcome tables and count them per day."""
    install_privacy_functions(con, key, settings.policy, engine=engine)
    prior = f"_stored_{Table.GUARDED_EVENTS}"
    has_prior = _has_column(con, prior, "transaction_key")
    report = guard_export(con, ingest, policy=settings.policy, run=context, prior_events=prior if has_prior else None,
                          stored_prefix="_stored_", engine=engine)
    read = {str(r[0]) for r in con.execute(f"SELECT event_date FROM {_STAGED_DAYS} WHERE event_date IS NOT NULL")
            .fetchall()}
    outages = outage_days(report.days)
    report = replace(report, alerts=day_alerts(report.days, read, outages),
                     outage_days=tuple(day.isoformat() for day, _, _ in outages))
    _daily_outcomes_table(con, report, context)
    return report


# A day read this run is named when its counts break from its usual (the days before it in the
# history): a tag that stopped firing (or a day without an export file), a consent banner that
# denies everyone, an export or tag change whose rows are quarantined. Its KPIs would otherwise read
# as a quiet day, or a cautious audience.
OUTAGE_SHARE = 0.2  # rows under this share of the same weekday's median over the 8 weeks before
MIN_USUAL_ROWS = 100  # ... when that median is at least this many rows (fewer: too noisy to tell)
CONSENT_JUMP = 0.3  # consent drops this many points above the median share of the 28 days before, and
CONSENT_ALERT_SHARE = 0.5  # above this share of the day's rows
QUARANTINE_SHARE = 0.05  # quarantined rows above this share and
QUARANTINE_MULTIPLE = 10.0  # this multiple of the median share of the 28 days before
MIN_USUAL_DAYS = 14  # days before (4 same weekdays for the rows) needed to know what is usual
# A small property's shares swing from day to day (consent is a visitor's, and a day may hold a
# handful of them): a share is named only when it also stands NOISE_SPREADS robust standard
# deviations (1.4826 x the median absolute deviation) above the days before, by at least
# MIN_EXCESS_ROWS rows more than usual.
NOISE_SPREADS = 4.0
MIN_EXCESS_ROWS = 20
MAX_ALERTS_EACH = 3


def outage_days(days: Sequence[DayOutcome]) -> tuple[tuple[date, int, float], ...]:
    """(day, rows, usual rows) for every day of the history whose rows fall under OUTAGE_SHARE of the
    median of the same weekday over the 8 weeks before (4 of them with rows at least, a median of
    MIN_USUAL_ROWS or more); a day without any row (no export file, or an empty one) too. The newest
    day is left out: an intraday export may still be filling it."""
    rows = {date.fromisoformat(d.event_date): d.input_rows for d in days if d.event_date != "unknown"}
    counted = sorted(day for day, n in rows.items() if n)
    out = []
    for offset in range((counted[-1] - counted[0]).days if counted else 0):
        day = counted[0] + timedelta(days=offset)
        weekdays = [n for k in range(1, 9) if (n := rows.get(day - timedelta(weeks=k), 0))]
        usual = float(np.median(weekdays)) if len(weekdays) >= 4 else 0.0
        if usual >= MIN_USUAL_ROWS and rows.get(day, 0) < OUTAGE_SHARE * usual:
            out.append((day, rows.get(day, 0), usual))
    return tuple(out)


def day_alerts(days: Sequence[DayOutcome], read: set[str], outages: Sequence[tuple[date, int, float]]
               ) -> tuple[str, ...]:
    """Sentences naming the days this run read (`read`, and any day without rows among them) whose
    row count (`outages`, from `outage_days(days)`), consent-drop share or quarantine share breaks
    from the days before them (the newest day is not judged)."""
    dated = sorted((date.fromisoformat(d.event_date), d) for d in days if d.event_date != "unknown" and d.input_rows)
    by_day = dict(dated)
    seen = sorted(date.fromisoformat(r) for r in read)
    low: list[str] = []
    consent: list[str] = []
    quarantine: list[str] = []
    for day, n, usual in outages:
        if seen and seen[0] <= day <= seen[-1]:
            found = (f"{n:,} rows, {n / usual:.0%} of a usual {day:%A} ({usual:,.0f}): did tracking stop?" if n else
                     f"no rows (a usual {day:%A} has {usual:,.0f}): no export file, or did tracking stop?")
            low.append(f"{day}: {found} The forecast reads it as a missing day; its KPIs show what was recorded")
    for day, d in dated[:-1]:
        before = [by_day[b] for k in range(1, 29) if (b := day - timedelta(days=k)) in by_day]
        if day.isoformat() not in read or len(before) < MIN_USUAL_DAYS:
            continue
        share, base = d.dropped_share, _usual_share([b.dropped_share for b in before], d.input_rows)
        if share > CONSENT_ALERT_SHARE and share > base.median + CONSENT_JUMP and base.exceeded_by(share):
            consent.append(f"{day}: {share:.0%} of its rows dropped for consent, against {base.median:.0%} usually: "
                           "check the consent banner and the tags' consent mode")
        held = d.quarantined / d.input_rows
        held_base = _usual_share([b.quarantined / b.input_rows for b in before], d.input_rows)
        if held > QUARANTINE_SHARE and held > QUARANTINE_MULTIPLE * held_base.median and held_base.exceeded_by(held):
            quarantine.append(f"{day}: {held:.1%} of its rows quarantined, against {held_base.median:.1%} usually: "
                              "see quarantine.csv (a tag or export change?)")
    out: list[str] = []
    for found_days in (low, consent, quarantine):
        out += found_days[:MAX_ALERTS_EACH]
        if len(found_days) > MAX_ALERTS_EACH:
            out.append(f"... and {len(found_days) - MAX_ALERTS_EACH} more day(s) like these: see reconciliation.csv")
    return tuple(out)


@dataclass(frozen=True)
class _UsualShare:
    """A share's median and robust spread over the days before a day of `rows` rows."""

    median: float
    spread: float
    rows: int

    def exceeded_by(self, share: float) -> bool:
        """Whether `share` stands out of the usual day-to-day noise, by enough rows to matter."""
        excess = share - self.median
        return excess > NOISE_SPREADS * self.spread and excess * self.rows >= MIN_EXCESS_ROWS


def _usual_share(shares: Sequence[float], rows: int) -> _UsualShare:
    median = float(np.median(shares))
    return _UsualShare(median, 1.4826 * float(np.median(np.abs(np.asarray(shares) - median))), rows)


def _has_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_columns() WHERE table_name = ? AND column_name = ?",
                            [table, column]).fetchall()[0][0])


def install_privacy_functions(con: duckdb.DuckDBPyConnection, key: PiiKey, policy: PrivacyPolicy,
                              engine: Engine | None = None) -> None:
    """Put the key's HMAC pads in table `_hmac_pads` (read by `hmac_sql`; never written into SQL
    text, which engines log) and create `hmac_hex(text)` and `redact_text(text)` macros in `con`
    for ad-hoc DuckDB queries."""
    pads = [key.pads()]
    DuckEngine(con).put("_hmac_pads", {"ipad": "BLOB", "opad": "BLOB"}, pads)
    if engine is not None and is_remote(con, engine):
        engine.put("_hmac_pads", {"ipad": "BLOB", "opad": "BLOB"}, pads)
    con.execute(f"CREATE OR REPLACE TEMP MACRO hmac_hex(msg) AS {hmac_sql('msg')}")
    con.execute(f"CREATE OR REPLACE TEMP MACRO redact_text(s) AS {redact_sql('s', policy)}")


def hmac_sql(msg: str) -> str:
    """HMAC-SHA256 (RFC 2104) of text `msg` as lowercase hex, from `sha256` over BLOBs (matches
    Python's `hmac`, and transpiles to Spark's `sha2`/`unhex`)."""
    return f"""(CASE WHEN ({msg}) IS NULL THEN NULL ELSE
      sha256((SELECT opad FROM _hmac_pads) || unhex(sha256((SELECT ipad FROM _hmac_pads) || encode({msg}))))
    END)"""


def redact_sql(s: str, policy: PrivacyPolicy) -> str:
    """Free text `s` percent-decoded, with emails, phone numbers and personal query values replaced."""
    text = f"coalesce(try(url_decode(url_decode(replace({s}, '+', ' ')))), {s})"
    if policy.redact_emails:
        text = f"regexp_replace({text}, '{EMAIL_PATTERN}', '{EMAIL_TOKEN}', 'g')"
    if policy.redact_phones:
        text = f"regexp_replace({text}, '{PHONE_PATTERN}', '{PHONE_TOKEN}', 'g')"
    if policy.redact_personal_query_values:
        # name=, address=, zip=...: values not already redacted above
        keys = "|".join(PII_QUERY_KEYS)
        text = f"regexp_replace({text}, '(?i)([?&](?:{keys})=)[^&#\\[][^&#]*', '\\1{REDACTED_TOKEN}', 'g')"
    # Text without '@', '%', '+', '=' or a digit can hold no email, phone number, encoding or query
    # value: it skips the decode-and-replace chain (most param values; measured 2x faster).
    return f"(CASE WHEN ({s}) IS NULL THEN NULL WHEN NOT regexp_matches({s}, '[@%+=0-9]') THEN {s} ELSE {text} END)"


def guard_export(
    con: duckdb.DuckDBPyConnection, staged: StagedExport, *, policy: PrivacyPolicy, run: RunContext,
    prior_events: str | None = None, stored_prefix: str | None = None, engine: Engine | None = None,
) -> GuardReport:
    """Split the staged rows into the four outcome tables and reconcile the counts per day.

    `prior_events`: guarded events of earlier runs; a purchase whose transaction (by its keyed
    `transaction_key`, never the raw id) is among them is a duplicate. `stored_prefix`: the reused
    stored rows (`<prefix><table>`, see `flashcast.history`) join the outcome tables (as views)
    before the days are counted, so the run's tables and reconciliation cover the whole history.
    `engine`: where the SQL runs (default: `con`); the outcome tables are then landed in `con`."""
    sql = engine_of(con, engine)
    purchases = f"""SELECT source_file, source_line, transaction_key, event_timestamp FROM {prior_events}
        WHERE event_name = 'purchase' AND transaction_key IS NOT NULL"""
    if prior_events and not is_remote(con, sql):
        sql.create(_PRIOR, purchases)
    elif prior_events:  # only the stored purchases' keys travel to the engine (a small table)
        sql.put(_PRIOR, {"source_file": "VARCHAR", "source_line": "BIGINT", "transaction_key": "VARCHAR",
                         "event_timestamp": "BIGINT"}, con.execute(purchases).fetchall())
    for table, select in guard_steps(staged.table, policy=policy, run=run, prior=bool(prior_events)):
        # the routed rows are the staged rows plus a label: a view where the engine reads it in place
        (sql.view if table == "_routed" else sql.create)(table, select)
    sql.create(_STAGED_DAYS, f"SELECT event_date, count(*) AS n FROM {staged.table} GROUP BY event_date")
    land(con, sql, [*OUTCOME_TABLES, _STAGED_DAYS])
    stored = stored_prefix is not None and _has_column(con, f"{stored_prefix}{Table.GUARDED_EVENTS}", "source_file")
    if stored:
        join_reused(con, OUTCOME_TABLES)
    report = GuardReport(
        days=_day_outcomes(con, stored_prefix if stored else None), key_id=run.key_id,
        consent_null_means=policy.consent_null_means,
    )
    _check_reconciliation(report)
    return report


def guard_steps(src: str, *, policy: PrivacyPolicy, run: RunContext, prior: bool = False
                ) -> list[tuple[str, str]]:
    """The guard as (table, SELECT) steps over the staged table `src`, in order: the one definition
    every engine runs. `prior`: table `_prior_purchases` holds the stored purchases' keys."""
    consent_col = policy.consent_field
    null_granted = "true" if policy.consent_null_means == "granted" else "false"
    stamp = (f"{literal(run.lineage_id)}::VARCHAR AS lineage_id, "
             f"{literal(run.processed_at.isoformat())}::TIMESTAMPTZ AS processed_at")
    steps = [("_routed", f"""SELECT *,
          CASE
            WHEN NOT valid THEN 'invalid'
            WHEN {consent_col} = 'No' OR ({consent_col} IS NULL AND NOT {null_granted}) THEN 'denied'
            WHEN user_pseudo_id IS NULL THEN 'no_identity'
            ELSE 'candidate'
          END AS route
        FROM {src}""")]
    steps.append((Table.QUARANTINE, f"""SELECT {stamp}, event_date, source_file, source_line,
          split_part(reasons[1], ':', 1) AS field,
          source_file || ' line ' || source_line || ': ' || array_to_string(reasons, '; ') AS reason,
          {hmac_sql("coalesce(raw_line, '')")} AS row_hmac,
          {hmac_sql("user_pseudo_id")} AS user_key
        FROM (
          SELECT *, CASE WHEN route = 'invalid' THEN problems
                         ELSE ['user_pseudo_id: missing on a row with consent'] END AS reasons
          FROM _routed WHERE route IN ('invalid', 'no_identity')
        )"""))
    steps.append((Table.CONSENT_DROPS, f"""SELECT {stamp}, event_date, source_file, source_line,
          coalesce({consent_col}, 'null') AS consent_value
        FROM _routed WHERE route = 'denied'"""))
    # Dedup ranks are computed on a narrow table (keys only) and joined back: window sorts and
    # joins over the full rows (raw line, params) cost several times more.
    steps.append(("_candidates", f"""SELECT source_file, source_line, event_date, event_name, event_timestamp,
          transaction_key, fingerprint,
          row_number() OVER w AS fp_rank,
          first_value(source_file) OVER w AS fp_kept_file, first_value(source_line) OVER w AS fp_kept_line
        FROM (
          SELECT source_file, source_line, event_date, event_name, event_timestamp,
            CASE WHEN event_name = 'purchase' THEN {hmac_sql("transaction_id")} END AS transaction_key,
            -- within the run only, to rank copies: the stored fingerprint of a duplicate is an HMAC
            -- params in any order are the same: their hashes are summed (sorting them cost 0.15 s
            -- more per 1M events, sorting the structs 2x that)
            hash(event_date, stream_id, user_pseudo_id, ga_session_id, event_name, event_timestamp,
                 list_sum(list_transform(params, lambda p: hash(p)))) AS fingerprint
          FROM _routed WHERE route = 'candidate'
        )
        WINDOW w AS (PARTITION BY fingerprint ORDER BY source_file, source_line)"""))
    # A transaction already stored by an earlier run wins over this run's copies (cross-day dedup).
    stored = (f"UNION ALL SELECT source_file, source_line, transaction_key, event_timestamp, true FROM {_PRIOR}"
              if prior else "")
    steps.append(("_ranked", f"""SELECT c.*, t.txn_rank, t.txn_kept_file, t.txn_kept_line
        FROM _candidates c LEFT JOIN (
          SELECT * FROM (
            SELECT source_file, source_line, stored, row_number() OVER w AS txn_rank,
              first_value(source_file) OVER w AS txn_kept_file, first_value(source_line) OVER w AS txn_kept_line
            FROM (
              SELECT source_file, source_line, transaction_key, event_timestamp, false AS stored
              FROM _candidates WHERE fp_rank = 1 AND event_name = 'purchase' AND transaction_key IS NOT NULL
              {stored}
            )
            WINDOW w AS (PARTITION BY transaction_key ORDER BY stored DESC, event_timestamp, source_file, source_line)
          ) WHERE NOT stored
        ) t USING (source_file, source_line)"""))
    steps.append((Table.DUPLICATES, f"""SELECT {stamp}, d.event_date, source_file, source_line,
          CASE WHEN fp_rank > 1 THEN 'exact' ELSE 'transaction' END AS kind,
          CASE WHEN fp_rank > 1 THEN fp_kept_file ELSE txn_kept_file END AS kept_file,
          CASE WHEN fp_rank > 1 THEN fp_kept_line ELSE txn_kept_line END AS kept_line,
          {hmac_sql(_FINGERPRINT_TEXT)} AS fingerprint
        FROM _ranked d JOIN _routed r USING (source_file, source_line) WHERE fp_rank > 1 OR txn_rank > 1"""))
    # Each distinct user id is keyed once and joined back (HMAC per row costs 3x more: an export
    # repeats a user's id on every event of every session).
    keyed_user_id = "user_id" in policy.identifier_fields
    steps.append(("_id_keys", f"""SELECT v, {hmac_sql("v")} AS k FROM (
          SELECT user_pseudo_id AS v FROM _routed WHERE route = 'candidate'
          {"UNION SELECT user_id FROM _routed WHERE route = 'candidate'" if keyed_user_id else ""}
        ) WHERE v IS NOT NULL"""))

    # So is each session, joined back by its parts (joined on the text the key is made of, built per
    # row, it cost as much as keying every row): the step took 1.50 s against 1.82 s on a million
    # Parquet events; at 9M events under memory_limit 1GB the peak memory did not change.
    steps.append(("_session_keys", f"""SELECT u, s, d, {hmac_sql(_SESSION_TEXT)} AS k FROM (
          SELECT DISTINCT user_pseudo_id AS u, ga_session_id AS s, {_SESSION_DAY.format(r="")} AS d
          FROM _routed WHERE route = 'candidate')"""))

    def redact(column: str) -> str:
        return redact_sql(column, policy)

    # Page URLs (a page's and its referrer's) are most of the text to redact, and a site has far fewer
    # pages than events: each distinct URL is redacted once and joined back, to the columns and to the
    # same URL in the params.
    steps.append(("_page_urls", f"""SELECT v, {redact("v")} AS r FROM (
          SELECT page_location AS v FROM _routed WHERE route = 'candidate'
          UNION SELECT page_referrer FROM _routed WHERE route = 'candidate') WHERE v IS NOT NULL"""))

    # GA4 fills device category, country, platform and stream id from a few values, which an export
    # does not promise hold no personal text: each distinct combination is redacted once. GA4's
    # stream id is digits, which the phone pattern would take for a number; anything else is text.
    steps.append(("_labels", f"""SELECT dc, co, pf, st, {redact("dc")} AS rd, {redact("co")} AS rc,
          {redact("pf")} AS rp, CASE WHEN regexp_matches(st, '^[0-9]+$') THEN st ELSE {redact("st")} END AS rs FROM (
          SELECT DISTINCT device_category AS dc, country AS co, platform AS pf, stream_id AS st
          FROM _routed WHERE route = 'candidate')"""))

    steps.append((Table.GUARDED_EVENTS, f"""SELECT {stamp}, {literal(run.key_id)} AS key_id,
          event_date, event_timestamp, make_timestamp(event_timestamp) AS event_ts_utc, event_name,
          uk.k AS user_key, {"ik.k" if keyed_user_id else "NULL::VARCHAR"} AS user_id_key,
          sk.k AS session_key,
          ga_session_number, engagement_time_msec,
          pl.r AS page_location,
          pr.r AS page_referrer,
          {redact("search_term")} AS search_term,
          list_transform(params, lambda p: {{'key': p.key, 'string_value': CASE
            WHEN p.string_value = r.page_location THEN pl.r WHEN p.string_value = r.page_referrer THEN pr.r
            ELSE {redact("p.string_value")} END,
                                            'int_value': p.int_value, 'double_value': p.double_value}}) AS params,
          CASE WHEN event_name = 'purchase' THEN coalesce(revenue, 0) ELSE revenue END AS revenue,
          CASE WHEN event_name = 'purchase' THEN {hmac_sql("transaction_id")} END AS transaction_key,
          {redact("session_source")} AS session_source, {redact("session_medium")} AS session_medium,
          {redact("session_campaign")} AS session_campaign,
          {redact("first_touch_source")} AS first_touch_source,
          {redact("first_touch_medium")} AS first_touch_medium,
          {redact("first_touch_campaign")} AS first_touch_campaign,
          lb.rd AS device_category, lb.rc AS country, lb.rp AS platform, lb.rs AS stream_id,
          {consent_col} AS consent_value, ads_storage AS ads_consent, intraday, source_file, source_line
        FROM _routed r
        LEFT JOIN _id_keys uk ON uk.v = r.user_pseudo_id
        LEFT JOIN _page_urls pl ON pl.v = r.page_location
        LEFT JOIN _page_urls pr ON pr.v = r.page_referrer
        LEFT JOIN _labels lb ON lb.dc IS NOT DISTINCT FROM r.device_category AND lb.co IS NOT DISTINCT FROM r.country
          AND lb.pf IS NOT DISTINCT FROM r.platform AND lb.st IS NOT DISTINCT FROM r.stream_id
        LEFT JOIN _session_keys sk ON sk.u = r.user_pseudo_id AND sk.s IS NOT DISTINCT FROM r.ga_session_id
          AND sk.d IS NOT DISTINCT FROM {_SESSION_DAY.format(r="r.")}
        {"LEFT JOIN _id_keys ik ON ik.v = r.user_id" if keyed_user_id else ""}
        -- the candidates less this run's duplicates (few): an anti-join, not a join of every row
        WHERE r.route = 'candidate' AND NOT EXISTS (
          SELECT 1 FROM {Table.DUPLICATES} d WHERE d.source_file = r.source_file AND d.source_line = r.source_line)"""))
    return steps


_PRIOR = "_prior_purchases"
_STAGED_DAYS = "_staged_days"  # the staged rows per day, counted where they are


# What a duplicate's stored fingerprint is the HMAC of: the fields that make two rows the same event,
# params in a text both engines write alike (not to_json, whose number and NULL spelling differ).
_FINGERPRINT_TEXT = """concat_ws('|', r.event_date, coalesce(r.stream_id, ''), r.user_pseudo_id,
    coalesce(r.ga_session_id::VARCHAR, ''), r.event_name, r.event_timestamp,
    coalesce(array_to_string(list_transform(list_sort(r.params), lambda p: concat_ws(':', p.key,
      coalesce(p.string_value, ''), coalesce(p.int_value::VARCHAR, ''))), ','), ''))"""


# The text a session is keyed by: its user and GA4 session id (or the day, when GA4 gave none).
_SESSION_TEXT = "u || ':' || coalesce(s::VARCHAR, 'day:' || d::VARCHAR)"
_SESSION_DAY = "CASE WHEN {r}ga_session_id IS NULL THEN {r}event_date END"


def _daily_outcomes_table(con: duckdb.DuckDBPyConnection, report: GuardReport, run: RunContext) -> None:
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {Table.DAILY_OUTCOMES} (lineage_id VARCHAR, event_date VARCHAR,
        input_rows BIGINT, accepted BIGINT, dropped_consent BIGINT, quarantined BIGINT, duplicate BIGINT,
        dropped_share DOUBLE)"""
    )
    rows = [(run.lineage_id, d.event_date, d.input_rows, d.accepted, d.dropped_consent, d.quarantined,
             d.duplicate, round(d.dropped_share, 6)) for d in report.days]
    if rows:
        insert_rows(con, Table.DAILY_OUTCOMES, rows)


def _day_outcomes(con: duckdb.DuckDBPyConnection, stored_prefix: str | None = None) -> tuple[DayOutcome, ...]:
    """Count each outcome per day, each from its own table, next to the input count (the staged rows,
    plus the reused stored rows, each of which had its outcome when it was read)."""
    sources: list[tuple[str, str]] = [
        ("accepted", Table.GUARDED_EVENTS), ("dropped_consent", Table.CONSENT_DROPS),
        ("quarantined", Table.QUARANTINE), ("duplicate", Table.DUPLICATES)]
    if stored_prefix is not None:
        sources += [("input_rows", f"{stored_prefix}{t}") for t in OUTCOME_TABLES]
    union = " UNION ALL ".join([f"SELECT event_date, 'input_rows' AS k, n FROM {_STAGED_DAYS}",
                                *(f"SELECT event_date, '{k}', count(*) AS n FROM {t} GROUP BY event_date"
                                  for k, t in sources)])
    # Every file's day is listed, an empty file's day with zeros, so no day vanishes silently.
    union += f" UNION ALL SELECT DISTINCT file_date, 'input_rows', 0 FROM {Table.FILES} WHERE file_date IS NOT NULL"
    kinds = ("input_rows", "accepted", "dropped_consent", "quarantined", "duplicate")
    columns = ", ".join(f"coalesce(sum(n) FILTER (WHERE k = '{k}'), 0)::BIGINT" for k in kinds)
    rows = con.execute(
        f"SELECT coalesce(event_date::VARCHAR, 'unknown'), {columns} FROM ({union}) "
        "GROUP BY event_date ORDER BY event_date NULLS LAST"
    ).fetchall()
    return tuple(DayOutcome(str(r[0]), *(int(x) for x in r[1:])) for r in rows)


def _check_reconciliation(report: GuardReport) -> None:
    broken = [d for d in report.days
              if d.input_rows != d.accepted + d.dropped_consent + d.quarantined + d.duplicate]
    if broken:
        detail = ", ".join(
            f"{d.event_date}: input {d.input_rows} != {d.accepted}+{d.dropped_consent}+{d.quarantined}+{d.duplicate}"
            for d in broken[:5]
        )
        raise ReconciliationError(f"row outcomes do not add up on {len(broken)} day(s): {detail}")
