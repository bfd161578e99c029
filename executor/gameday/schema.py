"""The game day plan's JSON Schema, with every error turned into a sentence at file:line:col.

Same contract as runbook validation (``executor.validation``): all problems
at once, never raw jsonschema text, each pointing at the key or value a
person must change, with a suggestion when a key looks misspelt. The
sentences are those of ``executor.schema_words``; this module adds how a plan
names its places, its shapes and missing keys in words, and the few
sentences a plan words its own way ("must be one of ...", "at most 63
characters"). Every error is reported as it stands, without choosing a
oneOf/anyOf branch: a plan's alternatives are small shapes whose "is not a
duration such as ..." says more than the errors of one branch would.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jsonschema.exceptions import ValidationError

from executor import schema_words
from executor.errors import Issue
from executor.loader import DocPath, Document
from executor.schema_words import TYPE_WORDS, Format, Found, dotted, one_of, show
from executor.schema_words import did_you_mean as suggest

__all__ = ["SCHEMA_PATH", "describe", "schema", "schema_issues", "suggest"]

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "gameday.schema.json"


def schema_issues(doc: Document) -> list[Issue]:
    """Every structural problem of a plan, as issues."""
    validator = schema_words.validator_for(SCHEMA_PATH)
    found = [
        item
        for error in validator.iter_errors(doc.data)
        for item in schema_words.explain(error, doc.data, _FORMAT)
    ]
    return schema_words.positioned(doc, found, "gameday-schema")


def schema() -> Mapping[str, Any]:
    """The game day plan JSON Schema, loaded once."""
    return schema_words.load_schema(SCHEMA_PATH)


def describe(path: DocPath, data: Any) -> str:
    """How to name a place for a person: 'check 'health'', 'approval 1', ''fault.host''."""
    if len(path) >= 2 and path[0] in ("checks", "approvals") and isinstance(path[1], int):
        items = data.get(path[0]) if isinstance(data, dict) else None
        item = items[path[1]] if isinstance(items, list) and path[1] < len(items) else None
        if path[0] == "checks":
            name = item.get("name") if isinstance(item, dict) else None
            label = f"check {name!r}" if isinstance(name, str) else f"check {path[1] + 1}"
        else:
            label = f"approval {path[1] + 1}"
        rest = dotted(path[2:])
        return f"'{rest}' in {label}" if rest else label
    return f"'{dotted(path)}'" if path else "the plan"


def _not_form(error: ValidationError, path: DocPath, where: str, fmt: Format) -> list[Found]:
    """No alternative fits: name the shape the value should have had."""
    return [Found(path, f"{where}: {show(error.instance)} is not {fmt.form(error)}")]


def _one_of(error: ValidationError, path: DocPath, where: str, fmt: Format) -> list[Found]:
    options = [error.validator_value] if error.validator == "const" else error.validator_value
    hint = suggest(str(error.instance), [str(o) for o in options])  # type: ignore[union-attr]
    shown = one_of(options)  # type: ignore[arg-type]
    return [Found(path, f"{where} must be one of {shown}, got {show(error.instance)}{hint}")]


def _too_long(error: ValidationError, path: DocPath, where: str, fmt: Format) -> list[Found]:
    return [Found(path, f"{where} must be at most {error.validator_value} characters")]


_FORMS = {
    "duration": "a duration such as 30s, 5m or 2h, or a number of seconds",
    "status codes": "an HTTP status code or a list of them",
    "name": "a name of lowercase letters, digits and '-'",
    "host name": "a host name of the sandbox (lowercase letters, digits, '.', '-')",
    "alert name": "an alert name (letters, digits, '_')",
    "identity": "an identity name (letters, digits, '.', '_', '@', '-')",
    "variable name": "an environment variable name",
    "runbook reference": "a runbook name or name@version",
    "step id": "a step id (starts with a letter)",
    "URL": "an http:// or https:// URL",
}
_MISSING = {
    "fault": "say what to break: fault: {host: web2, inject: kill}",
    "start": "say how the runbook starts: start: {via: alertmanager, runbook: NAME}",
    "checks": "list the checks that say the service is healthy again",
    "metadata": "give the drill a name: metadata: {name: ...}",
    "alert": "name the alert, e.g. DemoappDown",
}

_FORMAT = Format(
    describe=describe,
    missing_hints=_MISSING,
    alternatives=_FORMS,
    handlers={
        "anyOf": _not_form,
        "oneOf": _not_form,
        "const": _one_of,
        "enum": _one_of,
        "maxLength": _too_long,
    },
    types={**TYPE_WORDS, "integer": "a whole number"},
)
