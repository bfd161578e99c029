"""Runbook coverage: which steps and branches no scenario reached.

The branches of a runbook are what an on-call engineer would ask about:

* every step ran at least once;
* every guard (``when``) was seen true and seen false;
* every step whose result a scenario scripts (ssh, ansible, local, http)
  and every approval failed at least once: its failure path (abort, continue,
  rollback, an escalation that waits for it) was walked;
* every rollback action ran;
* every ``trigger: always`` / ``any_succeeded`` join ran with a need that did
  not succeed, the one case where the trigger changes anything.

Bare asserts, logs and waits have no failure item: their outcome follows
from other steps, which are covered in their own right.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from executor.model import RESULT_KINDS, Runbook, Step, StepStatus, Trigger
from executor.rehearsal.rehearse import Outcome

STEP, GUARD_TRUE, GUARD_FALSE, FAILURE, ROLLBACK, JOIN = (
    "step",
    "guard-true",
    "guard-false",
    "failure",
    "rollback",
    "join",
)


@dataclass(frozen=True, order=True)
class Item:
    """One thing a scenario should exercise."""

    step: str
    kind: str
    index: int = 0

    def describe(self, book: Runbook) -> str:
        if self.kind == STEP:
            return f"step '{self.step}' never ran"
        if self.kind in (GUARD_TRUE, GUARD_FALSE):
            side = "true" if self.kind == GUARD_TRUE else "false"
            return f"guard of '{self.step}' never {side}"
        if self.kind == FAILURE:
            return f"'{self.step}' never failed"
        if self.kind == ROLLBACK:
            several = len(book.step(self.step).rollback) > 1
            which = f"rollback {self.index + 1} of" if several else "rollback of"
            return f"{which} '{self.step}' never run"
        trigger = book.step(self.step).trigger.value
        return f"join of '{self.step}' (trigger: {trigger}) never taken with a need not succeeded"


def items_of(book: Runbook) -> list[Item]:
    """Everything coverage counts in ``book``, in file order."""
    out: list[Item] = []
    for step in book.steps:
        out.append(Item(step.id, STEP))
        out.extend(Item(step.id, side) for side in _guard_sides(step))
        if step.kind in RESULT_KINDS or step.is_approval:
            out.append(Item(step.id, FAILURE))
        out.extend(Item(step.id, ROLLBACK, i) for i in range(len(step.rollback)))
        if step.trigger is not Trigger.ALL_SUCCEEDED and step.needs:
            out.append(Item(step.id, JOIN))
    return out


def _guard_sides(step: Step) -> tuple[str, ...]:
    if step.when is None:
        return ()
    constant = step.when.strip().lower()
    if constant == "true":
        return (GUARD_TRUE,)
    if constant == "false":
        return (GUARD_FALSE,)
    return (GUARD_TRUE, GUARD_FALSE)


def covered_by(outcome: Outcome) -> set[Item]:
    """The items one rehearsed run exercised."""
    book = outcome.scenario.runbook
    ran = {p for p in outcome.path if not p.startswith("rollback:")}
    found: set[Item] = {Item(s, STEP) for s in ran}
    guarded: set[str] = set()
    for record in outcome.records:
        if record.step is None:
            continue
        if record.event == "guard.evaluated":
            guarded.add(record.step)
            side = GUARD_TRUE if record.data.get("value") else GUARD_FALSE
            found.add(Item(record.step, side))
        elif record.event == "rollback.intent":
            found.add(Item(record.step, ROLLBACK, int(record.data.get("index", 0))))
    for sid, status in outcome.steps.items():
        if status == StepStatus.FAILED.value:
            found.add(Item(sid, FAILURE))
    for step in book.steps:
        if step.trigger is Trigger.ALL_SUCCEEDED or not (step.id in ran or step.id in guarded):
            continue
        if any(outcome.steps.get(n) != StepStatus.SUCCEEDED.value for n in step.needs):
            found.add(Item(step.id, JOIN))
    return found


@dataclass
class RunbookCoverage:
    """Coverage of one runbook (``name@version``) by the scenarios that ran."""

    runbook: Runbook
    items: list[Item]
    covered: set[Item] = field(default_factory=set)
    scenarios: int = 0

    @property
    def missing(self) -> list[Item]:
        return [i for i in self.items if i not in self.covered]

    @property
    def percent(self) -> float:
        if not self.items:
            return 100.0
        hit = sum(1 for i in self.items if i in self.covered)
        return 100.0 * hit / len(self.items)

    def summary(self) -> str:
        """``disk-pressure@1.0.0 92% (22/24): guard of 'x' never false; ...``."""
        hit = len(self.items) - len(self.missing)
        head = f"{self.runbook.ref} {_pct(self.percent)} ({hit}/{len(self.items)})"
        if not self.scenarios:
            return f"{head}: no scenario rehearsed this runbook"
        if not self.missing:
            return head
        return head + ": " + "; ".join(i.describe(self.runbook) for i in self.missing)


def _pct(value: float) -> str:
    return f"{value:.0f}%" if value in (0.0, 100.0) else f"{value:.1f}%"


class Coverage:
    """Coverage of every runbook a test run looked at."""

    def __init__(self) -> None:
        self.books: dict[str, RunbookCoverage] = {}

    def include(self, book: Runbook) -> RunbookCoverage:
        """Count ``book`` even if no scenario tests it (it then shows as 0%)."""
        found = self.books.get(book.ref)
        if found is None:
            found = RunbookCoverage(book, items_of(book))
            self.books[book.ref] = found
        return found

    def record(self, outcome: Outcome) -> None:
        entry = self.include(outcome.scenario.runbook)
        entry.scenarios += 1
        entry.covered |= covered_by(outcome)

    def below(self, threshold: float) -> list[RunbookCoverage]:
        return [c for c in self.ordered() if c.percent + 1e-9 < threshold]

    def ordered(self) -> list[RunbookCoverage]:
        return [self.books[k] for k in sorted(self.books)]

    @property
    def percent(self) -> float:
        total = sum(len(c.items) for c in self.books.values())
        hit = sum(len(c.items) - len(c.missing) for c in self.books.values())
        return 100.0 if not total else 100.0 * hit / total
