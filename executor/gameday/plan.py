"""A game day plan as frozen, typed objects, read from YAML with file:line errors.

    plan = load_plan("gamedays/web2-demoapp-killed.yaml", catalog=Path("runbooks"))

Loading reuses the runbook loader (size, alias and duplicate-key limits,
positions), checks the structure against ``schemas/gameday.schema.json`` and
then the meaning against the catalog (``executor.gameday.semantics``), and
reports every problem at once, as ``runbook validate`` does for runbooks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from executor.catalog import Catalog
from executor.errors import Issue, NotFound, ValidationFailed
from executor.loader import Document, load_document, parse_document
from executor.model import Runbook, parse_duration
from executor.triggers.routes import ROUTES_FILES, RouteTable, load_routes

DEFAULT_TIMEOUT = 300.0
DEFAULT_SETTLE = 30.0
DEFAULT_STARTER = "gameday"
DEFAULT_HEALTH_PATH = "/health"


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Fault:
    """What breaks, where: a sandbox fault applied to one host."""

    host: str
    inject: str


@dataclass(frozen=True)
class Detection:
    """The alert that must fire for the fault, with the labels that pick it out."""

    alert: str
    labels: Mapping[str, str] = field(default_factory=lambda: _frozen(None))

    def matches(self, labels: Mapping[str, str]) -> bool:
        wanted = {"alertname": self.alert, **self.labels}
        return all(labels.get(k) == v for k, v in wanted.items())


@dataclass(frozen=True)
class Start:
    """How the run begins: the routed alert, or a direct API call by ``actor``."""

    via: str
    runbook: str
    inputs: Mapping[str, Any] = field(default_factory=lambda: _frozen(None))
    actor: str = DEFAULT_STARTER
    after: float = 0.0

    @property
    def runbook_name(self) -> str:
        return self.runbook.split("@", 1)[0]


@dataclass(frozen=True)
class Answer:
    """An approver's answer to one approval step, ``after`` seconds into its wait."""

    step: str
    by: str
    groups: tuple[str, ...]
    after: float = 0.0
    approve: bool = True
    reason: str | None = None
    token_env: str | None = None


@dataclass(frozen=True)
class HttpCheck:
    """GET ``url`` (or the host's demoapp ``path``); passes on an expected status and text."""

    host: str | None = None
    path: str = DEFAULT_HEALTH_PATH
    url: str | None = None
    expect_status: tuple[int, ...] = (200,)
    contains: str | None = None
    kind: str = field(default="http", init=False)


@dataclass(frozen=True)
class PrometheusCheck:
    """An instant query that passes when it returns at least one series."""

    query: str
    kind: str = field(default="prometheus", init=False)


@dataclass(frozen=True)
class AlertResolvedCheck:
    """The alert fired during the drill and is no longer active in Alertmanager."""

    alert: str
    labels: Mapping[str, str] = field(default_factory=lambda: _frozen(None))
    kind: str = field(default="alert_resolved", init=False)

    def matches(self, labels: Mapping[str, str]) -> bool:
        wanted = {"alertname": self.alert, **self.labels}
        return all(labels.get(k) == v for k, v in wanted.items())


Probe = HttpCheck | PrometheusCheck | AlertResolvedCheck


@dataclass(frozen=True)
class Check:
    name: str
    probe: Probe


@dataclass(frozen=True)
class Objectives:
    """Limits in seconds from the injection; None where the plan sets none."""

    detect: float | None = None
    first_action: float | None = None
    mitigate: float | None = None

    def items(self) -> list[tuple[str, float]]:
        named = (("detect", self.detect), ("first_action", self.first_action))
        return [(k, v) for k, v in (*named, ("mitigate", self.mitigate)) if v is not None]


@dataclass(frozen=True)
class ServerRef:
    """A `runbook serve` the drill reuses instead of starting its own."""

    url: str
    home: Path
    token_env: str


@dataclass(frozen=True)
class Plan:
    name: str
    source: str
    sha256: str
    fault: Fault
    start: Start
    checks: tuple[Check, ...]
    detection: Detection | None = None
    answers: tuple[Answer, ...] = ()
    expect_run: str = "succeeded"
    objectives: Objectives = Objectives()
    timeout: float = DEFAULT_TIMEOUT
    settle: float = DEFAULT_SETTLE
    server: ServerRef | None = None
    title: str | None = None
    document: Document | None = field(default=None, repr=False, compare=False)

    def with_timeout(self, seconds: float) -> Plan:
        return replace(self, timeout=seconds)


# --------------------------------------------------------------------------- loading

RunbookLookup = Callable[[str], Runbook]
RoutesLookup = Callable[[], RouteTable | None]


