"""From ansible-runner events to what the engine audits and the step's result.

Pure functions and one accumulator, no I/O, so every mapping is unit-tested:

- ``task_outcome``: a ``runner_on_ok|failed|unreachable|skipped`` event to a
  ``TaskOutcome``, masked, whose ``audit_payload()`` is what
  ``request.on_event("ansible.task", ...)`` gets. Raw module results never
  leave this module: they hold module arguments (``invocation``), which may
  hold secrets, and diffs of files;
- ``PlayRecord``: accumulates the events of one run (per host: last task,
  failing task, output of the last task that had some; the final
  ``playbook_on_stats``; Ansible's own error lines);
- ``build_result``: runner status and rc, the record and the stop report to
  an ``ActionResult`` with one ``HostResult`` per targeted host and an error
  line a responder can act on: ``failed on web2 (task 'restart app': ...);
  unreachable: web3 (...)``.

Per-host ``rc`` follows Ansible's exit codes where a module gave none: 0 for
a host that finished, the failing module's ``rc`` (else 2) for a failed
host, 4 for an unreachable one, ``None`` for one cut off by cancel/timeout.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from executor.model import format_duration
from executor.ports import ActionResult, HostResult

Mask = Callable[[str], str]

TASK_EVENTS: Mapping[str, str] = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}
"""ansible-runner event names of a task's end on one host, and the status each means."""

