"""The worker pool: a fixed number of threads executing runs through the engine.

A run that reaches an approval gives its worker back (the engine returns
``waiting`` instead of blocking); it is resumed, on any worker, when a
decision arrives through the API or the watcher finds one recorded by
another process. A run is never executed by two workers at once: a resume
asked for while the run is executing is remembered and done when it pauses.

Runs handed to the pool are already recorded in the store (``pending``), so
the queue in memory can be dropped at shutdown: the next server resumes them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from executor import engine
from executor.engine.services import Services
from executor.engine.starting import PreparedRun
from executor.errors import RunbookError
from executor.model import Runbook, RunStatus

log = logging.getLogger("runbook.serve")

Progress = Callable[[str, Mapping[str, Any]], None]


@dataclass(frozen=True)
class Job:
    run_id: str
    book: Runbook | None = None
    prepared: PreparedRun | None = None  # a fresh run; None: resume a stored one


class RunHooks:
    """What the pool tells the rest of the server (metrics, logs); all optional."""

    def progress(self, job: Job) -> Progress:
        return lambda _event, _data: None

    def started(self, job: Job) -> None:
        return None

    def ended(self, job: Job, status: RunStatus | None, error: BaseException | None) -> None:
        return None


class RunPool:
    def __init__(
        self,
        services: Services,
        *,
        workers: int,
        hooks: RunHooks | None = None,
    ) -> None:
        self.services = services
        self.hooks = hooks or RunHooks()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._active: set[str] = set()  # queued or executing
        self._executing: set[str] = set()
        self._again: set[str] = set()
        self._threads = [
            threading.Thread(target=self._work, name=f"run-worker-{i}", daemon=True)
            for i in range(max(1, workers))
        ]
        self._accepting = True

    # -------------------------------------------------------------- handing in

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def execute(self, book: Runbook, prepared: PreparedRun) -> None:
        """Execute a run that ``prepare`` just recorded."""
        with self._lock:
            self._active.add(prepared.run_id)
        self._queue.put(Job(prepared.run_id, book, prepared))

    def resume(self, run_id: str) -> bool:
        """Continue a stored run; False if it is executing (it is resumed when it pauses)."""
        with self._lock:
            if not self._accepting:
                return False
            if run_id in self._active:
                self._again.add(run_id)
                return False
            self._active.add(run_id)
        self._queue.put(Job(run_id))
        return True

    def active(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._active

    def counts(self) -> tuple[int, int]:
        """(runs executing, runs waiting for a worker)."""
        with self._lock:
            return len(self._executing), len(self._active) - len(self._executing)

    def executing(self) -> list[str]:
        with self._lock:
            return sorted(self._executing)

    # -------------------------------------------------------------- the workers

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                if not self._accepting:
                    self._active.discard(job.run_id)
                    continue
                self._executing.add(job.run_id)
            status, error = None, None
            try:
                self.hooks.started(job)
                status = self._run(job)
            except RunbookError as exc:
                error = exc
                log.warning("run %s stopped: %s", job.run_id, exc)
            except Exception as exc:  # a bug must not kill the worker
                error = exc
                log.exception("run %s failed unexpectedly", job.run_id)
            finally:
                self._finish(job, status, error)

    def _run(self, job: Job) -> RunStatus:
        progress = self.hooks.progress(job)
        if job.prepared is not None and job.book is not None:
            return engine.execute(
                self.services, job.book, job.prepared, on_progress=progress, wait_for_people=False
            )
        return engine.resume(self.services, job.run_id, on_progress=progress, wait_for_people=False)

    def _finish(self, job: Job, status: RunStatus | None, error: BaseException | None) -> None:
        with self._lock:
            self._executing.discard(job.run_id)
            self._active.discard(job.run_id)
            again = job.run_id in self._again and status is RunStatus.WAITING
            self._again.discard(job.run_id)
        try:
            self.hooks.ended(job, status, error)
        except Exception:
            log.exception("after run %s", job.run_id)
        if again:
            self.resume(job.run_id)

    # -------------------------------------------------------------- stopping

    def stop(self, grace: float) -> list[str]:
        """Take no more work, let executing runs go on for ``grace`` seconds; the unfinished."""
        with self._lock:
            self._accepting = False
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + grace
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return self.executing()
