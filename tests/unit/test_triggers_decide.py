"""The guardrails as a pure decision over ``Facts``, and the webhook payload they read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from executor.loader import parse_document
from executor.model import Automation, Runbook
from executor.triggers import Alert, PayloadError, parse_payload, parse_routes
from executor.triggers.alerts import fingerprint_of
from executor.triggers.decide import (
    Disposition,
    decide_resolved,
    decide_route,
    disposition_of,
    effective_mode,
    unmatched,
)

BOOK = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {{name: {name}, version: 1.0.0}}
inputs:
  host: {{type: string, pattern: "^[a-z0-9]+$"}}
  token: {{type: string, secret: true, default: "s3cret-default"}}
policy:
  automation: {automation}
steps:
  - id: look
    log: {{message: "{{{{ inputs.host }}}}"}}
{extra}"""
GATE = """\
  - id: gate
    needs: [look]
    approval: {message: ok?, approvers: [oncall]}
"""


def book(name: str = "fix", automation: str = "auto", gate: bool = False) -> Runbook:
    text = BOOK.format(name=name, automation=automation, extra=GATE if gate else "")
    document = parse_document(text, f"{name}.yaml")
    return Runbook.from_mapping(document.data, source=f"{name}.yaml", sha256=document.sha256)


ROUTES = """\
apiVersion: runbook/v1
kind: Routes
rate: {runs: 5, per: 1h}
routes:
  - name: main
    match: ['alertname = Broken']
    runbook: fix
    inputs: {host: "{{ alert.labels.host }}"}
    rate: {runs: 2, per: 10m}
    continue: true
  - name: lowered
    match: ['alertname = Broken', 'lower = yes']
    runbook: fix
    mode: approval
    inputs: {host: "{{ alert.labels.host }}"}
"""


@dataclass
class FakeFacts:
    books: dict[str, Runbook] = field(default_factory=lambda: {"fix": book()})
    switch: str | None = None
    busy_fingerprint: str | None = None
    busy_key: str | None = None
    budget: str | None = None
    starts: dict[str | None, int] = field(default_factory=dict)
    waiting: list[dict[str, Any]] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)

    def now(self) -> float:
        return 1000.0

    def runbook(self, ref: str) -> Runbook:
        from executor.errors import NotFound

        name = ref.split("@")[0]
        if name not in self.books:
            raise NotFound(f"no runbook named {name!r}")
        return self.books[name]

    def killswitch(self, runbook: str) -> str | None:
        self.asked.append("killswitch")
        return self.switch

    def fingerprint_busy(self, fingerprint: str, book: Runbook) -> str | None:
        self.asked.append("fingerprint")
        return self.busy_fingerprint

    def key_busy(self, book: Runbook, inputs: Any, alert: Any) -> str | None:
        self.asked.append("key")
        return self.busy_key

    def budget_problem(self, book: Runbook, inputs: Any, alert: Any) -> str | None:
        self.asked.append("budget")
        return self.budget

    def starts_since(self, since: float, route: str | None = None) -> int:
        self.asked.append(f"rate:{route}")
        return self.starts.get(route, 0)

    def waiting_runs(self, fingerprint: str) -> list[dict[str, Any]]:
        return self.waiting


TABLE = parse_routes(ROUTES)
MAIN = TABLE.routes[0]


def firing(host: str = "web1", **labels: str) -> Alert:
    all_labels = {"alertname": "Broken", "host": host, **labels}
    return Alert(fingerprint=fingerprint_of(all_labels), status="firing", labels=all_labels)


def test_a_clean_alert_starts_with_typed_inputs() -> None:
    facts = FakeFacts()
    decision = decide_route(firing(), MAIN, TABLE, facts)
    assert decision.disposition is Disposition.STARTED
    assert decision.inputs == {"host": "web1", "token": "s3cret-default"}
    assert decision.detail == {"mode": "auto"}
    assert facts.asked == ["killswitch", "fingerprint", "key", "budget", "rate:main", "rate:None"]
    assert "run_id" not in decision.as_dict()
    assert decision.with_run("r-1").as_dict()["run_id"] == "r-1"


