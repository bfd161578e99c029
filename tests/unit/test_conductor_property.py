"""Property test: random DAGs, random outcomes, random kills and crashes.

Whatever happens, every run ends with every step terminal; no step starts
before its needs are terminal, after it succeeded, or more often than its
retries allow; the final status agrees with the step outcomes; and the state
saved after every move reads back equal (the run continues from that copy).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from executor.conductor import (
    ApprovalDecision,
    ApprovalExpired,
    Conductor,
    ConductorState,
    KillRequested,
    ProcessRestarted,
    RollbackFinished,
    RollbackResolved,
    RunStarted,
    RunTimedOut,
    SagaStatus,
    StepFinished,
    StepResolved,
    StepStarted,
)
from executor.model import Runbook, RunStatus, Step, StepStatus


def guard(step: Step, context: dict[str, Any]) -> bool:
    if step.when == "raise":
        raise ValueError("guard exploded")
    return step.when == "true"


@st.composite
def runbooks(draw: st.DrawFn) -> Runbook:
    steps = []
    for i in range(draw(st.integers(1, 7))):
        earlier = [f"s{j}" for j in range(i)]
        needs = draw(st.lists(st.sampled_from(earlier), unique=True, max_size=3)) if i else []
        body: dict[str, Any] = {
            "id": f"s{i}",
            "needs": needs,
            "trigger": draw(st.sampled_from(["all_succeeded", "any_succeeded", "always"])),
            "on_failure": draw(st.sampled_from(["abort", "continue", "rollback"])),
        }
        when = draw(st.sampled_from([None, None, "true", "false", "raise"]))
        if when:
            body["when"] = when
        if draw(st.integers(0, 4)) == 0:
            quorum = draw(st.integers(1, 2))
            body["approval"] = {"message": "ok?", "approvers": ["ops"], "quorum": quorum}
        else:
            body["local"] = {"command": "true"}
            retries = draw(st.integers(0, 2))
            if retries:
                body["retries"] = {"count": retries, "delay": "1s"}
            body["rollback"] = [{"local": {"command": "undo"}}] * draw(st.integers(0, 2))
        steps.append(body)
    data = {"metadata": {"name": "prop", "version": "1.0.0"}, "steps": steps}
    return Runbook.from_mapping(data)


class Driver:
    """Plays the engine: acts only on what the conductor hands out."""

    def __init__(self, runbook: Runbook, data: st.DataObject) -> None:
        self.book, self.data = runbook, data
        self.cond = Conductor(runbook)
        self.t = 0.0
        self.starts: dict[str, int] = {}
        self.retries: set[str] = set()
        self.rollback: tuple[str, int] | None = None
        self.stops = 0
        self.crashes = 0

    def at(self) -> float:
        self.t += 1.0
        return self.t

    def roundtrip(self) -> None:
        text = self.cond.state.to_json()
        back = ConductorState.from_json(text)
        assert back == self.cond.state
        self.cond = Conductor(self.book, back)

    def start(self, sid: str) -> None:
        rec, step = self.cond.state.steps[sid], self.book.step(sid)
        assert rec.status is StepStatus.PENDING, f"{sid} offered while {rec.status}"
        for need in step.needs:
            assert self.cond.state.steps[need].status.terminal, f"{sid} before {need} finished"
        self.starts[sid] = self.starts.get(sid, 0) + 1
        allowed = 1 + (step.retries.count if step.retries else 0)
        assert self.starts[sid] <= allowed, f"{sid} started {self.starts[sid]} times"
        self.cond.handle(StepStarted(sid, rec.attempts + 1, at=self.at()))

    def finish(self, sid: str, cancel_asked: bool) -> None:
        outcomes = ["ok", "fail", "timeout"] + (["cut", "cut"] if cancel_asked else [])
        outcome = self.data.draw(st.sampled_from(outcomes))
        self.cond.handle(
            StepFinished(
                sid,
                ok=outcome == "ok",
                at=self.at(),
                hosts={"h1": {"rc": 0 if outcome == "ok" else 1}},
                timed_out=outcome == "timeout",
                cancelled=outcome == "cut",
                error=None if outcome == "ok" else outcome,
            )
        )

    def moves(self, cancel: tuple[str, ...], start: tuple[str, ...]) -> list[tuple[Any, ...]]:
        st_ = self.cond.state
        self.retries = {s for s in self.retries if self.cond.startable(s)}
        found: list[tuple[Any, ...]] = [("start", s) for s in (*start, *sorted(self.retries))]
        for sid, rec in st_.steps.items():
            if rec.status is StepStatus.RUNNING:
                found.append(("finish", sid, sid in cancel))
            elif rec.status is StepStatus.WAITING:
                found += [("approve", sid, "alice"), ("approve", sid, "bob"), ("deny", sid)]
                found.append(("expire", sid))
            elif rec.status is StepStatus.UNKNOWN:
                found += [("resolve", sid, True), ("resolve", sid, False)]
        head = next((i for i in st_.saga or () if not i.status.terminal), None)
        if head is not None and head.status is SagaStatus.RUNNING:
            assert self.rollback == (head.step, head.index)
            found += [("rb", head.step, head.index, True), ("rb", head.step, head.index, False)]
        if head is not None and head.status is SagaStatus.UNKNOWN:
            found.append(("rb_resolve", head.step, head.index))
        if found and self.stops == 0:
            found += [("kill",), ("timeout",)]
        if found and self.crashes < 2:
            found.append(("crash",))
        return found

    def play(self, move: tuple[Any, ...]) -> None:
        kind, args = move[0], move[1:]
        at = self.at()
        if kind == "start":
            self.retries.discard(args[0])
            self.start(args[0])
        elif kind == "finish":
            self.finish(args[0], args[1])
        elif kind == "approve":
            self.cond.handle(ApprovalDecision(args[0], args[1], approve=True, at=at))
        elif kind == "deny":
            self.cond.handle(ApprovalDecision(args[0], "carol", approve=False, at=at))
        elif kind == "expire":
            self.cond.handle(ApprovalExpired(args[0], at=at))
        elif kind == "resolve":
            self.cond.handle(StepResolved(args[0], args[1], actor="op", at=at))
        elif kind == "rb":
            self.cond.handle(RollbackFinished(args[0], args[1], ok=args[2], at=at))
        elif kind == "rb_resolve":
            self.cond.handle(RollbackResolved(args[0], args[1], True, actor="op", at=at))
        elif kind == "kill":
            self.stops += 1
            self.cond.handle(KillRequested(reason="test", actor="alice", at=at))
        elif kind == "timeout":
            self.stops += 1
            self.cond.handle(RunTimedOut(at=at))
        elif kind == "crash":
            self.crashes += 1
            self.cond.handle(ProcessRestarted(at=at))


def check_end(cond: Conductor, stopped: bool) -> None:
    st_ = cond.state
    assert st_.status.terminal
    assert all(rec.status.terminal for rec in st_.steps.values()), st_.steps
    failed = {sid for sid, rec in st_.steps.items() if rec.status is StepStatus.FAILED}
    if st_.status is RunStatus.SUCCEEDED:
        assert failed <= set(st_.tolerated)
    if st_.status is RunStatus.ROLLED_BACK:
        assert all(i.status is SagaStatus.SUCCEEDED for i in st_.saga or ())
    if st_.status is RunStatus.CANCELLED:
        assert stopped
    for sid, rec in st_.steps.items():
        if rec.status is StepStatus.SUCCEEDED and not cond.runbook.step(sid).is_approval:
            assert rec.attempts >= 1 or rec.resolved_by


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runbook=runbooks(), data=st.data())
def test_any_run_ends_with_every_step_terminal(runbook: Runbook, data: st.DataObject) -> None:
    driver = Driver(runbook, data)
    driver.cond.handle(RunStarted(at=driver.at()))
    for _ in range(300):
        decision = driver.cond.next(guard)
        driver.roundtrip()
        if decision.rollback:
            driver.rollback = decision.rollback[0]
        driver.retries |= {sid for sid, _ in decision.retry}
        if driver.stops:
            assert decision.start == () and decision.retry == () and decision.rollback == ()
        if decision.done:
            break
        moves = driver.moves(decision.cancel, decision.start)
        assert moves, f"stuck: run {decision.run_status} with nothing to do: {driver.cond.state}"
        driver.play(data.draw(st.sampled_from(moves)))
        driver.roundtrip()
    else:
        raise AssertionError("the run did not end within 300 moves")
    check_end(driver.cond, stopped=driver.stops > 0)
