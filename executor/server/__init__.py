"""``runbook serve``: the executor as a long-running HTTP service (FastAPI on uvicorn).

It receives Alertmanager's webhook, stores every alert before answering,
decides each one through the routes and guardrails of ``executor.triggers``,
executes runs in a bounded worker pool through the same engine as the CLI,
and exposes runs, approvals, the kill-switch, the audit, ``/metrics`` and
health checks to callers with a bearer token.
"""

from __future__ import annotations

from executor.server.app import create_app, serve
from executor.server.config import ServerConfig, load_server_config
from executor.server.runtime import Runtime

__all__ = ["Runtime", "ServerConfig", "create_app", "load_server_config", "serve"]
