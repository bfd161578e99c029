"""The `runbook` commands that run and steer runs, as a person or a script uses them.

Each test drives the installed CLI in subprocesses with ``--home`` and a config
file of identities in tmp_path: exit codes, ``--json`` that parses, approvals
with their rules, pause and resume across processes, dry runs, policy
refusals, the audit timeline and its verification after tampering.
"""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_engine_support import Cli, cli_in, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    with cli_in(tmp_path) as made:
        yield made


GATED = """\
inputs:
  host: {{type: string, pattern: "^[a-z0-9.-]+$"}}
  token: {{type: string, secret: true}}
  log: {{type: string}}
policy:
  concurrency: {{key: "{{{{ inputs.host }}}}", limit: 1}}
  self_approval: {self_approval}
steps:
  - id: measure
    local: {{command: "echo measure >> {{{{ inputs.log }}}}"}}
  - id: approve
    needs: [measure]
    approval:
      message: "Clean [red]logs[/] on {{{{ inputs.host }}}}?"
      approvers: [sre]
      quorum: {quorum}
      timeout: {timeout}
  - id: clean
    needs: [approve]
    local:
      command: >-
        test -n {{{{ inputs.token }}}} &&
        echo clean {{{{ inputs.host }}}} >> {{{{ inputs.log }}}}
    on_failure: rollback
  - id: undo
    needs: [approve]
    trigger: always
    when: "steps.approve.status == 'failed'"
    local: {{command: "echo denied-path >> {{{{ inputs.log }}}}"}}
"""


def gated(cli: Cli, *, quorum: int = 1, self_approval: bool = False, timeout: str = "15m") -> Path:
    return cli.write(
        "gated",
        GATED.format(quorum=quorum, self_approval=str(self_approval).lower(), timeout=timeout),
    )


def _log(cli: Cli) -> list[str]:
    path = cli.root / "steps.log"
    return path.read_text().splitlines() if path.exists() else []


def _paused_run(cli: Cli, **kw) -> str:
    """A run paused on its approval: started with --yes, its process then stopped."""
    book = gated(cli, **kw)
    runner = cli.start(
        "run", str(book), "-i", "host=web1", "-i", "token=t0k3n-s3cr3t",
        "-i", f"log={cli.root / 'steps.log'}", "--yes",
    )  # fmt: skip
    wait_for(lambda: any(e["event"] == "run.paused" or e["event"] == "approval.requested"
                         for e in cli.events()))  # fmt: skip
    out = wait_for(lambda: _first_line_with(runner, "runbook approve"))
    runner.send_signal(signal.SIGTERM)
    runner.wait(10)
    assert "Clean [red]logs[/] on web1?" in out  # markup in a message shown as written
    return cli.last_run()["id"]


def _first_line_with(runner, text: str) -> str | None:
    """Read the runner's output until a line holds ``text`` (the approval prompt)."""
    seen = getattr(runner, "_seen", "")
    line = runner.stdout.readline()
    seen += line
    runner._seen = seen
    return seen if text in seen else None


