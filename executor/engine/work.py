"""What passes between the run loop and its worker threads.

Workers never touch the conductor: they post a ``Done`` to the loop's queue
and the loop thread, the only one that changes the state, settles it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from executor.model import Action, Step
from executor.ports import ActionResult

Progress = Callable[[str, Mapping[str, Any]], None]
"""Where live progress goes (the CLI prints it, the server counts it): event, data."""


def noop(_event: str, _data: Mapping[str, Any]) -> None:
    return None


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


@dataclass
class Done:
    """A finished piece of work, posted by a worker thread to the loop thread."""

    step_id: str
    attempt: int
    result: ActionResult
    rollback_index: int | None = None
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Launch:
    """A step whose intent is recorded and whose state says running: hand it to a worker."""

    step: Step
    attempt: int
    action: Action | None
    hosts: list[str]
    shown: dict[str, Any]
