"""Did the rehearsed run do what the scenario expects? Each difference, readably.

A wrong path is shown as a unified diff of the expected against the actual
step path (one step per line, rollbacks as ``rollback:<step>``), the form a
reviewer reads fastest; other differences are one sentence each.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from executor.rehearsal.rehearse import Outcome, outputs_flat

_MISSING = object()


@dataclass
class Verdict:
    """The outcome of one scenario; ``failures`` is empty when it passed."""

    outcome: Outcome
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def title(self) -> str:
        return self.outcome.scenario.title


def path_diff(expected: Sequence[str], actual: Sequence[str]) -> str:
    """A unified diff of two step paths, one step per line."""
    lines = difflib.unified_diff(
        list(expected), list(actual), "expected path", "actual path", lineterm="", n=2
    )
    return "\n".join(lines)


def judge(outcome: Outcome) -> Verdict:
    """Compare the run with every expectation its scenario states."""
    expect = outcome.scenario.expect
    verdict = Verdict(outcome)
    failures = verdict.failures
    failures.extend(outcome.problems)
    if expect.status is not None and expect.status != outcome.status:
        why = f" ({outcome.reason})" if outcome.reason else ""
        failures.append(f"status: expected {expect.status}, got {outcome.status}{why}")
    if expect.path is not None and list(expect.path) != outcome.path:
        failures.append("path differs:\n" + path_diff(expect.path, outcome.path))
    produced = outputs_flat(outcome)
    for key, wanted in expect.outputs.items():
        got = produced.get(key, _MISSING)
        if got is _MISSING:
            failures.append(f"output {key}: expected {_show(wanted)}, but the step produced none")
        elif not _same(got, wanted):
            failures.append(f"output {key}: expected {_show(wanted)}, got {_show(got)}")
    for step_id, wanted in expect.steps.items():
        got = outcome.steps.get(step_id, "pending")
        if got != wanted:
            failures.append(f"step {step_id}: expected {wanted}, got {got}")
    events = set(outcome.events)
    missing = [e for e in expect.audit if e not in events]
    if missing:
        failures.append(f"audit: no {', '.join(missing)} record (written: {_listed(events)})")
    unwanted = [e for e in expect.no_audit if e in events]
    if unwanted:
        failures.append(f"audit: {', '.join(unwanted)} written, but the scenario forbids it")
    return verdict


def _same(got: Any, wanted: Any) -> bool:
    """Equal values of the same kind: 42 is not '42', and True is not 1."""
    if isinstance(got, bool) or isinstance(wanted, bool):
        return type(got) is type(wanted) and got == wanted
    if isinstance(got, int | float) and isinstance(wanted, int | float):
        return got == wanted
    return type(got) is type(wanted) and got == wanted


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _listed(events: set[str]) -> str:
    return ", ".join(sorted(events)) or "none"
