"""The ``log`` action: a message in the run's transcript and audit.

It touches nothing, so it runs in a dry run too: a rehearsal reads the same
narration as the real incident.
"""

from __future__ import annotations

from executor.actions import expect_action
from executor.model import LogAction
from executor.ports import ActionRequest, ActionResult, CancelToken


class LogRunner:
    """Reports the (already rendered) message as ``stdout``, masked."""

    kind = "log"

    def run(self, request: ActionRequest, cancel: CancelToken) -> ActionResult:
        action = expect_action(request, LogAction, self.kind)
        data = {"dry_run": True} if request.dry_run else {}
        return ActionResult(ok=True, stdout=request.mask(action.message), data=data)
