"""Approvals: who may approve, what they approve, and recording the decision.

An approval is bound to the exact runbook content (its sha256) and shows the
approver the rendered plan of the steps it gates. The rules (group membership,
no self-approval unless policy allows, distinct approvers for a quorum) are
checked here, in the process of the person deciding, and the decision is
stored; the process running the run picks it up at its next poll.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from executor import expressions
from executor.conductor import ConductorState
from executor.config import Identity
from executor.engine.context import expression_context
from executor.engine.render import describe, render_action
from executor.engine.services import Services
from executor.errors import ApprovalRefused, ExpressionError, NotFound
from executor.graph import Graph
from executor.masking import MASK, Masker
from executor.model import Runbook, Step, StepStatus, format_duration


def approval_plan(
    runbook: Runbook, step_id: str, context: Mapping[str, Any], masker: Masker
) -> list[dict[str, Any]]:
    """The steps this approval gates, rendered as far as the context allows.

    A template that cannot be rendered yet (it reads an output not produced
    yet) is shown as written, with the reason, rather than failing: the
    approver still sees what will run.
    """
    graph = Graph.of(runbook)
    gated = graph.descendants(step_id)
    plan = []
    for sid in graph.topological:
        if sid not in gated:
            continue
        step = runbook.step(sid)
        entry: dict[str, Any] = {"step": sid, "kind": step.kind}
        if step.when:
            entry["when"] = step.when
        if step.action is not None:
            try:
                entry["action"] = describe(render_action(step.action, context), masker.mask)
            except ExpressionError as exc:
                entry["action"] = describe(step.action, masker.mask)
                entry["note"] = (
                    f"shown as written, rendered when it runs: {masker.mask(exc.message)}"
                )
        if step.rollback:
            entry["rollback"] = [describe(a, masker.mask) for a in step.rollback]
        plan.append(entry)
    return plan


def expiry_of(step: Step, waiting_since: float | None) -> float | None:
    """When an approval step that began waiting at ``waiting_since`` is denied by timeout."""
    timeout = getattr(step.action, "timeout", None)
    if not timeout or waiting_since is None:
        return None
    return waiting_since + timeout


def _step_record(state: Mapping[str, Any] | None, step_id: str) -> Mapping[str, Any]:
    return ((state or {}).get("steps", {}) or {}).get(step_id) or {}


def decide(
    services: Services,
    runbook: Runbook,
    run_id: str,
    step_id: str,
    *,
    approver: Identity,
    approve: bool,
    reason: str | None = None,
) -> dict[str, Any]:
    """Record an approval or denial after checking every rule; audited either way."""
    run = services.store.get_run(run_id)
    ref = f"{run['runbook']}@{run['version']}"
    base = {"run_id": run_id, "actor": approver.name, "runbook": ref, "sha256": run.get("sha256")}
    try:
        step = runbook.step(step_id)
    except KeyError:
        raise NotFound(
            f"run {run_id} ({ref}) has no step {step_id!r}", hint=f"runbook status {run_id}"
        ) from None
    try:
        _check(services, runbook, run, step_id, step, approver)
    except ApprovalRefused as refused:
        services.audit.append(
            "approval.refused",
            step=step_id,
            **base,
            data={"approver": approver.name, "reason": refused.message},
        )
        raise
    decision = {
        "approver": approver.name,
        "decision": "approve" if approve else "deny",
        "reason": reason,
        "at": services.clock.now(),
        "sha256": runbook.sha256,
    }
    services.audit.append(
        "approval.granted" if approve else "approval.denied",
        step=step_id,
        **base,
        data={
            "approver": approver.name,
            "reason": reason,
            "groups": sorted(approver.groups),
            "runbook_sha256": runbook.sha256,
        },
    )
    services.store.add_approval(run_id, step_id, decision)
    return decision


def _check(
    services: Services,
    runbook: Runbook,
    run: Mapping[str, Any],
    step_id: str,
    step: Any,
    approver: Identity,
) -> None:
    if not step.is_approval:
        raise ApprovalRefused(f"step {step_id!r} is a {step.kind} step, not an approval")
    if run.get("sha256") != runbook.sha256:
        raise ApprovalRefused(
            f"the runbook content changed since run {run['id']} started "
            f"(sha256 {str(run.get('sha256'))[:12]} then, {runbook.sha256[:12]} now): "
            "an approval is bound to the exact content that runs"
        )
    state = run.get("state")
    if isinstance(state, str):
        state = json.loads(state)
    record = _step_record(state, step_id)
    if record.get("status") != "waiting":
        raise ApprovalRefused(
            f"step {step_id!r} of run {run['id']} is not waiting for approval "
            f"(it is {record.get('status', 'pending')})"
        )
    deadline = expiry_of(step, record.get("started_at"))
    if deadline is not None and services.clock.now() > deadline:
        raise ApprovalRefused(
            f"the approval of step {step_id!r} of run {run['id']} expired "
            f"{format_duration(services.clock.now() - deadline)} ago: it counts as denied",
            hint="start a new run if the change is still needed",
        )
    allowed = set(step.action.approvers)
    if not (approver.groups & allowed):
        raise ApprovalRefused(
            f"{approver.name} may not approve step {step_id!r}: approvers must belong to "
            f"{', '.join(sorted(allowed))} "
            f"(their groups: {', '.join(sorted(approver.groups)) or 'none'})"
        )
    if approver.name == run.get("actor") and not runbook.policy.self_approval:
        raise ApprovalRefused(
            f"{approver.name} started run {run['id']} and may not approve it too (four-eyes rule); "
            "ask another member of " + ", ".join(sorted(allowed)),
            hint="a runbook can allow this with policy.self_approval: true",
        )
    for previous in services.store.get_approvals(run["id"], step_id):
        if previous["approver"] == approver.name:
            raise ApprovalRefused(
                f"{approver.name} already decided on step {step_id!r} ({previous['decision']}); "
                "a quorum needs distinct approvers"
            )


def render_message(runbook: Runbook, step_id: str, context: Mapping[str, Any]) -> str:
    step = runbook.step(step_id)
    try:
        return str(expressions.render(step.action.message, context))  # type: ignore[union-attr]
    except ExpressionError:
        return step.action.message  # type: ignore[union-attr]


def pending_approvals(
    services: Services, runbook: Runbook, run: Mapping[str, Any], state: ConductorState
) -> list[dict[str, Any]]:
    """Each approval the run waits for: message, who may answer, answers so far, the plan.

    Rendered from what the store holds (inputs already masked), so what a
    person reads in ``runbook status`` before approving is what will run.
    """
    inputs = dict(run.get("inputs") or {})
    for name, spec in runbook.inputs.items():
        if spec.secret and name in inputs:
            inputs[name] = MASK  # never stored in clear; shown as the audit shows it
    context = expression_context(
        state,
        inputs=inputs,
        run={
            "id": run["id"],
            "trigger": run.get("trigger"),
            "actor": run.get("actor"),
            "dry_run": bool(run.get("dry_run")),
        },
        alert=run.get("alert"),
        secrets={},
    )
    masker = Masker()
    pending = []
    for step_id, record in state.steps.items():
        if record.status is not StepStatus.WAITING:
            continue
        step = runbook.step(step_id)
        action = step.action
        pending.append(
            {
                "step": step_id,
                "message": render_message(runbook, step_id, context),
                "approvers": list(action.approvers),  # type: ignore[union-attr]
                "quorum": action.quorum,  # type: ignore[union-attr]
                "waiting_since": record.started_at,
                "expires_at": expiry_of(step, record.started_at),
                "decisions": services.store.get_approvals(run["id"], step_id),
                "plan": approval_plan(runbook, step_id, context, masker),
                "command": f"runbook approve {run['id']} {step_id}",
            }
        )
    return pending
