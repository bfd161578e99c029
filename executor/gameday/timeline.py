"""A drill's timeline and timings, read back from the audit log alone.

The drill writes its own facts into the executor's audit log (``gameday.*``
records: the plan, the fault injected, what Prometheus and Alertmanager said,
each check changing state, the recovery, the cleanup), beside the records of
the server (alerts received and decided) and of the run (steps, approvals).
Everything here is computed from those records' ``ts``, so the report's
numbers are differences of tamper-evident timestamps, and a report can be
rebuilt from the log long after the drill:

    time to detect        first ``alerts.received`` with the alert firing
    time to first action  first ``step.intent`` of an ssh/ansible/local/http step of the run
    time to mitigate      ``gameday.recovered``: every check passing at once, each after
                          failing since the fault (``run.finished`` succeeded, without checks)

each minus the ``ts`` of ``gameday.fault_injected``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from executor.errors import NotFound
from executor.gameday.auditfacts import approval_waits, is_first_action, parse_ts
from executor.gameday.summaries import summarize
from executor.ports import AuditRecord

PRECISION = 6
"""Decimals kept: the audit's timestamps have microseconds."""


@dataclass(frozen=True)
class Event:
    """One point of the timeline; ``t`` is seconds since the fault (negative before it)."""

    t: float
    ts: str
    source: str  # audit, or prometheus/alertmanager for their own timestamps
    event: str
    summary: str
    step: str | None = None
    seq: int | None = None


@dataclass(frozen=True)
class Span:
    """Something that lasted: a step attempt or an approval wait, in seconds since the fault."""

    label: str
    kind: str
    start: float
    end: float | None
    status: str


@dataclass(frozen=True)
class Approval:
    step: str
    requested: float
    decided: float | None
    decision: str | None
    by: str | None

    @property
    def wait(self) -> float | None:
        return None if self.decided is None else round(self.decided - self.requested, PRECISION)


@dataclass(frozen=True)
class CheckTrace:
    """When a check first passed after failing since the fault, and how it stood at the end."""

    name: str
    first_passed: float | None
    final: bool | None
    detail: str | None


@dataclass
class Timeline:
    """What happened in one drill, relative to the fault injection."""

    drill: str
    plan: Mapping[str, Any]
    injected_ts: str | None = None
    run_id: str | None = None
    run_status: str | None = None
    ended: str | None = None
    error: str | None = None
    fault_lines: list[str] = field(default_factory=list)
    cleanup_lines: list[str] = field(default_factory=list)
    cleaned: bool = False
    cleanup_error: str | None = None
    events: list[Event] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    approvals: list[Approval] = field(default_factory=list)
    checks: list[CheckTrace] = field(default_factory=list)
    timings: dict[str, float | None] = field(default_factory=dict)
    first_seq: int | None = None
    last_seq: int | None = None


def drill_ids(records: Iterable[AuditRecord]) -> list[str]:
    """Every drill recorded in the log, oldest first."""
    return [str(r.data.get("drill")) for r in records if r.event == "gameday.started"]


def _window(records: Sequence[AuditRecord], drill: str) -> list[AuditRecord]:
    """The records from the drill's start to its end (or to the end of the log)."""
    start = next(
        (
            i
            for i, r in enumerate(records)
            if r.event == "gameday.started" and r.data.get("drill") == drill
        ),
        None,
    )
    if start is None:
        raise NotFound(
            f"the audit log has no game day {drill!r}",
            hint="list the drills with `runbook audit show` (events gameday.started)",
        )
    out = []
    for record in records[start:]:
        out.append(record)
        if record.event == "gameday.finished" and record.data.get("drill") == drill:
            break
    return out


def _labels_match(labels: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())


