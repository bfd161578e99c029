"""The run loop in process: ordering, durability, parallelism, guards, outputs, failures.

Real ``SqliteStore`` and ``JsonlAudit`` in tmp_path; actions are the real log
and wait runners or a scripted runner (no process is started here).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from test_engine_kit import Scripted, World, make_world, write_runbook

from executor import conductor as cd
from executor.audit import verify
from executor.engine.snapshot import Snapshots, state_document
from executor.model import RunStatus
from executor.ports import ActionRequest, ActionResult, CancelToken

CHAIN = """\
inputs:
  who: {type: string, default: world}
steps:
  - id: first
    local: {command: "echo {{ inputs.who }}"}
    outputs: {said: "{{ result.stdout }}"}
  - id: second
    needs: [first]
    log: {message: "first said {{ steps.first.outputs.said }}"}
  - id: third
    needs: [second]
    assert: {that: ["steps.second.status == 'succeeded'"]}
"""


@pytest.fixture
def scripted(tmp_path: Path) -> tuple[World, Scripted]:
    runner = Scripted()
    made = make_world(tmp_path, runners={"local": runner})
    yield made, runner
    made.store.close()


def test_a_chain_runs_in_order_with_outputs_and_an_intact_audit_trail(scripted, tmp_path) -> None:
    world, runner = scripted
    book, text = write_runbook(tmp_path, CHAIN)
    run_id, status = world.start(book, text, inputs={"who": "ops"})
    assert status is RunStatus.SUCCEEDED
    assert runner.calls == ["first"]
    assert runner.requests[0].action.command == "echo ops"
    steps = world.state(run_id)["steps"]
    assert steps["first"]["outputs"] == {"said": "ran echo ops"}
    assert [e for e in world.events(run_id)] == [
        "run.requested",
        "run.started",
        "step.intent",
        "step.outcome",
        "step.intent",
        "step.outcome",
        "step.intent",
        "step.outcome",
        "run.finished",
    ]
    message = world.records(run_id, "step.intent")[1].data["action"]["message"]
    assert message == "first said ran echo ops"
    row = world.store.get_run(run_id)
    assert row["status"] == "succeeded" and row["finished"] and row["error"] is None
    assert verify(world.audit.path).ok


def test_intent_is_durable_and_state_saved_before_the_action_starts(scripted, tmp_path) -> None:
    world, runner = scripted
    book, text = write_runbook(tmp_path, CHAIN)
    seen: list[tuple[str, str, str]] = []

    def look(request: ActionRequest, _token: CancelToken) -> None:
        # What a crash at this instant would leave behind, read from the files themselves.
        last = world.audit.records()[-1]
        state = world.store.get_run(request.run_id)["state"]
        seen.append((last.event, last.step, state["steps"][request.step_id]["status"]))
        return None

    runner.hook = look
    world.start(book, text)
    assert seen == [("step.intent", "first", "running")]


def test_a_step_whose_command_cannot_render_fails_without_running(scripted, tmp_path) -> None:
    world, runner = scripted
    book, text = write_runbook(
        tmp_path,
        """\
        steps:
          - id: bad
            local: {command: "echo {{ inputs.missing | default(undefined_name) }}"}
        """.replace("{{ inputs.missing | default(undefined_name) }}", "{{ run.nope.deeper }}"),
    )
    run_id, status = world.start(book, text)
    assert status is RunStatus.FAILED
    assert runner.calls == []
    assert "step.intent" not in world.events(run_id)
    outcome = world.records(run_id, "step.outcome")[0]
    assert outcome.data["ok"] is False and "nope" in outcome.data["error"]


def test_ready_steps_run_in_parallel_but_never_more_than_the_bound(tmp_path: Path) -> None:
    lock = threading.Lock()
    running: list[int] = [0]
    peak: list[int] = [0]
    marked: list[int] = []
    gate = threading.Barrier(2, timeout=5)

    def hook(request: ActionRequest, _token: CancelToken) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        state = world.store.get_run(request.run_id)["state"]
        marked.append(sum(1 for s in state["steps"].values() if s["status"] == "running"))
        gate.wait()  # both slots busy at once, or the test times out
        with lock:
            running[0] -= 1
        return None

    runner = Scripted(hook=hook)
    world = make_world(tmp_path, runners={"local": runner}, max_parallel_steps=2)
    body = "steps:\n" + "".join(
        f"  - id: s{i}\n    local: {{command: 'echo {i}'}}\n" for i in range(6)
    )
    book, text = write_runbook(tmp_path, body)
    _, status = world.start(book, text)
    world.store.close()
    assert status is RunStatus.SUCCEEDED
    assert sorted(runner.calls) == [f"s{i}" for i in range(6)]
    assert peak[0] == 2
    # Only the steps that have a slot are marked running: a crash never leaves queued
    # steps looking started.
    assert max(marked) == 2


def test_a_false_guard_skips_its_branch_and_is_audited(scripted, tmp_path) -> None:
    world, runner = scripted
    book, text = write_runbook(
        tmp_path,
        """\
        inputs:
          go: {type: boolean, default: false}
        steps:
          - id: check
            when: inputs.go
            local: {command: "echo check"}
          - id: after
            needs: [check]
            local: {command: "echo after"}
          - id: cleanup
            needs: [after]
            trigger: always
            log: {message: cleanup}
        """,
    )
    run_id, status = world.start(book, text)
    assert status is RunStatus.SUCCEEDED
    assert runner.calls == []
    assert world.step_status(run_id) == {
        "check": "skipped",
        "after": "skipped",
        "cleanup": "succeeded",
    }
    guard = world.records(run_id, "guard.evaluated")[0]
    assert guard.step == "check" and guard.data["value"] is False
    assert [r.step for r in world.records(run_id, "step.skipped")] == ["check", "after"]


def test_retries_until_the_condition_holds(scripted, tmp_path) -> None:
    world, runner = scripted
    runner.results["poll"] = [
        ActionResult(ok=True, rc=0, stdout="starting"),
        ActionResult(ok=False, rc=1, stdout="", error="connection refused"),
        ActionResult(ok=True, rc=0, stdout="ready"),
    ]
    book, text = write_runbook(
        tmp_path,
        """\
        steps:
          - id: poll
            local: {command: "curl -s localhost/health"}
            retries: {count: 3, delay: 10ms, until: "result.stdout == 'ready'"}
            outputs: {state: "{{ result.stdout }}"}
        """,
    )
    run_id, status = world.start(book, text)
    assert status is RunStatus.SUCCEEDED
    assert runner.calls == ["poll", "poll", "poll"]
    step = world.state(run_id)["steps"]["poll"]
    assert step["attempts"] == 3 and step["outputs"] == {"state": "ready"}
    outcomes = world.records(run_id, "step.outcome")
    assert [o.data["ok"] for o in outcomes] == [False, False, True]
    assert "until condition not met" in outcomes[0].data["error"]
    assert len(world.records(run_id, "step.retry")) == 2


def test_retries_give_up_after_count_and_say_why(scripted, tmp_path) -> None:
    world, runner = scripted
    runner.results["poll"] = [ActionResult(ok=True, rc=0, stdout="starting")]
    book, text = write_runbook(
        tmp_path,
        """\
        steps:
          - id: poll
            local: {command: "curl -s localhost/health"}
            retries: {count: 2, delay: 0s, until: "result.stdout == 'ready'"}
        """,
    )
    run_id, status = world.start(book, text)
    assert status is RunStatus.FAILED
    assert runner.calls == ["poll"] * 3
    step = world.state(run_id)["steps"]["poll"]
    assert step["status"] == "failed" and "until condition not met" in step["error"]
    assert "until condition not met" in world.store.get_run(run_id)["error"]


ROLLBACK = """\
steps:
  - id: one
    local: {command: "echo one"}
    rollback: {local: {command: "undo one"}}
  - id: two
    needs: [one]
    local: {command: "echo two"}
    rollback:
      - local: {command: "undo two a"}
      - local: {command: "undo two b"}
  - id: three
    needs: [two]
    local: {command: "echo three"}
    on_failure: rollback
    rollback: {local: {command: "undo three"}}
  - id: never
    needs: [three]
    local: {command: "echo never"}
