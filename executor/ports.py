"""The seams between the engine and the world, as Protocols.

The engine is written against these and never names an adapter: SSH through
Fabric, Ansible through ansible-runner, Vault through hvac, SQLite, the JSON
Lines audit file and the wall clock all plug in here (``executor.wiring`` picks
them). A rehearsal plugs in scripted actions and a fake clock instead.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from executor.model import Action, CredentialSpec


class CancelToken:
    """Set when in-flight work must stop: kill-switch, ``runbook kill`` or a timeout.

    Actions poll ``cancelled`` or wait on it; whoever cancels says why, so the
    step's result and the audit can tell a timeout from a kill.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    def cancel(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds; True as soon as cancelled."""
        return self._event.wait(timeout)


UNKNOWN_RC = 255
"""The rc of a host that never ran the command or lost its status (as ssh reports it)."""


@dataclass(frozen=True)
class HostResult:
    """What one host did for one step."""

    host: str
    rc: int | None
    stdout: str = ""
    stderr: str = ""
    ok: bool = False
    error: str | None = None  # unreachable, auth refused, cut off...
    started: float | None = None
    finished: float | None = None
    cut_off: bool = False


@dataclass(frozen=True)
class ActionResult:
    """The outcome of one action. ``ok`` decides success before ``assert`` runs.

    Single-place actions (local, http) fill ``rc``/``stdout``/``stderr``;
    host actions also fill ``hosts`` (one entry per host) and set the top
    level from the aggregate (``rc`` is the worst rc, ``stdout`` is the only
    host's output when there is one host).
    """

    ok: bool
    rc: int | None = None
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    hosts: Mapping[str, HostResult] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)  # e.g. http status/json
    cancelled: bool = False
    timed_out: bool = False

    @classmethod
    def from_hosts(
        cls,
        results: Sequence[HostResult],
        *,
        data: Mapping[str, Any] | None = None,
        cancelled: bool = False,
        timed_out: bool = False,
    ) -> ActionResult:
        """The step's result from its hosts': ok only if every host is ok.

        ``rc`` is the worst exit status, ``UNKNOWN_RC`` if a host has none (it
        never ran the command, or the connection was lost); ``stdout``/``stderr``
        are the host's own when there is exactly one host; ``error`` names every
        host that failed. SSH, Ansible and rehearsals all build results this
        way, so a scenario's expectations mean the same as production's.
        """
        failed = [r for r in results if not r.ok]
        if not results:
            rc = None
        elif any(r.rc is None for r in results):
            rc = UNKNOWN_RC
        else:
            rc = max(r.rc for r in results if r.rc is not None)
        only = results[0] if len(results) == 1 else None
        error = None
        if failed:
            shown = "; ".join(f"{r.host}: {r.error or 'failed'}" for r in failed[:10])
            more = f"; and {len(failed) - 10} more" if len(failed) > 10 else ""
            error = f"{len(failed)} of {len(results)} host(s) failed: {shown}{more}"
        return cls(
            ok=bool(results) and not failed,
            rc=rc,
            stdout=only.stdout if only else "",
            stderr=only.stderr if only else "",
            error=error,
            hosts={r.host: r for r in results},
            data={
                "hosts_failed": [r.host for r in failed],
                "hosts_cut_off": [r.host for r in results if r.cut_off],
                **(data or {}),
            },
            cancelled=cancelled,
            timed_out=timed_out,
        )

    def as_context(self) -> dict[str, Any]:
        """The ``result`` object that ``outputs``, ``assert`` and ``until`` see."""
        context: dict[str, Any] = {
            "ok": self.ok,
            "rc": self.rc,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "error": self.error,
            "hosts": {
                name: {"rc": h.rc, "stdout": h.stdout, "stderr": h.stderr, "ok": h.ok}
                for name, h in self.hosts.items()
            },
        }
        context.update(self.data)
        return context


@dataclass(frozen=True)
class ActionRequest:
    """Everything an action needs, already rendered: no template reaches an adapter.

    ``hosts`` is the resolved target (host actions only). ``credential`` is the
    issued credential for the step, if it declared one. ``mask`` hides secrets
    in anything the action reports. ``dry_run`` asks for check mode where the
    adapter has one and for nothing at all where it does not.
    """

    run_id: str
    step_id: str
    action: Action
    hosts: Sequence[str] = ()
    credential: IssuedCredential | None = None
    timeout: float | None = None
    dry_run: bool = False
    mask: Callable[[str], str] = field(default=str)
    on_event: Callable[[str, Mapping[str, Any]], None] | None = None
    """Per-host progress (e.g. an Ansible task finished on a host): audited and shown."""


@runtime_checkable
class ActionRunner(Protocol):
    """Carries out one kind of action (``kind`` names it: ssh, local...)."""

    kind: str

    def run(self, request: ActionRequest, cancel: CancelToken) -> ActionResult: ...


