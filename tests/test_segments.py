"""Features in SQL and the rule segmenter, with the rule that fired per user."""

from __future__ import annotations

from datetime import date

import duckdb
import pytest

from flashcast.stages.segments import SEGMENTS, rule_segments, user_features


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
    for u in range(10):
        for i in range(2):
            sessions.append((f"b{u}{i}", f"browser{u}", d, 3, 40_000, 90.0))
    coupon = [{"key": "coupon", "string_value": "PROMO", "int_value": None, "double_value": None}]
    purchases = [("loyal", d, 50.0, []), ("loyal", d, 70.0, []), ("coupon", d, 20.0, coupon)]
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
    assert rows["browser0"][:2] == ("Value Shopper", "browsing")
    assert seg.users == 13 == sum(seg.rule_counts.values())
    assert [p.segment for p in seg.profiles] == list(SEGMENTS)
    assert sum(p.share for p in seg.profiles) == pytest.approx(1.0)
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
    with pytest.raises(ValueError, match="no users"):
        rule_segments(con)
