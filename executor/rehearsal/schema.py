"""The scenario file's JSON Schema, with every error turned into a sentence at file:line:col.

Same contract as runbook validation (``executor.validation``): all problems
at once, never raw jsonschema text, each pointing at the key or value a
person must change, with a suggestion when a key looks misspelt.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from executor.errors import Issue
from executor.loader import DocPath, Document
from executor.rehearsal.scenario import APPROVAL_FIELDS

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "scenario.schema.json"

_TYPES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
}
_ALTERNATIVES = {
    "names": "a name or a list of names",
    "results": "a result (a mapping such as {stdout: ..., rc: 0}) or a list of them, "
    "one per attempt",
    "step result": "a result mapping, a list of results, or an approval answer (approve_as, "
    "deny_as, expire)",
    "duration": "a duration such as 30s, 5m or 2h, or a number of seconds",
}
_MISSING_HINTS = {
    "expect": "say what must follow: status, path, outputs, steps or audit",
    "runbook": "name the runbook under test: name, name@version or a path",
    "scenarios": "list at least one scenario",
    "name": "give it a name that is unique in the file",
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
    """Every structural problem of a scenario file, as issues."""
    out = []
    for error in _validator().iter_errors(doc.data):
        for leaf in _leaves(error):
            for path, message, key in _explain(leaf, doc.data):
                line, col = doc.position(path, key=key)
                out.append(Issue(doc.path, line, col, message, code="scenario-schema"))
    return out


# --------------------------------------------------------------------------- choosing


def _leaves(error: ValidationError) -> Iterator[ValidationError]:
    """The errors a person should see: for a oneOf, those of the branch they meant."""
    if error.validator not in ("oneOf", "anyOf") or not error.context:
        yield error
        return
    branches: dict[int, list[ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(int(sub.relative_schema_path[0]), []).append(sub)
    here = list(error.absolute_path)
    viable = {
        i: errs
        for i, errs in branches.items()
        if not any(e.validator == "type" and list(e.absolute_path) == here for e in errs)
    }
    if not viable:
        yield error  # the value has the wrong shape for every branch: say what it may be
        return
    chosen = _intended(error, viable)
    for sub in viable[chosen]:
        yield from _leaves(sub)


def _intended(error: ValidationError, viable: Mapping[int, list[ValidationError]]) -> int:
    """Which alternative the author meant; approval keys mean an approval answer."""
    if error.schema.get("title") == "step result" and len(viable) > 1:
        wants_approval = isinstance(error.instance, dict) and bool(
            set(error.instance) & APPROVAL_FIELDS
        )
        return max(viable) if wants_approval else min(viable)
    return min(viable, key=lambda i: len(viable[i]))


# --------------------------------------------------------------------------- words


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


def _dotted(parts: tuple[Any, ...]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def describe(path: DocPath, data: Any) -> str:
    """How to name a place: ''steps.measure.rc' in scenario 'full disk'', ''defaults.inputs''."""
    if len(path) >= 2 and path[0] == "scenarios" and isinstance(path[1], int):
        label = scenario_label(data, path[1])
        rest = _dotted(tuple(path[2:]))
        return f"'{rest}' in {label}" if rest else label
    return f"'{_dotted(tuple(path))}'" if path else "the file"


def scenario_label(data: Any, index: int) -> str:
    items = data.get("scenarios") if isinstance(data, dict) else None
    item = items[index] if isinstance(items, list) and index < len(items) else None
    name = item.get("name") if isinstance(item, dict) else None
    return f"scenario {name!r}" if isinstance(name, str) else f"scenario {index + 1}"


def suggest(word: str, choices: Any) -> str:
    options = [c for c in choices if isinstance(c, str)]
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


Found = tuple[DocPath, str, bool]


def _explain(error: ValidationError, data: Any) -> list[Found]:
    path: DocPath = tuple(error.absolute_path)
    where = describe(path, data)
    kind = str(error.validator)
    if kind == "additionalProperties" and isinstance(error.instance, dict):
        known = list(error.schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in known]
        allowed = ", ".join(known)
        return [
            (
                (*path, key),
                f"unknown key {key!r} in {where}{suggest(str(key), known)} (allowed: {allowed})",
                True,
            )
            for key in unknown
        ]
    if kind == "required":
        missing = [r for r in error.validator_value if r not in (error.instance or {})]
        return [
            (path, f"{where} has no {m!r}: {_MISSING_HINTS.get(m, 'it is required')}", True)
            for m in missing
        ]
    if kind == "type":
        wanted = error.validator_value
        wanted = wanted if isinstance(wanted, list) else [wanted]
        words = " or ".join(_TYPES.get(w, w) for w in wanted)
        return [(path, f"{where} must be {words}, got {_show(error.instance)}", False)]
    if kind in ("oneOf", "anyOf"):
        words = _ALTERNATIVES.get(str(error.schema.get("title")), "one of the allowed forms")
        return [(path, f"{where} must be {words}, got {_show(error.instance)}", False)]
    if kind in ("const", "enum"):
        options = [error.validator_value] if kind == "const" else error.validator_value
        shown = ", ".join(str(o) for o in options)
        hint = suggest(str(error.instance), [str(o) for o in options])
        return [(path, f"{where} must be {shown}, got {_show(error.instance)}{hint}", False)]
    if kind in ("minItems", "minProperties", "minLength"):
        return [(path, f"{where} must not be empty", False)]
    if kind in ("minimum", "maximum"):
        word = "at least" if kind == "minimum" else "at most"
        return [(path, f"{where} must be {word} {error.validator_value}", False)]
    if kind == "pattern" and "propertyNames" in error.schema_path:
        return [
            (
                (*path, str(error.instance)),
                f"{where}: key {error.instance!r} must name an output as step.output "
                "(e.g. measure.percent)",
                True,
            )
        ]
    if kind == "pattern":
        return [(path, f"{where}: {_show(error.instance)} is not {_title(error)}", False)]
    return [(path, f"{where}: {error.message}", False)]


def _title(error: ValidationError) -> str:
    nodes = [error.schema] + ([error.parent.schema] if error.parent is not None else [])
    for schema_node in nodes:
        words = _ALTERNATIVES.get(str(schema_node.get("title")))
        if words:
            return words
    return "in the expected form"
