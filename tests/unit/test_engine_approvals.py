"""Approvals in process: who may approve, quorum, deny, expiry, the plan shown, pause/resume."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_engine_kit import (
    IDENTITIES,
    Scripted,
    World,
    in_thread,
    make_world,
    wait_for,
    write_runbook,
)

from executor import engine
from executor.engine.approvals import decide
from executor.errors import ApprovalRefused
from executor.model import RunStatus

GATED = """\
inputs:
  host: {{type: string, pattern: "^[a-z0-9.-]+$"}}
  token: {{type: string, secret: true, default: hunter2-secret}}
policy: {{self_approval: {self_approval}}}
steps:
  - id: measure
    local: {{command: "df -h /"}}
  - id: approve
    needs: [measure]
    approval:
      message: "Delete old logs on {{{{ inputs.host }}}}?"
      approvers: [sre]
      quorum: {quorum}
      timeout: 15m
  - id: clean
    needs: [approve]
    local: {{command: "clean-logs --host {{{{ inputs.host }}}} --token {{{{ inputs.token }}}}"}}
    on_failure: rollback
    rollback: {{local: {{command: "restore-logs {{{{ inputs.host }}}}"}}}}
  - id: notify
    needs: [clean]
    trigger: always
    log: {{message: "done with {{{{ inputs.host }}}}"}}
