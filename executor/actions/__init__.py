"""Action runners: the adapters that carry out a step's action (DESIGN.md section 2).

Each module holds one ``ActionRunner`` (``executor.ports``); ``executor.wiring``
chooses which to register. Runners are imported lazily so that loading one
(say ``ssh``) does not pull in the libraries of all the others.
"""

from __future__ import annotations

from typing import TypeVar

from executor.errors import ActionError
from executor.ports import ActionRequest, ActionRunner

A = TypeVar("A")


def default_runners() -> dict[str, ActionRunner]:
    """Runners that need no configuration: ``local``, ``http``, ``wait``, ``log``, by kind."""
    from executor.actions.http import HttpRunner
    from executor.actions.local import LocalRunner
    from executor.actions.log import LogRunner
    from executor.actions.wait import WaitRunner

    runners: list[ActionRunner] = [LocalRunner(), HttpRunner(), WaitRunner(), LogRunner()]
    return {runner.kind: runner for runner in runners}


def expect_action(request: ActionRequest, cls: type[A], kind: str) -> A:
    """The request's action as ``cls``; a mismatch is a wiring bug, not a step failure."""
    action = request.action
    if not isinstance(action, cls):
        raise ActionError(
            f"step {request.step_id!r}: the {kind} runner got a {action.kind!r} action",
            hint="this is a wiring bug: register each runner under the kind it implements",
        )
    return action
