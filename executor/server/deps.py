"""What every endpoint shares: the runtime, the caller, their permission, error answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from executor.errors import (
    ApprovalRefused,
    AuditWriteError,
    KillSwitchEngaged,
    NotFound,
    PolicyRefused,
    RunbookError,
    StoreError,
    UsageError,
    ValidationFailed,
)
from executor.server.auth import Forbidden, Principal, Unauthenticated
from executor.server.runtime import Runtime


class Problem(BaseModel):
    """Every error answer: what went wrong and what to do."""

    error: str
    hint: str | None = None
    kind: str


def problem(
    status: int, message: str, *, hint: str | None = None, kind: str = "Error"
) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    body = Problem(error=message, hint=hint, kind=kind).model_dump()
    return JSONResponse(status_code=status, content=body, headers=headers)


class Conflict(RunbookError):
    """The request is fine but the state says no (already ended, not engaged): 409."""


_STATUS: tuple[tuple[type[RunbookError], int], ...] = (
    (Conflict, 409),
    (NotFound, 404),
    (ApprovalRefused, 403),
    (KillSwitchEngaged, 409),
    (PolicyRefused, 409),
    (ValidationFailed, 422),
    (UsageError, 400),
    (AuditWriteError, 503),
    (StoreError, 503),
)


def status_of(error: RunbookError) -> int:
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 400


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "the request is wrong; the error says how"},
    401: {"model": Problem, "description": "no bearer token, or an unknown one"},
    403: {"model": Problem, "description": "the identity may not do this"},
    422: {"model": Problem, "description": "the body or a parameter does not fit its schema"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "no such thing"}
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": Problem, "description": "refused by policy or the kill-switch, or already over"}
}
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": Problem, "description": "the store or the audit log cannot be written"}
}


def runtime(request: Request) -> Runtime:
    found: Runtime = request.app.state.runtime
    return found


RuntimeDep = Annotated[Runtime, Depends(runtime)]


bearer = HTTPBearer(auto_error=False, description="a token from the server config")


def require(permission: str) -> Callable[..., Principal]:
    """A dependency: the caller, authenticated and allowed ``permission`` (else 401/403).

    Every call that passes is audited with its identity before it acts (the
    webhook's alerts are audited as they are stored); a refused one too.
    """

    def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)] = None,
    ) -> Principal:
        rt: Runtime = request.app.state.runtime
        header = f"{credentials.scheme} {credentials.credentials}" if credentials else None
        principal = rt.tokens.authenticate(header)
        try:
            rt.tokens.authorize(principal, permission)
        except Forbidden as refused:
            rt.services.audit.append(
                "api.forbidden",
                actor=principal.name,
                data={
                    "permission": permission,
                    "method": request.method,
                    "path": request.url.path,
                    "reason": str(refused),
                },
            )
            raise
        if permission != "alerts":  # the webhook is audited per batch as alerts.received
            rt.services.audit.append(
                "api.request",
                actor=principal.name,
                data={"method": request.method, "path": request.url.path, "permission": permission},
            )
        return principal

    return check


def install_error_handlers(app: Any) -> None:
    async def unauthenticated(_request: Request, exc: Exception) -> JSONResponse:
        return problem(401, str(exc), kind="Unauthenticated")

    async def forbidden(_request: Request, exc: Exception) -> JSONResponse:
        return problem(403, str(exc), kind="Forbidden")

    async def runbook_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RunbookError)
        return problem(status_of(exc), exc.message, hint=exc.hint, kind=type(exc).__name__)

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        response = problem(exc.status_code, str(exc.detail), kind="HTTPError")
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    async def invalid_request(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        where = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
            for e in exc.errors()[:5]
        )
        return problem(422, f"the request is not valid: {where}", kind="RequestValidationError")

    app.add_exception_handler(Unauthenticated, unauthenticated)
    app.add_exception_handler(Forbidden, forbidden)
    app.add_exception_handler(RunbookError, runbook_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
