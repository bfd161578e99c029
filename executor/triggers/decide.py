"""What one alert may do: the guardrails, in order, as a pure decision.

Every alert ends with one decision per route it matched (or ``unmatched``),
each with the reason a person reads in the audit:

1. ``resolved``: a resolved alert starts nothing; runs it started that still
   wait for an approval are named, so nobody approves a fix for a problem
   that went away without knowing it.
2. ``refused``: the runbook cannot be loaded, the alert's labels do not make
   valid inputs, the kill-switch is engaged, or the runbook's host budget
   would be exceeded.
3. ``suggested``: the runbook (or the route) is ``manual``, or ``approval``
   with no approval step to stop at: an alert never starts it.
4. ``deduplicated``: the same fingerprint already has an active run of this
   runbook (or had one within its cooldown), or the runbook's concurrency key
   is held or cooling down.
5. ``suppressed``: the route's or the global rate limit is spent.
6. ``started``.

The checks read the world through ``Facts``, so they run the same against the
store and against a test double.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from executor import expressions
from executor.errors import RunbookError, ValidationFailed
from executor.inputs import resolve_inputs
from executor.model import Automation, Runbook, format_duration
from executor.triggers.alerts import Alert
from executor.triggers.routes import RateLimit, Route, RouteTable


class Disposition(StrEnum):
    STARTED = "started"
    UNMATCHED = "unmatched"
    SUGGESTED = "suggested"
    DEDUPLICATED = "deduplicated"
    SUPPRESSED = "suppressed"
    REFUSED = "refused"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class Decision:
    """One alert x one route: what happened and why."""

    disposition: Disposition
    reason: str
    route: str | None = None
    runbook: str | None = None
    inputs: Mapping[str, Any] | None = None
    run_id: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    book: Runbook | None = field(default=None, compare=False, repr=False)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"disposition": self.disposition.value, "reason": self.reason}
        for key in ("route", "runbook", "inputs", "run_id"):
            value = getattr(self, key)
            if value is not None:
                out[key] = dict(value) if isinstance(value, Mapping) else value
        if self.detail:
            out["detail"] = dict(self.detail)
        return out

    def with_run(self, run_id: str) -> Decision:
        return Decision(
            self.disposition,
            self.reason,
            self.route,
            self.runbook,
            self.inputs,
            run_id,
            self.detail,
            self.book,
        )


class Facts(Protocol):
    """What the guardrails need to know about the world at the moment of deciding."""

    def now(self) -> float: ...

    def runbook(self, ref: str) -> Runbook:
        """The runbook a route names; raises RunbookError when it cannot be used."""
        ...

    def killswitch(self, runbook: str) -> str | None:
        """Why the kill-switch refuses ``runbook``, or None."""
        ...

    def fingerprint_busy(self, fingerprint: str, book: Runbook) -> str | None:
        """Why this alert already has a run of ``book`` (active or cooling down), or None."""
        ...

    def key_busy(
        self, book: Runbook, inputs: Mapping[str, Any], alert: Mapping[str, Any]
    ) -> str | None:
        """Why ``book``'s concurrency key for these inputs is held or cooling down, or None."""
        ...

    def budget_problem(
        self, book: Runbook, inputs: Mapping[str, Any], alert: Mapping[str, Any]
    ) -> str | None:
        """Why starting ``book`` on these inputs would exceed its host budget, or None."""
        ...

    def starts_since(self, since: float, route: str | None = None) -> int:
        """Runs started by alerts since ``since`` (of one route, or all)."""
        ...

    def waiting_runs(self, fingerprint: str) -> list[dict[str, Any]]:
        """Runs this alert started that wait for an approval: ``{run_id, runbook, steps}``."""
        ...


def effective_mode(route: Route, book: Runbook) -> Automation:
    """The weaker of the route's mode and the runbook's own ``policy.automation``."""
    own = book.policy.automation
    if route.mode is None or route.mode.rank >= own.rank:
        return own
    return route.mode


def route_inputs(route: Route, alert: Alert) -> dict[str, Any]:
    """The route's input templates rendered over ``alert``; raises ExpressionError."""
    context = {"alert": alert.context()}
    return {
        name: expressions.render(value, context) if isinstance(value, str) else value
        for name, value in route.inputs.items()
    }