MSG_LIMIT = 500
OUTPUT_LIMIT = 64 * 1024
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ERROR_START = re.compile(r"^(\[ERROR\]|ERROR!|fatal:)")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _tail(text: str, limit: int) -> str:
    """The end of an output (where the error is), marked when cut."""
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _str(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@dataclass(frozen=True)
class TaskOutcome:
    """How one task ended on one host, masked; ``stdout``/``stderr`` stay out of the audit."""

    host: str
    task: str
    status: str  # ok | failed | unreachable | skipped
    changed: bool = False
    rc: int | None = None
    duration: float | None = None
    msg: str = ""
    ignored: bool = False
    stdout: str = ""
    stderr: str = ""

    @property
    def fails_host(self) -> bool:
        return self.status == "unreachable" or (self.status == "failed" and not self.ignored)

    def audit_payload(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "task": self.task,
            "status": self.status,
            "changed": self.changed,
            "rc": self.rc,
            "duration": self.duration,
            "msg": self.msg,
            "ignored": self.ignored,
        }


def _message(status: str, res: Mapping[str, Any]) -> str:
    """What a person needs from a result: Ansible's msg, plus the last stderr line on failure."""
    msg = _str(res.get("msg")).strip()
    if status == "skipped" and not msg:
        msg = _str(res.get("skip_reason") or res.get("skipped_reason")).strip()
    if status == "failed":
        last = _last_line(_str(res.get("stderr")))
        if last and last not in msg:
            msg = f"{msg}: {last}" if msg else last
    return " ".join(msg.split())  # one line


def task_outcome(event: Mapping[str, Any], mask: Mask) -> TaskOutcome | None:
    """The outcome a task-end event reports; None for every other event."""
    status = TASK_EVENTS.get(_str(event.get("event")))
    data = event.get("event_data")
    if status is None or not isinstance(data, Mapping):
        return None
    res = data.get("res")
    res = res if isinstance(res, Mapping) else {}
    rc = res.get("rc")
    duration = data.get("duration")
    return TaskOutcome(
        host=_str(data.get("host")) or "?",
        task=mask(_str(data.get("task")) or _str(data.get("task_action")) or "?"),
        status=status,
        changed=bool(res.get("changed", False)),
        rc=rc if isinstance(rc, int) and not isinstance(rc, bool) else None,
        duration=round(float(duration), 3) if isinstance(duration, int | float) else None,
        msg=mask(_clip(_message(status, res), MSG_LIMIT)),
        ignored=bool(data.get("ignore_errors")) if status == "failed" else False,
        stdout=mask(_tail(_str(res.get("stdout")), OUTPUT_LIMIT)),
        stderr=mask(_tail(_str(res.get("stderr")), OUTPUT_LIMIT)),
    )


@dataclass
class _Host:
    started: float | None = None
    finished: float | None = None
    running: str | None = None  # task started and not finished
    last: TaskOutcome | None = None
    failure: TaskOutcome | None = None  # the last one that failed the host
    output: TaskOutcome | None = None  # the last one that had stdout or stderr


@dataclass
class PlayRecord:
    """Everything kept from one run's events (bounded: one entry per host, a few lines)."""

    mask: Mask = str
    clock: Callable[[], float] = time.time
    hosts: dict[str, _Host] = field(default_factory=dict)
    stats: dict[str, Mapping[str, int]] | None = None
    errors: list[str] = field(default_factory=list)
    tasks_seen: int = 0

    def add(self, event: Mapping[str, Any]) -> TaskOutcome | None:
        """Take one event in; returns the task outcome it carried, if any."""
        name = _str(event.get("event"))
        data = event.get("event_data")
        data = data if isinstance(data, Mapping) else {}
        if name == "runner_on_start":
            host = self._host(_str(data.get("host")))
            host.started = host.started or self.clock()
            host.running = self.mask(_str(data.get("task")) or "?")
            return None
        if name == "playbook_on_stats":
            self.stats = {
                key: dict(value)
                for key in ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored")
                if isinstance(value := data.get(key), Mapping)
            }
            self.stats["processed"] = dict(data.get("processed") or {})
            return None
        outcome = task_outcome(event, self.mask)
        if outcome is None:
            self._keep_error_line(event)
            return None
        self.tasks_seen += 1
        host = self._host(outcome.host)
        host.started = host.started or self.clock()
        host.finished = self.clock()
        host.running = None
        host.last = outcome
        if outcome.fails_host:
            host.failure = outcome
        if outcome.stdout or outcome.stderr:
            host.output = outcome
        return outcome

    def _host(self, name: str) -> _Host:
        return self.hosts.setdefault(name or "?", _Host())

    def _keep_error_line(self, event: Mapping[str, Any]) -> None:
        """Ansible's own error text (a syntax error, an unknown module): a few lines."""
        if event.get("event") not in ("verbose", "error", "warning", "debug"):
            return
        for line in _ANSI.sub("", _str(event.get("stdout"))).splitlines():
            line = line.strip()
            if not line:
                continue
            if (self.errors or _ERROR_START.match(line)) and len(self.errors) < 6:
                self.errors.append(self.mask(_clip(line, 300)))

    def failed_hosts(self) -> set[str]:
        """Hosts the play failed: the final recap says so; without one, the events do."""
        if self.stats is not None:
            return self._stat_hosts("failures")
        return self._event_hosts("failed")

    def unreachable_hosts(self) -> set[str]:
        if self.stats is not None:
            return self._stat_hosts("dark")
        return self._event_hosts("unreachable")

    def _event_hosts(self, status: str) -> set[str]:
        return {n for n, h in self.hosts.items() if h.failure and h.failure.status == status}

    def _stat_hosts(self, key: str) -> set[str]:
        counts = (self.stats or {}).get(key, {})
        return {name for name, count in counts.items() if count}


@dataclass(frozen=True)
class Ending:
    """How the run ended: ansible-runner's status and rc, and why and how it was stopped."""

    status: str  # ansible-runner's: successful | failed | canceled | timeout | error
    rc: int | None
    cancelled: bool = False
    timed_out: bool = False
    reason: str | None = None  # the cancel token's reason, or an audit failure
    timeout: float | None = None
    stop_report: str | None = None  # what was done to stop local and remote work
    failure: str | None = None  # the job itself failed (ansible-runner raised)


def classify(record: PlayRecord, targets: Sequence[str], ending: Ending) -> dict[str, str]:
    """Each targeted host's fate: ok, failed, unreachable, cut_off or incomplete."""
    failed, unreachable = record.failed_hosts(), record.unreachable_hosts()
    processed = set((record.stats or {}).get("processed", {}))
    cut = ending.cancelled or ending.timed_out
    kinds = {}
    for name in targets:
        if name in unreachable:
            kinds[name] = "unreachable"
        elif name in failed:
            kinds[name] = "failed"
        elif cut:
            kinds[name] = "cut_off"
        elif ending.status == "successful" or name in processed:
            kinds[name] = "ok"  # finished its play, even if another host failed
        else:
            kinds[name] = "incomplete"
    return kinds


def host_results(record: PlayRecord, kinds: Mapping[str, str]) -> dict[str, HostResult]:
    """One ``HostResult`` per targeted host, whatever the play did with it."""
    results = {}
    for name, kind in kinds.items():
        host = record.hosts.get(name, _Host())
        output = host.output
        common: dict[str, Any] = {
            "host": name,
            "stdout": output.stdout if output else "",
            "stderr": output.stderr if output else "",
            "started": host.started,
            "finished": host.finished,
        }
        failure = host.failure
        if kind == "unreachable":
            why = failure.msg if failure and failure.msg else "no details"
            results[name] = HostResult(rc=4, ok=False, error=f"unreachable: {why}", **common)
        elif kind == "failed":
            rc = failure.rc if failure and failure.rc not in (None, 0) else 2
            results[name] = HostResult(rc=rc, ok=False, error=_task_error(failure), **common)
        elif kind == "cut_off":
            results[name] = HostResult(
                rc=None, ok=False, error=f"cut off {_where(host)}", cut_off=True, **common
            )
        elif kind == "ok":
            results[name] = HostResult(rc=0, ok=True, **common)
        else:
            results[name] = HostResult(
                rc=None, ok=False, error="the play did not complete", **common
            )
    return results


def _where(host: _Host) -> str:
    if host.running:
        return f"during task {host.running!r}"
    if host.last:
        return f"after task {host.last.task!r}"
    return "before its first task"


def _task_error(failure: TaskOutcome | None) -> str:
    if failure is None:
        return "failed"
    return f"task {failure.task!r}: {failure.msg}" if failure.msg else f"task {failure.task!r}"


def _unreachable_why(host: HostResult) -> str:
    return (host.error or "").removeprefix("unreachable: ")


def describe_failures(hosts: Mapping[str, HostResult], kinds: Mapping[str, str]) -> str:
    """``failed on web2 (task 'x': msg); unreachable: web3 (msg)``; empty if none."""
    failed = [hosts[n] for n, k in kinds.items() if k == "failed"]
    unreachable = [hosts[n] for n, k in kinds.items() if k == "unreachable"]
    parts = []
    if failed:
        parts.append("failed on " + ", ".join(f"{h.host} ({h.error})" for h in failed))
    if unreachable:
        reasons = (
            f"{h.host} ({(h.error or '').removeprefix('unreachable: ')})" for h in unreachable
        )
        parts.append("unreachable: " + ", ".join(reasons))
    return "; ".join(parts)


def _stop_error(ending: Ending) -> str:
    if ending.timed_out:
        text = f"timed out after {format_duration(ending.timeout or 0)}"
    else:
        text = f"cancelled: {ending.reason or 'no reason given'}"
    return f"{text}; {ending.stop_report}" if ending.stop_report else text


def build_result(
    record: PlayRecord,
    targets: Sequence[str],
    ending: Ending,
    *,
    data: Mapping[str, Any] | None = None,
) -> ActionResult:
    """The step's result: ok only if ansible-runner said ``successful`` with rc 0."""
    kinds = classify(record, targets, ending)
    hosts = host_results(record, kinds)
    cut = ending.cancelled or ending.timed_out
    ok = ending.status == "successful" and ending.rc == 0 and not cut
    error = None
    if not ok:
        pieces = []
        if ending.failure:
            pieces.append(ending.failure)
            if ending.stop_report:
                pieces.append(ending.stop_report)
        if cut:
            pieces.append(_stop_error(ending))
        failures = describe_failures(hosts, kinds)
        if failures:
            pieces.append(failures)
        if not pieces:
            pieces.append(_play_error(record, ending))
        error = "; ".join(pieces)
    only = next(iter(hosts.values())) if len(hosts) == 1 else None
    return ActionResult(
        ok=ok,
        rc=ending.rc,
        stdout=only.stdout if only else "",
        stderr=only.stderr if only else "",
        error=record.mask(error) if error else None,
        hosts=hosts,
        data=dict(data or {}),
        cancelled=ending.cancelled and not ending.timed_out,
        timed_out=ending.timed_out,
    )


def _play_error(record: PlayRecord, ending: Ending) -> str:
    """Why the run failed when no host did: Ansible's own error lines, else the status."""
    if record.errors:
        return "ansible failed: " + " | ".join(record.errors)
    return f"ansible-runner ended with status {ending.status!r} and rc {ending.rc}"


def stats_summary(record: PlayRecord, targets: Iterable[str]) -> dict[str, dict[str, int]]:
    """Per-host counters of the final recap (ok, changed, failures...), for ``result.data``."""
    if record.stats is None:
        return {}
    return {
        name: {key: int(counts.get(name, 0)) for key, counts in record.stats.items()}
        for name in targets
    }
