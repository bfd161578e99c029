"""JSON Schema errors in words a person can act on, shared by every file format we read.

Runbooks, scenario files and routes files are all checked against a JSON
Schema, and none of them may show raw jsonschema text ("Additional properties
are not allowed ('sudoo' was unexpected)"): each error becomes a sentence
that names the place the way its author thinks of it ("step 'clean'",
"scenario 'full disk'", "routes[2] (demoapp-down)") and points at the key or
value to change. The machinery for that lives here once:

* the vocabulary: a value shown briefly, dotted paths, JSON types in words,
  "did you mean" suggestions, the keys that are unknown or missing;
* choosing, out of a ``oneOf``/``anyOf``, the errors of the branch the author
  meant, so a typo inside an action is reported as that typo and not as
  "matches none of seven alternatives";
* a plain explainer (``Format`` + ``explain``) for formats whose sentences
  follow the common pattern; a format with sentences of its own (runbooks,
  routes) keeps its handlers and uses the pieces above.

Only stdlib, jsonschema and the layers below validation are imported here,
so validation and everything above it can use this module.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from executor.errors import Issue
from executor.loader import DocPath, Document

__all__ = [
    "PLAIN",
    "TYPE_WORDS",
    "Chooser",
    "Format",
    "Found",
    "Handler",
    "allowed_keys",
    "branches",
    "closest",
    "did_you_mean",
    "dotted",
    "explain",
    "fewest_errors",
    "leaves",
    "load_schema",
    "meant_branch",
    "missing_keys",
    "one_of",
    "positioned",
    "schema_issues",
    "show",
    "title",
    "type_words",
    "unknown_keys",
    "validator_for",
]

# --------------------------------------------------------------------------- schemas


@cache
def load_schema(path: Path) -> Mapping[str, Any]:
    """A schema file, read once per process (every document of a kind shares it)."""
    with open(path, encoding="utf-8") as handle:
        loaded: dict[str, Any] = json.load(handle)
    return loaded


@cache
def validator_for(path: Path) -> jsonschema.protocols.Validator:
    """A 2020-12 validator of the schema at ``path``, built once (building it is the slow part)."""
    return jsonschema.Draft202012Validator(load_schema(path))


# --------------------------------------------------------------------------- words

TYPE_WORDS: Mapping[str, str] = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
    "null": "null",
}
"""JSON Schema type names as a sentence says them: 'must be an integer'."""


def type_words(expected: Any, words: Mapping[str, str] = TYPE_WORDS) -> str:
    """A ``type`` keyword's value in words: 'an integer or a string'."""
    kinds = expected if isinstance(expected, list) else [expected]
    return " or ".join(words.get(str(kind), str(kind)) for kind in kinds)


def show(value: Any, *, typed: bool = False) -> str:
    """A value as a person wrote it, short: 'two', 90, true, a list.

    Long strings are cut so a pasted script does not flood the message.
    ``typed`` names the Python type of anything unusual (a YAML date reads
    'date 2024-01-02'), where a bare value would look like text.
    """
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
    if not typed or isinstance(value, int | float):
        return str(value)
    return f"{type(value).__name__} {value}"


def dotted(parts: Iterable[Any]) -> str:
    """A path as a person reads it: ``retries.count``, ``steps[2].ssh``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def one_of(values: Iterable[Any]) -> str:
    """Choices for a sentence: 'manual, approval, auto'."""
    return ", ".join(str(v) for v in values)


def closest(word: str, choices: Iterable[Any]) -> str | None:
    """The choice ``word`` was most likely meant to be, if one is close enough."""
    options = [c for c in choices if isinstance(c, str)]
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(word: str, choices: Iterable[Any]) -> str:
    """``"; did you mean 'sudo'?"`` to append to a sentence, or '' when nothing is close."""
    close = closest(word, choices)
    return f"; did you mean {close!r}?" if close else ""


def title(error: ValidationError) -> str | None:
    """The ``title`` of the schema node that failed: how a schema names a shape ('duration')."""
    found = error.schema.get("title") if isinstance(error.schema, dict) else None
    return found if isinstance(found, str) else None


def unknown_keys(error: ValidationError) -> list[Any]:
    """The keys an ``additionalProperties: false`` error is about, in file order."""
    known = allowed_keys(error)
    patterns = "|".join(error.schema.get("patternProperties", {}))  # type: ignore[union-attr]
    instance = error.instance if isinstance(error.instance, dict) else {}
    return [
        key
        for key in instance
        if key not in known and not (patterns and re.search(patterns, str(key)))
    ]


def allowed_keys(error: ValidationError) -> list[str]:
    """The keys the failing mapping may have, in the schema's order."""
    return list(error.schema.get("properties", {}))  # type: ignore[union-attr]


