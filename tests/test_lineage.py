"""The lineage log: hash chain, tamper detection, concurrent appenders."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
import sqlalchemy as sa

from flashcast.errors import LineageTampered
from flashcast.lineage import LineageLog, LogHead, canonical_json
from flashcast.store import OpsStore


def _log(tmp_path: Path, entries: int = 5) -> tuple[OpsStore, LineageLog, LogHead]:
    store = OpsStore(f"sqlite:///{tmp_path / 'ops.sqlite'}")
    log = LineageLog(store)
    head = LogHead(0, "")
    for i in range(entries):
        head = log.append("stage_completed", "run-1", {"stage": f"s{i}", "rows": i})
    return store, log, head


def test_a_clean_log_verifies_against_its_head(tmp_path: Path) -> None:
    _store, log, head = _log(tmp_path)
    report = log.verify([head])
    assert report.entries == 5 and report.head == head


def test_an_edited_entry_is_detected(tmp_path: Path) -> None:
    store, log, head = _log(tmp_path)
    with store.transaction() as conn:
        text = conn.execute(sa.text("SELECT entry FROM lineage_log WHERE seq = 3")).scalar_one()
        entry = json.loads(text)
        entry["body"]["rows"] = 999
        conn.execute(sa.text("UPDATE lineage_log SET entry = :e WHERE seq = 3"), {"e": canonical_json(entry)})
    with pytest.raises(LineageTampered, match="entry 3 was edited"):
        log.verify([head])


def test_an_edit_with_a_recomputed_hash_breaks_the_chain(tmp_path: Path) -> None:
    import hashlib

    store, log, head = _log(tmp_path)
    with store.transaction() as conn:
        entry = json.loads(conn.execute(sa.text("SELECT entry FROM lineage_log WHERE seq = 2")).scalar_one())
        entry["body"]["rows"] = 999
        text = canonical_json(entry)
        conn.execute(sa.text("UPDATE lineage_log SET entry = :e, entry_hash = :h WHERE seq = 2"),
                     {"e": text, "h": hashlib.sha256(text.encode()).hexdigest()})
    with pytest.raises(LineageTampered, match="entry 3 does not chain to entry 2"):
        log.verify([head])


def test_a_deleted_entry_is_detected(tmp_path: Path) -> None:
    store, log, head = _log(tmp_path)
    with store.transaction() as conn:
        conn.execute(sa.text("DELETE FROM lineage_log WHERE seq = 2"))
    with pytest.raises(LineageTampered, match="missing"):
        log.verify([head])


def test_a_truncated_tail_is_detected_against_an_anchor(tmp_path: Path) -> None:
    store, log, head = _log(tmp_path)
    with store.transaction() as conn:
        conn.execute(sa.text("DELETE FROM lineage_log WHERE seq >= 4"))
    log.verify()  # the chain alone still looks fine...
    with pytest.raises(LineageTampered, match="tail truncated"):
        log.verify([head])  # ...but not against the head written elsewhere


def _append_many(url: str, worker: int, count: int) -> None:
    log = LineageLog(OpsStore(url))
    for i in range(count):
        log.append("stage_completed", f"run-{worker}", {"i": i})


def test_concurrent_appenders_keep_one_unbroken_chain(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ops.sqlite'}"
    OpsStore(url)  # create tables once
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(url, w, 40)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    report = LineageLog(OpsStore(url)).verify()
    assert report.entries == 120


def test_the_log_holds_canonical_json(tmp_path: Path) -> None:
    _store, log, _head = _log(tmp_path, entries=1)
    (entry,) = log.entries()
    assert entry["prev_hash"] == "0" * 64
    assert set(entry) == {"seq", "prev_hash", "recorded_at", "kind", "lineage_id", "body"}
