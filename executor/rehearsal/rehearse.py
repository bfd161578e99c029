"""Rehearse one scenario: the real engine and conductor, fed the scenario's results.

The run goes through the same gates as in production: ``prepare`` (audit,
kill-switch, inputs, concurrency, cooldown), the engine loop, approvals
recorded by ``executor.engine.approvals.decide`` (so group membership,
four-eyes and quorum rules apply), and ``runbook resume``'s path when a run
paused for people. What differs is only the world (``world``), the actions
(``scripted``) and time (``execution``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from executor import conductor as cd
from executor import expressions
from executor.config import Identity
from executor.engine import killswitch
from executor.engine.approvals import decide
from executor.engine.services import Services
from executor.engine.starting import PreparedRun, RunRequest, prepare
from executor.errors import ApprovalRefused, ExpressionError, RunbookError
from executor.model import HOST_KINDS, RunStatus, StepStatus
from executor.ports import AuditRecord
from executor.rehearsal.execution import RehearsedExecution
from executor.rehearsal.scenario import Scenario, approval_groups
from executor.rehearsal.scripted import Script, runners
from executor.rehearsal.world import (
    MemoryAudit,
    MemoryStore,
    SimulatedClock,
    SimulatedCredentials,
    SimulatedInventory,
    unique,
)

OPERATOR = "game-day-operator"
"""Who engages the kill-switch in a rehearsal."""

_PATH_EVENTS = frozenset({"step.intent", "approval.requested", "step.outcome"})


@dataclass
class Outcome:
    """What a rehearsed run did: enough to check expectations and measure coverage."""

    scenario: Scenario
    status: str
    run_id: str | None = None
    path: list[str] = field(default_factory=list)
    steps: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: list[AuditRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    reason: str | None = None

    @property
    def events(self) -> list[str]:
        return [r.event for r in self.records]


def path_of(records: Sequence[AuditRecord]) -> list[str]:
    """Step ids in the order they first ran; rollbacks as ``rollback:<step>``."""
    path: list[str] = []
    for record in records:
        if record.step is None:
            continue
        if record.event in _PATH_EVENTS:
            key = record.step
        elif record.event == "rollback.intent":
            key = f"rollback:{record.step}"
        else:
            continue
        if key not in path:
            path.append(key)
    return path


class _Rehearsal:
    """The state of one rehearsal while it runs; ``run()`` returns its ``Outcome``."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.book = scenario.runbook
        self.clock = SimulatedClock()
        self.audit = MemoryAudit(self.clock)
        self.store = MemoryStore()
        self.script = Script(scenario, self.clock)
        self.audit.listeners.append(self.script.observe)
        self.inventory = SimulatedInventory()
        self.services = Services(
            store=self.store,
            audit=self.audit,
            runners=runners(self.script),
            clock=self.clock,
            credentials=lambda run_id, _ttl: SimulatedCredentials(scenario.secrets, run_id),
            inventory=self.inventory,
            identities=self._identities(),
            poll_interval=0.001,
        )
        self.execution: RehearsedExecution | None = None
        self.switch_engaged = False
        self.answered: set[str] = set()
        self.problems: list[str] = []

    def _identities(self) -> dict[str, Identity]:
        """Declared identities as given; every other approver gets the step's groups."""
        out = {
            n: Identity(name=n, groups=frozenset(g)) for n, g in self.scenario.identities.items()
        }
        for step_id, approval in self.scenario.approvals.items():
            groups = frozenset(approval_groups(self.book, step_id))
            for name in (*approval.approve_as, *approval.deny_as):
                if name not in out:
                    out[name] = Identity(name=name, groups=groups)
        return out

    # ------------------------------------------------------------------ running

    def run(self) -> Outcome:
        scenario = self.scenario
        request = RunRequest(
            runbook=self.book,
            inputs=dict(scenario.inputs),
            actor=scenario.actor,
            trigger=scenario.trigger,
            alert=scenario.alert,
        )
        try:
            prepared = prepare(self.services, request)
        except RunbookError as refused:
            return Outcome(
                scenario,
                status="refused",
                reason=str(refused),
                records=self._all(),
                problems=[f"the run was refused before it started: {refused}"],
            )
        self.inventory.by_pattern = self._patterns(prepared)
        self.store.before_killswitch = self._maybe_engage
        outcome = Outcome(scenario, status=RunStatus.PENDING.value, run_id=prepared.run_id)
        try:
            outcome.status = self._drive(prepared).value
        except Exception as exc:  # a bug or a stuck run must fail the scenario, not the suite
            message = (
                exc.message if isinstance(exc, RunbookError) else f"{type(exc).__name__}: {exc}"
            )
            self.problems.append(f"the rehearsal stopped with an error: {message}")
            outcome.status = "error"
        return self._finish(outcome)

    def _drive(self, prepared: PreparedRun) -> RunStatus:
        state: cd.ConductorState | None = None
        while True:
            execution = RehearsedExecution(
                self.services,
                self.book,
                prepared,
                state=state,
                wait_for_people=False,
                clock=self.clock,
            )
            self.execution = execution
            if state is not None:
                execution.audit("run.resumed")
            status = execution.run()
            if status is not RunStatus.WAITING or not self._answer(execution, prepared.run_id):
                return status
            saved = self.store.get_run(prepared.run_id)["state"]
            state = cd.ConductorState.from_json(json.dumps(saved))

    def _finish(self, outcome: Outcome) -> Outcome:
        records = self._all()
        outcome.records = records
        outcome.path = path_of(records)
        if self.execution is not None:
            state = self.execution.conductor.state
            outcome.steps = {sid: rec.status.value for sid, rec in state.steps.items()}
            outcome.outputs = {sid: dict(rec.outputs) for sid, rec in state.steps.items()}
            outcome.reason = state.reason
        outcome.problems = [*self.problems, *self.script.problems]
        target = self.scenario.killswitch_before
        if target and not self.switch_engaged:
            outcome.problems.append(
                f"killswitch_before names step {target!r}, which the run never reached: "
                "the kill-switch was never engaged"
            )
        return outcome

    def _all(self) -> list[AuditRecord]:
        return self.audit.records()

    # ------------------------------------------------------------------ the world reacts

    def _patterns(self, prepared: PreparedRun) -> dict[str, list[str]]:
        """Rendered host pattern of each target -> the hosts the scenario gives it."""
        context = {
            "inputs": prepared.inputs,
            "run": prepared.run_context(),
            "alert": dict(self.scenario.alert or {}),
            "steps": {},
            "secrets": {},
        }
        found: dict[str, list[str]] = {}
        for name, target in self.book.targets.items():
            hosts = list(self.scenario.hosts.get(name, ())) or self._hosts_scripted_for(name)
            if not hosts:
                continue
            try:
                pattern = str(expressions.render(target.hosts, context))
            except ExpressionError:
                continue  # reads step outputs: resolved literally when the step runs
            found[pattern] = unique([*found.get(pattern, []), *hosts])
        return found

    def _hosts_scripted_for(self, target: str) -> list[str]:
        hosts: list[str] = []
        for step in self.book.steps:
            if step.kind not in HOST_KINDS or getattr(step.action, "target", None) != target:
                continue
            for result in self.scenario.results.get(step.id, ()):
                hosts.extend(result.hosts)
        return unique(hosts)

    def _maybe_engage(self) -> None:
        """Engage the kill-switch once the step the scenario names is about to be reached.

        Reached means every step it needs has finished or is waiting for an approval:
        the operator engages the switch while the approvers are still deciding.
        """
        target = self.scenario.killswitch_before
        if not target or self.switch_engaged or self.execution is None:
            return
        state = self.execution.conductor.state
        record = state.steps[target]
        if state.status.terminal or record.status is not StepStatus.PENDING:
            return
        needs = [state.steps[n].status for n in self.book.step(target).needs]
        if all(s.terminal or s is StepStatus.WAITING for s in needs):
            self.switch_engaged = True
            killswitch.engage(
                self.services,
                reason=f"game day: engaged before step {target!r}",
                actor=OPERATOR,
            )

    def _answer(self, execution: RehearsedExecution, run_id: str) -> bool:
        """People answer the approvals the run paused for; True if anything changed."""
        changed = False
        for step_id in execution.conductor.waiting_approvals():
            if step_id in self.answered:
                continue
            self.answered.add(step_id)
            changed |= self._answer_one(step_id, run_id)
        return changed

    def _answer_one(self, step_id: str, run_id: str) -> bool:
        approval = self.scenario.approvals.get(step_id)
        action = self.book.step(step_id).action
        if approval is None:
            if self.scenario.strict:
                self.problems.append(
                    f"approval {step_id!r} waited but the scenario gives no approve_as, deny_as "
                    "or expire (strict: true)"
                )
                return False
            quorum = int(getattr(action, "quorum", 1))
            names = [f"approver-{n}" for n in range(1, quorum + 1)]
            groups = frozenset(approval_groups(self.book, step_id))
            return self._decide(step_id, run_id, [Identity(n, groups) for n in names], True, None)
        changed = self._decide(
            step_id, run_id, [self.services.identity(n) for n in approval.approve_as], True,
            approval.reason,
        )  # fmt: skip
        changed |= self._decide(
            step_id, run_id, [self.services.identity(n) for n in approval.deny_as], False,
            approval.reason,
        )  # fmt: skip
        if approval.expire:
            timeout = getattr(action, "timeout", None) or 0.0
            self.clock.advance(timeout + 1.0)
            changed = True
        return changed

    def _decide(
        self,
        step_id: str,
        run_id: str,
        people: Sequence[Identity],
        approve: bool,
        reason: str | None,
    ) -> bool:
        changed = False
        for person in people:
            try:
                decide(
                    self.services,
                    self.book,
                    run_id,
                    step_id,
                    approver=person,
                    approve=approve,
                    reason=reason,
                )
                changed = True
            except ApprovalRefused:
                continue  # audited as approval.refused: a scenario may expect exactly that
        return changed


def rehearse(scenario: Scenario) -> Outcome:
    """Run one scenario to its end (or until it waits for a person nobody scripted)."""
    return _Rehearsal(scenario).run()


def outputs_flat(outcome: Outcome) -> Mapping[str, Any]:
    """``step.output -> value`` for every output the run produced."""
    return {
        f"{sid}.{name}": value
        for sid, outputs in outcome.outputs.items()
        for name, value in outputs.items()
    }