def missing_keys(error: ValidationError) -> list[Any]:
    """The keys a ``required`` error's mapping lacks, in the schema's order."""
    instance = error.instance
    if not isinstance(instance, dict):
        return []
    return [key for key in error.validator_value if key not in instance]  # type: ignore[union-attr]


# --------------------------------------------------------------------------- choosing

Chooser = Callable[[ValidationError, Mapping[int, list[ValidationError]]], int]
"""Which of the viable branches of a oneOf/anyOf error the author meant (its index)."""


def branches(error: ValidationError) -> dict[int, list[ValidationError]]:
    """A oneOf/anyOf error's sub-errors grouped by the alternative they belong to."""
    grouped: dict[int, list[ValidationError]] = {}
    for sub in error.context or []:
        grouped.setdefault(int(sub.relative_schema_path[0]), []).append(sub)
    return grouped


def fewest_errors(error: ValidationError, viable: Mapping[int, list[ValidationError]]) -> int:
    """The branch that is closest to passing (the first of equals): the usual intent."""
    return min(viable, key=lambda i: len(viable[i]))


def meant_branch(
    error: ValidationError,
    *,
    mismatch: Iterable[str] = ("type",),
    choose: Chooser = fewest_errors,
) -> list[ValidationError] | None:
    """The errors of the alternative the author meant, or None when none fits at all.

    A branch is out of the running when the value itself fails one of the
    ``mismatch`` keywords there (a string where the branch wants a mapping):
    the author did not write that shape. Of the rest, ``choose`` picks.
    """
    here = tuple(error.absolute_path)
    kinds = frozenset(mismatch)
    viable = {
        index: errors
        for index, errors in branches(error).items()
        if not any(e.validator in kinds and tuple(e.absolute_path) == here for e in errors)
    }
    return viable[choose(error, viable)] if viable else None


def leaves(
    error: ValidationError,
    *,
    mismatch: Iterable[str] = ("type",),
    choose: Chooser = fewest_errors,
) -> Iterator[ValidationError]:
    """The errors a person should see: inside every oneOf/anyOf, those of the branch meant.

    A oneOf/anyOf no branch of which fits stays whole: its message says
    which shapes the value may take.
    """
    if error.validator not in ("oneOf", "anyOf") or not error.context:
        yield error
        return
    meant = meant_branch(error, mismatch=mismatch, choose=choose)
    if meant is None:
        yield error
        return
    for sub in meant:
        yield from leaves(sub, mismatch=mismatch, choose=choose)


# --------------------------------------------------------------------------- issues


@dataclass(frozen=True)
class Found:
    """One sentence about a document and where it points.

    ``key`` points at the key rather than its value (an unknown or missing
    key); ``code`` is the issue code, or None for the format's own.
    """

    path: DocPath
    message: str
    code: str | None = None
    key: bool = False


def positioned(doc: Document, found: Iterable[Found], code: str = "schema") -> list[Issue]:
    """Sentences as issues at file:line:col; ``code`` serves those without one."""
    out = []
    for item in found:
        line, col = doc.position(item.path, key=item.key)
        out.append(Issue(doc.path, line, col, item.message, code=item.code or code))
    return out


# --------------------------------------------------------------------------- the plain explainer

Handler = Callable[[ValidationError, DocPath, str, "Format"], "list[Found] | None"]
"""(error, its path, how to name that place, the format) -> sentences, or None to pass."""


@dataclass(frozen=True)
class Format:
    """What one file format adds to the plain explainer.

    ``describe`` names a place ("'steps.measure.rc' in scenario 'full
    disk'"); ``missing_hints`` tells what to write for a missing key;
    ``alternatives`` puts a schema title in words ("a duration such as
    30s..."); ``choose`` picks the oneOf branch meant; ``handlers``
    replace the plain sentence for a keyword (returning None falls back to it);
    ``types`` says JSON types in the format's words.
    """

    describe: Callable[[DocPath, Any], str]
    missing_hints: Mapping[str, str] = field(default_factory=dict)
    alternatives: Mapping[str, str] = field(default_factory=dict)
    choose: Chooser = fewest_errors
    handlers: Mapping[str, Handler] = field(default_factory=dict)
    types: Mapping[str, str] = field(default_factory=lambda: TYPE_WORDS)

    def form(self, error: ValidationError) -> str:
        """The shape a value should have had, from its schema's title or its parent's."""
        nodes = [error.schema] + ([error.parent.schema] if error.parent is not None else [])
        for node in nodes:
            words = self.alternatives.get(str(node.get("title")))  # type: ignore[union-attr]
            if words:
                return words
        return "in the expected form"


