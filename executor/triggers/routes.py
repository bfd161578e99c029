"""Routes: which runbook an alert starts, with which inputs, how far unattended.

A routes file (``kind: Routes``, ``schemas/routes.schema.json``) is checked
like a runbook: every problem at once, each at file:line:col, in words a
person can act on. Structure comes from the JSON Schema; meaning from here:
unique names, matchers that parse, runbooks that exist in the catalog,
inputs the runbook declares (all required ones given), templates that read
only ``alert.*``, and a ``mode`` no stronger than the runbook's own
``policy.automation``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema.exceptions import ValidationError

from executor import expressions, schema_words
from executor.errors import ExpressionError, Issue, NotFound, RunbookError, ValidationFailed
from executor.loader import DocPath, Document, load_document, parse_document
from executor.model import Automation, Runbook, parse_duration
from executor.schema_words import (
    Found,
    allowed_keys,
    missing_keys,
    one_of,
    positioned,
    title,
    type_words,
    unknown_keys,
)
from executor.triggers.matchers import Matcher, MatcherError, parse_matcher

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "routes.schema.json"
ROUTES_FILES = ("routes.yaml", "routes.yml")
"""Where `runbook serve` looks for routes beside the catalog's runbooks."""

RunbookLookup = Callable[[str], Runbook]
"""``name`` or ``name@version`` -> the runbook; raises NotFound (or another RunbookError)."""


@dataclass(frozen=True)
class RateLimit:
    """At most ``runs`` starts in any window of ``per`` seconds."""

    runs: int
    per: float

    def __str__(self) -> str:
        from executor.model import format_duration

        return f"{self.runs} run(s) per {format_duration(self.per)}"


@dataclass(frozen=True)
class Route:
    name: str
    matchers: tuple[Matcher, ...]
    runbook: str
    inputs: Mapping[str, Any] = field(default_factory=dict)
    mode: Automation | None = None
    rate: RateLimit | None = None
    continue_: bool = False
    line: int = 0

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    @property
    def runbook_name(self) -> str:
        return self.runbook.split("@", 1)[0]


@dataclass(frozen=True)
class RouteTable:
    """The routes of one file, in order, and the global rate limit."""

    routes: tuple[Route, ...] = ()
    rate: RateLimit | None = None
    source: str = "<memory>"

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """The routes taken for ``labels``: the first match, and more while ``continue``."""
        taken = []
        for route in self.routes:
            if route.matches(labels):
                taken.append(route)
                if not route.continue_:
                    break
        return taken

    def route(self, name: str) -> Route:
        for route in self.routes:
            if route.name == name:
                return route
        raise NotFound(f"no route named {name!r} in {self.source}")


# --------------------------------------------------------------------------- loading


def is_routes_document(path: Path) -> bool:
    """A routes file: named ``routes.yaml``/``.yml``, or with ``kind: Routes`` at the top."""
    if path.name in ROUTES_FILES:
        return True
    try:
        head = path.read_bytes()[:65536]
    except OSError:
        return False
    return any(
        line.split(b"#", 1)[0].strip() in (b"kind: Routes", b'kind: "Routes"', b"kind: 'Routes'")
        for line in head.splitlines()
    )


def load_routes(path: str | Path, lookup: RunbookLookup | None = None) -> RouteTable:
    """Read, check and build a route table; raises ValidationFailed with every problem."""
    document = load_document(path)
    issues = validate_routes_document(document, lookup)
    errors = [i for i in issues if i.severity == "error"]
    if errors:
        raise ValidationFailed(errors)
    return build_table(document)


def parse_routes(
    text: str, lookup: RunbookLookup | None = None, path: str = "<routes>"
) -> RouteTable:
    """``load_routes`` for text already in memory (tests, the API)."""
    document = parse_document(text, path)
    errors = [i for i in validate_routes_document(document, lookup) if i.severity == "error"]
    if errors:
        raise ValidationFailed(errors)
    return build_table(document)


def _rate(raw: Mapping[str, Any] | None) -> RateLimit | None:
    if not raw:
        return None
    return RateLimit(runs=int(raw["runs"]), per=parse_duration(raw["per"]))


