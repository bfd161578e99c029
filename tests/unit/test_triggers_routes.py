"""Routes files: structure and meaning checked at file:line:col; matching in order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from executor.catalog import Catalog
from executor.cli.app import cli
from executor.errors import ValidationFailed
from executor.model import Automation
from executor.triggers import load_routes, parse_routes
from executor.triggers.routes import is_routes_document

REPO = Path(__file__).resolve().parents[2]
SHIPPED = Catalog.load(REPO / "runbooks")

GOOD = """\
apiVersion: runbook/v1
kind: Routes
rate: {runs: 10, per: 5m}
routes:
  - name: first
    match: ['alertname = DemoappDown', 'severity =~ "critical|page"']
    runbook: restart-crashlooping-service
    inputs: {host: "{{ alert.labels.host }}"}
    continue: true
  - name: second
    match: ['alertname = DemoappDown']
    runbook: restart-crashlooping-service@1.0.0
    mode: approval
    inputs: {host: "{{ alert.labels.host }}", log_lines: 20}
    rate: {runs: 2, per: 1h}
  - name: third
    match: ['alertname = DemoappDown']
    runbook: disk-pressure
    inputs: {host: "{{ alert.labels.host }}"}
"""


def issues_of(text: str) -> list[str]:
    with pytest.raises(ValidationFailed) as failed:
        parse_routes(text, lookup=SHIPPED.resolve, path="r.yaml")
    return [str(i) for i in failed.value.issues]


def test_a_good_file_builds_a_table() -> None:
    table = parse_routes(GOOD, lookup=SHIPPED.resolve)
    assert [r.name for r in table.routes] == ["first", "second", "third"]
    assert table.rate is not None and (table.rate.runs, table.rate.per) == (10, 300.0)
    second = table.routes[1]
    assert second.mode is Automation.APPROVAL and second.rate is not None
    assert second.rate.per == 3600.0 and second.line == 10
    assert second.runbook_name == "restart-crashlooping-service"


def test_matching_takes_the_first_route_and_continues_only_when_asked() -> None:
    table = parse_routes(GOOD, lookup=SHIPPED.resolve)
    page = {"alertname": "DemoappDown", "severity": "page", "host": "web1"}
    assert [r.name for r in table.match(page)] == ["first", "second"]
    warn = {"alertname": "DemoappDown", "severity": "warning"}
    assert [r.name for r in table.match(warn)] == ["second"]
    assert table.match({"alertname": "Other"}) == []


@pytest.mark.parametrize(
    ("change", "where", "words"),
    [
        (("kind: Routes", "kind: Route"), "r.yaml:2:", "kind must be 'Routes'"),
        (("runs: 10", "runs: ten"), "r.yaml:3:", "rate.runs must be an integer"),
        (("per: 5m", "per: 5 minutes"), "r.yaml:3:", "is not a duration"),
        (("name: first", "name: First"), "r.yaml:5:", "lowercase letters"),
        (("name: third", "name: first"), "r.yaml:16:", "used twice (first at line 5)"),
        (("'alertname = DemoappDown', 's", "'alertname == X', 's"), "r.yaml:6:", "operators are"),
        (('"critical|page"', '"(critical"'), "r.yaml:6:", "invalid regular expression"),
        (("runbook: disk-pressure", "runbook: disk-presure"), "r.yaml:18:", "no runbook named"),
        (("crashlooping-service@1.0.0", "crashlooping-service@9.9.9"), "r.yaml:12:", "9.9.9"),
        (("mode: approval", "mode: sometimes"), "r.yaml:13:", "must be one of manual"),
        (("log_lines: 20", "lines: 20"), "r.yaml:14:", "has no input 'lines'"),
        (("log_lines: 20", "log_lines: {n: 1}"), "r.yaml:14:", "must be"),
        ("    continue: true\n", "r.yaml:", "unknown key 'continues'"),
        (
            ('alert.labels.host }}"}\n    continue', 'inputs.host }}"}\n    continue'),
            "r.yaml:8:",
            "may read only the alert",
        ),
        (
            ('alert.labels.host }}"}\n    continue', 'alert.labels. }}"}\n    continue'),
            "r.yaml:8:",
            "input 'host'",
        ),
    ],
)
def test_each_problem_is_reported_where_it_is(change, where: str, words: str) -> None:
    if isinstance(change, str):
        text = GOOD.replace(change, change.replace("continue", "continues"))
    else:
        text = GOOD.replace(*change)
    found = issues_of(text)
    assert any(i.startswith(where) and words in i for i in found), found


def test_a_mode_stronger_than_the_runbook_is_refused() -> None:
    text = GOOD.replace("runbook: disk-pressure", "runbook: disk-pressure\n    mode: auto")
    (issue,) = issues_of(text)
    assert "stronger than disk-pressure@1.0.0's own policy.automation (approval)" in issue


def test_a_required_input_must_be_computed_from_the_alert() -> None:
    text = GOOD.replace('    inputs: {host: "{{ alert.labels.host }}"}\n', "", 1)
    (issue,) = issues_of(text)
    assert issue.startswith("r.yaml:7:") and "requires input 'host'" in issue


def test_every_problem_is_reported_at_once() -> None:
    text = GOOD.replace("name: first", "name: First").replace("mode: approval", "mode: x")
    text = text.replace("runbook: disk-pressure", "runbook: nope")
    assert len(issues_of(text)) == 3


def test_without_a_catalog_only_the_file_itself_is_checked() -> None:
    table = parse_routes(GOOD.replace("disk-pressure", "not-in-any-catalog"))
    assert table.routes[2].runbook == "not-in-any-catalog"


def test_the_shipped_routes_are_valid_and_route_the_sandbox_alerts() -> None:
    table = load_routes(REPO / "runbooks" / "routes.yaml", lookup=SHIPPED.resolve)
    routed = {
        name: [r.runbook for r in table.match({"alertname": name, "host": "web1"})]
        for name in ("DemoappDown", "DemoappQueueStuck", "DemoappDiskFull")
    }
    assert routed == {
        "DemoappDown": ["restart-crashlooping-service"],
        "DemoappQueueStuck": ["clear-stuck-queue"],
        "DemoappDiskFull": ["disk-pressure"],
    }
    autos = {
        r.runbook
        for r in table.routes
        if SHIPPED.resolve(r.runbook).policy.automation is Automation.AUTO
    }
    assert len(autos) >= 2  # at least two remediate unattended


def test_routes_files_are_recognised(tmp_path: Path) -> None:
    named = tmp_path / "routes.yaml"
    named.write_text("x: 1\n")
    kinded = tmp_path / "paging.yml"
    kinded.write_text("# comment\napiVersion: runbook/v1\nkind: Routes  # the rules\n")
    other = tmp_path / "book.yaml"
    other.write_text("kind: Runbook\n")
    assert is_routes_document(named) and is_routes_document(kinded)
    assert not is_routes_document(other)


def test_runbook_validate_checks_routes_files(tmp_path: Path) -> None:
    runner = CliRunner()
    good = runner.invoke(
        cli,
        ["--catalog", str(REPO / "runbooks"), "validate", str(REPO / "runbooks" / "routes.yaml")],
    )
    assert good.exit_code == 0, good.output
    bad = tmp_path / "routes.yaml"
    bad.write_text(GOOD.replace("runbook: disk-pressure", "runbook: nope"))
    result = runner.invoke(
        cli, ["--catalog", str(REPO / "runbooks"), "validate", "--json", str(bad)]
    )
    assert result.exit_code == 1
    report = json.loads(result.output)
    (issue,) = report["files"][0]["issues"]
    assert issue["line"] == 18 and issue["code"] == "unknown-runbook"


def test_validating_a_directory_checks_its_routes_too(tmp_path: Path) -> None:
    for path in (REPO / "runbooks").glob("*.yaml"):  # the runbooks, not routes.yml
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "routes.yaml").write_text(GOOD.replace("mode: approval", "mode: never"))
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert "routes.yaml:13:" in result.output and "must be one of" in result.output
