"""Everything a running server holds, started and stopped in the right order.

Start: resume interrupted runs, then the workers, the dispatcher, the
watcher and the alert writer. Stop (SIGTERM): take no new alerts, write the
ones already accepted, stop deciding, give executing runs ``shutdown_grace``
to end or pause, and leave the rest as they are in the store: the next
server resumes them and the engine marks their in-flight steps ``unknown``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from executor.config import Settings
from executor.engine.services import Services
from executor.errors import RunbookError
from executor.model import RunStatus
from executor.server.auth import TokenBook
from executor.server.config import ServerConfig
from executor.server.hooks import RunMetrics
from executor.server.intake import Intake
from executor.server.metrics import Metrics
from executor.server.pool import RunPool
from executor.server.watcher import Watcher
from executor.triggers import Alert, CatalogView, Dispatcher, RunStarter, StoreFacts
from executor.triggers.dispatch import ACTOR
from executor.triggers.sources import RoutesFile, default_routes

log = logging.getLogger("runbook.serve")


class Runtime:
    """The server's parts; the HTTP app holds one."""

    def __init__(self, settings: Settings, config: ServerConfig, services: Services) -> None:
        self.settings = settings
        self.config = config
        self.services = services
        self.name = f"serve-{os.getpid()}"
        self.problem: str | None = None
        self.catalog = CatalogView(settings.catalog)
        routes_path = config.routes
        if routes_path is None:
            routes_path = default_routes(settings.catalog)
        self.routes = RoutesFile(routes_path, self.catalog)
        self.tokens = TokenBook(config, settings.identities)
        self.facts = StoreFacts(
            services.store,  # type: ignore[arg-type]
            self.catalog,
            inventory=services.inventory,
            clock=services.clock.now,
        )
        self.metrics = Metrics(self._gauges)
        self.pool = RunPool(
            services, workers=config.workers, hooks=RunMetrics(self.metrics, services, self)
        )
        self.starter = RunStarter(services, self.catalog, self.facts, self.pool.execute)
        self.dispatcher = Dispatcher(
            services, self.facts, self.starter, self.routes.table, on_decided=self.metrics.decided
        )
        self.intake = Intake(
            services.store, services.audit, max_queue=config.max_queue, on_stored=self._stored
        )
        self.watcher = Watcher(services, self.pool)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.recovered: list[str] = []
        self.unfinished: list[str] = []

    # ------------------------------------------------------------------ life

    def start(self) -> None:
        self.services.audit.append(
            "serve.started",
            actor=ACTOR,
            data={
                "pid": os.getpid(),
                "listen": f"{self.config.host}:{self.config.port}",
                "routes": self.routes.table().source,
                "workers": self.config.workers,
            },
        )
        self._warm_up()
        self.recovered = self.watcher.recover()
        self.pool.start()
        self.intake.start()
        self._wake.set()  # alerts accepted before a restart are decided at once
        for name, target in (
            ("alert-dispatcher", self._dispatch_loop),
            ("run-watcher", self._watch_loop),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _warm_up(self) -> None:
        """Load what the first alert would otherwise wait for (the inventory, the catalog)."""
        self.catalog.refresh()
        inventory = self.services.inventory
        if inventory is not None:
            try:
                inventory.resolve("all")
            except RunbookError as exc:
                log.warning("the inventory cannot be read: %s", exc)

    def stop(self) -> list[str]:
        """Stop in order; returns the runs still executing when the grace ran out."""
        self.intake.close()
        self._stopping.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(10.0)
        unfinished = self.pool.stop(self.config.shutdown_grace)
        self.unfinished = unfinished
        try:
            self.services.audit.append(
                "serve.stopped",
                actor=ACTOR,
                data={
                    "pid": os.getpid(),
                    "unfinished": unfinished,
                    "note": "unfinished runs resume at the next start; their in-flight steps "
                    "become unknown"
                    if unfinished
                    else "every run ended or paused",
                },
            )
        except RunbookError:
            log.exception("could not audit the server stop")
        return unfinished

    # ------------------------------------------------------------------ loops

    def _stored(self, _alerts: Sequence[Alert]) -> None:
        for alert in _alerts:
            self.metrics.alerts_received.labels(alert.status).inc()
        self._wake.set()

    def _dispatch_loop(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            while not self._stopping.is_set():
                _executing, pending = self.pool.counts()
                if pending >= self.config.max_pending_runs:
                    time.sleep(0.05)  # runs wait for workers: leave alerts queued (durable)
                    continue
                try:
                    rows = self.services.store.queued_alerts(self.config.batch)  # type: ignore[attr-defined]
                    if not rows:
                        break
                    self.dispatcher.dispatch(rows)
                    self.intake.decided(len(rows))
                    self.problem = None
                    backoff = 0.5
                except RunbookError as exc:
                    self.problem = f"deciding alerts failed: {exc}"
                    log.error("%s (retrying in %.1fs)", self.problem, backoff)
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
                except Exception:
                    log.exception("deciding alerts failed unexpectedly")
                    self._stopping.wait(backoff)

    def _watch_loop(self) -> None:
        while not self._stopping.wait(self.config.poll_interval):
            try:
                self.watcher.poll()
            except RunbookError as exc:
                log.warning("watching waiting runs: %s", exc)
            except Exception:
                log.exception("watching waiting runs failed unexpectedly")

    def nudge(self, run_id: str) -> None:
        """Something changed for ``run_id`` (a decision, a kill): resume it if it is ours."""
        if self.pool.active(run_id):  # executing here: resumed again if it pauses
            self.pool.resume(run_id)
            return
        run = self.services.store.get_run(run_id)
        if self.watcher.ours(run) and run["status"] == RunStatus.WAITING.value:
            self.pool.resume(run_id)

    # ------------------------------------------------------------------ state

    def _gauges(self) -> dict[str, Any]:
        executing, pending = self.pool.counts()
        switches = {k["scope"] for k in self.services.store.killswitches()}
        return {
            "killswitch": switches,
            "queued": self.intake.backlog,
            "executing": executing,
            "pending": pending,
        }

    def ready(self) -> list[str]:
        """Why the server is not ready (empty when it is): store, audit, dispatcher."""
        problems = []
        try:
            self.services.store.heartbeat(self.name, {"pid": os.getpid()})  # type: ignore[attr-defined]
        except RunbookError as exc:
            problems.append(f"state store: {exc.message}")
        audit_path = getattr(self.services.audit, "path", None)
        if audit_path is not None:
            problem = _audit_writable(Path(audit_path))
            if problem:
                problems.append(problem)
        if self.problem:
            problems.append(self.problem)
        if self.routes.error:
            problems.append(self.routes.error)
        return problems


def _audit_writable(path: Path) -> str | None:
    """Open the audit log for appending (writing nothing) and check its disk has room."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.close(fd)
        space = os.statvfs(path.parent)
    except OSError as exc:
        return f"audit log {path}: {exc.strerror}"
    if space.f_bavail * space.f_frsize < 1024 * 1024:
        return f"audit log {path}: less than 1 MiB free on its disk"
    return None
