"""The kill-switch, health, readiness and metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from executor.engine import killswitch
from executor.errors import UsageError
from executor.server.auth import Principal
from executor.server.deps import CONFLICT, ERRORS, UNAVAILABLE, Conflict, RuntimeDep, require
from executor.server.metrics import CONTENT_TYPE

router = APIRouter(tags=["control"])

RUNBOOK_NAME = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"


class Engage(BaseModel):
    reason: str = Field(min_length=1, max_length=2000, description="shown to everyone refused")
    runbook: str | None = Field(
        default=None, max_length=200, pattern=RUNBOOK_NAME, description="only this runbook"
    )


class Release(BaseModel):
    runbook: str | None = Field(default=None, max_length=200, pattern=RUNBOOK_NAME)


@router.get("/v1/killswitch", summary="Which kill-switches are engaged", responses=ERRORS)
def killswitch_status(
    rt: RuntimeDep,
    _principal: Annotated[Principal, Depends(require("read"))],
) -> dict[str, Any]:
    engaged = rt.services.store.killswitches()
    history = rt.services.store.killswitch_history(20)  # type: ignore[attr-defined]
    return {"engaged": engaged, "history": history}


@router.post(
    "/v1/killswitch/engage",
    summary="Refuse new runs and stop running ones (globally, or for one runbook)",
    responses={**ERRORS, **UNAVAILABLE},
)
def engage(
    body: Engage,
    rt: RuntimeDep,
    principal: Annotated[Principal, Depends(require("killswitch"))],
) -> dict[str, Any]:
    return killswitch.engage(
        rt.services, reason=body.reason, actor=principal.name, runbook=body.runbook
    )


@router.post(
    "/v1/killswitch/release",
    summary="Allow automation again",
    responses={**ERRORS, **CONFLICT, **UNAVAILABLE},
)
def release(
    rt: RuntimeDep,
    principal: Annotated[Principal, Depends(require("killswitch"))],
    body: Release | None = None,
) -> dict[str, Any]:
    try:
        return killswitch.release(
            rt.services, actor=principal.name, runbook=body.runbook if body else None
        )
    except UsageError as exc:  # not engaged: the request is fine, the state says no
        raise Conflict(exc.message, hint=exc.hint) from None


@router.get("/healthz", summary="The process is alive", tags=["health"])
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The state store and the audit log take writes, alerts are being decided",
    tags=["health"],
    responses={503: {"description": "not ready; the problems are listed"}},
)
def readyz(rt: RuntimeDep) -> Any:
    problems = rt.ready()
    if problems:
        return JSONResponse(status_code=503, content={"status": "not ready", "problems": problems})
    return {"status": "ready"}


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    tags=["health"],
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "text exposition format"}},
)
def metrics(rt: RuntimeDep) -> Response:
    return Response(content=rt.metrics.render(), media_type=CONTENT_TYPE)
