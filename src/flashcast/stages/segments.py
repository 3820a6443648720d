"""Stage 3: per-user features in SQL and a rule-based segmenter that says which rule fired.

Features (per hashed user): recency (days since the last visit, as of the last complete day),
frequency (sessions), monetary (revenue), orders, average order value, pages per session,
average session duration, engagement seconds per session, and the share of orders that used a
coupon. Thresholds are percentiles of the population, computed in the same SQL, so the rules
adapt to any shop's scale instead of hard-coding one shop's numbers. Comparisons with the
percentile are strict where ties are common (sessions, durations), so a population where most
users share one value does not land wholesale in one segment.

Rules, first match wins:
  1. Brand Loyalist  `repeat_buyer`      orders >= 2
  2. Brand Loyalist  `frequent_buyer`    orders >= 1 and sessions > p80(sessions) (p80 at least 2)
  3. Value Shopper   `coupon_buyer`      half or more of orders used a coupon
  4. Speed Seeker    `quick_sessions`    pages/session <= p30 and duration < median
  5. Brand Loyalist  `frequent_visitor`  sessions > p80(sessions)
  6. Value Shopper   `browsing`          none of the above: browsing without a loyalty or speed signal
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb

SEGMENTS = ("Brand Loyalist", "Value Shopper", "Speed Seeker")


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

    @property
    def users(self) -> int:
        return sum(p.users for p in self.profiles)


def user_features(
    con: duckdb.DuckDBPyConnection, *, as_of: date, events: str = "guarded_events", sessions: str = "sessions",
    table: str = "user_features",
) -> str:
    """One row per user_key with RFM and engagement features, stamped with the run's lineage_id."""
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {table} AS
        WITH visits AS (
          SELECT user_key, any_value(lineage_id) AS lineage_id, count(*) AS sessions,
            max(event_date) AS last_visit, avg(page_views) AS pages_per_session,
            avg(duration_s) AS session_duration_s, avg(engagement_msec) / 1000.0 AS engagement_s
          FROM {sessions} WHERE event_date <= ?::DATE GROUP BY user_key
        ), orders AS (
          SELECT user_key, count(*) AS orders, sum(revenue) AS monetary,
            count(*) FILTER (WHERE list_contains(list_transform(params, lambda p: p.key), 'coupon')) AS coupon_orders
          FROM {events} WHERE event_name = 'purchase' AND event_date <= ?::DATE GROUP BY user_key
        )
        SELECT v.lineage_id, v.user_key,
          date_diff('day', v.last_visit, ?::DATE) AS recency_days,
          v.sessions, coalesce(o.orders, 0) AS orders, round(coalesce(o.monetary, 0), 2) AS monetary,
          CASE WHEN o.orders > 0 THEN round(o.monetary / o.orders, 2) END AS avg_order_value,
          round(v.pages_per_session, 3) AS pages_per_session,
          round(v.session_duration_s, 1) AS session_duration_s,
          round(v.engagement_s, 1) AS engagement_s,
          CASE WHEN o.orders > 0 THEN o.coupon_orders / o.orders ELSE 0 END AS coupon_share
        FROM visits v LEFT JOIN orders o USING (user_key)""",
        [as_of, as_of, as_of],
    )
    return table


def rule_segments(
    con: duckdb.DuckDBPyConnection, *, features: str = "user_features", table: str = "user_segments"
) -> Segmentation:
    """Assign each user a segment by the first matching rule; keep the rule and a readable reason."""
    thresholds_row = con.execute(
        f"""SELECT quantile_cont(sessions, 0.8), quantile_cont(pages_per_session, 0.3),
                   quantile_cont(session_duration_s, 0.5), count(*) FROM {features}"""
    ).fetchall()[0]
    if not thresholds_row[3]:
        raise ValueError("no users to segment")
    p80_sessions, p30_pages, p50_duration = (float(x) for x in thresholds_row[:3])
    p80_sessions = max(p80_sessions, 2.0)  # one visit is never "frequent"
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {table} AS
        SELECT *, CASE rule
            WHEN 'repeat_buyer' THEN 'Brand Loyalist' WHEN 'frequent_buyer' THEN 'Brand Loyalist'
            WHEN 'frequent_visitor' THEN 'Brand Loyalist' WHEN 'quick_sessions' THEN 'Speed Seeker'
            ELSE 'Value Shopper' END AS segment,
          CASE rule
            WHEN 'repeat_buyer' THEN orders || ' orders (>= 2)'
            WHEN 'frequent_buyer' THEN 'bought, and ' || sessions || ' sessions > p80 ' || $1
            WHEN 'coupon_buyer' THEN round(coupon_share * 100) || '% of orders used a coupon'
            WHEN 'quick_sessions' THEN pages_per_session || ' pages/session <= p30 ' || round($2, 2)
                 || ' and ' || session_duration_s || ' s < median ' || round($3, 1)
            WHEN 'frequent_visitor' THEN sessions || ' sessions > p80 ' || $1
            ELSE 'no loyalty or speed signal' END AS reason
        FROM (
          SELECT *, CASE
            WHEN orders >= 2 THEN 'repeat_buyer'
            WHEN orders >= 1 AND sessions > $1 THEN 'frequent_buyer'
            WHEN orders >= 1 AND coupon_share >= 0.5 THEN 'coupon_buyer'
            WHEN pages_per_session <= $2 AND session_duration_s < $3 THEN 'quick_sessions'
            WHEN sessions > $1 THEN 'frequent_visitor'
            ELSE 'browsing' END AS rule
          FROM {features}
        )""",
        [p80_sessions, p30_pages, p50_duration],
    )
    return Segmentation(
        table=table,
        profiles=segment_profiles(con, table),
        rule_counts=dict(con.execute(f"SELECT rule, count(*) FROM {table} GROUP BY rule ORDER BY rule").fetchall()),
        thresholds={"p80_sessions": p80_sessions, "p30_pages_per_session": p30_pages,
                    "median_session_duration_s": p50_duration},
    )


def segment_profiles(con: duckdb.DuckDBPyConnection, table: str) -> tuple[SegmentProfile, ...]:
    rows = con.execute(
        f"""SELECT segment, count(*), count(*) / sum(count(*)) OVER (), avg(recency_days), avg(sessions),
          avg(orders), avg(monetary), avg(pages_per_session), avg(session_duration_s)
        FROM {table} GROUP BY segment"""
    ).fetchall()
    found = {r[0]: r for r in rows}
    profiles = []
    for name in SEGMENTS:
        r = found.get(name)
        if r is None:
            profiles.append(SegmentProfile(name, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0))
        else:
            profiles.append(SegmentProfile(name, int(r[1]), *(round(float(x), 3) for x in r[2:])))
    return tuple(profiles)