"""


def gated(quorum: int = 1, self_approval: bool = False) -> str:
    return GATED.format(quorum=quorum, self_approval=str(self_approval).lower())


@pytest.fixture
def scripted(tmp_path: Path) -> tuple[World, Scripted]:
    runner = Scripted()
    made = make_world(tmp_path, runners={"local": runner})
    yield made, runner
    made.store.close()


def _waiting_run(world: World, tmp_path: Path, **kw) -> tuple[str, object]:
    book, text = write_runbook(tmp_path, gated(**kw))
    run_id, status = world.start(book, text, inputs={"host": "web1"})
    assert status is RunStatus.WAITING
    return run_id, book


def _decide(world: World, book, run_id: str, who: str, approve: bool = True, reason=None):
    return decide(
        world.services,
        book,
        run_id,
        "approve",
        approver=IDENTITIES.get(who) or world.services.identity(who),
        approve=approve,
        reason=reason,
    )


def test_status_shows_the_rendered_plan_of_the_gated_steps(scripted, tmp_path) -> None:
    world, runner = scripted
    run_id, _ = _waiting_run(world, tmp_path)
    assert runner.calls == ["measure"]
    info = engine.run_status(world.services, run_id)
    assert info["summary"] == "waiting for approval of approve"
    (pending,) = info["pending_approvals"]
    assert pending["message"] == "Delete old logs on web1?"
    assert pending["approvers"] == ["sre"] and pending["quorum"] == 1
    assert pending["decisions"] == []
    assert pending["expires_at"] == pytest.approx(pending["waiting_since"] + 900)
    plan = {item["step"]: item for item in pending["plan"]}
    assert list(plan) == ["clean", "notify"]
    # Rendered with the run's inputs; the secret input never appears.
    assert plan["clean"]["action"]["command"] == "clean-logs --host web1 --token '***'"
    assert plan["clean"]["rollback"] == [{"command": "restore-logs {{ inputs.host }}"}]
    requested = world.records(run_id, "approval.requested")[0]
    assert requested.sha256 == world.store.get_run(run_id)["sha256"]
    assert "hunter2" not in str(requested.data)
    announced = next(d for e, d in world.progress if e == "approval.requested")
    assert announced["plan"][0]["action"]["command"] == "clean-logs --host web1 --token ***"
    assert announced["message"] == "Delete old logs on web1?"


def test_an_approver_outside_the_groups_is_refused_and_audited(scripted, tmp_path) -> None:
    world, _ = scripted
    run_id, book = _waiting_run(world, tmp_path)
    with pytest.raises(ApprovalRefused, match="must belong to sre"):
        _decide(world, book, run_id, "mallory")
    with pytest.raises(ApprovalRefused, match="their groups: none"):
        _decide(world, book, run_id, "stranger")
    refused = world.records(run_id, "approval.refused")
    assert [r.actor for r in refused] == ["mallory", "stranger"]
    assert world.store.get_approvals(run_id) == []


def test_the_initiator_may_not_approve_their_own_run(scripted, tmp_path) -> None:
    world, _ = scripted
    run_id, book = _waiting_run(world, tmp_path)
    with pytest.raises(ApprovalRefused, match="four-eyes"):
        _decide(world, book, run_id, "alice")


def test_policy_can_allow_self_approval(scripted, tmp_path) -> None:
    world, runner = scripted
    run_id, book = _waiting_run(world, tmp_path, self_approval=True)
    _decide(world, book, run_id, "alice")
    assert engine.resume(world.services, run_id) is RunStatus.SUCCEEDED
    assert runner.calls == ["measure", "clean"]


def test_a_quorum_needs_distinct_approvers(scripted, tmp_path) -> None:
    world, runner = scripted
    run_id, book = _waiting_run(world, tmp_path, quorum=2)
    _decide(world, book, run_id, "bob")
    with pytest.raises(ApprovalRefused, match="distinct approvers"):
        _decide(world, book, run_id, "bob")
    assert engine.resume(world.services, run_id, wait_for_people=False) is RunStatus.WAITING
    assert runner.calls == ["measure"]
    pending = engine.run_status(world.services, run_id)["pending_approvals"][0]
    assert [d["approver"] for d in pending["decisions"]] == ["bob"]
    _decide(world, book, run_id, "carol", reason="looks right")
    assert engine.resume(world.services, run_id) is RunStatus.SUCCEEDED
    assert runner.calls == ["measure", "clean"]
    granted = world.records(run_id, "approval.granted")
    assert [g.actor for g in granted] == ["bob", "carol"]
    assert all(g.data["runbook_sha256"] == book.sha256 and g.sha256 == book.sha256 for g in granted)
    approve = world.state(run_id)["steps"]["approve"]
    assert approve["reason"] == "approved by bob, carol"


def test_a_waiting_run_picks_up_approvals_from_another_process(scripted, tmp_path) -> None:
    world, runner = scripted
    book, text = write_runbook(tmp_path, gated())
    thread, box = in_thread(
        lambda: world.start(book, text, inputs={"host": "web1"}, wait_for_people=True)
    )
    wait_for(lambda: any(e == "approval.requested" for e, _ in world.progress))
    run_id = world.store.list_runs(limit=1)[0]["id"]
    _decide(world, book, run_id, "bob")
    thread.join(5)
    assert box["result"][1] is RunStatus.SUCCEEDED
    assert runner.calls == ["measure", "clean"]
    assert ("approval.decided", "approve") in [(e, d.get("step")) for e, d in world.progress]


def test_a_denial_applies_on_failure_of_the_approval_step(scripted, tmp_path) -> None:
    world, runner = scripted
    run_id, book = _waiting_run(world, tmp_path)
    _decide(world, book, run_id, "bob", approve=False, reason="not during the sale")
    assert engine.resume(world.services, run_id) is RunStatus.FAILED
    assert runner.calls == ["measure"]
    steps = world.step_status(run_id)
    assert steps["approve"] == "failed" and steps["clean"] == "skipped"
    assert steps["notify"] == "succeeded"  # trigger: always still runs
    assert "denied by bob: not during the sale" in world.store.get_run(run_id)["error"]
    assert world.records(run_id, "approval.denied")[0].data["reason"] == "not during the sale"


def test_an_expired_approval_is_denied_and_late_answers_do_not_count(scripted, tmp_path) -> None:
    world, runner = scripted
    run_id, book = _waiting_run(world, tmp_path)
    world.clock.advance(16 * 60)
    with pytest.raises(ApprovalRefused, match="expired"):
        _decide(world, book, run_id, "bob")
    assert engine.resume(world.services, run_id) is RunStatus.FAILED
    assert runner.calls == ["measure"]
    assert "run.paused" in world.events(run_id)
    assert world.records(run_id, "approval.expired")[0].step == "approve"
    assert "denied by timeout" in world.state(run_id)["steps"]["approve"]["error"]


def test_an_answer_recorded_after_the_deadline_is_ignored(scripted, tmp_path) -> None:
    world, runner = scripted
    run_id, _ = _waiting_run(world, tmp_path)
    # Slipped in behind decide()'s back (clock skew between two CLIs, say).
    world.store.add_approval(
        run_id, "approve", {"approver": "bob", "decision": "approve", "at": 4102444800.0}
    )
    world.clock.advance(16 * 60)
    assert engine.resume(world.services, run_id) is RunStatus.FAILED
    assert runner.calls == ["measure"]


def test_an_approval_is_bound_to_the_runbook_content(scripted, tmp_path) -> None:
    world, _ = scripted
    run_id, _ = _waiting_run(world, tmp_path)
    edited, _ = write_runbook(tmp_path, gated().replace("df -h /", "df -h /var"))
    with pytest.raises(ApprovalRefused, match="content changed"):
        _decide(world, edited, run_id, "bob")


def test_approving_a_step_that_does_not_wait_is_refused(scripted, tmp_path) -> None:
    world, _ = scripted
    run_id, book = _waiting_run(world, tmp_path)
    with pytest.raises(ApprovalRefused, match="is a local step"):
        decide(world.services, book, run_id, "clean", approver=IDENTITIES["bob"], approve=True)
    _decide(world, book, run_id, "bob")
    engine.resume(world.services, run_id)
    with pytest.raises(ApprovalRefused, match="not waiting"):
        _decide(world, book, run_id, "carol")
