"""Stopping a run in process: kill-switch, `runbook kill`, run timeout, crashes, resume.

A crash is simulated by an exception escaping the run loop right after a
step was handed out (what the store holds then is exactly what a SIGKILL at
that instant leaves); the process-level versions live in tests/integration.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_engine_kit import Scripted, World, in_thread, make_world, wait_for, write_runbook

from executor import engine
from executor.engine import killswitch
from executor.engine.ownership import Holder, lock_key
from executor.errors import KillSwitchEngaged, UsageError
from executor.model import RunStatus
from executor.ports import ActionRequest, ActionResult, CancelToken

THREE = """\
steps:
  - id: one
    local: {command: "echo one"}
  - id: two
    needs: [one]
    local: {command: "sleep 60"}
  - id: three
    needs: [two]
    local: {command: "echo three"}
"""


class Crash(BaseException):
    """Stands for the executor dying: escapes every handler that catches Exception."""


@pytest.fixture
def scripted(tmp_path: Path) -> tuple[World, Scripted]:
    runner = Scripted()
    made = make_world(tmp_path, runners={"local": runner})
    yield made, runner
    made.store.close()


def _hold(request: ActionRequest, token: CancelToken) -> ActionResult | None:
    """Behave like a long command: return only when cut off."""
    if request.action.command == "sleep 60":
        token.wait(10)
        return ActionResult(ok=False, rc=143, cancelled=True, error=f"cancelled: {token.reason}")
    return None


def test_the_kill_switch_is_checked_before_every_step(scripted, tmp_path) -> None:
    world, runner = scripted

    def engage_during_one(request: ActionRequest, _token: CancelToken) -> None:
        if request.step_id == "one":
            killswitch.engage(world.services, reason="stop everything", actor="ic")
        return None

    runner.hook = engage_during_one
    book, text = write_runbook(tmp_path, THREE)
    run_id, status = world.start(book, text)
    assert status is RunStatus.CANCELLED
    assert runner.calls == ["one"]
    assert world.step_status(run_id) == {
        "one": "succeeded",
        "two": "cancelled",
        "three": "cancelled",
    }
    cancelling = world.records(run_id, "run.cancelling")[0]
    assert "kill-switch engaged by ic: stop everything" in cancelling.data["reason"]
    row = world.store.get_run(run_id)
    assert "stop everything" in row["error"]


def test_the_kill_switch_cuts_off_a_step_in_flight_and_reports_what_was_touched(
    scripted, tmp_path
) -> None:
    world, runner = scripted
    runner.hook = _hold
    book, text = write_runbook(tmp_path, THREE)
    thread, box = in_thread(lambda: world.start(book, text))
    wait_for(lambda: "two" in runner.calls)
    killswitch.engage(world.services, reason="bad deploy", actor="ic", runbook="t")
    thread.join(5)
    run_id, status = box["result"]
    assert status is RunStatus.CANCELLED
    assert world.step_status(run_id) == {
        "one": "succeeded",
        "two": "cancelled",
        "three": "cancelled",
    }
    info = engine.run_status(world.services, run_id)
    assert [(t["step"], t["outcome"]) for t in info["touched"]] == [
        ("one", "finished"),
        ("two", "cut off"),
    ]
    finished = world.records(run_id, "run.finished")[0].data
    assert finished["status"] == "cancelled" and len(finished["touched"]) == 2


def test_an_engaged_kill_switch_refuses_new_runs_and_resumes(scripted, tmp_path) -> None:
    world, runner = scripted
    book, text = write_runbook(tmp_path, THREE)
    killswitch.engage(world.services, reason="freeze", actor="ic")
    with pytest.raises(KillSwitchEngaged, match="freeze"):
        world.start(book, text)
    assert runner.calls == []
    refused = world.records(event="run.refused")[0]
    assert refused.data["error"] == "KillSwitchEngaged"
    killswitch.release(world.services, actor="ic")
    assert world.start(book, text)[1] is RunStatus.SUCCEEDED


def test_runbook_kill_stops_a_run_in_flight(scripted, tmp_path) -> None:
    world, runner = scripted
    runner.hook = _hold
    book, text = write_runbook(tmp_path, THREE)
    thread, box = in_thread(lambda: world.start(book, text))
    wait_for(lambda: "two" in runner.calls)
    run_id = world.store.list_runs(limit=1)[0]["id"]
    answer = engine.kill(world.services, run_id, actor="bob", reason="wrong host")
    assert answer["status"] == "stopping"
    thread.join(5)
    assert box["result"][1] is RunStatus.CANCELLED
    assert runner.calls == ["one", "two"]
    assert "killed by bob: wrong host" in world.store.get_run(run_id)["error"]
    with pytest.raises(UsageError, match="already ended"):
        engine.kill(world.services, run_id, actor="bob", reason="again")


def test_the_run_timeout_cuts_off_the_step_and_fails_the_run(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    book, text = write_runbook(
        tmp_path,
        """\
        policy: {timeout: 300ms}
        steps:
          - id: settle
            wait: {duration: 30s}
          - id: after
            needs: [settle]
            log: {message: after}
        """,
    )
    run_id, status = world.start(book, text)
    assert status is RunStatus.FAILED
    assert world.step_status(run_id) == {"settle": "cancelled", "after": "cancelled"}
    assert "run.timed_out" in world.events(run_id)
    assert world.store.get_run(run_id)["error"] == "run timed out"


def _start_and_crash(world: World, book, text, event: str, step: str) -> str:
    request = engine.RunRequest(runbook=book, inputs={}, actor="alice", runbook_text=text)

    def progress(name, data) -> None:
        if name == event and data.get("step") == step:
            raise Crash(f"executor died after {event} {step}")

    with pytest.raises(Crash):
        engine.start(world.services, request, on_progress=progress, wait_for_people=False)
    return world.store.list_runs(limit=1)[0]["id"]


def test_a_step_in_flight_at_a_crash_becomes_unknown_and_nothing_runs_twice(
    scripted, tmp_path
) -> None:
    world, runner = scripted
    book, text = write_runbook(tmp_path, THREE.replace("sleep 60", "echo two"))
    run_id = _start_and_crash(world, book, text, "step.started", "two")
    assert world.step_status(run_id)["two"] == "running"
    assert world.store.holders(lock_key(run_id)) == []  # released on the way out
    calls_before = list(runner.calls)

    status = engine.resume(world.services, run_id, wait_for_people=False)
    assert status is RunStatus.WAITING
    assert world.step_status(run_id) == {"one": "succeeded", "two": "unknown", "three": "pending"}
    assert "run.recovered" in world.events(run_id)
    with pytest.raises(UsageError, match="not unknown"):
        engine.resolve(world.services, run_id, "one", succeeded=True, actor="bob")
    engine.resolve(world.services, run_id, "two", succeeded=True, actor="bob")
    assert engine.resume(world.services, run_id) is RunStatus.SUCCEEDED
    # 'one' finished before the crash and 'two' was resolved: neither ran again.
    assert runner.calls[len(calls_before) :] == ["three"]
    assert runner.calls.count("one") == 1
    resolved = world.records(run_id, "step.resolved")[0]
    assert resolved.actor == "bob" and resolved.data == {"as": "succeeded"}


def test_a_step_resolved_as_failed_applies_its_on_failure(scripted, tmp_path) -> None:
    world, runner = scripted
    book, text = write_runbook(tmp_path, THREE.replace("sleep 60", "echo two"))
    run_id = _start_and_crash(world, book, text, "step.started", "two")
    engine.resume(world.services, run_id, wait_for_people=False)
    engine.resolve(world.services, run_id, "two", succeeded=False, actor="bob")
    # The verdict ends the run (on_failure: abort): resolve closes it, nothing more runs.
    row = world.store.get_run(run_id)
    assert row["status"] == "failed" and "resolved as failed by bob" in row["error"]
    assert world.events(run_id)[-1] == "run.finished"
    assert "three" not in runner.calls
    with pytest.raises(UsageError, match="already ended"):
        engine.resume(world.services, run_id)


def test_a_run_executed_by_a_live_process_cannot_be_resumed_or_resolved(scripted, tmp_path) -> None:
    world, _ = scripted
    book, text = write_runbook(tmp_path, THREE.replace("sleep 60", "echo two"))
    run_id = _start_and_crash(world, book, text, "step.started", "two")
    me = Holder.me()
    world.store.acquire_lock(lock_key(run_id), str(me), 1)
    with pytest.raises(UsageError, match="being executed by process"):
        engine.resume(world.services, run_id)
    with pytest.raises(UsageError, match="being executed by process"):
        engine.resolve(world.services, run_id, "two", succeeded=True, actor="bob")
    assert engine.run_status(world.services, run_id)["executing"] == me.describe()
    # The holder dies (a pid that is not running): the next resume takes over.
    world.store.release_lock(lock_key(run_id), str(me))
    dead = Holder(me.host, 2**22 + 17, "1", "dead")
    world.store.acquire_lock(lock_key(run_id), str(dead), 1)
    assert engine.resume(world.services, run_id, wait_for_people=False) is RunStatus.WAITING


def test_resume_is_refused_while_the_kill_switch_applies(scripted, tmp_path) -> None:
    world, _ = scripted
    book, text = write_runbook(tmp_path, THREE.replace("sleep 60", "echo two"))
    run_id = _start_and_crash(world, book, text, "step.started", "two")
    killswitch.engage(world.services, reason="freeze", actor="ic")
    with pytest.raises(KillSwitchEngaged):
        engine.resume(world.services, run_id)
    assert world.step_status(run_id)["two"] == "running"


def test_killing_a_run_nobody_executes_cancels_it_at_once(scripted, tmp_path) -> None:
    world, runner = scripted
    book, text = write_runbook(tmp_path, THREE.replace("sleep 60", "echo two"))
    run_id = _start_and_crash(world, book, text, "step.started", "two")
    answer = engine.kill(world.services, run_id, actor="bob", reason="abandon")
    assert answer["status"] == "cancelled"
    assert world.step_status(run_id) == {
        "one": "succeeded",
        "two": "cancelled",
        "three": "cancelled",
    }
    touched = engine.run_status(world.services, run_id)["touched"]
    assert [(t["step"], t["outcome"]) for t in touched] == [("one", "finished"), ("two", "unknown")]
    assert runner.calls == ["one"]  # the 'crash' came before 'two' reached a worker


def test_resuming_a_finished_run_is_refused(scripted, tmp_path) -> None:
    world, _ = scripted
    book, text = write_runbook(tmp_path, THREE.replace("sleep 60", "echo two"))
    run_id, _ = world.start(book, text)
    with pytest.raises(UsageError, match="already ended"):
        engine.resume(world.services, run_id)


def test_a_rollback_in_flight_at_a_crash_is_resolved_by_an_operator(scripted, tmp_path) -> None:
    world, runner = scripted
    book, text = write_runbook(
        tmp_path,
        """\
        steps:
          - id: one
            local: {command: "echo one"}
            rollback: {local: {command: "undo one"}}
          - id: two
            needs: [one]
            local: {command: "echo two"}
            on_failure: rollback
            rollback: {local: {command: "undo two"}}
        """,
    )
    runner.results["two"] = [ActionResult(ok=False, rc=1, error="broke")]
    run_id = _start_and_crash(world, book, text, "rollback.started", "two")
    # Durable before it ran: the saga says 'undo two' is running.
    assert world.state(run_id)["saga"][0]["status"] == "running"

    assert engine.resume(world.services, run_id) is RunStatus.WAITING  # operator needed
    info = engine.run_status(world.services, run_id)
    assert info["summary"] == "waiting for an operator to resolve rollback two[0]"
    engine.resolve(world.services, run_id, "two", succeeded=True, actor="bob")
    assert engine.resume(world.services, run_id) is RunStatus.ROLLED_BACK
    commands = [r.action.command for r in runner.requests]
    assert commands == ["echo one", "echo two", "undo one"]  # 'undo two' never ran twice
    assert world.records(run_id, "rollback.resolved")[0].data == {"as": "succeeded"}