def test_approvals_refuse_outsiders_and_the_initiator_then_resume_finishes(cli: Cli) -> None:
    run_id = _paused_run(cli)
    status = cli("status", run_id)
    assert status.returncode == 0
    # The rendered plan of what the approval gates, secret masked, and how to approve.
    assert "waits for approval: Clean [red]logs[/] on web1?" in status.stdout
    assert "then clean local test -n '***' && echo clean web1 >>" in status.stdout
    assert "t0k3n" not in status.stdout
    assert f"runbook approve {run_id} approve --as NAME" in status.stdout

    outsider = cli("approve", run_id, "approve", "--as", "mallory")
    assert outsider.returncode == 3 and "must belong to sre" in outsider.stderr
    own = cli("approve", run_id, "approve")  # alice started the run
    assert own.returncode == 3 and "four-eyes" in own.stderr
    ok = cli("approve", run_id, "approve", "--as", "bob", "--reason", "disk at 97%")
    assert ok.returncode == 0 and "(1/1 approvals)" in ok.stdout

    missing = cli("resume", run_id)
    assert missing.returncode == 2 and "--input token=" in missing.stderr
    done = cli("resume", run_id, "-i", "token=t0k3n-s3cr3t", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "succeeded"
    assert _log(cli) == ["measure", "clean web1"]
    granted = next(e for e in cli.events(run_id) if e["event"] == "approval.granted")
    assert granted["actor"] == "bob" and granted["data"]["runbook_sha256"] == granted["sha256"]
    refused = [e for e in cli.events(run_id) if e["event"] == "approval.refused"]
    assert [r["actor"] for r in refused] == ["mallory", "alice"]


def test_self_approval_when_policy_allows_and_a_quorum_of_two(cli: Cli) -> None:
    run_id = _paused_run(cli, quorum=2, self_approval=True)
    assert cli("approve", run_id, "approve").returncode == 0  # alice, allowed by policy
    again = cli("approve", run_id, "approve")
    assert again.returncode == 3 and "distinct approvers" in again.stderr
    pending = cli.json("status", run_id)["pending_approvals"][0]
    assert [d["approver"] for d in pending["decisions"]] == ["alice"]
    assert pending["quorum"] == 2
    assert cli("approve", run_id, "approve", "--as", "carol").returncode == 0
    done = cli("resume", run_id, "-i", "token=t0k3n-s3cr3t")
    assert done.returncode == 0, done.stderr + done.stdout
    assert _log(cli) == ["measure", "clean web1"]


def test_a_denial_takes_the_failure_path(cli: Cli) -> None:
    run_id = _paused_run(cli)
    assert cli("deny", run_id, "approve", "--as", "bob").returncode == 2  # --reason required
    denied = cli("deny", run_id, "approve", "--as", "bob", "--reason", "[/] not now")
    assert denied.returncode == 0
    done = cli("resume", run_id, "-i", "token=t0k3n-s3cr3t")
    assert done.returncode == 1
    assert "denied by bob: [/] not now" in done.stdout
    assert _log(cli) == ["measure", "denied-path"]


def test_an_approval_that_expires_is_denied(cli: Cli) -> None:
    book = gated(cli, timeout="1s")
    done = cli(
        "run", str(book), "-i", "host=web2", "-i", "token=x", "-i",
        f"log={cli.root / 'steps.log'}", "--yes", "--json",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    status = json.loads(done.stdout)
    assert "denied by timeout" in status["state"]["steps"]["approve"]["error"]
    expired = [e for e in cli.events(status["id"]) if e["event"] == "approval.expired"]
    assert expired and expired[0]["step"] == "approve"
    assert _log(cli) == ["measure", "denied-path"]


def test_a_second_concurrent_run_on_the_same_key_is_refused_with_exit_3(cli: Cli) -> None:
    run_id = _paused_run(cli)
    second = cli(
        "run", str(cli.root / "gated.yaml"), "-i", "host=web1", "-i", "token=x",
        "-i", f"log={cli.root / 'other.log'}", "--yes",
    )  # fmt: skip
    assert second.returncode == 3
    assert f"already has 1 run(s) active for 'gated:web1' ({run_id})" in second.stderr
    assert not (cli.root / "other.log").exists()
    killed = cli("kill", run_id)
    assert killed.returncode == 0 and "cancelled" in killed.stdout


def test_cooldown_kill_switch_and_input_refusals_have_their_exit_codes(cli: Cli) -> None:
    book = cli.write(
        "cool",
        """\
        inputs:
          host: {type: string, pattern: "^[a-z0-9]+$"}
          count: {type: integer, minimum: 1, maximum: 5, default: 1}
        policy:
          concurrency: {key: "{{ inputs.host }}", limit: 1}
          cooldown: 1h
        steps:
          - id: say
            log: {message: "hello {{ inputs.host }}"}
        """,
    )
    bad = cli("run", str(book), "-i", "host=Web 1", "-i", "count=9", "-i", "colour=red", "--yes")
    assert bad.returncode == 2
    for problem in (
        "unknown input 'colour'",
        "host: 'Web 1' does not match the pattern",
        "count: 9 must be at most 5",
    ):
        assert problem in bad.stderr
    typo = cli("run", str(book), "-i", "hots=web1", "--yes")
    assert typo.returncode == 2 and "did you mean 'host'" in typo.stderr

    assert cli("run", str(book), "-i", "host=web1", "--yes").returncode == 0
    cooling = cli("run", str(book), "-i", "host=web1", "--yes")
    assert cooling.returncode == 3 and "cooling down for 'cool:web1'" in cooling.stderr

    engaged = cli("killswitch", "engage", "--runbook", "cool", "--reason", "[bold]freeze[/]")
    assert engaged.returncode == 0 and "[bold]freeze[/]" in engaged.stdout
    switched = cli("run", str(book), "-i", "host=web2", "--yes")
    assert switched.returncode == 4
    assert "kill-switch is engaged for cool by alice: [bold]freeze[/]" in switched.stderr
    status = cli("killswitch", "status", "--json")
    assert status.returncode == 1 and json.loads(status.stdout)["engaged"][0]["scope"] == "cool"
    assert cli("killswitch", "release", "--runbook", "cool").returncode == 0
    assert cli("killswitch", "status").returncode == 0
    refused = [e for e in cli.events() if e["event"] == "run.refused"]
    assert [r["data"]["error"] for r in refused] == [
        "InputError",
        "InputError",
        "PolicyRefused",
        "KillSwitchEngaged",
    ]


def test_a_dry_run_touches_nothing_and_says_so(cli: Cli) -> None:
    book = cli.write(
        "dry",
        """\
        inputs:
          path: {type: string}
          token: {type: string, secret: true}
        steps:
          - id: create
            local: {command: "touch {{ inputs.path }} --token={{ inputs.token }}"}
          - id: gate
            needs: [create]
            approval: {message: "go?", approvers: [sre], quorum: 2}
        """,
    )
    target = cli.root / "would-be-created"
    plain = cli("run", str(book), "-i", f"path={target}", "-i", "token=dry-s3cret", "--dry-run")
    assert plain.returncode == 0, plain.stderr
    assert f"command: touch {target} --token=***" in plain.stdout
    assert "needs approval by sre (quorum 2)" in plain.stdout
    done = cli("run", str(book), "-i", f"path={target}", "-i", "token=dry-s3cret", "--dry-run",
               "--json")  # fmt: skip
    plan = json.loads(done.stdout)
    assert [s["step"] for s in plan["steps"]] == ["create", "gate"]
    assert not target.exists()
    runs = cli.json("runs")
    assert [r["dry_run"] for r in runs] == [True, True]
    assert all(r["status"] == "succeeded" for r in runs)
    events = [e["event"] for e in cli.events(plan["run_id"])]
    assert events == ["run.requested", "run.dry_run"]
    assert "dry-s3cret" not in cli.audit_log.read_text() + plain.stdout + done.stdout


def test_json_outputs_parse_and_the_audit_timeline_reads_well(cli: Cli) -> None:
    book = cli.write(
        "talk",
        """\
        steps:
          - id: hello
            log: {message: "hello [red]world[/]"}
          - id: broken
            needs: [hello]
            local: {command: "echo '[/] oops [red]' >&2; exit 4"}
        """,
    )
    done = cli("run", str(book), "--yes")
    assert done.returncode == 1
    assert "[/] oops [red]" in done.stdout  # printed, not parsed as markup
    as_json = cli("run", str(book), "--yes", "--json")
    status = json.loads(as_json.stdout)
    assert status["status"] == "failed" and status["state"]["steps"]["broken"]["status"] == "failed"
    run_id = status["id"]
    assert cli.json("status", run_id)["id"] == run_id
    assert {r["id"] for r in cli.json("runs")} >= {run_id}
    lines = cli("audit", "show", run_id, "--json").stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert {r["run_id"] for r in records} == {run_id}
    assert records[0]["event"] == "run.requested" and records[-1]["event"] == "run.finished"
    shown = cli("audit", "show", run_id).stdout
    assert "step.intent [broken]" in shown and "command=echo '[/] oops [red]'" in shown
    assert "step.outcome [broken]" in shown and "rc=4" in shown
    verify = cli("audit", "verify", "--json")
    assert verify.returncode == 0 and json.loads(verify.stdout)["ok"] is True


def _tampered(cli: Cli, name: str, change) -> tuple[int, str]:
    """Copy the state directory, apply ``change`` to its audit lines, verify the copy."""
    home = cli.root / name
    shutil.copytree(cli.home, home)
    path = home / "audit.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(change(lines)))
    done = cli("--home", str(home), "audit", "verify")
    return done.returncode, done.stdout


def test_audit_verify_names_the_first_edited_deleted_or_reordered_record(cli: Cli) -> None:
    book = cli.write("chain", "steps:\n  - id: a\n    log: {message: one}\n")
    assert cli("run", str(book), "--yes").returncode == 0
    assert cli("audit", "verify").returncode == 0

    def edit(lines):
        lines[2] = lines[2].replace('"step":"a"', '"step":"b"')
        return lines

    def delete(lines):
        return lines[:1] + lines[2:]

    def reorder(lines):
        return [lines[0], lines[2], lines[1], *lines[3:]]

    code, out = _tampered(cli, "edited", edit)
    assert code == 1 and "line 3 (seq 3): hash does not match its content" in out
    code, out = _tampered(cli, "deleted", delete)
    assert code == 1 and "line 2 (seq 3): expected seq 2" in out
    code, out = _tampered(cli, "reordered", reorder)
    assert code == 1 and "line 2 (seq 3)" in out
    code, out = _tampered(cli, "truncated", lambda lines: lines[:-1])
    assert code == 1 and "missing at the end" in out
