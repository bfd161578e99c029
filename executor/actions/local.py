"""The ``local`` action: a command on the executor's own machine (kubectl, curl...).

The command runs as ``/bin/bash --noprofile --norc -o pipefail -c COMMAND``:
bash because runbooks are written in it, ``pipefail`` so that
``kubectl get pods | grep web`` fails when kubectl fails rather than when
grep finds nothing. The engine has already rendered the command and
shell-quoted every substituted value; nothing here splices strings.

What the command gets: stdin from /dev/null (it can never wait for a
person), a minimal environment (never the executor's Vault token, see
``process.scrubbed_env``) and its own process group. What it may not do is
outlive its step: on timeout or cancel the group gets SIGTERM, then SIGKILL
after a grace, and background jobs still running when the command exits are
terminated too. A daemon meant to outlive the step must be started through
the service manager (``systemd-run``), not from a runbook step.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping, Sequence
from typing import Any

from executor.actions import expect_action
from executor.actions.process import (
    Ending,
    GroupLimits,
    ProcessOutcome,
    check_pass_env,
    run_in_group,
    scrubbed_env,
)
from executor.model import LocalAction, format_duration
from executor.ports import ActionRequest, ActionResult, CancelToken

DEFAULT_SHELL = "/bin/bash"


class LocalRunner:
    """Runs ``local`` steps; one instance serves every run (it keeps no per-run state).

    ``env`` is set explicitly in every command's environment; ``pass_env``
    names variables inherited from the executor on top of PATH, HOME, LANG and
    friends (names that look secret are refused). ``limits`` tunes the grace
    between SIGTERM and SIGKILL, the output bound and so on.
    """

    kind = "local"

    def __init__(
        self,
        *,
        shell: str = DEFAULT_SHELL,
        env: Mapping[str, str] | None = None,
        pass_env: Sequence[str] = (),
        cwd: str | None = None,
        limits: GroupLimits = GroupLimits(),
    ) -> None:
        self.shell = shell
        self.extra_env = dict(env or {})
        self.pass_env = check_pass_env(pass_env)
        self.cwd = cwd
        self.limits = limits

    def argv(self, command: str, name: str = "local") -> list[str]:
        """The exact program and arguments a command runs as (``name`` becomes ``$0``)."""
        return [self.shell, "--noprofile", "--norc", "-o", "pipefail", "-c", command, name]

    def environment(self) -> dict[str, str]:
        return scrubbed_env(os.environ, pass_env=self.pass_env, extra=self.extra_env)

    def run(self, request: ActionRequest, cancel: CancelToken) -> ActionResult:
        action = expect_action(request, LocalAction, self.kind)
        mask = request.mask
        if request.dry_run:
            return ActionResult(ok=True, data={"dry_run": True, "would_run": mask(action.command)})
        try:
            outcome = run_in_group(
                self.argv(action.command, request.step_id),
                env=self.environment(),
                cwd=self.cwd,
                timeout=request.timeout,
                cancel=cancel,
                limits=self.limits,
            )
        except OSError as exc:
            return ActionResult(
                ok=False,
                error=mask(
                    f"cannot start {self.shell} for step {request.step_id!r}: {exc}; "
                    "check that the shell exists and the working directory is readable"
                ),
            )
        return _result(outcome, request, cancel, self.limits.grace)


def _result(
    outcome: ProcessOutcome,
    request: ActionRequest,
    cancel: CancelToken,
    grace: float,
) -> ActionResult:
    mask = request.mask
    stdout = mask(_text(outcome.stdout))
    stderr = mask(_text(outcome.stderr))
    timed_out = outcome.ending is Ending.TIMED_OUT
    cancelled = outcome.ending is Ending.CANCELLED
    ok = outcome.returncode == 0 and not (timed_out or cancelled)
    error = None if ok else mask(_error(outcome, request.timeout, cancel, grace, stderr))
    return ActionResult(
        ok=ok,
        rc=outcome.returncode,
        stdout=stdout,
        stderr=stderr,
        error=error,
        data=_data(outcome),
        cancelled=cancelled,
        timed_out=timed_out,
    )


def _error(
    outcome: ProcessOutcome,
    timeout: float | None,
    cancel: CancelToken,
    grace: float,
    stderr: str,
) -> str:
    """One line a responder can act on; stderr is already masked."""
    ended = f"process group {outcome.pgid} terminated"
    if outcome.killed:
        ended += f" (SIGKILL after {format_duration(grace)} grace)"
    if outcome.ending is Ending.TIMED_OUT:
        return f"timed out after {format_duration(timeout or 0)}: {ended}"
    if outcome.ending is Ending.CANCELLED:
        return f"cancelled: {cancel.reason or 'no reason given'}; {ended}"
    if outcome.signal is not None:
        text = f"command killed by signal {_signal_name(outcome.signal)}"
    else:
        text = f"command exited with status {outcome.returncode}"
    last = _last_line(stderr)
    return f"{text}: {last}" if last else text


def _data(outcome: ProcessOutcome) -> dict[str, Any]:
    """Extra facts for audit and expressions (``result.pid``, ``result.duration``)."""
    data: dict[str, Any] = {"pid": outcome.pid, "duration": round(outcome.duration, 3)}
    if outcome.stdout_dropped or outcome.stderr_dropped:
        data["dropped_bytes"] = {"stdout": outcome.stdout_dropped, "stderr": outcome.stderr_dropped}
    if outcome.stragglers:
        data["stragglers_terminated"] = True
    if outcome.output_abandoned:
        data["output_abandoned"] = True
    return data


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _last_line(text: str, width: int = 200) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:width] if lines else ""


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)
