"""SqliteStore in one process: CRUD, locks, cooldowns, kill-switch, schema, errors."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from executor import store as store_module
from executor.errors import ApprovalRefused, NotFound, StoreError
from executor.model import RunStatus, StepStatus
from executor.store import SCHEMA_VERSION, SqliteStore


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "state.db", clock=FakeClock())
    yield s
    s.close()


def _run(store: SqliteStore, run_id: str, **fields: object) -> None:
    store.create_run({"id": run_id, "runbook": "disk-pressure", "version": "1.0.0", **fields})


# ----------------------------------------------------------------------------- runs


def test_create_and_get_round_trip_decodes_json_and_flags(store: SqliteStore) -> None:
    _run(
        store,
        "r1",
        sha256="ab" * 32,
        source="runbooks/disk.yml",
        actor="alice",
        trigger="cli",
        inputs={"host": "web1", "threshold": 90},
        alert={"labels": {"alertname": "DiskFull"}},
        dry_run=True,
        concurrency_key="web1",
    )
    run = store.get_run("r1")
    assert run["inputs"] == {"host": "web1", "threshold": 90}
    assert run["alert"] == {"labels": {"alertname": "DiskFull"}}
    assert run["dry_run"] is True
    assert run["kill_requested"] is False
    assert run["status"] == "pending"
    assert run["trigger"] == "cli"
    assert run["created"] == run["updated"] == 1001.0
    assert run["finished"] is None and run["state"] is None


def test_create_refuses_unknown_column_missing_id_and_duplicates(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match=r"unknown run field.*colour"):
        store.create_run({"id": "r1", "colour": "red"})
    with pytest.raises(ValueError, match="needs an 'id'"):
        store.create_run({"runbook": "x"})
    _run(store, "r1")
    with pytest.raises(StoreError, match="already exists"):
        _run(store, "r1")


def test_update_run_encodes_json_enums_and_stamps_updated(store: SqliteStore) -> None:
    _run(store, "r1")
    store.update_run(
        "r1", status=RunStatus.WAITING, state={"steps": {"a": "succeeded"}, "order": ["a"]}
    )
    run = store.get_run("r1")
    assert run["status"] == "waiting"
    assert run["state"] == {"steps": {"a": "succeeded"}, "order": ["a"]}
    assert run["updated"] > run["created"]
    store.update_run("r1", status="failed", error="step clean failed", finished=5.0)
    run = store.get_run("r1")
    assert (run["status"], run["error"], run["finished"]) == ("failed", "step clean failed", 5.0)


def test_update_run_rejects_unknown_columns_and_values_of_the_wrong_shape(
    store: SqliteStore,
) -> None:
    _run(store, "r1")
    with pytest.raises(ValueError, match=r"unknown run field.*bogus"):
        store.update_run("r1", bogus=1)
    with pytest.raises(ValueError, match=r"unknown run field.*id"):
        store.update_run("r1", id="r2")
    with pytest.raises(ValueError, match="'error' holds a single value"):
        store.update_run("r1", error={"nested": True})
    with pytest.raises(ValueError, match="cannot store 'state' as JSON"):
        store.update_run("r1", state={"x": object()})
    assert store.get_run("r1")["status"] == "pending"


def test_missing_run_says_how_to_list_runs(store: SqliteStore) -> None:
    with pytest.raises(NotFound) as caught:
        store.get_run("nope")
    assert "nope" in str(caught.value) and "runbook runs" in str(caught.value)
    with pytest.raises(NotFound):
        store.update_run("nope", status="failed")
    with pytest.raises(NotFound):
        store.request_kill("nope", "bob", "why")


def test_list_runs_newest_first_with_filters(store: SqliteStore) -> None:
    _run(store, "r1", status="succeeded")
    _run(store, "r2", status="running", runbook="other")
    _run(store, "r3", status="running")
    assert [r["id"] for r in store.list_runs()] == ["r3", "r2", "r1"]
    assert [r["id"] for r in store.list_runs(limit=2)] == ["r3", "r2"]
    assert [r["id"] for r in store.list_runs(status="running")] == ["r3", "r2"]
    assert [r["id"] for r in store.list_runs(status=RunStatus.RUNNING, runbook="other")] == ["r2"]
    assert store.list_runs(status="cancelled") == []


def test_runs_by_status_oldest_first(store: SqliteStore) -> None:
    _run(store, "r1", status="waiting")
    _run(store, "r2", status="succeeded")
    _run(store, "r3", status="running")
    found = store.runs_by_status([RunStatus.RUNNING, "waiting"])
    assert [r["id"] for r in found] == ["r1", "r3"]
    assert store.runs_by_status([]) == []


def test_request_kill_is_visible_on_the_run(store: SqliteStore) -> None:
    _run(store, "r1", status="running")
    store.request_kill("r1", "bob", "wrong host", at=42.0)
    run = store.get_run("r1")
    assert run["kill_requested"] is True
    assert (run["kill_by"], run["kill_reason"], run["kill_at"]) == ("bob", "wrong host", 42.0)
    assert run["status"] == "running"


# ---------------------------------------------------------------------------- steps


def test_upsert_step_updates_only_given_columns(store: SqliteStore) -> None:
    _run(store, "r1")
    store.upsert_step("r1", "measure", status=StepStatus.RUNNING, started=1.0, attempts=1)
    store.upsert_step("r1", "clean")
    store.upsert_step(
        "r1",
        "measure",
        status="succeeded",
        finished=2.0,
        hosts={"web1": {"rc": 0}},
        outputs={"percent": 93},
    )
    store.upsert_step("r1", "clean")  # no fields: leaves the row as it is
    steps = store.get_steps("r1")
    assert [s["step_id"] for s in steps] == ["measure", "clean"]
    measure = steps[0]
    assert measure["status"] == "succeeded"
    assert (measure["started"], measure["finished"], measure["attempts"]) == (1.0, 2.0, 1)
    assert measure["hosts"] == {"web1": {"rc": 0}}
    assert measure["outputs"] == {"percent": 93}
    assert steps[1]["status"] == "pending" and steps[1]["outputs"] is None
    assert store.get_steps("other") == []


def test_upsert_step_refuses_unknown_fields_and_unknown_runs(store: SqliteStore) -> None:
    _run(store, "r1")
    with pytest.raises(ValueError, match=r"unknown step field.*stdout"):
        store.upsert_step("r1", "a", stdout="x")
    with pytest.raises(NotFound, match="runbook runs"):
        store.upsert_step("ghost", "a", status="running")


# ------------------------------------------------------------------------ approvals


def test_approvals_recorded_in_order_and_filtered_by_step(store: SqliteStore) -> None:
    _run(store, "r1")
    store.add_approval(
        "r1", "approve", {"approver": "carol", "decision": "approve", "sha256": "ab" * 32}
    )
    store.add_approval("r1", "approve", {"approver": "dave", "decision": "deny", "reason": "no"})
    store.add_approval("r1", "other", {"approver": "carol", "decision": "approve", "at": 7.0})
    both = store.get_approvals("r1", "approve")
    assert [(a["approver"], a["decision"]) for a in both] == [
        ("carol", "approve"),
        ("dave", "deny"),
    ]
    assert both[0]["sha256"] == "ab" * 32 and both[1]["reason"] == "no"
    assert len(store.get_approvals("r1")) == 3
    assert store.get_approvals("r1", "other")[0]["at"] == 7.0


def test_an_approver_decides_once(store: SqliteStore) -> None:
    _run(store, "r1")
    store.add_approval("r1", "approve", {"approver": "carol", "decision": "approve"})
    with pytest.raises(ApprovalRefused, match="carol already decided"):
        store.add_approval("r1", "approve", {"approver": "carol", "decision": "deny"})
    assert len(store.get_approvals("r1")) == 1


def test_approval_validation(store: SqliteStore) -> None:
    _run(store, "r1")
    with pytest.raises(ValueError, match="'approve' or 'deny'"):
        store.add_approval("r1", "a", {"approver": "c", "decision": "yes"})
    with pytest.raises(ValueError, match="needs an 'approver'"):
        store.add_approval("r1", "a", {"decision": "approve"})
    with pytest.raises(ValueError, match="unknown approval field"):
        store.add_approval("r1", "a", {"approver": "c", "decision": "approve", "group": "x"})
    with pytest.raises(NotFound):
        store.add_approval("ghost", "a", {"approver": "c", "decision": "approve"})
    assert store.get_approvals("r1") == []


# -------------------------------------------------------------- locks and cooldowns


def test_lock_limit_is_respected_and_idempotent(store: SqliteStore) -> None:
    assert store.acquire_lock("web1", "r1", 2)
    assert store.acquire_lock("web1", "r1", 2)  # same run again: still one slot
    assert store.acquire_lock("web1", "r2", 2)
    assert not store.acquire_lock("web1", "r3", 2)
    assert store.holders("web1") == ["r1", "r2"]
    assert store.acquire_lock("web2", "r3", 2)  # keys are independent
    store.release_lock("web1", "r1")
    assert store.acquire_lock("web1", "r3", 2)
    assert store.holders("web1") == ["r2", "r3"]
    store.release_lock("web1", "never-held")  # harmless
    assert sorted(store.release_locks("r3")) == ["web1", "web2"]
    assert store.holders("web1") == ["r2"] and store.holders("web2") == []


def test_lock_limit_must_be_positive(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        store.acquire_lock("k", "r1", 0)


def test_lock_limit_holds_under_thread_contention(store: SqliteStore) -> None:
    seen: list[int] = []
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(20):
                run_id = f"t{n}-{i}"
                if store.acquire_lock("k", run_id, 2):
                    seen.append(len(store.holders("k")))
                    store.release_lock("k", run_id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert seen and max(seen) <= 2
    assert store.holders("k") == []


def test_cooldowns(store: SqliteStore) -> None:
    assert store.cooldown_until("disk-pressure:web1") is None
    store.set_cooldown("disk-pressure:web1", 100.0)
    assert store.cooldown_until("disk-pressure:web1") == 100.0
    store.set_cooldown("disk-pressure:web1", 50.0)
    assert store.cooldown_until("disk-pressure:web1") == 50.0
    assert store.cooldown_until("disk-pressure:web2") is None


# ---------------------------------------------------------------------- kill-switch


def test_global_killswitch_applies_to_every_runbook(store: SqliteStore) -> None:
    assert store.killswitch("disk-pressure") is None and store.killswitch() is None
    store.engage_killswitch("*", reason="bad deploy", actor="alice", at=10.0)
    for name in ("disk-pressure", "anything", None):
        switch = store.killswitch(name)
        assert switch == {
            "scope": "*",
            "engaged": True,
            "reason": "bad deploy",
            "actor": "alice",
            "at": 10.0,
        }
    store.release_killswitch("*", actor="alice", at=11.0)
    assert store.killswitch("disk-pressure") is None


def test_runbook_killswitch_applies_only_to_that_runbook(store: SqliteStore) -> None:
    store.engage_killswitch("disk-pressure", reason="flapping", actor="bob", at=1.0)
    assert store.killswitch("disk-pressure")["reason"] == "flapping"
    assert store.killswitch("restart-nginx") is None
    assert store.killswitch() is None  # no runbook named: only the global switch applies
    store.engage_killswitch("*", reason="all stop", actor="alice", at=2.0)
    assert store.killswitch("disk-pressure")["scope"] == "*"  # global first
    store.release_killswitch("*", actor="alice", at=3.0)
    assert store.killswitch("disk-pressure")["scope"] == "disk-pressure"
    store.release_killswitch("disk-pressure", actor="bob", at=4.0)
    assert store.killswitch("disk-pressure") is None


def test_killswitch_listing_and_history(store: SqliteStore) -> None:
    store.engage_killswitch("zeta", reason="z", actor="a", at=1.0)
    store.engage_killswitch("*", reason="g", actor="a", at=2.0)
    store.engage_killswitch("alpha", reason="first", actor="a", at=3.0)
    store.engage_killswitch("alpha", reason="second", actor="b", at=4.0)
    store.release_killswitch("zeta", actor="a", at=5.0)
    store.release_killswitch("never-engaged", actor="a", at=6.0)  # no-op, not in history
    listed = store.killswitches()
    assert [(s["scope"], s["reason"]) for s in listed] == [("*", "g"), ("alpha", "second")]
    history = store.killswitch_history()
    assert [(h["scope"], h["engaged"]) for h in history] == [
        ("zeta", False),
        ("alpha", True),
        ("alpha", True),
        ("*", True),
        ("zeta", True),
    ]
    with pytest.raises(ValueError, match="scope"):
        store.engage_killswitch("", reason="x", actor="a", at=1.0)


# ------------------------------------------------------------------ schema, files


def test_wal_mode_and_schema_version(store: SqliteStore, tmp_path: Path) -> None:
    assert store.journal_mode() == "wal"
    assert store.schema_version() == SCHEMA_VERSION
    raw = sqlite3.connect(tmp_path / "state.db")
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        raw.close()


def test_reopening_migrates_nothing_and_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with SqliteStore(path) as first:
        first.create_run({"id": "r1"})
    for _ in range(3):
        with SqliteStore(path) as again:
            assert again.schema_version() == SCHEMA_VERSION
            assert again.get_run("r1")["id"] == "r1"


def test_state_directory_is_created(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "deep" / "home" / "state.db") as s:
        s.create_run({"id": "r1"})
    assert (tmp_path / "deep" / "home" / "state.db").is_file()


def test_future_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SqliteStore(path).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match="newer than this executor") as caught:
        SqliteStore(path)
    assert "upgrade runbook" in str(caught.value)


def test_corrupt_file_says_so_and_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database, it is a shopping list\n" * 200)
    with pytest.raises(StoreError, match="corrupt or not a SQLite database") as caught:
        SqliteStore(path)
    assert str(path) in str(caught.value) and "backup" in str(caught.value)


def test_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE invoices (id INTEGER)")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match=r"not a runbook state database.*invoices"):
        SqliteStore(path)


def test_unwritable_location_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="state directory"):
        SqliteStore(blocker / "state.db")
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError, match="cannot open"):
        SqliteStore(tmp_path / "dir.db")


def test_a_writer_holding_the_database_too_long_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path, busy_timeout=0.2)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match=r"locked by another process for more than 0.2 s"):
            store.acquire_lock("k", "r1", 1)
        assert store.holders("k") == []  # readers are not blocked in WAL mode
        holder.execute("ROLLBACK")
        assert store.acquire_lock("k", "r1", 1)
    finally:
        holder.close()
        store.close()


def test_each_thread_gets_its_own_connection_and_close_reopens(store: SqliteStore) -> None:
    _run(store, "r1")
    results: list[str] = []
    t = threading.Thread(target=lambda: results.append(store.get_run("r1")["id"]))
    t.start()
    t.join(timeout=10)
    assert results == ["r1"]
    store.close()
    assert store.get_run("r1")["id"] == "r1"  # reopened lazily


def test_a_new_migration_upgrades_an_old_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.db"
    with SqliteStore(path) as old:
        old.create_run({"id": "r1", "inputs": {"host": "web1"}})
    upgraded = (*store_module._MIGRATIONS, ("CREATE TABLE alerts (fingerprint TEXT)",))
    monkeypatch.setattr(store_module, "_MIGRATIONS", upgraded)
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", len(upgraded))
    for _ in range(2):  # the second open finds nothing to do
        with SqliteStore(path) as new:
            assert new.schema_version() == SCHEMA_VERSION + 1
            assert new.get_run("r1")["inputs"] == {"host": "web1"}


def test_a_failing_migration_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.db"
    SqliteStore(path).close()
    broken = (
        *store_module._MIGRATIONS,
        ("CREATE TABLE alerts (fingerprint TEXT)", "CREATE TABLE oops (("),
    )
    monkeypatch.setattr(store_module, "_MIGRATIONS", broken)
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", len(broken))
    with pytest.raises(StoreError, match="syntax error"):
        SqliteStore(path)
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master")}
        assert "alerts" not in tables
    finally:
        raw.close()
