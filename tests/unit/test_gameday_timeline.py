"""A drill's timeline and timings come from the audit log alone: differences of record
timestamps, the drill's own records separated from other drills and other runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from executor.audit import JsonlAudit, format_ts, iter_records
from executor.errors import NotFound
from executor.gameday.auditfacts import approval_waits, parse_ts
from executor.gameday.timeline import assemble, drill_ids

T0 = 1_800_000_000.0
"""When the fault is injected in the logs below."""

DRILL = "gd-20270115-080000-aaaaaa"
RUN = "r-20270115-080003-bbbbbb"
LABELS = {"alertname": "DemoappDown", "host": "web2", "job": "demoapp"}
PLAN: dict[str, Any] = {
    "name": "kill-web2",
    "fault": {"host": "web2", "inject": "kill"},
    "start": {"via": "alertmanager", "runbook": "restart-crashlooping-service"},
    "detection": {"alert": "DemoappDown", "labels": {"host": "web2"}},
    "checks": [{"name": "health", "kind": "http"}, {"name": "scraped", "kind": "prometheus"}],
    "expect": {"run": "succeeded"},
    "objectives": {"detect": 10.0, "mitigate": 5.0},
    "timeout": 180.0,
}


@dataclass
class Clock:
    t: float = T0

    def now(self) -> float:
        return self.t


class Log:
    """An audit log written at chosen times (seconds from T0)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.clock = Clock()
        self.audit = JsonlAudit(path, clock=self.clock)

    def at(self, t: float, event: str, **fields: Any) -> None:
        self.clock.t = T0 + t
        self.audit.append(event, **fields)

    def drill(self, t: float, event: str, drill: str = DRILL, **data: Any) -> None:
        self.at(t, f"gameday.{event}", actor="gameday", data={"drill": drill, **data})

    def run(
        self, t: float, event: str, step: str | None = None, run_id: str = RUN, **data: Any
    ) -> None:
        self.at(
            t,
            event,
            run_id=run_id,
            actor="alertmanager",
            step=step,
            runbook="restart-crashlooping-service@1.0.0",
            data=data,
        )

    def alert(self, t: float, status: str, labels: dict[str, str] | None = None) -> None:
        alert = {"fingerprint": "fp1", "status": status, "labels": labels or LABELS}
        self.at(t, "alerts.received", actor="alertmanager", data={"alerts": [alert]})


