"""Durable state in SQLite, behind the ``StateStore`` port (DESIGN.md section 4).

Several processes share one state file: an engine running a run, a CLI
approving a step or engaging the kill-switch, a server receiving alerts. So the
database runs in WAL mode (readers never wait for the writer), every method is
one short transaction (``BEGIN IMMEDIATE`` where it reads then writes, so two
processes cannot both take the last lock slot), and a busy timeout makes a
second writer wait its turn instead of failing. A kill-switch engaged by one
process is visible to the next read of every other process: there is no cache.

The schema is versioned with ``PRAGMA user_version``; ``_MIGRATIONS`` only
ever grows, so an old state file is upgraded in place and a file written by a
newer executor is refused rather than misread.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any

from executor.errors import ApprovalRefused, NotFound, StoreError

SCHEMA_VERSION_1: tuple[str, ...] = (
    """CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        runbook TEXT,
        version TEXT,
        sha256 TEXT,
        source TEXT,
        status TEXT NOT NULL DEFAULT 'pending',
        actor TEXT,
        "trigger" TEXT,
        inputs TEXT,
        alert TEXT,
        dry_run INTEGER NOT NULL DEFAULT 0,
        concurrency_key TEXT,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        finished REAL,
        state TEXT,
        error TEXT,
        kill_requested INTEGER NOT NULL DEFAULT 0,
        kill_by TEXT,
        kill_reason TEXT,
        kill_at REAL
    )""",
    "CREATE INDEX runs_status ON runs(status)",
    "CREATE INDEX runs_created ON runs(created)",
    "CREATE INDEX runs_runbook ON runs(runbook, created)",
    """CREATE TABLE steps (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step_id TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        started REAL,
        finished REAL,
        hosts TEXT,
        outputs TEXT,
        error TEXT,
        PRIMARY KEY (run_id, step_id)
    )""",
    """CREATE TABLE approvals (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step_id TEXT NOT NULL,
        approver TEXT NOT NULL,
        decision TEXT NOT NULL CHECK (decision IN ('approve', 'deny')),
        reason TEXT,
        at REAL NOT NULL,
        sha256 TEXT,
        UNIQUE (run_id, step_id, approver)
    )""",
    """CREATE TABLE locks (
        "key" TEXT NOT NULL,
        run_id TEXT NOT NULL,
        acquired REAL NOT NULL,
        PRIMARY KEY ("key", run_id)
    )""",
    "CREATE INDEX locks_run ON locks(run_id)",
    """CREATE TABLE cooldowns (
        "key" TEXT PRIMARY KEY,
        until REAL NOT NULL
    )""",
    """CREATE TABLE killswitch_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        scope TEXT NOT NULL,
        engaged INTEGER NOT NULL,
        reason TEXT,
        actor TEXT,
        at REAL NOT NULL
    )""",
    "CREATE INDEX killswitch_scope ON killswitch_events(scope, id)",
)

SCHEMA_VERSION_2: tuple[str, ...] = (
    # The exact runbook text a run started with: resume and approvals use it,
    # not whatever file sits at the source path now.
    "ALTER TABLE runs ADD COLUMN runbook_text TEXT",
    # pid@host of the process executing the run, so `resume` refuses a live one.
    "ALTER TABLE runs ADD COLUMN owner TEXT",
)

SCHEMA_VERSION_3: tuple[str, ...] = (
    # Alerts received by `runbook serve`, stored before the webhook is answered,
    # then decided (started, deduplicated, suppressed...) by the dispatcher.
    """CREATE TABLE received_alerts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        received REAL NOT NULL,
        fingerprint TEXT NOT NULL,
        status TEXT NOT NULL,
        alertname TEXT,
        labels TEXT NOT NULL,
        annotations TEXT,
        starts_at TEXT,
        ends_at TEXT,
        generator_url TEXT,
        receiver TEXT,
        group_key TEXT,
        source TEXT,
        stage TEXT NOT NULL DEFAULT 'queued',
        decided REAL,
        disposition TEXT,
        decisions TEXT
    )""",
    "CREATE INDEX received_alerts_queue ON received_alerts(stage, id)",
    "CREATE INDEX received_alerts_fingerprint ON received_alerts(fingerprint, id)",
    # Runs started by an alert route: rate limits and deduplication count these.
    """CREATE TABLE trigger_starts (
        run_id TEXT PRIMARY KEY,
        runbook TEXT NOT NULL,
        route TEXT,
        fingerprint TEXT,
        alert_id INTEGER,
        at REAL NOT NULL
    )""",
    "CREATE INDEX trigger_starts_route ON trigger_starts(route, at)",
    "CREATE INDEX trigger_starts_at ON trigger_starts(at)",
    "CREATE INDEX trigger_starts_fingerprint ON trigger_starts(fingerprint, runbook)",
    # Hosts each run of a runbook touches (or is about to): the blast-radius budget.
    """CREATE TABLE budget_hosts (
        run_id TEXT NOT NULL,
        runbook TEXT NOT NULL,
        host TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (run_id, host)
    )""",
    "CREATE INDEX budget_hosts_runbook ON budget_hosts(runbook, at)",
    # A row each long-running process rewrites: proves the store is writable.
    """CREATE TABLE heartbeats (
        name TEXT PRIMARY KEY,
        at REAL NOT NULL,
        info TEXT
    )""",
)

SCHEMA_VERSION_4: tuple[str, ...] = (
    # A run's conductor state in rows, so saving it costs what changed, not the run:
    # runs.state keeps the run-level part, each step its record, the history its
    # entries. state_rows = 1 says a run's state is stored this way.
    "ALTER TABLE runs ADD COLUMN state_rows INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE steps ADD COLUMN pos INTEGER",
    "ALTER TABLE steps ADD COLUMN record TEXT",
    """CREATE TABLE history (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        pos INTEGER NOT NULL,
        at REAL,
        step TEXT,
        "from" TEXT NOT NULL,
        "to" TEXT NOT NULL,
        PRIMARY KEY (run_id, pos)
    ) WITHOUT ROWID""",
)

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    SCHEMA_VERSION_1,
    SCHEMA_VERSION_2,
    SCHEMA_VERSION_3,
    SCHEMA_VERSION_4,
)
"""Migration N (1-based) brings ``user_version`` from N-1 to N. Append only."""

SCHEMA_VERSION = len(_MIGRATIONS)

RUN_COLUMNS = frozenset(
    {
        "id", "runbook", "version", "sha256", "source", "status", "actor", "trigger",
        "inputs", "alert", "dry_run", "concurrency_key", "created", "updated", "finished",
        "state", "error", "kill_requested", "kill_by", "kill_reason", "kill_at",
        "runbook_text", "owner",
    }
)  # fmt: skip
STEP_COLUMNS = frozenset({"status", "attempts", "started", "finished", "hosts", "outputs", "error"})
APPROVAL_FIELDS = frozenset({"approver", "decision", "reason", "at", "sha256"})
_JSON_COLUMNS = frozenset(
    {
        "inputs", "alert", "state", "hosts", "outputs", "labels", "annotations", "decisions",
        "info", "record",
    }
)  # fmt: skip
ALERT_COLUMNS = frozenset(
    {
        "received", "fingerprint", "status", "alertname", "labels", "annotations",
        "starts_at", "ends_at", "generator_url", "receiver", "group_key", "source",
    }
)  # fmt: skip
_BOOL_COLUMNS = frozenset({"dry_run", "kill_requested", "engaged"})
_DECISIONS = frozenset({"approve", "deny"})

# Primary SQLite result codes (extended codes carry them in their low byte).
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 3, 5, 6, 8
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN = 10, 11, 13, 14
_SQLITE_NOTADB = 26


def _json_default(value: Any) -> Any:
    """Frozen model objects (mapping proxies, sets, enums) are stored as plain JSON."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _encode(column: str, value: Any) -> Any:
    """One Python value as the SQLite value of ``column``."""
    if value is None:
        return None
    if column in _JSON_COLUMNS:
        try:
            return json.dumps(value, default=_json_default, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"cannot store {column!r} as JSON: {exc}") from exc
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        raise ValueError(f"column {column!r} holds a single value, not {type(value).__name__}")
    return value


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    """A row as a plain dict, with JSON columns decoded and flags as booleans."""
    result: dict[str, Any] = {}
    for column in row.keys():  # noqa: SIM118 - sqlite3.Row is not iterable by key
        value = row[column]
        if column in _JSON_COLUMNS and value is not None:
            value = json.loads(value)
        elif column in _BOOL_COLUMNS and value is not None:
            value = bool(value)
        result[column] = value
    return result


