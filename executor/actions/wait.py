"""The ``wait`` action: let the world settle (a restart, a cache to expire).

A wait is the one step a responder is most likely to want to cut short, so it
ends the moment the kill-switch or ``runbook kill`` fires, not when the
duration is over.
"""

from __future__ import annotations

from executor.actions import expect_action
from executor.model import WaitAction, format_duration
from executor.ports import ActionRequest, ActionResult, CancelToken, Clock


class WaitRunner:
    """Sleeps ``duration`` seconds, bounded by the step timeout; wakes on cancel.

    ``clock`` lets a test or rehearsal substitute time; without one the wait
    is the cancel token's own wait, which returns as soon as it is set.
    """

    kind = "wait"

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock

    def run(self, request: ActionRequest, cancel: CancelToken) -> ActionResult:
        action = expect_action(request, WaitAction, self.kind)
        duration = max(action.duration, 0.0)
        if request.dry_run:
            return ActionResult(ok=True, data={"dry_run": True, "would_wait": duration})
        limit = duration if request.timeout is None else min(duration, request.timeout)
        if self._sleep(limit, cancel):
            return ActionResult(
                ok=False,
                cancelled=True,
                error=request.mask(
                    f"cancelled during a {format_duration(duration)} wait: "
                    f"{cancel.reason or 'no reason given'}"
                ),
            )
        if limit < duration:
            return ActionResult(
                ok=False,
                timed_out=True,
                error=f"timed out after {format_duration(limit)}: the step timeout is shorter "
                f"than its {format_duration(duration)} wait; raise the timeout or shorten the wait",
            )
        return ActionResult(ok=True, data={"waited": duration})

    def _sleep(self, seconds: float, cancel: CancelToken) -> bool:
        if self.clock is not None:
            return self.clock.sleep(seconds, cancel)
        return cancel.wait(seconds)
