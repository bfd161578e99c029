"""The conductor state as the plain mapping the store keeps, built cheaply.

``ConductorState.to_json`` followed by ``json.loads`` (and the store's own
``json.dumps``) serialised the whole run three times for every save; saving
happens before every step, so on long runs that dominated the engine's time.
This builds the same mapping directly and the store serialises it once: the
records' own attribute dictionaries are handed over as they are (the store
encodes them before the state moves on, in the same thread), and the
history, which only ever grows, is converted once per transition rather than
once per save.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from executor.conductor import ConductorState, SagaItem, StepRecord, Transition

_STATE = tuple(f.name for f in fields(ConductorState))
_STEP = tuple(f.name for f in fields(StepRecord))
_SAGA = tuple(f.name for f in fields(SagaItem))


def _record(value: Any, names: tuple[str, ...]) -> dict[str, Any]:
    attributes = getattr(value, "__dict__", None)
    if attributes is not None and len(attributes) == len(names):
        return attributes  # exactly the dataclass fields, as the conductor holds them
    return {name: getattr(value, name) for name in names}


def state_document(state: ConductorState, history: list[dict[str, Any]] | None = None) -> dict:
    """What ``json.loads(state.to_json())`` gives, without the round trip.

    The result shares its nested objects with the live state: serialise it
    (hand it to the store) before the state changes again.
    """
    document = {name: getattr(state, name) for name in _STATE}
    document["steps"] = {sid: _record(rec, _STEP) for sid, rec in state.steps.items()}
    document["saga"] = None if state.saga is None else [_record(i, _SAGA) for i in state.saga]
    document["history"] = history if history is not None else [t.as_dict() for t in state.history]
    return document


class Snapshots:
    """``state_document`` for one run saved again and again: history converted once."""

    def __init__(self) -> None:
        self._source: list[Transition] | None = None
        self._last: Transition | None = None
        self._history: list[dict[str, Any]] = []

    def document(self, state: ConductorState) -> dict[str, Any]:
        history = state.history
        done = len(self._history)
        if (
            history is not self._source  # the conductor restored a backup: a new list
            or len(history) < done
            or (done and history[done - 1] is not self._last)
        ):
            self._source, self._history, done = history, [], 0
        self._history.extend(t.as_dict() for t in history[done:])
        self._last = history[-1] if history else None
        return state_document(state, self._history)
