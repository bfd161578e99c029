"""Running the rollback saga the conductor hands out, one compensating action at a time.

Part of ``RunExecution`` (a mixin). The conductor marks a rollback action
running when it hands it out; that state is saved before the action starts,
so a crash leaves it ``unknown`` for an operator (``runbook resolve``) rather
than undone twice.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any

from executor import conductor as cd
from executor.engine.render import describe, render_action
from executor.engine.services import Services
from executor.engine.work import Done, Progress, digest
from executor.errors import ExpressionError, RunbookError
from executor.masking import Masker
from executor.model import HOST_KINDS, Runbook, Step
from executor.ports import ActionResult, CancelToken


class RollbackSaga:
    """Rollback handling of ``RunExecution``; it provides every attribute used here."""

    services: Services
    runbook: Runbook
    masker: Masker
    conductor: cd.Conductor
    on_progress: Progress
    tokens: dict[str, CancelToken]
    in_flight: set[str]
    done: queue.Queue[Done]
    pool: Executor
    audit: Callable[..., None]
    context: Callable[..., dict[str, Any]]
    save: Callable[..., None]
    _fetch_secrets: Callable[[Step], bool]
    _hosts: Callable[[Step, Any, Mapping[str, Any]], list[str]]
    _act_on: Callable[..., ActionResult]

    def _start_rollback(self, step_id: str, index: int) -> None:
        step = self.runbook.step(step_id)
        key = f"{step_id}#rollback{index}"
        try:
            self._fetch_secrets(step)
            context = self.context()
            action = render_action(step.rollback[index], context)
            hosts = self._hosts(step, action, context) if action.kind in HOST_KINDS else []
        except (ExpressionError, RunbookError) as exc:
            self.in_flight.add(step_id)
            error = self.masker.mask(str(exc))
            self.done.put(Done(step_id, 0, ActionResult(ok=False, error=error), index))
            return
        self.audit(
            "rollback.intent",
            step=step_id,
            index=index,
            action=describe(action, self.masker.mask),
            hosts=hosts,
        )
        self.save()  # the saga says this action runs: durable before it does
        self.on_progress("rollback.started", {"step": step_id, "index": index})
        token = CancelToken()
        self.tokens[key] = token
        self.in_flight.add(step_id)

        def work() -> None:
            result = self._act_on(step, action, hosts, token, audit_events=False)
            self.done.put(Done(step_id, 0, result, rollback_index=index))

        self.pool.submit(work)

    def _rollback_finished(self, item: Done) -> None:
        result = item.result
        error = result.error or (None if result.ok else f"exit code {result.rc}")
        error = self.masker.mask(error) if error else None
        self.tokens.pop(f"{item.step_id}#rollback{item.rollback_index}", None)
        self.audit(
            "rollback.outcome",
            step=item.step_id,
            index=item.rollback_index,
            ok=result.ok,
            rc=result.rc,
            error=error,
            stdout_sha256=digest(result.stdout),
        )
        self.conductor.handle(
            cd.RollbackFinished(
                item.step_id,
                item.rollback_index,  # type: ignore[arg-type]
                ok=result.ok,
                error=error,
                at=self.services.clock.now(),
            )
        )
        self.on_progress(
            "rollback.finished", {"step": item.step_id, "ok": result.ok, "error": error}
        )
