"""From stored alerts to runs: decide each alert, start what may start, record everything.

The dispatcher takes alerts in the order they were accepted, one batch at a
time. Each alert gets its decisions (``decide``); a ``started`` decision is
carried out at once (the engine's start-time guards, then the run is handed
to the worker pool) so that the next alert's rate limit, deduplication and
budget already see it. The batch ends with one audit record listing every
decision with its reason, then the alerts are marked decided in the store.
If the audit cannot be written nothing is marked, the batch is decided again
later, and deduplication keeps a run from starting twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from executor.engine.services import Services
from executor.engine.starting import PreparedRun, RunRequest, prepare
from executor.errors import AuditWriteError, KillSwitchEngaged, PolicyRefused, RunbookError
from executor.masking import Masker
from executor.model import Runbook
from executor.triggers.alerts import Alert
from executor.triggers.decide import (
    Decision,
    Disposition,
    decide_resolved,
    decide_route,
    disposition_of,
    unmatched,
)
from executor.triggers.facts import CatalogView, StoreFacts
from executor.triggers.routes import RouteTable

ACTOR = "runbook-serve"
"""The actor of records the dispatcher writes on its own behalf."""


class Execute(Protocol):
    """Hands a prepared run to whatever executes runs (the server's worker pool)."""

    def __call__(self, book: Runbook, prepared: PreparedRun) -> None: ...


def masked_inputs(book: Runbook | None, inputs: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Inputs as the audit and the API may show them: secret ones replaced."""
    if inputs is None:
        return None
    if book is None:
        return dict(inputs)
    return {
        name: ("***" if name in book.inputs and book.inputs[name].secret else value)
        for name, value in inputs.items()
    }


def public(decision: Decision) -> dict[str, Any]:
    shown = decision.as_dict()
    if decision.inputs is not None:
        shown["inputs"] = masked_inputs(decision.book, decision.inputs)
    return shown


class RunStarter:
    """Starts runs for alerts and for API callers, with the guards both share."""

    def __init__(
        self,
        services: Services,
        catalog: CatalogView,
        facts: StoreFacts,
        execute: Execute,
    ) -> None:
        self.services = services
        self.catalog = catalog
        self.facts = facts
        self.execute = execute

    def start(
        self,
        book: Runbook,
        inputs: Mapping[str, Any],
        *,
        actor: str,
        trigger: str,
        alert: Mapping[str, Any] | None = None,
        route: str | None = None,
        alert_id: int | None = None,
    ) -> PreparedRun:
        """Check, record and hand over one run; raises the RunbookError that refused it."""
        request = RunRequest(
            runbook=book,
            inputs=dict(inputs),
            actor=actor,
            trigger=trigger,
            alert=alert,
            runbook_text=self.catalog.text(book),
        )
        prepared = prepare(self.services, request)
        self.execute(book, prepared)  # at once: the accounting below is not on its path
        self._account(book, prepared, alert, route=route, alert_id=alert_id)
        return prepared

    def _account(
        self,
        book: Runbook,
        prepared: PreparedRun,
        alert: Mapping[str, Any] | None,
        *,
        route: str | None,
        alert_id: int | None,
    ) -> None:
        """What rate limits, deduplication and the budget count: who started it, which hosts."""
        now = self.services.clock.now()
        store: Any = self.services.store
        hosts = self.facts.hosts_of(book, prepared.inputs, alert or {})
        if prepared.request.trigger == "alert":
            store.record_trigger_start(
                prepared.run_id,
                runbook=book.name,
                at=now,
                route=route,
                fingerprint=(alert or {}).get("fingerprint"),
                alert_id=alert_id,
                hosts=hosts,
            )
        elif hosts:
            store.record_budget_hosts(prepared.run_id, book.name, hosts, at=now)

    def budget_check(self, book: Runbook, inputs: Mapping[str, Any], *, actor: str) -> None:
        """Refuse (audited) a run that would exceed its runbook's host budget."""
        problem = self.facts.budget_problem(book, inputs, {})
        if problem is None:
            return
        masker = Masker()
        for name, spec in book.inputs.items():
            if spec.secret and inputs.get(name) not in (None, ""):
                masker.add(str(inputs[name]))
        self.services.audit.append(
            "run.refused",
            actor=actor,
            runbook=book.ref,
            sha256=book.sha256,
            data={
                "reason": problem,
                "error": "PolicyRefused",
                "inputs": masker.mask_data(dict(inputs)),
            },
        )
        raise PolicyRefused(
            problem, hint="wait for the budget window to pass, or raise policy.budget"
        )


@dataclass(frozen=True)
class Decided:
    """One alert and what became of it."""

    alert_id: int
    alert: Alert
    decisions: tuple[Decision, ...]

    @property
    def disposition(self) -> str:
        return disposition_of(self.decisions)


class Dispatcher:
    """Decides batches of stored alerts; see the module docstring for the order of work."""

    def __init__(
        self,
        services: Services,
        facts: StoreFacts,
        starter: RunStarter,
        routes: Callable[[], RouteTable],
        *,
        on_decided: Callable[[Decided], None] | None = None,
    ) -> None:
        self.services = services
        self.facts = facts
        self.starter = starter
        self.routes = routes
        self.on_decided = on_decided

    def dispatch(self, rows: Sequence[Mapping[str, Any]]) -> list[Decided]:
        """Decide ``rows`` (stored alerts, oldest first); raises AuditWriteError fail-closed."""
        if not rows:
            return []
        self.facts.catalog.refresh()
        table = self.routes()
        done = [self._one(row, table) for row in rows]
        self.services.audit.append(
            "alerts.decided",
            actor=ACTOR,
            data={
                "routes": table.source,
                "alerts": [
                    {
                        "alert_id": d.alert_id,
                        "fingerprint": d.alert.fingerprint,
                        "alertname": d.alert.alertname,
                        "status": d.alert.status,
                        "decisions": [public(x) for x in d.decisions],
                    }
                    for d in done
                ],
            },
        )
        self.services.store.decide_alerts(  # type: ignore[attr-defined]
            [(d.alert_id, d.disposition, [public(x) for x in d.decisions]) for d in done]
        )
        if self.on_decided is not None:
            for d in done:
                self.on_decided(d)
        return done

    def _one(self, row: Mapping[str, Any], table: RouteTable) -> Decided:
        alert = Alert.from_row(row)
        alert_id = int(row["id"])
        if alert.resolved:
            decision = decide_resolved(alert, self.facts)
            self._note_resolution(alert, alert_id, decision)
            return Decided(alert_id, alert, (decision,))
        routes = table.match(alert.labels)
        if not routes:
            return Decided(alert_id, alert, (unmatched(alert, table),))
        decisions = []
        for route in routes:
            decision = decide_route(alert, route, table, self.facts)
            if decision.disposition is Disposition.STARTED:
                decision = self._start(decision, alert, alert_id, actor=row.get("source") or ACTOR)
            decisions.append(decision)
        return Decided(alert_id, alert, tuple(decisions))

    def _start(self, decision: Decision, alert: Alert, alert_id: int, *, actor: str) -> Decision:
        assert decision.book is not None and decision.inputs is not None
        context = alert.context(route=decision.route, alert_id=alert_id)
        try:
            prepared = self.starter.start(
                decision.book,
                decision.inputs,
                actor=actor,
                trigger="alert",
                alert=context,
                route=decision.route,
                alert_id=alert_id,
            )
        except AuditWriteError:
            raise
        except KillSwitchEngaged as exc:
            return _replace(decision, Disposition.REFUSED, exc.message)
        except PolicyRefused as exc:
            return _replace(decision, Disposition.DEDUPLICATED, exc.message)
        except RunbookError as exc:
            return _replace(decision, Disposition.REFUSED, exc.message)
        return decision.with_run(prepared.run_id)

    def _note_resolution(self, alert: Alert, alert_id: int, decision: Decision) -> None:
        """Put the resolution in the audit of each run that still waits for a person."""
        for waiting in decision.detail.get("pending_approvals", []):
            self.services.audit.append(
                "alert.resolved",
                run_id=waiting["run_id"],
                actor=ACTOR,
                runbook=waiting["runbook"],
                data={
                    "fingerprint": alert.fingerprint,
                    "alert_id": alert_id,
                    "waiting_steps": waiting["steps"],
                    "note": "the alert that started this run resolved while it waits for "
                    "approval; deny it if the fix is no longer wanted",
                },
            )


def _replace(decision: Decision, kind: Disposition, reason: str) -> Decision:
    return Decision(
        kind,
        reason,
        decision.route,
        decision.runbook,
        decision.inputs,
        None,
        decision.detail,
        decision.book,
    )
