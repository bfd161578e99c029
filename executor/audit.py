"""The tamper-evident audit log: hash-chained JSON Lines behind ``AuditSink``.

Each record carries the hash of the one before it, so an edit, a deletion or a
reordering breaks the chain where it happened and ``verify`` names that line.
A sidecar head file (``audit.jsonl.head``) holds the latest seq and hash,
rewritten with every record, so cutting records off the *end* is caught too.
Only the log is fsynced: the head is replaced (tmp + rename) before ``append``
returns but not synced on its own, since the next record's fsync commits it
with the filesystem journal (ext4: rename-over flushes the new file's data
first). After a power cut it lags the log by at most the last record, as it
always could; if the cut left it empty or zero-filled (a torn head) the next
append treats it as missing and writes it afresh. This halves the syncs per
record.
It defends against accidents and careless tampering; a writer who can rewrite
both files and every hash after an edit is only caught by an external copy of
the head (``VerifyReport.last_hash`` is what to anchor elsewhere).

Writing is fail-closed, like Vault's audit devices (DESIGN.md section 3):
``append`` returns only once the line is on disk (``fsync``), and if anything
stops it the file is cut back to its previous size, so no partial line stays,
and ``AuditWriteError`` tells the caller not to act.

Several threads and processes append to one file and keep one chain: each
append holds an exclusive ``flock`` on the file while it reads the last
record, writes and syncs. The last record is cached and re-validated by file
identity, size and content of the last line, so an append reads a few hundred
bytes, not the file.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn

from executor.errors import AuditWriteError, RunbookError
from executor.ports import (
    AUDIT_GENESIS,
    AuditRecord,
    Clock,
    audit_canonical,
    audit_record_hash,
    audit_timestamp,
)

GENESIS = AUDIT_GENESIS

HEAD_SUFFIX = ".head"
RECORD_FIELDS = frozenset(AuditRecord.__dataclass_fields__)
_TAIL_CHUNK = 64 * 1024
_OPEN_RETRIES = 5


class AuditCorrupt(RunbookError):
    """The audit file cannot be read back as records (see ``verify`` for where)."""

    exit_code = 5


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify`` found. ``reason`` names the first bad record when not ``ok``.

    ``count`` is the number of records that checked out before the first bad
    one (all of them when ``ok``); ``last_hash`` is the hash of the last good
    record, worth copying somewhere the audit file's writer cannot reach.
    """

    ok: bool
    count: int
    first_bad_seq: int | None = None
    first_bad_line: int | None = None
    reason: str | None = None
    last_hash: str | None = None

    def __str__(self) -> str:
        if self.ok:
            return f"ok: {self.count} record(s), chain intact"
        return f"TAMPERED OR DAMAGED: {self.reason}"


canonical = audit_canonical
record_hash = audit_record_hash
format_ts = audit_timestamp


def head_path_for(path: Path) -> Path:
    return path.with_name(path.name + HEAD_SUFFIX)


