"""Dry runs: the plan a run would follow, rendered, with nothing touched.

A dry run issues no credential, runs no command and changes no state beyond
its own run record and audit trail. Templates that read outputs of earlier
steps cannot be rendered before those steps run: they are shown as written,
with a note, so the reader still sees every command.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from executor import expressions
from executor.engine.render import describe, render_action
from executor.engine.services import Services
from executor.engine.starting import RunRequest, prepare
from executor.errors import ExpressionError, RunbookError
from executor.graph import Graph
from executor.model import HOST_KINDS


def dry_run_plan(services: Services, request: RunRequest) -> dict[str, Any]:
    request = replace(request, dry_run=True)
    prepared = prepare(services, request)
    book = request.runbook
    context = {
        "inputs": prepared.inputs,
        "run": prepared.run_context(),
        "alert": request.alert or {},
        "steps": {},
        "secrets": {},
    }
    steps = []
    for step_id in Graph.of(book).topological:
        step = book.step(step_id)
        item: dict[str, Any] = {"step": step.id, "kind": step.kind, "needs": list(step.needs)}
        if step.when:
            item["when"] = step.when
            try:
                item["guard"] = f"now {bool(expressions.evaluate(step.when, context))}"
            except ExpressionError:
                item["guard"] = "decided at run time (reads results of earlier steps)"
        if step.action is not None:
            try:
                action = render_action(step.action, context)
                item["action"] = describe(action, prepared.masker.mask)
                if step.kind in HOST_KINDS and services.inventory is not None:
                    pattern = str(expressions.render(book.targets[action.target].hosts, context))  # type: ignore[union-attr]
                    item["hosts"] = list(services.inventory.resolve(pattern))
            except (ExpressionError, RunbookError) as exc:
                item["action"] = describe(step.action, prepared.masker.mask)
                item["note"] = f"shown as written: {prepared.masker.mask(exc.message)}"
            if step.is_approval:
                item["approval"] = (
                    f"{', '.join(step.action.approvers)} (quorum {step.action.quorum})"  # type: ignore[union-attr]
                )
        if step.assertion:
            item["assert"] = list(step.assertion.that)
        if step.rollback:
            item["rollback"] = [describe(a, prepared.masker.mask) for a in step.rollback]
        steps.append(item)
    plan = {
        "run_id": prepared.run_id,
        "runbook": book.ref,
        "sha256": book.sha256,
        "inputs": prepared.masker.mask_data(prepared.inputs),
        "steps": steps,
    }
    services.audit.append(
        "run.dry_run",
        run_id=prepared.run_id,
        actor=request.actor,
        runbook=book.ref,
        sha256=book.sha256,
        data=prepared.masker.mask_data(plan),
    )
    services.store.update_run(prepared.run_id, status="succeeded", finished=services.clock.now())
    return plan