@dataclass(frozen=True)
class IssuedCredential:
    """A credential issued for one run. ``secret_values`` feed the masker.

    ``material`` holds what the adapter needs (a key pair and certificate, a
    KV value); it is never written to state or audit. ``public`` is what the
    audit may record: lease id, serial, principals, TTL.
    """

    name: str
    kind: str
    public: Mapping[str, Any]
    material: Any = field(default=None, repr=False)
    secret_values: tuple[str, ...] = field(default=(), repr=False)
    expires_at: float | None = None


class CredentialProvider(Protocol):
    """Issues and revokes short-lived credentials for one run."""

    def issue(self, spec: CredentialSpec, *, run_id: str, ttl: float) -> IssuedCredential: ...

    def revoke_all(self) -> list[Mapping[str, Any]]:
        """Revoke everything issued for the run; the list is for the audit."""
        ...


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    ts: str
    run_id: str | None
    actor: str | None
    runbook: str | None
    sha256: str | None
    event: str
    step: str | None
    data: Mapping[str, Any]
    prev: str
    hash: str


AUDIT_GENESIS = "0" * 64
"""The ``prev`` of the first audit record."""


def audit_canonical(value: Mapping[str, Any]) -> bytes:
    """The one byte form of a record that is hashed: sorted keys, no spaces, UTF-8.

    Defined here, beside ``AuditRecord``, so every ``AuditSink`` (the JSON Lines
    file, a rehearsal's memory) chains records the same way.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def audit_record_hash(record: Mapping[str, Any]) -> str:
    """sha256 of the record without its own ``hash`` field."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(audit_canonical(body)).hexdigest()


def audit_timestamp(epoch: float) -> str:
    """UTC, ISO-8601, microseconds, ``Z``: sortable and unambiguous across hosts."""
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AuditSink(Protocol):
    """Append-only, hash-chained, fail-closed (DESIGN.md section 3).

    ``append`` returns only once the record is durable; if it cannot be
    written it raises ``AuditWriteError`` and the caller must not act.
    """

    def append(
        self,
        event: str,
        *,
        run_id: str | None = None,
        actor: str | None = None,
        runbook: str | None = None,
        sha256: str | None = None,
        step: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> AuditRecord: ...

    def records(self, run_id: str | None = None) -> list[AuditRecord]: ...


class Clock(Protocol):
    """Wall time for records, monotonic time for durations, and sleeping."""

    def now(self) -> float: ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float, cancel: CancelToken | None = None) -> bool:
        """Sleep; True if ``cancel`` fired first."""
        ...


class StateStore(Protocol):
    """Durable state of runs, steps, approvals, locks, cooldowns and the kill-switch.

    Several processes may share one store (a CLI approving while another
    process runs), so every method is a short transaction of its own.
    """

    # runs
    def create_run(self, run: Mapping[str, Any]) -> None: ...
    def get_run(self, run_id: str) -> dict[str, Any]: ...
    def update_run(self, run_id: str, **fields: Any) -> None: ...
    def list_runs(self, *, limit: int = 50, status: str | None = None) -> list[dict[str, Any]]: ...
    def run_fields(self, run_id: str, *columns: str) -> dict[str, Any]:
        """A few columns of a run without decoding its state: cheap enough to poll."""
        ...

    def save_state(
        self,
        run_id: str,
        *,
        head: Mapping[str, Any],
        steps: Iterable[tuple[int, str, Mapping[str, Any]]],
        history: Iterable[Mapping[str, Any]],
        history_from: int,
        **fields: Any,
    ) -> None:
        """Save a conductor state by its parts (only what changed), in one transaction."""
        ...

    # steps (one row per run and step; the conductor state is the truth, these serve queries)
    def upsert_step(self, run_id: str, step_id: str, **fields: Any) -> None: ...
    def get_steps(self, run_id: str) -> list[dict[str, Any]]: ...

    # approvals
    def add_approval(self, run_id: str, step_id: str, decision: Mapping[str, Any]) -> None: ...
    def get_approvals(self, run_id: str, step_id: str | None = None) -> list[dict[str, Any]]: ...

    # concurrency locks and cooldowns
    def acquire_lock(self, key: str, run_id: str, limit: int) -> bool: ...
    def release_lock(self, key: str, run_id: str) -> None: ...
    def holders(self, key: str) -> list[str]: ...
    def set_cooldown(self, key: str, until: float) -> None: ...
    def cooldown_until(self, key: str) -> float | None: ...

    # kill-switch: scope is "*" (global) or a runbook name
    def engage_killswitch(self, scope: str, *, reason: str, actor: str, at: float) -> None: ...
    def release_killswitch(self, scope: str, *, actor: str, at: float) -> None: ...
    def killswitch(self, runbook: str | None = None) -> dict[str, Any] | None:
        """The engaged switch that applies to ``runbook`` (global first), or None."""
        ...

    def killswitches(self) -> list[dict[str, Any]]: ...


Masker = Callable[[str], str]
"""Replaces every known secret (and its base64 / URL-encoded forms) by ``***``."""
