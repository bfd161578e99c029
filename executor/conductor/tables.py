"""The conductor's rules as data: every legal transition is one row of a table.

Modelled on StackStorm orquesta's state machines: a transition that is not in
a table cannot happen, so "a step that succeeded is never started again" is a
property of ``STEP_TRANSITIONS`` (no row leaves a terminal status) rather than
of an ``if`` somewhere. Reading these tables is reading the semantics of
DESIGN.md section 2 (Failure, Approvals, Kill-switch) and section 4 (crash).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from types import MappingProxyType

from executor.model import RunStatus, StepStatus, Trigger


class Mode(StrEnum):
    """What the run as a whole is doing; decides which steps may still start."""

    NORMAL = "normal"
    ABORTING = "aborting"  # a step failed with on_failure: abort; only `always` steps start
    ROLLING_BACK = "rolling_back"  # cancel in flight, run the saga, then `always` steps
    KILLING = "killing"  # kill-switch or `runbook kill`: cancel everything, no rollback
    TIMING_OUT = "timing_out"  # the run's policy timeout: like a kill, but the run failed


class Signal(StrEnum):
    """What pushes the run from one mode to another."""

    FAIL_ABORT = "fail_abort"
    FAIL_CONTINUE = "fail_continue"
    FAIL_ROLLBACK = "fail_rollback"
    KILL = "kill"
    TIMEOUT = "timeout"


def _mode_rows() -> dict[tuple[Mode, Signal], Mode]:
    rows: dict[tuple[Mode, Signal], Mode] = {
        (Mode.NORMAL, Signal.FAIL_ABORT): Mode.ABORTING,
        (Mode.NORMAL, Signal.FAIL_CONTINUE): Mode.NORMAL,
        (Mode.NORMAL, Signal.FAIL_ROLLBACK): Mode.ROLLING_BACK,
        # an abort already under way escalates when a step asks to be compensated
        (Mode.ABORTING, Signal.FAIL_ABORT): Mode.ABORTING,
        (Mode.ABORTING, Signal.FAIL_CONTINUE): Mode.ABORTING,
        (Mode.ABORTING, Signal.FAIL_ROLLBACK): Mode.ROLLING_BACK,
    }
    # the saga runs once: later failures are recorded, never start a second one
    for signal in (Signal.FAIL_ABORT, Signal.FAIL_CONTINUE, Signal.FAIL_ROLLBACK):
        rows[(Mode.ROLLING_BACK, signal)] = Mode.ROLLING_BACK
        rows[(Mode.KILLING, signal)] = Mode.KILLING
        rows[(Mode.TIMING_OUT, signal)] = Mode.TIMING_OUT
    for mode in (Mode.NORMAL, Mode.ABORTING, Mode.ROLLING_BACK):
        rows[(mode, Signal.KILL)] = Mode.KILLING
        rows[(mode, Signal.TIMEOUT)] = Mode.TIMING_OUT
    # the first stop wins: a kill during a timeout (or the reverse) changes nothing
    for mode in (Mode.KILLING, Mode.TIMING_OUT):
        rows[(mode, Signal.KILL)] = mode
        rows[(mode, Signal.TIMEOUT)] = mode
    return rows


MODE_TRANSITIONS: Mapping[tuple[Mode, Signal], Mode] = MappingProxyType(_mode_rows())

STOPPING = frozenset({Mode.KILLING, Mode.TIMING_OUT})
"""Modes in which nothing new starts and everything pending is cancelled."""

FAILURE_SIGNAL: Mapping[str, Signal] = MappingProxyType(
    {"abort": Signal.FAIL_ABORT, "continue": Signal.FAIL_CONTINUE, "rollback": Signal.FAIL_ROLLBACK}
)
"""A step's ``on_failure`` (an ``OnFailure`` value) as the signal its failure sends."""

