"""What can happen to a run, as frozen values the conductor consumes.

Every event carries ``at`` (epoch seconds from the caller's clock): the
conductor never reads a clock, so the same script of events always yields the
same state, which is what makes rehearsals and crash recovery exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunStarted:
    at: float


@dataclass(frozen=True)
class StepStarted:
    """The engine is about to act for ``step_id``; ``attempt`` counts from 1."""

    step_id: str
    attempt: int
    at: float


@dataclass(frozen=True)
class StepFinished:
    """One attempt ended. ``ok`` already reflects ``until`` and ``assert``.

    ``outputs``, ``result`` and ``hosts`` must be JSON-serialisable: they are
    saved with the state. ``hosts`` maps a host to what it did (rc, stdout,
    stderr, cut_off...). ``timed_out`` is a failure like any other (retries
    apply); ``cancelled`` means the step was cut off after the conductor asked.
    """

    step_id: str
    ok: bool
    at: float
    outputs: Mapping[str, Any] = field(default_factory=dict)
    result: Mapping[str, Any] = field(default_factory=dict)
    hosts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    error: str | None = None
    timed_out: bool = False
    cancelled: bool = False


@dataclass(frozen=True)
class ApprovalDecision:
    """An approver's answer; the engine has already checked they may give it."""

    step_id: str
    approver: str
    approve: bool
    at: float
    reason: str | None = None


@dataclass(frozen=True)
class ApprovalExpired:
    """The approval's timeout passed without quorum: a deny by ``timeout``."""

    step_id: str
    at: float


@dataclass(frozen=True)
class RollbackFinished:
    """The rollback action the last decision handed out has ended."""

    step_id: str
    index: int
    ok: bool
    at: float
    error: str | None = None


@dataclass(frozen=True)
class RollbackResolved:
    """An operator's verdict on a rollback action that was in flight at a crash."""

    step_id: str
    index: int
    succeeded: bool
    actor: str
    at: float


@dataclass(frozen=True)
class KillRequested:
    """The kill-switch or ``runbook kill``: cancel everything, no rollback."""

    reason: str
    actor: str
    at: float


@dataclass(frozen=True)
class RunTimedOut:
    """The run's policy timeout passed: like a kill, but the run ends failed."""

    at: float


@dataclass(frozen=True)
class ProcessRestarted:
    """The executor died and came back: whatever was in flight is now unknown."""

    at: float


@dataclass(frozen=True)
class StepResolved:
    """An operator's verdict on a step that was in flight at a crash."""

    step_id: str
    succeeded: bool
    actor: str
    at: float


Event = (
    RunStarted
    | StepStarted
    | StepFinished
    | ApprovalDecision
    | ApprovalExpired
    | RollbackFinished
    | RollbackResolved
    | KillRequested
    | RunTimedOut
    | ProcessRestarted
    | StepResolved
)
