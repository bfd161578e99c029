"""``runbook test``: collect scenario files, rehearse each scenario, add up coverage.

Paths may be scenario files, runbook files (their scenarios are found beside
them, in the same folder or its ``tests/`` folder) or directories (every
scenario file below, and every runbook below counted for coverage, so a
runbook nobody tests shows up at 0%). Everything runs in this process, with
no sleep and no I/O beyond reading the files.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from executor.catalog import load_entry, looks_like_runbook, runbook_files, semver_key
from executor.errors import Issue, ValidationFailed
from executor.loader import load_document
from executor.model import Runbook
from executor.rehearsal.coverage import Coverage
from executor.rehearsal.loading import (
    RunbookFinder,
    ScenarioFile,
    load_scenario_file,
    looks_like_scenarios,
    scenario_files,
)
from executor.rehearsal.rehearse import rehearse
from executor.rehearsal.verdict import Verdict, judge


@dataclass
class Collection:
    """What a ``runbook test`` invocation will look at."""

    scenario_files: list[Path] = field(default_factory=list)
    runbooks: list[Runbook] = field(default_factory=list)
    broken: list[tuple[Path, list[Issue]]] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)

    def add_scenarios(self, paths: Iterable[Path]) -> None:
        for path in paths:
            if path not in self.scenario_files:
                self.scenario_files.append(path)

    def add_runbook(self, book: Runbook) -> None:
        if all(b.ref != book.ref for b in self.runbooks):
            self.runbooks.append(book)


def collect(paths: Sequence[Path]) -> Collection:
    """Sort the given paths into scenario files and runbooks to cover."""
    found = Collection()
    for path in paths:
        if path.is_dir():
            found.add_scenarios(scenario_files(path))
            _add_catalog(found, path)
        elif looks_like_scenarios(path):
            found.add_scenarios([path])
        elif path.suffix in (".yaml", ".yml") and looks_like_runbook(path):
            book = _runbook(found, path)
            if book is not None:
                found.add_runbook(book)
                found.add_scenarios(scenarios_beside(path, book))
        else:
            found.ignored.append(path)
    return found


def _add_catalog(found: Collection, root: Path) -> None:
    """The newest version of each runbook under ``root``; broken files are reported."""
    newest: dict[str, Runbook] = {}
    for path in runbook_files(root):
        book = _runbook(found, path)
        if book is None:
            continue
        known = newest.get(book.name)
        if known is None or semver_key(book.version) > semver_key(known.version):
            newest[book.name] = book
    for name in sorted(newest):
        found.add_runbook(newest[name])


def _runbook(found: Collection, path: Path) -> Runbook | None:
    entry = load_entry(path)
    errors = [i for i in entry.issues if i.severity == "error"]
    if entry.runbook is None or errors:
        found.broken.append((path, errors or entry.issues))
        return None
    return entry.runbook


def scenarios_beside(path: Path, book: Runbook) -> list[Path]:
    """Scenario files next to a runbook file (or in its tests/ folder) that test it."""
    folder = path.parent
    candidates = [p for p in sorted(folder.glob("*")) if p.suffix in (".yaml", ".yml")]
    if (folder / "tests").is_dir():
        candidates.extend(scenario_files(folder / "tests"))
    return [p for p in candidates if looks_like_scenarios(p) and _tests(p, path, book)]


def _tests(scenario_path: Path, runbook_path: Path, book: Runbook) -> bool:
    try:
        ref = load_document(scenario_path).data.get("runbook")
    except ValidationFailed:
        return True  # unreadable: let the run report why
    if not isinstance(ref, str):
        return True
    if ref.endswith((".yaml", ".yml")) or "/" in ref:
        return (scenario_path.parent / ref).resolve() == runbook_path.resolve()
    name, _, version = ref.partition("@")
    return name == book.name and version in ("", book.version)


@dataclass
class SuiteResult:
    """Every verdict, every file that could not be loaded, and the coverage."""

    verdicts: list[Verdict] = field(default_factory=list)
    broken: list[tuple[Path, list[Issue]]] = field(default_factory=list)
    coverage: Coverage = field(default_factory=Coverage)
    seconds: float = 0.0

    @property
    def passed(self) -> int:
        return sum(1 for v in self.verdicts if v.passed)

    @property
    def failed(self) -> int:
        return sum(1 for v in self.verdicts if not v.passed) + len(self.broken)


def run_suite(
    found: Collection,
    *,
    catalog: Path | None = None,
    select: str | None = None,
) -> SuiteResult:
    """Rehearse every scenario of ``found`` (those whose title contains ``select``)."""
    started = time.perf_counter()
    finder = RunbookFinder(catalog)
    result = SuiteResult(broken=list(found.broken))
    for book in found.runbooks:
        result.coverage.include(book)
    for path in found.scenario_files:
        try:
            loaded: ScenarioFile = load_scenario_file(path, finder)
        except ValidationFailed as failed:
            result.broken.append((path, list(failed.issues)))
            continue
        result.coverage.include(loaded.runbook)
        for scenario in loaded.scenarios:
            if select and select.lower() not in scenario.title.lower():
                continue
            began = time.perf_counter()
            outcome = rehearse(scenario)
            verdict = judge(outcome)
            verdict.seconds = time.perf_counter() - began
            result.verdicts.append(verdict)
            result.coverage.record(outcome)
    result.seconds = time.perf_counter() - started
    return result


def junit_xml(result: SuiteResult, *, min_coverage: float | None = None) -> str:
    """JUnit XML for CI: a suite per scenario file, plus one for coverage."""
    root = ElementTree.Element("testsuites", name="runbook test")
    suites: dict[str, ElementTree.Element] = {}
    for verdict in result.verdicts:
        scenario = verdict.outcome.scenario
        suite = suites.get(scenario.source)
        if suite is None:
            suite = ElementTree.SubElement(root, "testsuite", name=scenario.source)
            suites[scenario.source] = suite
        case = ElementTree.SubElement(
            suite,
            "testcase",
            classname=scenario.runbook.ref,
            name=scenario.name,
            file=scenario.source,
            line=str(scenario.line),
            time=f"{verdict.seconds:.4f}",
        )
        if not verdict.passed:
            failure = ElementTree.SubElement(
                case, "failure", message=verdict.failures[0].splitlines()[0]
            )
            failure.text = "\n".join(verdict.failures)
    for path, issues in result.broken:
        suite = ElementTree.SubElement(root, "testsuite", name=str(path))
        case = ElementTree.SubElement(suite, "testcase", classname=str(path), name="load")
        error = ElementTree.SubElement(case, "error", message=f"{len(issues)} problem(s)")
        error.text = "\n".join(str(i) for i in issues)
    coverage = ElementTree.SubElement(root, "testsuite", name="coverage")
    for entry in result.coverage.ordered():
        case = ElementTree.SubElement(
            coverage, "testcase", classname="coverage", name=entry.runbook.ref
        )
        if min_coverage is not None and entry.percent + 1e-9 < min_coverage:
            failure = ElementTree.SubElement(
                case, "failure", message=f"coverage below {min_coverage:g}%"
            )
            failure.text = entry.summary()
        else:
            ElementTree.SubElement(case, "system-out").text = entry.summary()
    for suite in root.iter("testsuite"):
        cases = list(suite.iter("testcase"))
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
        suite.set("errors", str(sum(1 for c in cases if c.find("error") is not None)))
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