def full_drill(log: Log, plan: dict[str, Any] | None = None) -> None:
    """A drill as `runbook gameday` writes it, with a stale check pass and a quorum-2 approval."""
    log.at(-12, "serve.started", actor="runbook.serve", data={"pid": 1})
    log.drill(-1, "started", plan=plan or PLAN)
    log.drill(-0.5, "preflight", results={})
    log.drill(-0.01, "fault_intent", host="web2", fault="kill")
    log.drill(0, "fault_injected", host="web2", fault="kill", lines=["killed demoapp on web2"])
    log.drill(
        1.2,
        "observed",
        source="prometheus",
        alert="DemoappDown",
        state="pending",
        at=format_ts(T0 + 1.0).replace("Z", "123Z"),
    )  # ns, as Prometheus says
    log.alert(3.0, "firing")
    log.alert(3.005, "firing", {"alertname": "DemoappDown", "host": "web3"})  # not ours
    log.run(3.01, "run.requested", trigger="alert")
    log.at(
        3.02,
        "alerts.decided",
        actor="dispatcher",
        data={
            "alerts": [
                {
                    "fingerprint": "fp1",
                    "alertname": "DemoappDown",
                    "status": "firing",
                    "decisions": [{"disposition": "started", "run_id": RUN, "reason": "route r"}],
                }
            ]
        },
    )
    log.run(3.03, "run.started")
    log.run(3.035, "step.intent", step="note", kind="log", attempt=1)  # not an action
    log.run(3.04, "step.intent", step="check", kind="ssh", attempt=1, hosts=["web2"])
    log.drill(
        3.05,
        "observed",
        source="alertmanager",
        alert="DemoappDown",
        state="firing",
        at=format_ts(T0 + 2.95),
    )
    log.drill(3.1, "run_started", run_id=RUN, via="alertmanager")
    log.drill(3.15, "check", name="scraped", passed=True, detail="stale sample")
    log.drill(3.2, "check", name="health", passed=False, detail="refused")
    log.run(3.3, "step.outcome", step="check", attempt=1, ok=True)
    log.run(3.4, "approval.requested", step="gate", quorum=2, approvers=["ops"])
    log.run(3.5, "step.intent", step="other", kind="ssh", attempt=1, run_id="r-other")
    log.drill(4.0, "check", name="scraped", passed=False, detail="no series")
    log.run(6.4, "approval.granted", step="gate", approver="alice")
    log.run(8.4, "approval.granted", step="gate", approver="carol")
    log.run(8.5, "step.intent", step="restart", kind="ssh", attempt=1)
    log.run(8.9, "step.outcome", step="restart", attempt=1, ok=False, error="rc 1")
    log.run(8.95, "step.intent", step="restart", kind="ssh", attempt=2)
    log.drill(9.0, "check", name="health", passed=True, detail="HTTP 200: ok")
    log.drill(9.001, "check", name="scraped", passed=True, detail="1 series")
    log.drill(9.002, "recovered")
    log.alert(9.5, "resolved")
    log.run(9.6, "step.outcome", step="restart", attempt=2, ok=True)
    log.run(20.0, "run.finished", status="succeeded")
    log.drill(
        20.2,
        "verified",
        all_passed=True,
        results={
            "health": {"passed": True, "detail": "HTTP 200: ok"},
            "scraped": {"passed": True, "detail": "1 series"},
        },
    )
    log.drill(20.5, "cleanup", host="web2", lines=["restored web2"])
    log.drill(20.6, "finished", ended="completed", error=None)


@pytest.fixture
def log(tmp_path: Path) -> Log:
    return Log(tmp_path / "audit.jsonl")


def records(log: Log) -> list[Any]:
    return list(iter_records(log.path))


def test_timings_are_differences_of_audit_timestamps(log: Log) -> None:
    full_drill(log)
    line = assemble(records(log), DRILL)
    assert line.timings == {
        "detect": 3.0,
        "fired": 2.95,
        "first_action": 3.04,  # the log step at 3.035 is not an action
        "run_finished": 20.0,
        "mitigate": 9.002,
        "resolved": 9.5,
    }
    by_event = {r.event: r for r in records(log)}
    injected = parse_ts(by_event["gameday.fault_injected"].ts)
    assert line.timings["mitigate"] == round(
        parse_ts(by_event["gameday.recovered"].ts) - injected, 6
    )
    assert line.injected_ts == format_ts(T0)
    assert (line.run_id, line.run_status, line.ended) == (RUN, "succeeded", "completed")
    assert line.fault_lines == ["killed demoapp on web2"]
    assert line.cleaned and line.cleanup_lines == ["restored web2"]


def test_a_quorum_approval_waits_for_its_last_approver(log: Log) -> None:
    full_drill(log)
    (wait,) = assemble(records(log)).approvals
    assert (wait.step, wait.decision, wait.by) == ("gate", "granted", "carol")
    assert (wait.requested, wait.decided, wait.wait) == (3.4, 8.4, 5.0)


def test_a_check_passes_only_after_it_saw_the_fault(log: Log) -> None:
    full_drill(log)
    checks = {c.name: c for c in assemble(records(log)).checks}
    assert checks["scraped"].first_passed == 9.001  # not 3.15: that sample was stale
    assert checks["health"].first_passed == 9.0
    assert checks["health"].final is True and checks["health"].detail == "HTTP 200: ok"


