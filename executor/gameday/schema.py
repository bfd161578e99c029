"""The game day plan's JSON Schema, with every error turned into a sentence at file:line:col.

Same contract as runbook validation (``executor.validation``): all problems
at once, never raw jsonschema text, each pointing at the key or value a
person must change, with a suggestion when a key looks misspelt.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from executor.errors import Issue
from executor.loader import DocPath, Document

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "gameday.schema.json"

_TYPES = {
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
}
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


@cache
def schema() -> Mapping[str, Any]:
    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        loaded: dict[str, Any] = json.load(handle)
    return loaded


@cache
def _validator() -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(schema())


def schema_issues(doc: Document) -> list[Issue]:
    """Every structural problem of a plan, as issues."""
    out = []
    for error in _validator().iter_errors(doc.data):
        for path, message, key in _explain(error, doc.data):
            line, col = doc.position(path, key=key)
            out.append(Issue(doc.path, line, col, message, code="gameday-schema"))
    return out


def suggest(word: str, choices: Iterable[Any]) -> str:
    """'; did you mean 'x'?' for a near miss, else ''."""
    options = [c for c in choices if isinstance(c, str)]
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


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
        rest = _dotted(path[2:])
        return f"'{rest}' in {label}" if rest else label
    return f"'{_dotted(path)}'" if path else "the plan"


def _dotted(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing (null)"
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)


def _form(error: ValidationError) -> str:
    nodes = [error.schema] + ([error.parent.schema] if error.parent is not None else [])
    for node in nodes:
        words = _FORMS.get(str(node.get("title")))
        if words:
            return words
    return "in the expected form"


def _explain(error: ValidationError, data: Any) -> Iterator[tuple[DocPath, str, bool]]:
    path: DocPath = tuple(error.absolute_path)
    where = describe(path, data)
    kind = str(error.validator)
    if kind == "additionalProperties" and isinstance(error.instance, dict):
        known = list(error.schema.get("properties", {}))
        for key in (k for k in error.instance if k not in known):
            yield (
                (*path, key),
                f"unknown key {key!r} in {where}{suggest(str(key), known)} "
                f"(allowed: {', '.join(known)})",
                True,
            )
    elif kind == "required":
        for missing in (r for r in error.validator_value if r not in (error.instance or {})):
            yield (
                path,
                f"{where} has no {missing!r}: {_MISSING.get(missing, 'it is required')}",
                True,
            )
    elif kind == "type":
        wanted = (
            error.validator_value
            if isinstance(error.validator_value, list)
            else [error.validator_value]
        )
        words = " or ".join(_TYPES.get(w, w) for w in wanted)
        yield path, f"{where} must be {words}, got {_show(error.instance)}", False
    elif kind in ("anyOf", "oneOf", "pattern"):
        yield path, f"{where}: {_show(error.instance)} is not {_form(error)}", False
    elif kind in ("const", "enum"):
        options = [error.validator_value] if kind == "const" else list(error.validator_value)
        hint = suggest(str(error.instance), [str(o) for o in options])
        shown = ", ".join(str(o) for o in options)
        yield path, f"{where} must be one of {shown}, got {_show(error.instance)}{hint}", False
    elif kind in ("minItems", "minProperties", "minLength"):
        yield path, f"{where} must not be empty", False
    elif kind in ("minimum", "maximum", "maxLength"):
        word = {"minimum": "at least", "maximum": "at most", "maxLength": "at most"}[kind]
        unit = " characters" if kind == "maxLength" else ""
        yield path, f"{where} must be {word} {error.validator_value}{unit}", False
    else:
        yield path, f"{where}: {error.message}", False
