"""Game day plans: loaded like runbooks, every problem at file:line:col, checked against the
shipped catalog and routes before anything is broken."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from executor.errors import NotFound, ValidationFailed
from executor.gameday.plan import (
    AlertResolvedCheck,
    HttpCheck,
    Plan,
    PrometheusCheck,
    catalog_lookups,
    load_plan,
    parse_plan,
)
from executor.triggers.routes import parse_routes

REPO = Path(__file__).resolve().parents[2]
CATALOG = REPO / "runbooks"
LOOKUPS = catalog_lookups(CATALOG)

ALERT_PLAN = """\
apiVersion: runbook/v1
kind: GameDay
metadata: {name: kill-web2}
fault: {host: web2, inject: kill}
detection: {alert: DemoappDown}
start: {via: alertmanager, runbook: restart-crashlooping-service}
checks:
  - name: health
    http: {host: web2, path: /health, contains: ok}
  - name: scraped
    prometheus: {query: 'up{host="web2"} == 1'}
  - name: resolved
    alert_resolved: {alert: DemoappDown}
"""

DIRECT_PLAN = """\
apiVersion: runbook/v1
kind: GameDay
metadata: {name: disk-web1}
fault: {host: web1, inject: fill-disk}
start:
  via: direct
  runbook: disk-pressure
  inputs: {host: web1}
  as: bob
approvals:
  - {step: approve, by: alice, after: 5s}
checks:
  - name: health
    http: {url: "http://127.0.0.1:9/health", expect_status: [200, 204]}
