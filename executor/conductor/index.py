"""Indexes over a run's step records, so an event costs what it touches, not the run.

Scanning every step on every event made a run of n steps cost O(n^2). The
conductor keeps these sets beside the state instead: which steps are in each
status, which are ready, and which undecided steps may have changed their
verdict (their needs moved, or the run's mode or saga did). They are derived
data: never saved, rebuilt from the state whenever it is loaded or an event
is undone.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence

from executor.conductor.state import StepRecord
from executor.model import Step, StepStatus


class StepIndex:
    """Status sets, the ready set and the dirty set of one run, in run order.

    ``dirty`` holds undecided steps whose verdict may have changed. A step
    that is not dirty and still undecided was found waiting for its needs,
    and stays so until one of them moves (``moved``) or everything is
    re-examined (``touch_all``). A pass of ``Conductor._advance`` visits the
    dirty steps in run order; steps dirtied behind its cursor wait for the
    next pass, exactly as a pass over every step would find them.
    """

    def __init__(self, order: Sequence[str], steps: Mapping[str, Step]) -> None:
        self.position = {sid: i for i, sid in enumerate(order)}
        self.children: dict[str, list[str]] = {sid: [] for sid in order}
        for sid in order:
            for need in steps[sid].needs:
                self.children[need].append(sid)
        self.by_status: dict[StepStatus, set[str]] = {}
        self.ready: set[str] = set()  # not terminal, ready set (a superset: re-check the record)
        self.dirty: set[str] = set()
        self._pass: list[int] | None = None  # heap of positions still to visit in this pass
        self._queued: set[str] = set()
        self._cursor = -1

    def rebuild(self, records: Mapping[str, StepRecord]) -> None:
        """Everything from the records; every step is re-examined."""
        self.by_status = {status: set() for status in StepStatus}
        self.ready = set()
        for sid, rec in records.items():
            self.by_status[rec.status].add(sid)
            if rec.ready and not rec.status.terminal:  # RUNNING may come back for a retry
                self.ready.add(sid)
        self._pass, self._queued, self._cursor = None, set(), -1
        self.dirty = set(records)

    # ------------------------------------------------------------------ updates

    def moved(self, sid: str, old: StepStatus, new: StepStatus) -> None:
        self.by_status[old].discard(sid)
        self.by_status[new].add(sid)
        if new.terminal:
            self.ready.discard(sid)
        for child in self.children[sid]:
            self.touch(child)

    def touch(self, sid: str) -> None:
        """``sid`` may have a new verdict: visit it in this pass if still ahead, else the next."""
        if self._pass is not None and self.position[sid] > self._cursor:
            if sid not in self._queued:
                self._queued.add(sid)
                heapq.heappush(self._pass, self.position[sid])
        else:
            self.dirty.add(sid)

    def touch_all(self) -> None:
        """The run's mode or saga changed: every undecided step may have a new verdict."""
        for sid in self.by_status[StepStatus.PENDING]:
            self.touch(sid)

    # ------------------------------------------------------------------ a pass

    def begin_pass(self) -> None:
        self._queued, self.dirty = self.dirty, set()
        self._pass = sorted(self.position[sid] for sid in self._queued)
        self._cursor = -1

    def next_in_pass(self, order: Sequence[str]) -> str | None:
        if not self._pass:
            return None
        self._cursor = heapq.heappop(self._pass)
        sid = order[self._cursor]
        self._queued.discard(sid)
        return sid

    def end_pass(self) -> None:
        self._pass, self._queued, self._cursor = None, set(), -1

    # ------------------------------------------------------------------ reading

    def in_order(self, sids: Iterable[str]) -> list[str]:
        return sorted(sids, key=self.position.__getitem__)

    def with_status(self, status: StepStatus) -> tuple[str, ...]:
        return tuple(self.in_order(self.by_status[status]))

    def count(self, *statuses: StepStatus) -> int:
        return sum(len(self.by_status[s]) for s in statuses)

    def undecided_candidates(self) -> set[str]:
        """Steps whose verdict may differ from 'wait' (the others were found waiting)."""
        return self.dirty | self._queued
