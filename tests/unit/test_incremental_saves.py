"""Saving a run costs what changed (issue 3): conductor undo journal, state saved by parts,
the audit head written without a second fsync. Real SqliteStore and JsonlAudit in tmp_path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from executor import audit as audit_module
from executor import conductor as cd
from executor.audit import JsonlAudit, head_path_for, verify
from executor.engine.snapshot import Snapshots, state_document
from executor.errors import AuditWriteError, NotFound
from executor.model import Runbook, RunStatus
from executor.store import SqliteStore


def book(count: int, *, chain: bool = True, rollback: bool = False) -> Runbook:
    steps: list[dict[str, Any]] = []
    for i in range(count):
        item: dict[str, Any] = {"id": f"s{i}", "local": {"command": "true"}}
        if chain and i:
            item["needs"] = [f"s{i - 1}"]
        if rollback:
            item["on_failure"] = "rollback"
            item["rollback"] = [{"local": {"command": "undo"}}]
        steps.append(item)
    data = {
        "apiVersion": "runbook/v1",
        "kind": "Runbook",
        "metadata": {"name": "inc", "version": "1.0.0"},
        "steps": steps,
    }
    return Runbook.from_mapping(data, source="<test>", sha256="0" * 64)


def allow(*_: object) -> bool:
    return True


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "state.db")
    s.create_run({"id": "r1", "runbook": "inc"})
    yield s
    s.close()


class Spy:
    """Delegates to a store and keeps what each ``save_state`` was given."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.saves: list[dict[str, Any]] = []

    def save_state(self, run_id: str, **parts: Any) -> None:
        self.saves.append(parts)
        self.store.save_state(run_id, **parts)


def whole(conductor: cd.Conductor) -> dict[str, Any]:
    return json.loads(conductor.state.to_json())


# ------------------------------------------------------------------ the conductor


def test_a_refused_event_undoes_in_place_without_copying_the_state(monkeypatch) -> None:
    conductor = cd.Conductor(book(3))
    conductor.handle(cd.RunStarted(at=1.0))
    conductor.next(allow)
    conductor.handle(cd.StepStarted("s0", 1, at=2.0))
    before, state = whole(conductor), conductor.state

    def no_copies(_: object) -> str:
        raise AssertionError("the whole state was serialised for a backup")

    monkeypatch.setattr(cd.ConductorState, "to_json", no_copies)
    with pytest.raises(cd.ConductorError, match="not ready"):
        conductor.handle(cd.StepStarted("s2", 1, at=3.0))
    with pytest.raises(cd.ConductorError, match="cannot be saved"):  # fails half-way through
        conductor.handle(cd.StepFinished("s0", ok=True, hosts={"h": {"x": object()}}, at=3.0))
    conductor.handle(cd.StepFinished("s0", ok=True, at=3.0))
    monkeypatch.undo()
    assert conductor.state is state
    after = whole(conductor)
    assert after["steps"]["s0"]["status"] == "succeeded" and after["seq"] == before["seq"] + 1


def test_an_exception_from_a_guard_inside_next_undoes_everything() -> None:
    conductor = cd.Conductor(book(4, chain=False))
    conductor.handle(cd.RunStarted(at=1.0))
    before = whole(conductor)

    def interrupted(*_: object) -> bool:
        raise KeyboardInterrupt  # not an Exception: the conductor does not catch it

    bare = book(4, chain=False)
    guarded = Runbook.from_mapping(
        {
            "apiVersion": "runbook/v1",
            "kind": "Runbook",
            "metadata": {"name": "inc", "version": "1.0.0"},
            "steps": [
                {"id": s.id, "local": {"command": "true"}, **({"when": "x"} if i == 2 else {})}
                for i, s in enumerate(bare.steps)
            ],
        },
        source="<test>",
        sha256="0" * 64,
    )
    conductor = cd.Conductor(guarded, cd.ConductorState.from_dict(before))
    with pytest.raises(KeyboardInterrupt):
        conductor.next(interrupted)
    assert whole(conductor) == before
    assert conductor.next(allow).start == ("s0", "s1", "s2", "s3")  # the indexes were rebuilt


def test_changed_steps_lists_only_what_the_events_touched() -> None:
    conductor = cd.Conductor(book(50))
    assert conductor.changed_steps() == {f"s{i}" for i in range(50)}  # nothing saved yet
    conductor.handle(cd.RunStarted(at=1.0))
    conductor.mark_saved()
    assert conductor.changed_steps() == set()
    conductor.next(allow)
    conductor.handle(cd.StepStarted("s0", 1, at=2.0))
    assert conductor.changed_steps() == {"s0"}
    conductor.mark_saved()
    with pytest.raises(cd.ConductorError):
        conductor.handle(cd.StepStarted("s5", 1, at=3.0))
    assert conductor.changed_steps() == set()  # a refused event changed nothing
    conductor.handle(cd.StepFinished("s0", ok=True, at=3.0))
    conductor.next(allow)
    assert conductor.changed_steps() == {"s0", "s1"}  # s1 became ready


# ------------------------------------------------------------------ the store


