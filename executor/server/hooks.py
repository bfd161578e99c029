"""Metrics from the engine's progress events, and what the pool tells the server.

The engine reports each step as it starts and ends; these hooks turn that
into counters and histograms (steps by action and status, time from an alert
to its run's first step, approval wait) and note an unwritable audit log so
``/readyz`` says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from executor.engine.services import Services
from executor.errors import AuditWriteError, RunbookError
from executor.model import RunStatus
from executor.server.metrics import Metrics
from executor.server.pool import Job, Progress, RunHooks


class Health(Protocol):
    problem: str | None


class RunMetrics(RunHooks):
    def __init__(self, metrics: Metrics, services: Services, health: Health) -> None:
        self.metrics = metrics
        self.services = services
        self.health = health

    def progress(self, job: Job) -> Progress:
        metrics = self.metrics
        kinds = {s.id: s.kind for s in job.book.steps} if job.book is not None else {}
        first = {"seen": job.prepared is None}  # only a fresh run's first step counts

        def on(event: str, data: Mapping[str, Any]) -> None:
            step = str(data.get("step", ""))
            if event == "step.started":
                kinds.setdefault(step, str(data.get("kind", "")))
                if not first["seen"]:
                    first["seen"] = True
                    self._first_action(job)
            elif event == "step.finished":
                status = "succeeded" if data.get("ok") else "failed"
                metrics.steps.labels(kinds.get(step, "unknown"), status).inc()
            elif event == "step.skipped":
                metrics.steps.labels(kinds.get(step, "unknown"), "skipped").inc()
            elif event == "approval.decided":
                self._approval_wait(job, step, data)

        return on

    def _first_action(self, job: Job) -> None:
        prepared = job.prepared
        if prepared is None or prepared.request.trigger != "alert":
            return
        alert_id = (prepared.request.alert or {}).get("alert_id")
        if alert_id is None:
            return
        store: Any = self.services.store
        try:
            received = store.get_alert(alert_id)["received"]
        except RunbookError:
            return
        self.metrics.first_action.labels(prepared.request.runbook.name).observe(
            max(0.0, self.services.clock.now() - received)
        )

    def _approval_wait(self, job: Job, step: str, data: Mapping[str, Any]) -> None:
        try:
            run = self.services.store.get_run(job.run_id)
        except RunbookError:
            return
        since = (((run.get("state") or {}).get("steps") or {}).get(step) or {}).get("started_at")
        if since is not None and data.get("at") is not None:
            self.metrics.approval_wait.labels(run["runbook"]).observe(
                max(0.0, float(data["at"]) - float(since))
            )

    def started(self, job: Job) -> None:
        if job.prepared is not None:
            request = job.prepared.request
            self.metrics.runs_started.labels(request.runbook.name, request.trigger).inc()

    def ended(self, job: Job, status: RunStatus | None, error: BaseException | None) -> None:
        if isinstance(error, AuditWriteError):
            self.health.problem = f"the audit log cannot be written: {error.message}"
        if status is not None and status.terminal:
            try:
                run = self.services.store.get_run(job.run_id)
            except RunbookError:
                return
            self.metrics.runs_finished.labels(run["runbook"], status.value).inc()
