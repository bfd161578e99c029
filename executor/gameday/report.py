"""The game day report: the verdict, the timings, the checks and the timeline, as data and Markdown.

Built from a ``Timeline`` (itself read from the audit log) and the audit
chain's verification, so a report can be rebuilt from the log at any time
and every number in it is a difference of audit timestamps.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from executor.audit import VerifyReport
from executor.gameday.timeline import Timeline
from executor.model import format_duration

MEASURES = (
    ("detect", "Time to detect", "the alert reached the executor (alerts.received, firing)"),
    ("fired", "Alert fired", "Alertmanager's startsAt for the alert (Prometheus's clock)"),
    ("first_action", "Time to first action", "first step.intent of an ssh/ansible/local/http step"),
    (
        "mitigate",
        "Time to mitigate",
        "every check passing at once, each after failing since the fault (gameday.recovered)",
    ),
    ("run_finished", "Run finished", "run.finished of the drill's run"),
    ("resolved", "Alert resolved", "the executor received the alert as resolved"),
)
OBJECTIVE_WORDS = {
    "detect": "time to detect",
    "first_action": "time to first action",
    "mitigate": "time to mitigate",
}


@dataclass
class GamedayReport:
    timeline: Timeline
    audit_log: str
    audit_ok: bool
    audit_detail: str
    audit_records: int
    audit_last_hash: str | None
    reasons: list[str] = field(default_factory=list)
    objectives: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.reasons

    @property
    def title(self) -> str:
        plan = self.timeline.plan
        return str(plan.get("title") or plan.get("name") or self.timeline.drill)

    def to_dict(self) -> dict[str, Any]:
        line = self.timeline
        return {
            "drill": line.drill,
            "passed": self.passed,
            "reasons": self.reasons,
            "plan": dict(line.plan),
            "fault": {
                **(line.plan.get("fault") or {}),
                "injected_at": line.injected_ts,
                "lines": line.fault_lines,
            },
            "run": {
                "id": line.run_id,
                "status": line.run_status,
                "expected": (line.plan.get("expect") or {}).get("run"),
            },
            "ended": line.ended,
            "error": line.error,
            "timings": dict(line.timings),
            "objectives": self.objectives,
            "approvals": [{**asdict(a), "wait": a.wait} for a in line.approvals],
            "checks": [asdict(c) for c in line.checks],
            "timeline": [asdict(e) for e in line.events],
            "spans": [asdict(s) for s in line.spans],
            "cleanup": line.cleanup_lines,
            "audit": {
                "path": self.audit_log,
                "ok": self.audit_ok,
                "detail": self.audit_detail,
                "records": self.audit_records,
                "last_hash": self.audit_last_hash,
                "first_seq": line.first_seq,
                "last_seq": line.last_seq,
            },
        }


def build_report(timeline: Timeline, audit_log: Path, verified: VerifyReport) -> GamedayReport:
    report = GamedayReport(
        timeline=timeline,
        audit_log=str(audit_log),
        audit_ok=verified.ok,
        audit_detail=str(verified),
        audit_records=verified.count,
        audit_last_hash=verified.last_hash,
    )
    report.objectives = _objectives(timeline)
    report.reasons = _reasons(timeline, report)
    return report


def _objectives(timeline: Timeline) -> list[dict[str, Any]]:
    out = []
    for name, limit in (timeline.plan.get("objectives") or {}).items():
        actual = timeline.timings.get(name)
        out.append(
            {
                "name": name,
                "limit": limit,
                "actual": actual,
                "met": actual is not None and actual <= limit,
            }
        )
    return out


def _reasons(line: Timeline, report: GamedayReport) -> list[str]:
    """Why the drill failed, one sentence each; empty when it passed."""
    plan = line.plan
    reasons = []
    if line.ended == "deadline":
        reasons.append(f"the drill hit its hard time limit of {seconds_text(plan.get('timeout'))}")
    elif line.ended != "completed":
        reasons.append(f"the drill stopped early ({line.ended}): {line.error}")
    if line.injected_ts is None:
        reasons.append("the fault was never injected")
    runbook = (plan.get("start") or {}).get("runbook")
    expected = (plan.get("expect") or {}).get("run", "succeeded")
    if line.injected_ts is not None and line.run_id is None:
        reasons.append(f"no run of {runbook} started")
    elif line.run_id is not None and line.run_status != expected:
        reasons.append(
            f"run {line.run_id} ended {line.run_status or 'not at all'}, expected {expected}"
        )
    detection = plan.get("detection")
    if detection and line.injected_ts is not None and line.timings.get("detect") is None:
        reasons.append(f"{detection.get('alert')} never reached the executor")
    for check in line.checks:
        if not check.final:
            reasons.append(
                f"check {check.name!r} does not pass at the end: "
                f"{check.detail or 'never evaluated'}"
            )
    for objective in report.objectives:
        if not objective["met"]:
            words = OBJECTIVE_WORDS.get(objective["name"], objective["name"])
            limit = seconds_text(objective["limit"])
            if objective["actual"] is None:
                reasons.append(f"{words} never came, against an objective of {limit}")
            else:
                took = seconds_text(objective["actual"])
                reasons.append(f"{words} took {took}, over the objective of {limit}")
    if line.injected_ts is not None and not line.cleaned:
        why = line.cleanup_error or "it did not run"
        reasons.append(f"the cleanup did not restore the host ({why}): run repair-all on it")
    if not report.audit_ok:
        reasons.append(f"the audit log does not verify: {report.audit_detail}")
    return reasons


def seconds_text(value: Any) -> str:
    """``4.240 s``, with the readable form past a minute; ``-`` for nothing."""
    if value is None:
        return "-"
    seconds = float(value)
    return f"{seconds:.3f} s" if seconds < 60 else f"{seconds:.3f} s ({format_duration(seconds)})"


def timing_rows(report: GamedayReport) -> list[list[str]]:
    """[measure, time, objective, met, how it is measured] for each timing."""
    limits = {o["name"]: o for o in report.objectives}
    rows = []
    for key, label, meaning in MEASURES:
        objective = limits.get(key)
        met = "-" if objective is None else ("met" if objective["met"] else "MISSED")
        limit = seconds_text(objective["limit"]) if objective else "-"
        rows.append([label, seconds_text(report.timeline.timings.get(key)), limit, met, meaning])
    return rows


def facts(report: GamedayReport) -> list[tuple[str, str]]:
    """The report's header: what was broken, how the run started, how it ended."""
    line, plan = report.timeline, report.timeline.plan
    fault, start = plan.get("fault") or {}, plan.get("start") or {}
    expected = (plan.get("expect") or {}).get("run")
    return [
        ("Drill", line.drill),
        ("Plan", f"{plan.get('source')} (sha256 {str(plan.get('sha256'))[:12]})"),
        ("Fault", f"{fault.get('inject')} on {fault.get('host')}: {'; '.join(line.fault_lines)}"),
        ("Injected at", line.injected_ts or "-"),
        (
            "Runbook",
            f"{start.get('runbook')}, "
            + (
                f"started directly by {start.get('actor')}"
                if start.get("via") == "direct"
                else "started by the routed alert (Alertmanager)"
            ),
        ),
        (
            "Run",
            f"{line.run_id or 'none'}: {line.run_status or 'did not end'} (expected {expected})",
        ),
        ("Drill ended", f"{line.ended}" + (f": {line.error}" if line.error else "")),
        (
            "Audit log",
            f"{report.audit_log}: {report.audit_detail}; records "
            f"{line.first_seq}..{line.last_seq}; last hash {report.audit_last_hash}",
        ),
    ]


