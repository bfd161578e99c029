"""Every problem in a runbook, in words a responder can act on, at file:line:col.

Two passes, both always run so one pass over the file fixes everything:

* structure: the JSON Schema (``schemas/runbook.schema.json``). A precompiled
  ``fastjsonschema`` validator answers "valid?" quickly; only a file that fails
  is walked again by ``jsonschema`` to collect every error, and each error is
  turned into a sentence here (never raw jsonschema text);
* meaning: unique step ids, ``needs`` naming real steps, no cycles, every
  expression compiling and reading only what exists and has run by then,
  credentials and targets declared, input defaults obeying their own rules.

The semantic pass reads the raw data defensively, so it still reports what it
can in a file whose structure is broken.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema
from jsonschema.exceptions import ValidationError

from executor import expressions
from executor.errors import Issue, ValidationFailed
from executor.graph import Graph
from executor.loader import DocPath, Document, load_document
from executor.model import ACTION_KINDS, HOST_KINDS, RESULT_KINDS, Runbook
from executor.schema_words import (
    TYPE_WORDS,
    Found,
    allowed_keys,
    closest,
    dotted,
    load_schema,
    meant_branch,
    missing_keys,
    one_of,
    positioned,
    show,
    title,
    type_words,
    unknown_keys,
)

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "runbook.schema.json"

__all__ = [
    "SCHEMA_PATH",
    "Site",
    "expression_sites",
    "load_runbook",
    "raw_steps",
    "runbook_from_document",
    "schema",
    "schema_errors",
    "step_kind",
    "validate_document",
    "validate_path",
]


def validate_document(doc: Document) -> list[Issue]:
    """Every error in ``doc`` (structure and meaning), sorted by position."""
    found = [*_schema_issues(doc), *_semantic_issues(doc)]
    return _unique_sorted(found)


def runbook_from_document(doc: Document) -> Runbook:
    """The model of a valid document; raises ``ValidationFailed`` with every issue."""
    issues = validate_document(doc)
    if issues:
        raise ValidationFailed(issues)
    return Runbook.from_mapping(doc.data, source=doc.path, sha256=doc.sha256)


def load_runbook(path: str | Path) -> Runbook:
    """Read, parse and validate one runbook file; raises ``ValidationFailed``."""
    return runbook_from_document(load_document(path))


def validate_path(path: str | Path) -> tuple[Runbook | None, list[Issue]]:
    """``(runbook, [])`` for a valid file, else ``(None, issues)``; loader refusals included."""
    try:
        return load_runbook(path), []
    except ValidationFailed as failed:
        return None, list(failed.issues)


def _unique_sorted(issues: list[Issue]) -> list[Issue]:
    seen: set[tuple[int, int, str]] = set()
    out: list[Issue] = []
    for issue in sorted(issues, key=lambda i: (i.line, i.column, i.message)):
        key = (issue.line, issue.column, issue.message)
        if key not in seen:
            seen.add(key)
            out.append(issue)
    return out


# =========================================================================== schema


def schema() -> Mapping[str, Any]:
    """The runbook JSON Schema, loaded once."""
    return load_schema(SCHEMA_PATH)


_NOT_FOR_DRAFT07 = frozenset(
    {"dependentSchemas", "dependentRequired", "$schema", "$ref", "examples", "$comment"}
)
_ANNOTATIONS = frozenset({"title", "description"})  # only when they are text, not properties


def _as_draft07(node: Any) -> Any:
    """The schema as fastjsonschema (draft-07) reads it the way 2020-12 means it.

    2019+ ``dependentSchemas``/``dependentRequired`` become ``dependencies``, and
    a ``$ref`` with sibling keywords is moved into ``allOf``: draft-07 ignores
    a ``$ref``'s siblings, 2020-12 applies them (``minItems`` beside a ref).
    Annotations (descriptions, examples) are dropped: they validate nothing, and
    a bare ``$ref`` compiles to a faster check than an ``allOf``.
    """
    if isinstance(node, dict):
        out = {
            k: _as_draft07(v)
            for k, v in node.items()
            if k not in _NOT_FOR_DRAFT07 and not (k in _ANNOTATIONS and isinstance(v, str))
        }
        dependencies = {**node.get("dependentSchemas", {}), **node.get("dependentRequired", {})}
        if dependencies:
            out["dependencies"] = _as_draft07(dependencies)
        if "$ref" in node:
            if out:
                out["allOf"] = [*out.get("allOf", []), {"$ref": node["$ref"]}]
            else:
                out["$ref"] = node["$ref"]
        return out
    if isinstance(node, list):
        return [_as_draft07(item) for item in node]
    return node


def _compile_fast(schema_: Mapping[str, Any]) -> Callable[[Any], Any]:
    draft07 = _as_draft07(schema_)
    draft07["$schema"] = "http://json-schema.org/draft-07/schema#"
    return fastjsonschema.compile(draft07)


@cache
def _fast_validator() -> Callable[[Any], Any]:
    return _compile_fast(schema())


def _ecma_pattern(
    validator: Any, pattern: str, instance: Any, schema_: Any
) -> Iterator[ValidationError]:
    """``pattern`` with ECMA-262's ``$`` (end of text), as fastjsonschema does it.

    Python's ``$`` also matches before a final newline, so ``"disk\\n"`` would
    pass jsonschema and fail fastjsonschema; both must agree.
    """
    if isinstance(instance, str) and not _regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@cache
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"(?<!\\)\$", r"\\Z", pattern))


_EcmaValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, {"pattern": _ecma_pattern}
)


@cache
def _full_validator() -> jsonschema.protocols.Validator:
    return _EcmaValidator(schema())


def schema_errors(data: Any) -> list[ValidationError]:
    """Every JSON Schema error of ``data`` (empty when valid); fast when valid."""
    try:
        _fast_validator()(data)
        return []
    except fastjsonschema.JsonSchemaException:
        return list(_full_validator().iter_errors(data))


def _schema_issues(doc: Document) -> list[Issue]:
    found = [item for error in schema_errors(doc.data) for item in _explain(error, doc.data)]
    return positioned(doc, found)


# --------------------------------------------------------------------------- words

_TITLE_WORDS = {
    "duration": "a duration such as 90s, 15m or 2h, or a number of seconds",
    "guard": "an expression, true or false, or a list of expressions",
    "expressions": "an expression or a list of expressions",
    "needs": "a step id or a list of step ids",
    "rollback": "an action (a mapping such as 'ssh: {...}') or a list of actions",
}

_PATTERN_WORDS = {
    "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$": (
        "lowercase letters, digits and '-' (not starting or ending with '-')"
    ),
    "^[A-Za-z][A-Za-z0-9_-]*$": "a letter followed by letters, digits, '_' or '-'",
    "^[A-Za-z_][A-Za-z0-9_]*$": "letters, digits and '_', not starting with a digit",
}

_NAME_KINDS = {
    "inputs": "input",
    "targets": "target",
    "credentials": "credential",
    "outputs": "output",
}


def _show(value: Any) -> str:
    """A value in a message; a YAML date or bytes say what they are ('date 2024-01-02')."""
    return show(value, typed=True)


def _step_label(data: Any, index: int) -> str:
    steps = data.get("steps") if isinstance(data, dict) else None
    step = steps[index] if isinstance(steps, list) and index < len(steps) else None
    step_id = step.get("id") if isinstance(step, dict) else None
    return f"step '{step_id}'" if isinstance(step_id, str) else f"step {index + 1}"


def _split_step(path: DocPath) -> tuple[int, DocPath] | None:
    if len(path) >= 2 and path[0] == "steps" and isinstance(path[1], int):
        return path[1], path[2:]
    return None


def _field(path: DocPath, data: Any) -> str:
    """How to name the value at ``path``: 'retries.count' in step 'clean', 'policy.max_hosts'."""
    split = _split_step(path)
    if split is not None:
        index, rest = split
        label = _step_label(data, index)
        return f"'{dotted(rest)}' in {label}" if rest else label
    return f"'{dotted(path)}'" if path else "the runbook"


def _container(path: DocPath, data: Any) -> str:
    """Where a key lives: in step 'clean', in 'ssh' of step 'clean', in 'policy'."""
    split = _split_step(path)
    if split is not None:
        index, rest = split
        label = _step_label(data, index)
        return f"in '{dotted(rest)}' of {label}" if rest else f"in {label}"
    return f"in '{dotted(path)}'" if path else "at the top level"


# --------------------------------------------------------------------------- explain


def _explain(error: ValidationError, data: Any) -> list[Found]:
    """One jsonschema error as sentences with the path to point at."""
    path: DocPath = tuple(error.absolute_path)
    if "dependentSchemas" in error.relative_schema_path:
        return _explain_two_actions(error, path, data)
    handler = _HANDLERS.get(str(error.validator), _explain_other)
    return handler(error, path, data)


def _explain_two_actions(error: ValidationError, path: DocPath, data: Any) -> list[Found]:
    """One action excludes the others; one sentence per step, at its second action."""
    step_path = path[:2]
    step = data["steps"][path[1]]
    kinds = [k for k in step if k in ACTION_KINDS]  # in file order
    message = (
        f"{_field(step_path, data)} has more than one action ({', '.join(kinds)}); "
        "a step runs exactly one: split it into separate steps"
    )
    return [Found((*step_path, kinds[1]), message, "two-actions", key=True)]


def _explain_additional(error: ValidationError, path: DocPath, data: Any) -> list[Found]:
    allowed = allowed_keys(error)
    where = _container(path, data)
    out = []
    for key in unknown_keys(error):
        close = closest(str(key), allowed)
        hint = f"; did you mean '{close}'?" if close else f" (allowed: {one_of(allowed)})"
        out.append(Found((*path, key), f"unknown key '{key}' {where}{hint}", "unknown-key", True))
    return out


def _explain_required(error: ValidationError, path: DocPath, data: Any) -> list[Found]:
    where = _container(path, data)
    return [
        Found(path, f"missing required key '{key}' {where}", "missing-key", key=True)
        for key in missing_keys(error)
    ]


def _explain_type(error: ValidationError, path: DocPath, data: Any) -> list[Found]:
    words = type_words(error.validator_value)
    got = _show(error.instance)
    return [Found(path, f"{_field(path, data)} must be {words}, got {got}", "wrong-type")]


def _explain_enum(error: ValidationError, path: DocPath, data: Any) -> list[Found]:
    choices = one_of(error.validator_value)
    message = f"{_field(path, data)} must be one of {choices}; got {_show(error.instance)}"
    return [Found(path, message, "bad-value")]


def _explain_const(error: ValidationError, path: DocPath, data: Any) -> list[Found]:
    message = f"{_field(path, data)} must be {error.validator_value}, got {_show(error.instance)}"
    return [Found(path, message, "bad-value")]


def _explain_pattern(error: ValidationError, path: DocPath, data: Any) -> list[Found]:
    pattern = str(error.validator_value)
    relative = list(error.relative_schema_path)
    if "propertyNames" in relative:
        kind = _NAME_KINDS.get(str(path[-1]) if path else "", "key")
        message = (
            f"{kind} name {error.instance!r} is not usable in expressions: "
            f"use {_PATTERN_WORDS[pattern]}"
        )
        return [Found((*path, error.instance), message, "bad-name", key=True)]
    got = _show(error.instance)
    parent = error.parent
    if title(error) == "duration" or (parent is not None and title(parent) == "duration"):
        message = (
            f"{_field(path, data)} is not a duration: write e.g. 500ms, 90s, 15m, 2h or 1d, "
            f"or a number of seconds; got {got}"
        )
        return [Found(path, message, "bad-duration")]
    if len(path) == 3 and path[0] == "steps" and path[2] == "id":
        message = f"step id {got} must be {_PATTERN_WORDS[pattern]}"
        return [Found(path, message, "bad-pattern")]
    if path[-1:] == ("version",) and path[:1] == ("metadata",):
        words = "a semantic version such as 1.2.0"
    else:
        words = _PATTERN_WORDS.get(pattern, f"text matching {pattern}")
    return [Found(path, f"{_field(path, data)} must be {words}, got {got}", "bad-pattern")]


def _explain_bounds(error: ValidationError, path: DocPath, data: Any) -> list[Found]:
    field = _field(path, data)
    limit = error.validator_value
    validator = str(error.validator)
    if validator == "minItems" and path == ("steps",):
        return [Found(path, "'steps' must list at least one step", "too-few")]
    if validator == "minItems" and path[-1:] == ("approvers",):
        message = f"{field} must name at least one approver group"
        return [Found(path, message, "too-few")]
    if validator == "minItems":
        message = f"{field} must not be empty" if limit == 1 else f"{field} needs {limit} items"
        return [Found(path, message, "too-few")]
    if validator == "minLength":
        return [Found(path, f"{field} must not be empty", "empty-string")]
    if validator == "maxLength":
        return [Found(path, f"{field} must be at most {limit} characters long", "too-long")]
    if validator == "uniqueItems":
        return [Found(path, f"{field} lists the same value twice", "duplicate-item")]
    word = "at least" if validator == "minimum" else "at most"
    got = _show(error.instance)
    return [Found(path, f"{field} must be {word} {limit}, got {got}", "out-of-range")]


def _explain_rollback_entry(error: ValidationError, path: DocPath, data: Any) -> list[Found]:
    where = _field(path, data)
    if error.validator == "minProperties":
        message = f"{where} is empty; give it one action, e.g. 'ssh: {{...}}'"
    else:
        kinds = one_of(k for k in error.instance if k in ACTION_KINDS)
        message = f"{where} has more than one action ({kinds}); give each action its own entry"
    return [Found(path, message, "rollback-entry")]


def _explain_not(error: ValidationError, path: DocPath, data: Any) -> list[Found]:
    if title(error) == "http action":
        message = f"{_field(path, data)} has both 'json' and 'body'; send only one of them"
        return [Found(path, message, "json-and-body")]
    return _explain_other(error, path, data)


def _explain_dependent_required(error: ValidationError, path: DocPath, data: Any) -> list[Found]:
    message = (
        f"{_field(path, data)} has 'args' but no 'module'; args are the arguments of a "
        "module (a playbook takes extravars)"
    )
    return [Found((*path, "args"), message, "args-without-module", key=True)]


def _explain_choice(error: ValidationError, path: DocPath, data: Any) -> list[Found]:
    """oneOf / anyOf: a sentence of our own, or the errors of the branch the author meant."""
    title_ = title(error)
    instance = error.instance
    special = _CHOICE_HANDLERS.get(title_ or "")
    if special is not None:
        return special(instance, path, data) if isinstance(instance, dict) else []
    if not error.context:  # "valid under each of": the schema's branches overlap
        return _explain_other(error, path, data)
    meant = meant_branch(error, mismatch=("type", "const"))
    if meant is not None:
        return [found for sub in meant for found in _explain(sub, data)]
    if title_ in _TITLE_WORDS:
        words = _TITLE_WORDS[title_]
    else:
        kinds = [
            e.validator_value
            for e in error.context
            if e.validator == "type" and tuple(e.absolute_path) == path
        ]
        words = type_words(kinds)
    message = f"{_field(path, data)} must be {words}, got {_show(instance)}"
    return [Found(path, message, "wrong-type")]


def _no_action(instance: dict[str, Any], path: DocPath, data: Any) -> list[Found]:
    message = (
        f"{_field(path, data)} has no action; give it one of {one_of(ACTION_KINDS)}, or an assert"
    )
    return [Found(path, message, "no-action", key=True)]


def _credential_kind(instance: dict[str, Any], path: DocPath, data: Any) -> list[Found]:
    name = path[-1]
    if "vault_ssh" in instance and "vault_kv" in instance:
        message = f"credential '{name}' has both vault_ssh and vault_kv; keep exactly one"
    else:
        message = f"credential '{name}' must have vault_ssh or vault_kv"
    return [Found(path, message, "credential-kind", key=True)]


def _playbook_or_module(instance: dict[str, Any], path: DocPath, data: Any) -> list[Found]:
    field = _field(path, data)
    if "playbook" in instance and "module" in instance:
        message = f"{field} has both 'playbook' and 'module'; give exactly one"
    else:
        message = f"{field} needs a 'playbook' or a 'module'"
    return [Found(path, message, "playbook-or-module", key=True)]


_CHOICE_HANDLERS: dict[str, Callable[[dict[str, Any], DocPath, Any], list[Found]]] = {
    "step": _no_action,
    "credential": _credential_kind,
    "ansible action": _playbook_or_module,
}


def _explain_other(error: ValidationError, path: DocPath, data: Any) -> list[Found]:
    message = f"{_field(path, data)} is not valid here ({error.validator} rule)"
    return [Found(path, message, "invalid")]


_HANDLERS: dict[str, Callable[[ValidationError, DocPath, Any], list[Found]]] = {
    "additionalProperties": _explain_additional,
    "required": _explain_required,
    "type": _explain_type,
    "enum": _explain_enum,
    "const": _explain_const,
    "pattern": _explain_pattern,
    "minimum": _explain_bounds,
    "maximum": _explain_bounds,
    "minItems": _explain_bounds,
    "minLength": _explain_bounds,
    "maxLength": _explain_bounds,
    "uniqueItems": _explain_bounds,
    "minProperties": _explain_rollback_entry,
    "maxProperties": _explain_rollback_entry,
    "not": _explain_not,
    "dependentRequired": _explain_dependent_required,
    "oneOf": _explain_choice,
    "anyOf": _explain_choice,
}


# =========================================================================== meaning

_CONTEXT_ROOTS = ("inputs", "steps", "result", "run", "alert", "secrets", "targets")
_PLAN_ROOTS = frozenset({"inputs", "alert", "run"})
_STEP_FIELDS = ("status", "outputs", "hosts")
_NO_RESULT = {
    "approval": "an approval step",
    "wait": "a wait step",
    "log": "a log step",
    "assert": "a step with no action",
}
_TEMPLATE_FIELDS: dict[str, tuple[str, ...]] = {
    "ssh": ("command",),
    "local": ("command",),
    "http": ("url", "headers", "body", "json"),
    "approval": ("message",),
    "log": ("message",),
    "ansible": ("extravars", "args"),
    "wait": (),
}


@dataclass(frozen=True)
class Site:
    """One expression or template in a runbook, with what it may read.

    ``owner`` names what holds it in messages ("step 'clean'", "target 'node'"),
    ``field`` is its dotted place inside the owner ("outputs.percent").
    ``step_index`` is set for steps and their rollbacks (whose ancestry
    decides which ``steps.X`` may be read); ``reads_result`` where the current
    action's ``result`` exists; ``plan_only`` where only inputs, alert and run
    are known (targets' hosts, the concurrency key: resolved before any step).
    """

    path: DocPath
    source: str
    kind: str
    owner: str
    field: str
    step_index: int | None = None
    reads_result: bool = False
    plan_only: bool = False


def step_kind(step: Any) -> str | None:
    """The first action key of a raw step mapping, ``assert`` for a bare assert, else None."""
    if not isinstance(step, dict):
        return None
    for kind in ACTION_KINDS:
        if kind in step:
            return kind
    return "assert" if "assert" in step else None


def raw_steps(data: Any) -> list[Any]:
    """The ``steps`` list of raw data, or [] when it is missing or not a list."""
    steps = data.get("steps") if isinstance(data, dict) else None
    return steps if isinstance(steps, list) else []


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def expression_sites(data: Any) -> list[Site]:
    """Every expression and template of a (possibly invalid) runbook's data."""
    sites: list[Site] = []
    for name, spec in _mapping(_mapping(data).get("targets")).items():
        hosts = _mapping(spec).get("hosts")
        if isinstance(hosts, str):
            path = ("targets", name, "hosts")
            sites.append(Site(path, hosts, "template", f"target '{name}'", "hosts", plan_only=True))
    key = _mapping(_mapping(_mapping(data).get("policy")).get("concurrency")).get("key")
    if isinstance(key, str):
        path = ("policy", "concurrency", "key")
        sites.append(Site(path, key, "template", "the policy", "concurrency.key", plan_only=True))
    for index, step in enumerate(raw_steps(data)):
        if isinstance(step, dict):
            sites.extend(_step_sites(data, index, step))
    return sites


def _step_sites(data: Any, index: int, step: dict[str, Any]) -> Iterator[Site]:
    owner = _step_label(data, index)
    base: DocPath = ("steps", index)

    def site(rel: DocPath, source: str, kind: str, result: bool = False) -> Site:
        return Site((*base, *rel), source, kind, owner, dotted(rel), index, result)

    yield from _strings(step.get("when"), ("when",), lambda r, s: site(r, s, "expression"))
    for name, value in _mapping(step.get("outputs")).items():
        if isinstance(value, str):
            yield site(("outputs", name), value, "template", True)
    check = _mapping(step.get("assert"))
    yield from _strings(
        check.get("that"), ("assert", "that"), lambda r, s: site(r, s, "expression", True)
    )
    if isinstance(check.get("message"), str):
        yield site(("assert", "message"), check["message"], "template", True)
    until = _mapping(step.get("retries")).get("until")
    if isinstance(until, str):
        yield site(("retries", "until"), until, "expression", True)
    yield from _action_sites(step, (), lambda r, s: site(r, s, "template"))
    rollback_owner = f"the rollback of {owner}"
    for rel, entry in _rollback_entries(step):
        yield from _action_sites(
            entry,
            rel,
            lambda r, s: Site((*base, *r), s, "template", rollback_owner, dotted(r), index),
        )


def _rollback_entries(step: dict[str, Any]) -> list[tuple[DocPath, dict[str, Any]]]:
    rollback = step.get("rollback")
    if isinstance(rollback, dict):
        return [(("rollback",), rollback)]
    if isinstance(rollback, list):
        return [(("rollback", i), e) for i, e in enumerate(rollback) if isinstance(e, dict)]
    return []


def _strings(value: Any, rel: DocPath, make: Callable[[DocPath, str], Site]) -> Iterator[Site]:
    """Sites for a string, or for every string in a list (``when``, ``assert.that``)."""
    if isinstance(value, str):
        yield make(rel, value)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, str):
                yield make((*rel, i), item)


