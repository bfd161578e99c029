"""The engine's own run loop, made deterministic for rehearsals.

``RehearsedExecution`` is ``executor.engine.runner.RunExecution`` with two
differences, both about time and threads and neither about decisions:

* actions run inline on the loop thread instead of in a thread pool. Scripted
  results are instant, and running them in submission order makes the order
  in which parallel branches finish, and so the path a scenario expects,
  the same on every run and on every machine;
* a retry's delay moves the simulated clock instead of arming a
  ``threading.Timer``, so a step with ``retries: {count: 15, delay: 2s}``
  rehearses in microseconds while the run's timeout still sees the 30 s.

Everything else (guards, outputs, asserts, approvals, the kill-switch, the
saga, the audit trail) is the production code path.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

from executor.engine.runner import RunExecution
from executor.rehearsal.world import SimulatedClock


class InlineExecutor(Executor):
    """An ``Executor`` that runs each task at once, in the caller's thread."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the future, as a pool would
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        return None


class RehearsedExecution(RunExecution):
    """``RunExecution`` with inline actions and retries on the simulated clock."""

    def __init__(self, *args: Any, clock: SimulatedClock, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pool.shutdown(wait=False)
        self.pool = InlineExecutor()  # type: ignore[assignment]
        self.simulated_clock = clock

    def _schedule_retry(self, step_id: str, delay: float) -> None:
        self.audit("step.retry", step=step_id, delay=delay)
        self.simulated_clock.advance(delay)
        if self.conductor.startable(step_id):
            self._start(self.runbook.step(step_id))
