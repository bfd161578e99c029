"""Warnings about runbooks that are valid but risky at 3 a.m.

Validation refuses what cannot run; lint flags what will run but may hurt:
a change with no way back, unattended automation with no blast-radius limit,
a change nobody checks afterwards, inputs nobody reads, and steps that can
never run because a guard is constantly false (with everything that depends on
them). Every finding is an ``Issue`` with severity ``warning`` and a stable code.
"""

from __future__ import annotations

from typing import Any

from executor import expressions
from executor.errors import Issue
from executor.graph import Graph
from executor.loader import DocPath, Document
from executor.model import Automation, Runbook, Step, Trigger
from executor.validation import expression_sites, raw_steps

__all__ = ["lint_document"]


def lint_document(doc: Document, runbook: Runbook) -> list[Issue]:
    """Every warning for a runbook that validation accepted, sorted by position."""
    linter = _Linter(doc, runbook)
    linter.check_rollbacks()
    linter.check_automation()
    linter.check_verification()
    linter.check_unused_inputs()
    linter.check_unreachable()
    return sorted(linter.issues, key=lambda i: (i.line, i.column, i.message))


class _Linter:
    def __init__(self, doc: Document, runbook: Runbook) -> None:
        self.doc = doc
        self.runbook = runbook
        self.raw = raw_steps(doc.data)
        self.graph = Graph.of(runbook)
        self.index = {step.id: i for i, step in enumerate(runbook.steps)}
        self.issues: list[Issue] = []

    def warn(self, path: DocPath, message: str, code: str, *, key: bool = False) -> None:
        line, col = self.doc.position(path, key=key)
        issue = Issue(self.doc.path, line, col, message, code=code, severity="warning")
        self.issues.append(issue)

    def at_step(self, step: Step) -> DocPath:
        return ("steps", self.index[step.id], "id")

    def check_rollbacks(self) -> None:
        for step in self.runbook.steps:
            raw = self.raw[self.index[step.id]]
            if step.mutating and not step.rollback and "on_failure" not in raw:
                self.warn(
                    self.at_step(step),
                    f"step '{step.id}' changes things ({step.kind}) but has no rollback and "
                    "no explicit on_failure; add a rollback, or write on_failure: abort "
                    "if nothing can be undone",
                    "no-rollback",
                )

    def check_automation(self) -> None:
        policy = self.runbook.policy
        if policy.automation is Automation.AUTO and policy.max_hosts is None:
            self.warn(
                ("policy", "automation"),
                "policy.automation is auto but policy.max_hosts is not set; an alert could "
                "run this on every host a target resolves to: set max_hosts",
                "auto-without-max-hosts",
            )

    def check_verification(self) -> None:
        """A step's own assert counts: it checks the world right after the change."""
        for step in self.runbook.steps:
            if not step.mutating:
                continue
            checks = [step, *(self.runbook.step(s) for s in self.graph.descendants(step.id))]
            if not any(s.assertion is not None or s.kind == "http" for s in checks):
                self.warn(
                    self.at_step(step),
                    f"step '{step.id}' changes things ({step.kind}) but no later step "
                    "verifies it; add a step that needs it with an assert or an http check",
                    "unverified-mutation",
                )

    def check_unused_inputs(self) -> None:
        read: set[str] = set()
        for site in expression_sites(self.doc.data):
            for ref in expressions.analyze(site.source, kind=site.kind).references:
                if ref[0] == "inputs":
                    if len(ref) == 1:
                        return  # the whole mapping is read (inputs | to_json): all are used
                    read.add(ref[1])
        for name in self.runbook.inputs:
            if name not in read:
                self.warn(
                    ("inputs", name),
                    f"input '{name}' is declared but never used; remove it, "
                    f"or read it as inputs.{name}",
                    "unused-input",
                    key=True,
                )

    def check_unreachable(self) -> None:
        """Constant-false guards, then what can therefore never run, in graph order."""
        cause: dict[str, str] = {}
        for step_id in self.graph.topological:
            step = self.runbook.step(step_id)
            if _always_false(self.raw[self.index[step_id]].get("when")):
                cause[step_id] = step_id
                self.warn(
                    ("steps", self.index[step_id], "when"),
                    f"step '{step_id}' never runs: its when guard is always false",
                    "unreachable-step",
                )
                continue
            dead = [n for n in step.needs if n in cause]
            if not dead or step.trigger is Trigger.ALWAYS:
                continue
            if step.trigger is Trigger.ANY_SUCCEEDED and len(dead) < len(step.needs):
                continue
            root = cause[dead[0]]
            cause[step_id] = root
            self.warn(
                self.at_step(step),
                f"step '{step_id}' never runs: it depends on step '{root}', "
                "whose when guard is always false",
                "unreachable-step",
            )


def _always_false(guard: Any) -> bool:
    """True when a ``when`` (bool, expression or list of them) is false without any context."""
    if isinstance(guard, bool):
        return not guard
    items = guard if isinstance(guard, list) else [guard] if isinstance(guard, str) else []
    for item in items:
        known, value = expressions.analyze(item, kind="expression").constant
        if known and not value:
            return True
    return False
