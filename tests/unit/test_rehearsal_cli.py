"""``runbook test``: the command's output, exit codes, JUnit file, and the shipped runbooks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import yaml

from executor.cli import main
from executor.rehearsal import collect, run_suite

REPO = Path(__file__).resolve().parents[2]

RUNBOOK = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: svc, version: 1.0.0}
steps:
  - id: check
    local: {command: check}
    outputs: {state: "{{ result.stdout | trim }}"}
  - id: restart
    needs: [check]
    when: steps.check.outputs.state != 'ok'
    local: {command: restart}
  - id: report
    needs: [restart]
    trigger: always
    log: {message: done}
"""

GOOD = [
    {"name": "healthy", "steps": {"check": {"stdout": "ok"}},
     "expect": {"status": "succeeded", "path": ["check", "report"]}},
    {"name": "restarted", "steps": {"check": {"stdout": "down"}},
     "expect": {"status": "succeeded", "path": ["check", "restart", "report"]}},
    {"name": "check fails", "steps": {"check": {"fail": True}},
     "expect": {"status": "failed", "path": ["check", "report"]}},
    {"name": "restart fails", "steps": {"check": {"stdout": "down"}, "restart": {"rc": 1}},
     "expect": {"status": "failed", "path": ["check", "restart", "report"]}},
]  # fmt: skip


def catalog(tmp_path: Path, scenarios: list[dict[str, Any]]) -> Path:
    (tmp_path / "svc.yaml").write_text(RUNBOOK, encoding="utf-8")
    (tmp_path / "tests").mkdir(exist_ok=True)
    body = {"apiVersion": "runbook/v1", "kind": "Scenarios", "runbook": "svc"}
    (tmp_path / "tests" / "svc.yaml").write_text(
        yaml.safe_dump({**body, "scenarios": scenarios}, sort_keys=False), encoding="utf-8"
    )
    return tmp_path