def test_the_guardrails_apply_in_order_and_stop_at_the_first_refusal() -> None:
    facts = FakeFacts(switch="kill-switch engaged", busy_fingerprint="dup", budget="over")
    decision = decide_route(firing(), MAIN, TABLE, facts)
    assert (decision.disposition, decision.reason) == (Disposition.REFUSED, "kill-switch engaged")
    assert facts.asked == ["killswitch"]
    facts = FakeFacts(busy_fingerprint="dup", budget="over")
    assert decide_route(firing(), MAIN, TABLE, facts).disposition is Disposition.DEDUPLICATED
    facts = FakeFacts(busy_key="key held", budget="over")
    decision = decide_route(firing(), MAIN, TABLE, facts)
    assert (decision.disposition, decision.reason) == (Disposition.DEDUPLICATED, "key held")
    facts = FakeFacts(budget="over budget", starts={"main": 99})
    decision = decide_route(firing(), MAIN, TABLE, facts)
    assert (decision.disposition, decision.reason) == (Disposition.REFUSED, "over budget")


@pytest.mark.parametrize(
    ("starts", "limit"),
    [({"main": 2}, "route"), ({"main": 1, None: 5}, "global")],
)
def test_rate_limits_suppress(starts: dict, limit: str) -> None:
    decision = decide_route(firing(), MAIN, TABLE, FakeFacts(starts=starts))
    assert decision.disposition is Disposition.SUPPRESSED
    assert decision.detail == {"limit": limit}
    assert "rate limit" in decision.reason


def test_manual_runbooks_are_suggested_before_any_other_check_but_the_kill_switch() -> None:
    facts = FakeFacts(books={"fix": book(automation="manual")}, busy_fingerprint="dup")
    decision = decide_route(firing(), MAIN, TABLE, facts)
    assert decision.disposition is Disposition.SUGGESTED
    assert "policy.automation: manual" in decision.reason
    assert facts.asked == ["killswitch"]


def test_effective_mode_is_never_stronger_than_the_runbook() -> None:
    lowered = TABLE.routes[1]
    assert effective_mode(lowered, book(automation="auto")) is Automation.APPROVAL
    assert effective_mode(lowered, book(automation="manual")) is Automation.MANUAL
    assert effective_mode(MAIN, book(automation="approval")) is Automation.APPROVAL


def test_approval_mode_needs_an_approval_step_to_stop_at() -> None:
    lowered = TABLE.routes[1]
    no_gate = decide_route(firing(lower="yes"), lowered, TABLE, FakeFacts())
    assert no_gate.disposition is Disposition.SUGGESTED
    gated = FakeFacts(books={"fix": book(gate=True)})
    decision = decide_route(firing(lower="yes"), lowered, TABLE, gated)
    assert decision.disposition is Disposition.STARTED and decision.detail == {"mode": "approval"}


@pytest.mark.parametrize("host", ["web1; reboot", "$(id)", "", "WEB1"])
def test_labels_that_are_not_valid_inputs_are_refused(host: str) -> None:
    decision = decide_route(firing(host=host), MAIN, TABLE, FakeFacts())
    assert decision.disposition is Disposition.REFUSED
    assert "do not make valid inputs" in decision.reason


def test_a_missing_label_is_refused_not_started() -> None:
    alert = Alert(fingerprint="f1", status="firing", labels={"alertname": "Broken"})
    decision = decide_route(alert, MAIN, TABLE, FakeFacts())
    assert decision.disposition is Disposition.REFUSED
    assert "alert.labels.host" in decision.reason


