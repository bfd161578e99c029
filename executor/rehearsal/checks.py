"""What the schema cannot see: a scenario must talk about the runbook it tests.

Steps, targets, credentials, outputs and rollbacks a scenario names must
exist in the runbook; approval answers go to approval steps and host
results to host steps; inputs must be ones the runbook accepts. Each problem
points at the key to fix and suggests the nearest real name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from executor.errors import Issue
from executor.inputs import InputError, resolve_inputs
from executor.loader import DocPath, Document
from executor.model import HOST_KINDS, Runbook, Step
from executor.rehearsal.scenario import APPROVAL_FIELDS, merged
from executor.rehearsal.schema import describe
from executor.schema_words import did_you_mean

_NO_RESULT = {
    "log": "a log step always succeeds (its message is its output)",
    "wait": "a wait step always succeeds on the simulated clock",
    "assert": "a bare assert step's outcome follows from its expressions; script the steps "
    "it reads instead",
}


class _Checker:
    def __init__(self, doc: Document, book: Runbook) -> None:
        self.doc = doc
        self.book = book
        self.issues: list[Issue] = []
        self.steps = {s.id: s for s in book.steps}

    def add(self, path: DocPath, message: str, *, key: bool = True) -> None:
        line, col = self.doc.position(path, key=key)
        self.issues.append(Issue(self.doc.path, line, col, message, code="scenario-semantic"))

    def where(self, path: DocPath) -> str:
        return describe(path, self.doc.data)

    def step(self, path: DocPath, step_id: Any) -> Step | None:
        found = self.steps.get(step_id) if isinstance(step_id, str) else None
        if found is None:
            self.add(
                path,
                f"{self.where(path)}: {self.book.ref} has no step {step_id!r}"
                f"{did_you_mean(str(step_id), self.steps)}",
            )
        return found

    # ------------------------------------------------------------------ parts

    def run(self) -> list[Issue]:
        data = self.doc.data
        defaults = _mapping(data.get("defaults"))
        self.check_parts(("defaults",), defaults, _mapping(defaults.get("hosts")))
        names: dict[str, int] = {}
        for index, raw in enumerate(_list(data.get("scenarios"))):
            if not isinstance(raw, dict):
                continue
            base: DocPath = ("scenarios", index)
            name = raw.get("name")
            if isinstance(name, str) and name in names:
                self.add(
                    (*base, "name"),
                    f"scenario name {name!r} is used twice (first in scenario {names[name] + 1}); "
                    "names must be unique in a file",
                    key=False,
                )
            elif isinstance(name, str):
                names[name] = index
            full = merged(defaults, raw)
            self.check_parts(base, raw, _mapping(full.get("hosts")))
            self.check_inputs(base, full, raw)
            self.check_scenario(base, raw)
        return self.issues

    def check_parts(self, base: DocPath, raw: Mapping[str, Any], hosts: Mapping[str, Any]) -> None:
        """The keys a scenario shares with ``defaults``: hosts, secrets, steps, rollbacks."""
        for target in _mapping(raw.get("hosts")):
            if target not in self.book.targets:
                self.add(
                    (*base, "hosts", target),
                    f"{self.where((*base, 'hosts', target))}: {self.book.ref} has no target "
                    f"{target!r}{did_you_mean(target, self.book.targets)}",
                )
        kv = [n for n, c in self.book.credentials.items() if c.kind == "vault_kv"]
        for name in _mapping(raw.get("secrets")):
            if name not in kv:
                self.add(
                    (*base, "secrets", name),
                    f"{self.where((*base, 'secrets', name))}: {self.book.ref} has no vault_kv "
                    f"credential {name!r}{did_you_mean(name, kv)}",
                )
        for step_id, value in _mapping(raw.get("steps")).items():
            path = (*base, "steps", step_id)
            step = self.step(path, step_id)
            if step is not None:
                self.check_step_script(path, step, value, hosts)
        for step_id, value in _mapping(raw.get("rollbacks")).items():
            path = (*base, "rollbacks", step_id)
            step = self.step(path, step_id)
            if step is None:
                continue
            if not step.rollback:
                self.add(path, f"{self.where(path)}: step {step_id!r} has no rollback actions")
            elif isinstance(value, list) and len(value) > len(step.rollback):
                self.add(
                    path,
                    f"{self.where(path)} lists {len(value)} results but step {step_id!r} has "
                    f"{len(step.rollback)} rollback action(s)",
                    key=False,
                )

    def check_step_script(
        self, path: DocPath, step: Step, value: Any, hosts: Mapping[str, Any]
    ) -> None:
        answers = isinstance(value, dict) and bool(set(value) & APPROVAL_FIELDS)
        if step.is_approval:
            if not answers:
                self.add(
                    path,
                    f"{self.where(path)}: {step.id!r} is an approval step; answer it with "
                    "approve_as, deny_as or expire, not with a result",
                )
            elif value.get("expire") and getattr(step.action, "timeout", None) is None:
                self.add(
                    (*path, "expire"),
                    f"{self.where((*path, 'expire'))}: approval {step.id!r} has no timeout, "
                    "so it never expires; give it a timeout or drop expire",
                )
            return
        if answers:
            self.add(
                path,
                f"{self.where(path)}: approve_as, deny_as and expire answer approval steps; "
                f"{step.id!r} is {_a(step.kind)} step",
            )
            return
        if step.kind in _NO_RESULT:
            self.add(path, f"{self.where(path)}: remove it: {_NO_RESULT[step.kind]}")
            return
        for index, result in _results(path, value):
            self.check_result(index, step, result, hosts)

    def check_result(
        self, path: DocPath, step: Step, result: Mapping[str, Any], hosts: Mapping[str, Any]
    ) -> None:
        if "hosts" in result and step.kind not in HOST_KINDS:
            self.add(
                (*path, "hosts"),
                f"{self.where((*path, 'hosts'))}: per-host results apply to ssh and ansible "
                f"steps; {step.id!r} is {_a(step.kind)} step",
            )
        for key in ("status", "json"):
            if key in result and step.kind != "http":
                self.add(
                    (*path, key),
                    f"{self.where((*path, key))}: {key} applies to http steps; {step.id!r} is "
                    f"{_a(step.kind)} step",
                )
        if result.get("unreachable") and step.kind == "local":
            self.add(
                (*path, "unreachable"),
                f"{self.where((*path, 'unreachable'))}: a local step runs on the executor "
                "itself and cannot be unreachable; use fail or rc",
            )
        target = getattr(step.action, "target", None)
        declared = hosts.get(target) if target else None
        if declared is None:
            return
        allowed = [declared] if isinstance(declared, str) else list(declared)
        for host in _mapping(result.get("hosts")):
            if host not in allowed:
                self.add(
                    (*path, "hosts", host),
                    f"{self.where((*path, 'hosts', host))}: host {host!r} is not one of the "
                    f"hosts of target {target!r} ({', '.join(allowed)})"
                    f"{did_you_mean(host, allowed)}",
                )

    def check_inputs(self, base: DocPath, full: Mapping[str, Any], raw: Mapping[str, Any]) -> None:
        try:
            resolve_inputs(self.book, _mapping(full.get("inputs")))
        except InputError as exc:
            where = (*base, "inputs") if "inputs" in raw else (*base, "name")
            for problem in exc.problems:
                self.add(where, f"{self.where((*base, 'inputs'))}: {problem}")

    def check_scenario(self, base: DocPath, raw: Mapping[str, Any]) -> None:
        stop = raw.get("killswitch_before")
        if stop is not None:
            self.step((*base, "killswitch_before"), stop)
        expect = _mapping(raw.get("expect"))
        for index, item in enumerate(_list(expect.get("path"))):
            path = (*base, "expect", "path", index)
            if isinstance(item, str) and item.startswith("rollback:"):
                step = self.step(path, item.removeprefix("rollback:"))
                if step is not None and not step.rollback:
                    self.add(path, f"{self.where(path)}: step {step.id!r} has no rollback actions")
            else:
                self.step(path, item)
        for key in _mapping(expect.get("outputs")):
            path = (*base, "expect", "outputs", key)
            step_id, _, output = str(key).partition(".")
            step = self.step(path, step_id)
            if step is not None and output not in step.outputs:
                self.add(
                    path,
                    f"{self.where(path)}: step {step_id!r} has no output {output!r}"
                    f"{did_you_mean(output, step.outputs) or f' (outputs: {list(step.outputs)})'}",
                )
        for step_id in _mapping(expect.get("steps")):
            self.step((*base, "expect", "steps", step_id), step_id)


def _results(path: DocPath, value: Any) -> Iterator[tuple[DocPath, Mapping[str, Any]]]:
    if isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, dict):
                yield (*path, index), item
    elif isinstance(value, dict):
        yield path, value


def _a(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" or word in ("ssh", "http") else f"a {word}"


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def semantic_issues(doc: Document, book: Runbook) -> list[Issue]:
    """Every way the file's scenarios disagree with ``book``."""
    return _Checker(doc, book).run()
