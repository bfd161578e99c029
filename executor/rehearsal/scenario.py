"""Scenarios as typed objects: what each step returns, and what must follow.

A scenario file (``schemas/scenario.schema.json``) names one runbook and lists
scenarios; each gives the run's inputs, the simulated result of the steps it
cares about and its expectations. Building these objects assumes the file was
validated (``executor.rehearsal.loading``): nothing is re-checked here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from executor.model import Runbook, parse_duration

APPROVAL_FIELDS = frozenset({"approve_as", "deny_as", "expire", "reason"})
"""Keys that make a step's entry an approval answer rather than an action result."""

DEFAULT_ACTOR = "rehearsal"
"""Who starts a rehearsed run unless the scenario says otherwise."""

MERGED_DEFAULTS = ("inputs", "hosts", "identities", "secrets", "steps", "rollbacks")
"""Mappings a scenario merges over the file's ``defaults`` (its own keys win)."""


@dataclass(frozen=True)
class HostOutcome:
    """What one host (or a single-place action) did."""

    stdout: str = ""
    stderr: str = ""
    rc: int | None = None
    fail: bool = False
    timeout: bool = False
    unreachable: bool = False
    error: str | None = None

    @property
    def exit_code(self) -> int:
        """The rc that goes with the outcome: 0 for success, 1 for a bare ``fail``."""
        if self.rc is not None:
            return self.rc
        return 1 if self.fail else 0

    @property
    def ok(self) -> bool:
        return not (self.fail or self.timeout or self.unreachable) and self.exit_code == 0


@dataclass(frozen=True)
class Result:
    """The scripted result of one attempt of a step (or of one rollback action)."""

    outcome: HostOutcome = field(default_factory=HostOutcome)
    hosts: Mapping[str, HostOutcome] = field(default_factory=dict)
    duration: float = 0.0
    status: int | None = None  # http
    json: Any = None  # http
    has_json: bool = False

    def for_host(self, host: str) -> HostOutcome:
        return self.hosts.get(host, self.outcome)


@dataclass(frozen=True)
class ApprovalScript:
    """Who answers an approval step, and whether it is left to expire."""

    approve_as: tuple[str, ...] = ()
    deny_as: tuple[str, ...] = ()
    expire: bool = False
    reason: str | None = None


@dataclass(frozen=True)
class Expectation:
    """What must follow; each part is checked only if the scenario gives it."""

    status: str | None = None
    path: tuple[str, ...] | None = None
    outputs: Mapping[str, Any] = field(default_factory=dict)
    audit: tuple[str, ...] = ()
    no_audit: tuple[str, ...] = ()
    steps: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    """One rehearsal of one runbook. ``line`` is where it starts in its file."""

    name: str
    runbook: Runbook
    source: str
    line: int
    inputs: Mapping[str, Any] = field(default_factory=dict)
    actor: str = DEFAULT_ACTOR
    trigger: str = "cli"
    alert: Mapping[str, Any] | None = None
    hosts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    identities: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)
    strict: bool = False
    killswitch_before: str | None = None
    results: Mapping[str, tuple[Result, ...]] = field(default_factory=dict)
    rollbacks: Mapping[str, tuple[Result, ...]] = field(default_factory=dict)
    rollback_all: frozenset[str] = frozenset()  # rollbacks given as one result for every action
    approvals: Mapping[str, ApprovalScript] = field(default_factory=dict)
    expect: Expectation = field(default_factory=Expectation)
    description: str | None = None

    @property
    def title(self) -> str:
        return f"{self.runbook.name}: {self.name}"

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    def result(self, step_id: str, attempt: int) -> Result | None:
        """The scripted result of ``attempt`` (from 1); the last one repeats."""
        items = self.results.get(step_id)
        if not items:
            return None
        return items[min(attempt, len(items)) - 1]

    def rollback_result(self, step_id: str, index: int) -> Result | None:
        items = self.rollbacks.get(step_id)
        if not items:
            return None
        if step_id in self.rollback_all:
            return items[0]
        return items[index] if index < len(items) else None