def build_table(document: Document) -> RouteTable:
    """The table of a document that validated (no check repeated here)."""
    data = document.data
    routes = []
    for index, raw in enumerate(data.get("routes") or []):
        routes.append(
            Route(
                name=raw["name"],
                matchers=tuple(parse_matcher(m) for m in raw["match"]),
                runbook=raw["runbook"],
                inputs=dict(raw.get("inputs") or {}),
                mode=Automation(raw["mode"]) if raw.get("mode") else None,
                rate=_rate(raw.get("rate")),
                continue_=bool(raw.get("continue", False)),
                line=document.position(("routes", index), key=True)[0],
            )
        )
    return RouteTable(routes=tuple(routes), rate=_rate(data.get("rate")), source=document.path)


# --------------------------------------------------------------------------- schema


def schema() -> Mapping[str, Any]:
    """The routes JSON Schema, loaded once."""
    return schema_words.load_schema(SCHEMA_PATH)


def _label(path: DocPath, data: Any) -> str:
    """``routes[2] (demoapp-down).rate.per``: where a person finds the value."""
    parts: list[str] = []
    node = data
    for part in path:
        if isinstance(part, int):
            name = node[part].get("name") if isinstance(node[part], Mapping) else None
            parts[-1] = f"{parts[-1]}[{part}]" + (f" ({name})" if isinstance(name, str) else "")
        else:
            parts.append(str(part))
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    return ".".join(parts) or "the file"


def _schema_message(error: ValidationError, data: Any) -> list[Found]:
    """What to fix, where, for one JSON Schema error (whole: routes name no oneOf branch)."""
    path: DocPath = tuple(error.absolute_path)
    where = _label(path, data)
    kind = error.validator
    if kind == "required":
        return [Found(path, f"{where}: '{key}' is required") for key in missing_keys(error)]
    if kind == "additionalProperties":
        known = sorted(allowed_keys(error))
        extra = sorted(unknown_keys(error))
        key = extra[0] if extra else ""
        message = f"{where}: unknown key {key!r} (allowed: {one_of(known)})"
        return [Found((*path, key), message, key=True)]
    if kind == "const":
        return [Found(path, f"{where} must be {error.validator_value!r}, not {error.instance!r}")]
    if kind == "enum":
        choices = one_of(error.validator_value)  # type: ignore[arg-type]
        return [Found(path, f"{where} must be one of {choices}, not {error.instance!r}")]
    if kind == "type":
        words = type_words(error.validator_value)
        return [Found(path, f"{where} must be {words}, not {type(error.instance).__name__}")]
    if kind == "anyOf" and title(error) == "duration":
        return [Found(path, f"{where}: {error.instance!r} is not a duration (write 90s, 15m, 1h)")]
    if kind == "pattern" and path and path[-1] == "name":
        message = f"{where}: use lowercase letters, digits and '-' (got {error.instance!r})"
        return [Found(path, message)]
    if kind == "pattern" and path and path[-1] == "runbook":
        message = f"{where}: write a runbook name or name@version (got {error.instance!r})"
        return [Found(path, message)]
    if kind == "minItems":
        return [Found(path, f"{where} needs at least {error.validator_value} item(s)")]
    return [Found(path, f"{where}: {error.message}")]


def _schema_issues(doc: Document) -> list[Issue]:
    return [
        issue
        for error in schema_words.validator_for(SCHEMA_PATH).iter_errors(doc.data)
        for issue in positioned(doc, _schema_message(error, doc.data), f"schema-{error.validator}")
    ]


# --------------------------------------------------------------------------- meaning


def validate_routes_document(doc: Document, lookup: RunbookLookup | None = None) -> list[Issue]:
    """Every problem of a routes document (structure, then meaning), sorted by position."""
    issues = _schema_issues(doc)
    issues += list(_semantic_issues(doc, lookup))
    unique = {(i.line, i.column, i.message): i for i in issues}
    return sorted(unique.values(), key=lambda i: (i.line, i.column, i.message))


