"""The conductor: a run's state machine with no I/O (DESIGN.md section 6).

``Conductor`` takes events and answers "what runs next"; ``ConductorState``
is its whole memory as JSON; the rules live as data in ``tables``.
"""

from executor.conductor.core import Conductor, Decision, GuardEvaluator
from executor.conductor.events import (
    ApprovalDecision,
    ApprovalExpired,
    Event,
    KillRequested,
    ProcessRestarted,
    RollbackFinished,
    RollbackResolved,
    RunStarted,
    RunTimedOut,
    StepFinished,
    StepResolved,
    StepStarted,
)
from executor.conductor.state import (
    ConductorError,
    ConductorState,
    SagaItem,
    StepRecord,
    Transition,
)
from executor.conductor.tables import Mode, SagaStatus
from executor.conductor.views import Touched

__all__ = [
    "ApprovalDecision",
    "ApprovalExpired",
    "Conductor",
    "ConductorError",
    "ConductorState",
    "Decision",
    "Event",
    "GuardEvaluator",
    "KillRequested",
    "Mode",
    "ProcessRestarted",
    "RollbackFinished",
    "RollbackResolved",
    "RunStarted",
    "RunTimedOut",
    "SagaItem",
    "SagaStatus",
    "StepFinished",
    "StepRecord",
    "StepResolved",
    "StepStarted",
    "Touched",
    "Transition",
]
