"""Stage 3: per-user features in SQL, then segments by rules (default) or k-means, optionally named
by an LLM (falling back to the offline method when it fails).

Features (per hashed user): recency (days since the last visit, as of the last complete day),
frequency (sessions), monetary (revenue), orders, average order value, pages per session,
average session duration, engagement seconds per session, and the share of orders that used a
coupon. Thresholds are percentiles of the population, computed in the same SQL, so the rules
adapt to any shop's scale instead of hard-coding one shop's numbers. Comparisons with the
percentile are strict where ties are common (sessions, durations), so a population where most
users share one value does not land wholesale in one segment.

Rules, first match wins; each segment is named for what its rule found:
  1. Brand Loyalist  `repeat_buyer`      orders >= 2
  2. Brand Loyalist  `frequent_buyer`    orders >= 1 and sessions > p80(sessions) (p80 at least 2)
  3. Value Shopper   `coupon_buyer`      half or more of orders used a coupon
  4. Speed Seeker    `quick_sessions`    pages/session <= p30 and duration < median
  5. New Customer    `first_purchase`    one order, none of the above
  6. Brand Loyalist  `frequent_visitor`  sessions > p80(sessions), no order yet
  7. Browser         `browsing`          none of the above: no order and no loyalty or speed signal

k-means: features are log-scaled where they are heavy-tailed (sessions, revenue, duration,
engagement) and standardized; k is chosen by silhouette (3 to 6) unless configured. Each cluster is
named by its centroid: the most loyal profile (many sessions, high revenue, recent) becomes Brand
Loyalist, the quickest (few pages, short sessions) Speed Seeker, a cluster whose orders mostly used
coupons Value Shopper, the rest Browser; or an LLM
names them from their average profiles (one call for all clusters, never one per user). Every user
keeps the reason (its cluster and that cluster's profile); the silhouette is reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import date

import duckdb
import numpy as np

from flashcast.config import Settings
from flashcast.errors import ProviderFailed, SegmentationError
from flashcast.llm.client import StructuredClient
from flashcast.llm.tasks import label_clusters
from flashcast.records import SEGMENTS, KpiSummary, Segmentation, SegmentProfile, Table
from flashcast.sql import insert_rows

FEATURES = ("recency_days", "sessions", "monetary", "pages_per_session", "session_duration_s", "engagement_s")
LOG_SCALED = {"sessions", "monetary", "session_duration_s", "engagement_s"}
ClusterNamer = Callable[[dict[int, dict[str, float]]], dict[int, tuple[str, str]]]


def run(con: duckdb.DuckDBPyConnection, *, kpis: KpiSummary, settings: Settings,
        llm: StructuredClient | None) -> Segmentation:
    """The segments stage: features per user, then the configured method (an LLM names k-means
    clusters when one is configured; if it fails, the offline method runs and says why)."""
    if kpis.first_day > kpis.last_complete_day:
        raise SegmentationError(
            f"no complete day to segment users on: every accepted event is on {kpis.last_day}, a partial day (an "
            "intraday export, or no event after the morning); the plan needs at least one complete day's export")
    user_features(con, as_of=kpis.last_complete_day)
    config = settings.segments
    fallback = None
    if llm is not None:
        client = llm

        def namer(profiles: dict[int, dict[str, float]]) -> dict[int, tuple[str, str]]:
            labels = label_clusters(client, profiles)
            return {label.cluster: (label.segment, label.reason) for label in labels.labels}

        try:
            named = kmeans_segments(con, clusters=config.clusters, seed=config.seed, namer=namer)
            return replace(named, method="llm-kmeans", llm=f"{client.provider.name}:{client.provider.model}")
        except ProviderFailed as exc:
            fallback = f"LLM segment labels failed, used the offline {config.method} method: {exc}"
    if config.method == "kmeans":
        result = kmeans_segments(con, clusters=config.clusters, seed=config.seed)
    else:
        result = rule_segments(con)
    llm_name = "offline" if llm is None else f"{llm.provider.name}:{llm.provider.model}"
    return replace(result, llm=llm_name, fallback=fallback)


def user_features(
    con: duckdb.DuckDBPyConnection, *, as_of: date, events: str = Table.GUARDED_EVENTS,
    sessions: str = Table.SESSIONS, table: str = Table.USER_FEATURES,
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
    con: duckdb.DuckDBPyConnection, *, features: str = Table.USER_FEATURES, table: str = Table.USER_SEGMENTS
) -> Segmentation:
    """Assign each user a segment by the first matching rule; keep the rule and a readable reason."""
    thresholds_row = con.execute(
        f"""SELECT quantile_cont(sessions, 0.8), quantile_cont(pages_per_session, 0.3),
                   quantile_cont(session_duration_s, 0.5), count(*) FROM {features}"""
    ).fetchall()[0]
    if not thresholds_row[3]:
        raise SegmentationError("no users to segment")
    p80_sessions, p30_pages, p50_duration = (float(x) for x in thresholds_row[:3])
    p80_sessions = max(p80_sessions, 2.0)  # one visit is never "frequent"
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {table} AS
        SELECT *, CASE rule
            WHEN 'repeat_buyer' THEN 'Brand Loyalist' WHEN 'frequent_buyer' THEN 'Brand Loyalist'
            WHEN 'frequent_visitor' THEN 'Brand Loyalist' WHEN 'quick_sessions' THEN 'Speed Seeker'
            WHEN 'coupon_buyer' THEN 'Value Shopper' WHEN 'first_purchase' THEN 'New Customer'
            ELSE 'Browser' END AS segment,
          CASE rule
            WHEN 'repeat_buyer' THEN orders || ' orders (>= 2)'
            WHEN 'frequent_buyer' THEN 'bought, and ' || sessions || ' sessions > p80 ' || $1
            WHEN 'coupon_buyer' THEN round(coupon_share * 100) || '% of orders used a coupon'
            WHEN 'quick_sessions' THEN pages_per_session || ' pages/session <= p30 ' || round($2, 2)
                 || ' and ' || session_duration_s || ' s < median ' || round($3, 1)
            WHEN 'first_purchase' THEN 'one order so far, no coupon'
            WHEN 'frequent_visitor' THEN sessions || ' sessions > p80 ' || $1 || ', no order yet'
            ELSE 'no order yet; ' || sessions || ' session(s), ' || round(pages_per_session, 1)
                 || ' pages/session: no loyalty or speed signal' END AS reason
        FROM (
          SELECT *, CASE
            WHEN orders >= 2 THEN 'repeat_buyer'
            WHEN orders >= 1 AND sessions > $1 THEN 'frequent_buyer'
            WHEN orders >= 1 AND coupon_share >= 0.5 THEN 'coupon_buyer'
            WHEN pages_per_session <= $2 AND session_duration_s < $3 THEN 'quick_sessions'
            WHEN orders >= 1 THEN 'first_purchase'
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


# ------------------------------------------------------------------ k-means


def _standardized(rows: np.ndarray) -> np.ndarray:
    x = rows.astype(float).copy()
    for i, name in enumerate(FEATURES):
        if name in LOG_SCALED:
            x[:, i] = np.log1p(np.maximum(x[:, i], 0.0))
    sd = x.std(axis=0)
    return np.asarray((x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0))


def name_clusters(centroids: np.ndarray, coupon_share: np.ndarray | None = None) -> list[str]:
    """Segment name per cluster from standardized centroids (columns in FEATURES order) and, when
    given, each cluster's mean share of orders that used a coupon."""
    col = {name: i for i, name in enumerate(FEATURES)}
    loyalty = centroids[:, col["sessions"]] + centroids[:, col["monetary"]] - centroids[:, col["recency_days"]]
    speed = -centroids[:, col["pages_per_session"]] - centroids[:, col["session_duration_s"]]
    names = ["Browser"] * len(centroids)
    loyal = int(np.argmax(loyalty))
    names[loyal] = "Brand Loyalist"
    order = [int(i) for i in np.argsort(-speed) if i != loyal]
    names[order[0]] = "Speed Seeker"
    if coupon_share is not None:
        rest = [i for i in range(len(centroids)) if names[i] == "Browser"]
        value = max(rest, key=lambda i: coupon_share[i], default=None)
        if value is not None and coupon_share[value] >= 0.3:
            names[value] = "Value Shopper"
    for i in range(len(centroids)):  # with more clusters, others join the closest profile
        if names[i] == "Browser" and loyalty[i] > 1.0:
            names[i] = "Brand Loyalist"
        elif names[i] == "Browser" and speed[i] > 1.0:
            names[i] = "Speed Seeker"
    return names