def _rate_spent(limit: RateLimit | None, facts: Facts, route: str | None) -> str | None:
    if limit is None:
        return None
    used = facts.starts_since(facts.now() - limit.per, route)
    if used < limit.runs:
        return None
    scope = f"route {route}" if route else "all routes together"
    return (
        f"rate limit of {scope} reached: {used} run(s) started in the last "
        f"{format_duration(limit.per)} (limit {limit})"
    )


def decide_route(alert: Alert, route: Route, table: RouteTable, facts: Facts) -> Decision:
    """The guardrails for one firing alert and one route it matched, in order."""

    def decision(kind: Disposition, reason: str, **more: Any) -> Decision:
        return Decision(kind, reason, route=route.name, runbook=route.runbook, **more)

    try:
        book = facts.runbook(route.runbook)
    except ValidationFailed as failed:
        return decision(
            Disposition.REFUSED,
            f"runbook {route.runbook} is invalid ({len(failed.issues)} problem(s)); "
            f"run 'runbook validate' on it",
        )
    except RunbookError as exc:
        return decision(
            Disposition.REFUSED, f"runbook {route.runbook} cannot be used: {exc.message}"
        )
    ref = book.ref
    try:
        inputs = resolve_inputs(book, route_inputs(route, alert))
    except RunbookError as exc:
        return decision(
            Disposition.REFUSED,
            f"the alert's labels do not make valid inputs for {ref}: {exc.message}",
        )
    alert_ctx = alert.context(route=route.name)
    found = dict(runbook=ref, inputs=inputs)
    switch = facts.killswitch(book.name)
    if switch:
        return Decision(Disposition.REFUSED, switch, route=route.name, **found)
    mode = effective_mode(route, book)
    if mode is Automation.MANUAL:
        why = (
            f"route {route.name} lowers it to manual"
            if route.mode is Automation.MANUAL and book.policy.automation is not Automation.MANUAL
            else f"{ref} has policy.automation: manual"
        )
        return Decision(
            Disposition.SUGGESTED,
            f"{why}: an alert never starts it; start it by hand",
            route=route.name,
            **found,
        )
    if mode is Automation.APPROVAL and not any(s.is_approval for s in book.steps):
        return Decision(
            Disposition.SUGGESTED,
            f"route {route.name} asks for approval but {ref} has no approval step to stop at: "
            "start it by hand",
            route=route.name,
            **found,
        )
    for reason in (
        facts.fingerprint_busy(alert.fingerprint, book),
        facts.key_busy(book, inputs, alert_ctx),
    ):
        if reason:
            return Decision(Disposition.DEDUPLICATED, reason, route=route.name, **found)
    budget = facts.budget_problem(book, inputs, alert_ctx)
    if budget:
        return Decision(Disposition.REFUSED, budget, route=route.name, **found)
    for limit, scope in ((route.rate, route.name), (table.rate, None)):
        spent = _rate_spent(limit, facts, scope)
        if spent:
            return Decision(
                Disposition.SUPPRESSED,
                spent,
                route=route.name,
                detail={"limit": "route" if scope else "global"},
                **found,
            )
    return Decision(
        Disposition.STARTED,
        f"route {route.name} starts {ref} ({mode.value})",
        route=route.name,
        detail={"mode": mode.value},
        book=book,
        **found,
    )


def decide_resolved(alert: Alert, facts: Facts) -> Decision:
    """A resolved alert starts nothing; say which of its runs still wait for a person."""
    waiting = facts.waiting_runs(alert.fingerprint)
    if not waiting:
        return Decision(Disposition.RESOLVED, "the alert resolved; nothing to start")
    names = "; ".join(f"{w['run_id']} ({', '.join(w['steps'])})" for w in waiting)
    return Decision(
        Disposition.RESOLVED,
        f"the alert resolved while run(s) it started still wait for approval: {names}; "
        "deny them if the fix is no longer wanted",
        detail={"pending_approvals": list(waiting)},
    )


def unmatched(alert: Alert, table: RouteTable) -> Decision:
    return Decision(
        Disposition.UNMATCHED,
        f"no route in {table.source} matches {alert.alertname or 'the alert'} "
        f"({', '.join(f'{k}={v}' for k, v in sorted(alert.labels.items()))})",
    )


def disposition_of(decisions: Sequence[Decision]) -> str:
    """One word for an alert's decisions: the route's, or ``started`` when any route started."""
    kinds = {d.disposition for d in decisions}
    if Disposition.STARTED in kinds:
        return Disposition.STARTED.value
    if len(kinds) == 1:
        return next(iter(kinds)).value
    order = list(Disposition)
    return min(kinds, key=order.index).value
