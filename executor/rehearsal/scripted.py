"""Scripted action runners: each returns the scenario's result instead of acting.

One runner per action kind implements ``ActionRunner``, so the engine hands
them rendered requests exactly as it hands them to Fabric or ansible-runner.
Which result to return depends on the attempt (or the rollback action) the
engine is carrying out; the engine announces that in the audit before it acts
(``step.intent`` with ``attempt``, ``rollback.intent`` with ``index``), and
``Script.observe`` follows those records, so the runners need no private
channel into the engine.

A step the scenario does not script succeeds with empty output, unless the
scenario is ``strict``: then it fails and the scenario reports the omission.
Time passes only on the simulated clock: a ``wait``, a scripted ``duration``
or a timeout moves it, and nothing sleeps.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from executor.model import HttpAction, LogAction, WaitAction, format_duration
from executor.ports import (
    UNKNOWN_RC,
    ActionRequest,
    ActionResult,
    AuditRecord,
    CancelToken,
    HostResult,
)
from executor.rehearsal.scenario import HostOutcome, Result, Scenario
from executor.rehearsal.world import SimulatedClock

SIMULATED_RC_UNREACHABLE = UNKNOWN_RC
"""What ssh itself exits with when it cannot reach the host."""


@dataclass
class Script:
    """The scenario's results, looked up by what the engine says it is doing."""

    scenario: Scenario
    clock: SimulatedClock
    doing: dict[str, tuple[str, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def observe(self, record: AuditRecord) -> None:
        """Audit listener: remember the attempt or rollback index each step is on."""
        if record.step is None:
            return
        if record.event == "step.intent":
            self.doing[record.step] = ("attempt", int(record.data.get("attempt", 1)))
        elif record.event == "rollback.intent":
            self.doing[record.step] = ("rollback", int(record.data.get("index", 0)))

    def result_for(self, request: ActionRequest) -> Result | None:
        what, number = self.doing.get(request.step_id, ("attempt", 1))
        if what == "rollback":
            found = self.scenario.rollback_result(request.step_id, number)
            label = f"rollback action {number + 1} of step {request.step_id!r}"
        else:
            found = self.scenario.result(request.step_id, number)
            label = f"step {request.step_id!r}"
        if found is None and self.scenario.strict:
            self.problems.append(
                f"{label} ran but the scenario gives it no result (strict: true); "
                "add it under " + ("rollbacks:" if what == "rollback" else "steps:")
            )
            return Result(outcome=HostOutcome(fail=True, error="no scripted result (strict)"))
        return found


class ScriptedRunner:
    """Answers ssh, ansible, local and http requests from the script."""

    def __init__(self, kind: str, script: Script) -> None:
        self.kind = kind
        self.script = script

    def run(self, request: ActionRequest, cancel: CancelToken) -> ActionResult:
        result = self.script.result_for(request) or Result()
        self.script.clock.advance(result.duration)
        if request.hosts:
            return self._on_hosts(request, result)
        if isinstance(request.action, HttpAction):
            return self._http(request, result)
        return self._single(request, result.outcome)

    def _on_hosts(self, request: ActionRequest, result: Result) -> ActionResult:
        hosts = [self._host(request, host, result.for_host(host)) for host in request.hosts]
        if any(r.cut_off for r in hosts):
            self.script.clock.advance(request.timeout or 0.0)
        return aggregate(hosts, timed_out=any(r.cut_off for r in hosts))

    def _host(self, request: ActionRequest, host: str, out: HostOutcome) -> HostResult:
        now = self.script.clock.now()
        mask = request.mask
        if out.unreachable:
            return HostResult(
                host=host,
                rc=None,
                ok=False,
                stderr=mask(out.stderr),
                error=out.error or f"{host} unreachable: connection refused (simulated)",
                started=now,
                finished=now,
            )
        if out.timeout:
            limit = format_duration(request.timeout) if request.timeout else "its timeout"
            return HostResult(
                host=host,
                rc=None,
                ok=False,
                stdout=mask(out.stdout),
                stderr=mask(out.stderr),
                error=out.error or f"timed out after {limit} (simulated)",
                cut_off=True,
                started=now,
                finished=now,
            )
        return HostResult(
            host=host,
            rc=out.exit_code,
            ok=out.ok,
            stdout=mask(out.stdout),
            stderr=mask(out.stderr),
            error=None if out.ok else mask(out.error or _failure(out)),
            started=now,
            finished=now,
        )

    def _single(self, request: ActionRequest, out: HostOutcome) -> ActionResult:
        if out.timeout:
            self.script.clock.advance(request.timeout or 0.0)
            limit = format_duration(request.timeout) if request.timeout else "its timeout"
            return ActionResult(
                ok=False,
                stdout=request.mask(out.stdout),
                stderr=request.mask(out.stderr),
                error=out.error or f"timed out after {limit} (simulated)",
                timed_out=True,
            )
        return ActionResult(
            ok=out.ok,
            rc=out.exit_code,
            stdout=request.mask(out.stdout),
            stderr=request.mask(out.stderr),
            error=None if out.ok else request.mask(out.error or _failure(out)),
        )

    def _http(self, request: ActionRequest, result: Result) -> ActionResult:
        action = request.action
        assert isinstance(action, HttpAction)
        out = result.outcome
        if out.unreachable:
            error = out.error or f"{action.method} {action.url}: connection refused (simulated)"
            return ActionResult(ok=False, error=request.mask(error))
        if out.timeout:
            return self._single(request, out)
        expected = action.expect_status or (200,)
        status = result.status if result.status is not None else (500 if out.fail else expected[0])
        body = out.stdout
        if not body and result.has_json:
            body = json.dumps(result.json)
        ok = status in expected and not out.fail
        error = None
        if not ok:
            wanted = ", ".join(str(s) for s in expected)
            error = (
                out.error or f"{action.method} {action.url} answered {status}, expected {wanted}"
            )
        return ActionResult(
            ok=ok,
            stdout=request.mask(body),
            error=request.mask(error) if error else None,
            data={
                "status": status,
                "json": _parsed(result, body),
                "body": request.mask(body),
                "headers": {},
                "elapsed": result.duration,
            },
        )


def _parsed(result: Result, body: str) -> Any:
    if result.has_json:
        return result.json
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _failure(out: HostOutcome) -> str:
    last = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ""
    return f"exit code {out.exit_code}" + (f": {last}" if last else "")


def aggregate(results: list[HostResult], *, timed_out: bool = False) -> ActionResult:
    """The step's result from its hosts', built exactly as the ssh and ansible runners do."""
    return ActionResult.from_hosts(results, data={"simulated": True}, timed_out=timed_out)


class SimulatedWait:
    """``wait`` on the simulated clock: instant, but time moves as if it waited."""

    kind = "wait"

    def __init__(self, clock: SimulatedClock) -> None:
        self.clock = clock

    def run(self, request: ActionRequest, cancel: CancelToken) -> ActionResult:
        action = request.action
        assert isinstance(action, WaitAction)
        duration = max(action.duration, 0.0)
        limit = duration if request.timeout is None else min(duration, request.timeout)
        if self.clock.sleep(limit, cancel):
            return ActionResult(ok=False, cancelled=True, error=f"cancelled: {cancel.reason}")
        if limit < duration:
            return ActionResult(
                ok=False,
                timed_out=True,
                error=f"timed out after {format_duration(limit)}: the step timeout is shorter "
                f"than its {format_duration(duration)} wait",
            )
        return ActionResult(ok=True, data={"waited": duration})


class SimulatedLog:
    """``log`` as in production: the rendered message, masked, is the step's stdout."""

    kind = "log"

    def run(self, request: ActionRequest, cancel: CancelToken) -> ActionResult:
        action = request.action
        assert isinstance(action, LogAction)
        return ActionResult(ok=True, stdout=request.mask(action.message))


def runners(script: Script) -> Mapping[str, Any]:
    """A runner for every action kind the engine may ask for."""
    found: dict[str, Any] = {k: ScriptedRunner(k, script) for k in ("ssh", "ansible", "local")}
    found["http"] = ScriptedRunner("http", script)
    found["wait"] = SimulatedWait(script.clock)
    found["log"] = SimulatedLog()
    return found