MAY_START: Mapping[Mode, frozenset[Trigger]] = MappingProxyType(
    {
        Mode.NORMAL: frozenset(Trigger),
        Mode.ABORTING: frozenset({Trigger.ALWAYS}),
        Mode.ROLLING_BACK: frozenset({Trigger.ALWAYS}),  # and only once the saga is done
        Mode.KILLING: frozenset(),
        Mode.TIMING_OUT: frozenset(),
    }
)
"""Which steps (by trigger) may start, or start another attempt, in each mode."""


class StepEvent(StrEnum):
    START = "start"
    SUCCEED = "succeed"
    FAIL = "fail"
    RETRY = "retry"  # a failed attempt with retries left goes back to pending
    SKIP = "skip"
    WAIT = "wait"  # an approval step starts waiting for its quorum
    CANCEL = "cancel"
    CRASH = "crash"  # the executor died while the step was in flight


_P, _R, _W, _U = StepStatus.PENDING, StepStatus.RUNNING, StepStatus.WAITING, StepStatus.UNKNOWN
_OK, _KO = StepStatus.SUCCEEDED, StepStatus.FAILED
_SK, _CA = StepStatus.SKIPPED, StepStatus.CANCELLED

STEP_TRANSITIONS: Mapping[tuple[StepStatus, StepEvent], StepStatus] = MappingProxyType(
    {
        (_P, StepEvent.START): _R,
        (_P, StepEvent.SKIP): _SK,
        (_P, StepEvent.WAIT): _W,
        (_P, StepEvent.FAIL): _KO,  # guard raised, or a retry abandoned by an abort
        (_P, StepEvent.CANCEL): _CA,
        (_R, StepEvent.SUCCEED): _OK,
        (_R, StepEvent.FAIL): _KO,
        (_R, StepEvent.RETRY): _P,
        (_R, StepEvent.CANCEL): _CA,
        (_R, StepEvent.CRASH): _U,
        (_W, StepEvent.SUCCEED): _OK,
        (_W, StepEvent.FAIL): _KO,
        (_W, StepEvent.CANCEL): _CA,
        (_U, StepEvent.SUCCEED): _OK,
        (_U, StepEvent.FAIL): _KO,
        (_U, StepEvent.CANCEL): _CA,
    }
)
"""No row leaves succeeded, failed, skipped or cancelled: terminal means terminal."""


