"""Which stored runs the server must pick up: at start, and while they wait.

At start, every run a server started (trigger ``alert`` or ``api``) that has
not ended is resumed, unless a live process executes it: a run that was
executing when the last server died has its in-flight steps marked
``unknown`` by the engine, one waiting for approval is announced again.

While a run waits it holds no worker, so the watcher looks every
``poll_interval`` for what would move it: a decision recorded by the CLI or
another server, an approval that expired, a kill, the kill-switch, or an
operator who settled its ``unknown`` steps with ``runbook resolve``. While
the kill-switch applies to a waiting run it is left alone: the engine refuses
to resume it until the switch is released.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from executor import engine
from executor.engine.ownership import live_holder
from executor.engine.services import Services
from executor.errors import RunbookError
from executor.server.pool import RunPool

SERVER_TRIGGERS = frozenset({"alert", "api"})


class Watcher:
    def __init__(self, services: Services, pool: RunPool) -> None:
        self.services = services
        self.pool = pool
        self._timeouts: dict[str, dict[str, float]] = {}

    def ours(self, run: Mapping[str, Any]) -> bool:
        """A run a server started that no live process is executing right now."""
        return (
            run.get("trigger") in SERVER_TRIGGERS and live_holder(self.services, run["id"]) is None
        )

    def recover(self) -> list[str]:
        """Resume every interrupted run of ours; returns their ids."""
        store: Any = self.services.store
        rows = store.runs_by_status(["pending", "running", "waiting"])
        resumed = []
        for run in rows:
            if self.ours(run) and self.pool.resume(run["id"]):
                resumed.append(run["id"])
        return resumed

    def poll(self) -> list[str]:
        """Resume the waiting runs that something would move now."""
        store: Any = self.services.store
        resumed = []
        waiting = store.runs_by_status(["waiting"])
        for run in waiting:
            if not self.ours(run) or self.pool.active(run["id"]):
                continue
            if self.needs_attention(run) and self.pool.resume(run["id"]):
                resumed.append(run["id"])
        still = {run["id"] for run in waiting}
        self._timeouts = {k: v for k, v in self._timeouts.items() if k in still}
        return resumed

    def needs_attention(self, run: Mapping[str, Any]) -> bool:
        if self.services.store.killswitch(run["runbook"]):
            return False  # the engine refuses to resume it until the switch is released
        if run.get("kill_requested"):
            return True
        steps = (run.get("state") or {}).get("steps") or {}
        waiting = {sid: s for sid, s in steps.items() if s.get("status") == "waiting"}
        unknown = [sid for sid, s in steps.items() if s.get("status") == "unknown"]
        if not waiting:
            return not unknown  # an operator resolved what was unknown
        for row in self.services.store.get_approvals(run["id"]):
            step = waiting.get(row["step_id"])
            if step is not None and row["approver"] not in {
                a.get("approver") for a in step.get("approvals", [])
            }:
                return True
        return self._expired(run, waiting)

    def _expired(self, run: Mapping[str, Any], waiting: Mapping[str, Any]) -> bool:
        timeouts = self._timeouts.get(run["id"])
        if timeouts is None:
            try:
                book = engine.stored_runbook(run)
            except RunbookError:
                return False
            timeouts = {
                s.id: s.action.timeout  # type: ignore[union-attr]
                for s in book.steps
                if s.is_approval and s.action.timeout  # type: ignore[union-attr]
            }
            self._timeouts[run["id"]] = timeouts
        now = self.services.clock.now()
        for sid, step in waiting.items():
            since = step.get("started_at")
            if sid in timeouts and since is not None and now - since > timeouts[sid]:
                return True
        return False
