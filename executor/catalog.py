"""The catalog: a directory of runbooks, their versions and their locked hashes.

A runbook is referred to as ``name`` (the newest version), ``name@1.2.0`` (that
one) or a file path. ``name@version`` is immutable once published:
``runbook catalog lock`` records each version's sha256 in ``catalog.lock``,
and validation refuses a locked version whose bytes changed without a bump,
so an approval given for ``disk-pressure@1.3.0`` always means the same steps.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from executor.errors import CatalogError, Issue, NotFound, ValidationFailed
from executor.loader import Document, load_document
from executor.model import Runbook
from executor.validation import validate_document

LOCK_FILE = "catalog.lock"
LOCK_VERSION = 1
_KIND_LINE = re.compile(rb"^kind:\s*['\"]?Runbook['\"]?\s*(#.*)?$", re.MULTILINE)
_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


def semver_key(version: str) -> tuple[object, ...]:
    """Sort key for semantic versions: a pre-release sorts before its release.

    Anything that is not semver sorts before every semver, by text, so an odd
    version never wins "newest" by accident.
    """
    match = _SEMVER.match(version)
    if not match:
        return (0, version)
    major, minor, patch, pre = match.groups()
    if pre is None:
        pre_key: tuple[object, ...] = (1,)
    else:
        parts = [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")]
        pre_key = (0, *parts)
    return (1, int(major), int(minor), int(patch), pre_key)


def looks_like_runbook(path: Path) -> bool:
    """Cheap pre-check so playbooks, scenarios and routes in the tree are not parsed as runbooks."""
    try:
        head = path.read_bytes()[:65536]
    except OSError:
        return False
    return bool(_KIND_LINE.search(head))


def runbook_files(root: Path) -> Iterator[Path]:
    """Every runbook file under ``root``, in a stable order."""
    for path in sorted(root.rglob("*")):
        if path.suffix in (".yaml", ".yml") and path.is_file() and looks_like_runbook(path):
            yield path


@dataclass
class Entry:
    """One file of the catalog, valid or not."""

    path: Path
    document: Document | None
    runbook: Runbook | None
    issues: list[Issue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.runbook is not None and not any(i.severity == "error" for i in self.issues)


def load_entry(path: Path) -> Entry:
    """Load and validate one file; problems become issues, never exceptions."""
    try:
        document = load_document(path)
    except ValidationFailed as failed:
        return Entry(path=path, document=None, runbook=None, issues=list(failed.issues))
    issues = validate_document(document)
    runbook = None
    if not any(i.severity == "error" for i in issues):
        runbook = Runbook.from_mapping(document.data, source=str(path), sha256=document.sha256)
    return Entry(path=path, document=document, runbook=runbook, issues=issues)


@dataclass
class Lock:
    """``catalog.lock``: the sha256 of each published name@version."""

    path: Path
    versions: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> Lock:
        if not path.exists():
            return cls(path=path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            versions = raw["runbooks"]
            if raw.get("lockVersion") != LOCK_VERSION or not isinstance(versions, dict):
                raise ValueError("unsupported lockVersion")
        except (ValueError, KeyError, TypeError) as exc:
            raise CatalogError(
                f"{path}: cannot read the catalog lock ({exc})",
                hint="restore it from version control, or delete it and run 'runbook catalog lock'",
            ) from exc
        return cls(path=path, versions={str(k): dict(v) for k, v in versions.items()})

    def write(self) -> None:
        body = {"lockVersion": LOCK_VERSION, "runbooks": dict(sorted(self.versions.items()))}
        tmp = self.path.with_suffix(".lock.tmp")
        tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(self.path)


class Catalog:
    """All runbooks under one directory, indexed by name and version."""

    def __init__(self, root: Path, entries: Iterable[Entry]) -> None:
        self.root = root
        self.entries = list(entries)
        self.lock = Lock.read(root / LOCK_FILE)
        self._by_name: dict[str, dict[str, list[Entry]]] = {}
        for entry in self.entries:
            if entry.runbook is not None:
                versions = self._by_name.setdefault(entry.runbook.name, {})
                versions.setdefault(entry.runbook.version, []).append(entry)

    @classmethod
    def load(cls, root: Path) -> Catalog:
        if not root.is_dir():
            raise NotFound(
                f"catalog directory {root} does not exist",
                hint="pass --catalog DIR or set RUNBOOK_CATALOG",
            )
        return cls(root, (load_entry(p) for p in runbook_files(root)))

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def versions(self, name: str) -> list[str]:
        return sorted(self._by_name.get(name, {}), key=semver_key)

    def newest(self, name: str) -> Entry:
        versions = self.versions(name)
        if not versions:
            raise NotFound(
                f"no runbook named {name!r} in the catalog {self.root}",
                hint=_suggest(name, self.names()) or "run 'runbook list' to see the catalog",
            )
        return self._by_name[name][versions[-1]][0]

    def resolve(self, ref: str) -> Runbook:
        """``name``, ``name@version`` or a path; raises with the reason it cannot run."""
        entry = self.entry(ref)
        if entry.runbook is None or not entry.ok:
            raise ValidationFailed(entry.issues)
        problems = [i for i in self.catalog_issues() if Path(i.path) == entry.path]
        if problems:
            raise ValidationFailed(problems)
        return entry.runbook

    def entry(self, ref: str) -> Entry:
        if "@" in ref:
            name, version = ref.split("@", 1)
            found = self._by_name.get(name, {}).get(version)
            if not found:
                known = ", ".join(self.versions(name)) or "none"
                raise NotFound(
                    f"no runbook {name}@{version} in the catalog {self.root} (versions: {known})"
                )
            return found[0]
        return self.newest(ref)

    def catalog_issues(self) -> list[Issue]:
        """Problems between files: a name@version claimed twice, a locked version edited."""
        issues: list[Issue] = []
        for name, versions in self._by_name.items():
            for version, entries in versions.items():
                issues.extend(_conflicts(name, version, entries))
                locked = self.lock.versions.get(f"{name}@{version}")
                if locked:
                    for entry in entries:
                        issues.extend(_lock_mismatch(entry, locked))
        return sorted(issues, key=lambda i: (i.path, i.line, i.column))

    def lock_all(self) -> list[str]:
        """Record every valid version's hash; refuses when one would overwrite a different hash."""
        problems = self.catalog_issues()
        if problems:
            raise ValidationFailed(problems)
        added = []
        for name, versions in self._by_name.items():
            for version, entries in versions.items():
                entry = entries[0]
                assert entry.runbook is not None
                key = f"{name}@{version}"
                if key not in self.lock.versions:
                    added.append(key)
                self.lock.versions[key] = {
                    "sha256": entry.runbook.sha256,
                    "path": entry.path.relative_to(self.root).as_posix(),
                }
        self.lock.write()
        return sorted(added)


