"""The store's tables for the server (migration 3): alerts, trigger starts, budget hosts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from executor.errors import NotFound
from executor.store import SCHEMA_VERSION, SqliteStore


@pytest.fixture
def store(tmp_path: Path):
    with SqliteStore(tmp_path / "state.db", clock=lambda: 100.0) as opened:
        yield opened


def alert(i: int, **more) -> dict:
    return {"fingerprint": f"fp{i}", "status": "firing", "labels": {"n": str(i)}, **more}


def test_alerts_are_added_in_one_batch_and_decided_in_another(store: SqliteStore) -> None:
    ids = store.add_alerts([alert(i) for i in range(5)])
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert store.count_alerts() == 5 and store.count_alerts(stage="queued") == 5
    queued = store.queued_alerts(limit=3)
    assert [a["id"] for a in queued] == ids[:3]
    assert queued[0]["labels"] == {"n": "0"} and queued[0]["received"] == 100.0
    store.decide_alerts([(ids[0], "started", [{"disposition": "started", "run_id": "r-1"}])])
    decided = store.get_alert(ids[0])
    assert decided["stage"] == "decided" and decided["decisions"][0]["run_id"] == "r-1"
    assert store.count_alerts(stage="queued") == 4
    assert [a["id"] for a in store.list_alerts(disposition="started")] == [ids[0]]
    assert [a["id"] for a in store.list_alerts(fingerprint="fp3")] == [ids[3]]


def test_an_alert_needs_a_fingerprint_a_status_and_known_fields(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="fingerprint"):
        store.add_alerts([{"status": "firing"}])
    with pytest.raises(ValueError, match="unknown alert field"):
        store.add_alerts([alert(1, colour="red")])
    assert store.count_alerts() == 0
    with pytest.raises(NotFound):
        store.get_alert(42)


def test_trigger_starts_and_budget_hosts(store: SqliteStore) -> None:
    store.record_trigger_start(
        "r-1", runbook="fix", at=10.0, route="a", fingerprint="f", hosts=["h1", "h2"]
    )
    store.record_trigger_start("r-2", runbook="fix", at=20.0, route="b", fingerprint="f")
    store.record_budget_hosts("r-3", "fix", ["h3", "h3"], at=30.0)
    assert store.count_trigger_starts(0) == 2 and store.count_trigger_starts(15) == 1
    assert store.count_trigger_starts(0, route="a") == 1
    assert [r["run_id"] for r in store.trigger_runs("f")] == ["r-2", "r-1"]
    assert store.trigger_runs("f")[0]["status"] is None  # no such run: nothing joined
    assert store.trigger_of_run("r-1")["route"] == "a" and store.trigger_of_run("r-9") is None
    assert store.budget_hosts("fix", 0) == {"r-1": {"h1", "h2"}, "r-3": {"h3"}}
    assert store.budget_hosts("fix", 25) == {"r-3": {"h3"}}


def test_the_heartbeat_writes(store: SqliteStore, tmp_path: Path) -> None:
    assert store.heartbeat("serve-1", {"pid": 1}) == 100.0
    assert SCHEMA_VERSION >= 3
    raw = sqlite3.connect(tmp_path / "state.db")
    try:
        assert raw.execute("SELECT name, info FROM heartbeats").fetchall() == [
            ("serve-1", '{"pid": 1}')
        ]
    finally:
        raw.close()
