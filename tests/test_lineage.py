"""The lineage log: hash chain, tamper detection, concurrent appenders; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from flashcast.errors import LineageTampered
from flashcast.lineage import LineageLog, LogHead, canonical_json
from flashcast.store import OpsStore


@pytest.fixture
def ops(ops_url: str) -> Iterator[OpsStore]:
    store = OpsStore(ops_url)
    yield store
    store.dispose()


def _log(store: OpsStore, entries: int = 5) -> tuple[OpsStore, LineageLog, LogHead]:
    log = LineageLog(store)
    head = LogHead(0, "")
    for i in range(entries):
        head = log.append("stage_completed", "run-1", {"stage": f"s{i}", "rows": i})
    return store, log, head


def test_a_clean_log_verifies_against_its_head(ops: OpsStore) -> None:
    _store, log, head = _log(ops)
    report = log.verify([head])
    assert report.entries == 5 and report.head == head


def test_an_edited_entry_is_detected(ops: OpsStore) -> None:
    store, log, head = _log(ops)
    with store.transaction() as conn:
        text = conn.execute(sa.text("SELECT entry FROM lineage_log WHERE seq = 3")).scalar_one()
        entry = json.loads(text)
        entry["body"]["rows"] = 999
        conn.execute(sa.text("UPDATE lineage_log SET entry = :e WHERE seq = 3"), {"e": canonical_json(entry)})
    with pytest.raises(LineageTampered, match="entry 3 was edited"):
        log.verify([head])


def test_an_edit_with_a_recomputed_hash_breaks_the_chain(ops: OpsStore) -> None:
    import hashlib

    store, log, head = _log(ops)
    with store.transaction() as conn:
        entry = json.loads(conn.execute(sa.text("SELECT entry FROM lineage_log WHERE seq = 2")).scalar_one())
        entry["body"]["rows"] = 999
        text = canonical_json(entry)
        conn.execute(sa.text("UPDATE lineage_log SET entry = :e, entry_hash = :h WHERE seq = 2"),
                     {"e": text, "h": hashlib.sha256(text.encode()).hexdigest()})
    with pytest.raises(LineageTampered, match="entry 3 does not chain to entry 2"):
        log.verify([head])


def test_a_deleted_entry_is_detected(ops: OpsStore) -> None:
    store, log, head = _log(ops)
    with store.transaction() as conn:
        conn.execute(sa.text("DELETE FROM lineage_log WHERE seq = 2"))
    with pytest.raises(LineageTampered, match="missing"):
        log.verify([head])


def test_a_truncated_tail_is_detected_against_an_anchor(ops: OpsStore) -> None:
    store, log, head = _log(ops)
    with store.transaction() as conn:
        conn.execute(sa.text("DELETE FROM lineage_log WHERE seq >= 4"))
    log.verify()  # the chain alone still looks fine...
    with pytest.raises(LineageTampered, match="tail truncated"):
        log.verify([head])  # ...but not against the head written elsewhere


def _append_many(url: str, worker: int, count: int) -> None:
    store = OpsStore(url)
    log = LineageLog(store)
    for i in range(count):
        log.append("stage_completed", f"run-{worker}", {"i": i})
    store.dispose()


def test_concurrent_appenders_keep_one_unbroken_chain(ops_url: str) -> None:
    url = ops_url
    OpsStore(url).dispose()  # create tables once
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(url, w, 40)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = OpsStore(url)
    report = LineageLog(store).verify()
    store.dispose()
    assert report.entries == 120


def test_the_log_holds_canonical_json(ops: OpsStore) -> None:
    _store, log, _head = _log(ops, entries=1)
    (entry,) = log.entries()
    assert entry["prev_hash"] == "0" * 64
    assert set(entry) == {"seq", "prev_hash", "recorded_at", "kind", "lineage_id", "body"}
