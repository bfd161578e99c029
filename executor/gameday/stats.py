"""`runbook report`: how runs went, per runbook and overall, from the store and the audit log.

The store says what each run is now (it knows runs still waiting); the audit
log says when things happened. Per runbook and overall:

    runs by status       the store's status of each run (dry runs left out), plus runs
                         the guards refused (``run.refused``: they never became runs)
    success rate         succeeded / runs that ended
    time to first action run.requested -> first step.intent of an ssh/ansible/local/http step
    approval wait        approval.requested -> granted (quorum reached), denied or expired
    time to mitigation   run.requested -> run.finished, for runs that succeeded

Durations are given as count, median and p90 (linear interpolation between
the closest ranks, as ``statistics.quantiles(method="inclusive")``).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from executor.gameday.auditfacts import approval_waits, is_first_action, parse_ts
from executor.model import RunStatus
from executor.ports import AuditRecord

OVERALL = "(all runbooks)"
_ENDED = frozenset(s.value for s in RunStatus if s.terminal)


@dataclass(frozen=True)
class Distribution:
    count: int
    median: float | None
    p90: float | None

    @classmethod
    def of(cls, values: Iterable[float]) -> Distribution:
        data = sorted(values)
        if not data:
            return cls(0, None, None)
        if len(data) == 1:
            return cls(1, data[0], data[0])
        p90 = statistics.quantiles(data, n=10, method="inclusive")[8]
        return cls(len(data), statistics.median(data), p90)

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "median": self.median, "p90": self.p90}


@dataclass
class _Timings:
    """What the audit log says about one run."""

    requested: float | None = None
    first_action: float | None = None
    finished: float | None = None
    status: str | None = None
    waits: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class RunbookStats:
    runbook: str
    by_status: Mapping[str, int]
    refused: int
    success_rate: float | None
    first_action: Distribution
    approval_wait: Distribution
    mitigation: Distribution

    @property
    def runs(self) -> int:
        return sum(self.by_status.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "runbook": self.runbook,
            "runs": self.runs,
            "by_status": dict(self.by_status),
            "refused": self.refused,
            "success_rate": self.success_rate,
            "time_to_first_action": self.first_action.as_dict(),
            "approval_wait": self.approval_wait.as_dict(),
            "time_to_mitigation": self.mitigation.as_dict(),
        }


def _audit_timings(
    records: Iterable[AuditRecord],
) -> tuple[dict[str, _Timings], list[AuditRecord]]:
    """Per run id, the moments that matter; and the refusals (runs that never were)."""
    runs: dict[str, _Timings] = {}
    refused: list[AuditRecord] = []
    asked: list[AuditRecord] = []
    for record in records:
        if record.event == "run.refused":
            refused.append(record)
        if record.run_id is None:
            continue
        run = runs.setdefault(record.run_id, _Timings())
        if record.event == "run.requested":
            run.requested = parse_ts(record.ts)
        elif run.first_action is None and is_first_action(record):
            run.first_action = parse_ts(record.ts)
        elif record.event == "run.finished":
            run.finished, run.status = parse_ts(record.ts), record.data.get("status")
        elif record.event.startswith("approval."):
            asked.append(record)
    for wait in approval_waits(asked):
        if wait.wait is not None:
            runs[wait.run_id].waits.append(wait.wait)
    return runs, refused


def _stats(
    name: str, rows: list[Mapping[str, Any]], timings: Mapping[str, _Timings], refused: int
) -> RunbookStats:
    by_status = Counter(str(r["status"]) for r in rows)
    ended = sum(n for status, n in by_status.items() if status in _ENDED)
    mine = [timings[r["id"]] for r in rows if r["id"] in timings]
    first = [
        t.first_action - t.requested
        for t in mine
        if t.first_action is not None and t.requested is not None
    ]
    mitigation = [
        t.finished - t.requested
        for t in mine
        if t.status == RunStatus.SUCCEEDED.value
        and t.finished is not None
        and t.requested is not None
    ]
    return RunbookStats(
        runbook=name,
        by_status=dict(sorted(by_status.items())),
        refused=refused,
        success_rate=by_status.get(RunStatus.SUCCEEDED.value, 0) / ended if ended else None,
        first_action=Distribution.of(first),
        approval_wait=Distribution.of(w for t in mine for w in t.waits),
        mitigation=Distribution.of(mitigation),
    )


def run_stats(
    runs: Iterable[Mapping[str, Any]],
    records: Iterable[AuditRecord],
    *,
    since: float | None = None,
    runbook: str | None = None,
) -> list[RunbookStats]:
    """One entry per runbook (by name), then the overall one; runs created before ``since``
    (epoch seconds) and dry runs are left out."""
    timings, refusals = _audit_timings(records)
    chosen = [
        r
        for r in runs
        if not r.get("dry_run")
        and (since is None or float(r.get("created") or 0) >= since)
        and (runbook is None or r["runbook"] == runbook)
    ]
    refused: Counter[str] = Counter()
    for record in refusals:
        name = (record.runbook or "?").split("@")[0]
        if (since is None or parse_ts(record.ts) >= since) and runbook in (None, name):
            refused[name] += 1
    names = sorted({str(r["runbook"]) for r in chosen} | set(refused))
    out = [_stats(n, [r for r in chosen if r["runbook"] == n], timings, refused[n]) for n in names]
    out.append(_stats(OVERALL, chosen, timings, sum(refused.values())))
    return out
