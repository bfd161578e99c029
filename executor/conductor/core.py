"""The conductor: events in, "what runs next" out; no host, clock or disk.

The engine feeds it events (a step started, finished, an approver answered,
a kill) and asks ``next()`` what to do. Because it only moves data through the
tables of ``executor.conductor.tables``, a run can be saved after every call
and resumed after a crash, and a rehearsal is this same conductor fed
simulated results (DESIGN.md sections 4, 6 and 8).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from executor.conductor import saga, views
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
from executor.conductor.machine import Machine, plain
from executor.conductor.state import (
    ConductorError,
    ConductorState,
    StepRecord,
    Transition,
    transaction,
)
from executor.conductor.tables import (
    FINAL_EVENT,
    STOPPING,
    WAIT,
    Mode,
    RunEvent,
    SagaStatus,
    Signal,
    StepEvent,
)
from executor.model import Runbook, RunStatus, Step, StepStatus

GuardEvaluator = Callable[[Step, Mapping[str, Any]], bool]
"""Supplied by the engine: evaluates ``step.when`` against the context. May raise."""

_LIVE = (RunStatus.RUNNING, RunStatus.WAITING)
_NOT_TERMINAL = tuple(s for s in StepStatus if not s.terminal)


@dataclass(frozen=True)
class Decision:
    """What the engine should do now.

    ``start`` and ``cancel`` repeat on every call until the engine acts (it may
    start only some steps and ask again; cancelling twice is harmless).
    ``retry`` and ``rollback`` are handed out once (again after
    ``ProcessRestarted`` for retries); ``skipped``, ``failed``, ``approvals``
    and ``changes`` report what happened since the previous decision.
    """

    run_status: RunStatus
    done: bool = False
    start: tuple[str, ...] = ()
    retry: tuple[tuple[str, float], ...] = ()  # (step, seconds to wait before the next attempt)
    approvals: tuple[str, ...] = ()  # approval steps that began waiting
    skipped: tuple[tuple[str, str], ...] = ()  # (step, reason)
    failed: tuple[tuple[str, str], ...] = ()  # (step, reason)
    cancel: tuple[str, ...] = ()  # in flight, to be cut off
    rollback: tuple[tuple[str, int], ...] = ()  # (step, index in step.rollback): at most one
    changes: tuple[Transition, ...] = ()  # every transition since the previous decision


class Conductor(Machine):
    """Events in, decisions out, for one run of one runbook; see the module docstring."""

    def __init__(self, runbook: Runbook, state: ConductorState | None = None) -> None:
        super().__init__(runbook, state)
        self._sid_of = {id(rec): sid for sid, rec in self._state.steps.items()}
        self._unsaved: set[str] | None = None  # None: nothing saved yet, every record counts

    # ------------------------------------------------------------------ reading

    @property
    def state(self) -> ConductorState:
        """The live state: read it, save ``to_json()``; change it only through events."""
        return self._state

    @property
    def run_status(self) -> RunStatus:
        return self._state.status

    def waiting_approvals(self) -> tuple[str, ...]:
        """Approval steps waiting for a quorum (after a restart, re-notify these)."""
        return self._with_status(StepStatus.WAITING)

    def unknown_steps(self) -> tuple[str, ...]:
        """Steps in flight at a crash: each needs ``StepResolved`` from an operator."""
        return self._with_status(StepStatus.UNKNOWN)

    def startable(self, step_id: str) -> bool:
        """Whether ``StepStarted`` would be accepted now (e.g. when a retry timer fires)."""
        step, rec = self._step(step_id), self._state.steps[step_id]
        return (
            self._state.status in _LIVE
            and not self._unknown()
            and not step.is_approval
            and rec.status is StepStatus.PENDING
            and rec.ready
            and self._may_start(step)
        )

    def context(
        self,
        inputs: Mapping[str, Any] | None = None,
        run: Mapping[str, Any] | None = None,
        alert: Mapping[str, Any] | None = None,
        secrets: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The expression context: inputs, steps.<id>.status|outputs|hosts, run, alert, secrets."""
        return views.expression_context(self._state, inputs, run, alert, secrets)

    def plan_after(self, approval_step_id: str) -> list[Step]:
        """The steps an approval gates (its descendants, in run order): shown to approvers."""
        step = self._step(approval_step_id)
        if not step.is_approval:
            raise ConductorError(
                f"step '{step.id}' of {self.runbook.ref} is a {step.kind} step, not an approval",
                hint="ask for the plan of an approval step",
            )
        gated = self.graph.descendants(step.id)
        return [self._steps[sid] for sid in self._order if sid in gated]

    def touched(self) -> list[views.Touched]:
        """Each step that ran, its hosts, and whether it finished or was cut off."""
        return views.touched(self._state, self._order)

    def summary(self) -> str:
        """One line for ``runbook status``: how the run ended, or what it waits for."""
        return views.summary(self._state, self._order)

    # ------------------------------------------------------------------ driving

    def handle(self, event: Event) -> None:
        """Apply one event; on ConductorError the state is exactly as before."""
        handler = self._HANDLERS.get(type(event))
        if handler is None:
            raise ConductorError(f"the conductor does not know the event {event!r}")
        with self._transaction():
            if self._state.status.terminal:
                raise ConductorError(
                    f"the run of {self.runbook.ref} already ended ({self._state.status.value}); "
                    f"{type(event).__name__} cannot change it",
                    hint="start a new run",
                )
            self._state.now = event.at
            self._state.seq += 1
            handler(self, event)
            self._settle()

    def next(
        self,
        evaluate_guard: GuardEvaluator,
        *,
        inputs: Mapping[str, Any] | None = None,
        run: Mapping[str, Any] | None = None,
        alert: Mapping[str, Any] | None = None,
        secrets: Mapping[str, Any] | None = None,
    ) -> Decision:
        """Advance the graph (readiness, guards, skips, approvals) and say what to do.

        It changes the state: save it afterwards, as after ``handle``. While a
        step is UNKNOWN nothing new starts: the run waits for an operator.
        """
        with self._transaction():
            scope = {"inputs": inputs, "run": run, "alert": alert, "secrets": secrets}
            while True:  # to a fixed point: planning the saga may free `always` steps
                if self._state.status in _LIVE and not self._unknown():
                    while self._advance(evaluate_guard, scope):
                        pass
                if not self._settle():
                    break
            return self._decision()

    def changed_steps(self) -> set[str]:
        """Steps whose records changed since the last ``mark_saved`` (all, before the first)."""
        return set(self._state.steps) if self._unsaved is None else set(self._unsaved)

    def mark_saved(self) -> None:
        """The caller saved every step record: from now on only changed ones are reported."""
        self._unsaved = set()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """All or nothing: an exception undoes every change the event or decision made."""
        try:
            with transaction(self._state) as journal:
                yield
        except BaseException:
            self._index.rebuild(self._state.steps)
            raise
        if self._unsaved is not None:
            self._unsaved.update(
                self._sid_of[id(target)] for target, _, _ in journal if id(target) in self._sid_of
            )

    # ------------------------------------------------------------------ event handlers

    def _on_run_started(self, event: RunStarted) -> None:
        if self._state.status is not RunStatus.PENDING:
            raise ConductorError(f"the run of {self.runbook.ref} has already started")
        self._state.started_at = event.at
        self._move_run(RunEvent.START)

    def _on_step_started(self, event: StepStarted) -> None:
        self._require_started(event)
        step, rec = self._step(event.step_id), self._state.steps[event.step_id]
        if step.is_approval:
            raise ConductorError(
                f"approval step '{step.id}' is not started by the engine: "
                "it waits for approvers once it is ready"
            )
        if self._unknown():
            raise ConductorError(
                f"step '{step.id}' cannot start: the run waits for an operator to resolve "
                + ", ".join(self._unknown()),
                hint="runbook resolve <run> <step> --succeeded|--failed",
            )
        if not self.startable(step.id):
            not_ready = "" if rec.ready else " and not ready (its needs or guard do not allow it)"
            raise ConductorError(
                f"step '{step.id}' cannot start: it is {rec.status.value}{not_ready}; "
                f"the run is {self._state.mode.value.replace('_', ' ')}",
                hint="start only the steps the last decision listed in start or retry",
            )
        if event.attempt != rec.attempts + 1:
            raise ConductorError(
                f"step '{step.id}': attempt {event.attempt} does not follow attempt "
                f"{rec.attempts}; the next attempt is {rec.attempts + 1}"
            )
        self._move(step.id, StepEvent.START, reason=None)
        rec.attempts += 1
        rec.retry_delay = rec.retry_at = None
        rec.retry_issued = rec.timed_out = False
        if rec.started_at is None:
            rec.started_at = event.at

    def _on_step_finished(self, event: StepFinished) -> None:
        self._require_started(event)
        step, rec = self._step(event.step_id), self._state.steps[event.step_id]
        if rec.status is not StepStatus.RUNNING:
            raise ConductorError(
                f"step '{step.id}' is {rec.status.value}, not running: its finish is refused",
                hint="the event is stale or duplicated; check the engine's event log",
            )
        rec.outputs = plain(event.outputs, f"outputs of step '{step.id}'")
        rec.hosts = plain(event.hosts, f"hosts of step '{step.id}'")
        rec.result = plain(event.result, f"result of step '{step.id}'")
        rec.error, rec.timed_out = event.error, event.timed_out
        if event.ok:
            self._move(step.id, StepEvent.SUCCEED, reason=None)
        elif event.cancelled and rec.cancel_requested:
            self._move(step.id, StepEvent.CANCEL, reason=f"cut off: {self._mode_text()}")
        elif not event.cancelled and self._can_retry(step, rec):
            delay = step.retries.delay if step.retries else 0.0
            why = _attempt_failure(event, rec.attempts)
            self._move(step.id, StepEvent.RETRY, reason=f"{why}; retry in {delay:g}s")
            rec.retry_delay, rec.retry_at = delay, event.at + delay
        else:
            self._fail(step.id, _attempt_failure(event, rec.attempts))

    def _on_approval(self, event: ApprovalDecision) -> None:
        step, rec = self._waiting_approval(event)
        rec.approvals = [  # replaced, not appended to: the journal undoes assignments
            *rec.approvals,
            {"approver": event.approver, "approve": event.approve, "at": event.at}
            | ({"reason": event.reason} if event.reason else {}),
        ]
        if not event.approve:
            suffix = f": {event.reason}" if event.reason else ""
            self._fail(step.id, f"denied by {event.approver}{suffix}")
            return
        approvers = _approvers(rec)
        if len(approvers) >= _quorum(step):
            self._move(step.id, StepEvent.SUCCEED, reason="approved by " + ", ".join(approvers))

    def _on_approval_expired(self, event: ApprovalExpired) -> None:
        step, rec = self._waiting_approval(event)
        rec.approvals = [*rec.approvals, {"approver": "timeout", "approve": False, "at": event.at}]
        self._fail(
            step.id,
            f"denied by timeout: {len(_approvers(rec))} of {_quorum(step)} approval(s) "
            "before the approval expired",
        )

    def _on_rollback_finished(self, event: RollbackFinished) -> None:
        self._require_started(event)
        item = saga.head(self._state)
        if item is None or (item.step, item.index) != (event.step_id, event.index):
            due = "no rollback is due" if item is None else f"the due one is {item.step}"
            raise ConductorError(
                f"rollback {event.step_id}[{event.index}] was not handed out: "
                f"{due}{'' if item is None else f'[{item.index}]'}",
                hint="run rollbacks one at a time, as the decisions hand them out",
            )
        if item.status is not SagaStatus.RUNNING:
            raise ConductorError(
                f"rollback {item.step}[{item.index}] is {item.status.value}, not running",
                hint="an unknown rollback is settled with RollbackResolved",
            )
        self._move_saga(item, StepEvent.SUCCEED if event.ok else StepEvent.FAIL)
        item.error = None if event.ok else (event.error or "rollback action failed")
        item.finished_at = event.at

    def _on_rollback_resolved(self, event: RollbackResolved) -> None:
        self._require_started(event)
        item, wanted = saga.head(self._state), (event.step_id, event.index)
        if (
            item is None
            or item.status is not SagaStatus.UNKNOWN
            or (item.step, item.index) != wanted
        ):
            raise ConductorError(
                f"rollback {event.step_id}[{event.index}] is not waiting for an operator's decision"
            )
        self._move_saga(item, StepEvent.SUCCEED if event.succeeded else StepEvent.FAIL)
        item.resolved_by, item.finished_at = event.actor, event.at
        if not event.succeeded:
            item.error = f"resolved as failed by {event.actor}"

    def _on_kill(self, event: KillRequested) -> None:
        if self._state.stop is None:
            self._state.stop = {
                "kind": "kill",
                "actor": event.actor,
                "reason": event.reason,
                "at": event.at,
            }
        self._signal(Signal.KILL)

    def _on_run_timed_out(self, event: RunTimedOut) -> None:
        self._require_started(event)
        if self._state.stop is None:
            self._state.stop = {"kind": "timeout", "actor": None, "reason": None, "at": event.at}
        self._signal(Signal.TIMEOUT)

    def _on_restarted(self, event: ProcessRestarted) -> None:
        stopping = self._state.mode in STOPPING
        for sid in self._with_status(StepStatus.RUNNING):
            rec = self._move(sid, StepEvent.CRASH, reason="in flight when the executor stopped")
            rec.was_unknown = True
            if stopping:  # it was being cut off anyway: nothing is left to decide
                self._move(sid, StepEvent.CANCEL, reason=f"cut off: {self._mode_text()}")
        for rec in self._state.steps.values():
            rec.retry_issued = False  # the timer died with the process: hand it out again
        item = saga.head(self._state)
        if item is not None and item.status is SagaStatus.RUNNING:
            self._move_saga(item, StepEvent.CRASH)

    def _on_resolved(self, event: StepResolved) -> None:
        self._require_started(event)
        step, rec = self._step(event.step_id), self._state.steps[event.step_id]
        if rec.status is not StepStatus.UNKNOWN:
            raise ConductorError(
                f"step '{step.id}' is {rec.status.value}: only an unknown step can be resolved"
            )
        rec.resolved_by = event.actor
        if event.succeeded:
            self._move(step.id, StepEvent.SUCCEED, reason=f"resolved as succeeded by {event.actor}")
        else:
            self._fail(step.id, f"resolved as failed by {event.actor}")

    _HANDLERS: ClassVar[dict[type, Callable[[Conductor, Any], None]]] = {
        RunStarted: _on_run_started,
        StepStarted: _on_step_started,
        StepFinished: _on_step_finished,
        ApprovalDecision: _on_approval,
        ApprovalExpired: _on_approval_expired,
        RollbackFinished: _on_rollback_finished,
        RollbackResolved: _on_rollback_resolved,
        KillRequested: _on_kill,
        RunTimedOut: _on_run_timed_out,
        ProcessRestarted: _on_restarted,
        StepResolved: _on_resolved,
    }
    # ------------------------------------------------------------------ advancing the graph

    def _advance(self, evaluate_guard: GuardEvaluator, scope: Mapping[str, Any]) -> bool:
        """One pass in run order over undecided steps; True if anything changed.

        Only steps whose verdict may have changed are visited (see ``StepIndex``);
        the others would be found waiting, as before.
        """
        changed = False
        index = self._index
        index.begin_pass()
        try:
            while (sid := index.next_in_pass(self._order)) is not None:
                changed = self._decide(sid, evaluate_guard, scope) or changed
        finally:
            index.end_pass()
        return changed

    def _decide(self, sid: str, evaluate_guard: GuardEvaluator, scope: Mapping[str, Any]) -> bool:
        step, rec = self._steps[sid], self._state.steps[sid]
        if rec.status is not StepStatus.PENDING or rec.ready or rec.retry_pending:
            return False
        kind, reason = self._verdict(step)
        if kind == "wait":
            return False
        if kind == "skip":
            self._move(sid, StepEvent.SKIP, reason=reason)
        elif self._guard_allows(step, evaluate_guard, scope):
            if step.is_approval:
                self._move(sid, StepEvent.WAIT, reason=None)
                rec.started_at = self._state.now
            else:
                rec.ready = True
                self._index.ready.add(sid)
        return True

    def _guard_allows(
        self, step: Step, evaluate_guard: GuardEvaluator, scope: Mapping[str, Any]
    ) -> bool:
        """Evaluate ``when``: false skips the step, an error fails it (on_failure applies)."""
        if step.when is None:
            return True
        try:
            allowed = bool(evaluate_guard(step, self.context(**scope)))
        except Exception as exc:  # the engine's evaluator: any error fails this step only
            self._state.steps[step.id].error = str(exc)
            self._fail(step.id, f"guard raised: {exc}")
            return False
        if not allowed:
            self._move(step.id, StepEvent.SKIP, reason=f"guard false: {step.when}")
        return allowed

    # ------------------------------------------------------------------ settling the run

    def _settle(self) -> bool:
        """Plan the saga when due, end the run when all is done, else RUNNING or WAITING.

        True when it planned the saga, which may let `always` steps go on.
        """
        st = self._state
        planned = st.mode is Mode.ROLLING_BACK and st.saga is None and not self._in_flight()
        if planned:
            st.saga = saga.plan(st, self._steps, self._order)
            self._index.touch_all()
        if self._finished():
            st.reason = self._final_reason()
            st.finished_at = st.now
            self._move_run(FINAL_EVENT[(st.mode, saga.clean(st))])
        elif st.status in _LIVE:
            self._move_run(RunEvent.BLOCK if self._blocked() else RunEvent.UNBLOCK)
        return planned

    def _finished(self) -> bool:
        st = self._state
        if st.status.terminal or (st.status is RunStatus.PENDING and st.mode is Mode.NORMAL):
            return False
        if self._index.count(*_NOT_TERMINAL):
            return False
        return st.mode is not Mode.ROLLING_BACK or saga.done(st)

    def _final_reason(self) -> str | None:
        st = self._state
        if st.mode is Mode.NORMAL:
            if not st.tolerated:
                return None
            noun = "failure" if len(st.tolerated) == 1 else "failures"
            return (
                f"succeeded with {len(st.tolerated)} tolerated {noun} ({', '.join(st.tolerated)})"
            )
        if st.mode in STOPPING:
            return self._mode_text()
        text = f"step '{st.cause}': {st.steps[st.cause].reason}" if st.cause else "a step failed"
        if st.mode is Mode.ABORTING:
            return text
        total, bad = len(st.saga or ()), saga.failures(st)
        if not bad:
            return f"{text}; rolled back {total} action(s)"
        return f"{text}; {len(bad)} of {total} rollback action(s) failed ({'; '.join(bad)})"

    def _blocked(self) -> bool:
        """True when nothing can move except approvals or an operator's decision."""
        st = self._state
        head = saga.head(st)
        if self._unknown() or (head is not None and head.status is SagaStatus.UNKNOWN):
            return True
        if head is not None or self._index.count(StepStatus.RUNNING):
            return False
        for sid in self._index.ready:
            rec = st.steps[sid]
            if rec.status is StepStatus.PENDING and rec.ready and self._may_start(self._steps[sid]):
                return False
        for sid in self._index.undecided_candidates():  # the others wait for their needs
            rec = st.steps[sid]
            if rec.status is not StepStatus.PENDING:
                continue
            if rec.ready or rec.retry_pending:
                if self._may_start(self._steps[sid]):
                    return False
            elif self._verdict(self._steps[sid]) != WAIT:
                return False
        return bool(self.waiting_approvals())

    def _decision(self) -> Decision:
        """Hand out what to do; marks retries as issued and the rollback as running."""
        st = self._state
        moving = st.status in _LIVE and not self._unknown()
        start: list[str] = []
        retry: list[tuple[str, float]] = []
        for sid in self._index.in_order(self._index.ready) if moving else ():
            rec = st.steps[sid]
            if rec.status is not StepStatus.PENDING or not rec.ready:
                continue
            if not self._may_start(self._steps[sid]):
                continue
            if rec.retry_delay is None:
                start.append(sid)
            elif not rec.retry_issued:
                now = st.now if st.now is not None else rec.retry_at
                retry.append((sid, max(0.0, (rec.retry_at or 0.0) - (now or 0.0))))
                rec.retry_issued = True
        rollback: tuple[tuple[str, int], ...] = ()
        head = saga.head(st)
        if moving and head is not None and head.status is SagaStatus.PENDING:
            self._move_saga(head, StepEvent.START)
            head.started_at = st.now
            rollback = ((head.step, head.index),)
        changes = tuple(st.history[st.reported :])
        st.reported = len(st.history)
        return Decision(
            run_status=st.status,
            done=st.status.terminal,
            start=tuple(start),
            retry=tuple(retry),
            approvals=tuple(t.step for t in changes if t.step and t.to == StepStatus.WAITING),
            skipped=self._reasons(changes, StepStatus.SKIPPED),
            failed=self._reasons(changes, StepStatus.FAILED),
            cancel=tuple(
                sid
                for sid in self._with_status(StepStatus.RUNNING)
                if st.steps[sid].cancel_requested
            ),
            rollback=rollback,
            changes=changes,
        )

    def _reasons(
        self, changes: tuple[Transition, ...], status: StepStatus
    ) -> tuple[tuple[str, str], ...]:
        return tuple(
            (t.step, self._state.steps[t.step].reason or "")
            for t in changes
            if t.step and t.to == status
        )

    def _waiting_approval(
        self, event: ApprovalDecision | ApprovalExpired
    ) -> tuple[Step, StepRecord]:
        self._require_started(event)
        step, rec = self._step(event.step_id), self._state.steps[event.step_id]
        if not step.is_approval or rec.status is not StepStatus.WAITING:
            what = "approval step" if step.is_approval else f"{step.kind} step"
            raise ConductorError(
                f"{what} '{step.id}' is {rec.status.value}, not waiting for approval",
                hint="only an approval step that is waiting accepts approvals",
            )
        return step, rec


def _attempt_failure(event: StepFinished, attempt: int) -> str:
    if event.timed_out:
        what = "timed out"
    elif event.cancelled:
        what = "cut off without a kill or rollback"
    else:
        what = "failed"
    return f"attempt {attempt} {what}" + (f": {event.error}" if event.error else "")


def _approvers(rec: StepRecord) -> list[str]:
    """Distinct approvers who said yes, in the order they first did."""
    return list(dict.fromkeys(a["approver"] for a in rec.approvals if a["approve"]))


def _quorum(step: Step) -> int:
    return max(1, int(getattr(step.action, "quorum", 1)))