class SagaStatus(StrEnum):
    """Life of one rollback action of the saga."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (SagaStatus.SUCCEEDED, SagaStatus.FAILED, SagaStatus.CANCELLED)


SAGA_TRANSITIONS: Mapping[tuple[SagaStatus, StepEvent], SagaStatus] = MappingProxyType(
    {
        # handing an action to the engine starts it: a crash after that makes it unknown
        (SagaStatus.PENDING, StepEvent.START): SagaStatus.RUNNING,
        (SagaStatus.PENDING, StepEvent.CANCEL): SagaStatus.CANCELLED,
        (SagaStatus.RUNNING, StepEvent.SUCCEED): SagaStatus.SUCCEEDED,
        (SagaStatus.RUNNING, StepEvent.FAIL): SagaStatus.FAILED,
        (SagaStatus.RUNNING, StepEvent.CRASH): SagaStatus.UNKNOWN,
        (SagaStatus.UNKNOWN, StepEvent.SUCCEED): SagaStatus.SUCCEEDED,
        (SagaStatus.UNKNOWN, StepEvent.FAIL): SagaStatus.FAILED,
        (SagaStatus.UNKNOWN, StepEvent.CANCEL): SagaStatus.CANCELLED,
    }
)


class RunEvent(StrEnum):
    START = "start"
    BLOCK = "block"  # nothing can move but approvals or an operator's decision
    UNBLOCK = "unblock"
    SUCCEED = "succeed"
    FAIL = "fail"
    CANCEL = "cancel"
    ROLL_BACK = "roll_back"


def _run_rows() -> dict[tuple[RunStatus, RunEvent], RunStatus]:
    ends = {
        RunEvent.SUCCEED: RunStatus.SUCCEEDED,
        RunEvent.FAIL: RunStatus.FAILED,
        RunEvent.CANCEL: RunStatus.CANCELLED,
        RunEvent.ROLL_BACK: RunStatus.ROLLED_BACK,
    }
    rows = {
        (RunStatus.PENDING, RunEvent.START): RunStatus.RUNNING,
        (RunStatus.PENDING, RunEvent.CANCEL): RunStatus.CANCELLED,  # killed before it started
        (RunStatus.RUNNING, RunEvent.BLOCK): RunStatus.WAITING,
        (RunStatus.RUNNING, RunEvent.UNBLOCK): RunStatus.RUNNING,
        (RunStatus.WAITING, RunEvent.BLOCK): RunStatus.WAITING,
        (RunStatus.WAITING, RunEvent.UNBLOCK): RunStatus.RUNNING,
    }
    for status in (RunStatus.RUNNING, RunStatus.WAITING):
        for event, end in ends.items():
            rows[(status, event)] = end
    return rows


RUN_TRANSITIONS: Mapping[tuple[RunStatus, RunEvent], RunStatus] = MappingProxyType(_run_rows())
"""No row leaves a terminal run status: events after the end are refused."""

FINAL_EVENT: Mapping[tuple[Mode, bool], RunEvent] = MappingProxyType(
    {
        (Mode.NORMAL, True): RunEvent.SUCCEED,  # every failure, if any, was tolerated
        (Mode.NORMAL, False): RunEvent.SUCCEED,
        (Mode.ABORTING, True): RunEvent.FAIL,
        (Mode.ABORTING, False): RunEvent.FAIL,
        (Mode.ROLLING_BACK, True): RunEvent.ROLL_BACK,
        (Mode.ROLLING_BACK, False): RunEvent.FAIL,  # a rollback action failed
        (Mode.KILLING, True): RunEvent.CANCEL,
        (Mode.KILLING, False): RunEvent.CANCEL,
        (Mode.TIMING_OUT, True): RunEvent.FAIL,
        (Mode.TIMING_OUT, False): RunEvent.FAIL,
    }
)
"""How a run ends, by (mode at the end, every rollback action succeeded)."""


# --------------------------------------------------------------------------- readiness

Verdict = tuple[str, str | None]
"""``("wait", None)``, ``("ready", None)`` or ``("skip", reason)``."""

WAIT: Verdict = ("wait", None)
READY: Verdict = ("ready", None)
_NOT_SUCCEEDED = (StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED)


def _all_succeeded(needs: Sequence[tuple[str, StepStatus]]) -> Verdict:
    for name, status in needs:
        if status in _NOT_SUCCEEDED:
            return ("skip", f"need '{name}' {status.value}")
    return READY if all(s is StepStatus.SUCCEEDED for _, s in needs) else WAIT


def _any_succeeded(needs: Sequence[tuple[str, StepStatus]]) -> Verdict:
    for name, status in needs:
        if status is StepStatus.FAILED:
            return ("skip", f"need '{name}' failed")
    if not all(s.terminal for _, s in needs):
        return WAIT
    if any(s is StepStatus.SUCCEEDED for _, s in needs):
        return READY
    outcome = ", ".join(f"{name}: {status.value}" for name, status in needs)
    return ("skip", f"no need succeeded ({outcome})")


def _always(needs: Sequence[tuple[str, StepStatus]]) -> Verdict:
    return READY if all(s.terminal for _, s in needs) else WAIT


READINESS: Mapping[Trigger, Callable[[Sequence[tuple[str, StepStatus]]], Verdict]] = (
    MappingProxyType(
        {
            Trigger.ALL_SUCCEEDED: _all_succeeded,
            Trigger.ANY_SUCCEEDED: _any_succeeded,
            Trigger.ALWAYS: _always,
        }
    )
)
"""A step's trigger applied to its needs' statuses (a step with no needs is ready)."""