def kmeans_segments(
    con: duckdb.DuckDBPyConnection, *, features: str = Table.USER_FEATURES, table: str = Table.USER_SEGMENTS,
    clusters: int = 0, seed: int = 0, namer: ClusterNamer | None = None,
) -> Segmentation:
    """Cluster users; name clusters by their centroids, or by `namer` (e.g. an LLM) given each cluster's
    average profile, which returns (segment, reason) per cluster."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    columns = ", ".join(f"coalesce({c}, 0)" for c in FEATURES)
    keys_rows = con.execute(
        f"SELECT user_key, {columns}, coalesce(coupon_share, 0) FROM {features} ORDER BY user_key").fetchall()
    if len(keys_rows) < 10:
        raise SegmentationError(f"k-means needs at least 10 users, got {len(keys_rows)}")
    keys = [r[0] for r in keys_rows]
    coupons = np.array([r[-1] for r in keys_rows], dtype=float)
    x = _standardized(np.array([r[1:-1] for r in keys_rows], dtype=float))
    candidates = [clusters] if clusters else [k for k in (3, 4, 5, 6) if k < len(x)]
    best: tuple[float, np.ndarray, np.ndarray, int] | None = None
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(x), size=min(len(x), 4000), replace=False)
    for k in candidates:
        model = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(x)
        labels = model.labels_
        score = float(silhouette_score(x[sample], labels[sample])) if len(set(labels[sample])) > 1 else -1.0
        if best is None or score > best[0]:
            best = (score, labels, model.cluster_centers_, k)
    assert best is not None
    silhouette, labels, centroids, k = best
    raw = np.array([r[1:-1] for r in keys_rows], dtype=float)
    profile = {c: raw[labels == c].mean(axis=0) for c in range(k)}
    if namer is not None:
        named = namer({c: dict(zip(FEATURES, (float(v) for v in profile[c]), strict=True)) for c in range(k)})
        names = [named[c][0] for c in range(k)]
        reasons = [f"cluster {c} of {k}: {named[c][1]}" for c in range(k)]
    else:
        names = name_clusters(centroids, np.array([coupons[labels == c].mean() for c in range(k)]))
        reasons = [f"cluster {c} of {k}: sessions {profile[c][1]:.1f}, revenue {profile[c][2]:.2f}, "
                   f"pages/session {profile[c][3]:.1f}, recency {profile[c][0]:.0f} days" for c in range(k)]
    con.execute("CREATE OR REPLACE TEMP TABLE _kmeans (user_key VARCHAR, cluster INT)")
    insert_rows(con, "_kmeans", list(zip(keys, (int(v) for v in labels), strict=True)))
    con.execute("CREATE OR REPLACE TEMP TABLE _cluster_names (cluster INT, segment VARCHAR, reason VARCHAR)")
    insert_rows(con, "_cluster_names", [(c, names[c], reasons[c]) for c in range(k)])
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {table} AS
        SELECT f.*, 'kmeans_c' || m.cluster AS rule, n.segment, n.reason
        FROM {features} f JOIN _kmeans m USING (user_key) JOIN _cluster_names n USING (cluster)"""
    )
    rule_counts = dict(con.execute(f"SELECT rule, count(*) FROM {table} GROUP BY rule ORDER BY rule").fetchall())
    return Segmentation(table=table, profiles=segment_profiles(con, table), rule_counts=rule_counts,
                        thresholds={"clusters": float(k), "silhouette": round(silhouette, 4)}, method="kmeans")
