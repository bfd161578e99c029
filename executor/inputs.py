"""Turn user- or alert-supplied input values into the types a runbook declares.

Inputs come from the command line (strings), an inputs file (YAML) or an
alert's labels, all of them untrusted. Every value is checked against its
declared type, pattern, enum and range before a run starts, and every problem
is reported at once, so a responder fixes the command line in one go.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from typing import Any

from executor.errors import UsageError
from executor.model import InputSpec, Runbook

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


class InputError(UsageError):
    """One or more inputs are missing or do not match their declaration."""

    def __init__(self, runbook: str, problems: list[str]) -> None:
        self.problems = problems
        listed = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"inputs for {runbook} are not valid:\n{listed}")


def parse_assignments(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``key=value`` pairs from ``--input``; the value may itself contain '='."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--input {pair!r} is not KEY=VALUE (example: --input host=web1)")
        out[key.strip()] = value
    return out


def _coerce(spec: InputSpec, value: Any) -> Any:
    """Convert one value to the declared type; raises ValueError with the reason."""
    kind = spec.type
    if kind == "string":
        if isinstance(value, bool | dict | list) or value is None:
            raise ValueError(f"must be a string, got {type(value).__name__}")
        return str(value)
    if kind == "integer":
        if isinstance(value, bool):
            raise ValueError("must be an integer, got a boolean")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            return int(value.strip())
        raise ValueError(f"must be an integer, got {value!r}")
    if kind == "number":
        if isinstance(value, bool):
            raise ValueError("must be a number, got a boolean")
        try:
            return float(value) if not isinstance(value, int) else value
        except (TypeError, ValueError):
            raise ValueError(f"must be a number, got {value!r}") from None
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"must be true or false, got {value!r}")
    if kind in ("array", "object"):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ValueError(f"must be a JSON {kind}, got {value!r}") from None
        wanted = list if kind == "array" else dict
        if not isinstance(value, wanted):
            raise ValueError(f"must be an {kind}, got {type(value).__name__}")
        return value
    raise ValueError(f"has an unknown type {kind!r}")


def _check(spec: InputSpec, value: Any) -> list[str]:
    problems = []
    if spec.pattern is not None and isinstance(value, str) and not re.search(spec.pattern, value):
        problems.append(f"does not match the pattern {spec.pattern}")
    if spec.enum is not None and value not in spec.enum:
        problems.append("must be one of " + ", ".join(map(str, spec.enum)))
    if isinstance(value, int | float) and not isinstance(value, bool):
        if spec.minimum is not None and value < spec.minimum:
            problems.append(f"must be at least {spec.minimum}")
        if spec.maximum is not None and value > spec.maximum:
            problems.append(f"must be at most {spec.maximum}")
    if isinstance(value, str):
        if spec.min_length is not None and len(value) < spec.min_length:
            problems.append(f"must be at least {spec.min_length} characters")
        if spec.max_length is not None and len(value) > spec.max_length:
            problems.append(f"must be at most {spec.max_length} characters")
    return problems


def _shown(spec: InputSpec, value: Any) -> str:
    return "***" if spec.secret else repr(value)


def resolve_inputs(runbook: Runbook, given: Mapping[str, Any]) -> dict[str, Any]:
    """Typed, checked inputs with defaults filled in; raises InputError listing every problem."""
    problems: list[str] = []
    known = list(runbook.inputs)
    for name in given:
        if name not in runbook.inputs:
            close = difflib.get_close_matches(name, known, n=1)
            hint = (
                f"; did you mean {close[0]!r}?"
                if close
                else f" (declared: {', '.join(known) or 'none'})"
            )
            problems.append(f"unknown input {name!r}{hint}")
    values: dict[str, Any] = {}
    for name, spec in runbook.inputs.items():
        if name not in given:
            if spec.required:
                problems.append(f"{name}: required (example: --input {name}=...)")
            else:
                values[name] = spec.default
            continue
        try:
            value = _coerce(spec, given[name])
        except ValueError as exc:
            shown = "a secret value" if spec.secret else repr(given[name])
            problems.append(f"{name}: {exc}".replace(repr(given[name]), shown))
            continue
        for problem in _check(spec, value):
            problems.append(f"{name}: {_shown(spec, value)} {problem}")
        values[name] = value
    if problems:
        raise InputError(runbook.ref, problems)
    return values


def secret_values(runbook: Runbook, values: Mapping[str, Any]) -> list[str]:
    """The values of inputs declared ``secret: true``, for the masker."""
    return [
        str(values[n]) for n, s in runbook.inputs.items() if s.secret and values.get(n) is not None
    ]