"""


def test_rollback_runs_the_saga_newest_first(scripted, tmp_path) -> None:
    world, runner = scripted

    def hook(request: ActionRequest, _token: CancelToken) -> ActionResult | None:
        if request.action.command == "echo three":
            return ActionResult(ok=False, rc=2, error="disk full")
        return None

    runner.hook = hook
    book, text = write_runbook(tmp_path, ROLLBACK)
    run_id, status = world.start(book, text)
    assert status is RunStatus.ROLLED_BACK
    commands = [r.action.command for r in runner.requests]
    assert commands == [
        "echo one",
        "echo two",
        "echo three",
        "undo three",
        "undo two a",
        "undo two b",
        "undo one",
    ]
    assert world.step_status(run_id)["never"] == "skipped"
    row = world.store.get_run(run_id)
    assert "rolled back 4 action(s)" in row["error"]
    assert len(world.records(run_id, "rollback.intent")) == 4


def test_a_failed_rollback_action_fails_the_run(scripted, tmp_path) -> None:
    world, runner = scripted

    def hook(request: ActionRequest, _token: CancelToken) -> ActionResult | None:
        if request.action.command in ("echo three", "undo two a"):
            return ActionResult(ok=False, rc=1, error=f"{request.action.command} broke")
        return None

    runner.hook = hook
    book, text = write_runbook(tmp_path, ROLLBACK)
    run_id, status = world.start(book, text)
    assert status is RunStatus.FAILED
    assert "1 of 4 rollback action(s) failed" in world.store.get_run(run_id)["error"]
    assert "undo one" in [r.action.command for r in runner.requests]


def test_on_failure_continue_tolerates_and_abort_stops(scripted, tmp_path) -> None:
    world, runner = scripted
    runner.results["flaky"] = [ActionResult(ok=False, rc=3, error="exit 3")]
    book, text = write_runbook(
        tmp_path,
        """\
        steps:
          - id: flaky
            local: {command: "echo flaky"}
            on_failure: continue
          - id: next
            local: {command: "echo next"}
        """,
    )
    run_id, status = world.start(book, text)
    assert status is RunStatus.SUCCEEDED
    assert sorted(runner.calls) == ["flaky", "next"]
    assert world.step_status(run_id)["flaky"] == "failed"


def test_an_assert_that_fails_fails_the_step_with_its_message(scripted, tmp_path) -> None:
    world, runner = scripted
    runner.results["measure"] = [ActionResult(ok=True, rc=0, stdout="97")]
    book, text = write_runbook(
        tmp_path,
        """\
        inputs:
          threshold: {type: integer, default: 90}
        steps:
          - id: measure
            local: {command: "df"}
            assert: {that: ["result.stdout | int < inputs.threshold"], message: "disk still full"}
        """,
    )
    run_id, status = world.start(book, text)
    assert status is RunStatus.FAILED
    assert world.state(run_id)["steps"]["measure"]["error"] == "disk still full"


def test_the_saved_state_is_exactly_the_conductor_state(scripted, tmp_path) -> None:
    world, _ = scripted
    book, text = write_runbook(tmp_path, ROLLBACK)
    run_id, _ = world.start(book, text)
    saved = world.state(run_id)
    rebuilt = cd.ConductorState.from_dict(saved)
    assert json.loads(rebuilt.to_json()) == saved
    assert state_document(rebuilt) == json.loads(rebuilt.to_json())


def test_expressions_cannot_change_the_state_they_read(scripted, tmp_path) -> None:
    world, runner = scripted
    runner.results["a"] = [ActionResult(ok=True, rc=0, stdout='{"items": [1, 2]}')]
    book, text = write_runbook(
        tmp_path,
        """\
        steps:
          - id: a
            local: {command: "echo a"}
            outputs: {data: "{{ result.stdout | from_json }}"}
          - id: b
            needs: [a]
            log: {message: "{{ steps.a.outputs.data['items'].append(3) }}"}
        """,
    )
    run_id, status = world.start(book, text)
    assert status is RunStatus.FAILED
    assert world.state(run_id)["steps"]["a"]["outputs"] == {"data": {"items": [1, 2]}}
    assert "sandbox" in world.state(run_id)["steps"]["b"]["error"]


def test_progress_reports_every_step(scripted, tmp_path) -> None:
    world, _ = scripted
    book, text = write_runbook(tmp_path, CHAIN)
    world.start(book, text)
    events = [(e, d.get("step")) for e, d in world.progress]
    assert events == [
        ("run.created", None),
        ("step.started", "first"),
        ("step.finished", "first"),
        ("step.started", "second"),
        ("step.finished", "second"),
        ("step.started", "third"),
        ("step.finished", "third"),
        ("run.finished", None),
    ]


def _finished(world: World, run_id: str) -> dict[str, Any]:
    return world.records(run_id, "run.finished")[0].data


def test_incremental_snapshots_always_equal_the_conductor_state(tmp_path: Path) -> None:
    book, _ = write_runbook(tmp_path, ROLLBACK)
    conductor = cd.Conductor(book)
    snapshots = Snapshots()
    clock = iter(range(1, 1000))

    def check() -> None:
        document = json.loads(json.dumps(snapshots.document(conductor.state)))
        assert document == json.loads(conductor.state.to_json())

    conductor.handle(cd.RunStarted(at=next(clock)))
    check()
    for step_id, ok in (("one", True), ("two", True), ("three", False)):
        conductor.next(lambda *_: True)
        conductor.handle(cd.StepStarted(step_id, 1, at=next(clock)))
        check()
        with pytest.raises(cd.ConductorError):  # refused: the conductor restores its backup
            conductor.handle(cd.StepStarted(step_id, 1, at=next(clock)))
        check()
        conductor.handle(cd.StepFinished(step_id, ok=ok, at=next(clock)))
        check()
    decision = conductor.next(lambda *_: True)
    check()
    assert decision.rollback == (("three", 0),)