def test_saves_by_parts_read_back_as_the_whole_state_and_write_only_changes(
    store: SqliteStore,
) -> None:
    conductor, snapshots, spy = cd.Conductor(book(6, rollback=True)), Snapshots(), Spy(store)
    clock = iter(float(t) for t in range(1, 1000))

    def save_and_compare() -> None:
        snapshots.save(spy, "r1", conductor, status=conductor.state.status.value)
        assert store.get_run("r1")["state"] == whole(conductor)

    conductor.handle(cd.RunStarted(at=next(clock)))
    save_and_compare()
    assert len(spy.saves[-1]["steps"]) == 6  # the first save writes every record
    for i, ok in ((0, True), (1, True), (2, False)):
        conductor.next(allow)
        conductor.handle(cd.StepStarted(f"s{i}", 1, at=next(clock)))
        save_and_compare()
        assert [sid for _, sid, _ in spy.saves[-1]["steps"]] == [f"s{i}"]
        conductor.handle(cd.StepFinished(f"s{i}", ok=ok, error=None if ok else "x", at=next(clock)))
        save_and_compare()
    while not (decision := conductor.next(allow)).done:  # the saga, newest first
        save_and_compare()
        for step_id, index in decision.rollback:
            conductor.handle(cd.RollbackFinished(step_id, index, ok=True, at=next(clock)))
    save_and_compare()
    assert conductor.run_status is RunStatus.ROLLED_BACK
    assert sum(len(s["history"]) for s in spy.saves) == len(conductor.state.history)
    resumed = cd.Conductor(book(6, rollback=True), cd.ConductorState.from_dict(
        store.get_run("r1")["state"]
    ))  # fmt: skip
    assert whole(resumed) == whole(conductor)


def test_a_whole_state_written_later_replaces_the_parts(store: SqliteStore) -> None:
    conductor = cd.Conductor(book(3))
    conductor.handle(cd.RunStarted(at=1.0))
    Snapshots().save(store, "r1", conductor)
    conductor.next(allow)
    conductor.handle(cd.StepStarted("s0", 1, at=2.0))
    store.update_run("r1", state=state_document(conductor.state))  # `runbook resolve` does this
    assert store.get_run("r1")["state"]["steps"]["s0"]["status"] == "running"
    conductor.handle(cd.StepFinished("s0", ok=True, at=3.0))
    Snapshots().save(store, "r1", conductor)  # a new execution saves by parts again, in full
    assert store.get_run("r1")["state"] == whole(conductor)
    assert [r["state"] for r in store.list_runs()] == [whole(conductor)]
    assert [r["state"] for r in store.runs_by_status(["pending"])] == [whole(conductor)]
    assert "state_rows" not in store.get_run("r1")


def test_history_rewound_behind_the_last_save_drops_the_later_rows(store: SqliteStore) -> None:
    entry = {"at": 1.0, "step": None, "from": "pending", "to": "running"}
    head = {"runbook": "inc", "status": "running"}
    store.save_state("r1", head=head, steps=[], history=[entry, entry, entry], history_from=0)
    store.save_state("r1", head=head, steps=[], history=[], history_from=1)
    assert store.get_run("r1")["state"]["history"] == [entry]


def test_save_state_for_an_unknown_run_writes_nothing(store: SqliteStore) -> None:
    record = {"status": "pending", "attempts": 0}
    with pytest.raises(NotFound, match="runbook runs"):
        store.save_state("ghost", head={}, steps=[(0, "a", record)], history=[], history_from=0)
    assert store.get_steps("ghost") == []


def test_run_fields_reads_a_few_columns_and_refuses_others(store: SqliteStore) -> None:
    store.request_kill("r1", "alice", "wrong host", at=5.0)
    assert store.run_fields("r1", "kill_requested", "kill_by", "kill_reason") == {
        "kill_requested": True,
        "kill_by": "alice",
        "kill_reason": "wrong host",
    }
    with pytest.raises(ValueError, match="unknown run field"):
        store.run_fields("r1", "state")
    with pytest.raises(NotFound):
        store.run_fields("ghost", "status")


# ------------------------------------------------------------------ the audit head


def test_one_fsync_per_record_and_the_head_still_follows(tmp_path: Path, monkeypatch) -> None:
    log = tmp_path / "audit.jsonl"
    sink = JsonlAudit(log)
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(audit_module.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    records = [sink.append("step.intent", data={"i": i}) for i in range(3)]
    assert len(synced) == 3
    assert json.loads(head_path_for(log).read_text()) == {"seq": 3, "hash": records[-1].hash}


@pytest.mark.parametrize("torn", [b"", b"\0" * 90, b"\n"])
def test_a_torn_head_is_reported_then_rewritten_like_a_missing_one(
    tmp_path: Path, torn: bytes
) -> None:
    log = tmp_path / "audit.jsonl"
    sink = JsonlAudit(log)
    for i in range(3):
        sink.append("x", data={"i": i})
    head_path_for(log).write_bytes(torn)
    report = verify(log)
    assert not report.ok and "empty or zero-filled" in (report.reason or "")
    record = JsonlAudit(log).append("after")
    assert verify(log).ok and verify(log).count == 4
    assert json.loads(head_path_for(log).read_text())["hash"] == record.hash


def test_a_garbled_head_is_still_refused(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    JsonlAudit(log).append("x")
    head_path_for(log).write_bytes(b'\0\0{"seq": 9')
    with pytest.raises(AuditWriteError, match="unreadable"):
        JsonlAudit(log).append("y")
