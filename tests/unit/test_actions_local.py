"""The local action with real processes: exit codes, pipefail, killing whole trees.

Every command that could outlive its test carries a unique marker in its
arguments (``sleep 61.<random>``); an autouse fixture kills whatever still
carries it afterwards, so a failing test cannot leave processes behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from executor.actions.local import LocalRunner
from executor.actions.process import GroupLimits, OutputBuffer, scrubbed_env
from executor.errors import ActionError, UsageError
from executor.model import LocalAction, LogAction
from executor.ports import ActionRequest, ActionResult, CancelToken

GRACE = 1.0


def request(command: str, **kwargs: object) -> ActionRequest:
    return ActionRequest(run_id="run-1", step_id="step", action=LocalAction(command), **kwargs)  # type: ignore[arg-type]


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, pgid) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[2])


def processes_with(marker: str) -> list[int]:
    """Running (non-zombie) processes whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        stat = proc_stat(int(entry.name))
        if marker in cmdline and stat is not None and stat[0] != "Z":
            found.append(int(entry.name))
    return found


def assert_group_gone(pgid: int) -> None:
    """No process of the group runs. Zombies are tolerated: they run nothing, and where
    pid 1 never reaps orphans (some container inits) the kernel keeps counting them."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return
    members = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat is not None and stat[1] == pgid:
                members[int(entry.name)] = stat[0]
    assert all(state == "Z" for state in members.values()), f"still running: {members}"


@pytest.fixture
def marker() -> Iterator[str]:
    """A unique sleep duration to find our processes by; kills leftovers at the end."""
    token = f"61.{secrets.randbelow(10**6):06d}"
    yield token
    for pid in processes_with(token):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def runner() -> LocalRunner:
    return LocalRunner(limits=GroupLimits(grace=GRACE, linger=0.3, drain=0.3))


def run(
    runner: LocalRunner, command: str, cancel: CancelToken | None = None, **kw: object
) -> ActionResult:
    return runner.run(request(command, **kw), cancel or CancelToken())


# --------------------------------------------------------------------------- ordinary commands


def test_rc_stdout_and_stderr_are_reported(runner: LocalRunner) -> None:
    result = run(runner, "echo out; echo err >&2; exit 3")
    assert (result.ok, result.rc, result.stdout, result.stderr) == (False, 3, "out\n", "err\n")
    assert result.error == "command exited with status 3: err"
    assert not result.timed_out and not result.cancelled
    assert result.data["pid"] > 0


def test_success(runner: LocalRunner) -> None:
    result = run(runner, "printf 'hello %s' world")
    assert result.ok and result.rc == 0 and result.stdout == "hello world"
    assert result.error is None


def test_pipefail_makes_a_failing_pipeline_fail(runner: LocalRunner) -> None:
    assert run(runner, "false | true").rc == 1
    assert run(runner, "true | cat").ok


def test_stdin_is_dev_null(runner: LocalRunner) -> None:
    started = time.monotonic()
    result = run(runner, "cat; echo read-done", timeout=5)
    assert result.ok and result.stdout == "read-done\n"
    assert time.monotonic() - started < 2


def test_death_by_signal_uses_the_shell_convention(runner: LocalRunner) -> None:
    result = run(runner, "kill -SEGV $$")
    assert not result.ok and result.rc == 128 + signal.SIGSEGV
    assert "SIGSEGV" in (result.error or "")


def test_step_id_names_the_script_in_shell_errors(runner: LocalRunner) -> None:
    result = run(runner, "no-such-command-xyz")
    assert result.rc == 127
    assert result.stderr.startswith("step: ")
    assert "no-such-command-xyz" in (result.error or "")


def test_missing_shell_is_a_failed_result_not_a_crash() -> None:
    result = run(LocalRunner(shell="/nonexistent/bash"), "true")
    assert not result.ok and "cannot start /nonexistent/bash" in (result.error or "")


def test_wrong_action_kind_is_a_wiring_error(runner: LocalRunner) -> None:
    bad = ActionRequest(run_id="r", step_id="s", action=LogAction("hi"))
    with pytest.raises(ActionError, match="local runner got a 'log' action"):
        runner.run(bad, CancelToken())


# --------------------------------------------------------------------------- killing trees


def test_timeout_kills_the_whole_tree_including_term_ignoring_children(
    runner: LocalRunner, marker: str
) -> None:
    command = f'sleep {marker} & sleep {marker} & trap "" TERM; sleep {marker}'
    started = time.monotonic()
    result = run(runner, command, timeout=0.5)
    elapsed = time.monotonic() - started

    assert elapsed < 0.5 + GRACE + 1.0
    assert result.timed_out and not result.ok and not result.cancelled
    pgid = result.data["pid"]
    assert result.error == (
        f"timed out after 500ms: process group {pgid} terminated (SIGKILL after 1s grace)"
    )
    assert_group_gone(pgid)
    assert processes_with(marker) == []


def test_timeout_without_sigkill_when_the_group_obeys_sigterm(
    runner: LocalRunner, marker: str
) -> None:
    started = time.monotonic()
    result = run(runner, f"sleep {marker}", timeout=0.3)
    assert time.monotonic() - started < 0.3 + GRACE
    assert result.timed_out and "SIGKILL" not in (result.error or "")
    assert processes_with(marker) == []


def test_cancel_from_another_thread_kills_promptly(runner: LocalRunner, marker: str) -> None:
    cancel = CancelToken()
    timer = threading.Timer(0.5, cancel.cancel, ["kill-switch engaged by alice"])
    timer.start()
    try:
        started = time.monotonic()
        result = run(runner, f'sleep {marker} & trap "" TERM; sleep {marker}', cancel)
        elapsed = time.monotonic() - started
    finally:
        timer.cancel()
    assert elapsed < 0.5 + 2.0
    assert result.cancelled and not result.ok and not result.timed_out
    assert (result.error or "").startswith("cancelled: kill-switch engaged by alice; process group")
    assert_group_gone(result.data["pid"])
    assert processes_with(marker) == []


def test_already_cancelled_token_stops_at_once(runner: LocalRunner, marker: str) -> None:
    cancel = CancelToken()
    cancel.cancel("runbook kill by bob")
    started = time.monotonic()
    result = run(runner, f"sleep {marker}", cancel)
    assert time.monotonic() - started < 1.0
    assert result.cancelled and "runbook kill by bob" in (result.error or "")


def test_background_jobs_do_not_outlive_the_step(runner: LocalRunner, marker: str) -> None:
    started = time.monotonic()
    result = run(runner, f"sleep {marker} & sleep {marker} >/dev/null 2>&1 & echo done")
    assert time.monotonic() - started < 0.3 + GRACE + 1.0
    assert result.ok and result.stdout == "done\n"
    assert result.data["stragglers_terminated"] is True
    assert_group_gone(result.data["pid"])
    assert processes_with(marker) == []


def test_a_process_that_escaped_the_group_cannot_hang_the_reader(
    runner: LocalRunner, marker: str
) -> None:
    """setsid leaves our group but keeps our stdout open: we stop reading at a deadline."""
    started = time.monotonic()
    result = run(runner, f"setsid sleep {marker} & echo started")
    assert time.monotonic() - started < 3.0
    assert result.ok and result.stdout == "started\n"
    assert result.data["output_abandoned"] is True
    assert processes_with(marker), "the escaped process is outside our reach, as expected"


# --------------------------------------------------------------------------- output, masking


def test_huge_output_is_bounded_without_hanging() -> None:
    runner = LocalRunner(limits=GroupLimits(max_output=1024 * 1024))
    started = time.monotonic()
    result = run(runner, "yes | head -c 50M", timeout=30)
    assert time.monotonic() - started < 10
    # pipefail at work: head exits after 50M and yes dies of SIGPIPE, as in any bash pipeline
    assert result.rc == 128 + signal.SIGPIPE
    kept = len(result.stdout.encode())
    assert 1024 * 1024 <= kept < 1024 * 1024 + 100
    assert "bytes of output dropped" in result.stdout
    assert result.stdout.startswith("y\ny\n") and result.stdout.endswith("y\n")
    assert result.data["dropped_bytes"]["stdout"] == 50 * 1024 * 1024 - 1024 * 1024


def test_both_pipes_chatty_at_once_do_not_deadlock() -> None:
    runner = LocalRunner(limits=GroupLimits(max_output=64 * 1024))
    command = "yes err | head -c 20M >&2 & yes out | head -c 20M; wait"
    result = run(runner, command, timeout=30)
    assert result.ok
    assert result.data["dropped_bytes"] == {
        "stdout": 20 * 1024 * 1024 - 64 * 1024,
        "stderr": 20 * 1024 * 1024 - 64 * 1024,
    }


def test_mask_applies_to_stdout_stderr_and_error(runner: LocalRunner) -> None:
    def mask(text: str) -> str:
        return text.replace("hunter2", "***")

    result = runner.run(
        request("echo pw=hunter2; echo bad hunter2 >&2; exit 1", mask=mask), CancelToken()
    )
    assert result.stdout == "pw=***\n" and result.stderr == "bad ***\n"
    assert result.error == "command exited with status 1: bad ***"
    assert "hunter2" not in repr(result)


def test_mask_applies_to_the_cancel_reason(runner: LocalRunner, marker: str) -> None:
    cancel = CancelToken()
    cancel.cancel("engaged with token hunter2")
    result = runner.run(
        request(f"sleep {marker}", mask=lambda t: t.replace("hunter2", "***")), cancel
    )
    assert "hunter2" not in (result.error or "") and "***" in (result.error or "")


# --------------------------------------------------------------------------- environment


def test_the_executors_secrets_never_reach_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_TOKEN", "s.vault-token-value")
    monkeypatch.setenv("VAULT_SECRET_ID", "approle-secret-value")
    monkeypatch.setenv("DB_PASSWORD", "db-password-value")
    monkeypatch.setenv("KUBECONFIG", "/etc/kube/config")
    monkeypatch.setenv("UNRELATED", "not-inherited")
    runner = LocalRunner(env={"RUNBOOK_ENV": "prod"}, pass_env=["KUBECONFIG"])
    result = run(runner, "env")
    assert result.ok
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    for value in ("s.vault-token-value", "approle-secret-value", "db-password-value"):
        assert value not in result.stdout
    assert "UNRELATED" not in env
    assert env["KUBECONFIG"] == "/etc/kube/config"
    assert env["RUNBOOK_ENV"] == "prod"
    assert env["PATH"]


def test_passing_a_secret_looking_variable_is_refused() -> None:
    with pytest.raises(UsageError, match="refusing to pass GITHUB_TOKEN, VAULT_ADDR"):
        LocalRunner(pass_env=["VAULT_ADDR", "GITHUB_TOKEN", "KUBECONFIG"])


def test_scrubbed_env_is_an_allowlist() -> None:
    parent = {"PATH": "/bin", "HOME": "/root", "AWS_SECRET_ACCESS_KEY": "x", "SSH_AUTH_SOCK": "s"}
    env = scrubbed_env(parent, pass_env=["AWS_SECRET_ACCESS_KEY", "SSH_AUTH_SOCK"])
    assert env == {"PATH": "/bin", "HOME": "/root", "LANG": "C.UTF-8"}


# --------------------------------------------------------------------------- dry run


def test_dry_run_executes_nothing(runner: LocalRunner, tmp_path: Path) -> None:
    target = tmp_path / "created"
    result = runner.run(
        request(
            f"touch {target} # hunter2", dry_run=True, mask=lambda t: t.replace("hunter2", "*")
        ),
        CancelToken(),
    )
    assert result.ok and result.rc is None
    assert result.data == {"dry_run": True, "would_run": f"touch {target} # *"}
    assert not target.exists()
    assert run(runner, f"touch {target}").ok and target.exists()  # the same command does work


# --------------------------------------------------------------------------- output buffer


def test_output_buffer_keeps_head_and_tail_and_counts_the_rest() -> None:
    buffer = OutputBuffer(limit=10, head=4)
    for byte in b"0123456789abcdef":
        buffer.feed(bytes([byte]))
    assert buffer.total == 16 and buffer.dropped == 6
    assert buffer.value() == b"0123\n[... 6 bytes of output dropped ...]\nabcdef"


def test_output_buffer_under_the_limit_is_exact() -> None:
    buffer = OutputBuffer(limit=10)
    buffer.feed(b"0123456")
    buffer.feed(b"789")
    assert buffer.value() == b"0123456789" and buffer.dropped == 0
