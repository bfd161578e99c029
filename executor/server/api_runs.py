"""Runs over HTTP: start, list, read (steps, timeline, audit), approve or deny, kill.

The same engine functions as the CLI do the work and the auditing; every
record carries the identity of the bearer token as its actor.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from executor import engine
from executor.engine import approvals
from executor.model import RunStatus
from executor.server.auth import Principal
from executor.server.deps import (
    CONFLICT,
    ERRORS,
    NOT_FOUND,
    UNAVAILABLE,
    Conflict,
    RuntimeDep,
    require,
)

router = APIRouter(prefix="/v1/runs", tags=["runs"])

RUN_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
STEP_ID = r"^[A-Za-z][A-Za-z0-9_-]{0,127}$"
RunId = Annotated[str, Path(pattern=RUN_ID, description="a run id, e.g. r-20261122-031502-9f3a1c")]
StepId = Annotated[str, Path(pattern=STEP_ID, description="a step id of the run's runbook")]
_HIDDEN = ("state", "runbook_text")


class StartRun(BaseModel):
    runbook: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(@[0-9A-Za-z.+-]+)?$",
        description="name (newest version) or name@version from the catalog",
    )
    inputs: dict[str, Any] = Field(default_factory=dict)


class Started(BaseModel):
    run_id: str
    runbook: str
    status: str


class Decide(BaseModel):
    reason: str | None = Field(default=None, max_length=2000)


class Deny(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)


class Kill(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in _HIDDEN}


@router.post(
    "",
    status_code=202,
    response_model=Started,
    summary="Start a run (as the caller; the runbook's automation level does not apply)",
    responses={
        **ERRORS,
        **NOT_FOUND,
        **CONFLICT,
        422: {"description": "invalid runbook or body"},
        **UNAVAILABLE,
    },
)
def start_run(
    body: StartRun,
    rt: RuntimeDep,
    principal: Annotated[Principal, Depends(require("run"))],
) -> Any:
    rt.catalog.refresh()
    book = rt.catalog.runbook(body.runbook)
    rt.starter.budget_check(book, body.inputs, actor=principal.name)
    prepared = rt.starter.start(book, body.inputs, actor=principal.name, trigger="api")
    return Started(run_id=prepared.run_id, runbook=book.ref, status="pending")


@router.get("", summary="Recent runs, newest first", responses=ERRORS)
def list_runs(
    rt: RuntimeDep,
    _principal: Annotated[Principal, Depends(require("read"))],
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    status: Annotated[
        str | None,
        Query(pattern="^(pending|running|waiting|succeeded|failed|cancelled|rolled_back)$"),
    ] = None,
    runbook: Annotated[str | None, Query(max_length=200)] = None,
) -> list[dict[str, Any]]:
    rows = rt.services.store.list_runs(limit=limit, status=status, runbook=runbook)  # type: ignore[call-arg]
    return [_summary(r) for r in rows]


def _steps(state: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for step_id, step in (state.get("steps") or {}).items():
        out.append(
            {
                "step": step_id,
                "status": step.get("status"),
                "attempts": step.get("attempts", 0),
                "started_at": step.get("started_at"),
                "finished_at": step.get("finished_at"),
                "hosts": {
                    h: {"rc": v.get("rc"), "ok": v.get("ok")}
                    for h, v in (step.get("hosts") or {}).items()
                },
                "outputs": step.get("outputs") or {},
                "error": step.get("error"),
                "reason": step.get("reason"),
            }
        )
    return out


@router.get(
    "/{run_id}",
    summary="One run: status, each step, the timeline, approvals, what it touched",
    responses={**ERRORS, **NOT_FOUND},
)
def get_run(
    run_id: RunId,
    rt: RuntimeDep,
    _principal: Annotated[Principal, Depends(require("read"))],
) -> dict[str, Any]:
    info = engine.run_status(rt.services, run_id)
    state = info.pop("state", None) or {}
    info["steps"] = _steps(state)
    info["timeline"] = state.get("history", [])
    info["summary"] = state.get("reason")
    trigger = rt.services.store.trigger_of_run(run_id)  # type: ignore[attr-defined]
    if trigger and trigger.get("fingerprint"):
        alerts = rt.services.store.list_alerts(fingerprint=trigger["fingerprint"], limit=20)  # type: ignore[attr-defined]
        info["alert"] = {
            "fingerprint": trigger["fingerprint"],
            "route": trigger.get("route"),
            "alert_id": trigger.get("alert_id"),
            "resolved": bool(alerts) and alerts[0]["status"] == "resolved",
            "latest_status": alerts[0]["status"] if alerts else None,
        }
    return info


@router.get(
    "/{run_id}/audit",
    summary="The audit records of a run, oldest first",
    responses={**ERRORS, **NOT_FOUND},
)
def run_audit(
    run_id: RunId,
    rt: RuntimeDep,
    _principal: Annotated[Principal, Depends(require("read"))],
) -> dict[str, Any]:
    rt.services.store.get_run(run_id)  # 404 for an unknown run
    records = rt.services.audit.records(run_id)  # type: ignore[attr-defined]
    return {"run_id": run_id, "records": [dataclasses.asdict(r) for r in records]}


def _decide(
    rt: Any, principal: Principal, run_id: str, step_id: str, approve: bool, reason: str | None
) -> dict[str, Any]:
    run = rt.services.store.get_run(run_id)
    book = engine.stored_runbook(run)
    decision = approvals.decide(
        rt.services,
        book,
        run_id,
        step_id,
        approver=principal.identity,
        approve=approve,
        reason=reason,
    )
    given = rt.services.store.get_approvals(run_id, step_id)
    rt.nudge(run_id)
    quorum = book.step(step_id).action.quorum  # type: ignore[union-attr]
    return {
        **decision,
        "run_id": run_id,
        "step": step_id,
        "approvals": sum(1 for a in given if a["decision"] == "approve"),
        "quorum": quorum,
    }


@router.post(
    "/{run_id}/steps/{step_id}/approve",
    summary="Approve a waiting approval step (the caller must be in one of its approver groups)",
    responses={**ERRORS, **NOT_FOUND, **UNAVAILABLE},
)
def approve(
    run_id: RunId,
    step_id: StepId,
    rt: RuntimeDep,
    principal: Annotated[Principal, Depends(require("approve"))],
    body: Decide | None = None,
) -> dict[str, Any]:
    return _decide(rt, principal, run_id, step_id, True, body.reason if body else None)


@router.post(
    "/{run_id}/steps/{step_id}/deny",
    summary="Deny a waiting approval step; its on_failure decides what follows",
    responses={**ERRORS, **NOT_FOUND, **UNAVAILABLE},
)
def deny(
    run_id: RunId,
    step_id: StepId,
    body: Deny,
    rt: RuntimeDep,
    principal: Annotated[Principal, Depends(require("approve"))],
) -> dict[str, Any]:
    return _decide(rt, principal, run_id, step_id, False, body.reason)


@router.post(
    "/{run_id}/kill",
    status_code=202,
    summary="Stop a run: nothing new starts and in-flight work is cancelled",
    responses={**ERRORS, **NOT_FOUND, **CONFLICT, **UNAVAILABLE},
)
def kill(
    run_id: RunId,
    body: Kill,
    rt: RuntimeDep,
    principal: Annotated[Principal, Depends(require("kill"))],
) -> Any:
    run = rt.services.store.get_run(run_id)  # 404 first
    if RunStatus(run["status"]).terminal:
        raise Conflict(f"run {run_id} already ended ({run['status']}); nothing to kill")
    result = engine.kill(rt.services, run_id, actor=principal.name, reason=body.reason)
    return JSONResponse(status_code=202, content=result)
