"""Read-only views of a run's state: the expression context, what a run touched,
and the one-line summary. Kept apart from the state machine so that showing a
run can never change it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypedDict

from executor.conductor.state import ConductorState, StepRecord
from executor.conductor.tables import SagaStatus
from executor.model import RunStatus, StepStatus


class Touched(TypedDict):
    """One step that acted on the world; plain data, ready for audit and ``--json``."""

    step: str
    status: str
    outcome: str  # finished | timed out | cut off | unknown | in flight
    hosts: dict[str, Any]
    attempts: int
    started_at: float | None
    finished_at: float | None


def expression_context(
    state: ConductorState,
    inputs: Mapping[str, Any] | None = None,
    run: Mapping[str, Any] | None = None,
    alert: Mapping[str, Any] | None = None,
    secrets: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The context guards and templates see; each ``steps`` entry is a fresh copy
    made when read, so an expression cannot alter the saved state, and a guard
    costs what it reads rather than a copy of the whole run."""
    return {
        "inputs": dict(inputs or {}),
        "steps": StepsView(state),
        "run": dict(run or {}),
        "alert": dict(alert or {}),
        "secrets": dict(secrets or {}),
    }


class StepsView(Mapping[str, dict[str, Any]]):
    """``steps.<id>.status|outputs|hosts``, copied from the records when read."""

    def __init__(self, state: ConductorState) -> None:
        self._records = state.steps

    def __getitem__(self, step_id: str) -> dict[str, Any]:
        rec = self._records[step_id]
        return {
            "status": rec.status.value,
            "outputs": copy.deepcopy(rec.outputs),
            "hosts": copy.deepcopy(rec.hosts),
        }

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)


def touched(state: ConductorState, order: Sequence[str]) -> list[Touched]:
    """Each step that ran (was started at least once), in the order it started."""
    ran = [sid for sid in order if state.steps[sid].attempts > 0]
    ran.sort(key=lambda sid: state.steps[sid].started_at or 0.0)
    return [_touched(sid, state.steps[sid]) for sid in ran]


_OUTCOME = {StepStatus.RUNNING: "in flight", StepStatus.UNKNOWN: "unknown"}


def _touched(sid: str, rec: StepRecord) -> Touched:
    if rec.status is StepStatus.CANCELLED:
        outcome = "unknown" if rec.was_unknown else "cut off"
    elif rec.status is StepStatus.FAILED and rec.timed_out:
        outcome = "timed out"
    else:
        outcome = _OUTCOME.get(rec.status, "finished")
    return Touched(
        step=sid,
        status=rec.status.value,
        outcome=outcome,
        hosts=copy.deepcopy(rec.hosts),
        attempts=rec.attempts,
        started_at=rec.started_at,
        finished_at=rec.finished_at,
    )


def summary(state: ConductorState, order: Sequence[str]) -> str:
    """One line for ``runbook status``: how the run ended, or what it waits for."""
    if state.status.terminal:
        return f"{state.status.value}: {state.reason}" if state.reason else state.status.value
    unknown = [sid for sid in order if state.steps[sid].status is StepStatus.UNKNOWN]
    unknown += [
        f"rollback {i.step}[{i.index}]" for i in state.saga or () if i.status is SagaStatus.UNKNOWN
    ]
    if unknown:
        return "waiting for an operator to resolve " + ", ".join(unknown)
    waiting = ", ".join(sid for sid in order if state.steps[sid].status is StepStatus.WAITING)
    if waiting and state.status is RunStatus.WAITING:
        return f"waiting for approval of {waiting}"
    if waiting:
        return f"{state.status.value}; {waiting} awaiting approval"
    return state.status.value
