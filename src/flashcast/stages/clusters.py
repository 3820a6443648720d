"""Stage 3, data-driven: k-means on standardized user features, clusters named by their centroids.

Features are log-scaled where they are heavy-tailed (sessions, revenue, duration, engagement) and
standardized; k is chosen by silhouette (3 to 6) unless configured. Each cluster is named by its
centroid: the most loyal profile (many sessions, high revenue, recent) becomes Brand Loyalist, the
quickest (few pages, short sessions) Speed Seeker, the rest Value Shopper. Every user keeps the
reason (its cluster and that cluster's profile); the silhouette is reported as the clustering's
quality.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb
import numpy as np

from flashcast.stages.segments import Segmentation, segment_profiles

FEATURES = ("recency_days", "sessions", "monetary", "pages_per_session", "session_duration_s", "engagement_s")
LOG_SCALED = {"sessions", "monetary", "session_duration_s", "engagement_s"}


def _standardized(rows: np.ndarray) -> np.ndarray:
    x = rows.astype(float).copy()
    for i, name in enumerate(FEATURES):
        if name in LOG_SCALED:
            x[:, i] = np.log1p(np.maximum(x[:, i], 0.0))
    sd = x.std(axis=0)
    return np.asarray((x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0))


def name_clusters(centroids: np.ndarray) -> list[str]:
    """Segment name per cluster from standardized centroids (columns in FEATURES order)."""
    col = {name: i for i, name in enumerate(FEATURES)}
    loyalty = centroids[:, col["sessions"]] + centroids[:, col["monetary"]] - centroids[:, col["recency_days"]]
    speed = -centroids[:, col["pages_per_session"]] - centroids[:, col["session_duration_s"]]
    names = ["Value Shopper"] * len(centroids)
    loyal = int(np.argmax(loyalty))
    names[loyal] = "Brand Loyalist"
    order = [int(i) for i in np.argsort(-speed) if i != loyal]
    names[order[0]] = "Speed Seeker"
    for i in range(len(centroids)):  # with more than three clusters, others join the closest profile
        if names[i] == "Value Shopper" and loyalty[i] > 1.0:
            names[i] = "Brand Loyalist"
        elif names[i] == "Value Shopper" and speed[i] > 1.0:
            names[i] = "Speed Seeker"
    return names


ClusterNamer = Callable[[dict[int, dict[str, float]]], dict[int, tuple[str, str]]]


def kmeans_segments(
    con: duckdb.DuckDBPyConnection, *, features: str = "user_features", table: str = "user_segments",
    clusters: int = 0, seed: int = 0, namer: ClusterNamer | None = None,
) -> Segmentation:
    """Cluster users; name clusters by their centroids, or by `namer` (e.g. an LLM) given each cluster's
    average profile, which returns (segment, reason) per cluster."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    columns = ", ".join(f"coalesce({c}, 0)" for c in FEATURES)
    keys_rows = con.execute(f"SELECT user_key, {columns} FROM {features} ORDER BY user_key").fetchall()
    if len(keys_rows) < 10:
        raise ValueError(f"k-means needs at least 10 users, got {len(keys_rows)}")
    keys = [r[0] for r in keys_rows]
    x = _standardized(np.array([r[1:] for r in keys_rows], dtype=float))
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
    raw = np.array([r[1:] for r in keys_rows], dtype=float)
    profile = {c: raw[labels == c].mean(axis=0) for c in range(k)}
    if namer is not None:
        named = namer({c: dict(zip(FEATURES, (float(v) for v in profile[c]), strict=True)) for c in range(k)})
        names = [named[c][0] for c in range(k)]
        reasons = [f"cluster {c} of {k}: {named[c][1]}" for c in range(k)]
    else:
        names = name_clusters(centroids)
        reasons = [f"cluster {c} of {k}: sessions {profile[c][1]:.1f}, revenue {profile[c][2]:.2f}, "
                   f"pages/session {profile[c][3]:.1f}, recency {profile[c][0]:.0f} days" for c in range(k)]
    con.execute("CREATE OR REPLACE TEMP TABLE _kmeans (user_key VARCHAR, cluster INT)")
    con.executemany("INSERT INTO _kmeans VALUES (?, ?)", list(zip(keys, (int(v) for v in labels), strict=True)))
    con.execute("CREATE OR REPLACE TEMP TABLE _cluster_names (cluster INT, segment VARCHAR, reason VARCHAR)")
    con.executemany("INSERT INTO _cluster_names VALUES (?, ?, ?)", [(c, names[c], reasons[c]) for c in range(k)])
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {table} AS
        SELECT f.*, 'kmeans_c' || m.cluster AS rule, n.segment, n.reason
        FROM {features} f JOIN _kmeans m USING (user_key) JOIN _cluster_names n USING (cluster)"""
    )
    rule_counts = dict(con.execute(f"SELECT rule, count(*) FROM {table} GROUP BY rule ORDER BY rule").fetchall())
    return Segmentation(table=table, profiles=segment_profiles(con, table), rule_counts=rule_counts,
                        thresholds={"clusters": float(k), "silhouette": round(silhouette, 4)})