_UPSERT_STEP_RECORD = (
    "INSERT INTO steps (run_id, step_id, pos, record, status, attempts, started, finished, error) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(run_id, step_id) DO UPDATE SET "
    "pos = excluded.pos, record = excluded.record, status = excluded.status, "
    "attempts = excluded.attempts, started = excluded.started, finished = excluded.finished, "
    "error = excluded.error"
)


_INSERT_HISTORY = (
    'INSERT INTO history (run_id, pos, at, step, "from", "to") VALUES (?, ?, ?, ?, ?, ?)'
)


def _runs_out(
    conn: sqlite3.Connection, rows: Iterable[sqlite3.Row], *, key: str = "id"
) -> list[dict[str, Any]]:
    """Run rows as dicts, with a state saved by parts put back together."""
    runs = []
    for row in rows:
        run = _decode(row)
        if run.pop("state_rows", None) and run.get("state") is not None:
            run["state"] = _assembled(conn, run[key], run["state"])
        runs.append(run)
    return runs


def _assembled(conn: sqlite3.Connection, run_id: str, head: dict[str, Any]) -> dict[str, Any]:
    """The whole conductor state from its run-level part, step records and history rows."""
    records = conn.execute(
        "SELECT step_id, record FROM steps WHERE run_id = ? AND record IS NOT NULL ORDER BY pos",
        (run_id,),
    )
    history = conn.execute(
        'SELECT at, step, "from", "to" FROM history WHERE run_id = ? ORDER BY pos', (run_id,)
    )
    return {
        **head,
        "steps": {sid: json.loads(record) for sid, record in records},
        "history": [{"at": a, "step": s, "from": f, "to": t} for a, s, f, t in history],
    }


