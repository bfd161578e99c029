"""Finding scenario files, the runbooks they test, and loading both.

Convention: the scenarios of ``runbooks/disk-pressure.yaml`` live in
``runbooks/tests/disk-pressure.yaml`` (a ``tests/`` folder beside the
runbooks; any file name works, ``kind: Scenarios`` is what counts). A
scenario file names its runbook as ``name`` or ``name@version``, looked up
beside the file, in its parent folder, then in the configured catalog; or as
a path relative to the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from executor.catalog import Entry, load_entry, looks_like_runbook, semver_key
from executor.errors import Issue, NotFound, ValidationFailed
from executor.loader import Document, load_document
from executor.model import Runbook
from executor.rehearsal.checks import semantic_issues
from executor.rehearsal.scenario import Scenario, build_scenario, merged
from executor.rehearsal.schema import schema_issues
from executor.schema_words import did_you_mean

_KIND_LINE = re.compile(rb"^kind:\s*['\"]?Scenarios['\"]?\s*(#.*)?$", re.MULTILINE)
_YAML = (".yaml", ".yml")


def looks_like_scenarios(path: Path) -> bool:
    """Cheap pre-check: the file says ``kind: Scenarios`` at the top level."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(65536)
    except OSError:
        return False
    return bool(_KIND_LINE.search(head))


def scenario_files(root: Path) -> Iterator[Path]:
    """Every scenario file under ``root`` (recursively), in a stable order."""
    for path in sorted(root.rglob("*")):
        if path.suffix in _YAML and path.is_file() and looks_like_scenarios(path):
            yield path


@dataclass
class ScenarioFile:
    """One validated scenario file and the runbook it tests."""

    path: Path
    runbook: Runbook
    scenarios: list[Scenario] = field(default_factory=list)


class RunbookFinder:
    """Resolves the ``runbook:`` of scenario files; caches what it has read."""

    def __init__(self, catalog: Path | None = None) -> None:
        self.catalog = catalog
        self._folders: dict[Path, list[Entry]] = {}

    def entries(self, folder: Path) -> list[Entry]:
        """The runbook files directly in ``folder`` (not below it), loaded once."""
        folder = folder.resolve()
        if folder not in self._folders:
            found = [
                load_entry(p)
                for p in sorted(folder.glob("*"))
                if p.suffix in _YAML and p.is_file() and looks_like_runbook(p)
            ]
            self._folders[folder] = found
        return self._folders[folder]

    def catalog_entries(self) -> list[Entry]:
        if self.catalog is None or not self.catalog.is_dir():
            return []
        found: list[Entry] = []
        for folder in sorted({p.parent for p in self.catalog.rglob("*") if p.suffix in _YAML}):
            found.extend(self.entries(folder))
        return found

    def find(self, ref: str, beside: Path) -> Runbook:
        """The runbook ``ref`` names, for a scenario file in folder ``beside``."""
        if ref.endswith(_YAML) or "/" in ref:
            return self._by_path(beside / ref, ref)
        name, _, version = ref.partition("@")
        places = [lambda: self.entries(beside), lambda: self.entries(beside.parent)]
        places.append(self.catalog_entries)
        seen: list[Entry] = []
        for place in places:
            entries = place()
            seen.extend(entries)
            matching = [e for e in entries if _named(e) == (name, version or _version(e))]
            if matching:
                return _usable(max(matching, key=lambda e: semver_key(_version(e))))
        known = sorted({e.runbook.name for e in seen if e.runbook is not None})
        broken = [str(e.path) for e in seen if e.runbook is None]
        found = f" (found: {', '.join(known)})" if known else ""
        raise NotFound(
            f"no runbook {ref!r} beside {beside}, in its parent or in the catalog"
            f"{did_you_mean(name, known) or found}",
            hint="runbook validate " + " ".join(broken) if broken else None,
        )

    def _by_path(self, path: Path, ref: str) -> Runbook:
        if not path.is_file():
            raise NotFound(f"runbook file {ref} does not exist (looked for {path})")
        return _usable(load_entry(path))


def _named(entry: Entry) -> tuple[str, str]:
    """(name, version) as the file declares them, even when it is invalid otherwise."""
    if entry.runbook is not None:
        return entry.runbook.name, entry.runbook.version
    data = entry.document.data if entry.document is not None else None
    meta = data.get("metadata") if isinstance(data, dict) else None
    if not isinstance(meta, dict):
        return "", ""
    return str(meta.get("name", "")), str(meta.get("version", ""))


def _version(entry: Entry) -> str:
    return _named(entry)[1]


def _usable(entry: Entry) -> Runbook:
    errors = [i for i in entry.issues if i.severity == "error"]
    if entry.runbook is None or errors:
        raise ValidationFailed(errors or entry.issues)
    return entry.runbook


def load_scenario_file(path: Path, finder: RunbookFinder) -> ScenarioFile:
    """Read, validate and build one scenario file; raises ``ValidationFailed`` with every issue."""
    doc = load_document(path)
    issues = schema_issues(doc)
    data = doc.data
    ref = data.get("runbook")
    if not isinstance(ref, str) or not ref:
        raise ValidationFailed(_sorted(issues))
    try:
        book = finder.find(ref, path.parent)
    except NotFound as exc:
        line, col = doc.position(("runbook",))
        issues.append(Issue(doc.path, line, col, str(exc), code="unknown-runbook"))
        raise ValidationFailed(_sorted(issues)) from None
    except ValidationFailed as exc:
        line, col = doc.position(("runbook",))
        first = exc.issues[0] if exc.issues else None
        issues.append(
            Issue(
                doc.path,
                line,
                col,
                f"runbook {ref!r} is not valid ({len(exc.issues)} problem(s), first: {first}); "
                "fix it before rehearsing it",
                code="invalid-runbook",
            )
        )
        raise ValidationFailed(_sorted(issues)) from None
    issues.extend(semantic_issues(doc, book))
    if issues:
        raise ValidationFailed(_sorted(issues))
    return ScenarioFile(path=path, runbook=book, scenarios=list(_build(doc, book)))


def _build(doc: Document, book: Runbook) -> Iterable[Scenario]:
    defaults = doc.data.get("defaults") or {}
    for index, raw in enumerate(doc.data["scenarios"]):
        line, _ = doc.position(("scenarios", index), key=True)
        yield build_scenario(merged(defaults, raw), book, source=doc.path, line=line)


def _sorted(issues: list[Issue]) -> list[Issue]:
    unique = {(i.line, i.column, i.message): i for i in issues}
    return [unique[k] for k in sorted(unique)]
