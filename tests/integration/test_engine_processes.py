"""The engine against real processes: crashes, the kill-switch from another process,
`runbook kill`, timeouts, injection, secrets in command output, rollbacks, fail-closed audit.

Everything goes through the real ``runbook`` CLI in subprocesses with its state
in tmp_path, except where only the local runner matters (timeouts), which use
the engine API with the real store, audit log and ``LocalRunner``.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest
from test_engine_support import (
    Cli,
    cli_in,
    group_alive,
    header,
    kill_marked,
    marked,
    wait_for,
)

from executor import engine
from executor.actions.local import LocalRunner
from executor.audit import JsonlAudit
from executor.catalog import check_file
from executor.model import RunStatus
from executor.store import SqliteStore

pytestmark = pytest.mark.integration


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    with cli_in(tmp_path) as made:
        yield made


APPEND = """\
inputs:
  log: {type: string}
steps:
  - id: one
    local: {command: "echo one >> {{ inputs.log }}"}
  - id: two
    needs: [one]
    local:
      command: >-
        echo two-start >> {{ inputs.log }}; sleep 30; echo two-end >> {{ inputs.log }}
  - id: three
    needs: [two]
    local: {command: "echo three >> {{ inputs.log }}"}
"""


def _step(store: SqliteStore, step_id: str) -> tuple[str, int] | None:
    runs = store.list_runs(limit=1)
    if not runs or not runs[0]["state"]:
        return None
    record = runs[0]["state"]["steps"][step_id]
    return record["status"], record["attempts"]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_sigkill_mid_run_then_resume_never_repeats_a_finished_step(cli: Cli) -> None:
    book = cli.write("append", APPEND)
    log = cli.root / "steps.log"
    runner = cli.start("run", str(book), "-i", f"log={log}", "--yes")
    wait_for(lambda: "two-start" in _lines(log))
    runner.send_signal(signal.SIGKILL)
    runner.wait(10)
    kill_marked(str(log))  # the orphaned step: a dead executor cannot stop it
    run = cli.last_run()
    assert run["status"] == "running"  # what the store said when the executor died

    resumed = cli("resume", run["id"])
    assert resumed.returncode == 8, resumed.stderr
    assert f"runbook resolve {run['id']} two" in resumed.stdout
    status = cli.json("status", run["id"])
    assert status["state"]["steps"]["two"]["status"] == "unknown"
    assert status["summary"] == "waiting for an operator to resolve two"

    assert cli("resolve", run["id"], "two").returncode == 2  # must say what happened
    settled = cli("resolve", run["id"], "two", "--as-succeeded", "--as", "bob")
    assert settled.returncode == 0, settled.stderr
    finished = cli("resume", run["id"])
    assert finished.returncode == 0, finished.stderr + finished.stdout
    # 'one' finished before the kill and ran once; 'two' was never started again.
    assert _lines(log) == ["one", "two-start", "three"]
    events = [e["event"] for e in cli.events(run["id"])]
    assert events.count("run.recovered") == 1 and events.count("step.resolved") == 1
    assert cli("audit", "verify").returncode == 0


def test_a_retry_lost_with_its_process_is_armed_again_on_resume(cli: Cli) -> None:
    book = cli.write(
        "flaky",
        """\
        inputs:
          dir: {type: string}
        steps:
          - id: flaky
            local:
              command: >-
                cd {{ inputs.dir }} && echo attempt >> log &&
                test -f ok || { touch ok; exit 1; }
            retries: {count: 2, delay: 2s}
        """,
    )
    runner = cli.start("run", str(book), "-i", f"dir={cli.root}", "--yes")
    wait_for(lambda: any(e["event"] == "step.retry" for e in cli.events()))
    with SqliteStore(cli.home / "state.db") as store:
        # The retry is waiting for its timer once the state saying so is durable.
        wait_for(lambda: _step(store, "flaky") == ("pending", 1))
    runner.send_signal(signal.SIGKILL)
    runner.wait(10)
    run = cli.last_run()
    resumed = cli("resume", run["id"])
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    assert _lines(cli.root / "log") == ["attempt", "attempt"]


TREE = """\
inputs:
  mark: {type: string}
steps:
  - id: before
    local: {command: "true"}
  - id: long
    needs: [before]
    local: {command: "sleep 60 & sleep 60 & echo {{ inputs.mark }}-tree >/dev/null; wait"}
    timeout: 2m
  - id: after
    needs: [long]
    local: {command: "echo after"}
