"""The conductor's state machine proper: the tables applied to one run's state.

``Machine`` knows how a step, a rollback action and the run move (only along
rows of ``tables``), what a failure does to the run, and who may still start.
``Conductor`` builds the public protocol (events in, decisions out) on top.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from executor.conductor import saga
from executor.conductor.events import Event
from executor.conductor.index import StepIndex
from executor.conductor.state import (
    ConductorError,
    ConductorState,
    SagaItem,
    StepRecord,
    Transition,
)
from executor.conductor.tables import (
    FAILURE_SIGNAL,
    MAY_START,
    MODE_TRANSITIONS,
    READINESS,
    READY,
    RUN_TRANSITIONS,
    SAGA_TRANSITIONS,
    STEP_TRANSITIONS,
    WAIT,
    Mode,
    RunEvent,
    SagaStatus,
    Signal,
    StepEvent,
    Verdict,
)
from executor.graph import Graph
from executor.model import OnFailure, Runbook, RunStatus, Step, StepStatus, Trigger


class Machine:
    """One run's state plus the rules that move it; no I/O, no clock."""

    def __init__(self, runbook: Runbook, state: ConductorState | None = None) -> None:
        self.runbook = runbook
        self.graph = _checked_graph(runbook)
        self._order = self.graph.topological
        self._steps = {s.id: s for s in runbook.steps}
        if state is None:
            state = ConductorState.new(runbook.ref, runbook.sha256, runbook.step_ids)
        else:
            _check_belongs(state, runbook)
        self._state = state
        self._index = StepIndex(self._order, self._steps)
        self._index.rebuild(state.steps)

    # ------------------------------------------------------------------ failure and modes

    def _fail(self, step_id: str, reason: str) -> None:
        """A step failed for good: record it, then let its on_failure move the run."""
        step = self._steps[step_id]
        rec = self._move(step_id, StepEvent.FAIL, reason=reason)
        rec.error = rec.error or reason
        if step.on_failure is OnFailure.CONTINUE:
            self._state.tolerated.append(step_id)
        elif self._state.cause is None:
            self._state.cause = step_id
        self._signal(FAILURE_SIGNAL[step.on_failure.value], cause=step_id)

    def _signal(self, signal: Signal, cause: str | None = None) -> None:
        old = self._state.mode
        new = MODE_TRANSITIONS[(old, signal)]
        if new is old:
            return
        self._state.mode = new
        self._index.touch_all()
        if cause is not None and new is Mode.ROLLING_BACK:
            self._state.cause = cause  # the step whose own rollback runs first
        self._ENTER[new](self)

    def _enter_winding_down(self) -> None:
        """Aborting or rolling back: only `always` steps may still start."""
        text = self._mode_text()
        abandoned = []
        for sid in self._order:
            step, rec = self._steps[sid], self._state.steps[sid]
            if self._state.mode is Mode.ROLLING_BACK and rec.status is StepStatus.RUNNING:
                rec.cancel_requested = True
            if step.trigger is Trigger.ALWAYS:
                continue
            if rec.retry_pending:
                abandoned.append(sid)
            elif rec.status is StepStatus.PENDING:
                self._move(sid, StepEvent.SKIP, reason=f"not started: {text}")
            elif rec.status is StepStatus.WAITING:
                self._move(sid, StepEvent.CANCEL, reason=f"approval withdrawn: {text}")
        for sid in abandoned:  # their own on_failure still applies (it may ask for rollback)
            rec = self._state.steps[sid]
            if rec.retry_pending:
                last = (rec.reason or "").rsplit("; retry in", 1)[0]
                self._fail(sid, f"{last}; not retried: {text}")

    def _enter_stopping(self) -> None:
        """Kill or run timeout: cancel everything pending, cut off what is in flight."""
        text = self._mode_text()
        for sid in self._order:
            rec = self._state.steps[sid]
            if rec.status is StepStatus.RUNNING:
                rec.cancel_requested = True
            elif rec.status is StepStatus.PENDING:
                self._move(sid, StepEvent.CANCEL, reason=f"not started: {text}")
            elif rec.status is StepStatus.WAITING:
                self._move(sid, StepEvent.CANCEL, reason=f"approval withdrawn: {text}")
            elif rec.status is StepStatus.UNKNOWN:
                self._move(sid, StepEvent.CANCEL, reason=f"{text} while its outcome was unknown")
        for item in self._state.saga or ():  # a rollback in flight finishes; the rest never runs
            if item.status in (SagaStatus.PENDING, SagaStatus.UNKNOWN):
                self._move_saga(item, StepEvent.CANCEL)

    _ENTER: ClassVar[dict[Mode, Callable[[Machine], None]]] = {
        Mode.ABORTING: _enter_winding_down,
        Mode.ROLLING_BACK: _enter_winding_down,
        Mode.KILLING: _enter_stopping,
        Mode.TIMING_OUT: _enter_stopping,
    }

    def _mode_text(self) -> str:
        st = self._state
        if st.mode is Mode.KILLING and st.stop:
            return f"killed by {st.stop['actor']}: {st.stop['reason']}"
        texts = {
            Mode.TIMING_OUT: "run timed out",
            Mode.ROLLING_BACK: f"run rolling back after step '{st.cause}' failed",
            Mode.ABORTING: f"run aborted after step '{st.cause}' failed",
        }
        return texts.get(st.mode, "run running")

    def _may_start(self, step: Step) -> bool:
        mode = self._state.mode
        if step.trigger not in MAY_START[mode]:
            return False
        return mode is not Mode.ROLLING_BACK or saga.done(self._state)

    def _can_retry(self, step: Step, rec: StepRecord) -> bool:
        return (
            step.retries is not None
            and rec.attempts <= step.retries.count
            and not rec.cancel_requested
            and self._may_start(step)
        )

    def _verdict(self, step: Step) -> Verdict:
        mode = self._state.mode
        if step.trigger not in MAY_START[mode]:
            return ("skip", f"not started: {self._mode_text()}")
        if mode is Mode.ROLLING_BACK and not saga.done(self._state):
            return WAIT
        needs = [(n, self._state.steps[n].status) for n in step.needs]
        return READINESS[step.trigger](needs) if needs else READY

    # ------------------------------------------------------------------ moving through tables

    def _move(self, step_id: str, event: StepEvent, *, reason: str | None) -> StepRecord:
        rec = self._state.steps[step_id]
        new = STEP_TRANSITIONS.get((rec.status, event))
        if new is None:
            raise ConductorError(
                f"step '{step_id}' is {rec.status.value}: it cannot {event.value} "
                "(a conductor bug; please report it with the saved run state)"
            )
        self._state.history.append(
            Transition(self._state.now, step_id, rec.status.value, new.value)
        )
        old = rec.status
        rec.status, rec.reason = new, reason
        self._index.moved(step_id, old, new)
        if new.terminal:
            rec.ready = False
            rec.finished_at, rec.finished_seq = self._state.now, self._state.seq
        return rec

    def _move_saga(self, item: SagaItem, event: StepEvent) -> None:
        new = SAGA_TRANSITIONS.get((item.status, event))
        if new is None:
            raise ConductorError(
                f"rollback {item.step}[{item.index}] is {item.status.value}: "
                f"it cannot {event.value}"
            )
        item.status = new
        self._index.touch_all()  # the saga being done lets `always` steps go on

    def _move_run(self, event: RunEvent) -> None:
        st = self._state
        new = RUN_TRANSITIONS.get((st.status, event))
        if new is None:
            raise ConductorError(f"the run is {st.status.value}: it cannot {event.value}")
        if new is not st.status:
            st.history.append(Transition(st.now, None, st.status.value, new.value))
            st.status = new

    # ------------------------------------------------------------------ small helpers

    def _require_started(self, event: Event) -> None:
        if self._state.status is RunStatus.PENDING:
            raise ConductorError(
                f"{type(event).__name__} before the run started", hint="send RunStarted first"
            )

    def _step(self, step_id: str) -> Step:
        try:
            return self._steps[step_id]
        except KeyError:
            raise ConductorError(
                f"{self.runbook.ref} has no step '{step_id}'",
                hint="its steps are: " + ", ".join(self._order),
            ) from None

    def _with_status(self, status: StepStatus) -> tuple[str, ...]:
        return self._index.with_status(status)

    def _unknown(self) -> tuple[str, ...]:
        return self._with_status(StepStatus.UNKNOWN)

    def _in_flight(self) -> bool:
        return self._index.count(StepStatus.RUNNING, StepStatus.UNKNOWN) > 0


