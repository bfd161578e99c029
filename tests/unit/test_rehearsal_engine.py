"""Rehearsing one scenario: the real engine and conductor fed scripted results.

Each test writes a small runbook and a scenario file to tmp_path, rehearses
it through the public entry points (``load_scenario_file`` then ``rehearse``)
and looks at what the run did: status, path, outputs, audit trail, and the
simulated clock (nothing may really wait).
"""

from __future__ import annotations

import itertools
import textwrap
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from executor.rehearsal import Outcome, RunbookFinder, judge, load_scenario_file, rehearse

RUNBOOK = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: demo, version: 1.0.0}
inputs:
  host: {type: string, default: web1}
  token: {type: string, default: "", secret: true}
targets:
  node: {hosts: "{{ inputs.host }}"}
credentials:
  ops: {vault_ssh: {role: responder, principals: [ops], ttl: 10m}}
policy: {timeout: 3h, max_hosts: 3, concurrency: {key: "{{ inputs.host }}", limit: 1}}
steps:
  - id: probe
    ssh: {target: node, credential: ops, command: "uptime"}
    outputs: {load: "{{ result.stdout | trim | int }}"}
    retries: {count: 2, delay: 10m}
  - id: calm
    needs: [probe]
    when: steps.probe.outputs.load < 5
    log: {message: "calm on {{ inputs.host }}"}
  - id: busy
    needs: [probe]
    when: steps.probe.outputs.load >= 5
    approval: {message: "act?", approvers: [ops], quorum: 1, timeout: 15m}
  - id: act
    needs: [busy]
    local: {command: "fix"}
    on_failure: rollback
    rollback: [{local: {command: "undo1"}}, {local: {command: "undo2"}}]
  - id: check
    needs: [act]
    http: {url: "http://svc/health", expect_status: [200]}
    on_failure: rollback
    outputs: {state: "{{ result.json.state }}"}
  - id: settle
    needs: [check]
    wait: {duration: 2h}
    timeout: 3h
  - id: notify
    needs: [calm, settle]
    trigger: always
    log: {message: "done"}