def _semantic_issues(doc: Document, lookup: RunbookLookup | None) -> Iterator[Issue]:
    routes = doc.data.get("routes") if isinstance(doc.data, Mapping) else None
    if not isinstance(routes, list):
        return
    seen: dict[str, int] = {}

    def issue(path: DocPath, message: str, code: str, *, key: bool = False) -> Issue:
        line, column = doc.position(path, key=key)
        return Issue(doc.path, line, column, message, code=code)

    for index, raw in enumerate(routes):
        if not isinstance(raw, Mapping):
            continue
        base: DocPath = ("routes", index)
        label = _label(base, doc.data)
        name = raw.get("name")
        if isinstance(name, str):
            if name in seen:
                yield issue(
                    (*base, "name"),
                    f"{label}: route name {name!r} is used twice (first at line {seen[name]}); "
                    "names must be unique",
                    "duplicate-route",
                )
            else:
                seen[name] = doc.position((*base, "name"))[0]
        matchers = raw.get("match")
        for position, text in enumerate(matchers if isinstance(matchers, list) else []):
            if isinstance(text, str):
                try:
                    parse_matcher(text)
                except MatcherError as exc:
                    yield issue((*base, "match", position), f"{label}: {exc}", "bad-matcher")
        yield from _input_issues(doc, base, label, raw, issue)
        book = _runbook(raw, lookup)
        if isinstance(book, str):
            yield issue((*base, "runbook"), f"{label}: {book}", "unknown-runbook")
        elif book is not None:
            yield from _runbook_issues(base, label, raw, book, issue)


def _runbook(raw: Mapping[str, Any], lookup: RunbookLookup | None) -> Runbook | str | None:
    ref = raw.get("runbook")
    if lookup is None or not isinstance(ref, str):
        return None
    try:
        return lookup(ref)
    except ValidationFailed as failed:
        return (
            f"runbook {ref!r} is invalid ({len(failed.issues)} problem(s)): run 'runbook validate'"
        )
    except RunbookError as exc:
        return exc.message


def _input_issues(
    doc: Document,
    base: DocPath,
    label: str,
    raw: Mapping[str, Any],
    issue: Callable[..., Issue],
) -> Iterator[Issue]:
    inputs = raw.get("inputs")
    if not isinstance(inputs, Mapping):
        return
    for name, value in inputs.items():
        if not isinstance(value, str):
            continue
        try:
            info = expressions.analyze(value, kind="template")
        except ExpressionError as exc:
            yield issue(
                (*base, "inputs", name), f"{label}: input {name!r}: {exc.message}", "bad-template"
            )
            continue
        for path in sorted(info.references):
            if path[0] != "alert":
                yield issue(
                    (*base, "inputs", name),
                    f"{label}: input {name!r} reads {'.'.join(path)!r}; a route's templates may "
                    "read only the alert (alert.labels.X, alert.annotations.X, alert.fingerprint)",
                    "bad-reference",
                )


def _runbook_issues(
    base: DocPath,
    label: str,
    raw: Mapping[str, Any],
    book: Runbook,
    issue: Callable[..., Issue],
) -> Iterator[Issue]:
    given = raw.get("inputs") if isinstance(raw.get("inputs"), Mapping) else {}
    assert isinstance(given, Mapping)
    for name in given:
        if name not in book.inputs:
            declared = ", ".join(book.inputs) or "none"
            yield issue(
                (*base, "inputs", name),
                f"{label}: {book.ref} has no input {name!r} (declared: {declared})",
                "unknown-input",
                key=True,
            )
    for name, spec in book.inputs.items():
        if spec.required and name not in given:
            yield issue(
                (*base, "inputs") if "inputs" in raw else (*base, "runbook"),
                f"{label}: {book.ref} requires input {name!r}; compute it from the alert, "
                f'e.g. {name}: "{{{{ alert.labels.{name} }}}}"',
                "missing-input",
            )
    mode = raw.get("mode")
    if mode in {a.value for a in Automation}:
        wanted, allowed = Automation(mode), book.policy.automation
        if wanted.rank > allowed.rank:
            yield issue(
                (*base, "mode"),
                f"{label}: mode {wanted.value} is stronger than {book.ref}'s own "
                f"policy.automation ({allowed.value}); a route may only lower it",
                "mode-too-strong",
            )
