"""Saving the conductor state after every event, at the cost of what changed.

The engine saves the state before every step starts and after every finish,
so a save that wrote the whole run made a run of n steps cost O(n^2). A store
that can keep the state by parts (``save_state``: the run-level fields, one
record per step, the history as rows) gets only the step records the
conductor changed since the last save and the history entries added since;
any other store (a rehearsal's in memory) gets the whole document, as before.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from executor.conductor import Conductor, ConductorState, SagaItem, StepRecord, Transition

_STATE = tuple(f.name for f in fields(ConductorState))
_HEAD = tuple(name for name in _STATE if name not in ("steps", "history"))
_STEP = tuple(f.name for f in fields(StepRecord))
_SAGA = tuple(f.name for f in fields(SagaItem))


def _record(value: Any, names: tuple[str, ...]) -> dict[str, Any]:
    attributes = getattr(value, "__dict__", None)
    if attributes is not None and len(attributes) == len(names):
        return attributes  # exactly the dataclass fields, as the conductor holds them
    return {name: getattr(value, name) for name in names}


def state_head(state: ConductorState) -> dict[str, Any]:
    """The run-level part of the state: everything but ``steps`` and ``history``."""
    head = {name: getattr(state, name) for name in _HEAD}
    head["saga"] = None if state.saga is None else [_record(i, _SAGA) for i in state.saga]
    return head


def state_document(state: ConductorState, history: list[dict[str, Any]] | None = None) -> dict:
    """What ``json.loads(state.to_json())`` gives, without the round trip.

    The result shares its nested objects with the live state: serialise it
    (hand it to the store) before the state changes again.
    """
    document = state_head(state)
    document["steps"] = {sid: _record(rec, _STEP) for sid, rec in state.steps.items()}
    document["history"] = history if history is not None else [t.as_dict() for t in state.history]
    return document


class Snapshots:
    """Saves one run's state again and again, each time only what changed."""

    def __init__(self) -> None:
        self._document = _HistoryMark()  # history converted for whole documents
        self._history: list[dict[str, Any]] = []
        self._saved = _HistoryMark()  # history entries a store keeping parts holds
        self._positions: tuple[int, dict[str, int]] = (0, {})

    def document(self, state: ConductorState) -> dict[str, Any]:
        """The whole state as a plain mapping (history converted once per entry)."""
        done = self._document.kept(state.history, len(self._history))
        del self._history[done:]
        self._history.extend(t.as_dict() for t in state.history[done:])
        self._document.seen(state.history)
        return state_document(state, self._history)

    def save(self, store: Any, run_id: str, conductor: Conductor, **fields: Any) -> None:
        """Write the state (and the run ``fields`` given) to ``store`` in one transaction."""
        state = conductor.state
        save_state = getattr(store, "save_state", None)
        if save_state is None:  # a store that keeps the state whole
            store.update_run(run_id, state=self.document(state), **fields)
            return
        history = state.history
        start = self._saved.kept(history, self._saved.count)
        positions = self._positions_of(state)
        save_state(
            run_id,
            head=state_head(state),
            steps=[
                (positions[sid], sid, _record(state.steps[sid], _STEP))
                for sid in sorted(conductor.changed_steps(), key=positions.__getitem__)
            ],
            history=[t.as_dict() for t in history[start:]],
            history_from=start,
            **fields,
        )
        conductor.mark_saved()
        self._saved.seen(history)

    def _positions_of(self, state: ConductorState) -> dict[str, int]:
        if self._positions[0] != id(state.steps):
            self._positions = (id(state.steps), {sid: i for i, sid in enumerate(state.steps)})
        return self._positions[1]


class _HistoryMark:
    """Which history list, how long and ending with which entry, when last looked at.

    The history only grows; if the list was replaced or no longer ends where it
    did, everything is taken again from the start.
    """

    def __init__(self) -> None:
        self.source: list[Transition] | None = None
        self.last: Transition | None = None
        self.count = 0

    def kept(self, history: list[Transition], done: int) -> int:
        """How many of the first ``done`` entries of ``history`` are still the ones seen."""
        if (
            history is not self.source
            or len(history) < done
            or (done and history[done - 1] is not self.last)
        ):
            return 0
        return done

    def seen(self, history: list[Transition]) -> None:
        self.source, self.count = history, len(history)
        self.last = history[-1] if history else None
