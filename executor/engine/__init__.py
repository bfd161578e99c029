"""The engine: starts, executes, resumes and reports runs through the ports.

The CLI and the HTTP server call these functions and nothing deeper, so both
faces behave the same. Nothing here knows SSH, Ansible, Vault or SQLite.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from executor import conductor as cd
from executor.engine.runner import Progress, RunExecution, _noop
from executor.engine.services import Services, SystemClock
from executor.engine.starting import PreparedRun, RunRequest, prepare
from executor.errors import NotFound, RunbookError, UsageError, ValidationFailed
from executor.inputs import resolve_inputs
from executor.loader import parse_document
from executor.masking import Masker
from executor.model import Runbook, RunStatus
from executor.validation import validate_document

__all__ = [
    "RunRequest",
    "Services",
    "SystemClock",
    "execute",
    "resolve",
    "resume",
    "run_status",
    "start",
    "stored_runbook",
]


def start(
    services: Services,
    request: RunRequest,
    *,
    on_progress: Progress = _noop,
    wait_for_people: bool = True,
) -> tuple[str, RunStatus]:
    """Check, record and execute a run; returns its id and where it stands."""
    prepared = prepare(services, request)
    on_progress("run.created", {"run_id": prepared.run_id, "runbook": request.runbook.ref})
    return prepared.run_id, execute(
        services,
        request.runbook,
        prepared,
        on_progress=on_progress,
        wait_for_people=wait_for_people,
    )


def execute(
    services: Services,
    runbook: Runbook,
    prepared: PreparedRun,
    *,
    state: cd.ConductorState | None = None,
    on_progress: Progress = _noop,
    wait_for_people: bool = True,
) -> RunStatus:
    execution = RunExecution(
        services,
        runbook,
        prepared,
        state=state,
        on_progress=on_progress,
        wait_for_people=wait_for_people,
    )
    return execution.run()


def stored_runbook(run: Mapping[str, Any]) -> Runbook:
    """The exact runbook a run started with, rebuilt from the text kept in the store."""
    text = run.get("runbook_text")
    if not text:
        raise RunbookError(f"run {run['id']} has no stored runbook text; it cannot be resumed")
    document = parse_document(text.encode("utf-8"), run.get("source") or f"<run {run['id']}>")
    issues = [i for i in validate_document(document) if i.severity == "error"]
    if issues:
        raise ValidationFailed(issues)
    book = Runbook.from_mapping(
        document.data, source=run.get("source") or "", sha256=document.sha256
    )
    if book.sha256 != run.get("sha256"):
        raise RunbookError(f"run {run['id']}: stored runbook does not match its recorded sha256")
    return book


def resume(
    services: Services,
    run_id: str,
    *,
    secret_inputs: Mapping[str, Any] | None = None,
    on_progress: Progress = _noop,
    wait_for_people: bool = True,
) -> RunStatus:
    """Continue a run that stopped (waiting for approval, or its process died).

    Steps that finished are never run again; a step that was in flight when
    the process died becomes ``unknown`` and waits for ``runbook resolve``.
    """
    run = services.store.get_run(run_id)
    status = RunStatus(run["status"])
    if status.terminal:
        raise UsageError(f"run {run_id} already ended ({status.value}); nothing to resume")
    book = stored_runbook(run)
    given = dict(run.get("inputs") or {})
    masker = Masker()
    for name, spec in book.inputs.items():
        if spec.secret:
            supplied = (secret_inputs or {}).get(name)
            if supplied is None:
                raise UsageError(
                    f"run {run_id} has secret input {name!r}, which is never stored: "
                    f"pass it again with --input {name}=..."
                )
            given[name] = supplied
            masker.add(str(supplied))
    inputs = resolve_inputs(book, given)
    state = cd.ConductorState.from_json(json.dumps(run["state"])) if run.get("state") else None
    request = RunRequest(
        runbook=book,
        inputs=inputs,
        actor=run["actor"],
        trigger=run.get("trigger") or "cli",
        dry_run=bool(run.get("dry_run")),
        alert=run.get("alert"),
        runbook_text=run.get("runbook_text"),
    )
    prepared = PreparedRun(
        run_id=run_id,
        request=request,
        inputs=inputs,
        masker=masker,
        concurrency_key=run.get("concurrency_key"),
    )
    execution = RunExecution(
        services,
        book,
        prepared,
        state=state,
        on_progress=on_progress,
        wait_for_people=wait_for_people,
    )
    if state is not None and any(s.status == "running" for s in state.steps.values()):
        execution.audit("run.recovered", note="the executor stopped while steps were in flight")
        execution.conductor.handle(cd.ProcessRestarted(at=services.clock.now()))
        execution.save()
    execution.audit("run.resumed")
    return execution.run()


def resolve(services: Services, run_id: str, step_id: str, *, succeeded: bool, actor: str) -> None:
    """An operator settles a step left ``unknown`` by a crash."""
    run = services.store.get_run(run_id)
    book = stored_runbook(run)
    state = cd.ConductorState.from_json(json.dumps(run["state"]))
    conductor = cd.Conductor(book, state)
    step = state.steps.get(step_id)
    if step is None:
        raise NotFound(f"run {run_id} has no step {step_id!r}")
    if step.status != "unknown":
        raise UsageError(
            f"step {step_id!r} of run {run_id} is {step.status}, not unknown; nothing to resolve"
        )
    services.audit.append(
        "step.resolved",
        run_id=run_id,
        actor=actor,
        runbook=f"{book.ref}",
        sha256=book.sha256,
        step=step_id,
        data={"as": "succeeded" if succeeded else "failed"},
    )
    conductor.handle(
        cd.StepResolved(step_id, succeeded=succeeded, actor=actor, at=services.clock.now())
    )
    services.store.update_run(
        run_id, state=json.loads(conductor.state.to_json()), updated=services.clock.now()
    )


def run_status(services: Services, run_id: str) -> dict[str, Any]:
    """Everything `runbook status` shows: the run, each step, approvals, what was touched."""
    run = services.store.get_run(run_id)
    out = dict(run)
    out.pop("runbook_text", None)
    out["approvals"] = services.store.get_approvals(run_id)
    if run.get("state"):
        state = cd.ConductorState.from_json(json.dumps(run["state"]))
        try:
            book = stored_runbook(run)
            out["touched"] = cd.Conductor(book, state).touched()
        except RunbookError:
            out["touched"] = None
    return out
