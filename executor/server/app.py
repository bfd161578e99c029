"""The FastAPI application: routers, error answers, and the runtime's life.

``create_app(runtime)`` builds the app around a runtime that is started when
the app starts and stopped when it stops (uvicorn stops it on SIGTERM after
the open requests are answered). ``serve(...)`` runs it under uvicorn.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from executor.server import api_alerts, api_control, api_runs
from executor.server.deps import install_error_handlers
from executor.server.runtime import Runtime

log = logging.getLogger("runbook.serve")

DESCRIPTION = """\
The HTTP face of the runbook executor: Alertmanager's webhook, runs, approvals,
the kill-switch, the audit, metrics and health.

Every `/v1` call needs `Authorization: Bearer TOKEN`; tokens map to identities
and groups in the server config. 401: no or unknown token. 403: the identity
lacks the permission. Errors are `{"error", "hint", "kind"}`.
"""


def create_app(runtime: Runtime, *, manage_runtime: bool = True) -> FastAPI:
    """The app; with ``manage_runtime`` it starts and stops ``runtime`` with itself."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if manage_runtime:
            runtime.start()
            log.info(
                "runbook serve: %d token(s), routes %s, %d run(s) resumed",
                len(runtime.tokens),
                runtime.routes.table().source,
                len(runtime.recovered),
            )
        try:
            yield
        finally:
            if manage_runtime:
                unfinished = runtime.stop()
                if unfinished:
                    log.warning(
                        "stopped with %d run(s) executing: %s; they resume at the next start",
                        len(unfinished),
                        ", ".join(unfinished),
                    )

    app = FastAPI(
        title="runbook executor",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.include_router(api_alerts.router)
    app.include_router(api_runs.router)
    app.include_router(api_control.router)
    return app


def serve(runtime: Runtime, *, log_level: str = "info", **uvicorn_options: Any) -> None:
    """Run under uvicorn until SIGTERM or SIGINT; the runtime stops cleanly then."""
    import uvicorn

    config = uvicorn.Config(
        create_app(runtime),
        host=runtime.config.host,
        port=runtime.config.port,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=max(1, int(runtime.config.shutdown_grace)),
        **uvicorn_options,
    )
    logging.getLogger("uvicorn.access").addFilter(_QuietProbes())
    # uvicorn handles SIGTERM/SIGINT (graceful shutdown), then raises the signal again
    # for the handler that was there before it: make that one a no-op, so a clean
    # stop exits 0 instead of dying by the signal after everything was saved.
    received: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda number, _frame: received.append(number))
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        uvicorn.Server(config).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        log.info("stopped by signal %s", ", ".join(signal.Signals(s).name for s in received))


class _QuietProbes(logging.Filter):
    """Scrapes and health probes every second would drown the access log."""

    _PATHS = ('"GET /metrics ', '"GET /healthz ', '"GET /readyz ')

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not any(path in text for path in self._PATHS)
