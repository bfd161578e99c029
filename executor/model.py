"""The runbook as frozen, typed objects, plus the Status and Event vocabularies.

Everything above the loader works on these objects, never on raw mappings, so
a field's meaning and default live in exactly one place. ``Runbook.from_mapping``
expects a mapping that validation has already accepted: it does not re-check.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from types import MappingProxyType
from typing import Any

API_VERSION = "runbook/v1"
KIND = "Runbook"

ACTION_KINDS = ("ssh", "ansible", "local", "http", "approval", "wait", "log")
"""Keys that name a step's action; ``assert`` may stand alone or follow one."""

MUTATING_KINDS = frozenset({"ssh", "ansible", "local"})
"""Actions that may change the world and so deserve a rollback or verification."""

RESULT_KINDS = frozenset({"ssh", "ansible", "local", "http"})
"""Actions that produce a ``result`` an expression may read."""

HOST_KINDS = frozenset({"ssh", "ansible"})
"""Actions that run on the hosts of a target."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str | int | float) -> float:
    """Seconds from ``90s``, ``15m``, ``2h``, ``1d``, ``500ms`` or a bare number.

    Bare numbers are seconds, as in Ansible's ``timeout``.
    """
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        return float(text)
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"not a duration: {text!r} (write e.g. 90s, 15m, 2h)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def format_duration(seconds: float) -> str:
    """The shortest readable form: ``90s`` -> ``1m30s``; used in plans and status."""
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs else "",
    ]
    return "".join(parts) or "0s"


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


class StepStatus(StrEnum):
    """Life of one step. Terminal: succeeded, failed, skipped, cancelled."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"  # an approval step waiting for its quorum
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"  # was in flight when the executor died: an operator decides

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL_STEP


_TERMINAL_STEP = frozenset(
    {StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED}
)