def runbook_test(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main(["test", *args])
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out + captured.err


def test_passing_scenarios_print_a_line_each_and_exit_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = runbook_test(capsys, str(catalog(tmp_path, GOOD)))
    lines = text.splitlines()
    assert code == 0
    assert "PASS svc: healthy" in lines and "PASS svc: restarted" in lines
    assert lines[-1] == "4 passed, 0 failed"
    assert "  svc@1.0.0 100% (8/8)" in lines


def test_a_wrong_path_exits_1_with_the_diff(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = [{**GOOD[0], "expect": {"path": ["check", "restart", "report"]}}]
    code, text = runbook_test(capsys, str(catalog(tmp_path, wrong)))
    assert code == 1
    assert "FAIL svc: healthy" in text and "tests/svc.yaml:5)" in text
    assert "-restart" in text and "--- expected path" in text
    assert text.splitlines()[-1] == "0 passed, 1 failed"


def test_an_invalid_scenario_file_fails_with_file_line_col(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = [{"name": "x", "steps": {"chekc": {}}, "expect": {"status": "succeeded"}}]
    code, text = runbook_test(capsys, str(catalog(tmp_path, bad)))
    assert code == 1
    assert "tests/svc.yaml:7:5:" in text and "did you mean 'check'?" in text


def test_min_coverage_fails_and_names_the_branch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = str(catalog(tmp_path, GOOD[:1]))
    code, text = runbook_test(capsys, folder, "--min-coverage", "100")
    assert code == 1
    assert "step 'restart' never ran" in text and "guard of 'restart' never true" in text
    assert "below --min-coverage 100%" in text
    code, _ = runbook_test(capsys, folder, "--min-coverage", "10")
    assert code == 0


def test_a_runbook_without_scenarios_counts_as_uncovered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = catalog(tmp_path, GOOD)
    (folder / "other.yaml").write_text(RUNBOOK.replace("name: svc", "name: other"), "utf-8")
    code, text = runbook_test(capsys, str(folder), "--min-coverage", "100")
    assert code == 1
    assert "other@1.0.0 0% (0/8): no scenario rehearsed this runbook" in text


def test_a_runbook_file_brings_its_scenarios(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = catalog(tmp_path, GOOD)
    code, text = runbook_test(capsys, str(folder / "svc.yaml"), "-k", "restart")
    assert code == 0
    assert "PASS svc: restarted" in text and "healthy" not in text.split("coverage")[0]
    assert "coverage (of the selected scenarios only):" in text


def test_junit_xml_for_ci(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = [GOOD[0], {**GOOD[1], "expect": {"status": "failed"}}]
    junit = tmp_path / "out" / "junit.xml"
    junit.parent.mkdir()
    code, _ = runbook_test(capsys, str(catalog(tmp_path, wrong)), "--junit", str(junit))
    assert code == 1
    root = ElementTree.parse(junit).getroot()
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("failures") == "1"
    failure = root.find(".//testcase[@name='restarted']/failure")
    assert failure is not None and "status: expected failed, got succeeded" in (failure.text or "")
    assert root.find(".//testsuite[@name='coverage']/testcase[@name='svc@1.0.0']") is not None


def test_json_output_for_machines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = runbook_test(capsys, str(catalog(tmp_path, GOOD)), "--json")
    payload = json.loads(text)
    assert code == 0 and payload["passed"] == 4 and payload["failed"] == 0
    assert payload["scenarios"][1]["path"] == ["check", "restart", "report"]
    assert payload["coverage"]["svc@1.0.0"]["percent"] == 100.0


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    code, text = runbook_test(capsys, str(tmp_path / "empty"))
    assert code == 2 and "no scenario files or runbooks" in text
    code, _ = runbook_test(capsys, str(tmp_path / "missing"))
    assert code == 2


def test_files_that_are_neither_runbooks_nor_scenarios_are_nothing_to_test(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = tmp_path / "play.yml"
    playbook.write_text("- hosts: all\n  tasks: []\n", encoding="utf-8")
    code, text = runbook_test(capsys, str(playbook))
    assert code == 0 and "nothing to test" in text


# --------------------------------------------------------------------------- shipped runbooks

SHIPPED = sorted((REPO / "runbooks" / "tests").glob("*.yaml"))


def test_every_shipped_runbook_has_a_scenario_file() -> None:
    found = collect([REPO / "runbooks"])
    tested = {p.stem for p in found.scenario_files}
    assert {b.name for b in found.runbooks} <= tested
    assert not found.broken


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_scenarios_pass_and_cover_their_runbook_fully(path: Path) -> None:
    result = run_suite(collect([path]), catalog=REPO / "runbooks")
    assert not result.broken, result.broken
    failures = [f"{v.title}: {f}" for v in result.verdicts for f in v.failures]
    assert not failures, "\n".join(failures)
    (entry,) = result.coverage.ordered()
    assert entry.percent == 100.0, entry.summary()


def test_the_pre_commit_hooks_run_real_commands_on_the_right_files() -> None:
    import re

    from executor.cli.app import cli

    hooks = {h["id"]: h for h in yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())}
    assert set(hooks) == {"runbook-validate", "runbook-test"}
    for hook in hooks.values():
        assert {"id", "name", "entry", "language"} <= set(hook) and hook["language"] == "python"
        program, command = hook["entry"].split()
        assert program == "runbook" and command in cli.commands

    def selected(hook: dict[str, Any], path: str) -> bool:
        return bool(re.search(hook["files"], path)) and not re.search(hook["exclude"], path)

    validate, test = hooks["runbook-validate"], hooks["runbook-test"]
    assert selected(validate, "runbooks/disk-pressure.yaml")
    assert not selected(validate, "runbooks/tests/disk-pressure.yaml")
    assert selected(test, "runbooks/tests/disk-pressure.yaml")
    assert selected(test, "ops/runbooks/drain-host.yml")
    assert not selected(test, "runbooks/playbooks/clean_old_logs.yml")
