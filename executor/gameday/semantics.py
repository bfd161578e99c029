"""What a plan means, checked against the catalog and its routes before anything breaks.

A drill that cannot work must be refused before the fault is injected, not
discovered broken halfway through with a host down: the runbook must exist,
a direct start must give the inputs it declares, each approval answer must
name an approval step of it that the approver may answer before it expires,
and an alert-started drill needs a route that sends that alert to that
runbook with an automation level that starts it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from executor.errors import Issue, RunbookError
from executor.gameday.plan import DEFAULT_STARTER, RoutesLookup, RunbookLookup
from executor.gameday.schema import describe, suggest
from executor.loader import DocPath, Document
from executor.model import Automation, Runbook, format_duration, parse_duration
from executor.triggers.routes import Route

PROBES = ("http", "prometheus", "alert_resolved")
DIRECT_ONLY = ("inputs", "as", "after")


class _Issues:
    """Collects issues for one document, each placed at the node it is about."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.found: list[Issue] = []

    def add(self, path: DocPath, message: str, code: str, *, key: bool = False) -> None:
        line, col = self.doc.position(path, key=key)
        self.found.append(Issue(self.doc.path, line, col, message, code=code))


def semantic_issues(doc: Document, runbooks: RunbookLookup, routes: RoutesLookup) -> list[Issue]:
    """Every problem of meaning in a plan whose structure is valid."""
    issues = _Issues(doc)
    data = doc.data
    _check_issues(issues, data)
    _start_issues(issues, data)
    _server_issues(issues, data)
    book = _runbook(issues, data, runbooks)
    if book is not None:
        if data["start"]["via"] == "direct":
            _input_issues(issues, data, book)
        else:
            _route_issues(issues, data, book, routes)
        for index, answer in enumerate(data.get("approvals", [])):
            _answer_issues(issues, data, index, answer, book)
    return issues.found


def _check_issues(issues: _Issues, data: Mapping[str, Any]) -> None:
    seen: dict[str, int] = {}
    for index, check in enumerate(data["checks"]):
        where: DocPath = ("checks", index)
        kinds = [k for k in PROBES if k in check]
        label = describe(where, data)
        if len(kinds) != 1:
            got = f"it has {' and '.join(kinds)}" if kinds else "it has none"
            issues.add(
                where,
                f"{label} needs exactly one of {', '.join(PROBES)} ({got})",
                "gameday-check-kind",
            )
        if "http" in check:
            http = check["http"]
            if ("host" in http) == ("url" in http):
                issues.add(
                    (*where, "http"),
                    f"{label}: give either host (its demoapp, with path) or url, not "
                    f"{'both' if 'host' in http else 'neither'}",
                    "gameday-check-http",
                )
            if "url" in http and "path" in http:
                issues.add(
                    (*where, "http", "path"),
                    f"{label}: path goes with host; put it in the url",
                    "gameday-check-http",
                    key=True,
                )
        name = check["name"]
        if name in seen:
            issues.add(
                (*where, "name"),
                f"check name {name!r} is used twice (checks {seen[name] + 1} and {index + 1}); "
                "the report tells checks apart by name",
                "gameday-duplicate-check",
            )
        seen.setdefault(name, index)


def _start_issues(issues: _Issues, data: Mapping[str, Any]) -> None:
    start = data["start"]
    if start["via"] != "alertmanager":
        return
    if "detection" not in data:
        issues.add(
            ("start", "via"),
            "a run started via alertmanager needs detection: {alert: NAME}: the alert "
            "the drill waits for and follows to its run",
            "gameday-detection",
        )
    for key in (k for k in DIRECT_ONLY if k in start):
        issues.add(
            ("start", key),
            f"start.{key} applies to a direct start only: via alertmanager the route gives "
            "the inputs, the alert is the actor and starts the run as soon as it fires",
            "gameday-start",
            key=True,
        )


def _server_issues(issues: _Issues, data: Mapping[str, Any]) -> None:
    server = data.get("server")
    if server is not None and "token_env" not in server:
        issues.add(
            ("server",),
            "server: give token_env, the variable holding the drill's bearer token for that "
            "server (it reads runs and alerts, and kills the run at the deadline)",
            "gameday-server",
        )
    if server is not None and "as" in data["start"]:
        issues.add(
            ("start", "as"),
            "start.as names who starts the run on the drill's own server; a reused server "
            "starts it as the identity of the server.token_env token: remove start.as",
            "gameday-server",
            key=True,
        )
    for index, answer in enumerate(data.get("approvals", [])):
        where: DocPath = ("approvals", index)
        if server is not None and "token_env" not in answer:
            issues.add(
                where,
                f"{describe(where, data)}: with server, give token_env, the variable holding "
                f"{answer['by']}'s token for that server",
                "gameday-server",
            )
        if server is None and "token_env" in answer:
            issues.add(
                (*where, "token_env"),
                f"{describe(where, data)}: token_env is for a reused server only; the drill's "
                f"own server gets a token for {answer['by']} made for it",
                "gameday-server",
                key=True,
            )


def _runbook(issues: _Issues, data: Mapping[str, Any], runbooks: RunbookLookup) -> Runbook | None:
    ref = data["start"]["runbook"]
    try:
        return runbooks(ref)
    except RunbookError as exc:
        issues.add(
            ("start", "runbook"),
            f"start.runbook {ref!r} cannot be used: {exc.message}",
            "gameday-runbook",
        )
        return None


