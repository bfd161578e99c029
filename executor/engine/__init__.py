"""The engine: starts, executes, resumes and reports runs through the ports.

The CLI and the HTTP server call these functions and nothing deeper, so both
faces behave the same. Nothing here knows SSH, Ansible, Vault or SQLite.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from executor import conductor as cd
from executor.conductor import views
from executor.engine import killswitch
from executor.engine.approvals import pending_approvals
from executor.engine.ownership import Ownership, live_holder
from executor.engine.runner import RunExecution
from executor.engine.services import Services, SystemClock
from executor.engine.snapshot import state_document
from executor.engine.starting import SECRET_DEFAULT, PreparedRun, RunRequest, prepare
from executor.engine.work import Progress, noop
from executor.errors import NotFound, RunbookError, UsageError, ValidationFailed
from executor.inputs import resolve_inputs
from executor.loader import parse_document
from executor.masking import Masker
from executor.model import Runbook, RunStatus, StepStatus
from executor.validation import validate_document

__all__ = [
    "RunRequest",
    "Services",
    "SystemClock",
    "execute",
    "kill",
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
    on_progress: Progress = noop,
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
    on_progress: Progress = noop,
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


def _execution(
    services: Services,
    run: Mapping[str, Any],
    *,
    secret_inputs: Mapping[str, Any] | None,
    need_secrets: bool,
    on_progress: Progress = noop,
    wait_for_people: bool = True,
) -> RunExecution:
    """A ``RunExecution`` of a stored run, rebuilt from the store alone.

    Secret inputs are never stored: ``need_secrets`` demands them again (to
    carry on), otherwise their masked values stand in (to stop the run).
    """
    run_id = run["id"]
    book = stored_runbook(run)
    given = dict(run.get("inputs") or {})
    masker = Masker()
    for name, spec in book.inputs.items():
        supplied = (secret_inputs or {}).get(name)
        if not spec.secret or (supplied is None and not need_secrets):
            continue
        if supplied is None and given.get(name) == SECRET_DEFAULT:
            supplied = spec.default
        if supplied is None:
            raise UsageError(
                f"run {run_id} has secret input {name!r}, which is never stored: "
                f"pass it again with --input {name}=..."
            )
        given[name] = supplied
        masker.add(str(supplied))
    inputs = resolve_inputs(book, given) if need_secrets else given
    state = cd.ConductorState.from_dict(run["state"]) if run.get("state") else None
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
    return RunExecution(
        services,
        book,
        prepared,
        state=state,
        on_progress=on_progress,
        wait_for_people=wait_for_people,
    )


def _recover(execution: RunExecution) -> None:
    """After a restart: in-flight work becomes unknown, lost retry timers are re-armed."""
    state = execution.conductor.state
    if state.status is RunStatus.PENDING or state.status.terminal:
        return
    cut = [s for s, rec in state.steps.items() if rec.status is StepStatus.RUNNING]
    saga_cut = [f"{i.step}[{i.index}]" for i in state.saga or () if i.status == "running"]
    if cut or saga_cut:
        execution.audit(
            "run.recovered",
            note="the executor stopped while work was in flight; its outcome is unknown",
            steps=cut,
            rollbacks=saga_cut,
        )
    execution.conductor.handle(cd.ProcessRestarted(at=execution.services.clock.now()))


def resume(
    services: Services,
    run_id: str,
    *,
    secret_inputs: Mapping[str, Any] | None = None,
    on_progress: Progress = noop,
    wait_for_people: bool = True,
) -> RunStatus:
    """Continue a run that stopped (waiting for approval, or its process died).

    Steps that finished are never run again; a step that was in flight when
    the process died becomes ``unknown`` and waits for ``runbook resolve``.
    A run still executed by a live process is refused, and so is every
    resume while the kill-switch applies to the runbook.
    """
    run = services.store.get_run(run_id)
    status = RunStatus(run["status"])
    if status.terminal:
        raise UsageError(f"run {run_id} already ended ({status.value}); nothing to resume")
    holder = live_holder(services, run_id)
    if holder is not None:
        raise UsageError(
            f"run {run_id} is being executed by {holder.describe()}; it cannot be resumed twice",
            hint=f"runbook status {run_id}",
        )
    killswitch.check(services, run["runbook"])
    execution = _execution(
        services,
        run,
        secret_inputs=secret_inputs,
        need_secrets=True,
        on_progress=on_progress,
        wait_for_people=wait_for_people,
    )
    execution.ownership.claim()
    try:
        _recover(execution)
        execution.audit("run.resumed")
        execution.save(error=None)
    finally:
        execution.ownership.release()
    return execution.run()


def kill(services: Services, run_id: str, *, actor: str, reason: str) -> dict[str, Any]:
    """Stop a run: its executor cancels it within a poll; a run nobody executes stops here."""
    request = killswitch.kill_run(services, run_id, actor=actor, reason=reason)
    if live_holder(services, run_id) is not None:
        return {**request, "status": "stopping"}
    execution = _execution(
        services, services.store.get_run(run_id), secret_inputs=None, need_secrets=False,
        wait_for_people=False,
    )  # fmt: skip
    execution.ownership.claim()
    try:
        _recover(execution)
        if not execution.conductor.state.status.terminal:
            # Stopped here and now: nothing is announced, rendered or fetched for it.
            text = f"killed by {actor}: {reason}"
            execution.kill_reason = text
            execution.audit("run.cancelling", reason=text, in_flight=[])
            execution.conductor.handle(
                cd.KillRequested(reason=text, actor=actor, at=services.clock.now())
            )
            execution.save()
    finally:
        execution.ownership.release()
    status = execution.run()
    return {**request, "status": status.value}


def resolve(services: Services, run_id: str, step_id: str, *, succeeded: bool, actor: str) -> None:
    """An operator settles a step (or its rollback) left ``unknown`` by a crash.

    If the verdict ends the run (a failure that aborts it), the run is closed
    here: its lock released, its end audited. Otherwise ``resume`` goes on.
    """
    run = services.store.get_run(run_id)
    book = stored_runbook(run)
    state = cd.ConductorState.from_dict(run["state"])
    if step_id not in state.steps:
        raise NotFound(
            f"run {run_id} has no step {step_id!r}",
            hint="its steps are: " + ", ".join(state.steps),
        )
    ownership = Ownership(services, run_id)
    ownership.claim()
    try:
        conductor = cd.Conductor(book, state)
        now = services.clock.now()
        verdict = "succeeded" if succeeded else "failed"
        rollback = next(
            (i for i in state.saga or () if i.step == step_id and i.status == "unknown"), None
        )
        if state.steps[step_id].status is StepStatus.UNKNOWN:
            event: cd.Event = cd.StepResolved(step_id, succeeded=succeeded, actor=actor, at=now)
        elif rollback is not None:
            event = cd.RollbackResolved(
                step_id, rollback.index, succeeded=succeeded, actor=actor, at=now
            )
        else:
            raise UsageError(
                f"step {step_id!r} of run {run_id} is {state.steps[step_id].status.value}, "
                "not unknown; nothing to resolve",
                hint=f"runbook status {run_id}",
            )
        services.audit.append(
            "step.resolved" if rollback is None else "rollback.resolved",
            run_id=run_id,
            actor=actor,
            runbook=book.ref,
            sha256=book.sha256,
            step=step_id,
            data={"as": verdict},
        )
        conductor.handle(event)
        services.store.update_run(
            run_id, state=state_document(conductor.state), updated=services.clock.now()
        )
    finally:
        ownership.release()
    if conductor.state.status.terminal:  # the verdict ended the run: close it properly
        _execution(
            services, services.store.get_run(run_id), secret_inputs=None, need_secrets=False,
            wait_for_people=False,
        ).run()  # fmt: skip


def run_status(services: Services, run_id: str) -> dict[str, Any]:
    """Everything `runbook status` shows: the run, each step, approvals, what was touched."""
    run = services.store.get_run(run_id)
    out = dict(run)
    out.pop("runbook_text", None)
    out["approvals"] = services.store.get_approvals(run_id)
    holder = live_holder(services, run_id)
    out["executing"] = holder.describe() if holder is not None else None
    out["touched"] = None
    out["pending_approvals"] = []
    if run.get("state"):
        state = cd.ConductorState.from_dict(run["state"])
        order = list(state.steps)
        out["summary"] = views.summary(state, order)
        out["touched"] = views.touched(state, order)
        try:
            book = stored_runbook(run)
        except RunbookError:  # started without its text (API callers): no plans to show
            return out
        out["pending_approvals"] = pending_approvals(services, book, run, state)
    return out