def plain(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    """A JSON-shaped copy, so the saved state reads back exactly as it was."""
    try:
        return dict(json.loads(json.dumps(dict(value), allow_nan=False)))
    except (TypeError, ValueError) as exc:
        raise ConductorError(
            f"{what} cannot be saved: {exc}",
            hint="pass plain data (strings, numbers, booleans, lists, mappings)",
        ) from exc


def _checked_graph(runbook: Runbook) -> Graph:
    """The runbook's DAG, refusing what validation should have caught."""
    ids = runbook.step_ids
    hint = f"run `runbook validate` on {runbook.source}"
    if len(set(ids)) != len(ids):
        dupes = sorted({s for s in ids if ids.count(s) > 1})
        raise ConductorError(f"{runbook.ref}: duplicate step ids {dupes}", hint=hint)
    for step in runbook.steps:
        for need in step.needs:
            if need not in ids:
                raise ConductorError(
                    f"{runbook.ref}: step '{step.id}' needs '{need}', which is not a step",
                    hint=hint,
                )
    graph = Graph.of(runbook)
    cycle = graph.find_cycle()
    if cycle:
        raise ConductorError(f"{runbook.ref}: steps form a cycle: {' -> '.join(cycle)}", hint=hint)
    return graph


def _check_belongs(state: ConductorState, runbook: Runbook) -> None:
    """A saved run resumes only against the very runbook it started with."""
    same_hash = not (state.sha256 and runbook.sha256) or state.sha256 == runbook.sha256
    if state.runbook != runbook.ref or not same_hash or tuple(state.steps) != runbook.step_ids:
        raise ConductorError(
            f"the saved run is for {state.runbook} (sha256 {state.sha256 or '?'}) but the "
            f"runbook given is {runbook.ref} (sha256 {runbook.sha256 or '?'})",
            hint=f"resume with the runbook version the run started with: {state.runbook}",
        )