class RunStatus(StrEnum):
    """Life of one run. Terminal: succeeded, failed, cancelled, rolled_back."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"  # nothing can move until a human approves or resolves
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"  # kill-switch or `runbook kill`
    ROLLED_BACK = "rolled_back"  # a step failed with on_failure: rollback, saga done

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL_RUN


_TERMINAL_RUN = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.ROLLED_BACK}
)


class Trigger(StrEnum):
    """When a step with ``needs`` becomes ready (DESIGN.md section 2, Graph)."""

    ALL_SUCCEEDED = "all_succeeded"
    ANY_SUCCEEDED = "any_succeeded"
    ALWAYS = "always"


class OnFailure(StrEnum):
    ABORT = "abort"
    CONTINUE = "continue"
    ROLLBACK = "rollback"


class Automation(StrEnum):
    """What an alert may do unattended; ordered from weakest to strongest."""

    MANUAL = "manual"
    APPROVAL = "approval"
    AUTO = "auto"

    @property
    def rank(self) -> int:
        return list(Automation).index(self)


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class SshAction:
    target: str
    command: str
    credential: str | None = None
    sudo: bool = False
    kind: str = field(default="ssh", init=False)


@dataclass(frozen=True)
class AnsibleAction:
    target: str
    credential: str | None = None
    playbook: str | None = None
    module: str | None = None
    args: Mapping[str, Any] = field(default_factory=lambda: _frozen(None))
    extravars: Mapping[str, Any] = field(default_factory=lambda: _frozen(None))
    kind: str = field(default="ansible", init=False)


@dataclass(frozen=True)
class LocalAction:
    command: str
    kind: str = field(default="local", init=False)


@dataclass(frozen=True)
class HttpAction:
    url: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=lambda: _frozen(None))
    json: Any = None
    body: str | None = None
    expect_status: tuple[int, ...] = (200,)
    kind: str = field(default="http", init=False)


@dataclass(frozen=True)
class ApprovalAction:
    message: str
    approvers: tuple[str, ...]
    quorum: int = 1
    timeout: float | None = None
    kind: str = field(default="approval", init=False)


@dataclass(frozen=True)
class WaitAction:
    duration: float
    kind: str = field(default="wait", init=False)


@dataclass(frozen=True)
class LogAction:
    message: str
    kind: str = field(default="log", init=False)


@dataclass(frozen=True)
class AssertSpec:
    that: tuple[str, ...]
    message: str | None = None


Action = (
    SshAction | AnsibleAction | LocalAction | HttpAction | ApprovalAction | WaitAction | LogAction
)


def action_from_mapping(kind: str, spec: Mapping[str, Any]) -> Action:
    """Build one action from its key (``ssh``...) and its validated body."""
    if kind == "ssh":
        return SshAction(
            target=spec["target"],
            command=spec["command"],
            credential=spec.get("credential"),
            sudo=bool(spec.get("sudo", False)),
        )
    if kind == "ansible":
        return AnsibleAction(
            target=spec["target"],
            credential=spec.get("credential"),
            playbook=spec.get("playbook"),
            module=spec.get("module"),
            args=_frozen(spec.get("args")),
            extravars=_frozen(spec.get("extravars")),
        )
    if kind == "local":
        return LocalAction(command=spec["command"])
    if kind == "http":
        return HttpAction(
            url=spec["url"],
            method=str(spec.get("method", "GET")).upper(),
            headers=_frozen(spec.get("headers")),
            json=spec.get("json"),
            body=spec.get("body"),
            expect_status=tuple(spec.get("expect_status", (200,))),
        )
    if kind == "approval":
        timeout = spec.get("timeout")
        return ApprovalAction(
            message=spec["message"],
            approvers=tuple(spec.get("approvers", ())),
            quorum=int(spec.get("quorum", 1)),
            timeout=parse_duration(timeout) if timeout is not None else None,
        )
    if kind == "wait":
        return WaitAction(duration=parse_duration(spec["duration"]))
    if kind == "log":
        return LogAction(message=spec["message"])
    raise ValueError(f"unknown action kind {kind!r}")


def single_action(mapping: Mapping[str, Any]) -> tuple[str, Action] | None:
    """The one action key present in a step or rollback mapping, built."""
    for kind in ACTION_KINDS:
        if kind in mapping:
            return kind, action_from_mapping(kind, mapping[kind])
    return None


# --------------------------------------------------------------------------- runbook parts


@dataclass(frozen=True)
class Retries:
    count: int
    delay: float = 0.0
    until: str | None = None


@dataclass(frozen=True)
class Step:
    """One node of the graph. ``action`` is None only for a bare ``assert`` step."""

    id: str
    action: Action | None
    assertion: AssertSpec | None = None
    name: str | None = None
    needs: tuple[str, ...] = ()
    when: str | None = None
    trigger: Trigger = Trigger.ALL_SUCCEEDED
    outputs: Mapping[str, str] = field(default_factory=lambda: _frozen(None))
    timeout: float | None = None
    retries: Retries | None = None
    on_failure: OnFailure = OnFailure.ABORT
    rollback: tuple[Action, ...] = ()

    @property
    def kind(self) -> str:
        """``ssh``, ``ansible``... or ``assert`` for a bare assertion step."""
        return self.action.kind if self.action is not None else "assert"

    @property
    def mutating(self) -> bool:
        return self.kind in MUTATING_KINDS

    @property
    def is_approval(self) -> bool:
        return self.kind == "approval"


@dataclass(frozen=True)
class InputSpec:
    name: str
    type: str = "string"  # string | integer | number | boolean | array | object
    default: Any = None
    has_default: bool = False
    description: str | None = None
    pattern: str | None = None
    enum: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    secret: bool = False

    @property
    def required(self) -> bool:
        return not self.has_default


@dataclass(frozen=True)
class TargetSpec:
    name: str
    hosts: str  # an Ansible host pattern, may hold {{ }} templates


@dataclass(frozen=True)
class CredentialSpec:
    """A credential the runbook asks Vault for when a step needs it.

    ``kind`` is ``vault_ssh`` (a signed SSH certificate) or ``vault_kv`` (a
    secret read from KV, exposed to expressions as a masked value).
    """

    name: str
    kind: str
    role: str | None = None
    principals: tuple[str, ...] = ()
    ttl: float | None = None
    path: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class Concurrency:
    key: str
    limit: int = 1


@dataclass(frozen=True)
class Budget:
    hosts: int
    per: float


@dataclass(frozen=True)
class Policy:
    automation: Automation = Automation.MANUAL
    concurrency: Concurrency | None = None
    cooldown: float | None = None
    max_hosts: int | None = None
    budget: Budget | None = None
    timeout: float | None = None
    self_approval: bool = False


@dataclass(frozen=True)
class Metadata:
    name: str
    version: str
    title: str | None = None
    description: str | None = None
    owner: str | None = None
    severity: tuple[str, ...] = ()
    contacts: tuple[str, ...] = ()
    links: Mapping[str, str] = field(default_factory=lambda: _frozen(None))
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Runbook:
    """A validated runbook. ``source`` is the file it came from, ``sha256`` its bytes' hash.

    Approvals bind to ``sha256``; the catalog locks it per ``name@version``.
    """

    metadata: Metadata
    steps: tuple[Step, ...]
    inputs: Mapping[str, InputSpec] = field(default_factory=lambda: _frozen(None))
    targets: Mapping[str, TargetSpec] = field(default_factory=lambda: _frozen(None))
    credentials: Mapping[str, CredentialSpec] = field(default_factory=lambda: _frozen(None))
    policy: Policy = field(default_factory=Policy)
    source: str = "<memory>"
    sha256: str = ""

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def version(self) -> str:
        return self.metadata.version

    @property
    def ref(self) -> str:
        """``name@version``: how audit records and the catalog name this runbook."""
        return f"{self.metadata.name}@{self.metadata.version}"

    def step(self, step_id: str) -> Step:
        """The step with this id; KeyError if there is none (called on every event)."""
        return self._steps_by_id[step_id]

    @cached_property
    def _steps_by_id(self) -> Mapping[str, Step]:
        return MappingProxyType({s.id: s for s in self.steps})

    @property
    def step_ids(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.steps)

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], *, source: str = "<memory>", sha256: str = ""
    ) -> Runbook:
        """Build from a mapping that validation accepted (it is not re-checked here)."""
        meta = data["metadata"]
        metadata = Metadata(
            name=meta["name"],
            version=str(meta["version"]),
            title=meta.get("title"),
            description=meta.get("description"),
            owner=meta.get("owner"),
            severity=tuple(meta.get("severity", ())),
            contacts=tuple(meta.get("contacts", ())),
            links=_frozen(meta.get("links")),
            tags=tuple(meta.get("tags", ())),
        )
        inputs = {
            name: InputSpec(
                name=name,
                type=spec.get("type", "string"),
                default=spec.get("default"),
                has_default="default" in spec,
                description=spec.get("description"),
                pattern=spec.get("pattern"),
                enum=tuple(spec["enum"]) if "enum" in spec else None,
                minimum=spec.get("minimum"),
                maximum=spec.get("maximum"),
                min_length=spec.get("minLength"),
                max_length=spec.get("maxLength"),
                secret=bool(spec.get("secret", False)),
            )
            for name, spec in (data.get("inputs") or {}).items()
        }
        targets = {
            name: TargetSpec(name=name, hosts=str(spec["hosts"]))
            for name, spec in (data.get("targets") or {}).items()
        }
        credentials = {
            name: _credential(name, spec) for name, spec in (data.get("credentials") or {}).items()
        }
        steps = tuple(_step(raw) for raw in data["steps"])
        return cls(
            metadata=metadata,
            steps=steps,
            inputs=_frozen(inputs),
            targets=_frozen(targets),
            credentials=_frozen(credentials),
            policy=_policy(data.get("policy") or {}),
            source=source,
            sha256=sha256,
        )


def _credential(name: str, spec: Mapping[str, Any]) -> CredentialSpec:
    if "vault_ssh" in spec:
        body = spec["vault_ssh"]
        ttl = body.get("ttl")
        return CredentialSpec(
            name=name,
            kind="vault_ssh",
            role=body["role"],
            principals=tuple(body.get("principals", ())),
            ttl=parse_duration(ttl) if ttl is not None else None,
        )
    body = spec["vault_kv"]
    return CredentialSpec(name=name, kind="vault_kv", path=body["path"], key=body.get("key"))


def _policy(raw: Mapping[str, Any]) -> Policy:
    conc = raw.get("concurrency")
    budget = raw.get("budget")
    return Policy(
        automation=Automation(raw.get("automation", "manual")),
        concurrency=Concurrency(key=str(conc["key"]), limit=int(conc.get("limit", 1)))
        if conc
        else None,
        cooldown=parse_duration(raw["cooldown"]) if raw.get("cooldown") is not None else None,
        max_hosts=raw.get("max_hosts"),
        budget=Budget(hosts=int(budget["hosts"]), per=parse_duration(budget["per"]))
        if budget
        else None,
        timeout=parse_duration(raw["timeout"]) if raw.get("timeout") is not None else None,
        self_approval=bool(raw.get("self_approval", False)),
    )


def _step(raw: Mapping[str, Any]) -> Step:
    found = single_action(raw)
    action = found[1] if found else None
    assertion = None
    if "assert" in raw:
        spec = raw["assert"]
        that = spec["that"]
        assertion = AssertSpec(
            that=tuple([that] if isinstance(that, str) else that), message=spec.get("message")
        )
    retries = None
    if raw.get("retries"):
        r = raw["retries"]
        retries = Retries(
            count=int(r.get("count", 1)),
            delay=parse_duration(r.get("delay", 0)),
            until=r.get("until"),
        )
    rollback_raw = raw.get("rollback")
    rollback: tuple[Action, ...] = ()
    if rollback_raw:
        items = rollback_raw if isinstance(rollback_raw, list) else [rollback_raw]
        built = [single_action(item) for item in items]
        rollback = tuple(b[1] for b in built if b is not None)
    needs = raw.get("needs") or ()
    return Step(
        id=raw["id"],
        action=action,
        assertion=assertion,
        name=raw.get("name"),
        needs=tuple([needs] if isinstance(needs, str) else needs),
        when=_guard_text(raw.get("when")),
        trigger=Trigger(raw.get("trigger", "all_succeeded")),
        outputs=_frozen({k: str(v) for k, v in (raw.get("outputs") or {}).items()}),
        timeout=parse_duration(raw["timeout"]) if raw.get("timeout") is not None else None,
        retries=retries,
        on_failure=OnFailure(raw.get("on_failure", "abort")),
        rollback=rollback,
    )


def _guard_text(value: Any) -> str | None:
    """``when`` may be a bare expression, a boolean, or a list meaning 'and'."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return " and ".join(f"({v})" for v in value)
    return str(value)
