"""The conductor, tested as data: tiny runbooks, event scripts, expected outcomes.

Each scenario is a runbook built from small dicts, a script of events and
checkpoints, and the expected end. The interpreter below applies the script,
asks ``next()`` after every event, and after every event and every decision
saves the state to JSON, checks it reads back equal, and carries on with a
conductor rebuilt from that JSON: every scenario is also a crash-resume test.
"""

from __future__ import annotations

from typing import Any

import pytest
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from executor.conductor import (
    ApprovalDecision,
    ApprovalExpired,
    Conductor,
    ConductorError,
    ConductorState,
    Decision,
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
from executor.conductor.tables import READINESS, RUN_TRANSITIONS, STEP_TRANSITIONS
from executor.model import Runbook, RunStatus, StepStatus, Trigger

# --------------------------------------------------------------------------- building blocks

_JINJA = SandboxedEnvironment(undefined=StrictUndefined)


def guard(step: Any, context: dict[str, Any]) -> bool:
    """A real sandboxed Jinja guard, as the engine's would be (undefined raises)."""
    return bool(_JINJA.compile_expression(step.when)(**context))


def book(*steps: dict[str, Any]) -> Runbook:
    data = {
        "apiVersion": "runbook/v1",
        "kind": "Runbook",
        "metadata": {"name": "t", "version": "1.0.0"},
        "steps": list(steps),
    }
    return Runbook.from_mapping(data, sha256="0" * 64)


def step(sid: str, *needs: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": sid, "local": {"command": f"echo {sid}"}}
    if needs:
        body["needs"] = list(needs)
    if "rb" in extra:
        body["rollback"] = [{"local": {"command": c}} for c in extra.pop("rb")]
    body.update(extra)
    return body


def gate(sid: str, *needs: str, quorum: int = 1, **extra: Any) -> dict[str, Any]:
    body = step(sid, *needs, **extra)
    del body["local"]
    body["approval"] = {"message": "go?", "approvers": ["ops"], "quorum": quorum, "timeout": "15m"}
    return body


RETRY2 = {"count": 2, "delay": "10s"}

# --------------------------------------------------------------------------- the interpreter


class Script:
    """Drives a conductor through a script the way the engine would."""

    def __init__(self, runbook: Runbook, inputs: dict[str, Any] | None = None) -> None:
        self.book = runbook
        self.inputs = inputs or {}
        self.cond = Conductor(runbook)
        self.t = 0.0
        self.decision: Decision | None = None
        self.retries: set[str] = set()
        self.rollback: tuple[str, int] | None = None

    def roundtrip(self) -> None:
        text = self.cond.state.to_json()
        back = ConductorState.from_json(text)
        assert back == self.cond.state
        assert back.to_json() == text
        self.cond = Conductor(self.book, back)

    def decide(self) -> Decision:
        self.decision = self.cond.next(guard, inputs=self.inputs)
        self.roundtrip()
        self.retries |= {sid for sid, _ in self.decision.retry}
        if self.decision.rollback:
            assert len(self.decision.rollback) == 1, "rollbacks are handed out one at a time"
            self.rollback = self.decision.rollback[0]
        return self.decision

    def event(self, op: str, *args: Any) -> Any:
        self.t += 1
        t, rec = self.t, self.cond.state.steps.get(args[0]) if args else None
        events = {
            "start": lambda: RunStarted(at=t),
            "run": lambda: StepStarted(
                args[0], args[1] if len(args) > 1 else (rec.attempts if rec else 0) + 1, at=t
            ),
            "ok": lambda: StepFinished(args[0], ok=True, at=t, **(args[1] if args[1:] else {})),
            "fail": lambda: StepFinished(
                args[0], ok=False, at=t, error=args[1] if args[1:] else "boom"
            ),
            "timeout": lambda: StepFinished(
                args[0], ok=False, at=t, timed_out=True, error="no answer in 5m"
            ),
            "cut": lambda: StepFinished(args[0], ok=False, at=t, cancelled=True, error="cut"),
            "approve": lambda: ApprovalDecision(args[0], args[1], approve=True, at=t),
            "deny": lambda: ApprovalDecision(
                args[0], args[1], approve=False, at=t, reason=args[2] if args[2:] else None
            ),
            "expire": lambda: ApprovalExpired(args[0], at=t),
            "rb_ok": lambda: RollbackFinished(args[0], args[1], ok=True, at=t),
            "rb_fail": lambda: RollbackFinished(args[0], args[1], ok=False, at=t, error=args[2]),
            "rb_resolve": lambda: RollbackResolved(args[0], args[1], args[2], actor="carol", at=t),
            "kill": lambda: KillRequested(reason=args[1], actor=args[0], at=t),
            "run_timeout": lambda: RunTimedOut(at=t),
            "crash": lambda: ProcessRestarted(at=t),
            "resolve": lambda: StepResolved(args[0], args[1], actor="carol", at=t),
        }
        return events[op]()

    def offered(self, op: str, args: tuple[Any, ...]) -> None:
        """The engine only acts on what the conductor handed out."""
        assert self.decision is not None
        if op == "run" and len(args) == 1:
            sid = args[0]
            assert sid in self.decision.start or sid in self.retries, f"{sid} was not offered"
            self.retries.discard(sid)
        if op in ("rb_ok", "rb_fail"):
            assert self.rollback == (args[0], args[1]), f"{args[:2]} was not handed out"

    def apply(self, entry: tuple[Any, ...]) -> None:
        op, *args = entry
        if op == "expect":
            self.check_decision(args[0])
        elif op == "state":
            self.check_state(args[0])
        elif op == "next":
            self.decide()
        elif op == "invalid":
            self.check_invalid(args[0], args[1])
        else:
            if op != "start":
                self.offered(op, tuple(args))
            self.cond.handle(self.event(op, *args))
            self.roundtrip()
            self.decide()

    def check_invalid(self, entry: tuple[Any, ...], fragment: str) -> None:
        before = self.cond.state.to_json()
        with pytest.raises(ConductorError, match=fragment):
            self.cond.handle(self.event(*entry))
        assert self.cond.state.to_json() == before, "a refused event changed the state"

    def check_decision(self, expected: dict[str, Any]) -> None:
        d = self.decision
        assert d is not None
        for key, want in expected.items():
            if key in ("skipped", "failed"):
                got: Any = tuple(sid for sid, _ in getattr(d, key))
            elif key == "run_status":
                got = d.run_status.value
            else:
                got = getattr(d, key)
            assert got == (tuple(want) if isinstance(want, list) else want), (key, d)

    def check_state(self, expected: dict[str, str]) -> None:
        for sid, status in expected.items():
            if sid == "run":
                assert self.cond.state.status.value == status
            else:
                assert self.cond.state.steps[sid].status.value == status, sid


def path(state: ConductorState, sid: str) -> str:
    moves = [t for t in state.history if t.step == sid]
    return ">".join([moves[0].from_, *(t.to for t in moves)]) if moves else "pending"


def check_end(script: Script, expect: dict[str, Any]) -> None:
    st = script.cond.state
    for key, want in expect.items():
        if key == "run":
            assert st.status.value == want
            assert script.decision is not None and script.decision.done is st.status.terminal
        elif key == "steps":
            assert {s: st.steps[s].status.value for s in want} == want
        elif key == "paths":
            assert {s: path(st, s) for s in want} == want
        elif key == "reason":
            assert (st.reason is None) if want is None else (want in (st.reason or "")), st.reason
        elif key == "step_reasons":
            for sid, fragment in want.items():
                assert fragment in (st.steps[sid].reason or ""), (sid, st.steps[sid].reason)
        elif key == "saga":
            got = None if st.saga is None else [(i.step, i.index, i.status.value) for i in st.saga]
            assert got == want
        elif key == "tolerated":
            assert st.tolerated == want
        elif key == "attempts":
            assert {s: st.steps[s].attempts for s in want} == want
        elif key == "touched":
            assert [(t["step"], t["outcome"]) for t in script.cond.touched()] == want
        elif key == "summary":
            assert want in script.cond.summary(), script.cond.summary()
        else:
            raise AssertionError(f"unknown expectation {key}")


# --------------------------------------------------------------------------- the scenarios

S = RunStatus
SCENARIOS: list[dict[str, Any]] = [
    # ---------------------------------------------------------------- graph and triggers
    dict(
        id="linear chain succeeds, one step at a time",
        book=book(step("a"), step("b", "a"), step("c", "b")),
        script=[
            ("expect", {"run_status": "pending", "start": ()}),
            ("start",),
            ("expect", {"start": ("a",), "run_status": "running"}),
            ("run", "a"),
            ("expect", {"start": ()}),
            ("ok", "a"),
            ("expect", {"start": ("b",)}),
            ("run", "b"),
            ("ok", "b"),
            ("run", "c"),
            ("ok", "c"),
            ("expect", {"done": True, "run_status": "succeeded"}),
        ],
        expect={
            "run": "succeeded",
            "reason": None,
            "paths": {s: "pending>running>succeeded" for s in "abc"},
        },
    ),
    dict(
        id="parallel ready steps come together; the engine may start only some",
        book=book(step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c")),
        script=[
            ("start",),
            ("run", "a"),
            ("ok", "a"),
            ("expect", {"start": ("b", "c")}),
            ("run", "b"),
            ("expect", {"start": ("c",)}),
            ("next",),
            ("expect", {"start": ("c",)}),
            ("run", "c"),
            ("ok", "c"),
            ("expect", {"start": ()}),
            ("ok", "b"),
            ("expect", {"start": ("d",)}),
            ("run", "d"),
            ("ok", "d"),
        ],
        expect={"run": "succeeded"},
    ),
    dict(
        id="all_succeeded: a failed need skips the whole branch; continue tolerates it",
        book=book(step("a", on_failure="continue"), step("b", "a"), step("c", "b"), step("x")),
        script=[
            ("start",),
            ("expect", {"start": ("a", "x")}),
            ("run", "a"),
            ("run", "x"),
            ("fail", "a", "disk full"),
            ("expect", {"skipped": ("b", "c"), "failed": ("a",), "start": ()}),
            ("ok", "x"),
        ],
        expect={
            "run": "succeeded",
            "steps": {"a": "failed", "b": "skipped", "c": "skipped", "x": "succeeded"},
            "step_reasons": {"a": "disk full", "b": "need 'a' failed", "c": "need 'b' skipped"},
            "tolerated": ["a"],
            "reason": "succeeded with 1 tolerated failure (a)",
        },
    ),
    dict(
        id="guard false prunes its branch; an always cleanup still runs",
        book=book(
            step("m"),
            step("g", "m", when="steps.m.outputs.percent >= 90"),
            step("h", "g"),
            step("cleanup", "h", trigger="always"),
        ),
        script=[
            ("start",),
            ("run", "m"),
            ("ok", "m", {"outputs": {"percent": 50}}),
            ("expect", {"skipped": ("g", "h"), "start": ("cleanup",)}),
            ("run", "cleanup"),
            ("ok", "cleanup"),
        ],
        expect={
            "run": "succeeded",
            "steps": {"g": "skipped", "h": "skipped", "cleanup": "succeeded"},
            "step_reasons": {"g": "guard false: steps.m.outputs.percent >= 90", "h": "'g'"},
        },
    ),
    dict(
        id="guard true (reading outputs and inputs) lets the step run",
        book=book(step("m"), step("g", "m", when="steps.m.outputs.percent >= inputs.threshold")),
        inputs={"threshold": 90},
        script=[
            ("start",),
            ("run", "m"),
            ("ok", "m", {"outputs": {"percent": 95}}),
            ("expect", {"start": ("g",), "skipped": ()}),
            ("run", "g"),
            ("ok", "g"),
        ],
        expect={"run": "succeeded", "paths": {"g": "pending>running>succeeded"}},
    ),
    dict(
        id="guard raising fails the step; abort lets the in-flight sibling finish",
        book=book(step("m"), step("z"), step("g", "m", when="steps.m.outputs.nope > 1")),
        script=[
            ("start",),
            ("run", "m"),
            ("run", "z"),
            ("ok", "m"),
            ("expect", {"failed": ("g",), "start": (), "cancel": (), "run_status": "running"}),
            ("ok", "z"),
        ],
        expect={
            "run": "failed",
            "steps": {"g": "failed", "z": "succeeded"},
            "paths": {"g": "pending>failed"},
            "step_reasons": {"g": "guard raised: "},
            "reason": "step 'g': guard raised",
        },
    ),
    dict(
        id="guard raising with on_failure continue is tolerated",
        book=book(step("g", when="alert.labels.sev == 1", on_failure="continue"), step("h", "g")),
        script=[("start",), ("expect", {"failed": ("g",), "skipped": ("h",), "done": True})],
        expect={"run": "succeeded", "tolerated": ["g"], "step_reasons": {"g": "guard raised"}},
    ),
    dict(
        id="any_succeeded joins exclusive branches",
        book=book(
            step("m"),
            step("x", "m", when="steps.m.outputs.mode == 'x'"),
            step("y", "m", when="steps.m.outputs.mode == 'y'"),
            step("join", "x", "y", trigger="any_succeeded"),
        ),
        script=[
            ("start",),
            ("run", "m"),
            ("ok", "m", {"outputs": {"mode": "y"}}),
            ("expect", {"skipped": ("x",), "start": ("y",)}),
            ("run", "y"),
            ("ok", "y"),
            ("expect", {"start": ("join",)}),
            ("run", "join"),
            ("ok", "join"),
        ],
        expect={"run": "succeeded", "steps": {"x": "skipped", "join": "succeeded"}},
    ),
    dict(
        id="any_succeeded with no need succeeded is skipped",
        book=book(
            step("x", when="false"),
            step("y", when="false"),
            step("join", "x", "y", trigger="any_succeeded"),
        ),
        script=[("start",), ("expect", {"skipped": ("x", "y", "join"), "done": True})],
        expect={
            "run": "succeeded",
            "step_reasons": {"join": "no need succeeded (x: skipped, y: skipped)"},
        },
    ),
    dict(
        id="any_succeeded with a failed need is skipped, even if another succeeded",
        book=book(
            step("x", on_failure="continue"),
            step("y"),
            step("join", "x", "y", trigger="any_succeeded"),
        ),
        script=[
            ("start",),
            ("run", "x"),
            ("run", "y"),
            ("fail", "x"),
            ("expect", {"skipped": ("join",)}),
            ("ok", "y"),
        ],
        expect={"run": "succeeded", "step_reasons": {"join": "need 'x' failed"}},
    ),
    dict(
        id="any_succeeded waits until every need has finished",
        book=book(step("x"), step("y"), step("join", "x", "y", trigger="any_succeeded")),
        script=[
            ("start",),
            ("run", "x"),
            ("run", "y"),
            ("ok", "x"),
            ("expect", {"start": ()}),
            ("ok", "y"),
            ("expect", {"start": ("join",)}),
            ("run", "join"),
            ("ok", "join"),
        ],
        expect={"run": "succeeded"},
    ),
    dict(
        id="always runs once all needs are terminal, whatever their outcome",
        book=book(
            step("a", on_failure="continue"),
            step("b", when="false"),
            step("c"),
            step("notify", "a", "b", "c", trigger="always"),
        ),
        script=[
            ("start",),
            ("expect", {"start": ("a", "c"), "skipped": ("b",)}),
            ("run", "a"),
            ("run", "c"),
            ("fail", "a"),
            ("expect", {"start": ()}),
            ("ok", "c"),
            ("expect", {"start": ("notify",)}),
            ("run", "notify"),
            ("ok", "notify"),
        ],
        expect={"run": "succeeded", "steps": {"notify": "succeeded"}, "tolerated": ["a"]},
    ),
    # ---------------------------------------------------------------- retries and timeouts
    dict(
        id="retries exhausted: three attempts, then the step fails",
        book=book(step("a", retries=RETRY2), step("b", "a")),
        script=[
            ("start",),
            ("run", "a"),
            ("fail", "a", "exit 1"),
            ("expect", {"retry": (("a", 10.0),), "start": (), "run_status": "running"}),
            ("next",),
            ("expect", {"retry": ()}),  # handed out once
            ("run", "a"),
            ("fail", "a", "exit 1"),
            ("expect", {"retry": (("a", 10.0),)}),
            ("run", "a"),
            ("fail", "a", "exit 2"),
            ("expect", {"retry": (), "failed": ("a",), "skipped": ("b",), "done": True}),
        ],
        expect={
            "run": "failed",
            "attempts": {"a": 3},
            "paths": {"a": "pending>running>pending>running>pending>running>failed"},
            "reason": "step 'a': attempt 3 failed: exit 2",
        },
    ),
    dict(
        id="retry succeeds on the second attempt",
        book=book(step("a", retries=RETRY2), step("b", "a")),
        script=[
            ("start",),
            ("run", "a"),
            ("fail", "a"),
            ("run", "a"),
            ("ok", "a"),
            ("expect", {"start": ("b",)}),
            ("run", "b"),
            ("ok", "b"),
        ],
        expect={"run": "succeeded", "attempts": {"a": 2, "b": 1}},
    ),
    dict(
        id="a timeout is a failure like any other: retried, then failed",
        book=book(step("a", timeout="5m", retries={"count": 1})),
        script=[
            ("start",),
            ("run", "a"),
            ("timeout", "a"),
            ("expect", {"retry": (("a", 0.0),)}),
            ("run", "a"),
            ("timeout", "a"),
        ],
        expect={
            "run": "failed",
            "step_reasons": {"a": "attempt 2 timed out: no answer in 5m"},
            "touched": [("a", "timed out")],
        },
    ),
    # ---------------------------------------------------------------- on_failure
    dict(
        id="abort: no new step, the in-flight sibling finishes, always cleanup runs",
        book=book(
            step("a"),
            step("b"),
            step("c", "a"),
            step("cleanup", "a", "b", "c", trigger="always"),
        ),
        script=[
            ("start",),
            ("run", "a"),
            ("run", "b"),
            ("fail", "a", "boom"),
            ("expect", {"cancel": (), "skipped": ("c",), "start": ()}),
            ("ok", "b"),
            ("expect", {"start": ("cleanup",)}),
            ("run", "cleanup"),
            ("ok", "cleanup"),
        ],
        expect={
            "run": "failed",
            "reason": "step 'a': attempt 1 failed: boom",
            "steps": {"a": "failed", "b": "succeeded", "c": "skipped", "cleanup": "succeeded"},
            "step_reasons": {"c": "not started: run aborted after step 'a' failed"},
        },
    ),
    dict(
        id="abort abandons a step waiting for its retry",
        book=book(step("a", retries={"count": 3, "delay": "30s"}), step("b"), step("c")),
        script=[
            ("start",),
            ("run", "a"),
            ("run", "b"),
            ("run", "c"),
            ("fail", "a", "flaky"),
            ("expect", {"retry": (("a", 30.0),)}),
            ("fail", "b", "broken"),
            ("expect", {"failed": ("b", "a"), "retry": ()}),
            ("invalid", ("run", "a"), "cannot start: it is failed"),
            ("ok", "c"),
        ],
        expect={
            "run": "failed",
            "reason": "step 'b'",
            "steps": {"a": "failed"},
            "step_reasons": {"a": "attempt 1 failed: flaky; not retried: run aborted"},
        },
    ),
    dict(
        id="rollback: cancel in flight, own rollback first, then newest finished first",
        book=book(
            step("a", rb=["a0"]),
            step("b", "a", rb=["b0", "b1"]),
            step("p", "a", rb=["p0"]),
            step("c", "b", on_failure="rollback", rb=["c0"]),
            step("d", "c"),
        ),
        script=[
            ("start",),
            ("run", "a"),
            ("ok", "a"),
            ("expect", {"start": ("b", "p")}),
            ("run", "b"),
            ("run", "p"),
            ("ok", "b"),
            ("run", "c"),
            ("fail", "c", "oom"),
            ("expect", {"cancel": ("p",), "rollback": (), "skipped": ("d",)}),
            ("cut", "p"),
            ("expect", {"cancel": (), "rollback": (("c", 0),)}),
            ("next",),
            ("expect", {"rollback": ()}),  # handed out once: it is running now
            ("rb_ok", "c", 0),
            ("expect", {"rollback": (("b", 0),)}),
            ("rb_ok", "b", 0),
            ("expect", {"rollback": (("b", 1),)}),
            ("rb_ok", "b", 1),
            ("expect", {"rollback": (("a", 0),)}),
            ("rb_ok", "a", 0),
            ("expect", {"done": True, "run_status": "rolled_back"}),
        ],
        expect={
            "run": "rolled_back",
            "steps": {"p": "cancelled", "c": "failed", "d": "skipped"},
            "saga": [
                ("c", 0, "succeeded"),
                ("b", 0, "succeeded"),
                ("b", 1, "succeeded"),
                ("a", 0, "succeeded"),
            ],
            "reason": "step 'c': attempt 1 failed: oom; rolled back 4 action(s)",
        },
    ),
    dict(
        id="rollback: the saga goes on past a failed action and the run fails",
        book=book(
            step("a", rb=["a0"]),
            step("b", "a", rb=["b0", "b1"]),
            step("c", "b", on_failure="rollback"),
        ),
        script=[
            ("start",),
            ("run", "a"),
            ("ok", "a"),
            ("run", "b"),
            ("ok", "b"),
            ("run", "c"),
            ("fail", "c"),
            ("expect", {"rollback": (("b", 0),), "cancel": ()}),
            ("rb_fail", "b", 0, "permission denied"),
            ("expect", {"rollback": (("b", 1),)}),
            ("rb_ok", "b", 1),
            ("rb_ok", "a", 0),
        ],
        expect={
            "run": "failed",
            "saga": [("b", 0, "failed"), ("b", 1, "succeeded"), ("a", 0, "succeeded")],
            "reason": "1 of 3 rollback action(s) failed (b[0]: permission denied)",
        },
    ),
    dict(
        id="rollback: a step that finishes ok after the cancel is rolled back too",
        book=book(
            step("a", rb=["a0"]),
            step("p", rb=["p0"]),
            step("c", "a", on_failure="rollback", rb=["c0"]),
        ),
        script=[
            ("start",),
            ("run", "a"),
            ("run", "p"),
            ("ok", "a"),
            ("run", "c"),
            ("fail", "c"),
            ("expect", {"cancel": ("p",)}),
            ("ok", "p"),
            ("expect", {"rollback": (("c", 0),)}),
            ("rb_ok", "c", 0),
            ("rb_ok", "p", 0),
            ("rb_ok", "a", 0),
        ],
        expect={
            "run": "rolled_back",
            "steps": {"p": "succeeded"},
            "saga": [("c", 0, "succeeded"), ("p", 0, "succeeded"), ("a", 0, "succeeded")],
        },
    ),
    dict(
        id="rollback: an always step waits for the saga, then runs",
        book=book(
            step("a", rb=["a0"]),
            step("c", "a", on_failure="rollback"),
            step("notify", "c", trigger="always"),
        ),
        script=[
            ("start",),
            ("run", "a"),
            ("ok", "a"),
            ("run", "c"),
            ("fail", "c"),
            ("expect", {"rollback": (("a", 0),), "start": ()}),
            ("rb_ok", "a", 0),
            ("expect", {"start": ("notify",), "rollback": ()}),
            ("run", "notify"),
            ("ok", "notify"),
        ],
        expect={"run": "rolled_back", "steps": {"notify": "succeeded"}},
    ),
    dict(
        id="rollback: nothing to compensate still ends rolled back",
        book=book(step("a"), step("c", "a", on_failure="rollback")),
        script=[("start",), ("run", "a"), ("ok", "a"), ("run", "c"), ("fail", "c")],
        expect={"run": "rolled_back", "saga": [], "reason": "rolled back 0 action(s)"},
    ),
    dict(
        id="rollback escalates an abort already under way",
        book=book(
            step("a", rb=["a0"]),
            step("x"),
            step("y", on_failure="rollback"),
        ),
        script=[
            ("start",),
            ("run", "a"),
            ("run", "x"),
            ("run", "y"),
            ("ok", "a"),
            ("fail", "x"),  # abort: y keeps running
            ("expect", {"cancel": ()}),
            ("fail", "y"),  # y asked for rollback
            ("expect", {"rollback": (("a", 0),)}),
            ("rb_ok", "a", 0),
        ],
        expect={"run": "rolled_back", "reason": "step 'y'"},
    ),
    dict(
        id="rollback in flight at a crash is unknown until an operator decides",
        book=book(step("a", rb=["a0"]), step("c", "a", on_failure="rollback")),
        script=[
            ("start",),
            ("run", "a"),
            ("ok", "a"),
            ("run", "c"),
            ("fail", "c"),
            ("expect", {"rollback": (("a", 0),)}),
            ("crash",),
            ("expect", {"run_status": "waiting", "rollback": ()}),
            ("invalid", ("rb_ok", "a", 0), "is unknown, not running"),
            ("invalid", ("rb_resolve", "c", 0, True), "not waiting for an operator"),
            ("rb_resolve", "a", 0, True),
        ],
        expect={"run": "rolled_back", "saga": [("a", 0, "succeeded")]},
    ),
    # ---------------------------------------------------------------- approvals
    dict(
        id="quorum 2: the same approver twice counts once",
        book=book(step("m"), gate("g", "m", quorum=2), step("go", "g")),
        script=[
            ("start",),
            ("run", "m"),
            ("ok", "m"),
            ("expect", {"approvals": ("g",), "run_status": "waiting", "start": ()}),
            ("approve", "g", "alice"),
            ("expect", {"run_status": "waiting", "approvals": ()}),
            ("approve", "g", "alice"),
            ("state", {"g": "waiting", "run": "waiting"}),
            ("approve", "g", "bob"),
            ("expect", {"start": ("go",), "run_status": "running"}),
            ("run", "go"),
            ("ok", "go"),
        ],
        expect={
            "run": "succeeded",
            "paths": {"g": "pending>waiting>succeeded"},
            "step_reasons": {"g": "approved by alice, bob"},
        },
    ),
    dict(
        id="quorum 1: one approval is enough",
        book=book(gate("g"), step("go", "g")),
        script=[
            ("start",),
            ("approve", "g", "alice"),  # quorum 1: this approves
            ("expect", {"start": ("go",)}),
        ],
        expect={"run": "running", "steps": {"g": "succeeded"}},
    ),
    dict(
        id="one deny denies",
        book=book(gate("g", quorum=2), step("go", "g")),
        script=[
            ("start",),
            ("approve", "g", "alice"),
            ("deny", "g", "bob", "too risky"),
            ("expect", {"failed": ("g",), "skipped": ("go",), "done": True}),
        ],
        expect={
            "run": "failed",
            "step_reasons": {
                "g": "denied by bob: too risky",
                "go": "not started: run aborted after step 'g' failed",
            },
            "reason": "step 'g': denied by bob: too risky",
        },
    ),
    dict(
        id="a deny on a continue approval is tolerated",
        book=book(gate("g", on_failure="continue"), step("go", "g"), step("other")),
        script=[("start",), ("run", "other"), ("deny", "g", "bob"), ("ok", "other")],
        expect={"run": "succeeded", "tolerated": ["g"], "steps": {"go": "skipped"}},
    ),
    dict(
        id="expiry is a deny by timeout",
        book=book(gate("g", quorum=2), step("go", "g")),
        script=[("start",), ("approve", "g", "alice"), ("expire", "g")],
        expect={
            "run": "failed",
            "step_reasons": {"g": "denied by timeout: 1 of 2 approval(s) before the approval"},
        },
    ),
    dict(
        id="an approval pauses only its own branch",
        book=book(step("a"), gate("g", "a"), step("b", "g"), step("c"), step("c2", "c")),
        script=[
            ("start",),
            ("run", "a"),
            ("run", "c"),
            ("ok", "a"),
            ("expect", {"approvals": ("g",), "run_status": "running"}),
            ("ok", "c"),
            ("expect", {"start": ("c2",), "run_status": "running"}),
            ("run", "c2"),
            ("ok", "c2"),
            ("expect", {"start": (), "run_status": "waiting", "done": False}),
            ("approve", "g", "alice"),
            ("expect", {"start": ("b",), "run_status": "running"}),
            ("run", "b"),
            ("ok", "b"),
        ],
        expect={"run": "succeeded"},
    ),
    # ---------------------------------------------------------------- kill and run timeout
    dict(
        id="kill while running: cancel in flight, cancel pending, no rollback",
        book=book(step("a", rb=["a0"]), step("b", rb=["b0"]), step("c", "a")),
        script=[
            ("start",),
            ("run", "a"),
            ("run", "b"),
            ("kill", "alice", "wrong host"),
            ("expect", {"cancel": ("a", "b"), "run_status": "running", "start": ()}),
            ("state", {"c": "cancelled"}),
            ("kill", "bob", "again"),  # a second kill changes nothing
            ("cut", "a"),
            ("expect", {"cancel": ("b",)}),
            ("ok", "b"),  # finished ok after the kill: it did run
            ("expect", {"done": True, "run_status": "cancelled", "rollback": ()}),
        ],
        expect={
            "run": "cancelled",
            "reason": "killed by alice: wrong host",
            "steps": {"a": "cancelled", "b": "succeeded", "c": "cancelled"},
            "saga": None,
            "touched": [("a", "cut off"), ("b", "finished")],
        },
    ),
    dict(
        id="kill while waiting for an approval",
        book=book(step("m"), gate("g", "m"), step("go", "g")),
        script=[
            ("start",),
            ("run", "m"),
            ("ok", "m"),
            ("expect", {"run_status": "waiting"}),
            ("kill", "alice", "stand down"),
            ("expect", {"done": True}),
        ],
        expect={
            "run": "cancelled",
            "steps": {"m": "succeeded", "g": "cancelled", "go": "cancelled"},
            "step_reasons": {"g": "approval withdrawn: killed by alice: stand down"},
        },
    ),
    dict(
        id="kill while a step waits for its retry",
        book=book(step("a", retries=RETRY2)),
        script=[("start",), ("run", "a"), ("fail", "a"), ("kill", "alice", "enough")],
        expect={"run": "cancelled", "steps": {"a": "cancelled"}, "touched": [("a", "cut off")]},
    ),
    dict(
        id="kill before the run starts",
        book=book(step("a")),
        script=[
            ("kill", "alice", "not now"),
            ("expect", {"done": True}),
            ("invalid", ("start",), "already ended"),
        ],
        expect={"run": "cancelled", "steps": {"a": "cancelled"}, "touched": []},
    ),
    dict(
        id="run timeout: cancel like a kill, but the run fails",
        book=book(step("a"), step("b", "a")),
        script=[
            ("start",),
            ("run", "a"),
            ("run_timeout",),
            ("expect", {"cancel": ("a",)}),
            ("cut", "a"),
        ],
        expect={"run": "failed", "reason": "run timed out", "steps": {"b": "cancelled"}},
    ),
    # ---------------------------------------------------------------- crash and resume
    dict(
        id="crash: in flight becomes unknown, the run waits; resolved as succeeded",
        book=book(step("a"), step("b"), step("c", "a")),
        script=[
            ("start",),
            ("expect", {"start": ("a", "b")}),
            ("run", "a"),
            ("crash",),
            ("expect", {"start": (), "run_status": "waiting"}),
            ("state", {"a": "unknown"}),
            ("invalid", ("run", "b"), "waits for an operator to resolve a"),
            ("resolve", "a", True),
            ("expect", {"start": ("b", "c"), "run_status": "running"}),
            ("run", "b"),
            ("ok", "b"),
            ("run", "c"),
            ("ok", "c"),
        ],
        expect={
            "run": "succeeded",
            "paths": {"a": "pending>running>unknown>succeeded"},
            "step_reasons": {"a": "resolved as succeeded by carol"},
        },
    ),
    dict(
        id="crash: resolved as failed, on_failure applies",
        book=book(step("a"), step("c", "a")),
        script=[("start",), ("run", "a"), ("crash",), ("resolve", "a", False)],
        expect={
            "run": "failed",
            "steps": {"c": "skipped"},
            "reason": "step 'a': resolved as failed by carol",
        },
    ),
    dict(
        id="crash: a pending retry is handed out again with the time left",
        book=book(step("a", retries={"count": 1, "delay": "60s"})),
        script=[
            ("start",),  # t=1
            ("run", "a"),  # t=2
            ("fail", "a"),  # t=3: retry due at 63
            ("expect", {"retry": (("a", 60.0),)}),
            ("crash",),  # t=4
            ("expect", {"retry": (("a", 59.0),), "run_status": "running"}),
            ("run", "a"),
            ("ok", "a"),
        ],
        expect={"run": "succeeded", "attempts": {"a": 2}},
    ),
    dict(
        id="crash during a kill: what was in flight is cut off",
        book=book(step("a"), step("b")),
        script=[
            ("start",),
            ("run", "a"),
            ("kill", "alice", "stop"),
            ("crash",),
            ("expect", {"done": True}),
        ],
        expect={"run": "cancelled", "touched": [("a", "unknown")]},
    ),
    dict(
        id="a step that succeeded is never started again",
        book=book(step("a"), step("b", "a")),
        script=[
            ("start",),
            ("run", "a"),
            ("ok", "a"),
            ("invalid", ("run", "a"), "cannot start: it is succeeded"),
            ("invalid", ("ok", "a"), "not running"),
            ("crash",),
            ("state", {"a": "succeeded"}),
            ("expect", {"start": ("b",)}),
            ("run", "b"),
            ("ok", "b"),
        ],
        expect={"run": "succeeded", "attempts": {"a": 1}},
    ),
    # ---------------------------------------------------------------- invalid events
    dict(
        id="invalid events are refused and leave the state unchanged",
        book=book(step("a", rb=["a0"]), gate("g", "a"), step("b", "g", on_failure="rollback")),
        script=[
            ("invalid", ("run", "a"), "before the run started"),
            ("invalid", ("run_timeout",), "before the run started"),
            ("invalid", ("approve", "g", "alice"), "before the run started"),
            ("start",),
            ("invalid", ("start",), "already started"),
            ("invalid", ("ok", "a"), "'a' is pending, not running"),
            ("invalid", ("run", "nope"), "has no step 'nope'"),
            ("invalid", ("run", "a", 3), "attempt 3 does not follow attempt 0"),
            ("invalid", ("run", "b"), "not ready"),
            ("invalid", ("run", "g"), "not started by the engine"),
            ("invalid", ("approve", "a", "alice"), "local step 'a' is pending"),
            ("invalid", ("approve", "g", "alice"), "not waiting for approval"),
            ("invalid", ("expire", "g"), "not waiting for approval"),
            ("invalid", ("resolve", "a", True), "only an unknown step"),
            ("invalid", ("rb_ok", "a", 0), "no rollback is due"),
            ("run", "a"),
            ("invalid", ("ok", "a", {"outputs": {"x": object()}}), "cannot be saved"),
            ("invalid", ("ok", "a", {"hosts": {"h": {"rc": float("nan")}}}), "cannot be saved"),
            ("ok", "a"),
            ("approve", "g", "alice"),
            ("invalid", ("approve", "g", "bob"), "approval step 'g' is succeeded"),
            ("run", "b"),
            ("fail", "b"),
            ("invalid", ("rb_ok", "b", 0), r"was not handed out: the due one is a\[0\]"),
            ("rb_ok", "a", 0),
            ("invalid", ("crash",), "already ended"),
            ("invalid", ("kill", "x", "y"), "already ended"),
        ],
        expect={"run": "rolled_back"},
    ),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["id"] for s in SCENARIOS])
def test_scenario(scenario: dict[str, Any]) -> None:
    script = Script(scenario["book"], scenario.get("inputs"))
    script.decide()
    for entry in scenario["script"]:
        script.apply(entry)
    check_end(script, scenario["expect"])


# --------------------------------------------------------------------------- the tables themselves

_ = StepStatus
READINESS_CASES = [
    (Trigger.ALL_SUCCEEDED, [_.SUCCEEDED, _.SUCCEEDED], "ready", None),
    (Trigger.ALL_SUCCEEDED, [_.SUCCEEDED, _.RUNNING], "wait", None),
    (Trigger.ALL_SUCCEEDED, [_.SUCCEEDED, _.FAILED], "skip", "need 'n1' failed"),
    (Trigger.ALL_SUCCEEDED, [_.RUNNING, _.FAILED], "skip", "need 'n1' failed"),
    (Trigger.ALL_SUCCEEDED, [_.SKIPPED, _.SUCCEEDED], "skip", "need 'n0' skipped"),
    (Trigger.ALL_SUCCEEDED, [_.CANCELLED], "skip", "need 'n0' cancelled"),
    (Trigger.ALL_SUCCEEDED, [_.UNKNOWN], "wait", None),
    (Trigger.ANY_SUCCEEDED, [_.SUCCEEDED, _.SKIPPED], "ready", None),
    (Trigger.ANY_SUCCEEDED, [_.CANCELLED, _.SUCCEEDED], "ready", None),
    (Trigger.ANY_SUCCEEDED, [_.SUCCEEDED, _.RUNNING], "wait", None),
    (Trigger.ANY_SUCCEEDED, [_.SUCCEEDED, _.WAITING], "wait", None),
    (Trigger.ANY_SUCCEEDED, [_.SKIPPED, _.CANCELLED], "skip", "no need succeeded"),
    (Trigger.ANY_SUCCEEDED, [_.SUCCEEDED, _.FAILED], "skip", "need 'n1' failed"),
    (Trigger.ALWAYS, [_.FAILED, _.SKIPPED, _.CANCELLED, _.SUCCEEDED], "ready", None),
    (Trigger.ALWAYS, [_.FAILED, _.RUNNING], "wait", None),
    (Trigger.ALWAYS, [_.PENDING], "wait", None),
]


@pytest.mark.parametrize(("trigger", "statuses", "kind", "reason"), READINESS_CASES)
def test_readiness_table(
    trigger: Trigger, statuses: list[StepStatus], kind: str, reason: str | None
) -> None:
    verdict = READINESS[trigger]([(f"n{i}", s) for i, s in enumerate(statuses)])
    assert verdict[0] == kind
    assert (verdict[1] is None) if reason is None else (reason in (verdict[1] or ""))


def test_no_transition_leaves_a_terminal_status() -> None:
    assert not [key for key in STEP_TRANSITIONS if key[0].terminal]
    assert not [key for key in RUN_TRANSITIONS if key[0].terminal]


# --------------------------------------------------------------------------- API beyond the scripts


def started(runbook: Runbook) -> Conductor:
    cond = Conductor(runbook)
    cond.handle(RunStarted(at=1.0))
    cond.next(guard)
    return cond


def test_decision_reports_skips_once_and_repeats_starts() -> None:
    cond = started(book(step("a", when="false"), step("b")))
    again = cond.next(guard)
    assert again.start == ("b",)
    assert again.skipped == () and again.changes == ()


def test_next_before_start_is_a_pending_decision() -> None:
    d = Conductor(book(step("a"))).next(guard)
    assert d.run_status is RunStatus.PENDING and d.start == () and not d.done


def test_context_shape_and_isolation() -> None:
    cond = started(book(step("a"), step("b", "a")))
    cond.handle(StepStarted("a", 1, at=2.0))
    hosts = {"web1": {"rc": 0, "stdout": "ok", "stderr": ""}}
    cond.handle(StepFinished("a", ok=True, at=3.0, outputs={"n": [1, 2]}, hosts=hosts))
    ctx = cond.context(inputs={"host": "web1"}, run={"id": "r1"}, alert=None, secrets={"k": "v"})
    assert set(ctx) == {"inputs", "steps", "run", "alert", "secrets"}
    assert ctx["steps"]["a"] == {"status": "succeeded", "outputs": {"n": [1, 2]}, "hosts": hosts}
    assert ctx["steps"]["b"] == {"status": "pending", "outputs": {}, "hosts": {}}
    assert ctx["alert"] == {} and ctx["inputs"] == {"host": "web1"}
    ctx["steps"]["a"]["outputs"]["n"].append(3)
    assert cond.state.steps["a"].outputs == {"n": [1, 2]}


def test_outputs_are_stored_as_plain_json() -> None:
    cond = started(book(step("a")))
    cond.handle(StepStarted("a", 1, at=2.0))
    cond.handle(StepFinished("a", ok=True, at=3.0, outputs={"t": (1, 2)}))
    assert cond.state.steps["a"].outputs == {"t": [1, 2]}


def test_plan_after_lists_the_gated_steps_in_run_order() -> None:
    rb = book(step("m"), gate("g", "m"), step("x", "g"), step("y", "x"), step("z", "m"))
    cond = Conductor(rb)
    assert [s.id for s in cond.plan_after("g")] == ["x", "y"]
    with pytest.raises(ConductorError, match="is a local step, not an approval"):
        cond.plan_after("m")
    with pytest.raises(ConductorError, match="no step 'nope'"):
        cond.plan_after("nope")


def test_touched_lists_hosts_and_outcomes_of_a_killed_run() -> None:
    cond = started(book(step("a"), step("b"), step("c", "a")))
    cond.handle(StepStarted("a", 1, at=2.0))
    cond.handle(StepStarted("b", 1, at=3.0))
    cond.handle(StepFinished("b", ok=True, at=4.0, hosts={"web2": {"rc": 0}}))
    cond.handle(KillRequested(reason="bad", actor="alice", at=5.0))
    cond.handle(
        StepFinished("a", ok=False, at=6.0, cancelled=True, hosts={"web1": {"cut_off": True}})
    )
    assert cond.touched() == [
        {
            "step": "a",
            "status": "cancelled",
            "outcome": "cut off",
            "hosts": {"web1": {"cut_off": True}},
            "attempts": 1,
            "started_at": 2.0,
            "finished_at": 6.0,
        },
        {
            "step": "b",
            "status": "succeeded",
            "outcome": "finished",
            "hosts": {"web2": {"rc": 0}},
            "attempts": 1,
            "started_at": 3.0,
            "finished_at": 4.0,
        },
    ]


def test_summary_says_what_the_run_waits_for() -> None:
    cond = started(book(gate("g"), step("a")))
    assert cond.summary() == "running; g awaiting approval"
    cond.handle(StepStarted("a", 1, at=2.0))
    cond.handle(ProcessRestarted(at=3.0))
    cond.next(guard)
    assert cond.summary() == "waiting for an operator to resolve a"
    assert cond.unknown_steps() == ("a",) and cond.waiting_approvals() == ("g",)
    cond.handle(StepResolved("a", True, actor="carol", at=4.0))
    cond.next(guard)
    assert cond.summary() == "waiting for approval of g"
    cond.handle(ApprovalDecision("g", "alice", approve=True, at=5.0))
    assert cond.summary() == "succeeded"


def test_startable_matches_what_step_started_accepts() -> None:
    cond = started(book(step("a", retries={"count": 1}), step("b", "a"), gate("g")))
    assert [cond.startable(s) for s in ("a", "b", "g")] == [True, False, False]
    cond.handle(StepStarted("a", 1, at=2.0))
    assert not cond.startable("a")
    cond.handle(StepFinished("a", ok=False, at=3.0))
    assert cond.startable("a")  # waiting for its retry


def test_unknown_event_type_is_refused() -> None:
    with pytest.raises(ConductorError, match="does not know the event"):
        Conductor(book(step("a"))).handle("RunStarted")  # type: ignore[arg-type]


def test_history_records_run_and_step_transitions_with_times() -> None:
    cond = started(book(step("a")))
    cond.handle(StepStarted("a", 1, at=2.0))
    cond.handle(StepFinished("a", ok=True, at=3.5))
    got = [(t.at, t.step, t.from_, t.to) for t in cond.state.history]
    assert got == [
        (1.0, None, "pending", "running"),
        (2.0, "a", "pending", "running"),
        (3.5, "a", "running", "succeeded"),
        (3.5, None, "running", "succeeded"),
    ]
    assert cond.state.started_at == 1.0 and cond.state.finished_at == 3.5


@pytest.mark.parametrize(
    ("steps", "fragment"),
    [
        ([step("a", "b"), step("b", "a")], "cycle: "),
        ([step("a", "ghost")], "needs 'ghost', which is not a step"),
        ([step("a"), step("a")], "duplicate step ids"),
    ],
)
def test_a_broken_graph_is_refused(steps: list[dict[str, Any]], fragment: str) -> None:
    with pytest.raises(ConductorError, match=fragment):
        Conductor(book(*steps))


def test_saved_state_resumes_only_against_its_own_runbook() -> None:
    cond = started(book(step("a")))
    text = cond.state.to_json()
    other = Runbook.from_mapping(
        {"metadata": {"name": "t", "version": "1.0.0"}, "steps": [step("a")]}, sha256="f" * 64
    )
    with pytest.raises(ConductorError, match="resume with the runbook version"):
        Conductor(other, ConductorState.from_json(text))
    with pytest.raises(ConductorError, match=r"saved run is for t@1\.0\.0"):
        Conductor(book(step("a"), step("b")), ConductorState.from_json(text))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{not json", "unreadable"),
        ('{"format": 99}', "format 99"),
        ('{"format": 1}', "unreadable"),
        ("[]", "unreadable"),
    ],
)
def test_damaged_saved_state_is_refused(text: str, fragment: str) -> None:
    with pytest.raises(ConductorError, match=fragment):
        ConductorState.from_json(text)


def test_an_evaluator_that_raises_a_bug_still_only_fails_that_step() -> None:
    def broken(step: Any, context: Any) -> bool:
        raise RuntimeError("evaluator crashed")

    cond = Conductor(book(step("a", when="x", on_failure="continue"), step("b")))
    cond.handle(RunStarted(at=1.0))
    d = cond.next(broken)
    assert d.failed == (("a", "guard raised: evaluator crashed"),) and d.start == ("b",)
