"""Expectations and coverage: a wrong scenario fails readably, an untested branch is named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from executor.model import Runbook
from executor.rehearsal import (
    Coverage,
    RunbookFinder,
    covered_by,
    items_of,
    judge,
    load_scenario_file,
    path_diff,
    rehearse,
)
from executor.validation import load_runbook

RUNBOOK = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: disk, version: 1.0.0}
steps:
  - id: measure
    local: {command: df}
    outputs: {percent: "{{ result.stdout | int }}"}
  - id: low
    needs: [measure]
    when: steps.measure.outputs.percent < 90
    log: {message: fine}
  - id: approve
    needs: [measure]
    when: steps.measure.outputs.percent >= 90
    approval: {message: clean?, approvers: [storage], timeout: 10m}
  - id: clean
    needs: [approve]
    local: {command: clean}
    outputs: {freed: "{{ result.stdout }}"}
    on_failure: rollback
    rollback: {local: {command: restore}}
  - id: verify
    needs: [clean]
    local: {command: df}
    on_failure: rollback
  - id: report
    needs: [low, verify]
    trigger: any_succeeded
    log: {message: done}
"""

FULL = {"measure": {"stdout": "95"}}


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    (tmp_path / "disk.yaml").write_text(RUNBOOK, encoding="utf-8")
    (tmp_path / "tests").mkdir()
    return tmp_path


def scenarios(catalog: Path, *items: dict[str, Any]) -> list[Any]:
    body = {"apiVersion": "runbook/v1", "kind": "Scenarios", "runbook": "disk"}
    body["scenarios"] = [{"name": f"s{n}", **item} for n, item in enumerate(items)]
    path = catalog / "tests" / "disk.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    return load_scenario_file(path, RunbookFinder()).scenarios


def verdict_of(catalog: Path, **scenario: Any) -> Any:
    (only,) = scenarios(catalog, scenario)
    return judge(rehearse(only))


def test_a_scenario_whose_expectations_hold_passes(catalog: Path) -> None:
    verdict = verdict_of(
        catalog,
        steps=FULL,
        expect={
            "status": "succeeded",
            "path": ["measure", "approve", "clean", "verify", "report"],
            "outputs": {"measure.percent": 95},
            "steps": {"low": "skipped"},
            "audit": ["approval.granted"],
            "no_audit": ["rollback.intent"],
        },
    )
    assert verdict.passed, verdict.failures


def test_a_wrong_path_fails_with_a_readable_diff(catalog: Path) -> None:
    verdict = verdict_of(catalog, steps=FULL, expect={"path": ["measure", "low", "report"]})
    assert not verdict.passed
    (failure,) = verdict.failures
    lines = failure.splitlines()
    assert lines[0] == "path differs:"
    assert "--- expected path" in lines and "+++ actual path" in lines
    assert "-low" in lines
    assert {"+approve", "+clean", "+verify"} <= set(lines)
    assert " measure" in lines and " report" in lines  # unchanged steps give context


def test_path_diff_shows_rollbacks_as_steps_of_their_own() -> None:
    text = path_diff(["a", "b"], ["a", "b", "rollback:b"])
    assert text.splitlines()[-1] == "+rollback:b"


def test_every_other_difference_is_one_sentence(catalog: Path) -> None:
    verdict = verdict_of(
        catalog,
        steps={"measure": {"stdout": "95"}, "clean": {"fail": True}},
        expect={
            "status": "succeeded",
            "outputs": {"measure.percent": "95", "clean.freed": "1G"},
            "steps": {"clean": "succeeded"},
            "audit": ["approval.denied"],
            "no_audit": ["approval.granted"],
        },
    )
    text = "\n".join(verdict.failures)
    assert "status: expected succeeded, got rolled_back (step 'clean'" in text
    assert "output measure.percent: expected '95' (str), got 95 (int)" in text
    assert "output clean.freed: expected '1G' (str), but the step produced none" in text
    assert "step clean: expected succeeded, got failed" in text
    assert "audit: no approval.denied record (written: " in text
    assert "audit: approval.granted written, but the scenario forbids it" in text


def test_booleans_and_numbers_are_not_confused(catalog: Path) -> None:
    verdict = verdict_of(catalog, steps=FULL, expect={"outputs": {"measure.percent": 95.0}})
    assert verdict.passed
    verdict = verdict_of(catalog, steps={"measure": {"stdout": "1"}},
                         expect={"outputs": {"measure.percent": True}})  # fmt: skip
    assert not verdict.passed


