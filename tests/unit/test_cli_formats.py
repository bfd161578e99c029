"""validate, lint, graph, list and catalog lock through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def runbook(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "executor.cli", *args],
        cwd=cwd,
        text=True,
        capture_output=True,
        timeout=120,
    )


THREE_MISTAKES = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: three, version: 1.0.0}
steps:
  - id: a
    local: {command: "true"}
    neeeds: []
  - id: b
    needs: [zz]
    log: {message: hi}
  - id: c
    needs: [a]
    on_failure: retry
    log: {message: hi}
"""

GOOD = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: good, version: 1.0.0, owner: sre}
inputs:
  host: {type: string}
policy: {automation: approval}
steps:
  - id: approve
    approval: {message: "go?", approvers: [oncall]}
  - id: act
    needs: [approve]
    when: inputs.host != 'db1'
    local: {command: "echo {{ inputs.host }}"}
    on_failure: abort
  - id: check
    needs: [act]
    assert: {that: ["steps.act.status == 'succeeded'"]}
"""


def test_shipped_catalog_is_valid() -> None:
    done = runbook("validate", "runbooks/")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "valid" in done.stderr


def test_three_separate_mistakes_are_all_reported_with_lines(tmp_path: Path) -> None:
    path = tmp_path / "three.yaml"
    path.write_text(THREE_MISTAKES, encoding="utf-8")
    done = runbook("validate", str(path))
    assert done.returncode == 1
    lines = [line for line in done.stdout.splitlines() if line.startswith(str(path))]
    assert len(lines) == 3, done.stdout
    assert f"{path}:7:" in lines[0] and "did you mean 'needs'" in lines[0]
    assert f"{path}:9:" in lines[1] and "zz" in lines[1]
    assert f"{path}:13:" in lines[2] and "on_failure" in lines[2]


def test_validate_json_is_machine_readable(tmp_path: Path) -> None:
    path = tmp_path / "three.yaml"
    path.write_text(THREE_MISTAKES, encoding="utf-8")
    done = runbook("validate", "--json", str(path))
    payload = json.loads(done.stdout)
    assert payload["valid"] is False
    assert {i["line"] for i in payload["files"][0]["issues"]} == {7, 9, 13}


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert runbook("validate", str(tmp_path / "missing.yaml")).returncode == 2
    assert runbook("validate").returncode == 2
    assert runbook("graph", "good", "--format", "png").returncode == 2


def test_lint_warns_but_exits_0_unless_strict(tmp_path: Path) -> None:
    risky = GOOD.replace("    on_failure: abort\n", "").replace("  - id: check", "  - id: check2")
    path = tmp_path / "risky.yaml"
    path.write_text(risky, encoding="utf-8")
    plain = runbook("lint", str(path))
    assert plain.returncode == 0
    assert "warning" in plain.stdout
    assert runbook("lint", "--strict", str(path)).returncode == 1


def test_shipped_catalog_is_lint_clean() -> None:
    done = runbook("lint", "--strict", "runbooks/")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("fmt", ["mermaid", "dot"])
def test_graph_shows_guards_and_approvals(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD, encoding="utf-8")
    done = runbook("graph", str(path), "--format", fmt)
    assert done.returncode == 0, done.stderr
    assert "when: inputs.host != 'db1'" in done.stdout.replace("#quot;", '"')
    assert "approval: oncall" in done.stdout
    if fmt == "mermaid":
        assert done.stdout.splitlines()[1] == "flowchart TD"
        assert "approve --> act" not in done.stdout  # guarded edge is labelled
        assert "approve -->|if true| act" in done.stdout
    else:
        assert done.stdout.startswith('digraph "good@1.0.0"')
        assert "shape=hexagon" in done.stdout


def test_list_and_catalog_lock(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD, encoding="utf-8")
    listed = runbook("--catalog", str(tmp_path), "list", "--json")
    assert json.loads(listed.stdout)["runbooks"][0] == {
        "name": "good",
        "versions": ["1.0.0"],
        "newest": "1.0.0",
        "owner": "sre",
        "automation": "approval",
        "title": None,
    }
    locked = runbook("--catalog", str(tmp_path), "catalog", "lock")
    assert locked.returncode == 0 and "locked good@1.0.0" in locked.stdout
    (tmp_path / "good.yaml").write_text(GOOD.replace("go?", "go now?"), encoding="utf-8")
    again = runbook("validate", str(tmp_path))
    assert again.returncode == 1
    assert "changed since it was locked" in again.stdout


def test_every_command_has_help_with_an_example() -> None:
    for command in (
        "validate",
        "lint",
        "graph",
        "list",
        "run",
        "status",
        "runs",
        "approve",
        "deny",
        "resume",
        "resolve",
        "kill",
        "killswitch",
        "audit",
    ):
        done = runbook(command, "--help")
        assert done.returncode == 0, command
        assert "Example" in done.stdout or "runbook " in done.stdout, command
