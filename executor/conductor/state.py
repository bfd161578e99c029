"""The conductor's whole memory of a run, as plain data that survives a crash.

The engine saves ``to_json()`` after every event and every decision; a
restarted executor rebuilds the conductor from ``from_json()`` and carries on
exactly where it was. Nothing here may hold a secret: outputs and results come
from the engine already masked.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any

from executor.conductor.tables import Mode, SagaStatus
from executor.errors import RunbookError
from executor.model import RunStatus, StepStatus

FORMAT = 1
"""Bumped when the saved shape changes; an older executor refuses a newer state."""


class ConductorError(RunbookError):
    """An event or a saved state does not fit the run as the conductor knows it.

    The state is left exactly as it was before the event, so the caller may
    report the problem and carry on with the run.
    """


class _Journal(threading.local):
    """The open transaction of this thread: (object, attribute, old value) per change."""

    entries: list[tuple[object, str, Any]] | None = None


_JOURNAL = _Journal()


class Journaled:
    """Remembers the old value of every attribute set while a ``transaction`` is open.

    Undoing an event by restoring only what it changed costs as much as the
    event did, where a backup of the whole state cost as much as the run.
    Attributes an object gets when it is created are not remembered: a new
    object is simply dropped by the undo.
    """

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        entries = _JOURNAL.entries
        if entries is not None:
            current = self.__dict__
            if name in current:
                entries.append((self, name, current[name]))
        object.__setattr__(self, name, value)


@contextmanager
def transaction(state: ConductorState) -> Iterator[list[tuple[object, str, Any]]]:
    """Apply changes to ``state`` all or nothing: on any exception every change is undone.

    Attribute assignments on the state, its step records and saga items are
    journaled; ``history`` and ``tolerated`` only ever grow, so they are cut
    back to their length. Lists and dicts held in attributes must be replaced,
    never changed in place. Yields the journal (what changed, for the caller's
    indexes and for saving only what changed).
    """
    if _JOURNAL.entries is not None:
        raise ConductorError("a conductor transaction is already open in this thread")
    entries: list[tuple[object, str, Any]] = []
    history, tolerated = len(state.history), len(state.tolerated)
    _JOURNAL.entries = entries
    try:
        yield entries
    except BaseException:
        _JOURNAL.entries = None
        for target, name, old in reversed(entries):
            object.__setattr__(target, name, old)
        del state.history[history:]
        del state.tolerated[tolerated:]
        raise
    finally:
        _JOURNAL.entries = None


@dataclass
class StepRecord(Journaled):
    """Everything known about one step of the run."""

    status: StepStatus = StepStatus.PENDING
    attempts: int = 0
    ready: bool = False  # trigger satisfied and guard true: may start
    retry_delay: float | None = None  # set while a failed attempt waits for its retry
    retry_at: float | None = None
    retry_issued: bool = False  # handed to the engine once; re-armed by ProcessRestarted
    cancel_requested: bool = False
    started_at: float | None = None
    finished_at: float | None = None
    finished_seq: int | None = None  # orders finishes when clocks tie (saga: newest first)
    outputs: dict[str, Any] = field(default_factory=dict)
    hosts: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    reason: str | None = None
    timed_out: bool = False
    approvals: list[dict[str, Any]] = field(default_factory=list)
    was_unknown: bool = False
    resolved_by: str | None = None

    @property
    def retry_pending(self) -> bool:
        return self.status is StepStatus.PENDING and self.retry_delay is not None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StepRecord:
        return cls(**{**raw, "status": StepStatus(raw["status"])})


@dataclass
class SagaItem(Journaled):
    """One rollback action: ``index`` is its place in the step's ``rollback`` list."""

    step: str
    index: int
    status: SagaStatus = SagaStatus.PENDING
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    resolved_by: str | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SagaItem:
        return cls(**{**raw, "status": SagaStatus(raw["status"])})


@dataclass(frozen=True)
class Transition:
    """One line of the timeline; ``step`` is None for the run's own status."""

    at: float | None
    step: str | None
    from_: str
    to: str

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "step": self.step, "from": self.from_, "to": self.to}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Transition:
        return cls(at=raw["at"], step=raw["step"], from_=raw["from"], to=raw["to"])


@dataclass
class ConductorState(Journaled):
    """A run as the conductor sees it; ``steps`` is in file order."""

    runbook: str
    sha256: str
    steps: dict[str, StepRecord]
    status: RunStatus = RunStatus.PENDING  # the run's status
    mode: Mode = Mode.NORMAL
    cause: str | None = None  # the step whose failure aborted or rolled back the run
    reason: str | None = None  # why the run ended (or is ending) the way it did
    stop: dict[str, Any] | None = None  # the kill or timeout: kind, actor, reason, at
    started_at: float | None = None
    finished_at: float | None = None
    now: float | None = None  # `at` of the latest event: the time of decisions
    seq: int = 0  # events handled
    tolerated: list[str] = field(default_factory=list)  # failures with on_failure: continue
    saga: list[SagaItem] | None = None  # None until the rollback saga is planned
    history: list[Transition] = field(default_factory=list)
    reported: int = 0  # history entries already handed out in a Decision
    format: int = FORMAT

    @classmethod
    def new(cls, runbook: str, sha256: str, step_ids: tuple[str, ...]) -> ConductorState:
        return cls(runbook=runbook, sha256=sha256, steps={s: StepRecord() for s in step_ids})

    def as_dict(self) -> dict[str, Any]:
        """A plain, independent copy (what a store keeps as a JSON column)."""
        loaded: dict[str, Any] = json.loads(self.to_json())
        return loaded

    def to_json(self) -> str:
        return json.dumps(self, default=_encode, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ConductorState:
        if raw.get("format") != FORMAT:
            raise ConductorError(
                f"saved run state has format {raw.get('format')!r}; this executor reads {FORMAT}",
                hint="resume the run with the executor version that started it",
            )
        saga = raw["saga"]
        return cls(
            **{
                **raw,
                "steps": {k: StepRecord.from_dict(v) for k, v in raw["steps"].items()},
                "status": RunStatus(raw["status"]),
                "mode": Mode(raw["mode"]),
                "saga": None if saga is None else [SagaItem.from_dict(i) for i in saga],
                "history": [Transition.from_dict(t) for t in raw["history"]],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ConductorState:
        try:
            raw = json.loads(text)
            return cls.from_dict(raw)
        except ConductorError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConductorError(
                f"saved run state is unreadable: {exc}",
                hint="the store holds a damaged record; inspect it before resuming",
            ) from exc


def _encode(value: object) -> object:
    """Shallow JSON shape of our dataclasses; json walks the rest (fast, no deep copy)."""
    if isinstance(value, Transition):
        return value.as_dict()
    names = _FIELDS.get(type(value))
    if names is None:
        raise TypeError(f"{type(value).__name__} is not part of a conductor state")
    return {name: getattr(value, name) for name in names}


_FIELDS = {
    cls: tuple(f.name for f in fields(cls)) for cls in (ConductorState, StepRecord, SagaItem)
}
