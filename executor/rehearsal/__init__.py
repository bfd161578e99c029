"""Rehearsals: the real engine and conductor fed scripted results (DESIGN.md section 8).

A scenario file names a runbook, the inputs of a run, what each step returns
and what must follow; ``runbook test`` rehearses every scenario with no host,
Vault or network touched, and reports which steps and branches of each
runbook no scenario reached.

    found = collect([Path("runbooks")])
    result = run_suite(found)
    result.passed, result.failed, result.coverage.percent
"""

from executor.rehearsal.coverage import Coverage, Item, RunbookCoverage, covered_by, items_of
from executor.rehearsal.loading import (
    RunbookFinder,
    ScenarioFile,
    load_scenario_file,
    looks_like_scenarios,
    scenario_files,
)
from executor.rehearsal.rehearse import Outcome, path_of, rehearse
from executor.rehearsal.scenario import Scenario
from executor.rehearsal.suite import Collection, SuiteResult, collect, junit_xml, run_suite
from executor.rehearsal.verdict import Verdict, judge, path_diff

__all__ = [
    "Collection",
    "Coverage",
    "Item",
    "Outcome",
    "RunbookCoverage",
    "RunbookFinder",
    "Scenario",
    "ScenarioFile",
    "SuiteResult",
    "Verdict",
    "collect",
    "covered_by",
    "items_of",
    "judge",
    "junit_xml",
    "load_scenario_file",
    "looks_like_scenarios",
    "path_diff",
    "path_of",
    "rehearse",
    "run_suite",
    "scenario_files",
]