"""


def write(tmp_path: Path, scenarios: list[dict[str, Any]], runbook: str = RUNBOOK) -> Path:
    (tmp_path / "demo.yaml").write_text(runbook, encoding="utf-8")
    tests = tmp_path / "tests"
    tests.mkdir(exist_ok=True)
    body = {"apiVersion": "runbook/v1", "kind": "Scenarios", "runbook": "demo"}
    body["scenarios"] = scenarios
    path = tests / "demo.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    return path


def run(tmp_path: Path, runbook: str = RUNBOOK, **scenario: Any) -> Outcome:
    scenario.setdefault("name", "s")
    scenario.setdefault("expect", {"status": "succeeded"})
    path = write(tmp_path, [scenario], runbook)
    loaded = load_scenario_file(path, RunbookFinder())
    return rehearse(loaded.scenarios[0])


BUSY = {
    "probe": {"stdout": "9\n"},
    "busy": {"approve_as": "alice"},
    "check": {"json": {"state": "green"}},
}


def data_of(outcome: Outcome, event: str, step: str | None = None) -> list[dict[str, Any]]:
    """The data of ``event`` records, of one step if given, in order."""
    return [
        dict(r.data)
        for r in outcome.records
        if r.event == event and (step is None or r.step == step)
    ]


def test_a_calm_host_takes_the_calm_branch(tmp_path: Path) -> None:
    outcome = run(tmp_path, steps={"probe": {"stdout": "2\n"}})
    assert outcome.status == "succeeded"
    assert outcome.path == ["probe", "calm", "notify"]
    assert outcome.outputs["probe"] == {"load": 2}
    assert outcome.steps["busy"] == "skipped" and outcome.steps["act"] == "skipped"
    assert not outcome.problems


def test_a_busy_host_is_approved_acted_on_and_checked(tmp_path: Path) -> None:
    outcome = run(tmp_path, steps=BUSY)
    assert outcome.status == "succeeded"
    assert outcome.path == ["probe", "busy", "act", "check", "settle", "notify"]
    assert outcome.outputs["check"] == {"state": "green"}
    granted = data_of(outcome, "approval.granted")
    assert [g["approver"] for g in granted] == ["alice"]
    assert "ops" in granted[0]["groups"]  # synthesised with the groups the approval asks for


def test_the_run_goes_through_the_engines_gates_and_audit(tmp_path: Path) -> None:
    outcome = run(tmp_path, steps=BUSY)
    events = outcome.events
    assert events[0] == "run.requested" and events[-1] == "run.finished"
    for event in ("run.started", "credential.issued", "credential.revoked", "guard.evaluated",
                  "approval.requested", "run.paused", "run.resumed", "step.intent"):  # fmt: skip
        assert event in events, event
    issued = data_of(outcome, "credential.issued")[0]
    assert issued["simulated"] is True and issued["principals"] == ["ops"]
    chain = outcome.records
    assert all(b.prev == a.hash for a, b in itertools.pairwise(chain))


def test_attempts_follow_the_list_and_retry_delays_take_no_real_time(tmp_path: Path) -> None:
    began = time.perf_counter()
    outcome = run(tmp_path, steps={"probe": [{"rc": 1}, {"unreachable": True}, {"stdout": "1"}]})
    assert time.perf_counter() - began < 5  # two retries of 10 minutes each
    assert outcome.status == "succeeded"
    assert [d["attempt"] for d in data_of(outcome, "step.intent", "probe")] == [1, 2, 3]
    assert [d["delay"] for d in data_of(outcome, "step.retry")] == [600.0, 600.0]


def test_the_last_result_repeats_until_retries_run_out(tmp_path: Path) -> None:
    outcome = run(tmp_path, steps={"probe": {"rc": 3, "stderr": "boom"}})
    assert outcome.status == "failed"
    assert outcome.path == ["probe", "notify"]  # notify: trigger always
    outcome_records = data_of(outcome, "step.outcome", "probe")
    assert len(outcome_records) == 3 and all(not r["ok"] for r in outcome_records)
    assert "boom" in outcome_records[-1]["error"]


def elapsed(outcome: Outcome) -> float:
    """Simulated seconds between the first and the last audit record."""
    first, last = (datetime.fromisoformat(r.ts) for r in (outcome.records[0], outcome.records[-1]))
    return (last - first).total_seconds()


def test_a_wait_moves_the_simulated_clock_without_waiting(tmp_path: Path) -> None:
    began = time.perf_counter()
    outcome = run(tmp_path, steps=BUSY)  # settle waits 2h
    assert time.perf_counter() - began < 5
    assert outcome.status == "succeeded"
    assert 2 * 3600 <= elapsed(outcome) < 3 * 3600


def test_scripted_durations_move_the_clock_and_the_run_timeout_applies(tmp_path: Path) -> None:
    outcome = run(tmp_path, steps={"probe": {"stdout": "1", "duration": "4h"}})
    assert outcome.status == "failed"
    assert "run.timed_out" in outcome.events
    assert outcome.steps["notify"] == "cancelled"


def test_a_timeout_result_is_a_timed_out_failure(tmp_path: Path) -> None:
    outcome = run(tmp_path, steps={"probe": {"timeout": True}})
    assert outcome.status == "failed"
    last = data_of(outcome, "step.outcome", "probe")[-1]
    assert last["timed_out"] is True and last["hosts"]["web1"]["cut_off"] is True


def test_per_host_results_fan_out_and_one_failing_host_fails_the_step(tmp_path: Path) -> None:
    steps = {"probe": {"stdout": "1", "hosts": {"web2": {"rc": 2, "stderr": "disk error"}}}}
    outcome = run(tmp_path, hosts={"node": ["web1", "web2"]}, steps=steps)
    assert outcome.status == "failed"
    intent = data_of(outcome, "step.intent", "probe")[0]
    assert intent["hosts"] == ["web1", "web2"]
    hosts = data_of(outcome, "step.outcome", "probe")[-1]["hosts"]
    assert hosts["web1"]["ok"] is True and hosts["web2"]["ok"] is False


def test_hosts_named_in_results_are_the_targets_hosts(tmp_path: Path) -> None:
    steps = {"probe": {"hosts": {"a1": {"stdout": "1"}, "a2": {"stdout": "1"}}}}
    outcome = run(tmp_path, steps=steps)
    assert data_of(outcome, "step.intent", "probe")[0]["hosts"] == ["a1", "a2"]


def test_blast_radius_still_applies(tmp_path: Path) -> None:
    outcome = run(tmp_path, hosts={"node": ["w1", "w2", "w3", "w4"]})
    assert outcome.status == "failed"
    assert "max_hosts" in data_of(outcome, "step.outcome", "probe")[0]["error"]
    assert not data_of(outcome, "step.intent", "probe")


def test_an_http_status_outside_expect_status_fails(tmp_path: Path) -> None:
    outcome = run(tmp_path, steps={**BUSY, "check": {"status": 503, "stdout": "down"}})
    assert outcome.status == "rolled_back"
    assert "503" in data_of(outcome, "step.outcome", "check")[-1]["error"]


def test_a_failure_after_the_action_runs_every_rollback_action(tmp_path: Path) -> None:
    outcome = run(tmp_path, steps={**BUSY, "check": {"fail": True}})
    assert outcome.status == "rolled_back"
    assert outcome.path[-2:] == ["rollback:act", "notify"]
    assert [d["index"] for d in data_of(outcome, "rollback.intent")] == [0, 1]


def test_rollback_results_are_scripted_by_position(tmp_path: Path) -> None:
    outcome = run(
        tmp_path,
        steps={**BUSY, "act": {"rc": 1}},
        rollbacks={"act": [{}, {"fail": True, "stderr": "undo2 broke"}]},
    )
    assert outcome.status == "failed"  # a rollback action failed: not rolled back
    assert [d["ok"] for d in data_of(outcome, "rollback.outcome")] == [True, False]


@pytest.mark.parametrize(
    ("answer", "status", "event"),
    [
        ({"deny_as": "bob", "reason": "not now"}, "failed", "approval.denied"),
        ({"expire": True}, "failed", "approval.expired"),
    ],
)
def test_denied_and_expired_approvals_stop_the_branch(
    tmp_path: Path, answer: dict[str, Any], status: str, event: str
) -> None:
    outcome = run(tmp_path, steps={"probe": {"stdout": "9"}, "busy": answer})
    assert outcome.status == status
    assert event in outcome.events
    assert outcome.steps["act"] == "skipped"


def test_the_requester_cannot_approve_their_own_run(tmp_path: Path) -> None:
    outcome = run(tmp_path, actor="alice", steps=BUSY)
    assert outcome.status == "waiting"
    refused = data_of(outcome, "approval.refused")
    assert refused and "four-eyes" in refused[0]["reason"]


def test_a_declared_identity_outside_the_approver_groups_is_refused(tmp_path: Path) -> None:
    outcome = run(tmp_path, identities={"alice": ["dev"]}, steps=BUSY)
    assert outcome.status == "waiting"
    assert "must belong to ops" in data_of(outcome, "approval.refused")[0]["reason"]


def test_an_unscripted_approval_is_granted_by_synthesised_approvers(tmp_path: Path) -> None:
    outcome = run(tmp_path, steps={"probe": {"stdout": "9"}, "check": {"json": {"state": "ok"}}})
    assert outcome.status == "succeeded"
    assert [d["approver"] for d in data_of(outcome, "approval.granted")] == ["approver-1"]


def test_strict_scenarios_refuse_unscripted_steps(tmp_path: Path) -> None:
    outcome = run(tmp_path, strict=True, steps={"probe": {"stdout": "9"}})
    assert any("'busy'" in p and "strict" in p for p in outcome.problems)
    outcome = run(tmp_path, strict=True, steps=BUSY)
    assert any("step 'act' ran but the scenario gives it no result" in p for p in outcome.problems)
    assert not judge(outcome).passed


def test_the_kill_switch_before_a_step_cancels_the_run_there(tmp_path: Path) -> None:
    outcome = run(tmp_path, killswitch_before="act", steps=BUSY)
    assert outcome.status == "cancelled"
    assert outcome.path == ["probe", "busy"]
    assert "killswitch.engaged" in outcome.events and outcome.steps["act"] == "cancelled"
    assert not outcome.problems


def test_a_kill_switch_step_never_reached_is_a_problem(tmp_path: Path) -> None:
    outcome = run(tmp_path, killswitch_before="act", steps={"probe": {"stdout": "1"}})
    assert outcome.status == "succeeded"
    assert any("never reached" in p for p in outcome.problems)


def test_secret_inputs_are_masked_in_outputs_and_audit(tmp_path: Path) -> None:
    book = RUNBOOK.replace(
        'outputs: {load: "{{ result.stdout | trim | int }}"}',
        'outputs: {load: "{{ result.stdout.split()[0] | int }}", raw: "{{ result.stdout }}"}',
    )
    steps = {"probe": {"stdout": "1 s3cr3t-t0ken"}}
    outcome = run(tmp_path, book, inputs={"token": "s3cr3t-t0ken"}, steps=steps)
    assert outcome.outputs["probe"]["raw"] == "1 ***"
    assert all("s3cr3t-t0ken" not in str(r.data) for r in outcome.records)


def test_parallel_branches_take_the_same_path_every_time(tmp_path: Path) -> None:
    book = textwrap.dedent(
        """\
        apiVersion: runbook/v1
        kind: Runbook
        metadata: {name: demo, version: 1.0.0}
        steps:
          - {id: a, local: {command: a}, retries: {count: 1, delay: 5s}}
          - {id: b, local: {command: b}}
          - {id: d, needs: [a], local: {command: d}}
          - {id: c, needs: [b], local: {command: c}}
        """
    )
    paths = {tuple(run(tmp_path, book, steps={"a": [{"rc": 1}, {}]}).path) for _ in range(15)}
    assert paths == {("a", "b", "c", "d")}


def test_a_rehearsal_opens_no_connection_and_starts_no_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket
    import subprocess

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("a rehearsal must not touch the network or run a process")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    outcome = run(tmp_path, steps=BUSY)
    assert outcome.status == "succeeded" and not outcome.problems


def test_vault_kv_values_come_from_the_scenario_and_are_masked(tmp_path: Path) -> None:
    book = textwrap.dedent(
        """\
        apiVersion: runbook/v1
        kind: Runbook
        metadata: {name: demo, version: 1.0.0}
        credentials:
          db: {vault_kv: {path: app/db, key: password}}
        steps:
          - id: use
            http:
              url: "http://svc/rotate"
              method: POST
              json: {password_b64: "{{ secrets.db | b64encode }}"}
            outputs: {said: "{{ result.stdout }}"}
        """
    )
    secret = "kv-s3cret-value-42"
    outcome = run(tmp_path, book, secrets={"db": secret}, steps={"use": {"stdout": f"ok {secret}"}})
    assert outcome.status == "succeeded", outcome.problems
    assert outcome.outputs["use"]["said"] == "ok ***"
    assert "credential.issued" in outcome.events
    assert all(secret not in str(r.data) for r in outcome.records)
