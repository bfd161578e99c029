"""The rollback saga: which compensating actions run, in which order.

A saga undoes newest work first, so each rollback finds the world as the step
after it left it; the failed step's own rollback comes before all of them
because its half-done work is the newest of all (DESIGN.md section 2, Failure).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from executor.conductor.state import ConductorState, SagaItem
from executor.conductor.tables import SagaStatus
from executor.model import OnFailure, Step, StepStatus


def plan(state: ConductorState, steps: Mapping[str, Step], order: Sequence[str]) -> list[SagaItem]:
    """Failed steps that asked for rollback (the cause first, then by failure), then
    succeeded steps newest finished first; each step's actions in the order written."""
    recs = state.steps
    failed = [
        sid
        for sid in order
        if recs[sid].status is StepStatus.FAILED and steps[sid].on_failure is OnFailure.ROLLBACK
    ]
    failed.sort(key=lambda sid: (sid != state.cause, recs[sid].finished_seq or 0))
    done = [sid for sid in order if recs[sid].status is StepStatus.SUCCEEDED]
    done.sort(key=lambda sid: recs[sid].finished_seq or 0, reverse=True)
    return [
        SagaItem(step=sid, index=i)
        for sid in (*failed, *done)
        for i in range(len(steps[sid].rollback))
    ]


def head(state: ConductorState) -> SagaItem | None:
    """The rollback action that runs now (or next): the first one not finished."""
    return next((i for i in state.saga or () if not i.status.terminal), None)


def done(state: ConductorState) -> bool:
    return state.saga is not None and head(state) is None


def clean(state: ConductorState) -> bool:
    """True when every rollback action (if any) succeeded."""
    return all(i.status is SagaStatus.SUCCEEDED for i in state.saga or ())


def failures(state: ConductorState) -> list[str]:
    return [
        f"{i.step}[{i.index}]: {i.error}"
        for i in state.saga or ()
        if i.status is not SagaStatus.SUCCEEDED
    ]
