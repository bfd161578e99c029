"""The world a rehearsal runs in: every port of the engine, simulated in memory.

A rehearsal must touch no host, no Vault, no disk and no wall clock, yet the
engine must not be able to tell: these classes implement the same Protocols
(``executor.ports``) as SQLite, the JSON Lines audit, Vault and the Ansible
inventory, so the engine runs unchanged. Time only moves when the rehearsal
moves it (a ``wait``, a scripted duration, a retry delay, an approval left to
expire), which keeps a 15-minute approval timeout instant and deterministic.
"""

from __future__ import annotations

import copy
import datetime
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from executor.errors import ApprovalRefused, NotFound, StoreError
from executor.model import CredentialSpec
from executor.ports import (
    AUDIT_GENESIS,
    AuditRecord,
    CancelToken,
    IssuedCredential,
    audit_record_hash,
)

EPOCH = 1_767_225_600.0
"""2026-01-01T00:00:00Z: where every rehearsal's clock starts, so runs are reproducible."""

MAX_POLLS = 20_000
"""Turns of the engine's loop (it reads the kill-switch on each) before the rehearsal
decides the run is stuck and stops it; real scenarios take a few dozen."""


class SimulatedClock:
    """A clock that moves only when told to; ``sleep`` advances it instead of waiting."""

    def __init__(self, start: float = EPOCH) -> None:
        self._now = start
        self._monotonic = 1_000.0
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with self._lock:
            self._now += seconds
            self._monotonic += seconds

    def sleep(self, seconds: float, cancel: CancelToken | None = None) -> bool:
        if cancel is not None and cancel.cancelled:
            return True
        self.advance(seconds)
        return False


class MemoryAudit:
    """A hash-chained audit log kept in a list; ``listeners`` see each record as written.

    The chain uses the same canonical JSON and sha256 as the real log, so a
    rehearsal's trail looks like production's; nothing is fsynced because
    nothing outlives the rehearsal.
    """

    def __init__(self, clock: SimulatedClock) -> None:
        self.clock = clock
        self._records: list[AuditRecord] = []
        self._lock = threading.Lock()
        self.listeners: list[Callable[[AuditRecord], None]] = []

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
    ) -> AuditRecord:
        with self._lock:
            seq = len(self._records) + 1
            prev = self._records[-1].hash if self._records else AUDIT_GENESIS
            body = {
                "seq": seq,
                "ts": _iso(self.clock.now()),
                "run_id": run_id,
                "actor": actor,
                "runbook": runbook,
                "sha256": sha256,
                "event": event,
                "step": step,
                "data": dict(data or {}),
                "prev": prev,
            }
            record = AuditRecord(**body, hash=audit_record_hash(body))
            self._records.append(record)
        for listener in self.listeners:
            listener(record)
        return record

    def records(self, run_id: str | None = None) -> list[AuditRecord]:
        with self._lock:
            return [r for r in self._records if run_id is None or r.run_id == run_id]


