"""`runbook validate` on game day plans: the shipped ones pass, a broken one points at its line."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from executor.cli import main

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "gamedays" / "web2-demoapp-killed.yaml"


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


Run = Callable[..., Done]


@pytest.fixture
def runbook(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    """The command line in this process, from the repository (runbooks/ is the catalog)."""
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("RUNBOOK_CATALOG", raising=False)

    def run(*args: str) -> Done:
        with pytest.raises(SystemExit) as stopped:
            main(list(args))
        captured = capsys.readouterr()
        return Done(int(stopped.value.code or 0), captured.out, captured.err)

    return run


def line_of(text: str, needle: str) -> int:
    """The 1-based line of ``needle``: where the reported problem must point."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def broken_copy(tmp_path: Path, old: str, new: str, name: str = "broken.yaml") -> Path:
    text = SHIPPED.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / name
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def test_shipped_plans_directory_is_valid(runbook: Run) -> None:
    plans = sorted((REPO / "gamedays").glob("*.yaml"))
    assert plans
    done = runbook("validate", "gamedays/", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["valid"] is True
    assert sorted(Path(f["path"]).name for f in report["files"]) == [p.name for p in plans]


def test_schema_error_reports_line_and_column(runbook: Run, tmp_path: Path) -> None:
    path = broken_copy(tmp_path, "inject: kill}", "inject: kil}")
    done = runbook("validate", str(path))
    assert done.returncode == 1
    line = line_of(path.read_text(), "inject: kil}")
    column = path.read_text().splitlines()[line - 1].index("kil}") + 1
    assert f"{path}:{line}:{column}: error: 'fault.inject' must be one of kill," in done.stdout
    assert "did you mean 'kill'?" in done.stdout
    assert "1 of 1 file(s) invalid" in done.stderr


def test_unknown_runbook_is_reported_against_the_catalog(runbook: Run, tmp_path: Path) -> None:
    path = broken_copy(
        tmp_path, "runbook: restart-crashlooping-service", "runbook: no-such-runbook"
    )
    done = runbook("validate", str(path), "--json")
    assert done.returncode == 1
    issues = json.loads(done.stdout)["files"][0]["issues"]
    assert issues, done.stdout
    where = line_of(path.read_text(), "no-such-runbook")
    assert any(i["line"] == where and "no-such-runbook" in i["message"] for i in issues), issues


def test_directory_reports_only_the_broken_plan(runbook: Run, tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(SHIPPED.read_text(encoding="utf-8"), encoding="utf-8")
    bad = broken_copy(tmp_path, "timeout: 3m", "timeout: soon", "bad.yml")
    done = runbook("validate", str(tmp_path))
    assert done.returncode == 1
    errors = [line for line in done.stdout.splitlines() if ": error: " in line]
    assert errors == [
        f"{bad}:{line_of(bad.read_text(), 'timeout: soon')}:10: error: 'timeout': 'soon' is not "
        "a duration such as 30s, 5m or 2h, or a number of seconds"
    ]
    assert "1 of 2 file(s) invalid" in done.stderr


def test_yaml_syntax_error_in_a_plan_points_at_it(runbook: Run, tmp_path: Path) -> None:
    path = broken_copy(tmp_path, "checks:\n", "checks: [\n")
    done = runbook("validate", str(path))
    assert done.returncode == 1
    assert f"{path}:" in done.stdout and ": error: " in done.stdout


def test_a_plan_is_not_checked_as_a_runbook(runbook: Run, tmp_path: Path) -> None:
    """Quoted kind is still a plan; the runbook schema's complaints must not appear."""
    path = broken_copy(tmp_path, "kind: GameDay", 'kind: "GameDay"  # a drill')
    done = runbook("validate", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "steps" not in done.stdout
