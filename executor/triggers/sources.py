"""The catalog and the routes as a running server sees them: reloaded when they change.

A person edits a runbook or the routes file while `runbook serve` runs; the
next alert uses the new content once it is valid. Changes are noticed by
file modification time and size, so looking costs a few ``stat`` calls. A
routes file that became invalid is reported and the previous routes stay in
force: a typo must not turn remediation off silently, nor on unchecked.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

from executor.catalog import Catalog, runbook_files
from executor.errors import RunbookError
from executor.model import Runbook
from executor.triggers.routes import ROUTES_FILES, RouteTable, load_routes

log = logging.getLogger("runbook.serve")


class CatalogView:
    """The catalog, reloaded when a file in it changes (checked cheaply by mtime and size)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._stamp: tuple[tuple[str, int, int], ...] | None = None
        self._catalog: Catalog | None = None
        self._resolved: dict[str, Runbook] = {}

    def _current_stamp(self) -> tuple[tuple[str, int, int], ...]:
        stamp = []
        for path in runbook_files(self.root):
            info = path.stat()
            stamp.append((str(path), info.st_mtime_ns, info.st_size))
        lock = self.root / "catalog.lock"
        if lock.exists():
            info = lock.stat()
            stamp.append((str(lock), info.st_mtime_ns, info.st_size))
        return tuple(stamp)

    def refresh(self) -> Catalog:
        """Reload the catalog if a runbook file (or the lock) changed since the last look."""
        with self._lock:
            stamp = self._current_stamp()
            if self._catalog is None or stamp != self._stamp:
                self._catalog = Catalog.load(self.root)
                self._stamp = stamp
                self._resolved = {}
            return self._catalog

    def catalog(self) -> Catalog:
        """The catalog as last loaded (``refresh`` looks for changes)."""
        with self._lock:
            current = self._catalog
        return current if current is not None else self.refresh()

    def runbook(self, ref: str) -> Runbook:
        """``name`` or ``name@version``; resolved once per load of the catalog."""
        found = self._resolved.get(ref)
        if found is None:
            found = self.catalog().resolve(ref)
            self._resolved[ref] = found
        return found

    def text(self, book: Runbook) -> str:
        """The exact text ``book`` was loaded from (runs keep it to resume and approve)."""
        entry = self.catalog().entry(book.ref)
        if entry.document is not None:
            text = entry.document.text
            if hashlib.sha256(text.encode("utf-8")).hexdigest() == book.sha256:
                return text
        raw = Path(book.source).read_bytes()
        if hashlib.sha256(raw).hexdigest() != book.sha256:
            raise RunbookError(
                f"{book.source} changed on disk while {book.ref} was being started",
                hint="retry: the catalog is reloaded when its files change",
            )
        return raw.decode("utf-8")


def default_routes(catalog: Path) -> Path | None:
    """``routes.yaml`` or ``routes.yml`` beside the runbooks, if there is one."""
    for name in ROUTES_FILES:
        if (catalog / name).is_file():
            return catalog / name
    return None


class RoutesFile:
    """The route table, reloaded when its file changes; a broken edit keeps the last good one."""

    def __init__(self, path: Path | None, catalog: CatalogView) -> None:
        self.path = path
        self.catalog = catalog
        self.error: str | None = None
        self._stamp: tuple[int, int] | None = None
        self._table = RouteTable(source=str(path) if path else "<no routes file>")
        if path is not None:
            self._table = load_routes(path, lookup=catalog.runbook)
            self._stamp = self._current()

    def _current(self) -> tuple[int, int] | None:
        try:
            info = self.path.stat() if self.path else None
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size) if info else None

    def table(self) -> RouteTable:
        stamp = self._current()
        if self.path is not None and stamp != self._stamp:
            self._stamp = stamp
            try:
                self._table = load_routes(self.path, lookup=self.catalog.runbook)
                self.error = None
                log.info("routes reloaded from %s", self.path)
            except RunbookError as exc:
                self.error = f"{self.path} is invalid, still using the previous routes: {exc}"
                log.error("%s", self.error)
        return self._table
