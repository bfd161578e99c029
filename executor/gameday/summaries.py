"""One line for a person per audit record on a drill's timeline."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from executor.ports import AuditRecord

Summary = Callable[[Mapping[str, Any]], str]


def _joined(items: Any) -> str:
    return ", ".join(str(i) for i in items or [])


def _answered(d: Mapping[str, Any]) -> str:
    refused = f": REFUSED: {d.get('error')}" if d.get("error") else ""
    return f"{d.get('by')} {d.get('decision')}s step {d.get('step')}{refused}"


def _finished(d: Mapping[str, Any]) -> str:
    return f"drill ended ({d.get('ended')})" + (f": {d.get('error')}" if d.get("error") else "")


GAMEDAY: dict[str, Summary] = {
    "started": lambda d: f"drill {d.get('drill')} of plan {(d.get('plan') or {}).get('name')}",
    "preflight": lambda d: "steady state before the fault: every check passes",
    "fault_intent": lambda d: f"injecting {d.get('fault')} on {d.get('host')}",
    "fault_injected": lambda d: "; ".join(d.get("lines") or []) or "fault injected",
    "run_started": lambda d: f"run {d.get('run_id')} started ({d.get('via')})",
    "answered": _answered,
    "check": lambda d: (
        f"check {d.get('name')!r} {'passes' if d.get('passed') else 'fails'}: {d.get('detail')}"
    ),
    "recovered": lambda d: "every check passes, each after failing since the fault: mitigated",
    "verified": lambda d: "final checks: " + ("all pass" if d.get("all_passed") else "FAILING"),
    "deadline": lambda d: f"hard time limit of {d.get('timeout')}s reached",
    "run_killed": lambda d: f"run {d.get('run_id')} killed: {d.get('reason')}",
    "cleanup": lambda d: "; ".join(d.get("lines") or []) or f"FAILED: {d.get('error')}",
    "finished": _finished,
}

RUN: dict[str, Summary] = {
    "run.requested": lambda d: f"trigger {d.get('trigger')}",
    "run.refused": lambda d: str(d.get("reason")),
    "step.intent": lambda d: f"{d.get('kind')} on {_joined(d.get('hosts')) or 'the executor'}",
    "step.outcome": lambda d: "ok" if d.get("ok") else f"failed: {d.get('error')}",
    "step.skipped": lambda d: str(d.get("reason") or ""),
    "step.retry": lambda d: f"retry in {d.get('delay')}s",
    "approval.requested": lambda d: f"approvers {_joined(d.get('approvers'))}",
    "approval.granted": lambda d: f"by {d.get('approver')}",
    "approval.denied": lambda d: f"by {d.get('approver')}: {d.get('reason')}",
    "approval.refused": lambda d: f"{d.get('approver')}: {d.get('reason')}",
    "run.finished": lambda d: str(d.get("status")),
    "ssh.host.started": lambda d: str(d.get("host")),
    "ssh.host.finished": lambda d: f"{d.get('host')}: rc {d.get('rc')} in {d.get('duration')}s",
    "credential.issued": lambda d: (
        f"{d.get('credential')} (principals {_joined(d.get('principals'))}, ttl {d.get('ttl')}s)"
    ),
    "credential.revoked": lambda d: f"{d.get('credential')}: {d.get('result')}",
    "guard.evaluated": lambda d: f"{d.get('expression')} = {d.get('value')}",
}


def summarize(record: AuditRecord) -> str:
    """``step: what happened`` for a run record, the drill's own words for a gameday one."""
    name = record.event.removeprefix("gameday.")
    if name != record.event:
        return GAMEDAY.get(name, lambda _d: name.replace("_", " "))(record.data)
    text = RUN.get(record.event, lambda _d: "")(record.data)
    return f"{record.step}: {text}" if record.step else text