def _action_sites(
    holder: dict[str, Any], rel: DocPath, make: Callable[[DocPath, str], Site]
) -> Iterator[Site]:
    for kind in ACTION_KINDS:
        body = holder.get(kind)
        if not isinstance(body, dict):
            continue
        for name in _TEMPLATE_FIELDS[kind]:
            if name in body:
                yield from _nested(body[name], (*rel, kind, name), make)


def _nested(value: Any, rel: DocPath, make: Callable[[DocPath, str], Site]) -> Iterator[Site]:
    """Every string inside data (http json, ansible extravars): each may be a template."""
    if isinstance(value, str):
        yield make(rel, value)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _nested(item, (*rel, key), make)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _nested(item, (*rel, i), make)


class _Checker:
    """The semantic pass over one document; collects issues instead of stopping."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.data = doc.data
        top = _mapping(doc.data)
        self.steps = raw_steps(doc.data)
        self.inputs = _mapping(top.get("inputs"))
        self.targets = _mapping(top.get("targets"))
        self.credentials = {
            name: next((k for k in ("vault_ssh", "vault_kv") if k in _mapping(spec)), None)
            for name, spec in _mapping(top.get("credentials")).items()
        }
        self.first: dict[str, int] = {}
        for index, step in enumerate(self.steps):
            step_id = _mapping(step).get("id")
            if isinstance(step_id, str):
                self.first.setdefault(step_id, index)
        self.issues: list[Issue] = []
        self.graph = Graph.from_needs([])

    def add(self, path: DocPath, message: str, code: str, *, key: bool = False) -> None:
        line, col = self.doc.position(path, key=key)
        self.issues.append(Issue(self.doc.path, line, col, message, code=code))

    def label(self, index: int) -> str:
        return _step_label(self.data, index)

    def needs(self, index: int) -> list[tuple[DocPath, str]]:
        """``(path of the entry, step id)`` for each string in a step's needs."""
        raw = _mapping(self.steps[index]).get("needs")
        if isinstance(raw, str):
            return [(("steps", index, "needs"), raw)]
        if isinstance(raw, list):
            return [
                (("steps", index, "needs", j), n) for j, n in enumerate(raw) if isinstance(n, str)
            ]
        return []

    def run(self) -> list[Issue]:
        self.check_ids()
        self.check_needs()
        self.check_cycles()
        self.check_actions()
        self.check_expressions()
        self.check_inputs()
        return self.issues

    # ------------------------------------------------------------------ graph

    def check_ids(self) -> None:
        for index, step in enumerate(self.steps):
            step_id = _mapping(step).get("id")
            if isinstance(step_id, str) and self.first[step_id] != index:
                line = self.doc.position(("steps", self.first[step_id], "id"))[0]
                self.add(
                    ("steps", index, "id"),
                    f"step id '{step_id}' is used twice (first at line {line}); "
                    "step ids must be unique",
                    "duplicate-step-id",
                )

    def check_needs(self) -> None:
        for index in range(len(self.steps)):
            for path, need in self.needs(index):
                if need not in self.first:
                    close = closest(need, self.first)
                    hint = f"; did you mean '{close}'?" if close else ""
                    self.add(
                        path,
                        f"{self.label(index)} needs '{need}', which is not a step{hint}",
                        "unknown-need",
                    )

    def check_cycles(self) -> None:
        """Report each cycle once, breaking it so ancestry stays computable."""
        edges = {
            step_id: [n for _, n in self.needs(index) if n in self.first]
            for step_id, index in self.first.items()
        }
        while True:
            graph = Graph.from_needs(edges)
            cycle = graph.find_cycle()
            if cycle is None:
                self.graph = graph
                return
            head, last = cycle[0], cycle[-2]
            index = self.first[head]
            path = next((p for p, n in self.needs(index) if n == last), ("steps", index))
            self.add(
                path,
                f"the steps form a cycle: {' -> '.join(cycle)}; remove one of these needs",
                "cycle",
            )
            edges[head] = [n for n in edges[head] if n != last]

    def ancestors(self, index: int) -> frozenset[str]:
        step_id = _mapping(self.steps[index]).get("id")
        if isinstance(step_id, str) and self.first.get(step_id) == index:
            return self.graph.ancestors(step_id)
        found: set[str] = set()
        for _, need in self.needs(index):
            if need in self.first:
                found.add(need)
                found |= self.graph.ancestors(need)
        return frozenset(found)

    # ------------------------------------------------------------------ actions

    def check_actions(self) -> None:
        for index, step in enumerate(self.steps):
            if not isinstance(step, dict):
                continue
            owner = self.label(index)
            self.check_hosts(step, ("steps", index), owner)
            for rel, entry in _rollback_entries(step):
                path = ("steps", index, *rel)
                self.check_hosts(entry, path, f"the rollback of {owner}")
                for kind in ("approval", "wait"):
                    if kind in entry:
                        self.add(
                            (*path, kind),
                            f"the rollback of {owner} uses {kind}, which cannot undo anything; "
                            "a rollback runs ssh, ansible, local, http or log",
                            "rollback-not-action",
                            key=True,
                        )

    def check_hosts(self, holder: dict[str, Any], path: DocPath, owner: str) -> None:
        for kind in HOST_KINDS:
            body = holder.get(kind)
            if not isinstance(body, dict):
                continue
            target = body.get("target")
            if isinstance(target, str) and target not in self.targets:
                close = closest(target, self.targets)
                hint = f"; did you mean '{close}'?" if close else ""
                self.add(
                    (*path, kind, "target"),
                    f"{owner} runs on target '{target}', which is not declared under targets{hint}",
                    "unknown-target",
                )
            credential = body.get("credential")
            if not isinstance(credential, str):
                continue
            if credential not in self.credentials:
                close = closest(credential, self.credentials)
                hint = f"; did you mean '{close}'?" if close else ""
                self.add(
                    (*path, kind, "credential"),
                    f"{owner} uses credential '{credential}', which is not declared under "
                    f"credentials{hint}",
                    "unknown-credential",
                )
            elif self.credentials[credential] == "vault_kv":
                self.add(
                    (*path, kind, "credential"),
                    f"{owner} uses credential '{credential}' for {kind}, but it is a vault_kv "
                    f"secret; {kind} needs a vault_ssh credential",
                    "wrong-credential-kind",
                )

    # ------------------------------------------------------------------ expressions

    def check_expressions(self) -> None:
        for site in expression_sites(self.data):
            if not site.source:
                continue  # the schema already says it must not be empty
            try:
                info = expressions.analyze(site.source, kind=site.kind)
            except expressions.ExpressionSyntaxError as exc:
                self.syntax_error(site, exc)
                continue
            for ref in sorted(info.references):
                self.check_reference(site, ref)

    def syntax_error(self, site: Site, exc: expressions.ExpressionSyntaxError) -> None:
        line, col = self.doc.position(site.path)
        if self.doc.is_block_scalar(site.path):
            line += exc.lineno
            text = self.doc.text.split("\n", line)[line - 1] if line >= 1 else ""
            col = len(text) - len(text.lstrip(" ")) + 1
        else:
            line += exc.lineno - 1
        message = f"'{site.field}' of {site.owner} does not compile: {exc.message}"
        self.issues.append(Issue(self.doc.path, line, col, message, code="expression-syntax"))

    def check_reference(self, site: Site, ref: tuple[str, ...]) -> None:
        root = ref[0]
        said = f"'{site.field}' of {site.owner}"
        if site.plan_only and root not in _PLAN_ROOTS:
            self.add(
                site.path,
                f"{said} may use only inputs, alert and run, but reads {dotted(ref)}",
                "plan-time-only",
            )
        elif root == "inputs":
            self.check_input_ref(site, ref, said)
        elif root == "steps":
            self.check_step_ref(site, ref, said)
        elif root == "result":
            self.check_result_ref(site, said)
        elif root == "secrets":
            self.check_secret_ref(site, ref, said)
        elif root == "targets":
            if len(ref) > 1 and ref[1] not in self.targets:
                self.add(
                    site.path,
                    f"{said} reads targets.{ref[1]}, which is not declared under targets"
                    + self.did_you_mean(ref[1], self.targets),
                    "unknown-target",
                )
        elif root not in _CONTEXT_ROOTS:
            close = closest(root, _CONTEXT_ROOTS)
            hint = f"did you mean '{close}'? " if close else ""
            self.add(
                site.path,
                f"{said} reads '{root}', which is not defined; {hint}expressions can read "
                f"{', '.join(_CONTEXT_ROOTS[:-1])} and {_CONTEXT_ROOTS[-1]}",
                "unknown-name",
            )

    @staticmethod
    def did_you_mean(word: str, choices: Any) -> str:
        close = closest(word, choices)
        return f"; did you mean '{close}'?" if close else ""

    def check_input_ref(self, site: Site, ref: tuple[str, ...], said: str) -> None:
        if len(ref) > 1 and ref[1] not in self.inputs:
            self.add(
                site.path,
                f"{said} reads inputs.{ref[1]}, which is not declared under inputs"
                + self.did_you_mean(ref[1], self.inputs),
                "undeclared-input",
            )

    def check_step_ref(self, site: Site, ref: tuple[str, ...], said: str) -> None:
        if len(ref) < 2:
            return
        other = ref[1]
        if other not in self.first:
            self.add(
                site.path,
                f"{said} reads steps.{other}, which is not a step"
                + self.did_you_mean(other, self.first),
                "unknown-step",
            )
            return
        if site.step_index is not None:
            self.check_ancestry(site, other)
        if len(ref) >= 3 and ref[2] not in _STEP_FIELDS:
            self.add(
                site.path,
                f"{said} reads {dotted(ref[:3])}; a step exposes only status, outputs and hosts",
                "unknown-step-field",
            )
        elif len(ref) >= 4 and ref[2] == "outputs":
            declared = _mapping(_mapping(self.steps[self.first[other]]).get("outputs"))
            if ref[3] not in declared:
                what = f"no output '{ref[3]}'" if declared else "no outputs"
                self.add(
                    site.path,
                    f"{said} reads {dotted(ref[:4])}, but step '{other}' declares {what}"
                    + self.did_you_mean(ref[3], declared),
                    "undeclared-output",
                )

    def check_ancestry(self, site: Site, other: str) -> None:
        index = site.step_index
        assert index is not None
        own = _mapping(self.steps[index]).get("id")
        if other == own:
            self.add(
                site.path,
                f"'{site.field}' of {site.owner} reads steps.{other}, its own step; "
                "use result for the current action's result",
                "self-reference",
            )
        elif other not in self.ancestors(index):
            whose = (
                "its needs"
                if site.owner == self.label(index)
                else (f"the needs of {self.label(index)}")
            )
            self.add(
                site.path,
                f"{site.owner} reads steps.{other}, which may not have run yet: "
                f"add '{other}' to {whose}",
                "not-an-ancestor",
            )

    def check_result_ref(self, site: Site, said: str) -> None:
        if not site.reads_result:
            self.add(
                site.path,
                f"{said} reads result, which exists only in outputs, assert and retries.until",
                "result-not-here",
            )
            return
        assert site.step_index is not None
        kind = step_kind(self.steps[site.step_index])
        if kind is not None and kind not in RESULT_KINDS:
            self.add(
                site.path,
                f"{said} reads result, but {_NO_RESULT[kind]} produces no result",
                "result-without-action",
            )

    def check_secret_ref(self, site: Site, ref: tuple[str, ...], said: str) -> None:
        if len(ref) < 2:
            return
        name = ref[1]
        kinds = self.credentials
        if name not in kinds:
            secrets = [n for n, k in kinds.items() if k == "vault_kv"]
            self.add(
                site.path,
                f"{said} reads secrets.{name}, which is not a vault_kv credential under "
                f"credentials" + self.did_you_mean(name, secrets),
                "unknown-secret",
            )
        elif kinds[name] == "vault_ssh":
            self.add(
                site.path,
                f"{said} reads secrets.{name}, but credential '{name}' is a vault_ssh "
                "certificate; only vault_kv credentials can be read as secrets",
                "wrong-credential-kind",
            )

    # ------------------------------------------------------------------ inputs

    def check_inputs(self) -> None:
        for name, spec in self.inputs.items():
            if not isinstance(spec, dict):
                continue
            pattern = spec.get("pattern")
            regex = None
            if isinstance(pattern, str):
                try:
                    regex = re.compile(pattern)
                except re.error as exc:
                    self.add(
                        ("inputs", name, "pattern"),
                        f"the pattern of input '{name}' is not a valid regular expression: {exc}",
                        "bad-regex",
                    )
            if "default" in spec:
                problem = _default_problem(spec, spec["default"], regex)
                if problem:
                    self.add(
                        ("inputs", name, "default"),
                        f"default {_show(spec['default'])} of input '{name}' {problem}",
                        "bad-default",
                    )


_INPUT_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def _default_problem(spec: dict[str, Any], value: Any, regex: re.Pattern[str] | None) -> str:
    """Why an input's default breaks the input's own rules, or ''."""
    kind = spec.get("type", "string")
    accepts = _INPUT_TYPES.get(kind) if isinstance(kind, str) else None
    if accepts is not None and not accepts(value):
        return f"is not {TYPE_WORDS[kind]}"
    enum = spec.get("enum")
    if isinstance(enum, list) and value not in enum:
        return f"is not one of its enum values: {one_of(enum)}"
    if isinstance(value, str):
        if regex is not None and not regex.search(value):
            return f"does not match its pattern {spec['pattern']}"
        low, high = spec.get("minLength"), spec.get("maxLength")
        if isinstance(low, int) and len(value) < low:
            return f"is shorter than its minLength {low}"
        if isinstance(high, int) and len(value) > high:
            return f"is longer than its maxLength {high}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        low, high = spec.get("minimum"), spec.get("maximum")
        if isinstance(low, int | float) and value < low:
            return f"is below its minimum {low}"
        if isinstance(high, int | float) and value > high:
            return f"is above its maximum {high}"
    return ""


def _semantic_issues(doc: Document) -> list[Issue]:
    return _Checker(doc).run()