# --------------------------------------------------------------------------- Markdown


def _cell(value: Any) -> str:
    text = "-" if value is None or value == "" else str(value)
    return " ".join(text.split()).replace("|", "\\|")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def render_markdown(report: GamedayReport) -> str:
    line = report.timeline
    verdict = "PASSED" if report.passed else "FAILED"
    out = [f"# Game day: {report.title}: {verdict}", ""]
    out += _table(["", ""], [list(f) for f in facts(report)])
    out += [
        "",
        "## Timings",
        "",
        "Seconds from the fault injection (`gameday.fault_injected`), as differences of "
        "audit-log timestamps.",
        "",
    ]
    out += _table(["Measure", "Time", "Objective", "", "Measured as"], timing_rows(report))
    if line.approvals:
        out += ["", "## Approvals", ""]
        out += _table(
            ["Step", "Decision", "By", "Requested", "Wait"],
            [
                [
                    a.step,
                    a.decision or "none",
                    a.by,
                    seconds_text(a.requested),
                    seconds_text(a.wait),
                ]
                for a in line.approvals
            ],
        )
    out += ["", "## Checks", ""]
    out += _table(
        ["Check", "First passed", "At the end", "Detail"],
        [
            [
                c.name,
                seconds_text(c.first_passed),
                {True: "pass", False: "FAIL"}.get(c.final, "not run"),
                c.detail,
            ]
            for c in line.checks
        ],
    )
    out += ["", "## Verdict", ""]
    out += [f"- {r}" for r in report.reasons] or ["Every expectation was met."]
    out += ["", "## Timeline", ""]
    out += _table(
        ["t (s)", "UTC", "Source", "Event", "Detail"],
        [[f"{e.t:+.3f}", e.ts, e.source, e.event, e.summary] for e in line.events],
    )
    out += ["", "## Cleanup", ""]
    out += [f"- {c}" for c in line.cleanup_lines] or ["- nothing was repaired"]
    return "\n".join(out) + "\n"


def render_json(report: GamedayReport) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=False) + "\n"