def merged(defaults: Mapping[str, Any], raw: Mapping[str, Any]) -> dict[str, Any]:
    """A scenario's raw mapping with the file's defaults under it."""
    out = {**defaults, **raw}
    for key in MERGED_DEFAULTS:
        if key in defaults or key in raw:
            out[key] = {**(defaults.get(key) or {}), **(raw.get(key) or {})}
    return out


def _outcome(raw: Mapping[str, Any]) -> HostOutcome:
    return HostOutcome(
        stdout=str(raw.get("stdout", "")),
        stderr=str(raw.get("stderr", "")),
        rc=raw.get("rc"),
        fail=bool(raw.get("fail", False)),
        timeout=bool(raw.get("timeout", False)),
        unreachable=bool(raw.get("unreachable", False)),
        error=raw.get("error"),
    )


def build_result(raw: Mapping[str, Any]) -> Result:
    hosts = {str(h): _outcome(v or {}) for h, v in (raw.get("hosts") or {}).items()}
    duration = raw.get("duration")
    return Result(
        outcome=_outcome(raw),
        hosts=hosts,
        duration=parse_duration(duration) if duration is not None else 0.0,
        status=raw.get("status"),
        json=raw.get("json"),
        has_json="json" in raw,
    )


def _results(value: Any) -> tuple[Result, ...]:
    items = value if isinstance(value, list) else [value]
    return tuple(build_result(item or {}) for item in items)


def _names(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return tuple(str(v) for v in (value if isinstance(value, list) else [value]))


def build_scenario(raw: Mapping[str, Any], runbook: Runbook, *, source: str, line: int) -> Scenario:
    """A ``Scenario`` from its validated mapping (defaults already merged)."""
    results: dict[str, tuple[Result, ...]] = {}
    approvals: dict[str, ApprovalScript] = {}
    for step_id, value in (raw.get("steps") or {}).items():
        if runbook.step(step_id).is_approval:
            body = value or {}
            approvals[step_id] = ApprovalScript(
                approve_as=_names(body.get("approve_as")),
                deny_as=_names(body.get("deny_as")),
                expire=bool(body.get("expire", False)),
                reason=body.get("reason"),
            )
        else:
            results[step_id] = _results(value)
    rollbacks = {s: _results(v) for s, v in (raw.get("rollbacks") or {}).items()}
    rollback_all = frozenset(
        s for s, v in (raw.get("rollbacks") or {}).items() if not isinstance(v, list)
    )
    expect = raw.get("expect") or {}
    alert = raw.get("alert")
    return Scenario(
        name=str(raw["name"]),
        runbook=runbook,
        source=source,
        line=line,
        description=raw.get("description"),
        inputs=dict(raw.get("inputs") or {}),
        actor=str(raw.get("actor", DEFAULT_ACTOR)),
        trigger=str(raw.get("trigger", "alert" if alert else "cli")),
        alert=dict(alert) if alert else None,
        hosts={t: tuple(_names(h)) for t, h in (raw.get("hosts") or {}).items()},
        identities={n: tuple(_names(g)) for n, g in (raw.get("identities") or {}).items()},
        secrets={k: str(v) for k, v in (raw.get("secrets") or {}).items()},
        strict=bool(raw.get("strict", False)),
        killswitch_before=raw.get("killswitch_before"),
        results=results,
        rollbacks=rollbacks,
        rollback_all=rollback_all,
        approvals=approvals,
        expect=Expectation(
            status=expect.get("status"),
            path=tuple(expect["path"]) if "path" in expect else None,
            outputs=dict(expect.get("outputs") or {}),
            audit=tuple(expect.get("audit") or ()),
            no_audit=tuple(expect.get("no_audit") or ()),
            steps=dict(expect.get("steps") or {}),
        ),
    )


def approval_groups(runbook: Runbook, step_id: str) -> Sequence[str]:
    action = runbook.step(step_id).action
    return tuple(getattr(action, "approvers", ()))
