"""The guardrails' view of the world: the catalog, the store, the inventory, the clock.

``StoreFacts`` answers the questions of ``decide.Facts`` from the shared
store, so a run started from the command line counts against the same
budget, concurrency key and cooldown as one started by an alert.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from executor import expressions
from executor.engine import stored_runbook
from executor.engine.starting import concurrency_key
from executor.errors import ExpressionError, RunbookError
from executor.model import Runbook, RunStatus, format_duration
from executor.triggers.sources import CatalogView

Inventory = Any  # has .resolve(pattern) -> list[str]


class AlertFactsStore(Protocol):
    """The store methods the guardrails read (``executor.store.SqliteStore`` has them)."""

    def killswitch(self, runbook: str | None = None) -> dict[str, Any] | None: ...
    def holders(self, key: str) -> list[str]: ...
    def cooldown_until(self, key: str) -> float | None: ...
    def count_trigger_starts(self, since: float, *, route: str | None = None) -> int: ...
    def trigger_runs(
        self, fingerprint: str, runbook: str | None = None
    ) -> list[dict[str, Any]]: ...
    def runs_since(self, runbook: str, since: float) -> list[dict[str, Any]]: ...
    def budget_hosts(self, runbook: str, since: float) -> dict[str, set[str]]: ...
    def record_budget_hosts(
        self, run_id: str, runbook: str, hosts: Iterable[str], *, at: float
    ) -> None: ...


def state_hosts(run: Mapping[str, Any]) -> set[str]:
    """Hosts the run's steps reported results for (what it touched so far)."""
    steps = ((run.get("state") or {}).get("steps") or {}).values()
    return {host for step in steps for host in (step.get("hosts") or {})}


def predicted_hosts(
    book: Runbook,
    inputs: Mapping[str, Any],
    alert: Mapping[str, Any] | None,
    inventory: Inventory | None,
) -> set[str]:
    """Every host the run's targets resolve to, as far as inputs alone decide them.

    A target whose pattern reads step outputs cannot be known before the run;
    it is counted when the run reports it (``state_hosts``).
    """
    if inventory is None:
        return set()
    context = {"inputs": dict(inputs), "run": {}, "alert": dict(alert or {})}
    hosts: set[str] = set()
    for target in book.targets.values():
        try:
            pattern = str(expressions.render(target.hosts, context))
            hosts.update(inventory.resolve(pattern))
        except (ExpressionError, RunbookError):
            continue
    return hosts


class StoreFacts:
    """``decide.Facts`` over the shared store: what every process has recorded."""

    def __init__(
        self,
        store: AlertFactsStore,
        catalog: CatalogView,
        *,
        inventory: Inventory | None = None,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.inventory = inventory
        self._clock = clock

    def now(self) -> float:
        return self._clock()

    def runbook(self, ref: str) -> Runbook:
        return self.catalog.runbook(ref)

    def killswitch(self, runbook: str) -> str | None:
        switch = self.store.killswitch(runbook)
        if not switch:
            return None
        where = "globally" if switch.get("scope") == "*" else f"for {runbook}"
        return (
            f"the kill-switch is engaged {where} by {switch.get('actor')}: {switch.get('reason')}"
        )

    def fingerprint_busy(self, fingerprint: str, book: Runbook) -> str | None:
        now = self.now()
        cooldown = book.policy.cooldown or 0.0
        for run in self.store.trigger_runs(fingerprint, book.name):
            status = run.get("status")
            if status is None:
                continue
            if not RunStatus(status).terminal:
                return (
                    f"this alert already has an active run of {book.name}: "
                    f"{run['run_id']} ({status})"
                )
            finished = run.get("finished") or run.get("at") or 0.0
            if cooldown and finished + cooldown > now:
                return (
                    f"this alert's run {run['run_id']} of {book.name} ended {status} "
                    f"{format_duration(now - finished)} ago, within the cooldown of "
                    f"{format_duration(cooldown)}"
                )
        return None

    def key_busy(
        self, book: Runbook, inputs: Mapping[str, Any], alert: Mapping[str, Any]
    ) -> str | None:
        if book.policy.concurrency is None and not book.policy.cooldown:
            return None
        run_ctx = {"id": "", "trigger": "alert", "actor": "", "dry_run": False}
        try:
            key = concurrency_key(book, inputs, run_ctx, alert)
        except ExpressionError as exc:
            return f"the concurrency key of {book.name} cannot be computed: {exc.message}"
        holders = self.store.holders(key)
        if holders:
            return f"{book.name} already runs for {key!r} ({', '.join(holders)})"
        until = self.store.cooldown_until(key)
        now = self.now()
        if until is not None and until > now:
            return (
                f"{book.name} is cooling down for {key!r}: next run allowed in "
                f"{format_duration(until - now)}"
            )
        return None

    def hosts_of(
        self, book: Runbook, inputs: Mapping[str, Any], alert: Mapping[str, Any]
    ) -> set[str]:
        return predicted_hosts(book, inputs, alert, self.inventory)

    def used_hosts(self, book: Runbook, since: float) -> set[str]:
        """Hosts touched by runs of ``book`` since ``since``, whatever started them."""
        recorded = self.store.budget_hosts(book.name, since)
        used: set[str] = set()
        for run in self.store.runs_since(book.name, since):
            if run.get("dry_run"):
                continue
            hosts = set(recorded.get(run["id"], set())) | state_hosts(run)
            if run["id"] not in recorded:
                predicted = self._predict_stored(run)
                if predicted:
                    self.store.record_budget_hosts(
                        run["id"], book.name, predicted, at=run["created"]
                    )
                hosts |= predicted
            used |= hosts
        return used

    def _predict_stored(self, run: Mapping[str, Any]) -> set[str]:
        try:
            stored = stored_runbook(run)
        except RunbookError:
            return set()
        return predicted_hosts(stored, run.get("inputs") or {}, run.get("alert"), self.inventory)

    def budget_problem(
        self, book: Runbook, inputs: Mapping[str, Any], alert: Mapping[str, Any]
    ) -> str | None:
        budget = book.policy.budget
        if budget is None:
            return None
        wanted = self.hosts_of(book, inputs, alert)
        used = self.used_hosts(book, self.now() - budget.per)
        total = used | wanted
        if len(total) <= budget.hosts:
            return None
        new = sorted(wanted - used)
        return (
            f"budget of {book.name} exceeded: {len(used)} host(s) touched in the last "
            f"{format_duration(budget.per)} ({', '.join(sorted(used)) or 'none'}), this run adds "
            f"{', '.join(new) or 'none'}; policy.budget allows {budget.hosts} per "
            f"{format_duration(budget.per)}"
        )

    def starts_since(self, since: float, route: str | None = None) -> int:
        return self.store.count_trigger_starts(since, route=route)

    def waiting_runs(self, fingerprint: str) -> list[dict[str, Any]]:
        waiting = []
        for run in self.store.trigger_runs(fingerprint):
            if run.get("status") != RunStatus.WAITING.value:
                continue
            steps = ((run.get("state") or {}).get("steps") or {}).items()
            pending = [sid for sid, step in steps if step.get("status") == "waiting"]
            if pending:
                waiting.append(
                    {"run_id": run["run_id"], "runbook": run["runbook"], "steps": pending}
                )
        return waiting