class _Builder:
    """Reads one drill's window of records into a ``Timeline``."""

    def __init__(self, drill: str, window: list[AuditRecord]) -> None:
        self.drill = drill
        self.window = window
        self.line = Timeline(drill=drill, plan=window[0].data.get("plan") or {})
        self.line.first_seq, self.line.last_seq = window[0].seq, window[-1].seq
        detection = self.line.plan.get("detection") or {}
        self.alert: dict[str, Any] | None = None
        if detection.get("alert"):
            self.alert = {"alertname": detection["alert"], **(detection.get("labels") or {})}
        self.runbook = str((self.line.plan.get("start") or {}).get("runbook", "")).split("@")[0]
        self.t0: float | None = None
        self.fingerprints: set[str] = set()

    # ------------------------------------------------------------------ helpers

    def mine(self, event: str) -> list[AuditRecord]:
        """The drill's own records of one kind (``gameday.<event>``)."""
        name = f"gameday.{event}"
        return [r for r in self.window if r.event == name and r.data.get("drill") == self.drill]

    def rel(self, ts: str) -> float:
        base = self.t0 if self.t0 is not None else parse_ts(self.window[0].ts)
        return round(parse_ts(ts) - base, PRECISION)

    def first(self, records: Iterable[AuditRecord]) -> float | None:
        """Seconds from the fault to the first of ``records`` at or after it."""
        if self.t0 is None:
            return None
        return next((t for t in (self.rel(r.ts) for r in records) if t >= 0), None)

    def add(self, record: AuditRecord, summary: str | None = None) -> None:
        self.line.events.append(
            Event(
                self.rel(record.ts),
                record.ts,
                "audit",
                record.event,
                summarize(record) if summary is None else summary,
                record.step,
                record.seq,
            )
        )

    # ------------------------------------------------------------------ reading

    def build(self) -> Timeline:
        injected = self.mine("fault_injected")
        if injected:
            self.t0 = parse_ts(injected[0].ts)
            self.line.injected_ts = injected[0].ts
            self.line.fault_lines = list(injected[0].data.get("lines") or [])
        started = self.mine("run_started")
        self.line.run_id = started[0].data.get("run_id") if started else None
        for record in self.window:
            self._one(record)
        run_records = [r for r in self.window if r.run_id and r.run_id == self.line.run_id]
        self._timings(run_records)
        self._spans(run_records)
        self._checks()
        self.line.events.sort(key=lambda e: e.t)
        return self.line

    def _one(self, record: AuditRecord) -> None:
        if record.event.startswith("gameday.") and record.data.get("drill") == self.drill:
            self._gameday(record)
        elif record.event in ("alerts.received", "alerts.decided"):
            self._alerts(record)
        elif record.run_id is not None and record.run_id == self.line.run_id:
            if record.event == "run.finished":
                self.line.run_status = record.data.get("status")
            self.add(record)
        elif record.event in ("run.requested", "run.refused") and (
            str(record.runbook).split("@")[0] == self.runbook
        ):
            self.add(record, f"another run {record.run_id} by {record.actor}: {summarize(record)}")

    def _gameday(self, record: AuditRecord) -> None:
        data = record.data
        if record.event == "gameday.observed":
            at = data.get("at")
            if isinstance(at, str):
                source, state = str(data.get("source")), str(data.get("state"))
                what = f"{data.get('alert')} {state} ({source})"
                self.line.events.append(Event(self.rel(at), at, source, f"alert.{state}", what))
            return
        if record.event == "gameday.finished":
            self.line.ended, self.line.error = data.get("ended"), data.get("error")
        elif record.event == "gameday.cleanup":
            self.line.cleanup_lines = list(data.get("lines") or [])
            self.line.cleanup_error = data.get("error")
            self.line.cleaned = not data.get("error")
        self.add(record)

    def _alerts(self, record: AuditRecord) -> None:
        if self.alert is None:
            return
        for alert in record.data.get("alerts") or []:
            if record.event == "alerts.received":
                if _labels_match(alert.get("labels") or {}, self.alert):
                    self.fingerprints.add(alert.get("fingerprint"))
                    what = f"{self.alert['alertname']} {alert.get('status')} received"
                    self.add(record, what)
            elif alert.get("fingerprint") in self.fingerprints:
                decided = "; ".join(
                    str(d.get("disposition"))
                    + (f" {d['run_id']}" if d.get("run_id") else "")
                    + (f" ({d['reason']})" if d.get("reason") else "")
                    for d in alert.get("decisions") or []
                )
                what = f"{alert.get('alertname')} {alert.get('status')} decided: "
                self.add(record, what + (decided or "no route"))

    # ------------------------------------------------------------------ numbers

    def _alert_status(self, record: AuditRecord, status: str) -> bool:
        return (
            record.event == "alerts.received"
            and self.alert is not None
            and any(
                a.get("status") == status and _labels_match(a.get("labels") or {}, self.alert)
                for a in record.data.get("alerts") or []
            )
        )

    def _timings(self, run_records: list[AuditRecord]) -> None:
        t = self.line.timings
        t["detect"] = self.first(r for r in self.window if self._alert_status(r, "firing"))
        fired = [r for r in self.mine("observed") if r.data.get("source") == "alertmanager"]
        t["fired"] = self.rel(fired[0].data["at"]) if fired and self.t0 is not None else None
        t["first_action"] = self.first(r for r in run_records if is_first_action(r))
        finished = [r for r in run_records if r.event == "run.finished"]
        t["run_finished"] = self.first(finished)
        if self.line.plan.get("checks"):
            t["mitigate"] = self.first(self.mine("recovered"))
        else:
            t["mitigate"] = self.first(r for r in finished if r.data.get("status") == "succeeded")
        t["resolved"] = self.first(r for r in self.window if self._alert_status(r, "resolved"))

    def _spans(self, run_records: list[AuditRecord]) -> None:
        opened: dict[tuple[str, int], tuple[float, str]] = {}
        for record in run_records:
            key = (record.step or "", int(record.data.get("attempt") or 1))
            if record.event == "step.intent":
                opened[key] = (self.rel(record.ts), str(record.data.get("kind")))
            elif record.event == "step.outcome":
                start, kind = opened.pop(key, (self.rel(record.ts), "?"))
                status = "succeeded" if record.data.get("ok") else "failed"
                self.line.spans.append(Span(_label(*key), kind, start, self.rel(record.ts), status))
        for key, (start, kind) in opened.items():
            self.line.spans.append(Span(_label(*key), kind, start, None, "cut off"))
        base = self.t0 if self.t0 is not None else parse_ts(self.window[0].ts)
        for wait in approval_waits(run_records):
            requested = round(wait.requested - base, PRECISION)
            decided = None if wait.decided is None else round(wait.decided - base, PRECISION)
            self.line.approvals.append(
                Approval(wait.step, requested, decided, wait.decision, wait.by)
            )
            status = wait.decision or "waiting"
            self.line.spans.append(Span(wait.step, "approval", requested, decided, status))
        self.line.spans.sort(key=lambda s: s.start)

    def _checks(self) -> None:
        verified = self.mine("verified")
        final = (verified[-1].data.get("results") or {}) if verified else {}
        trails = self.mine("check")
        for check in self.line.plan.get("checks") or []:
            name = str(check.get("name"))
            trail = [r for r in trails if r.data.get("name") == name]
            failed = next((i for i, r in enumerate(trail) if not r.data.get("passed")), 0)
            passed = self.first(r for r in trail[failed:] if r.data.get("passed"))
            result = final.get(name) or {}
            self.line.checks.append(
                CheckTrace(name, passed, result.get("passed"), result.get("detail"))
            )


def _label(step: str, attempt: int) -> str:
    return step if attempt == 1 else f"{step} (attempt {attempt})"


def assemble(records: Sequence[AuditRecord], drill: str | None = None) -> Timeline:
    """The timeline of ``drill`` (default: the last drill in the log)."""
    if drill is None:
        ids = drill_ids(records)
        if not ids:
            raise NotFound("the audit log holds no game day", hint="run `runbook gameday PLAN`")
        drill = ids[-1]
    return _Builder(drill, _window(records, drill)).build()
