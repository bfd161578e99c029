"""Waiting for people: approval requests, the decisions they store, and expiry.

Part of ``RunExecution`` (a mixin, so the loop reads top to bottom in
``runner``): the request is audited and the state that says the step waits
is saved before anyone is told, so an approver who answers at once finds the
step waiting; decisions recorded by other processes are picked up at each
turn of the loop, and a decision stored after the deadline does not count.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from executor import conductor as cd
from executor.engine.approvals import approval_plan, expiry_of
from executor.engine.render import render_action
from executor.engine.services import Services
from executor.engine.work import Progress
from executor.errors import ExpressionError, RunbookError
from executor.masking import Masker
from executor.model import Runbook, Step, StepStatus


class ApprovalDesk:
    """Approval handling of ``RunExecution``; it provides every attribute used here."""

    services: Services
    runbook: Runbook
    run_id: str
    masker: Masker
    conductor: cd.Conductor
    on_progress: Progress
    waiting: set[str]
    fed_approvals: set[int]
    audit: Callable[..., None]
    context: Callable[..., dict[str, Any]]
    save: Callable[..., None]
    _fetch_secrets: Callable[[Step], bool]

    def _approval_facts(self, step_id: str) -> dict[str, Any]:
        """What an approver must see: the rendered message and plan, who may answer."""
        step = self.runbook.step(step_id)
        action: Any = step.action
        with contextlib.suppress(RunbookError):
            self._fetch_secrets(step)
        context = self.context()
        try:
            message = self.masker.mask(str(render_action(action, context).message))  # type: ignore[union-attr]
        except ExpressionError:
            message = action.message
        return {
            "message": message,
            "approvers": list(action.approvers),
            "quorum": action.quorum,
            "timeout": action.timeout,
            "plan": approval_plan(self.runbook, step_id, context, self.masker),
        }

    def _request_approvals(self, step_ids: Sequence[str]) -> None:
        """Audit the requests, save the state that says they wait, then tell people.

        In that order: an approver who answers at once must find the step waiting.
        """
        facts = {step_id: self._approval_facts(step_id) for step_id in step_ids}
        for step_id, shown in facts.items():
            self.audit("approval.requested", step=step_id, **shown)
        self.save()
        for step_id, shown in facts.items():
            self.waiting.add(step_id)
            self._announce(step_id, shown)

    def _announce(self, step_id: str, facts: Mapping[str, Any]) -> None:
        self.on_progress("approval.requested", {"step": step_id, "run_id": self.run_id, **facts})

    def _feed_approvals(self) -> None:
        """Hand the conductor decisions stored by `runbook approve|deny`; expire the rest.

        A decision stored after the approval's deadline does not count: the
        approval was denied by its timeout, whoever answers late.
        """
        now = self.services.clock.now()
        states = self.conductor.state.steps
        self.waiting = {s for s in self.waiting if states[s].status is StepStatus.WAITING}
        if not self.waiting:
            return
        for row in self.services.store.get_approvals(self.run_id):
            if row["id"] in self.fed_approvals or row["step_id"] not in self.waiting:
                continue
            self.fed_approvals.add(row["id"])
            step = self.runbook.step(row["step_id"])
            deadline = expiry_of(step, states[step.id].started_at)
            if deadline is not None and row["at"] > deadline:
                continue
            if states[step.id].status is not StepStatus.WAITING:
                continue
            self.conductor.handle(
                cd.ApprovalDecision(
                    step.id,
                    approver=row["approver"],
                    approve=row["decision"] == "approve",
                    reason=row.get("reason"),
                    at=row["at"],
                )
            )
            self.on_progress("approval.decided", {"step": step.id, **row})
        for step_id in sorted(self.waiting):
            record = states[step_id]
            deadline = expiry_of(self.runbook.step(step_id), record.started_at)
            if record.status is StepStatus.WAITING and deadline is not None and now > deadline:
                timeout = self.runbook.step(step_id).action.timeout  # type: ignore[union-attr]
                self.audit("approval.expired", step=step_id, timeout=timeout)
                self.conductor.handle(cd.ApprovalExpired(step_id, at=now))
                self.on_progress("approval.expired", {"step": step_id})
        self.waiting = {s for s in self.waiting if states[s].status is StepStatus.WAITING}