def _input_issues(issues: _Issues, data: Mapping[str, Any], book: Runbook) -> None:
    given = data["start"].get("inputs", {})
    for name in given:
        if name not in book.inputs:
            declared = list(book.inputs)
            issues.add(
                ("start", "inputs", name),
                f"{book.ref} has no input {name!r}{suggest(str(name), declared)} "
                f"(inputs: {', '.join(declared) or 'none'})",
                "gameday-input",
                key=True,
            )
    missing = [n for n, spec in book.inputs.items() if spec.required and n not in given]
    if missing:
        issues.add(
            ("start", "inputs") if "inputs" in data["start"] else ("start",),
            f"{book.ref} needs the input(s) {', '.join(missing)}: give them in start.inputs",
            "gameday-input",
        )


def _known_labels(data: Mapping[str, Any]) -> dict[str, str]:
    detection = data.get("detection") or {}
    labels = detection.get("labels", {"host": data["fault"]["host"]})
    return {"alertname": str(detection.get("alert", "")), **labels}


def _candidates(table_routes: tuple[Route, ...], labels: Mapping[str, str]) -> Iterator[Route]:
    """Routes the alert may take: matchers on labels the plan does not know are assumed true."""
    for route in table_routes:
        if all(m.matches(labels) for m in route.matchers if m.name in labels):
            yield route


def _route_issues(
    issues: _Issues, data: Mapping[str, Any], book: Runbook, routes: RoutesLookup
) -> None:
    if "detection" not in data:
        return
    try:
        table = routes()
    except RunbookError as exc:
        issues.add(("detection",), f"the routes cannot be read: {exc.message}", "gameday-route")
        return
    alert = data["detection"]["alert"]
    if table is None:
        issues.add(
            ("detection", "alert"),
            f"the catalog has no routes file, so no alert starts {book.name}: start it directly "
            "(start.via: direct) or add a route",
            "gameday-route",
        )
        return
    taken = [
        r for r in _candidates(table.routes, _known_labels(data)) if r.runbook_name == book.name
    ]
    if not taken:
        elsewhere = sorted({r.runbook for r in _candidates(table.routes, _known_labels(data))})
        goes = f" (it goes to {', '.join(elsewhere)})" if elsewhere else " (no route matches it)"
        issues.add(
            ("detection", "alert"),
            f"no route in {table.source} sends {alert} to {book.name}{goes}: fix the plan's "
            "runbook or alert, or add a route",
            "gameday-route",
        )
        return
    mode = min((r.mode or book.policy.automation for r in taken), key=lambda a: a.rank)
    if mode is Automation.MANUAL or book.policy.automation is Automation.MANUAL:
        issues.add(
            ("start", "via"),
            f"{book.name} is not started by an alert (automation: manual): the route only "
            "suggests it; start it directly (start.via: direct)",
            "gameday-route",
        )


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def _answer_issues(
    issues: _Issues, data: Mapping[str, Any], index: int, answer: Mapping[str, Any], book: Runbook
) -> None:
    where: DocPath = ("approvals", index)
    label = describe(where, data)
    step_id = answer["step"]
    try:
        step = book.step(step_id)
    except KeyError:
        ids = list(book.step_ids)
        issues.add(
            (*where, "step"),
            f"{label}: {book.ref} has no step {step_id!r}{suggest(step_id, ids)}",
            "gameday-approval",
        )
        return
    if not step.is_approval:
        approvals = [s.id for s in book.steps if s.is_approval]
        issues.add(
            (*where, "step"),
            f"{label}: step {step_id!r} of {book.ref} is {_a(step.kind)} step, not an approval "
            f"(approval steps: {', '.join(approvals) or 'none'})",
            "gameday-approval",
        )
        return
    action: Any = step.action
    starter = (
        data["start"].get("as", DEFAULT_STARTER)
        if data["start"]["via"] == "direct"
        else "alertmanager"
    )
    if answer["by"] == starter and not book.policy.self_approval:
        issues.add(
            (*where, "by"),
            f"{label}: {answer['by']} starts the run and may not approve it ({book.name} does "
            "not allow self-approval); name another approver",
            "gameday-approval",
        )
    groups = answer.get("groups")
    if groups is not None and not set(groups) & set(action.approvers):
        issues.add(
            (*where, "groups"),
            f"{label}: {answer['by']} is in none of the approver groups of step {step_id!r} "
            f"({', '.join(action.approvers)}): the answer would be refused",
            "gameday-approval",
        )
    after = parse_duration(answer.get("after", 0))
    if action.timeout is not None and after >= action.timeout:
        issues.add(
            (*where, "after"),
            f"{label}: the answer comes after {format_duration(after)} but step {step_id!r} "
            f"expires after {format_duration(action.timeout)}",
            "gameday-approval",
        )
    for other in data.get("approvals", [])[:index]:
        if other["step"] == step_id and other["by"] == answer["by"]:
            issues.add(
                (*where, "by"),
                f"{label}: {answer['by']} already answers step {step_id!r}; a quorum needs "
                "distinct approvers",
                "gameday-approval",
            )