def _plain(text: str) -> str:
    """A plain ``str`` that encodes as UTF-8 (lone surrogates become escapes)."""
    text = str.__str__(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _clean(value: Any, mask: Callable[[str], str], where: str) -> Any:
    """JSON-ready copy of ``value`` with every string (keys too) passed through ``mask``.

    Unknown objects are refused rather than ``str()``-ed: the repr of a
    credential object would carry its secret material into the log.
    """
    if isinstance(value, str):
        return mask(_plain(value))
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Enum):
        return _clean(value.value, mask, where)
    if isinstance(value, Mapping):
        return {mask(_plain(str(k))): _clean(v, mask, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v, mask, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, set | frozenset):
        return sorted((_clean(v, mask, where) for v in value), key=str)
    if isinstance(value, bytes):
        return mask(value.decode("utf-8", "backslashreplace"))
    if isinstance(value, os.PathLike):
        return mask(_plain(os.fspath(value)))
    raise TypeError(
        f"audit data at {where} is a {type(value).__name__}; pass plain JSON-like values "
        "(never a credential object: its secret would be logged)"
    )


@dataclass(frozen=True)
class _Tail:
    """The last record of the file as this process last saw it."""

    dev: int
    ino: int
    size: int
    seq: int
    hash: str
    line: bytes


def _write_error(path: Path, exc: OSError, *, cleaned: bool) -> AuditWriteError:
    """The OSError as an ``AuditWriteError`` that says which file and what to do."""
    advice = {
        errno.ENOSPC: "the disk is full: free space on it",
        errno.EDQUOT: "the disk quota is exhausted: free space or raise the quota",
        errno.EFBIG: "the file size limit was reached (ulimit -f or the filesystem): "
        "raise the limit or move the audit log",
        errno.EACCES: "permission denied: give this user write access to the file and "
        "its directory",
        errno.EPERM: "the operation is not permitted (an immutable or append-only "
        "attribute?): check `lsattr` and the permissions",
        errno.EISDIR: "the path is a directory, not the audit file: move the directory aside",
        errno.ENOTDIR: "a parent of the path is not a directory: fix the audit path",
        errno.EROFS: "the filesystem is read-only: remount it read-write or point "
        "RUNBOOK_HOME at a writable disk",
        errno.EIO: "the disk reported an I/O error: check it (dmesg) before going on",
    }.get(exc.errno or 0, "fix the cause")
    tail = "" if cleaned else "; a partial record may remain: run `runbook audit verify`"
    return AuditWriteError(
        f"cannot write the audit record to {path}: {exc.strerror or exc}{tail}",
        hint=f"{advice}, then resume the run; the action was NOT carried out",
    )


def _tamper_error(path: Path, what: str) -> AuditWriteError:
    return AuditWriteError(
        f"refusing to append to the audit log {path}: {what}",
        hint="run `runbook audit verify`, find out what happened and restore the log from a "
        "backup; nothing was appended and the action was NOT carried out",
    )


def _read_last_line(fd: int, size: int) -> bytes:
    """The last line of a non-empty file (with its newline), read from the end."""
    end = size
    buffer = b""
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        buffer = os.pread(fd, end - start, start) + buffer
        cut = buffer.rfind(b"\n", 0, len(buffer) - 1)
        if cut != -1:
            return buffer[cut + 1 :]
        end = start
    return buffer


class _TornHead(ValueError):
    """The head file is empty or zero-filled: what a crash can leave of an unsynced write."""


def _read_head(head: Path) -> tuple[int, str] | None:
    """(seq, hash) from the head file, None if there is none; ValueError if unreadable."""
    try:
        raw = head.read_bytes()
    except FileNotFoundError:
        return None
    if not raw.strip(b"\0 \n"):
        raise _TornHead("it is empty or zero-filled, as a crash while writing it leaves it")
    data = json.loads(raw)
    seq, digest = data["seq"], data["hash"]
    if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(digest, str):
        raise ValueError("seq must be an integer and hash a string")
    return seq, digest


class JsonlAudit:
    """The ``AuditSink`` port on one JSON Lines file, shared by threads and processes.

    ``mask`` hides secrets in ``actor`` and in every string of ``data`` (keys
    and values, recursively) before anything is hashed or written. ``clock``
    (a ``Clock``) stamps records; the wall clock when omitted. ``head=False``
    skips the head file (then truncation at the end goes unnoticed).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        mask: Callable[[str], str] | None = None,
        clock: Clock | None = None,
        head: bool = True,
    ) -> None:
        self.path = Path(path)
        self.head_path: Path | None = head_path_for(self.path) if head else None
        self._mask: Callable[[str], str] = mask or (lambda text: text)
        self._now: Callable[[], float] = clock.now if clock is not None else time.time
        self._lock = threading.Lock()
        self._tail: _Tail | None = None

    # -------------------------------------------------------------------- append

    def append(
        self,
        event: str,
        *,
        run_id: str | None = None,
        actor: str | None = None,
        runbook: str | None = None,
        sha256: str | None = None,
        step: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        """Write one record durably and return it; ``AuditWriteError`` if impossible."""
        if not event:
            raise ValueError("an audit record needs an event name")
        body: dict[str, Any] = {
            "run_id": run_id,
            "actor": None if actor is None else self._mask(_plain(actor)),
            "runbook": runbook,
            "sha256": sha256,
            "event": event,
            "step": step,
            "data": _clean(data or {}, self._mask, "data"),
        }
        with self._lock:
            fd = self._open_locked()
            try:
                return self._append_locked(fd, body)
            except OSError as exc:  # reading the tail or head failed: nothing was written
                self._tail = None
                raise _write_error(self.path, exc, cleaned=True) from exc
            finally:
                os.close(fd)  # also releases the flock

    def _open_locked(self) -> int:
        """The audit file, open for appending and exclusively flocked.

        If the path was replaced between open and lock (rotated, moved), the
        lock is on the wrong inode: open again, so every writer locks the
        file that the path names.
        """
        for _ in range(_OPEN_RETRIES):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                mine, named = os.fstat(fd), os.stat(self.path)
            except OSError as exc:
                os.close(fd)
                if exc.errno == errno.ENOENT:
                    continue
                raise _write_error(self.path, exc, cleaned=True) from exc
            if (mine.st_dev, mine.st_ino) == (named.st_dev, named.st_ino):
                return fd
            os.close(fd)
        raise AuditWriteError(
            f"the audit file {self.path} keeps being replaced while opening it",
            hint="stop whatever renames or deletes it (log rotation?), then resume the run",
        )

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o600)
        except FileNotFoundError:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, flags, 0o600)
            except OSError as exc:
                raise _write_error(self.path, exc, cleaned=True) from exc
        except OSError as exc:
            raise _write_error(self.path, exc, cleaned=True) from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise AuditWriteError(
                f"the audit path {self.path} is not a regular file",
                hint="point the audit log at a regular file; the action was NOT carried out",
            )
        return fd

    def _append_locked(self, fd: int, body: dict[str, Any]) -> AuditRecord:
        info = os.fstat(fd)
        tail = self._current_tail(fd, info)
        record = {
            **body,
            "seq": (tail.seq if tail else 0) + 1,
            "ts": format_ts(self._now()),
            "prev": tail.hash if tail else GENESIS,
        }
        record["hash"] = record_hash(record)
        line = canonical(record) + b"\n"
        self._write_durably(fd, line, info.st_size, (record["seq"], record["hash"]))
        self._tail = _Tail(
            info.st_dev, info.st_ino, info.st_size + len(line), record["seq"], record["hash"], line
        )
        return AuditRecord(**record)

    def _write_durably(self, fd: int, line: bytes, size: int, head: tuple[int, str]) -> None:
        """Append ``line``, fsync, then move the head; on any failure cut back to ``size``."""
        try:
            written = 0
            while written < len(line):
                count = os.write(fd, line[written:])
                if count == 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                written += count
            os.fsync(fd)
            if self.head_path is not None:
                self._write_head(*head)
        except OSError as exc:
            cleaned = self._cut_back(fd, size)
            self._tail = None
            raise _write_error(self.path, exc, cleaned=cleaned) from exc

    def _write_head(self, seq: int, digest: str) -> None:
        """Replace the head atomically, after the log's fsync: it may lag the log after a
        crash, never lead it. Not synced itself (see the module docstring)."""
        assert self.head_path is not None
        payload = json.dumps({"seq": seq, "hash": digest}).encode() + b"\n"
        temporary = self.head_path.with_name(self.head_path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            written = os.write(fd, payload)
        finally:
            os.close(fd)
        if written != len(payload):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os.replace(temporary, self.head_path)

    @staticmethod
    def _cut_back(fd: int, size: int) -> bool:
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError:
            return False
        return True

    def _current_tail(self, fd: int, info: os.stat_result) -> _Tail | None:
        """The last record, from the cache when the file is as this process left it."""
        cached = self._tail
        if (
            cached is not None
            and (cached.dev, cached.ino, cached.size) == (info.st_dev, info.st_ino, info.st_size)
            and self._tail_unchanged(fd, cached)
        ):
            return cached
        tail = self._read_tail(fd, info)
        self._check_head(tail)
        return tail

    @staticmethod
    def _tail_unchanged(fd: int, cached: _Tail) -> bool:
        length = min(len(cached.line), _TAIL_CHUNK)
        return os.pread(fd, length, cached.size - length) == cached.line[-length:]

    def _read_tail(self, fd: int, info: os.stat_result) -> _Tail | None:
        if info.st_size == 0:
            return None
        line = _read_last_line(fd, info.st_size)
        if not line.endswith(b"\n"):
            return self._refuse(
                f"it ends with an incomplete record (no newline after byte "
                f"{info.st_size - len(line)}): a write was cut off or the file was truncated"
            )
        try:
            record = json.loads(line)
            seq, digest = record["seq"], record["hash"]
            intact = record_hash(record) == digest and isinstance(seq, int)
        except (ValueError, TypeError, KeyError):
            intact = False
        if not intact:
            return self._refuse("its last record is unreadable or was edited")
        return _Tail(info.st_dev, info.st_ino, info.st_size, seq, digest, line)

    def _check_head(self, tail: _Tail | None) -> None:
        """Refuse to extend a log that lost records at its end: the head says so."""
        if self.head_path is None:
            return
        try:
            head = _read_head(self.head_path)
        except _TornHead:
            head = None  # like a missing head: this append writes it afresh
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._refuse(f"its head file {self.head_path} is unreadable ({exc})")
        if head is None:
            return
        seq, digest = tail.seq if tail else 0, tail.hash if tail else GENESIS
        if head[0] > seq:
            self._refuse(
                f"it ends at seq {seq} but its head file records seq {head[0]}: "
                f"{head[0] - seq} record(s) were removed from the end"
            )
        if head[0] == seq and head[1] != digest:
            self._refuse(f"its last record (seq {seq}) differs from the one in its head file")

    def _refuse(self, what: str) -> NoReturn:
        raise _tamper_error(self.path, what)

    # ---------------------------------------------------------------------- read

    def records(self, run_id: str | None = None) -> list[AuditRecord]:
        """Every record (of one run), oldest first; use ``iter_records`` to stream."""
        return list(iter_records(self.path, run_id=run_id))

    def iter_records(self, run_id: str | None = None) -> Iterator[AuditRecord]:
        return iter_records(self.path, run_id=run_id)

    def verify(self) -> VerifyReport:
        return verify(self.path, head=self.head_path is not None)


def iter_records(path: Path | str, *, run_id: str | None = None) -> Iterator[AuditRecord]:
    """Stream records, skipping an incomplete last line (a write in progress).

    Reading does not check the chain (``verify`` does); a line that is not a
    record raises ``AuditCorrupt`` naming it.
    """
    path = Path(path)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise AuditCorrupt(
            f"cannot read the audit log {path}: {exc.strerror}",
            hint="check the path and its permissions",
        ) from exc
    with handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.endswith(b"\n"):
                return
            try:
                data = json.loads(raw)
                record = AuditRecord(**data)
            except (ValueError, TypeError) as exc:
                raise AuditCorrupt(
                    f"{path} line {number} is not an audit record",
                    hint="run `runbook audit verify` to see what is wrong with the log",
                ) from exc
            if run_id is None or record.run_id == run_id:
                yield record


# ---------------------------------------------------------------------- verify


def _parse_line(raw: bytes, number: int) -> tuple[dict[str, Any] | None, str | None]:
    """The record on one line, or the reason it is not one."""
    if not raw.endswith(b"\n"):
        return None, (
            f"line {number}: incomplete record at the end of the file (no newline): "
            "the file was truncated mid-record or a write was cut off"
        )
    try:
        record = json.loads(raw)
    except ValueError:
        return None, f"line {number}: not valid JSON: the line was garbled or edited by hand"
    if not isinstance(record, dict):
        return None, f"line {number}: not an audit record (a JSON object is expected)"
    missing, extra = RECORD_FIELDS - record.keys(), record.keys() - RECORD_FIELDS
    if missing or extra:
        detail = "missing " + ", ".join(sorted(missing)) if missing else ""
        detail += ("; " if missing and extra else "") + (
            "unexpected " + ", ".join(sorted(extra)) if extra else ""
        )
        return None, f"line {number}: not an audit record ({detail}): the record was edited"
    seq = record["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(record["hash"], str):
        return None, f"line {number}: seq or hash has the wrong type: the record was edited"
    return record, None


def _link_problem(record: Mapping[str, Any], number: int, seq: int, prev: str) -> str | None:
    """Why ``record`` (on line ``number``) does not follow seq ``seq - 1`` hashed ``prev``."""
    name = f"line {number} (seq {record['seq']})"
    try:
        digest = record_hash(record)
    except ValueError:  # NaN or Infinity: never written by this module
        digest = None
    if digest != record["hash"]:
        return f"{name}: hash does not match its content: the record was edited"
    if record["seq"] > seq:
        return (
            f"{name}: expected seq {seq}: {record['seq'] - seq} record(s) before it were "
            "deleted, or records were reordered"
        )
    if record["seq"] < seq:
        return f"{name}: expected seq {seq}: records were reordered or a record was duplicated"
    if record["prev"] != prev:
        if number == 1:
            return f"{name}: prev is not {GENESIS[:8]}... (the start of a log): it was forged"
        return (
            f"{name}: prev does not match the hash of line {number - 1}: one of the two was "
            "rewritten and re-hashed, or a record was replaced"
        )
    return None


def _snapshot(path: Path, head: Path | None) -> tuple[int, tuple[int, str] | None]:
    """The log's size and head, read together under a shared lock (no half-written tail)."""
    with path.open("rb") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
        size = os.fstat(handle.fileno()).st_size
        return size, (_read_head(head) if head is not None else None)


def _bounded_lines(path: Path, size: int) -> Iterator[bytes]:
    """The lines of the first ``size`` bytes (what existed when the snapshot was taken)."""
    consumed = 0
    with path.open("rb") as handle:
        for raw in handle:
            if consumed >= size:
                return
            line = raw[: size - consumed]
            consumed += len(line)
            yield line


def _head_problem(
    head: tuple[int, str] | None, count: int, seen: str | None, head_file: Path
) -> VerifyReport | None:
    """Compare the end of a chain that checked out with the head file."""
    if head is None:
        if count == 0:
            return None
        return VerifyReport(
            False, count, None, None,
            f"the head file {head_file} is missing, so records cut off the end would go "
            "unnoticed: it is written with every record (was it deleted?)",
        )  # fmt: skip
    seq, digest = head
    if seq > count:
        return VerifyReport(
            False, count, count + 1, count + 1,
            f"{seq - count} record(s) missing at the end: the head file records seq {seq} "
            f"but the log ends at seq {count}: the log was truncated",
        )  # fmt: skip
    if seq > 0 and seen != digest:
        return VerifyReport(
            False, count, seq, seq,
            f"line {seq} (seq {seq}): differs from the hash in the head file: the log was "
            "rewritten from there on",
        )  # fmt: skip
    return None


def verify(path: Path | str, *, head: bool = True) -> VerifyReport:
    """Check the whole chain (streaming) and, with ``head``, that nothing was cut off the end.

    The head may lag the log by the last record after a crash; it never leads.
    A missing log with no head is an empty, intact log.
    """
    path = Path(path)
    head_file = head_path_for(path)
    try:
        size, anchor = _snapshot(path, head_file if head else None)
    except FileNotFoundError:
        size, anchor = 0, None
        if head and head_file.exists():
            return VerifyReport(False, 0, 1, 1, f"the audit log {path} is missing but its "
                                f"head file {head_file} exists: the log was deleted")  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return VerifyReport(
            False, 0, None, None, f"cannot read the audit log {path} or its head file: {exc}"
        )
    count, prev, seen = 0, GENESIS, None
    for number, raw in enumerate(_bounded_lines(path, size) if size else (), start=1):
        record, reason = _parse_line(raw, number)
        reason = reason or _link_problem(record or {}, number, count + 1, prev)
        if reason:
            seq = record["seq"] if record else None
            return VerifyReport(False, count, seq, number, reason, prev if count else None)
        count, prev = count + 1, record["hash"]  # type: ignore[index]
        if anchor is not None and count == anchor[0]:
            seen = prev
    if head:
        problem = _head_problem(anchor, count, seen, head_file)
        if problem is not None:
            return problem
    return VerifyReport(True, count, last_hash=prev if count else None)