def test_spans_cover_each_attempt_and_the_approval_wait(log: Log) -> None:
    full_drill(log)
    spans = [(s.label, s.kind, s.start, s.end, s.status) for s in assemble(records(log)).spans]
    assert spans == [
        ("note", "log", 3.035, None, "cut off"),
        ("check", "ssh", 3.04, 3.3, "succeeded"),
        ("gate", "approval", 3.4, 8.4, "granted"),
        ("restart", "ssh", 8.5, 8.9, "failed"),
        ("restart (attempt 2)", "ssh", 8.95, 9.6, "succeeded"),
    ]


def test_the_timeline_holds_the_drill_its_alert_and_its_run_in_time_order(log: Log) -> None:
    full_drill(log)
    events = assemble(records(log)).events
    assert [e.t for e in events] == sorted(e.t for e in events)
    assert not any(e.event == "serve.started" for e in events)  # before the drill
    assert not any("r-other" in e.summary or e.step == "other" for e in events)
    received = [e.summary for e in events if e.event == "alerts.received"]
    assert received == ["DemoappDown firing received", "DemoappDown resolved received"]
    pending = next(e for e in events if e.event == "alert.pending")
    assert (pending.source, pending.t) == ("prometheus", 1.0)
    decided = next(e for e in events if e.event == "alerts.decided")
    assert f"started {RUN} (route r)" in decided.summary
    intent = next(e for e in events if e.event == "step.intent" and e.step == "check")
    assert intent.summary == "check: ssh on web2" and intent.source == "audit"


def test_two_drills_in_one_log_stay_apart(log: Log) -> None:
    full_drill(log)
    log.drill(30, "started", drill="gd-second", plan=PLAN)
    log.drill(31, "preflight", drill="gd-second", results={})
    log.drill(40, "finished", drill="gd-second", ended="error", error="not steady")
    assert drill_ids(records(log)) == [DRILL, "gd-second"]
    first = assemble(records(log), DRILL)
    assert not any(e.t > 25 for e in first.events)
    last = assemble(records(log))  # the newest by default
    assert (last.drill, last.ended, last.error) == ("gd-second", "error", "not steady")
    assert last.injected_ts is None
    assert set(last.timings.values()) == {None}


def test_without_checks_the_run_succeeding_is_the_mitigation(log: Log) -> None:
    full_drill(log, {**PLAN, "checks": []})
    assert assemble(records(log)).timings["mitigate"] == 20.0


def test_an_unknown_drill_and_a_log_without_drills_are_named(log: Log) -> None:
    with pytest.raises(NotFound, match="holds no game day"):
        assemble([])
    full_drill(log)
    with pytest.raises(NotFound, match="no game day 'gd-nope'"):
        assemble(records(log), "gd-nope")


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        ("2027-01-15T08:00:00Z", 1_800_000_000.0),
        ("2027-01-15T08:00:00.5Z", 1_800_000_000.5),
        ("2027-01-15T08:00:00.123456789Z", 1_800_000_000.123456),
        ("2027-01-15T09:00:00+01:00", 1_800_000_000.0),
        ("2027-01-15T08:00:00", 1_800_000_000.0),
    ],
)
def test_timestamps_of_every_source_parse(text: str, epoch: float) -> None:
    assert format_ts(T0) == "2027-01-15T08:00:00.000000Z"
    assert parse_ts(text) == pytest.approx(epoch, abs=1e-6)


def test_a_timestamp_that_is_not_one_is_refused() -> None:
    with pytest.raises(ValueError, match="not an RFC 3339 timestamp"):
        parse_ts("yesterday")


def test_a_denial_or_an_expiry_decides_at_once(log: Log) -> None:
    add: Callable[..., None] = log.run
    add(1, "approval.requested", step="a", quorum=2)
    add(2, "approval.denied", step="a", approver="x")
    add(3, "approval.granted", step="a", approver="y")  # too late: already denied
    add(4, "approval.requested", step="b", quorum=1)
    add(5, "approval.requested", step="b", quorum=1)  # a resumed run asks again
    add(9, "approval.expired", step="b")
    add(10, "approval.requested", step="c")
    waits = {(w.step, w.decision, w.wait) for w in approval_waits(records(log))}
    assert waits == {("a", "denied", 1.0), ("b", "expired", 5.0), ("c", None, None)}
