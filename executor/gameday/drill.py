"""The drill: break the world on purpose, let the real pipeline act, verify recovery.

    outcome = Drill(plan, world, DrillSettings(out=Path("report"), catalog=Path("runbooks"))).run()

In order: check the plan against the world, start (or reach) `runbook serve`,
wait for the steady state (every check passes, the alert is not active),
inject the fault, then watch: what Prometheus and Alertmanager say, the run
the alert starts (or start it directly), approvals answered by the named
approvers after their delay, and the checks, until the run has ended and the
checks pass, the run ended otherwise than expected, or the hard time limit.
Cleanup runs however the drill ends (deadline, error, Ctrl-C): the run is
killed if it still runs, the host is repaired (``repair-all``) and the server
the drill started is stopped.

Every fact the report needs is appended to the server's audit log as a
``gameday.*`` record (see ``executor.gameday.timeline``), so the timings are
differences of audit timestamps.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from executor.audit import JsonlAudit
from executor.errors import Issue, RunbookError, ValidationFailed
from executor.gameday.api import GamedayError, Observatory, ServeApi
from executor.gameday.auditfacts import parse_ts
from executor.gameday.plan import HttpCheck, Plan
from executor.gameday.probes import Checker, Verdict
from executor.gameday.serve import DRIVER, DRIVER_GROUP, OwnServer, make_callers
from executor.gameday.world import World
from executor.model import RunStatus

ACTOR = "gameday"
MAX_FAILED_READS = 10
"""Reads of the server that may fail in a row (a slow turn) before the drill gives up."""
TERMINAL = frozenset(s.value for s in RunStatus if s.terminal)
Say = Callable[[str], None]


@dataclass(frozen=True)
class DrillSettings:
    out: Path
    catalog: Path
    poll: float = 0.5
    preflight: float = 30.0
    """Longest wait for the steady state before the fault (within the time limit)."""
    cleanup_wait: float = 15.0
    """Longest wait for a killed run to stop during cleanup."""


@dataclass(frozen=True)
class DrillOutcome:
    drill: str
    audit_log: Path
    ended: str  # completed | deadline | error | interrupted
    error: str | None = None
    cleanup_error: str | None = None


def new_drill_id(now: float) -> str:
    stamp = datetime.fromtimestamp(now, tz=UTC).strftime("%Y%m%d-%H%M%S")
    return f"gd-{stamp}-{secrets.token_hex(3)}"


def plan_summary(plan: Plan) -> dict[str, Any]:
    """What the audit keeps of the plan: enough to rebuild the report from the log alone."""
    summary: dict[str, Any] = {
        "name": plan.name,
        "title": plan.title,
        "source": plan.source,
        "sha256": plan.sha256,
        "fault": {"host": plan.fault.host, "inject": plan.fault.inject},
        "start": {
            "via": plan.start.via,
            "runbook": plan.start.runbook,
            "actor": _starter(plan),
            "inputs": sorted(plan.start.inputs),
            "after": plan.start.after,
        },
        "approvals": [
            {"step": a.step, "by": a.by, "after": a.after, "approve": a.approve}
            for a in plan.answers
        ],
        "checks": [{"name": c.name, "kind": c.probe.kind} for c in plan.checks],
        "expect": {"run": plan.expect_run},
        "objectives": dict(plan.objectives.items()),
        "timeout": plan.timeout,
        "settle": plan.settle,
    }
    if plan.detection is not None:
        summary["detection"] = {
            "alert": plan.detection.alert,
            "labels": dict(plan.detection.labels),
        }
    return summary


def _starter(plan: Plan) -> str:
    if plan.start.via != "direct":
        return "alertmanager"
    if plan.server is not None:
        return f"the identity of ${plan.server.token_env}"
    return plan.start.actor


def world_issues(plan: Plan, world: World) -> list[Issue]:
    """Hosts the plan names that this world does not have, at their place in the file."""
    known = set(world.host_names())
    named: list[tuple[tuple[Any, ...], str]] = [(("fault", "host"), plan.fault.host)]
    for index, check in enumerate(plan.checks):
        if isinstance(check.probe, HttpCheck) and check.probe.host is not None:
            named.append((("checks", index, "http", "host"), check.probe.host))
    issues = []
    for path, host in named:
        if host not in known:
            line, col = plan.document.position(path) if plan.document else (1, 1)
            issues.append(
                Issue(
                    plan.source,
                    line,
                    col,
                    f"the sandbox has no host {host!r} (hosts: {', '.join(sorted(known))})",
                    code="gameday-host",
                )
            )
    return issues


class Drill:
    """One game day, from the steady state to the cleanup."""

    def __init__(
        self, plan: Plan, world: World, settings: DrillSettings, say: Say | None = None
    ) -> None:
        self.plan = plan
        self.world = world
        self.settings = settings
        self.say: Say = say or (lambda _line: None)
        self.drill = new_drill_id(time.time())
        self.server: OwnServer | None = None
        self.api: ServeApi | None = None
        self.observatory: Observatory | None = None
        self.audit: JsonlAudit | None = None
        self.audit_log: Path | None = None
        self.checker: Checker | None = None
        self.deadline = 0.0
        self.injected = False
        self.t0_epoch = 0.0
        self.t0_mono = 0.0
        self.run_id: str | None = None
        self.run_status: str | None = None
        self.run_ended_at: float | None = None
        self.answered: set[int] = set()
        self.verdicts: dict[str, Verdict] = {}
        self.seen_failing: set[str] = set()
        self.recovered = False
        self.observed: set[tuple[str, str]] = set()
        self.failed_reads = 0

    # ------------------------------------------------------------------ outline

    def run(self) -> DrillOutcome:
        issues = world_issues(self.plan, self.world)
        if issues:
            raise ValidationFailed(issues)
        self.deadline = time.monotonic() + self.plan.timeout
        try:
            home = self._open()
            ended, error, cleanup_error = self._drill()
        finally:
            self._close()
        return DrillOutcome(self.drill, home / "audit.jsonl", ended, error, cleanup_error)

    def _open(self) -> Path:
        """Reach Prometheus, Alertmanager and a `runbook serve`; open its audit log."""
        alerting = self.world.alerting()
        self.observatory = Observatory(alerting.prometheus_url, alerting.alertmanager_url)
        self.checker = Checker(self.plan.checks, self.world, self.observatory)
        if self.plan.server is not None:
            home = self.plan.server.home
            self.api = ServeApi(self.plan.server.url, self._env_tokens(), DRIVER)
            if not self.api.ready():
                raise GamedayError(
                    f"the server {self.plan.server.url} named in the plan is not ready",
                    hint="start it, or remove server: from the plan to let the drill start one",
                )
        else:
            home = self.settings.out / "home"
            callers = make_callers(self._identities())
            self.server = OwnServer(
                home, self.settings.catalog, alerting, callers, self.world.server_env()
            )
            self.say(f"starting runbook serve on {self.server.url} (home {home})")
            self.server.start(self.deadline)
            self.api = ServeApi(
                self.server.url, {c.name: c.token for c in callers.values()}, DRIVER
            )
        self.audit_log = home / "audit.jsonl"
        self.audit = JsonlAudit(self.audit_log)
        return home

    def _identities(self) -> dict[str, frozenset[str]]:
        """Who the drill acts as on its own server, with their groups."""
        groups: dict[str, set[str]] = {DRIVER: {DRIVER_GROUP}}
        if self.plan.start.via == "direct":
            groups.setdefault(self.plan.start.actor, set()).add(DRIVER_GROUP)
        for answer in self.plan.answers:
            groups.setdefault(answer.by, set()).update(answer.groups)
        return {name: frozenset(g) for name, g in groups.items()}

    def _env_tokens(self) -> dict[str, str]:
        """Tokens of a reused server, from the variables the plan names."""
        assert self.plan.server is not None
        wanted = {DRIVER: self.plan.server.token_env}
        wanted.update({a.by: a.token_env for a in self.plan.answers if a.token_env})
        tokens = {}
        for who, variable in wanted.items():
            token = os.environ.get(variable, "")
            if not token:
                raise GamedayError(
                    f"the variable {variable} (the token of {who}) is not set",
                    hint=f"export {variable}=<bearer token of {who} on {self.plan.server.url}>",
                )
            tokens[who] = token
        return tokens

    def _close(self) -> None:
        if self.server is not None:
            code = self.server.stop()
            self.say(f"runbook serve stopped (exit {code})")
        for client in (self.api, self.observatory):
            if client is not None:
                client.close()

    def _drill(self) -> tuple[str, str | None, str | None]:
        self.record("gameday.started", plan=plan_summary(self.plan))
        ended, error = "error", None
        try:
            self._preflight()
            self._inject()
            ended = self._watch()
        except RunbookError as exc:
            error = exc.message
            self.say(f"drill stopped: {error}")
        except KeyboardInterrupt:
            ended, error = "interrupted", "interrupted (Ctrl-C or SIGTERM)"
            raise
        finally:
            cleanup_error = self._cleanup(ended)
            self.record("gameday.finished", ended=ended, error=error, cleanup_error=cleanup_error)
        return ended, error, cleanup_error

    # ------------------------------------------------------------------ helpers

    def record(self, event: str, **data: Any) -> Any:
        assert self.audit is not None
        return self.audit.append(event, actor=ACTOR, data={"drill": self.drill, **data})

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def _sleep(self) -> None:
        time.sleep(max(0.0, min(self.settings.poll, self.left())))

    # ------------------------------------------------------------------ phases

    def _preflight(self) -> None:
        """Wait for the steady state: a drill that starts broken measures nothing."""
        assert self.checker is not None and self.observatory is not None
        limit = min(time.monotonic() + self.settings.preflight, self.deadline)
        steady = [c for c in self.plan.checks if c.probe.kind != "alert_resolved"]
        while True:
            verdicts = {c.name: self.checker.evaluate(c) for c in steady}
            problems = [
                f"check {n!r} fails: {v.detail}" for n, v in verdicts.items() if not v.passed
            ]
            detection = self.plan.detection
            if detection is not None:
                labels = {"alertname": detection.alert, **detection.labels}
                if self.observatory.active_alerts(labels):
                    problems.append(f"{detection.alert} is still active in Alertmanager")
            if not problems:
                self.record("gameday.preflight", results=_results(verdicts))
                return
            if time.monotonic() >= limit:
                raise GamedayError(
                    "the sandbox is not in its steady state, so the fault was NOT injected: "
                    + "; ".join(problems),
                    hint=f"repair the host (python -m executor.sandbox fault "
                    f"{self.plan.fault.host} repair-all) or wait for the alert to resolve",
                )
            self._sleep()

    def _inject(self) -> None:
        fault = self.plan.fault
        self.record("gameday.fault_intent", host=fault.host, fault=fault.inject)
        self.injected = True  # a fault that half-applied still needs the repair
        lines = self.world.inject(fault.host, fault.inject)
        record = self.record(
            "gameday.fault_injected", host=fault.host, fault=fault.inject, lines=lines
        )
        self.t0_epoch, self.t0_mono = parse_ts(record.ts), time.monotonic()
        for line in lines:
            self.say(f"fault: {line}")

    def _watch(self) -> str:
        assert self.api is not None and self.checker is not None
        while True:
            if self.left() <= 0:
                self.record("gameday.deadline", timeout=self.plan.timeout)
                self.say(f"hard time limit of {self.plan.timeout:g}s reached")
                return "deadline"
            self._observe()
            self.checker.watch()
            if self.run_id is None:
                self._find_run()
            if self.run_id is not None:
                view = self._tolerate(self.api.run, self.run_id)
                if view is not None:
                    self._answer(view)
                    if self._judge(view):
                        return "completed"
            self._sleep()

    def _tolerate(self, read: Callable[..., Any], *args: Any) -> Any:
        """A read the server failed is asked again next turn, unless the server is gone
        or it failed MAX_FAILED_READS times in a row; None meanwhile."""
        try:
            value = read(*args)
        except GamedayError as exc:
            self.failed_reads += 1
            proc = self.server.proc if self.server is not None else None
            if self.failed_reads >= MAX_FAILED_READS or (
                proc is not None and proc.poll() is not None
            ):
                raise
            self.say(f"asking again: {exc.message}")
            return None
        self.failed_reads = 0
        return value

    def _observe(self) -> None:
        """Record when Prometheus saw the alert pending and Alertmanager had it firing."""
        detection = self.plan.detection
        if detection is None or len(self.observed) >= 2:
            return
        assert self.observatory is not None
        labels = {"alertname": detection.alert, **detection.labels}
        try:
            found = [
                ("prometheus", a.get("state"), a.get("activeAt"))
                for a in self.observatory.rule_alerts(labels)
            ]
            if ("alertmanager", "firing") not in self.observed:
                found += [
                    ("alertmanager", "firing", a.get("startsAt"))
                    for a in self.observatory.active_alerts(labels)
                ]
        except GamedayError:
            return  # asked again at the next turn
        for source, state, at in found:
            if (source, state) in self.observed or not isinstance(at, str):
                continue
            if source == "prometheus" and state != "pending":
                continue
            self.observed.add((source, str(state)))
            self.record(
                "gameday.observed", source=source, alert=detection.alert, state=state, at=at
            )
            self.say(f"{source}: {detection.alert} {state} since {at}")

    def _find_run(self) -> None:
        assert self.api is not None
        start = self.plan.start
        if start.via == "direct":
            if time.monotonic() - self.t0_mono < start.after:
                return
            self.run_id = self.api.start(start.runbook, start.inputs, start.actor)
            self.record("gameday.run_started", run_id=self.run_id, via="direct", actor=start.actor)
            self.say(f"started {start.runbook} directly as {start.actor}: run {self.run_id}")
            return
        detection = self.plan.detection
        assert detection is not None
        for row in reversed(self._tolerate(self.api.alerts) or []):  # oldest first
            if row.get("received", 0) < self.t0_epoch or not detection.matches(row["labels"]):
                continue
            for decision in row.get("decisions") or []:
                runbook = str(decision.get("runbook") or "").split("@")[0]
                if decision.get("run_id") and runbook == start.runbook_name:
                    self.run_id = str(decision["run_id"])
                    self.record(
                        "gameday.run_started",
                        run_id=self.run_id,
                        via="alertmanager",
                        alert_id=row.get("id"),
                        fingerprint=row.get("fingerprint"),
                    )
                    self.say(f"{detection.alert} started {decision['runbook']}: run {self.run_id}")
                    return

    def _answer(self, view: Mapping[str, Any]) -> None:
        """Answer approval steps that wait, each once its approver's delay has passed."""
        assert self.api is not None and self.run_id is not None
        waiting = {s["step"]: s for s in view.get("steps") or [] if s.get("status") == "waiting"}
        for index, answer in enumerate(self.plan.answers):
            step = waiting.get(answer.step)
            if index in self.answered or step is None or step.get("started_at") is None:
                continue
            if time.time() < float(step["started_at"]) + answer.after:
                continue
            self.answered.add(index)
            decision = "approve" if answer.approve else "deny"
            try:
                self.api.decide(
                    self.run_id,
                    answer.step,
                    answer.by,
                    approve=answer.approve,
                    reason=answer.reason,
                )
            except GamedayError as exc:
                self.record(
                    "gameday.answered",
                    step=answer.step,
                    by=answer.by,
                    decision=decision,
                    error=exc.message,
                )
                self.say(f"{answer.by} could not {decision} {answer.step}: {exc.message}")
                continue
            self.record("gameday.answered", step=answer.step, by=answer.by, decision=decision)
            self.say(f"{answer.by} {decision}d step {answer.step}")

    def _judge(self, view: Mapping[str, Any]) -> bool:
        """Evaluate the checks; True once the drill has seen enough to end.

        Recovered means every check passes at once, each having failed since the
        fault (a pass from a metric Prometheus has not scraped again yet proves
        nothing), or the run having ended (for a check the fault never touched).
        """
        assert self.checker is not None
        status = str(view.get("status"))
        verdicts = self.checker.evaluate_all()
        for name, verdict in verdicts.items():
            before = self.verdicts.get(name)
            if before is None or before.passed != verdict.passed:
                self.record(
                    "gameday.check", name=name, passed=verdict.passed, detail=verdict.detail
                )
                self.say(
                    f"check {name!r} {'passes' if verdict.passed else 'fails'}: {verdict.detail}"
                )
        self.verdicts = verdicts
        self.seen_failing.update(name for name, v in verdicts.items() if not v.passed)
        all_passed = all(v.passed for v in verdicts.values())
        terminal = status in TERMINAL
        trusted = all(name in self.seen_failing or terminal for name in verdicts)
        if all_passed and trusted and not self.recovered:
            self.recovered = True
            self.record("gameday.recovered")
            self.say("every check passes")
        if not terminal:
            return False
        if self.run_status is None:
            self.run_status, self.run_ended_at = status, time.monotonic()
            self.say(f"run {self.run_id} ended: {status}")
        settled = time.monotonic() - (self.run_ended_at or 0.0) >= self.plan.settle
        if all_passed or status != self.plan.expect_run or settled:
            self.record(
                "gameday.verified",
                run_status=status,
                all_passed=all_passed,
                results=_results(verdicts),
            )
            return True
        return False

    # ------------------------------------------------------------------ cleanup

    def _cleanup(self, ended: str) -> str | None:
        """Stop the run if it still runs, then repair the host; the error, if the repair failed."""
        self._stop_run(ended)
        if not self.injected:
            return None
        host = self.plan.fault.host
        try:
            lines = self.world.inject(host, "repair-all")
        except Exception as exc:  # the report must say the world is broken, whatever broke
            message = f"repair-all on {host} failed: {exc}"
            self.record("gameday.cleanup", host=host, error=message)
            self.say(f"CLEANUP FAILED: {message}")
            return message
        self.record("gameday.cleanup", host=host, lines=lines)
        for line in lines:
            self.say(f"cleanup: {line}")
        return None

    def _stop_run(self, ended: str) -> None:
        if self.run_id is None or self.api is None or self.run_status in TERMINAL:
            return
        reason = f"game day {self.drill} ended ({ended}) before the run did"
        try:
            if self.api.run(self.run_id).get("status") in TERMINAL:
                return
            self.api.kill(self.run_id, reason)
            self.record("gameday.run_killed", run_id=self.run_id, reason=reason)
            self.say(f"killed run {self.run_id}: {reason}")
            limit = time.monotonic() + self.settings.cleanup_wait
            while time.monotonic() < limit:
                if self.api.run(self.run_id).get("status") in TERMINAL:
                    return
                time.sleep(0.2)
        except GamedayError as exc:
            self.record("gameday.run_killed", run_id=self.run_id, reason=reason, error=exc.message)


def _results(verdicts: Mapping[str, Verdict]) -> dict[str, dict[str, Any]]:
    return {name: {"passed": v.passed, "detail": v.detail} for name, v in verdicts.items()}
