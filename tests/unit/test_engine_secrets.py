"""Secrets never leave in clear, and the audit log fails closed (in process).

A secret input and a credential's secret reach commands, outputs, errors and
guards; the test then greps every byte the executor wrote (audit log, its
head, the SQLite database and its WAL) and everything it reported to the
terminal for the secret and its base64 and URL-encoded forms.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest
from test_engine_kit import Scripted, dumps, make_world, write_runbook

from executor import engine
from executor.errors import AuditWriteError
from executor.model import RunStatus
from executor.ports import ActionRequest, ActionResult, CancelToken, IssuedCredential

SECRET = "pa55/w0rd+&=x?"
VAULT_SECRET = "kv-Th1s-1s-n0t-f0r-y0u"


def forms(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [
        raw,
        base64.b64encode(raw),
        base64.b64encode(raw).rstrip(b"="),
        quote(secret, safe="").encode(),
    ]


class KvProvider:
    """Issues one KV secret per run and remembers revocations (no Vault needed here)."""

    def __init__(self) -> None:
        self.revoked = 0

    def issue(self, spec, *, run_id: str, ttl: float) -> IssuedCredential:
        return IssuedCredential(
            name=spec.name,
            kind="vault_kv",
            public={"path": spec.path, "lease_id": "kv/lease/1"},
            material=VAULT_SECRET,
            secret_values=(VAULT_SECRET,),
        )

    def revoke_all(self) -> list[dict]:
        self.revoked += 1
        return [{"lease_id": "kv/lease/1", "result": "revoked"}]


def test_secrets_are_masked_in_audit_state_progress_and_errors(tmp_path: Path) -> None:
    def echo_back(request: ActionRequest, _token: CancelToken) -> ActionResult:
        # A command that prints what it got, plainly and encoded, then fails mentioning it.
        text = request.action.command
        raw = f"{SECRET} {VAULT_SECRET}".encode()
        output = (
            f"{text}\n{base64.b64encode(raw).decode()}\n{quote(SECRET, safe='')}\n"
            f"Authorization: Basic {base64.b64encode(f'admin:{SECRET}'.encode()).decode()}\n"
        )
        ok = request.step_id != "fails"
        return ActionResult(
            ok=ok,
            rc=0 if ok else 1,
            stdout=request.mask(output),
            error=None if ok else request.mask(f"login failed for password {SECRET}"),
        )

    provider = KvProvider()
    runner = Scripted(hook=echo_back)
    world = make_world(tmp_path, runners={"local": runner}, credentials=lambda _r, _t: provider)
    book, text = write_runbook(
        tmp_path,
        """\
        inputs:
          password: {type: string, secret: true}
        credentials:
          api: {vault_kv: {path: runbooks/web, key: token}}
        steps:
          - id: use
            local: {command: "login --password {{ inputs.password }} --key {{ secrets.api }}"}
            outputs: {seen: "{{ result.stdout }}", pw: "{{ inputs.password }}"}
          - id: check
            needs: [use]
            when: "inputs.password | int > 3"
            log: {message: "never"}
            on_failure: continue
          - id: say
            needs: [use]
            log: {message: "the password is {{ inputs.password }}"}
          - id: fails
            needs: [say]
            local: {command: "login --password {{ inputs.password }}"}
            assert: {that: ["result.rc == 0"], message: "bad password {{ inputs.password }}"}
          - id: asserts
            needs: [say]
            local: {command: "true"}
            assert: {that: ["result.rc == 1"], message: "wrong answer for {{ inputs.password }}"}
            on_failure: continue
        """,
    )
    run_id, status = world.start(book, text, inputs={"password": SECRET})
    assert status is RunStatus.FAILED
    # The secrets did reach the command, which is the point of having them.
    assert runner.requests[0].action.command == f"login --password '{SECRET}' --key {VAULT_SECRET}"
    assert provider.revoked == 1
    info = engine.run_status(world.services, run_id)
    shown = dumps(world.progress) + dumps(info)
    written = world.raw_bytes()
    for form in forms(SECRET) + forms(VAULT_SECRET):
        assert form not in written, form
        assert form.decode() not in shown, form
    assert b"***" in written
    steps = info["state"]["steps"]
    assert steps["say"]["status"] == "succeeded"
    assert steps["check"]["status"] == "failed"  # the guard raised, mentioning the value
    assert "***" in steps["check"]["error"]
    assert steps["fails"]["error"] is not None and "***" in steps["fails"]["error"]
    assert steps["asserts"]["error"] == "wrong answer for ***"


def test_an_unwritable_audit_log_stops_the_run_before_the_next_action(tmp_path: Path) -> None:
    audit_path = tmp_path / "audit.jsonl"
    aside = tmp_path / "audit.jsonl.moved"

    def break_the_log(request: ActionRequest, _token: CancelToken) -> None:
        if request.step_id == "one":  # the disk "fails" while step one runs
            os.replace(audit_path, aside)
            audit_path.mkdir()
        return None

    runner = Scripted(hook=break_the_log)
    world = make_world(tmp_path, runners={"local": runner})
    book, text = write_runbook(
        tmp_path,
        """\
        steps:
          - id: one
            local: {command: "echo one"}
          - id: two
            needs: [one]
            local: {command: "touch /tmp/marker"}
        """,
    )
    with pytest.raises(AuditWriteError, match="the action was NOT carried out"):
        world.start(book, text)
    assert runner.calls == ["one"]  # 'two' never ran
    run = world.store.list_runs(limit=1)[0]
    assert run["status"] == "waiting"
    assert "fix the audit log, then: runbook resume" in run["error"]
    # Its outcome could not be recorded, so 'one' is still in flight as far as the state knows.
    assert run["state"]["steps"]["one"]["status"] == "running"

    audit_path.rmdir()
    shutil.move(aside, audit_path)
    assert engine.resume(world.services, run["id"], wait_for_people=False) is RunStatus.WAITING
    engine.resolve(world.services, run["id"], "one", succeeded=True, actor="bob")
    assert engine.resume(world.services, run["id"]) is RunStatus.SUCCEEDED
    assert runner.calls == ["one", "two"]
    assert world.audit.verify().ok


def test_a_refused_audit_write_at_the_start_creates_no_run(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    (tmp_path / "audit.jsonl").mkdir()
    book, text = write_runbook(tmp_path, "steps:\n  - id: a\n    log: {message: hi}\n")
    with pytest.raises(AuditWriteError):
        world.start(book, text)
    assert world.store.list_runs() == []