def schema_issues(
    doc: Document, validator: jsonschema.protocols.Validator, fmt: Format, code: str
) -> list[Issue]:
    """Every schema error of ``doc`` as issues, each error of the branch the author meant."""
    found = [
        item
        for error in validator.iter_errors(doc.data)
        for leaf in leaves(error, choose=fmt.choose)
        for item in explain(leaf, doc.data, fmt)
    ]
    return positioned(doc, found, code)


def explain(error: ValidationError, data: Any, fmt: Format) -> list[Found]:
    """One error as sentences, in the format's words where it has its own."""
    path: DocPath = tuple(error.absolute_path)
    where = fmt.describe(path, data)
    kind = str(error.validator)
    special = fmt.handlers.get(kind)
    found = special(error, path, where, fmt) if special is not None else None
    if found is None:
        found = PLAIN.get(kind, _plain_other)(error, path, where, fmt)
    return found if found is not None else _plain_other(error, path, where, fmt)


def _plain_unknown(
    error: ValidationError, path: DocPath, where: str, fmt: Format
) -> list[Found] | None:
    if not isinstance(error.instance, dict):
        return None
    known = allowed_keys(error)
    return [
        Found(
            (*path, key),
            f"unknown key {key!r} in {where}{did_you_mean(str(key), known)} "
            f"(allowed: {one_of(known)})",
            key=True,
        )
        for key in unknown_keys(error)
    ]


def _plain_missing(error: ValidationError, path: DocPath, where: str, fmt: Format) -> list[Found]:
    hints = fmt.missing_hints
    return [
        Found(path, f"{where} has no {key!r}: {hints.get(key, 'it is required')}", key=True)
        for key in missing_keys(error)
    ]


def _plain_type(error: ValidationError, path: DocPath, where: str, fmt: Format) -> list[Found]:
    words = type_words(error.validator_value, fmt.types)
    return [Found(path, f"{where} must be {words}, got {show(error.instance)}")]


def _plain_choice(error: ValidationError, path: DocPath, where: str, fmt: Format) -> list[Found]:
    words = fmt.alternatives.get(str(title(error)), "one of the allowed forms")
    return [Found(path, f"{where} must be {words}, got {show(error.instance)}")]


def _plain_value(error: ValidationError, path: DocPath, where: str, fmt: Format) -> list[Found]:
    options = [error.validator_value] if error.validator == "const" else error.validator_value
    hint = did_you_mean(str(error.instance), [str(o) for o in options])  # type: ignore[union-attr]
    message = f"{where} must be {one_of(options)}, got {show(error.instance)}{hint}"  # type: ignore[arg-type]
    return [Found(path, message)]


def _plain_empty(error: ValidationError, path: DocPath, where: str, fmt: Format) -> list[Found]:
    return [Found(path, f"{where} must not be empty")]


def _plain_bound(error: ValidationError, path: DocPath, where: str, fmt: Format) -> list[Found]:
    word = "at least" if error.validator == "minimum" else "at most"
    return [Found(path, f"{where} must be {word} {error.validator_value}")]


def _plain_pattern(error: ValidationError, path: DocPath, where: str, fmt: Format) -> list[Found]:
    return [Found(path, f"{where}: {show(error.instance)} is not {fmt.form(error)}")]


def _plain_other(error: ValidationError, path: DocPath, where: str, fmt: Format) -> list[Found]:
    return [Found(path, f"{where}: {error.message}")]


PLAIN: Mapping[str, Handler] = {
    "additionalProperties": _plain_unknown,
    "required": _plain_missing,
    "type": _plain_type,
    "oneOf": _plain_choice,
    "anyOf": _plain_choice,
    "const": _plain_value,
    "enum": _plain_value,
    "minItems": _plain_empty,
    "minProperties": _plain_empty,
    "minLength": _plain_empty,
    "minimum": _plain_bound,
    "maximum": _plain_bound,
    "pattern": _plain_pattern,
}
"""The plain sentence for each keyword; anything else shows jsonschema's own message."""
