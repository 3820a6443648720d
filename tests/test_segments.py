"""Features in SQL and the rule segmenter, with the rule that fired per user."""

from __future__ import annotations

from datetime import date

import duckdb
import numpy as np
import pytest

from flashcast.errors import SegmentationError
from flashcast.records import SEGMENTS
from flashcast.stages.segments import rule_segments, user_features


def _tables(con: duckdb.DuckDBPyConnection, sessions: list[tuple], purchases: list[tuple]) -> None:
    con.execute("""CREATE TEMP TABLE sessions (lineage_id VARCHAR, session_key VARCHAR, user_key VARCHAR,
        event_date DATE, page_views BIGINT, engagement_msec BIGINT, duration_s DOUBLE)""")
    if sessions:
        con.executemany("INSERT INTO sessions VALUES ('run', ?, ?, ?, ?, ?, ?)", sessions)
    con.execute("""CREATE TEMP TABLE guarded_events (user_key VARCHAR, event_name VARCHAR, event_date DATE,
        revenue DOUBLE, params STRUCT(key VARCHAR, string_value VARCHAR, int_value BIGINT, double_value DOUBLE)[])""")
    if purchases:
        con.executemany("INSERT INTO guarded_events VALUES (?, 'purchase', ?, ?, ?)", purchases)


def _users() -> tuple[list[tuple], list[tuple]]:
    d = date(2026, 3, 1)
    sessions = []
    # 'loyal': 6 sessions, 2 orders; 'quick': 3 short 1-page sessions; 'coupon': 1 order with a coupon;
    # others: ordinary browsers with 2 sessions of 3 pages.
    for i in range(6):
        sessions.append((f"l{i}", "loyal", d, 4, 60_000, 120.0))
    for i in range(3):
        sessions.append((f"q{i}", "quick", d, 1, 3_000, 4.0))
    sessions.append(("c0", "coupon", d, 3, 30_000, 60.0))
    sessions += [(f"n{i}", "newbie", d, 3, 40_000, 90.0) for i in range(2)]
    for u in range(10):
        for i in range(2):
            sessions.append((f"b{u}{i}", f"browser{u}", d, 3, 40_000, 90.0))
    coupon = [{"key": "coupon", "string_value": "PROMO", "int_value": None, "double_value": None}]
    purchases = [("loyal", d, 50.0, []), ("loyal", d, 70.0, []), ("coupon", d, 20.0, coupon), ("newbie", d, 35.0, [])]
    return sessions, purchases


def test_features_and_rules(con: duckdb.DuckDBPyConnection) -> None:
    _tables(con, *_users())
    user_features(con, as_of=date(2026, 3, 10))
    seg = rule_segments(con)
    query = "SELECT user_key, segment, rule, reason, recency_days, sessions, orders, monetary FROM user_segments"
    rows = {r[0]: r[1:] for r in con.execute(query).fetchall()}
    assert rows["loyal"][:2] == ("Brand Loyalist", "repeat_buyer")
    assert rows["loyal"][3:] == (9, 6, 2, 120.0)
    assert rows["quick"][:2] == ("Speed Seeker", "quick_sessions")
    assert "pages/session <= p30" in rows["quick"][2]
    assert rows["coupon"][:2] == ("Value Shopper", "coupon_buyer")
    assert rows["newbie"][:2] == ("New Customer", "first_purchase")
    assert rows["browser0"][:2] == ("Browser", "browsing")
    assert "no order yet" in rows["browser0"][2]
    assert seg.users == 14 == sum(seg.rule_counts.values())
    assert [p.segment for p in seg.profiles] == list(SEGMENTS)
    assert sum(p.share for p in seg.profiles) == pytest.approx(1.0, abs=0.005)  # shares are rounded
    assert con.execute("SELECT count(DISTINCT lineage_id) FROM user_segments").fetchall()[0][0] == 1


def test_thresholds_come_from_the_population_not_constants(con: duckdb.DuckDBPyConnection) -> None:
    sessions, purchases = _users()
    scaled = [(k, u, d, p * 10, e, s * 10) for k, u, d, p, e, s in sessions]  # a shop with 10x deeper visits
    _tables(con, scaled, purchases)
    user_features(con, as_of=date(2026, 3, 10))
    seg = rule_segments(con)
    assert seg.thresholds["p30_pages_per_session"] == pytest.approx(30.0)
    speed = con.execute("SELECT user_key FROM user_segments WHERE segment = 'Speed Seeker'").fetchall()
    assert speed == [("quick",)]


def test_no_users_is_refused(con: duckdb.DuckDBPyConnection) -> None:
    _tables(con, [], [])
    user_features(con, as_of=date(2026, 3, 10))
    with pytest.raises(SegmentationError, match="no users"):
        rule_segments(con)


def test_kmeans_finds_and_names_planted_groups(con: duckdb.DuckDBPyConnection) -> None:
    from flashcast.stages.segments import kmeans_segments

    rng = np.random.default_rng(0)
    rows = []
    groups = {"loyal": (2, 40, 600.0, 5.0, 300.0, 200.0), "quick": (30, 2, 20.0, 1.0, 10.0, 5.0),
              "browse": (60, 3, 30.0, 4.0, 150.0, 60.0)}
    for name, (recency, sessions, revenue, pages, duration, engagement) in groups.items():
        for i in range(120):
            rows.append((f"{name}{i}", recency * rng.uniform(0.8, 1.2), sessions * rng.uniform(0.8, 1.2),
                         revenue * rng.uniform(0.8, 1.2), pages * rng.uniform(0.9, 1.1),
                         duration * rng.uniform(0.8, 1.2), engagement * rng.uniform(0.8, 1.2)))
    con.execute("""CREATE TEMP TABLE user_features (lineage_id VARCHAR DEFAULT 'run', user_key VARCHAR,
        recency_days DOUBLE, sessions DOUBLE, monetary DOUBLE, orders DOUBLE DEFAULT 0,
        pages_per_session DOUBLE, session_duration_s DOUBLE, engagement_s DOUBLE, coupon_share DOUBLE DEFAULT 0)""")
    con.executemany("""INSERT INTO user_features (user_key, recency_days, sessions, monetary, pages_per_session,
        session_duration_s, engagement_s) VALUES (?, ?, ?, ?, ?, ?, ?)""", rows)
    seg = kmeans_segments(con, clusters=3)
    assert seg.thresholds["silhouette"] > 0.5
    found = dict(con.execute("SELECT user_key, segment FROM user_segments").fetchall())
    assert all(found[f"loyal{i}"] == "Brand Loyalist" for i in range(120))
    assert all(found[f"quick{i}"] == "Speed Seeker" for i in range(120))
    assert all(found[f"browse{i}"] == "Browser" for i in range(120)), "no signal: named for what it is"
    con.execute("UPDATE user_features SET coupon_share = 0.8 WHERE user_key LIKE 'browse%'")
    kmeans_segments(con, clusters=3)
    found = dict(con.execute("SELECT user_key, segment FROM user_segments").fetchall())
    assert all(found[f"browse{i}"] == "Value Shopper" for i in range(120)), "their orders mostly used coupons"
    reasons = {r[0] for r in con.execute("SELECT DISTINCT reason FROM user_segments").fetchall()}
    assert len(reasons) == 3 and all(r.startswith("cluster ") for r in reasons)