"""


def _start_tree(cli: Cli, name: str) -> tuple[object, int, str]:
    """A run whose step is a shell with two sleeping children; returns its process group."""
    mark = f"tree-{name}-{os.getpid()}-{time.monotonic_ns()}"
    book = cli.write(name, TREE)
    runner = cli.start("run", str(book), "-i", f"mark={mark}", "--yes")
    shells = wait_for(lambda: marked(f"{mark}-tree"))  # the shell (and forks not yet exec'd)
    group = os.getpgid(shells[0])
    cli.groups.append(group)
    wait_for(lambda: len(group_alive(group)) == 3)  # the shell and both sleeps
    return runner, group, cli.last_run()["id"]


def _group_gone_within(group: int, since_ts: str, limit: float) -> float:
    """Seconds from the audit record stamped ``since_ts`` until the group has no process."""
    wait_for(lambda: not group_alive(group), timeout=limit + 3, every=0.02)
    gone = time.time()
    started = datetime.strptime(since_ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return gone - started.timestamp()


def test_the_kill_switch_from_another_process_stops_a_run_within_two_seconds(cli: Cli) -> None:
    runner, group, run_id = _start_tree(cli, "treeks")
    engaged = cli("killswitch", "engage", "--reason", "incident commander says stop", "--as", "ic")
    assert engaged.returncode == 0, engaged.stderr
    record = next(e for e in cli.events() if e["event"] == "killswitch.engaged")
    took = _group_gone_within(group, record["ts"], 2.0)
    assert took < 2.0, f"the step's process tree outlived the kill-switch by {took:.2f}s"
    runner.wait(15)
    assert runner.returncode == 7, runner.stderr.read()
    status = cli.json("status", run_id)
    assert status["status"] == "cancelled"
    assert "incident commander says stop" in status["error"]
    assert {s: r["status"] for s, r in status["state"]["steps"].items()} == {
        "before": "succeeded",
        "long": "cancelled",
        "after": "cancelled",
    }
    assert [(t["step"], t["outcome"]) for t in status["touched"]] == [
        ("before", "finished"),
        ("long", "cut off"),
    ]
    shown = cli("status", run_id).stdout
    assert "touched:" in shown and "long: cut off on the executor (local)" in shown
    assert "killswitch.engaged" in [e["event"] for e in cli.events()]


def test_runbook_kill_stops_one_run_and_its_process_tree(cli: Cli) -> None:
    runner, group, run_id = _start_tree(cli, "treekill")
    killed = cli("kill", run_id, "--reason", "wrong host", "--as", "bob")
    assert killed.returncode == 0, killed.stderr
    record = next(e for e in cli.events() if e["event"] == "run.kill_requested")
    assert _group_gone_within(group, record["ts"], 2.0) < 2.0
    runner.wait(15)
    assert runner.returncode == 7
    status = cli.json("status", run_id)
    assert status["status"] == "cancelled" and "killed by bob: wrong host" in status["error"]
    assert cli("kill", run_id).returncode == 2  # already ended


def test_a_paused_run_killed_while_no_executor_runs_it_is_cancelled_at_once(cli: Cli) -> None:
    book = cli.write(
        "gated",
        """\
        steps:
          - id: gate
            approval: {message: "go?", approvers: [sre]}
          - id: act
            needs: [gate]
            local: {command: "echo act"}
        """,
    )
    runner = cli.start("run", str(book), "--yes")
    wait_for(lambda: any(e["event"] == "approval.requested" for e in cli.events()))
    runner.send_signal(signal.SIGTERM)
    runner.wait(10)
    run = cli.last_run()
    killed = cli("kill", run["id"], "--reason", "not needed")
    assert killed.returncode == 0 and "cancelled: no executor was running it" in killed.stdout
    assert cli.json("status", run["id"])["status"] == "cancelled"


def test_a_step_timeout_kills_the_whole_process_tree(tmp_path: Path) -> None:
    mark = f"timeout-{os.getpid()}-{time.monotonic_ns()}"
    path = tmp_path / "t.yaml"
    path.write_text(
        header("t")
        + f"""\
steps:
  - id: slow
    local: {{command: "sleep 60 & sleep 60 & echo {mark} >/dev/null; wait"}}
    timeout: 500ms
"""
    )
    book = check_file(path).runbook
    store = SqliteStore(tmp_path / "state.db")
    services = engine.Services(
        store=store, audit=JsonlAudit(tmp_path / "audit.jsonl"), runners={"local": LocalRunner()}
    )
    try:
        began = time.monotonic()
        run_id, status = engine.start(
            services, engine.RunRequest(runbook=book, inputs={}, actor="alice")
        )
        took = time.monotonic() - began
        assert status is RunStatus.FAILED
        assert marked(mark) == []
        assert took < 5
        step = store.get_run(run_id)["state"]["steps"]["slow"]
        assert step["timed_out"] is True and "timed out after 500ms" in step["error"]
        touched = engine.run_status(services, run_id)["touched"]
        assert touched[0]["outcome"] == "timed out"
    finally:
        kill_marked(mark)
        store.close()


INJECT = """\
inputs:
  value: {type: string}
  out: {type: string}
steps:
  - id: plain
    local: {command: "printf '%s\\\\n' {{ inputs.value }} > {{ inputs.out }}"}
  - id: quoted
    needs: [plain]
    local: {command: "sh -c 'echo {{ inputs.value }}'"}