def catalog_lookups(catalog: Path) -> tuple[RunbookLookup, RoutesLookup]:
    """Resolve runbooks and routes in ``catalog``, each read once and only when needed."""
    cache: dict[str, Any] = {}

    def runbook(ref: str) -> Runbook:
        if "catalog" not in cache:
            cache["catalog"] = Catalog.load(catalog)
        found: Runbook = cache["catalog"].resolve(ref)
        return found

    def routes() -> RouteTable | None:
        for name in ROUTES_FILES:
            if (catalog / name).is_file():
                return load_routes(catalog / name)
        return None

    return runbook, routes


def load_plan(path: str | Path, *, catalog: Path) -> Plan:
    """Read and check a plan file against ``catalog``; ValidationFailed lists every problem."""
    try:
        doc = load_document(path)
    except NotFound:
        raise NotFound(
            f"game day plan {path} does not exist", hint="check the path and the file name"
        ) from None
    return plan_from_document(doc, *catalog_lookups(catalog))


def parse_plan(
    text: str, runbooks: RunbookLookup, routes: RoutesLookup, path: str = "<plan>"
) -> Plan:
    """``load_plan`` for text in memory (tests)."""
    return plan_from_document(parse_document(text, path), runbooks, routes)


def plan_from_document(doc: Document, runbooks: RunbookLookup, routes: RoutesLookup) -> Plan:
    """The plan of a document; structure first, then (if sound) meaning."""
    from executor.gameday.schema import schema_issues
    from executor.gameday.semantics import semantic_issues

    issues = schema_issues(doc)
    if not issues:
        issues = semantic_issues(doc, runbooks, routes)
    errors = [i for i in issues if i.severity == "error"]
    if errors:
        raise ValidationFailed(_sorted(errors))
    return build_plan(doc, runbooks)


def _sorted(issues: list[Issue]) -> list[Issue]:
    unique = {(i.line, i.column, i.message): i for i in issues}
    return [unique[k] for k in sorted(unique)]


def _seconds(value: Any, default: float) -> float:
    return default if value is None else parse_duration(value)


def build_plan(doc: Document, runbooks: RunbookLookup) -> Plan:
    """Typed objects from a document that passed the checks."""
    data = doc.data
    fault = Fault(host=data["fault"]["host"], inject=data["fault"]["inject"])
    raw_start = data["start"]
    start = Start(
        via=raw_start["via"],
        runbook=raw_start["runbook"],
        inputs=_frozen(raw_start.get("inputs")),
        actor=raw_start.get("as", DEFAULT_STARTER),
        after=_seconds(raw_start.get("after"), 0.0),
    )
    detection = None
    if "detection" in data:
        raw = data["detection"]
        detection = Detection(raw["alert"], _frozen(raw.get("labels", {"host": fault.host})))
    book = runbooks(start.runbook)
    objectives = data.get("objectives", {})
    server = data.get("server")
    return Plan(
        name=data["metadata"]["name"],
        title=data["metadata"].get("title"),
        source=doc.path,
        sha256=doc.sha256,
        fault=fault,
        start=start,
        detection=detection,
        answers=tuple(_answer(raw, book) for raw in data.get("approvals", [])),
        checks=tuple(_check(raw, fault.host) for raw in data["checks"]),
        expect_run=data.get("expect", {}).get("run", "succeeded"),
        objectives=Objectives(
            **{k: parse_duration(v) for k, v in objectives.items()}  # detect, first_action...
        ),
        timeout=_seconds(data.get("timeout"), DEFAULT_TIMEOUT),
        settle=_seconds(data.get("settle"), DEFAULT_SETTLE),
        server=ServerRef(server["url"].rstrip("/"), Path(server["home"]), server["token_env"])
        if server
        else None,
        document=doc,
    )


def _answer(raw: Mapping[str, Any], book: Runbook) -> Answer:
    groups = raw.get("groups") or list(book.step(raw["step"]).action.approvers)  # type: ignore[union-attr]
    return Answer(
        step=raw["step"],
        by=raw["by"],
        groups=tuple(groups),
        after=_seconds(raw.get("after"), 0.0),
        approve=raw.get("decision", "approve") == "approve",
        reason=raw.get("reason"),
        token_env=raw.get("token_env"),
    )


def _check(raw: Mapping[str, Any], fault_host: str) -> Check:
    probe: Probe
    if "http" in raw:
        spec = raw["http"]
        status = spec.get("expect_status", 200)
        probe = HttpCheck(
            host=spec.get("host"),
            path=spec.get("path", DEFAULT_HEALTH_PATH),
            url=spec.get("url"),
            expect_status=tuple(status) if isinstance(status, list) else (status,),
            contains=spec.get("contains"),
        )
    elif "prometheus" in raw:
        probe = PrometheusCheck(raw["prometheus"]["query"])
    else:
        spec = raw["alert_resolved"]
        probe = AlertResolvedCheck(spec["alert"], _frozen(spec.get("labels", {"host": fault_host})))
    return Check(raw["name"], probe)