def test_a_runbook_that_is_gone_is_refused() -> None:
    decision = decide_route(firing(), MAIN, TABLE, FakeFacts(books={}))
    assert decision.disposition is Disposition.REFUSED and "no runbook named" in decision.reason


def test_secret_inputs_are_masked_where_decisions_are_shown() -> None:
    from executor.triggers.dispatch import public

    decision = decide_route(firing(), MAIN, TABLE, FakeFacts())
    assert public(decision)["inputs"] == {"host": "web1", "token": "***"}
    assert decision.inputs is not None and decision.inputs["token"] == "s3cret-default"


def test_resolved_alerts_start_nothing_and_name_what_still_waits() -> None:
    resolved = Alert(fingerprint="f1", status="resolved", labels={"alertname": "Broken"})
    assert "nothing to start" in decide_resolved(resolved, FakeFacts()).reason
    waiting = [{"run_id": "r-1", "runbook": "fix", "steps": ["gate"]}]
    decision = decide_resolved(resolved, FakeFacts(waiting=waiting))
    assert decision.disposition is Disposition.RESOLVED
    assert "r-1 (gate)" in decision.reason
    assert decision.detail["pending_approvals"] == waiting


def test_unmatched_and_the_one_word_summary() -> None:
    alert = firing()
    nothing = unmatched(alert, TABLE)
    assert nothing.disposition is Disposition.UNMATCHED and "host=web1" in nothing.reason
    started = decide_route(alert, MAIN, TABLE, FakeFacts())
    suppressed = decide_route(alert, MAIN, TABLE, FakeFacts(starts={"main": 5}))
    assert disposition_of([suppressed, started]) == "started"
    assert disposition_of([suppressed]) == "suppressed"


# ------------------------------------------------------------------ the payload


def webhook(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "version": "4",
        "status": "firing",
        "receiver": "runbook",
        "groupKey": '{}:{alertname="Broken"}',
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "Broken", "host": "web1"},
                "annotations": {"summary": "s"},
                "startsAt": "2026-01-01T00:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://p",
                "fingerprint": "abcdef0123456789",
            }
        ],
    }
    body.update(changes)
    return body


def test_a_webhook_payload_becomes_alerts() -> None:
    (alert,) = parse_payload(webhook(newField=True))
    assert alert.fingerprint == "abcdef0123456789" and alert.alertname == "Broken"
    assert alert.receiver == "runbook" and not alert.resolved
    context = alert.context(route="main")
    assert context["labels"]["host"] == "web1" and context["route"] == "main"
    assert Alert.from_row({**alert.row(source="am"), "id": 1}) == alert


def test_a_missing_fingerprint_is_derived_from_the_labels() -> None:
    body = webhook()
    del body["alerts"][0]["fingerprint"]
    (alert,) = parse_payload(body)
    assert alert.fingerprint == fingerprint_of({"alertname": "Broken", "host": "web1"})
    assert fingerprint_of({"b": "1", "a": "2"}) == fingerprint_of({"a": "2", "b": "1"})


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"version": "3"}, "version"),
        ({"status": "on fire"}, "status"),
        ({"alerts": "none"}, "alerts"),
        ({"alerts": [{"labels": {"a": "b"}}]}, "'status' is a required"),
        ({"alerts": [{"status": "firing", "labels": {"a": ["b"]}}]}, "alerts[0].labels.a"),
        (
            {"alerts": [{"status": "firing", "labels": {"a": "b"}, "fingerprint": "../x"}]},
            "fingerprint",
        ),
        (
            {"alerts": [{"status": "firing", "labels": {f"l{i}": "x" for i in range(100)}}]},
            "too many",
        ),
        ({"alerts": [{"status": "firing", "labels": {"a": "x" * 10000}}]}, "too long"),
    ],
)
def test_payload_problems_say_where(change: dict[str, Any], words: str) -> None:
    with pytest.raises(PayloadError, match=words.replace("[", r"\[").replace("]", r"\]")):
        parse_payload(webhook(**change))
