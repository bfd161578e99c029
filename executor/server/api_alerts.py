"""``POST /v1/alerts/alertmanager`` (Alertmanager's webhook) and reading stored alerts."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from executor.errors import RunbookError
from executor.server.auth import Principal
from executor.server.deps import (
    ERRORS,
    NOT_FOUND,
    UNAVAILABLE,
    Problem,
    RuntimeDep,
    problem,
    require,
)
from executor.server.intake import Closed, Overloaded
from executor.triggers.alerts import WEBHOOK_SCHEMA, PayloadError, parse_payload

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])

RETRY_AFTER_SECONDS = 2


class Accepted(BaseModel):
    accepted: int
    alert_ids: list[int]


class TooLarge(Exception):
    pass


def _openapi_body() -> dict[str, Any]:
    body = {k: v for k, v in WEBHOOK_SCHEMA.items() if k != "$schema"}
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": body}},
            "description": "Alertmanager's webhook payload, version 4 (unknown fields allowed).",
        }
    }


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it is known to pass ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the body is {declared} bytes; this server takes at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body is larger than the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/alertmanager",
    response_model=Accepted,
    summary="Receive Alertmanager's webhook",
    description=(
        "Stores every alert durably (audit and state store) before answering 200. "
        "Authenticate with Alertmanager's `http_config.authorization` bearer token. "
        "Bodies that are not a version-4 payload get 400, oversized ones 413, and a full "
        "backlog 503 with Retry-After, so Alertmanager retries: nothing accepted is dropped."
    ),
    openapi_extra=_openapi_body(),
    responses={
        **ERRORS,
        413: {"model": Problem, "description": "the body is larger than max_body"},
        **UNAVAILABLE,
    },
)
async def alertmanager_webhook(
    request: Request,
    rt: RuntimeDep,
    principal: Annotated[Principal, Depends(require("alerts"))],
) -> Any:
    try:
        raw = await _read_body(request, rt.config.max_body)
    except TooLarge as exc:
        rt.metrics.alerts_rejected.labels("too_large").inc()
        return problem(413, str(exc), hint="raise max_body, or lower max_alerts in Alertmanager")
    try:
        data = json.loads(raw)
        alerts = parse_payload(data)
    except (ValueError, PayloadError) as exc:
        rt.metrics.alerts_rejected.labels("invalid").inc()
        what = str(exc) if isinstance(exc, PayloadError) else f"the body is not JSON: {exc}"
        return problem(400, what, hint="post Alertmanager's webhook payload (version 4)")
    if not alerts:
        return Accepted(accepted=0, alert_ids=[])
    try:
        stored = rt.intake.submit(alerts, principal.name)
    except (Overloaded, Closed) as exc:
        rt.metrics.alerts_rejected.labels("overloaded").inc()
        response = problem(503, str(exc), hint="Alertmanager retries on its own")
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    try:
        ids = await asyncio.wrap_future(stored)
    except RunbookError as exc:
        rt.metrics.alerts_rejected.labels("unwritable").inc()
        response = problem(503, f"the alerts could not be stored: {exc.message}", hint=exc.hint)
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    return JSONResponse({"accepted": len(ids), "alert_ids": ids})


class AlertView(BaseModel):
    id: int
    received: float
    fingerprint: str
    status: str
    alertname: str | None = None
    labels: dict[str, str]
    annotations: dict[str, str] | None = None
    starts_at: str | None = None
    ends_at: str | None = None
    receiver: str | None = None
    source: str | None = None
    stage: str
    disposition: str | None = None
    decided: float | None = None
    decisions: list[dict[str, Any]] | None = None


def _view(row: dict[str, Any]) -> dict[str, Any]:
    keys = AlertView.model_fields
    return {k: v for k, v in row.items() if k in keys}


@router.get(
    "",
    response_model=list[AlertView],
    summary="Recent alerts and what became of them",
    responses=ERRORS,
)
def list_alerts(
    rt: RuntimeDep,
    _principal: Annotated[Principal, Depends(require("read"))],
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    fingerprint: Annotated[str | None, Query(max_length=64)] = None,
    disposition: Annotated[str | None, Query(max_length=32)] = None,
) -> Any:
    rows = rt.services.store.list_alerts(  # type: ignore[attr-defined]
        limit=limit, fingerprint=fingerprint, disposition=disposition
    )
    return [_view(r) for r in rows]


@router.get(
    "/{alert_id}",
    response_model=AlertView,
    summary="One alert, with its decisions",
    responses={**ERRORS, **NOT_FOUND},
)
def get_alert(
    alert_id: Annotated[int, Path(ge=1, le=2**62)],
    rt: RuntimeDep,
    _principal: Annotated[Principal, Depends(require("read"))],
) -> Any:
    return _view(rt.services.store.get_alert(alert_id))  # type: ignore[attr-defined]