def _iso(epoch: float) -> str:
    """Milliseconds are enough on a simulated clock, and keep scenario output short."""
    moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class MemoryStore:
    """``StateStore`` in dictionaries: runs, approvals, locks, cooldowns, the kill-switch.

    ``before_killswitch`` is called each time the engine looks at the switch
    (once per turn of its loop): the rehearsal uses it to engage the switch when
    a named step is reached, exactly as an operator would, and counts the turns
    so a run that never ends stops the scenario instead of hanging the suite.
    Rows are copied on the way out, like a database would, so the engine cannot
    alias them.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.runs: dict[str, dict[str, Any]] = {}
        self.steps: dict[str, dict[str, dict[str, Any]]] = {}
        self.approvals: list[dict[str, Any]] = []
        self.locks: dict[str, list[str]] = {}
        self.cooldowns: dict[str, float] = {}
        self.switches: dict[str, dict[str, Any]] = {}
        self.before_killswitch: Callable[[], None] | None = None
        self.polls = 0

    # runs
    def create_run(self, run: Mapping[str, Any]) -> None:
        with self._lock:
            if run["id"] in self.runs:
                raise StoreError(f"a run with id {run['id']!r} already exists")
            self.runs[run["id"]] = {k: _stored(v) for k, v in run.items()}

    def get_run(self, run_id: str) -> dict[str, Any]:
        with self._lock:
            return {k: _loaded(v) for k, v in self._run(run_id).items()}

    def _run(self, run_id: str) -> dict[str, Any]:
        try:
            return self.runs[run_id]
        except KeyError:
            raise NotFound(f"no run with id {run_id!r} in this rehearsal") from None

    def update_run(self, run_id: str, **fields: Any) -> None:
        with self._lock:
            self._run(run_id).update({k: _stored(v) for k, v in fields.items()})

    def list_runs(self, *, limit: int = 50, status: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            ids = [i for i, r in self.runs.items() if status in (None, r.get("status"))]
        return [self.get_run(i) for i in reversed(ids)][:limit]

    def request_kill(
        self, run_id: str, actor: str, reason: str, *, at: float | None = None
    ) -> None:
        self.update_run(run_id, kill_requested=True, kill_by=actor, kill_reason=reason, kill_at=at)

    # steps
    def upsert_step(self, run_id: str, step_id: str, **fields: Any) -> None:
        with self._lock:
            self.steps.setdefault(run_id, {}).setdefault(step_id, {"step_id": step_id}).update(
                fields
            )

    def get_steps(self, run_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(s) for s in self.steps.get(run_id, {}).values()]

    # approvals
    def add_approval(self, run_id: str, step_id: str, decision: Mapping[str, Any]) -> None:
        with self._lock:
            self._run(run_id)
            for row in self.approvals:
                same = (row["run_id"], row["step_id"], row["approver"])
                if same == (run_id, step_id, decision["approver"]):
                    raise ApprovalRefused(
                        f"{decision['approver']} already decided step {step_id!r} of run {run_id}"
                    )
            self.approvals.append(
                {
                    "id": len(self.approvals) + 1,
                    "run_id": run_id,
                    "step_id": step_id,
                    "approver": decision["approver"],
                    "decision": decision["decision"],
                    "reason": decision.get("reason"),
                    "at": decision.get("at"),
                    "sha256": decision.get("sha256"),
                }
            )

    def get_approvals(self, run_id: str, step_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                dict(a)
                for a in self.approvals
                if a["run_id"] == run_id and step_id in (None, a["step_id"])
            ]

    # locks and cooldowns
    def acquire_lock(self, key: str, run_id: str, limit: int) -> bool:
        with self._lock:
            holders = self.locks.setdefault(key, [])
            if run_id in holders:
                return True
            if len(holders) >= limit:
                return False
            holders.append(run_id)
            return True

    def release_lock(self, key: str, run_id: str) -> None:
        with self._lock:
            if run_id in self.locks.get(key, []):
                self.locks[key].remove(run_id)

    def holders(self, key: str) -> list[str]:
        with self._lock:
            return list(self.locks.get(key, []))

    def set_cooldown(self, key: str, until: float) -> None:
        with self._lock:
            self.cooldowns[key] = float(until)

    def cooldown_until(self, key: str) -> float | None:
        with self._lock:
            return self.cooldowns.get(key)

    # kill-switch
    def engage_killswitch(self, scope: str, *, reason: str, actor: str, at: float) -> None:
        with self._lock:
            self.switches[scope] = {
                "scope": scope,
                "engaged": True,
                "reason": reason,
                "actor": actor,
                "at": at,
            }

    def release_killswitch(self, scope: str, *, actor: str, at: float) -> None:
        with self._lock:
            self.switches.pop(scope, None)

    def killswitch(self, runbook: str | None = None) -> dict[str, Any] | None:
        self.polls += 1
        if self.polls > MAX_POLLS:
            raise StoreError(
                f"the run did not end after {MAX_POLLS} turns of the engine: "
                "the rehearsal stopped it",
                hint="an executor bug, or a scenario that leaves the run nothing to do",
            )
        if self.before_killswitch is not None:
            self.before_killswitch()
        with self._lock:
            found = self.switches.get("*")
            if found is None and runbook is not None:
                found = self.switches.get(runbook)
            return copy.deepcopy(found)

    def killswitches(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(s) for _, s in sorted(self.switches.items(), key=lambda i: i[0] != "*")]


class _Json(str):
    """A structured column kept as JSON text, as a database keeps it."""


def _stored(value: Any) -> Any:
    """Containers are serialised on write: later changes to the caller's objects
    (the engine shares nested data with its live state) cannot reach the stored row."""
    if isinstance(value, dict | list | tuple):
        return _Json(json.dumps(value, default=str))
    return value


def _loaded(value: Any) -> Any:
    return json.loads(value) if isinstance(value, _Json) else value


class SimulatedCredentials:
    """Issues stand-in credentials: SSH certificates with no key, KV values from the scenario.

    A ``vault_kv`` value is the scenario's ``secrets`` entry (or a generated
    one); it is handed to the masker like a real secret, so a rehearsal also
    shows that the value never appears in output or audit.
    """

    def __init__(self, secrets: Mapping[str, str], run_id: str) -> None:
        self.secrets = secrets
        self.run_id = run_id
        self.issued: list[IssuedCredential] = []

    def issue(self, spec: CredentialSpec, *, run_id: str, ttl: float) -> IssuedCredential:
        serial = f"sim-{len(self.issued) + 1}"
        if spec.kind == "vault_kv":
            value = self.secrets.get(spec.name) or f"rehearsal-secret-{spec.name}-{serial}"
            issued = IssuedCredential(
                name=spec.name,
                kind=spec.kind,
                public={"path": spec.path, "key": spec.key, "simulated": True},
                material=value,
                secret_values=(value,),
            )
        else:
            issued = IssuedCredential(
                name=spec.name,
                kind=spec.kind,
                public={
                    "role": spec.role,
                    "principals": list(spec.principals),
                    "ttl": min(ttl, spec.ttl or ttl),
                    "serial": serial,
                    "simulated": True,
                },
            )
        self.issued.append(issued)
        return issued

    def revoke_all(self) -> list[Mapping[str, Any]]:
        done = [{"credential": c.name, "kind": c.kind, "result": "revoked"} for c in self.issued]
        self.issued = []
        return done


_PATTERN_SPLIT = re.compile(r"[:,]")


class SimulatedInventory:
    """Resolves a target's rendered host pattern to the hosts the scenario names.

    ``by_pattern`` maps a rendered pattern to hosts (from the scenario's
    ``hosts:`` per target). Any other pattern resolves literally: ``web1`` is
    the host web1, ``web1,web2`` two hosts, and ``web:&web2`` (group ``web``
    intersected with ``web2``) the host web2; a group name the scenario does
    not expand stands for one host of that name.
    """

    def __init__(self, by_pattern: Mapping[str, Sequence[str]] | None = None) -> None:
        self.by_pattern = dict(by_pattern or {})

    def resolve(self, pattern: str) -> Sequence[str]:
        if pattern in self.by_pattern:
            return list(self.by_pattern[pattern])
        return literal_hosts(pattern)


def literal_hosts(pattern: str) -> list[str]:
    """The host names an Ansible pattern spells out (see ``SimulatedInventory``)."""
    parts = [p.strip() for p in _PATTERN_SPLIT.split(pattern) if p.strip()]
    narrowed = [p[1:] for p in parts if p.startswith("&")]
    chosen = narrowed or [p for p in parts if not p.startswith(("!", "&"))]
    return list(dict.fromkeys(chosen))


def unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
