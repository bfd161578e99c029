"""The broken-runbook corpus: each file says, in its own header, exactly what must be reported.

A corpus file starts with ``# expect: LINE:COL: message`` lines, one per issue;
validation must report that set, no more and no less. Each file holds one
class of mistake (one issue code), except ``three-mistakes.yaml``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from executor.errors import Issue
from executor.validation import validate_path

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
FILES = sorted(CORPUS.glob("*.yaml"))
EXPECT = re.compile(rb"^# expect: (\d+):(\d+): (.+)$")


def expected(path: Path) -> set[tuple[int, int, str]]:
    found = set()
    for raw in path.read_bytes().splitlines():
        match = EXPECT.match(raw)
        if match:
            line, col, message = match.groups()
            found.add((int(line), int(col), message.decode("utf-8")))
    return found


def reported(path: Path) -> list[Issue]:
    runbook, issues = validate_path(path)
    assert runbook is None, f"{path.name} was accepted"
    return issues


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_each_file_reports_exactly_what_its_header_expects(path: Path) -> None:
    want = expected(path)
    assert want, f"{path.name} has no '# expect:' lines"
    issues = reported(path)
    assert {(i.line, i.column, i.message) for i in issues} == want
    assert all(i.severity == "error" and i.path == str(path) for i in issues)


@pytest.mark.parametrize(
    "path", [p for p in FILES if p.stem != "three-mistakes"], ids=lambda p: p.stem
)
def test_each_file_holds_one_class_of_mistake(path: Path) -> None:
    assert len({i.code for i in reported(path)}) == 1


def test_three_separate_mistakes_are_all_reported_with_their_lines() -> None:
    issues = reported(CORPUS / "three-mistakes.yaml")
    assert [(i.line, i.code) for i in issues] == [
        (18, "bad-value"),
        (20, "unknown-need"),
        (21, "undeclared-input"),
    ]


def test_the_corpus_covers_every_rule() -> None:
    assert len(FILES) >= 45
    codes = {i.code for path in FILES for i in reported(path)}
    loader = {
        "not-utf8", "yaml-syntax", "tab-indentation", "duplicate-key", "alias-bomb",
        "recursive-alias", "not-a-mapping", "multiple-documents", "unsupported-tag",
        "non-string-key",
    }  # fmt: skip
    schema = {
        "unknown-key", "missing-key", "wrong-type", "bad-value", "bad-pattern", "bad-duration",
        "two-actions", "no-action", "too-few", "credential-kind", "playbook-or-module",
        "args-without-module", "json-and-body", "out-of-range", "rollback-entry", "bad-name",
    }  # fmt: skip
    semantic = {
        "duplicate-step-id", "unknown-need", "cycle", "expression-syntax", "undeclared-input",
        "not-an-ancestor", "undeclared-output", "unknown-step", "unknown-step-field",
        "result-not-here", "result-without-action", "unknown-secret", "wrong-credential-kind",
        "unknown-target", "unknown-credential", "rollback-not-action", "bad-default",
        "bad-regex", "plan-time-only", "unknown-name", "self-reference",
    }  # fmt: skip
    assert loader | schema | semantic <= codes