def _version_position(entry: Entry) -> tuple[int, int]:
    if entry.document is None:
        return (1, 1)
    return entry.document.position(("metadata", "version"))


def _conflicts(name: str, version: str, entries: list[Entry]) -> list[Issue]:
    hashes = {e.runbook.sha256 for e in entries if e.runbook is not None}
    if len(hashes) <= 1:
        return []
    first = entries[0]
    issues = []
    for other in entries[1:]:
        line, column = _version_position(other)
        issues.append(
            Issue(
                path=str(other.path),
                line=line,
                column=column,
                code="duplicate-version",
                message=(
                    f"{name}@{version} is also defined in {first.path} with different content: "
                    f"give one of them a new metadata.version"
                ),
            )
        )
    return issues


def _lock_mismatch(entry: Entry, locked: dict[str, str]) -> list[Issue]:
    assert entry.runbook is not None
    if entry.runbook.sha256 == locked.get("sha256"):
        return []
    line, column = _version_position(entry)
    return [
        Issue(
            path=str(entry.path),
            line=line,
            column=column,
            code="locked-version-changed",
            message=(
                f"{entry.runbook.ref} changed since it was locked in {LOCK_FILE} "
                f"(locked sha256 {locked.get('sha256', '?')[:12]}, "
                f"now {entry.runbook.sha256[:12]}): "
                f"a published version is immutable; bump metadata.version and run "
                f"'runbook catalog lock'"
            ),
        )
    ]


def _suggest(name: str, known: list[str]) -> str | None:
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    return f"did you mean {close[0]!r}?" if close else None


def find_lock(path: Path) -> Lock | None:
    """The catalog.lock governing a file: in its directory or the nearest parent."""
    for folder in [path.parent, *path.parent.parents]:
        candidate = folder / LOCK_FILE
        if candidate.is_file():
            return Lock.read(candidate)
    return None


def check_file(path: Path) -> Entry:
    """Validate one file, including its lock entry if a catalog.lock governs it."""
    entry = load_entry(path)
    lock = find_lock(path)
    if entry.runbook is not None and lock is not None:
        locked = lock.versions.get(entry.runbook.ref)
        if locked:
            entry.issues.extend(_lock_mismatch(entry, locked))
    return entry


def is_path_ref(ref: str) -> bool:
    return ref.endswith((".yaml", ".yml")) or "/" in ref or Path(ref).is_file()


def resolve_ref(ref: str, catalog_root: Path) -> Runbook:
    """A runbook from a path, ``name`` or ``name@version``; raises what blocks it."""
    if is_path_ref(ref):
        path = Path(ref)
        if not path.is_file():
            raise NotFound(f"runbook file {ref} does not exist")
        entry = check_file(path)
        if not entry.ok or entry.runbook is None:
            raise ValidationFailed([i for i in entry.issues if i.severity == "error"])
        return entry.runbook
    return Catalog.load(catalog_root).resolve(ref)
