"""Facts both reports read out of audit records: timestamps, first actions, approval waits.

One definition for `runbook gameday` and `runbook report`, so a drill's
approval wait and the same run's approval wait in the statistics are the
same number.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from executor.model import MUTATING_KINDS
from executor.ports import AuditRecord

ACTION_KINDS = MUTATING_KINDS | {"http"}
"""Steps that count as an action: they act on, or probe, something outside the executor."""

DECISIVE = ("approval.granted", "approval.denied", "approval.expired")

_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")


def parse_ts(text: str) -> float:
    """Epoch seconds of an RFC 3339 timestamp: the audit's (µs), Prometheus's (ns), UTC or not."""
    found = _TS.match(text.strip())
    if not found:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    whole, fraction, zone = found.groups()
    zone = "+00:00" if zone in (None, "Z") else zone
    micros = (fraction or "0")[:6].ljust(6, "0")
    return datetime.fromisoformat(f"{whole}.{micros}{zone}").timestamp()


def is_first_action(record: AuditRecord) -> bool:
    """A ``step.intent`` of a real (not dry-run) ssh, ansible, local or http step."""
    return (
        record.event == "step.intent"
        and record.data.get("kind") in ACTION_KINDS
        and not record.data.get("dry_run")
    )


@dataclass(frozen=True)
class ApprovalWait:
    """One approval step of one run: when it was asked, and the record that decided it."""

    run_id: str
    step: str
    requested: float
    decided: float | None = None
    decision: str | None = None  # granted | denied | expired
    by: str | None = None

    @property
    def wait(self) -> float | None:
        return None if self.decided is None else self.decided - self.requested


def approval_waits(records: Iterable[AuditRecord]) -> list[ApprovalWait]:
    """Each approval step's wait, in the order asked.

    Decided by the quorum-th ``approval.granted``, or by the first denial or
    expiry; a step asked again (a resumed run) keeps its first request.
    """
    waits: dict[tuple[str, str], ApprovalWait] = {}
    quorum: dict[tuple[str, str], int] = {}
    granted: dict[tuple[str, str], int] = {}
    for record in records:
        if record.run_id is None or record.step is None:
            continue
        key = (record.run_id, record.step)
        if record.event == "approval.requested" and key not in waits:
            waits[key] = ApprovalWait(record.run_id, record.step, parse_ts(record.ts))
            quorum[key] = int(record.data.get("quorum") or 1)
            granted[key] = 0
        elif record.event in DECISIVE and key in waits and waits[key].decided is None:
            granted[key] += record.event == "approval.granted"
            if record.event == "approval.granted" and granted[key] < quorum[key]:
                continue
            waits[key] = ApprovalWait(
                record.run_id,
                record.step,
                waits[key].requested,
                parse_ts(record.ts),
                record.event.removeprefix("approval."),
                record.data.get("approver"),
            )
    return list(waits.values())
