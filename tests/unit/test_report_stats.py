"""`runbook report`: runs by status, success rate and timings, per runbook and overall, from the
store's rows and the audit log's timestamps; and the command that prints them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_gameday_timeline import T0, Log

from executor.audit import iter_records
from executor.cli import main
from executor.gameday.stats import OVERALL, Distribution, run_stats
from executor.store import SqliteStore


def test_median_and_p90_interpolate_between_ranks() -> None:
    assert Distribution.of([]) == Distribution(0, None, None)
    assert Distribution.of([4.0]) == Distribution(1, 4.0, 4.0)
    assert Distribution.of([1.0, 2.0]) == Distribution(2, 1.5, pytest.approx(1.9))
    spread = Distribution.of(float(v) for v in range(1, 11))  # 1..10
    assert (spread.median, spread.p90) == (5.5, pytest.approx(9.1))


def add_run(
    log: Log,
    rows: list[dict[str, Any]],
    run_id: str,
    runbook: str,
    status: str,
    at: float,
    *,
    first: float | None = None,
    done: float | None = None,
    wait: float | None = None,
    dry_run: bool = False,
) -> None:
    """A run in the store (rows) and in the audit log, ``at`` seconds after T0."""
    rows.append(
        {"id": run_id, "runbook": runbook, "status": status, "created": T0 + at, "dry_run": dry_run}
    )
    ref = f"{runbook}@1.0.0"

    def rec(t: float, event: str, step: str | None = None, **data: Any) -> None:
        log.at(at + t, event, run_id=run_id, runbook=ref, step=step, actor="a", data=data)

    rec(0, "run.requested", dry_run=dry_run)
    rec(0.1, "step.intent", step="note", kind="log")
    if wait is not None:
        rec(0.2, "approval.requested", step="ok", quorum=1)
        rec(0.2 + wait, "approval.granted", step="ok", approver="b")
    if first is not None:
        rec(first, "step.intent", step="act", kind="ssh", dry_run=dry_run)
    if done is not None:
        rec(done, "run.finished", status=status)


@pytest.fixture
def world(tmp_path: Path) -> tuple[Log, list[dict[str, Any]]]:
    log, rows = Log(tmp_path / "audit.jsonl"), []
    add_run(log, rows, "r1", "disk-pressure", "succeeded", 0, first=2, done=10, wait=4)
    add_run(log, rows, "r2", "disk-pressure", "failed", 20, first=4, done=6)
    add_run(log, rows, "r3", "disk-pressure", "waiting", 30, wait=None)
    add_run(log, rows, "r4", "restart-crashlooping-service", "succeeded", 40, first=1, done=3)
    add_run(
        log,
        rows,
        "r5",
        "restart-crashlooping-service",
        "succeeded",
        50,
        first=9,
        done=99,
        dry_run=True,
    )
    log.at(
        60,
        "run.refused",
        run_id="r6",
        runbook="disk-pressure@1.0.0",
        actor="a",
        data={"reason": "cooldown"},
    )
    return log, rows


def stats_of(world: tuple[Log, list[dict[str, Any]]], **kwargs: Any) -> dict[str, Any]:
    log, rows = world
    return {s.runbook: s.as_dict() for s in run_stats(rows, iter_records(log.path), **kwargs)}


def test_per_runbook_and_overall(world: tuple[Log, list[dict[str, Any]]]) -> None:
    found = stats_of(world)
    disk = found["disk-pressure"]
    assert disk["by_status"] == {"failed": 1, "succeeded": 1, "waiting": 1}
    assert (disk["runs"], disk["refused"], disk["success_rate"]) == (3, 1, 0.5)
    assert disk["time_to_first_action"] == {"count": 2, "median": 3.0, "p90": pytest.approx(3.8)}
    assert disk["approval_wait"] == {
        "count": 1,
        "median": pytest.approx(4.0),
        "p90": pytest.approx(4.0),
    }
    assert disk["time_to_mitigation"] == {"count": 1, "median": 10.0, "p90": 10.0}
    restart = found["restart-crashlooping-service"]
    assert restart["runs"] == 1  # the dry run is left out
    assert restart["time_to_first_action"]["median"] == 1.0
    overall = found[OVERALL]
    assert (overall["runs"], overall["refused"]) == (4, 1)
    assert overall["success_rate"] == pytest.approx(2 / 3)
    assert overall["time_to_mitigation"]["count"] == 2


def test_since_and_runbook_narrow_the_runs(world: tuple[Log, list[dict[str, Any]]]) -> None:
    recent = stats_of(world, since=T0 + 25)
    assert recent["disk-pressure"]["by_status"] == {"waiting": 1}
    assert recent["disk-pressure"]["success_rate"] is None  # nothing ended
    only = stats_of(world, runbook="restart-crashlooping-service")
    assert set(only) == {"restart-crashlooping-service", OVERALL}
    assert only[OVERALL]["refused"] == 0


def test_nothing_recorded_gives_an_empty_overall() -> None:
    (overall,) = run_stats([], [])
    assert (overall.runbook, overall.runs, overall.success_rate) == (OVERALL, 0, None)


# --------------------------------------------------------------------------- the command


def home_with_runs(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    log = Log(home / "audit.jsonl")
    rows: list[dict[str, Any]] = []
    add_run(log, rows, "r1", "disk-pressure", "succeeded", 0, first=2, done=10, wait=4)
    add_run(log, rows, "r2", "disk-pressure", "failed", 20, first=4, done=6)
    with SqliteStore(home / "state.db") as store:
        for row in rows:
            store.create_run({**row, "version": "1.0.0"})
    return home


def report(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main(["--home", str(home), "report", *args])
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out + captured.err


def test_the_command_prints_json_for_machines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = report(capsys, home_with_runs(tmp_path), "--json")
    assert code == 0, text
    body = json.loads(text)
    (disk,) = body["runbooks"]
    assert disk["by_status"] == {"failed": 1, "succeeded": 1}
    assert disk["time_to_first_action"]["median"] == 3.0
    assert body["overall"]["success_rate"] == 0.5 and body["since"] is None


def test_the_command_prints_a_block_per_runbook_for_people(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = report(capsys, home_with_runs(tmp_path), "--runbook", "disk-pressure")
    assert code == 0, text
    lines = text.splitlines()
    assert lines[0] == "disk-pressure: 2 run(s) (failed 1, succeeded 1), 0 refused, success 50%"
    assert lines[1] == "  time to first action  median 3.0s  p90 3.8s  (2 runs)"
    assert lines[2] == "  approval wait         median 4.0s  p90 4.0s  (1 run)"
    assert lines[4].startswith("(all runbooks): 2 run(s)")


def test_the_command_says_when_there_is_nothing_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "empty"
    code, text = report(capsys, home, "--since", "1h")
    assert code == 0
    assert "no runs recorded" in text and "in the last 1h" in text
    assert not home.exists()


def test_a_bad_window_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = report(capsys, tmp_path, "--since", "lately")
    assert code == 2
    assert "--since: not a duration: 'lately'" in text