def _check_columns(fields: Iterable[str], allowed: frozenset[str], what: str) -> None:
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise ValueError(
            f"unknown {what} field(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}"
        )


def _quoted(column: str) -> str:
    return f'"{column}"'


class SqliteStore:
    """The ``StateStore`` port on one SQLite file, safe across threads and processes.

    Each thread (and each process after a fork) gets its own connection, since
    a SQLite connection must not be shared by concurrent callers. ``clock``
    stamps ``created``/``updated``/``at`` when the caller does not.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        busy_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._clock = clock
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the state directory {self.path.parent}: {exc.strerror}",
                hint="point RUNBOOK_HOME at a writable directory",
            ) from exc
        self._migrate()

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        """Close every connection this store opened (in any thread)."""
        with self._all_lock:
            connections, self._all = self._all, []
        for conn in connections:
            conn.close()
        self._local = threading.local()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _conn(self) -> sqlite3.Connection:
        cached = getattr(self._local, "conn", None)
        if cached is not None and cached[0] == os.getpid():
            return cached[1]
        try:
            conn = self._open()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        self._local.conn = (os.getpid(), conn)
        with self._all_lock:
            self._all.append(conn)
        return conn

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # only close() crosses threads
        )
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            mode = self._enable_wal(conn)
            if mode != "wal":
                raise StoreError(
                    f"the state database at {self.path} cannot use WAL mode (got {mode!r})",
                    hint="keep RUNBOOK_HOME on a local filesystem (not NFS or a FUSE mount)",
                )
            # A finished step must survive a power cut: never repeat it on resume.
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> str:
        """Switch to WAL (persistent in the file), waiting out processes doing the same.

        Changing the journal mode takes an exclusive lock without calling the
        busy handler, so processes opening a fresh file together would fail at
        once: retry until ``busy_timeout`` instead.
        """
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() != "wal":
                    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                return str(mode).lower()
            except sqlite3.OperationalError as exc:
                code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
                if code not in (_SQLITE_BUSY, _SQLITE_LOCKED) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    @contextmanager
    def _tx(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        """One short transaction; sqlite3 errors leave as ``StoreError``.

        Writes start with ``BEGIN IMMEDIATE`` so the write lock is taken up
        front: a read-modify-write cannot be overtaken between its read and
        its write, and a busy database is waited for rather than deadlocked.
        """
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def _error(self, exc: sqlite3.Error) -> StoreError:
        """The sqlite3 error as a ``StoreError`` that says what to do."""
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        where = f"the state database at {self.path}"
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return StoreError(
                f"{where} is locked by another process for more than {self.busy_timeout:g} s",
                hint=f"find the process holding it (fuser {self.path}) and retry; "
                "a stuck `runbook` process may need `runbook kill` or a restart",
            )
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            return StoreError(
                f"{where} is corrupt or not a SQLite database ({exc})",
                hint=f"move it aside (mv {self.path} {self.path}.broken) and restore it from a "
                "backup; runs recorded in it cannot be resumed until then",
            )
        if code == _SQLITE_FULL:
            return StoreError(f"{where} cannot grow: the disk is full", hint="free space, retry")
        if code in (_SQLITE_CANTOPEN, _SQLITE_PERM, _SQLITE_READONLY):
            return StoreError(
                f"cannot open or write {where} ({exc})",
                hint="check that the file and its directory exist and are writable by this "
                "user, or point RUNBOOK_HOME elsewhere",
            )
        if code == _SQLITE_IOERR:
            return StoreError(f"{where} hit an I/O error ({exc})", hint="check the disk (dmesg)")
        return StoreError(f"{where} failed: {exc}", hint="retry; report it if it persists")

    def _migrate(self) -> None:
        """Bring the schema to ``SCHEMA_VERSION``; safe when processes race to do it."""
        with self._tx(write=True) as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the state database at {self.path} has schema version {version}, newer "
                    f"than this executor understands ({SCHEMA_VERSION})",
                    hint="upgrade runbook, or point RUNBOOK_HOME at another state directory",
                )
            if version == 0:
                self._refuse_foreign(conn)
            for number in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[number - 1]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")

    def _refuse_foreign(self, conn: sqlite3.Connection) -> None:
        tables = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
        if tables:
            raise StoreError(
                f"{self.path} is a SQLite database but not a runbook state database "
                f"(it holds tables {', '.join(sorted(t[0] for t in tables))})",
                hint="point RUNBOOK_HOME at the directory holding the runbook state.db",
            )

    def schema_version(self) -> int:
        """The schema version of the file (``SCHEMA_VERSION`` once opened)."""
        with self._tx(write=False) as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    def journal_mode(self) -> str:
        with self._tx(write=False) as conn:
            return str(conn.execute("PRAGMA journal_mode").fetchone()[0])

    # ---------------------------------------------------------------------- runs

    def create_run(self, run: Mapping[str, Any]) -> None:
        """Record a new run. ``id`` is required; ``inputs`` must already be masked."""
        _check_columns(run, RUN_COLUMNS, "run")
        if not run.get("id"):
            raise ValueError("a run needs an 'id'")
        now = self._clock()
        row = {"status": "pending", "created": now, "updated": now, **run}
        columns = list(row)
        sql = (
            f"INSERT INTO runs ({', '.join(map(_quoted, columns))}) "
            f"VALUES ({', '.join('?' for _ in columns)})"
        )
        with self._tx(write=True) as conn:
            try:
                conn.execute(sql, [_encode(c, row[c]) for c in columns])
            except sqlite3.IntegrityError as exc:
                raise StoreError(
                    f"a run with id {run['id']!r} already exists in {self.path}",
                    hint="run ids must be unique; generate a new one",
                ) from exc

    def get_run(self, run_id: str) -> dict[str, Any]:
        with self._tx(write=False) as conn:
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise self._no_run(run_id)
            return _runs_out(conn, [row])[0]

    def run_fields(self, run_id: str, *columns: str) -> dict[str, Any]:
        """A few columns of a run, without decoding its state (cheap enough to poll)."""
        _check_columns(columns, RUN_COLUMNS - {"state"}, "run")
        names = ", ".join(map(_quoted, columns or ("id",)))
        with self._tx(write=False) as conn:
            row = conn.execute(f"SELECT {names} FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise self._no_run(run_id)
        return _decode(row)

    def save_state(
        self,
        run_id: str,
        *,
        head: Mapping[str, Any],
        steps: Iterable[tuple[int, str, Mapping[str, Any]]],
        history: Iterable[Mapping[str, Any]],
        history_from: int,
        **fields: Any,
    ) -> None:
        """Save a conductor state by its parts, in one durable transaction.

        ``head`` is the state without ``steps`` and ``history``; ``steps`` are
        ``(position, step id, record)`` of the records that changed since the
        last save (all of them the first time); ``history`` the entries from
        position ``history_from`` on (later ones saved before are dropped).
        ``get_run`` puts the parts back together as ``state``. A save costs
        what changed, where rewriting the whole state cost the whole run.
        """
        _check_columns(fields, RUN_COLUMNS - {"id", "state"}, "run")
        row = {"updated": self._clock(), **fields, "state": dict(head)}
        assignments = ", ".join(f"{_quoted(c)} = ?" for c in row)
        values = [_encode(c, v) for c, v in row.items()]
        step_rows = [
            (
                run_id, sid, pos, _encode("record", record), _encode("status", record["status"]),
                record.get("attempts", 0), record.get("started_at"), record.get("finished_at"),
                record.get("error"),
            )
            for pos, sid, record in steps
        ]  # fmt: skip
        history_rows = [
            (run_id, history_from + i, t["at"], t["step"], t["from"], t["to"])
            for i, t in enumerate(history)
        ]
        with self._tx(write=True) as conn:
            cursor = conn.execute(
                f"UPDATE runs SET {assignments}, state_rows = 1 WHERE id = ?", [*values, run_id]
            )
            if cursor.rowcount == 0:
                raise self._no_run(run_id)
            conn.executemany(_UPSERT_STEP_RECORD, step_rows)
            conn.execute(
                "DELETE FROM history WHERE run_id = ? AND pos >= ?", (run_id, history_from)
            )
            conn.executemany(_INSERT_HISTORY, history_rows)

    def update_run(self, run_id: str, **fields: Any) -> None:
        """Set some columns of a run (``updated`` is stamped unless given).

        A ``state`` given here is the whole state: it replaces one saved by parts.
        """
        _check_columns(fields, RUN_COLUMNS - {"id"}, "run")
        row = {"updated": self._clock(), **fields}
        if "state" in row:
            row["state_rows"] = 0
        assignments = ", ".join(f"{_quoted(c)} = ?" for c in row)
        values = [_encode(c, v) for c, v in row.items()]
        with self._tx(write=True) as conn:
            cursor = conn.execute(f"UPDATE runs SET {assignments} WHERE id = ?", [*values, run_id])
            if cursor.rowcount == 0:
                raise self._no_run(run_id)

    def list_runs(
        self, *, limit: int = 50, status: str | None = None, runbook: str | None = None
    ) -> list[dict[str, Any]]:
        """The newest runs first, optionally of one status and/or one runbook."""
        clauses, values = [], []
        if status is not None:
            clauses.append("status = ?")
            values.append(_encode("status", status))
        if runbook is not None:
            clauses.append("runbook = ?")
            values.append(runbook)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT * FROM runs {where} ORDER BY created DESC, rowid DESC LIMIT ?"
        with self._tx(write=False) as conn:
            return _runs_out(conn, conn.execute(sql, [*values, int(limit)]).fetchall())

    def runs_by_status(self, statuses: Iterable[str]) -> list[dict[str, Any]]:
        """Every run in one of ``statuses``, oldest first: what a restart must resume."""
        wanted = [_encode("status", s) for s in statuses]
        if not wanted:
            return []
        marks = ", ".join("?" for _ in wanted)
        sql = f"SELECT * FROM runs WHERE status IN ({marks}) ORDER BY created, rowid"
        with self._tx(write=False) as conn:
            return _runs_out(conn, conn.execute(sql, wanted).fetchall())

    def request_kill(
        self, run_id: str, actor: str, reason: str, *, at: float | None = None
    ) -> None:
        """Ask the engine running ``run_id`` to stop; it reads this before every step."""
        with self._tx(write=True) as conn:
            cursor = conn.execute(
                "UPDATE runs SET kill_requested = 1, kill_by = ?, kill_reason = ?, kill_at = ?, "
                "updated = ? WHERE id = ?",
                (actor, reason, self._clock() if at is None else at, self._clock(), run_id),
            )
            if cursor.rowcount == 0:
                raise self._no_run(run_id)

    def _no_run(self, run_id: str) -> NotFound:
        return NotFound(
            f"no run with id {run_id!r} in {self.path}",
            hint="list the recent runs with `runbook runs`",
        )

    # --------------------------------------------------------------------- steps

    def upsert_step(self, run_id: str, step_id: str, **fields: Any) -> None:
        """Create the step row or update only the given columns."""
        _check_columns(fields, STEP_COLUMNS, "step")
        columns = list(fields)
        values = [_encode(c, fields[c]) for c in columns]
        names = ", ".join(["run_id", "step_id", *map(_quoted, columns)])
        marks = ", ".join("?" for _ in range(len(columns) + 2))
        if columns:
            updates = ", ".join(f"{_quoted(c)} = excluded.{_quoted(c)}" for c in columns)
            conflict = f"DO UPDATE SET {updates}"
        else:
            conflict = "DO NOTHING"
        sql = (
            f"INSERT INTO steps ({names}) VALUES ({marks}) ON CONFLICT(run_id, step_id) {conflict}"
        )
        with self._tx(write=True) as conn:
            try:
                conn.execute(sql, [run_id, step_id, *values])
            except sqlite3.IntegrityError as exc:
                raise self._no_run(run_id) from exc

    def get_steps(self, run_id: str) -> list[dict[str, Any]]:
        """The step rows of a run in the order they were first recorded."""
        with self._tx(write=False) as conn:
            rows = conn.execute(
                "SELECT * FROM steps WHERE run_id = ? ORDER BY rowid", (run_id,)
            ).fetchall()
        return [_decode(r) for r in rows]

    # ----------------------------------------------------------------- approvals

    def add_approval(self, run_id: str, step_id: str, decision: Mapping[str, Any]) -> None:
        """Record one person's decision; a second decision by the same person is refused.

        ``decision`` holds ``approver``, ``decision`` (approve or deny), and
        optionally ``reason``, ``at`` and ``sha256`` (the runbook content the
        approver saw). The unique constraint makes two racing CLIs safe.
        """
        _check_columns(decision, APPROVAL_FIELDS, "approval")
        if not decision.get("approver"):
            raise ValueError("an approval needs an 'approver'")
        verdict = _encode("decision", decision.get("decision"))
        if verdict not in _DECISIONS:
            raise ValueError(f"decision must be 'approve' or 'deny', not {verdict!r}")
        row = (
            run_id,
            step_id,
            decision["approver"],
            verdict,
            decision.get("reason"),
            self._clock() if decision.get("at") is None else decision["at"],
            decision.get("sha256"),
        )
        with self._tx(write=True) as conn:
            if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
                raise self._no_run(run_id)
            try:
                conn.execute(
                    "INSERT INTO approvals (run_id, step_id, approver, decision, reason, at, "
                    "sha256) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
            except sqlite3.IntegrityError as exc:
                raise ApprovalRefused(
                    f"{decision['approver']} already decided step {step_id!r} of run {run_id}",
                    hint="each approver decides once; ask another member of the group",
                ) from exc

    def get_approvals(self, run_id: str, step_id: str | None = None) -> list[dict[str, Any]]:
        sql, values = "SELECT * FROM approvals WHERE run_id = ?", [run_id]
        if step_id is not None:
            sql += " AND step_id = ?"
            values.append(step_id)
        with self._tx(write=False) as conn:
            return [_decode(r) for r in conn.execute(sql + " ORDER BY id", values)]

    # ------------------------------------------------------- locks and cooldowns

    def acquire_lock(self, key: str, run_id: str, limit: int) -> bool:
        """Take one of ``limit`` slots on ``key``; True if held (again) by ``run_id``."""
        if limit < 1:
            raise ValueError(f"a concurrency limit must be at least 1, not {limit}")
        with self._tx(write=True) as conn:
            holders = [
                r[0] for r in conn.execute('SELECT run_id FROM locks WHERE "key" = ?', (key,))
            ]
            if run_id in holders:
                return True
            if len(holders) >= limit:
                return False
            conn.execute(
                'INSERT INTO locks ("key", run_id, acquired) VALUES (?, ?, ?)',
                (key, run_id, self._clock()),
            )
            return True

    def release_lock(self, key: str, run_id: str) -> None:
        with self._tx(write=True) as conn:
            conn.execute('DELETE FROM locks WHERE "key" = ? AND run_id = ?', (key, run_id))

    def release_locks(self, run_id: str) -> list[str]:
        """Release every lock ``run_id`` holds (its run ended); returns their keys."""
        with self._tx(write=True) as conn:
            keys = [
                r[0] for r in conn.execute('SELECT "key" FROM locks WHERE run_id = ?', (run_id,))
            ]
            conn.execute("DELETE FROM locks WHERE run_id = ?", (run_id,))
        return keys

    def holders(self, key: str) -> list[str]:
        """The runs holding ``key``, first come first."""
        with self._tx(write=False) as conn:
            rows = conn.execute(
                'SELECT run_id FROM locks WHERE "key" = ? ORDER BY acquired, rowid', (key,)
            ).fetchall()
        return [r[0] for r in rows]

    def set_cooldown(self, key: str, until: float) -> None:
        with self._tx(write=True) as conn:
            conn.execute(
                'INSERT INTO cooldowns ("key", until) VALUES (?, ?) '
                'ON CONFLICT("key") DO UPDATE SET until = excluded.until',
                (key, float(until)),
            )

    def cooldown_until(self, key: str) -> float | None:
        """When the cooldown on ``key`` ends (may be past: the caller compares with now)."""
        with self._tx(write=False) as conn:
            row = conn.execute('SELECT until FROM cooldowns WHERE "key" = ?', (key,)).fetchone()
        return None if row is None else float(row[0])

    # --------------------------------------------------------------- kill-switch

    def engage_killswitch(self, scope: str, *, reason: str, actor: str, at: float) -> None:
        """Engage for ``scope`` ("*" = every runbook); engaging again updates the reason."""
        self._switch(scope, engaged=True, reason=reason, actor=actor, at=at)

    def release_killswitch(self, scope: str, *, actor: str, at: float) -> None:
        """Release ``scope``; releasing a switch that is not engaged changes nothing."""
        self._switch(scope, engaged=False, reason=None, actor=actor, at=at)

    def _switch(
        self, scope: str, *, engaged: bool, reason: str | None, actor: str, at: float
    ) -> None:
        if not scope:
            raise ValueError("a kill-switch scope is '*' (every runbook) or a runbook name")
        with self._tx(write=True) as conn:
            current = self._current_switch(conn, scope)
            if not engaged and current is None:
                return
            conn.execute(
                "INSERT INTO killswitch_events (scope, engaged, reason, actor, at) "
                "VALUES (?, ?, ?, ?, ?)",
                (scope, int(engaged), reason, actor, at),
            )

    @staticmethod
    def _current_switch(conn: sqlite3.Connection, scope: str) -> dict[str, Any] | None:
        row = conn.execute(
            "SELECT scope, engaged, reason, actor, at FROM killswitch_events "
            "WHERE scope = ? ORDER BY id DESC LIMIT 1",
            (scope,),
        ).fetchone()
        if row is None or not row["engaged"]:
            return None
        return _decode(row)

    def killswitch(self, runbook: str | None = None) -> dict[str, Any] | None:
        """The engaged switch that applies to ``runbook`` (global first), or None."""
        with self._tx(write=False) as conn:
            found = self._current_switch(conn, "*")
            if found is None and runbook is not None and runbook != "*":
                found = self._current_switch(conn, runbook)
        return found

    def killswitches(self) -> list[dict[str, Any]]:
        """Every switch engaged now, global first then by runbook name."""
        sql = (
            "SELECT scope, engaged, reason, actor, at FROM killswitch_events AS e "
            "WHERE id = (SELECT MAX(id) FROM killswitch_events WHERE scope = e.scope) "
            "AND engaged = 1 ORDER BY scope != '*', scope"
        )
        with self._tx(write=False) as conn:
            return [_decode(r) for r in conn.execute(sql)]

    def killswitch_history(self, limit: int = 100) -> list[dict[str, Any]]:
        """Engagements and releases, newest first: who stopped automation, when and why."""
        with self._tx(write=False) as conn:
            rows = conn.execute(
                "SELECT scope, engaged, reason, actor, at FROM killswitch_events "
                "ORDER BY id DESC LIMIT ?",
                (int(limit),),
            ).fetchall()
        return [_decode(r) for r in rows]

    # ------------------------------------------- alerts (runbook serve, migration 3)

    def add_alerts(self, alerts: Iterable[Mapping[str, Any]]) -> list[int]:
        """Store received alerts, all in one transaction; returns their ids in order.

        One transaction (one fsync) for a whole batch is what lets the server
        store every alert of a storm durably before it answers the webhook.
        """
        rows = [dict(a) for a in alerts]
        for row in rows:
            _check_columns(row, ALERT_COLUMNS, "alert")
            if not row.get("fingerprint") or not row.get("status"):
                raise ValueError("an alert needs a 'fingerprint' and a 'status'")
            row.setdefault("received", self._clock())
            row.setdefault("labels", {})
        ids: list[int] = []
        with self._tx(write=True) as conn:
            for row in rows:
                columns = list(row)
                cursor = conn.execute(
                    f"INSERT INTO received_alerts ({', '.join(map(_quoted, columns))}) "
                    f"VALUES ({', '.join('?' for _ in columns)})",
                    [_encode(c, row[c]) for c in columns],
                )
                ids.append(int(cursor.lastrowid or 0))
        return ids

    def queued_alerts(self, limit: int = 200) -> list[dict[str, Any]]:
        """Alerts accepted but not decided yet, oldest first."""
        with self._tx(write=False) as conn:
            rows = conn.execute(
                "SELECT * FROM received_alerts WHERE stage = 'queued' ORDER BY id LIMIT ?",
                (int(limit),),
            ).fetchall()
        return [_decode(r) for r in rows]

    def count_alerts(self, *, stage: str | None = None) -> int:
        """Alerts stored (``stage`` queued: not decided yet; decided)."""
        sql, values = "SELECT COUNT(*) FROM received_alerts", []
        if stage is not None:
            sql += " WHERE stage = ?"
            values.append(stage)
        with self._tx(write=False) as conn:
            return int(conn.execute(sql, values).fetchone()[0])

    def decide_alerts(
        self,
        decided: Iterable[tuple[int, str, list[Mapping[str, Any]]]],
        *,
        at: float | None = None,
    ) -> None:
        """Record ``(alert id, disposition, decisions)`` for many alerts in one transaction."""
        when = self._clock() if at is None else at
        items = [
            (disposition, _encode("decisions", list(decisions)), when, int(alert_id))
            for alert_id, disposition, decisions in decided
        ]
        with self._tx(write=True) as conn:
            conn.executemany(
                "UPDATE received_alerts SET stage = 'decided', disposition = ?, decisions = ?, "
                "decided = ? WHERE id = ?",
                items,
            )

    def get_alert(self, alert_id: int) -> dict[str, Any]:
        with self._tx(write=False) as conn:
            row = conn.execute(
                "SELECT * FROM received_alerts WHERE id = ?", (int(alert_id),)
            ).fetchone()
        if row is None:
            raise NotFound(
                f"no alert with id {alert_id} in {self.path}",
                hint="list the recent alerts with GET /v1/alerts",
            )
        return _decode(row)

    def list_alerts(
        self,
        *,
        limit: int = 50,
        fingerprint: str | None = None,
        disposition: str | None = None,
        status: str | None = None,
    ) -> list[dict[str, Any]]:
        """The newest alerts first, optionally filtered."""
        clauses, values = [], []
        for column, value in (
            ("fingerprint", fingerprint),
            ("disposition", disposition),
            ("status", status),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                values.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._tx(write=False) as conn:
            rows = conn.execute(
                f"SELECT * FROM received_alerts {where} ORDER BY id DESC LIMIT ?",
                [*values, int(limit)],
            ).fetchall()
        return [_decode(r) for r in rows]

    # ------------------------------------------------- trigger starts and budget

    def record_trigger_start(
        self,
        run_id: str,
        *,
        runbook: str,
        at: float,
        route: str | None = None,
        fingerprint: str | None = None,
        alert_id: int | None = None,
        hosts: Iterable[str] = (),
    ) -> None:
        """Remember that an alert route started ``run_id`` (rate limits count these),
        and the hosts it touches (its budget), in one transaction."""
        with self._tx(write=True) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO trigger_starts "
                "(run_id, runbook, route, fingerprint, alert_id, at) VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, runbook, route, fingerprint, alert_id, float(at)),
            )
            conn.executemany(
                "INSERT OR IGNORE INTO budget_hosts (run_id, runbook, host, at) "
                "VALUES (?, ?, ?, ?)",
                [(run_id, runbook, host, float(at)) for host in sorted(set(hosts))],
            )

    def count_trigger_starts(self, since: float, *, route: str | None = None) -> int:
        """Runs started by alerts since ``since`` (of one route, or all of them)."""
        sql, values = "SELECT COUNT(*) FROM trigger_starts WHERE at >= ?", [float(since)]
        if route is not None:
            sql += " AND route = ?"
            values.append(route)
        with self._tx(write=False) as conn:
            return int(conn.execute(sql, values).fetchone()[0])

    def trigger_runs(self, fingerprint: str, runbook: str | None = None) -> list[dict[str, Any]]:
        """Runs an alert with ``fingerprint`` started, newest first, with their status."""
        sql = (
            "SELECT t.run_id, t.runbook, t.route, t.alert_id, t.at, r.status, r.finished, "
            "r.state, r.state_rows FROM trigger_starts AS t LEFT JOIN runs AS r "
            "ON r.id = t.run_id WHERE t.fingerprint = ?"
        )
        values: list[Any] = [fingerprint]
        if runbook is not None:
            sql += " AND t.runbook = ?"
            values.append(runbook)
        with self._tx(write=False) as conn:
            rows = conn.execute(sql + " ORDER BY t.at DESC", values).fetchall()
            return _runs_out(conn, rows, key="run_id")

    def trigger_of_run(self, run_id: str) -> dict[str, Any] | None:
        with self._tx(write=False) as conn:
            row = conn.execute(
                "SELECT * FROM trigger_starts WHERE run_id = ?", (run_id,)
            ).fetchone()
        return None if row is None else _decode(row)

    def record_budget_hosts(
        self, run_id: str, runbook: str, hosts: Iterable[str], *, at: float
    ) -> None:
        """The hosts ``run_id`` touches, counted against its runbook's budget."""
        rows = [(run_id, runbook, host, float(at)) for host in sorted(set(hosts))]
        with self._tx(write=True) as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO budget_hosts (run_id, runbook, host, at) "
                "VALUES (?, ?, ?, ?)",
                rows,
            )

    def budget_hosts(self, runbook: str, since: float) -> dict[str, set[str]]:
        """Recorded hosts of the runs of ``runbook`` since ``since``, by run id."""
        with self._tx(write=False) as conn:
            rows = conn.execute(
                "SELECT run_id, host FROM budget_hosts WHERE runbook = ? AND at >= ?",
                (runbook, float(since)),
            ).fetchall()
        found: dict[str, set[str]] = {}
        for row in rows:
            found.setdefault(row[0], set()).add(row[1])
        return found

    def runs_since(self, runbook: str, since: float) -> list[dict[str, Any]]:
        """Runs of ``runbook`` created since ``since`` (any trigger), oldest first."""
        with self._tx(write=False) as conn:
            rows = conn.execute(
                "SELECT * FROM runs WHERE runbook = ? AND created >= ? ORDER BY created, rowid",
                (runbook, float(since)),
            ).fetchall()
            return _runs_out(conn, rows)

    def heartbeat(self, name: str, info: Mapping[str, Any] | None = None) -> float:
        """Rewrite one small row: proves the store takes writes (readiness checks)."""
        now = self._clock()
        with self._tx(write=True) as conn:
            conn.execute(
                "INSERT INTO heartbeats (name, at, info) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET at = excluded.at, info = excluded.info",
                (name, now, _encode("info", dict(info or {}))),
            )
        return now