def book() -> Runbook:
    return load_runbook_from(RUNBOOK)


def load_runbook_from(text: str, tmp: Path | None = None) -> Runbook:
    import tempfile

    folder = Path(tmp or tempfile.mkdtemp())
    path = folder / "book.yaml"
    path.write_text(text, encoding="utf-8")
    return load_runbook(path)


def test_coverage_counts_steps_guard_sides_failures_rollbacks_and_joins() -> None:
    items = {(i.step, i.kind, i.index) for i in items_of(book())}
    assert ("low", "guard-true", 0) in items and ("low", "guard-false", 0) in items
    assert ("measure", "failure", 0) in items and ("approve", "failure", 0) in items
    assert ("clean", "rollback", 0) in items
    assert ("report", "join", 0) in items
    assert ("low", "failure", 0) not in items  # a log step's outcome is not scripted
    assert len(items) == 6 + 4 + 4 + 1 + 1


def test_a_never_exercised_branch_lowers_coverage_and_is_named(catalog: Path) -> None:
    happy, calm = scenarios(
        catalog, {"steps": FULL, "expect": {"status": "succeeded"}},
        {"steps": {"measure": {"stdout": "10"}}, "expect": {"status": "succeeded"}},
    )  # fmt: skip
    coverage = Coverage()
    coverage.record(rehearse(happy))
    entry = coverage.books["disk@1.0.0"]
    first = entry.percent
    summary = entry.summary()
    assert summary.startswith("disk@1.0.0 ")
    for missing in [
        "step 'low' never ran",
        "guard of 'low' never true",
        "guard of 'approve' never false",
        "'clean' never failed",
        "rollback of 'clean' never run",
    ]:
        assert missing in summary, missing
    assert "guard of 'approve' never true" not in summary
    assert "join of 'report'" not in summary  # low was skipped and report still ran
    coverage.record(rehearse(calm))
    assert entry.percent > first
    assert "guard of 'approve' never false" not in entry.summary()
    assert entry.scenarios == 2


def test_full_coverage_has_nothing_missing(catalog: Path) -> None:
    items = scenarios(
        catalog,
        {"steps": FULL, "expect": {"status": "succeeded"}},
        {"steps": {"measure": {"stdout": "10"}}, "expect": {"status": "succeeded"}},
        {"steps": {"measure": {"fail": True}}, "expect": {"status": "failed"}},
        {"steps": {**FULL, "approve": {"deny_as": "x"}}, "expect": {"status": "failed"}},
        {"steps": {**FULL, "clean": {"fail": True}}, "expect": {"status": "rolled_back"}},
        {"steps": {**FULL, "verify": {"fail": True}}, "expect": {"status": "rolled_back"}},
    )
    coverage = Coverage()
    for scenario in items:
        outcome = rehearse(scenario)
        assert judge(outcome).passed
        coverage.record(outcome)
    entry = coverage.books["disk@1.0.0"]
    assert entry.missing == [] and entry.percent == 100.0
    assert entry.summary() == "disk@1.0.0 100% (16/16)"
    assert coverage.below(100.0) == []


def test_a_runbook_no_scenario_reached_is_at_zero() -> None:
    coverage = Coverage()
    coverage.include(book())
    (entry,) = coverage.ordered()
    assert entry.percent == 0.0 and "no scenario rehearsed this runbook" in entry.summary()
    assert coverage.below(50.0) == [entry]


def test_a_constant_guard_has_one_side() -> None:
    text = RUNBOOK.replace("when: steps.measure.outputs.percent < 90", "when: false")
    items = {(i.step, i.kind) for i in items_of(load_runbook_from(text))}
    assert ("low", "guard-false") in items and ("low", "guard-true") not in items


def test_covered_items_come_from_what_the_run_did(catalog: Path) -> None:
    (scenario,) = scenarios(
        catalog, {"steps": {**FULL, "verify": {"fail": True}}, "expect": {"status": "rolled_back"}}
    )
    found = {(i.step, i.kind) for i in covered_by(rehearse(scenario))}
    assert {("verify", "failure"), ("clean", "rollback"), ("approve", "guard-true")} <= found
    assert ("low", "guard-false") in found and ("clean", "failure") not in found
