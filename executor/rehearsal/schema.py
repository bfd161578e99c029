"""The scenario file's JSON Schema, with every error turned into a sentence at file:line:col.

Same contract as runbook validation (``executor.validation``): all problems
at once, never raw jsonschema text, each pointing at the key or value a
person must change, with a suggestion when a key looks misspelt. The
sentences are the plain ones of ``executor.schema_words``; this module adds
how a scenario file names its places and what to write for a missing key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jsonschema.exceptions import ValidationError

from executor import schema_words
from executor.errors import Issue
from executor.loader import DocPath, Document
from executor.rehearsal.scenario import APPROVAL_FIELDS
from executor.schema_words import Format, Found, dotted, fewest_errors

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "scenario.schema.json"

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


def schema() -> Mapping[str, Any]:
    """The scenario JSON Schema, loaded once."""
    return schema_words.load_schema(SCHEMA_PATH)


def schema_issues(doc: Document) -> list[Issue]:
    """Every structural problem of a scenario file, as issues."""
    validator = schema_words.validator_for(SCHEMA_PATH)
    return schema_words.schema_issues(doc, validator, _FORMAT, "scenario-schema")


def describe(path: DocPath, data: Any) -> str:
    """How to name a place: ''steps.measure.rc' in scenario 'full disk'', ''defaults.inputs''."""
    if len(path) >= 2 and path[0] == "scenarios" and isinstance(path[1], int):
        label = scenario_label(data, path[1])
        rest = dotted(path[2:])
        return f"'{rest}' in {label}" if rest else label
    return f"'{dotted(path)}'" if path else "the file"


def scenario_label(data: Any, index: int) -> str:
    items = data.get("scenarios") if isinstance(data, dict) else None
    item = items[index] if isinstance(items, list) and index < len(items) else None
    name = item.get("name") if isinstance(item, dict) else None
    return f"scenario {name!r}" if isinstance(name, str) else f"scenario {index + 1}"


def _intended(error: ValidationError, viable: Mapping[int, list[ValidationError]]) -> int:
    """Which alternative the author meant; approval keys mean an approval answer."""
    if error.schema.get("title") == "step result" and len(viable) > 1:  # type: ignore[union-attr]
        wants_approval = isinstance(error.instance, dict) and bool(
            set(error.instance) & APPROVAL_FIELDS
        )
        return max(viable) if wants_approval else min(viable)
    return fewest_errors(error, viable)


def _output_names(
    error: ValidationError, path: DocPath, where: str, fmt: Format
) -> list[Found] | None:
    """A key of ``outputs`` that is not step.output; other patterns get the plain sentence."""
    if "propertyNames" not in error.schema_path:
        return None
    message = (
        f"{where}: key {error.instance!r} must name an output as step.output (e.g. measure.percent)"
    )
    return [Found((*path, str(error.instance)), message, key=True)]


_FORMAT = Format(
    describe=describe,
    missing_hints=_MISSING_HINTS,
    alternatives=_ALTERNATIVES,
    choose=_intended,
    handlers={"pattern": _output_names},
)