"""


def test_an_input_reaches_a_command_as_one_literal_argument(cli: Cli) -> None:
    pwned = cli.root / "pwned"
    (cli.root / "x").mkdir()
    value = f"$(touch {pwned}); rm -rf x; `touch {pwned}` && echo $HOME"
    book = cli.write("inject", INJECT)
    out = cli.root / "out.txt"
    done = cli("run", str(book), "-i", f"value={value}", "-i", f"out={out}", "--yes", "--json")
    assert out.read_text() == value + "\n"  # one argument, exactly as given
    assert not pwned.exists() and (cli.root / "x").is_dir()
    # Inside quotes written in the template the value could be re-read by a nested shell:
    # refused, the step fails without running.
    assert done.returncode == 1
    status = json.loads(done.stdout)
    quoted = status["state"]["steps"]["quoted"]
    assert quoted["status"] == "failed" and "cannot shell-quote a value safely" in quoted["error"]
    assert not pwned.exists()


def test_secrets_are_masked_in_command_output_audit_state_and_terminal(cli: Cli) -> None:
    secret = "hunter2/Sup3r+s3cret&x=1"
    book = cli.write(
        "leaky",
        """\
        inputs:
          token: {type: string, secret: true}
        steps:
          - id: leak
            local:
              command: >-
                echo -n {{ inputs.token }} | base64;
                echo {{ inputs.token }};
                python3 -c 'import sys, urllib.parse as u; print(u.quote(sys.argv[1], safe=""))'
                {{ inputs.token }}
            outputs: {printed: "{{ result.stdout }}"}
          - id: complain
            needs: [leak]
            local: {command: "echo login failed for {{ inputs.token }} >&2; exit 3"}
        """,
    )
    done = cli("run", str(book), "-i", f"token={secret}", "--yes", "--json")
    assert done.returncode == 1
    status = json.loads(done.stdout)
    printed = status["state"]["steps"]["leak"]["outputs"]["printed"]
    assert printed.count("***") == 3, printed
    assert "***" in status["state"]["steps"]["complain"]["error"]
    forms = [
        secret,
        base64.b64encode(secret.encode()).decode(),
        quote(secret, safe=""),
    ]
    human = cli("status", status["id"]).stdout + cli("audit", "show").stdout
    written = b"".join(p.read_bytes() for p in cli.home.iterdir() if p.is_file())
    for form in forms:
        assert form not in done.stdout + done.stderr + human, form
        assert form.encode() not in written, form
    assert status["inputs"]["token"] == "***"


ROLLBACK = """\
inputs:
  log: {type: string}
steps:
  - id: one
    local: {command: "echo one >> {{ inputs.log }}"}
    rollback: {local: {command: "echo undo-one >> {{ inputs.log }}"}}
  - id: two
    needs: [one]
    local: {command: "echo two >> {{ inputs.log }}"}
    rollback:
      - local: {command: "echo undo-two-a >> {{ inputs.log }}"}
      - local: {command: "echo undo-two-b >> {{ inputs.log }}"}
  - id: three
    needs: [two]
    local: {command: "echo three >> {{ inputs.log }}; exit 3"}
    on_failure: rollback
    rollback: {local: {command: "echo undo-three >> {{ inputs.log }}"}}
"""


def test_a_failure_with_rollback_undoes_newest_first_and_exits_6(cli: Cli) -> None:
    book = cli.write("saga", ROLLBACK)
    log = cli.root / "saga.log"
    done = cli("run", str(book), "-i", f"log={log}", "--yes")
    assert done.returncode == 6, done.stderr + done.stdout
    assert _lines(log) == [
        "one",
        "two",
        "three",
        "undo-three",
        "undo-two-a",
        "undo-two-b",
        "undo-one",
    ]
    assert "run rolled_back" in done.stdout


@pytest.mark.parametrize("broken", ["audit.jsonl", "audit.jsonl.head"])
def test_an_unwritable_audit_log_means_no_command_runs_and_exit_5(cli: Cli, broken: str) -> None:
    marker = cli.root / "marker"
    book = cli.write(
        "failclosed",
        """\
        inputs:
          home: {type: string}
          broken: {type: string}
          marker: {type: string}
        steps:
          - id: break
            local:
              command: >-
                cd {{ inputs.home }} && mv {{ inputs.broken }} moved &&
                mkdir {{ inputs.broken }}
          - id: act
            needs: [break]
            local: {command: "touch {{ inputs.marker }}"}
        """,
    )
    done = cli(
        "run", str(book), "-i", f"home={cli.home}", "-i", f"broken={broken}",
        "-i", f"marker={marker}", "--yes",
    )  # fmt: skip
    assert done.returncode == 5, done.stderr + done.stdout
    assert "the action was NOT carried out" in done.stderr
    assert not marker.exists()
    # Nothing can even be requested until the log is repaired.
    again = cli("run", str(book), "-i", f"home={cli.home}", "-i", f"broken={broken}",
                "-i", f"marker={marker}", "--yes")  # fmt: skip
    assert again.returncode == 5 and not marker.exists()
