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
from executor.config import Identity
from executor.engine.render import describe, render_action
from executor.engine.services import Services
from executor.errors import ApprovalRefused, ExpressionError, NotFound
from executor.graph import Graph
from executor.masking import Masker
from executor.model import Runbook


def approval_plan(
    runbook: Runbook, step_id: str, context: Mapping[str, Any], masker: Masker
) -> list[dict[str, Any]]:
    """The steps this approval gates, rendered as far as the context allows.

    A template that reads an output not produced yet is shown as written, with
    a note, rather than failing: the approver still sees what will run.
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
            except ExpressionError:
                entry["action"] = describe(step.action, masker.mask)
                entry["note"] = "rendered when it runs (reads outputs not known yet)"
        if step.rollback:
            entry["rollback"] = [describe(a, masker.mask) for a in step.rollback]
        plan.append(entry)
    return plan


def _waiting(state: Mapping[str, Any] | None, step_id: str) -> bool:
    steps = (state or {}).get("steps", {})
    return (steps.get(step_id) or {}).get("status") == "waiting"


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
    if not _waiting(state, step_id):
        status = ((state or {}).get("steps", {}).get(step_id) or {}).get("status", "pending")
        raise ApprovalRefused(
            f"step {step_id!r} of run {run['id']} is not waiting for approval (it is {status})"
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
