"""The expression context of a running run, built without copying the whole run.

Guards, templates, outputs and asserts read ``steps.<id>.status|outputs|hosts``.
Copying every step's outputs for every template (what the conductor's own
``context()`` does) costs time in proportion to the size of the run, for each
step: a 1,000-step run spent most of its time there. ``StepsView`` reads the
live state instead and copies only the step an expression actually looks at,
so a template cannot change the saved state even if a filter returned its
input, and the cost per template no longer grows with the run.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

from executor.conductor import ConductorState


class StepsView(Mapping[str, Mapping[str, Any]]):
    """``steps`` as expressions see it: one entry per step, built when read."""

    __slots__ = ("_state",)

    def __init__(self, state: ConductorState) -> None:
        self._state = state

    def __getitem__(self, step_id: str) -> Mapping[str, Any]:
        record = self._state.steps[step_id]
        return {
            "status": record.status.value,
            "outputs": copy.deepcopy(record.outputs),
            "hosts": copy.deepcopy(record.hosts),
        }

    def __contains__(self, step_id: object) -> bool:
        return step_id in self._state.steps

    def __iter__(self) -> Iterator[str]:
        return iter(self._state.steps)

    def __len__(self) -> int:
        return len(self._state.steps)


def expression_context(
    state: ConductorState,
    *,
    inputs: Mapping[str, Any],
    run: Mapping[str, Any],
    alert: Mapping[str, Any] | None,
    secrets: Mapping[str, Any],
) -> dict[str, Any]:
    """The names an expression may read (``expressions.CONTEXT_NAMES`` but ``result``)."""
    return {
        "inputs": dict(inputs),
        "steps": StepsView(state),
        "run": dict(run),
        "alert": dict(alert or {}),
        "secrets": dict(secrets),
    }