timeout: 2m
"""


def parse(text: str) -> Plan:
    return parse_plan(textwrap.dedent(text), *LOOKUPS, path="plan.yaml")


def problems(text: str) -> list[str]:
    with pytest.raises(ValidationFailed) as failed:
        parse(text)
    return [str(issue) for issue in failed.value.issues]


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


def test_an_alert_started_plan_builds_typed_objects() -> None:
    plan = parse(ALERT_PLAN)
    assert (plan.fault.host, plan.fault.inject) == ("web2", "kill")
    assert plan.start.via == "alertmanager" and plan.start.runbook_name == (
        "restart-crashlooping-service"
    )
    assert plan.detection is not None and dict(plan.detection.labels) == {"host": "web2"}
    assert plan.detection.matches({"alertname": "DemoappDown", "host": "web2", "job": "x"})
    assert not plan.detection.matches({"alertname": "DemoappDown", "host": "web3"})
    health, scraped, resolved = (c.probe for c in plan.checks)
    assert isinstance(health, HttpCheck) and health.expect_status == (200,)
    assert isinstance(scraped, PrometheusCheck) and scraped.query == 'up{host="web2"} == 1'
    assert isinstance(resolved, AlertResolvedCheck) and dict(resolved.labels) == {"host": "web2"}
    assert plan.timeout == 300 and plan.settle == 30 and plan.expect_run == "succeeded"


def test_a_direct_plan_takes_approver_groups_from_the_runbook() -> None:
    plan = parse(DIRECT_PLAN)
    (answer,) = plan.answers
    assert (answer.step, answer.by, answer.after, answer.approve) == ("approve", "alice", 5, True)
    assert answer.groups == ("storage-oncall",)  # disk-pressure's approvers
    assert plan.start.actor == "bob" and dict(plan.start.inputs) == {"host": "web1"}
    assert plan.checks[0].probe.expect_status == (200, 204)  # type: ignore[union-attr]
    assert plan.timeout == 120 and plan.with_timeout(9).timeout == 9


@pytest.mark.parametrize("name", ["web2-demoapp-killed.yaml", "web1-disk-full.yaml"])
def test_the_shipped_plans_load(name: str) -> None:
    plan = load_plan(REPO / "gamedays" / name, catalog=CATALOG)
    assert plan.checks and plan.objectives.items()


SCHEMA_CASES = [
    # (old, new, where, words)
    ("kind: GameDay", "kind: Gameday", "plan.yaml:2:7", "must be one of GameDay"),
    ("inject: kill", "inject: kil", "plan.yaml:4:29", "did you mean 'kill'?"),
    ("host: web2, inject", "host: Web_2, inject", "plan.yaml:4:15", "is not a host name"),
    (
        "metadata: {name: kill-web2}",
        "metadata: {name: kill-web2, onwer: me}",
        "plan.yaml:3:29",
        "unknown key 'onwer' in 'metadata'; did you mean 'owner'?",
    ),
    (
        "checks:\n",
        "timeout: soon\nchecks:\n",
        "plan.yaml:7:10",
        "'timeout': 'soon' is not a duration such as 30s",
    ),
    (
        "    prometheus: {query: 'up{host=\"web2\"} == 1'}\n",
        "    prometheus: {}\n",
        "plan.yaml:11:5",
        "'prometheus' in check 'scraped' has no 'query'",
    ),
    (
        "detection: {alert: DemoappDown}",
        "detection: {alert: Demoapp-Down}",
        "plan.yaml:5:20",
        "is not an alert name",
    ),
]


@pytest.mark.parametrize(("old", "new", "where", "words"), SCHEMA_CASES)
def test_structural_problems_are_placed_and_worded(
    old: str, new: str, where: str, words: str
) -> None:
    found = problems(edit(ALERT_PLAN, old, new))
    assert any(p.startswith(where) and words in p for p in found), found


def test_every_structural_problem_is_reported_at_once() -> None:
    text = edit(edit(ALERT_PLAN, "inject: kill", "inject: nuke"), "kind: GameDay", "kind: X")
    text = text.replace("start: {via: alertmanager, runbook: restart-crashlooping-service}\n", "")
    found = problems(text)
    assert len(found) == 3, found
    assert any("has no 'start'" in p for p in found)


def test_a_missing_plan_file_is_named() -> None:
    with pytest.raises(NotFound, match=r"game day plan /nowhere\.yaml does not exist"):
        load_plan("/nowhere.yaml", catalog=CATALOG)


def test_yaml_errors_come_from_the_runbook_loader(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("apiVersion: runbook/v1\nkind: GameDay\nkind: GameDay\n")
    with pytest.raises(ValidationFailed, match="duplicate"):
        load_plan(path, catalog=CATALOG)


SEMANTIC_CASES = [
    # (plan, old, new, where, words)
    (
        ALERT_PLAN,
        "runbook: restart-crashlooping-service",
        "runbook: restart-crashloop",
        "plan.yaml:6:37",
        "start.runbook 'restart-crashloop' cannot be used: no runbook named",
    ),
    (
        ALERT_PLAN,
        "detection: {alert: DemoappDown}\n",
        "",
        "plan.yaml:5:14",
        "a run started via alertmanager needs detection",
    ),
    (
        ALERT_PLAN,
        "via: alertmanager, runbook",
        "via: alertmanager, after: 5s, runbook",
        "plan.yaml:6:28",
        "start.after applies to a direct start only",
    ),
    (
        ALERT_PLAN,
        "alert: DemoappDown}",
        "alert: DemoappDiskFull}",
        "plan.yaml:5:20",
        "sends DemoappDiskFull to restart-crashlooping-service (it goes to disk-pressure)",
    ),
    (
        ALERT_PLAN,
        "http: {host: web2, path: /health, contains: ok}",
        "http: {host: web2, url: 'http://x/'}",
        "plan.yaml:9:11",
        "give either host",
    ),
    (
        ALERT_PLAN,
        "  - name: scraped\n    prometheus",
        "  - name: health\n    prometheus",
        "plan.yaml:10:11",
        "check name 'health' is used twice",
    ),
    (
        ALERT_PLAN,
        "    alert_resolved: {alert: DemoappDown}\n",
        "    alert_resolved: {alert: DemoappDown}\n    prometheus: {query: up}\n",
        "plan.yaml:12:5",
        "exactly one of http, prometheus, alert_resolved (it has prometheus and alert_resolved)",
    ),
    (
        DIRECT_PLAN,
        "inputs: {host: web1}",
        "inputs: {hots: web1}",
        "plan.yaml:8:12",
        "disk-pressure@1.0.0 has no input 'hots'; did you mean 'host'?",
    ),
    (
        DIRECT_PLAN,
        "inputs: {host: web1}",
        "inputs: {hots: web1}",
        "plan.yaml:8:11",
        "needs the input(s) host",
    ),
    (
        DIRECT_PLAN,
        "step: approve, by",
        "step: aprove, by",
        "plan.yaml:11:12",
        "has no step 'aprove'; did you mean 'approve'?",
    ),
    (
        DIRECT_PLAN,
        "step: approve, by",
        "step: clean, by",
        "plan.yaml:11:12",
        "step 'clean' of disk-pressure@1.0.0 is an ansible step, not an approval",
    ),
    (
        DIRECT_PLAN,
        "by: alice",
        "by: bob",
        "plan.yaml:11:25",
        "bob starts the run and may not approve it",
    ),
    (
        DIRECT_PLAN,
        "after: 5s}",
        "after: 5s, groups: [app-oncall]}",
        "plan.yaml:11:51",
        "alice is in none of the approver groups of step 'approve' (storage-oncall)",
    ),
    (
        DIRECT_PLAN,
        "after: 5s}",
        "after: 20m}",
        "plan.yaml:11:39",
        "the answer comes after 20m but step 'approve' expires after 15m",
    ),
    (
        DIRECT_PLAN,
        "after: 5s}",
        "after: 5s, token_env: T}",
        "plan.yaml:11:43",
        "token_env is for a reused server only",
    ),
    (
        DIRECT_PLAN,
        "timeout: 2m",
        "timeout: 2m\nserver: {url: 'http://127.0.0.1:1', home: /h}",
        "plan.yaml:16:9",
        "server: give token_env",
    ),
    (
        DIRECT_PLAN,
        "timeout: 2m",
        "timeout: 2m\nserver: {url: 'http://h:1', home: /h, token_env: T}",
        "plan.yaml:9:3",
        "a reused server starts it as the identity of the server.token_env token",
    ),
]


@pytest.mark.parametrize(("plan", "old", "new", "where", "words"), SEMANTIC_CASES)
def test_meaning_is_checked_against_the_catalog(
    plan: str, old: str, new: str, where: str, words: str
) -> None:
    found = problems(edit(plan, old, new))
    assert any(p.startswith(where) and words in p for p in found), found


def test_a_second_answer_by_the_same_approver_is_refused() -> None:
    text = edit(DIRECT_PLAN, "after: 5s}\n", "after: 5s}\n  - {step: approve, by: alice}\n")
    assert any("alice already answers step 'approve'" in p for p in problems(text))


def test_a_runbook_that_alerts_may_only_suggest_cannot_be_started_by_the_alert() -> None:
    routes = parse_routes(
        "apiVersion: runbook/v1\nkind: Routes\nroutes:\n"
        "  - {name: r, match: ['alertname = DemoappDown'], runbook: restart-crashlooping-service,"
        " inputs: {host: '{{ alert.labels.host }}'}, mode: manual}\n"
    )
    with pytest.raises(ValidationFailed, match="automation: manual"):
        parse_plan(ALERT_PLAN, LOOKUPS[0], lambda: routes, path="plan.yaml")


def test_without_a_routes_file_an_alert_started_drill_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="the catalog has no routes file"):
        parse_plan(ALERT_PLAN, LOOKUPS[0], lambda: None, path="plan.yaml")
