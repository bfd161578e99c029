"""JsonlAudit and verify in one process: chain, masking, tamper detection, fail-closed."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from executor import audit as audit_module
from executor.audit import (
    GENESIS,
    AuditCorrupt,
    JsonlAudit,
    canonical,
    format_ts,
    head_path_for,
    iter_records,
    record_hash,
    verify,
)
from executor.errors import AuditWriteError
from executor.model import StepStatus
from executor.ports import CancelToken, IssuedCredential

SECRET = "s3cr3t-T0ken"


class FixedClock:
    """A ``Clock`` whose wall time the test sets."""

    def __init__(self, now: float) -> None:
        self.wall = now

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.wall

    def sleep(self, seconds: float, cancel: CancelToken | None = None) -> bool:
        self.wall += seconds
        return False


def mask(text: str) -> str:
    return text.replace(SECRET, "***")


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


def write_records(path: Path, count: int, **kwargs: object) -> JsonlAudit:
    sink = JsonlAudit(path, mask=mask, **kwargs)  # type: ignore[arg-type]
    for i in range(1, count + 1):
        sink.append(
            "step.outcome",
            run_id=f"run-{i % 2}",
            actor="alice",
            runbook="disk-pressure@1.3.0",
            sha256="ab" * 32,
            step=f"s{i}",
            data={"i": i, "rc": 0},
        )
    return sink


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def rewrite(path: Path, new_lines: list[bytes]) -> None:
    path.write_bytes(b"".join(new_lines))


# ------------------------------------------------------------------- record format


def test_records_form_a_chain_from_genesis(log: Path) -> None:
    sink = write_records(log, 3)
    records = sink.records()
    assert [r.seq for r in records] == [1, 2, 3]
    assert records[0].prev == GENESIS
    assert records[1].prev == records[0].hash and records[2].prev == records[1].hash
    for record, raw in zip(records, lines(log), strict=True):
        parsed = json.loads(raw)
        body = {k: v for k, v in parsed.items() if k != "hash"}
        assert parsed["hash"] == hashlib.sha256(canonical(body)).hexdigest() == record.hash
        assert raw == canonical(parsed) + b"\n"  # the line is itself canonical
    assert records[0].runbook == "disk-pressure@1.3.0" and records[0].sha256 == "ab" * 32
    assert json.loads(head_path_for(log).read_text()) == {"seq": 3, "hash": records[2].hash}


def test_append_returns_what_was_written(log: Path) -> None:
    sink = JsonlAudit(log, clock=FixedClock(0.25))
    record = sink.append("run.requested", run_id="r1", step=None, data={"k": [1, 2]})
    assert sink.records() == [record]
    assert record.data == {"k": [1, 2]} and record.step is None and record.actor is None


def test_timestamps_are_utc_with_microseconds_whatever_the_local_zone(
    log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "Pacific/Auckland")
    time.tzset()
    try:
        sink = JsonlAudit(log, clock=FixedClock(1700000000.123456))
        record = sink.append("run.started")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert record.ts == "2023-11-14T22:13:20.123456Z"
    assert format_ts(0) == "1970-01-01T00:00:00.000000Z"


def test_default_clock_is_the_wall_clock(log: Path) -> None:
    before = time.time()
    record = JsonlAudit(log).append("run.started")
    stamp = datetime.strptime(record.ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert 0 <= stamp.timestamp() - before < 5


def test_event_name_is_required(log: Path) -> None:
    with pytest.raises(ValueError, match="event"):
        JsonlAudit(log).append("")
    assert not log.exists()


# ------------------------------------------------------------------------ masking


def test_secrets_are_masked_everywhere_in_data_and_actor(log: Path) -> None:
    sink = JsonlAudit(log, mask=mask)
    record = sink.append(
        "step.intent",
        actor=f"alice via {SECRET}",
        data={
            "command": f"curl -H 'X-Token: {SECRET}' http://x",
            "nested": {"deeper": [f"a{SECRET}b", {SECRET: "key is secret"}], "n": 3},
            "tuple": (SECRET, 1.5),
            "set": {SECRET},
            "bytes": SECRET.encode(),
            "path": Path(f"/tmp/{SECRET}"),
            "status": StepStatus.SUCCEEDED,
            "flags": [True, None],
        },
    )
    stored = log.read_bytes() + head_path_for(log).read_bytes()
    assert SECRET.encode() not in stored
    assert record.actor == "alice via ***"
    data = record.data
    assert data["command"] == "curl -H 'X-Token: ***' http://x"
    assert data["nested"] == {"deeper": ["a***b", {"***": "key is secret"}], "n": 3}
    assert data["tuple"] == ["***", 1.5] and data["set"] == ["***"]
    assert data["bytes"] == "***" and data["path"] == "/tmp/***"
    assert data["status"] == "succeeded" and data["flags"] == [True, None]
    assert verify(log).ok  # the hash covers the masked form


def test_objects_that_could_carry_secrets_are_refused_not_stringified(log: Path) -> None:
    credential = IssuedCredential(
        name="ops_ssh", kind="ssh", public={"serial": "1"}, material=SECRET
    )
    with pytest.raises(TypeError, match=r"data\.cred.*IssuedCredential"):
        JsonlAudit(log).append("credential.issued", data={"cred": credential})
    assert not log.exists()


def test_non_finite_floats_and_unencodable_text_still_make_valid_records(log: Path) -> None:
    sink = JsonlAudit(log)
    record = sink.append("x", data={"nan": float("nan"), "odd": "bad \udc80 surrogate"})
    assert record.data["nan"] == "nan"
    assert "\\udc80" in record.data["odd"]
    assert verify(log).ok


def test_line_separators_inside_strings_do_not_split_records(log: Path) -> None:
    sink = JsonlAudit(log)
    sink.append("x", data={"out": "a\u2028b\u2029c\x1cd\re\nf"})
    sink.append("y")
    assert [r.event for r in sink.records()] == ["x", "y"]
    assert verify(log).count == 2


# ------------------------------------------------------------------------ reading


def test_records_filter_by_run_and_stream(log: Path) -> None:
    sink = write_records(log, 5)
    assert [r.seq for r in sink.records("run-1")] == [1, 3, 5]
    assert [r.seq for r in sink.records("run-0")] == [2, 4]
    assert sink.records("nope") == []
    stream = sink.iter_records()
    assert next(stream).seq == 1  # lazily read


def test_reading_a_missing_log_gives_nothing(log: Path) -> None:
    assert JsonlAudit(log).records() == []
    assert list(iter_records(log)) == []


def test_reading_skips_an_incomplete_last_line_and_names_a_garbled_one(log: Path) -> None:
    write_records(log, 3)
    whole = lines(log)
    rewrite(log, [*whole[:2], whole[2][:20]])
    assert [r.seq for r in iter_records(log)] == [1, 2]
    rewrite(log, [whole[0], b"{not json\n", whole[2]])
    with pytest.raises(AuditCorrupt, match="line 2 is not an audit record") as caught:
        list(iter_records(log))
    assert "audit verify" in str(caught.value)


# ------------------------------------------------------------------------- verify


def test_intact_log_verifies(log: Path) -> None:
    sink = write_records(log, 10)
    report = verify(log)
    assert report.ok and report.count == 10 and report.reason is None
    assert report.first_bad_seq is None and report.first_bad_line is None
    assert report.last_hash == sink.records()[-1].hash
    assert str(report) == "ok: 10 record(s), chain intact"
    assert sink.verify() == report


def test_missing_or_empty_log_is_empty_and_intact(log: Path) -> None:
    assert verify(log) == verify(log, head=False)
    assert verify(log).ok and verify(log).count == 0
    log.touch()
    assert verify(log).ok and verify(log).count == 0


def test_edited_middle_record_is_named(log: Path) -> None:
    write_records(log, 10)
    whole = lines(log)
    record = json.loads(whole[6])
    record["data"]["rc"] = 1  # someone hides a failure
    whole[6] = canonical(record) + b"\n"
    rewrite(log, whole)
    report = verify(log)
    assert not report.ok
    assert (report.first_bad_line, report.first_bad_seq, report.count) == (7, 7, 6)
    assert report.reason == "line 7 (seq 7): hash does not match its content: the record was edited"
    assert str(report).startswith("TAMPERED OR DAMAGED: line 7")


@pytest.mark.parametrize("field", ["actor", "ts", "event", "step", "run_id", "sha256"])
def test_any_edited_field_is_caught(log: Path, field: str) -> None:
    write_records(log, 4)
    whole = lines(log)
    record = json.loads(whole[1])
    record[field] = "mallory"
    whole[1] = canonical(record) + b"\n"
    rewrite(log, whole)
    report = verify(log)
    assert (report.ok, report.first_bad_line) == (False, 2)
    assert "the record was edited" in (report.reason or "")


def test_deleted_line_is_named(log: Path) -> None:
    write_records(log, 8)
    whole = lines(log)
    del whole[3]
    rewrite(log, whole)
    report = verify(log)
    assert (report.ok, report.first_bad_line, report.first_bad_seq) == (False, 4, 5)
    assert "expected seq 4" in (report.reason or "") and "deleted" in (report.reason or "")


def test_deleted_first_line_is_named(log: Path) -> None:
    write_records(log, 3)
    rewrite(log, lines(log)[1:])
    report = verify(log)
    assert (report.ok, report.first_bad_line, report.first_bad_seq) == (False, 1, 2)


def test_swapped_lines_are_named(log: Path) -> None:
    write_records(log, 8)
    whole = lines(log)
    whole[2], whole[5] = whole[5], whole[2]
    rewrite(log, whole)
    report = verify(log)
    assert (report.ok, report.first_bad_line, report.first_bad_seq) == (False, 3, 6)
    assert "reordered" in (report.reason or "")


def test_duplicated_line_is_named(log: Path) -> None:
    write_records(log, 4)
    whole = lines(log)
    rewrite(log, [*whole[:3], whole[1], whole[3]])
    report = verify(log)
    assert (report.ok, report.first_bad_line, report.first_bad_seq) == (False, 4, 2)
    assert "duplicated" in (report.reason or "")


def test_file_truncated_mid_line_is_named(log: Path) -> None:
    write_records(log, 5)
    data = log.read_bytes()
    log.write_bytes(data[: len(data) - 40])
    report = verify(log)
    assert (report.ok, report.first_bad_line, report.count) == (False, 5, 4)
    assert "incomplete record" in (report.reason or "")


def test_garbled_line_is_named(log: Path) -> None:
    write_records(log, 5)
    whole = lines(log)
    whole[2] = whole[2][:30] + b"\x00\xff garbage" + whole[2][40:]
    rewrite(log, whole)
    report = verify(log)
    assert (report.ok, report.first_bad_line, report.first_bad_seq) == (False, 3, None)
    assert report.reason == ("line 3: not valid JSON: the line was garbled or edited by hand")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: r.pop("prev"), "missing prev"),
        (lambda r: r.update(note="x"), "unexpected note"),
        (lambda r: r.update(seq="3"), "wrong type"),
    ],
)
def test_records_with_the_wrong_shape_are_named(
    log: Path, change: Callable[[dict], object], expected: str
) -> None:
    write_records(log, 4)
    whole = lines(log)
    record = json.loads(whole[2])
    change(record)
    whole[2] = canonical(record) + b"\n"
    rewrite(log, whole)
    report = verify(log)
    assert (report.ok, report.first_bad_line) == (False, 3)
    assert expected in (report.reason or "")


def test_not_an_object_line_is_named(log: Path) -> None:
    write_records(log, 2)
    rewrite(log, [lines(log)[0], b"[1, 2]\n"])
    report = verify(log)
    assert (report.ok, report.first_bad_line) == (False, 2)


def test_forged_record_with_recomputed_hash_breaks_the_next_link(log: Path) -> None:
    write_records(log, 8)
    whole = lines(log)
    record = json.loads(whole[4])
    record["data"]["rc"] = 0
    record["actor"] = "mallory"
    record["hash"] = record_hash(record)  # the forger recomputes the record's own hash
    whole[4] = canonical(record) + b"\n"
    rewrite(log, whole)
    report = verify(log)
    assert (report.ok, report.first_bad_line, report.first_bad_seq) == (False, 6, 6)
    assert "prev does not match the hash of line 5" in (report.reason or "")


def test_deleted_record_with_renumbered_and_rehashed_successor_is_caught(log: Path) -> None:
    write_records(log, 6)
    whole = lines(log)
    successor = json.loads(whole[3])
    successor["seq"] = 3
    successor["hash"] = record_hash(successor)
    rewrite(log, [*whole[:2], canonical(successor) + b"\n"])
    report = verify(log)
    assert (report.ok, report.first_bad_line, report.first_bad_seq) == (False, 3, 3)
    assert "prev does not match" in (report.reason or "")


def test_forged_first_record_is_caught(log: Path) -> None:
    write_records(log, 2)
    whole = lines(log)
    first = json.loads(whole[0])
    first["prev"] = "f" * 64
    first["hash"] = record_hash(first)
    rewrite(log, [canonical(first) + b"\n", whole[1]])
    report = verify(log)
    assert (report.ok, report.first_bad_line) == (False, 1)
    assert "forged" in (report.reason or "")


def test_nan_in_a_forged_record_is_reported_not_crashed_on(log: Path) -> None:
    write_records(log, 2)
    whole = lines(log)
    whole[1] = whole[1].replace(b'"rc":0', b'"rc":NaN')
    rewrite(log, whole)
    report = verify(log)
    assert (report.ok, report.first_bad_line) == (False, 2)


# ------------------------------------------------------------------ the head file


def test_records_cut_off_the_end_are_counted(log: Path) -> None:
    write_records(log, 9)
    rewrite(log, lines(log)[:6])
    report = verify(log)
    assert not report.ok
    assert (report.count, report.first_bad_seq, report.first_bad_line) == (6, 7, 7)
    assert report.reason.startswith("3 record(s) missing at the end")  # type: ignore[union-attr]
    assert verify(log, head=False).ok  # without the head the cut is invisible


def test_whole_log_emptied_or_deleted_is_caught(log: Path) -> None:
    write_records(log, 3)
    log.write_bytes(b"")
    assert "3 record(s) missing at the end" in (verify(log).reason or "")
    log.unlink()
    assert "the log was deleted" in (verify(log).reason or "")


def test_rewritten_tail_that_passes_the_chain_is_caught_by_the_head(log: Path) -> None:
    write_records(log, 5)
    whole = lines(log)
    last = json.loads(whole[4])
    last["data"]["rc"] = 99
    last["hash"] = record_hash(last)
    rewrite(log, [*whole[:4], canonical(last) + b"\n"])
    report = verify(log)
    assert (report.ok, report.first_bad_seq) == (False, 5)
    assert "differs from the hash in the head file" in (report.reason or "")


def test_missing_or_unreadable_head_is_reported(log: Path) -> None:
    write_records(log, 2)
    head = head_path_for(log)
    head.write_text("{garbage")
    assert "cannot read" in (verify(log).reason or "")
    head.unlink()
    assert "head file" in (verify(log).reason or "") and not verify(log).ok
    assert verify(log, head=False).ok


def test_a_head_lagging_one_record_behind_is_fine(log: Path) -> None:
    """A crash between the log fsync and the head update leaves the head one behind."""
    write_records(log, 3)
    records = JsonlAudit(log).records()
    head_path_for(log).write_text(json.dumps({"seq": 2, "hash": records[1].hash}))
    assert verify(log).ok


# ------------------------------------------------------- appending to a damaged log


def test_append_refuses_to_extend_a_truncated_log(log: Path) -> None:
    write_records(log, 5)
    rewrite(log, lines(log)[:3])
    before = log.read_bytes()
    with pytest.raises(AuditWriteError, match="2 record\\(s\\) were removed from the end"):
        JsonlAudit(log).append("step.intent")
    assert log.read_bytes() == before


def test_append_refuses_an_incomplete_last_line(log: Path) -> None:
    write_records(log, 3)
    data = log.read_bytes()[:-10]
    log.write_bytes(data)
    with pytest.raises(AuditWriteError, match="incomplete record") as caught:
        JsonlAudit(log).append("step.intent")
    assert log.read_bytes() == data
    assert "NOT carried out" in str(caught.value)


def test_append_refuses_an_edited_last_record(log: Path) -> None:
    write_records(log, 3)
    whole = lines(log)
    whole[2] = whole[2].replace(b'"rc":0', b'"rc":7')
    rewrite(log, whole)
    with pytest.raises(AuditWriteError, match="last record is unreadable or was edited"):
        JsonlAudit(log).append("step.intent")


def test_append_refuses_when_the_head_is_garbage(log: Path) -> None:
    write_records(log, 2)
    head_path_for(log).write_text("nonsense")
    with pytest.raises(AuditWriteError, match=r"head file .* is unreadable"):
        JsonlAudit(log).append("x")


def test_cached_tail_notices_an_edit_behind_its_back(log: Path) -> None:
    sink = write_records(log, 3)
    whole = lines(log)
    whole[2] = whole[2].replace(b'"rc":0', b'"rc":7')  # same size: only the bytes differ
    rewrite(log, whole)
    with pytest.raises(AuditWriteError, match="was edited"):
        sink.append("x")


def test_two_sinks_on_one_file_keep_one_chain(log: Path) -> None:
    first, second = JsonlAudit(log), JsonlAudit(log)
    for i in range(6):
        (first if i % 3 else second).append("x", data={"i": i})
    report = verify(log)
    assert report.ok and report.count == 6
    assert [r.data["i"] for r in first.records()] == list(range(6))


def test_threads_keep_one_chain(log: Path) -> None:
    sink = JsonlAudit(log)
    other = JsonlAudit(log)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(25):
                (sink if n % 2 else other).append("t", actor=f"t{n}", data={"i": i})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    report = verify(log)
    assert report.ok and report.count == 100
    for n in range(4):
        assert [r.data["i"] for r in sink.records() if r.actor == f"t{n}"] == list(range(25))


# --------------------------------------------------------------------- fail-closed


def test_a_directory_in_place_of_the_file_fails_closed(log: Path) -> None:
    log.mkdir()
    with pytest.raises(AuditWriteError) as caught:
        JsonlAudit(log).append("step.intent")
    message = str(caught.value)
    assert str(log) in message and "directory" in message and "NOT carried out" in message
    assert list(log.iterdir()) == []


def test_a_parent_that_is_a_file_fails_closed(tmp_path: Path) -> None:
    parent = tmp_path / "home"
    parent.write_text("not a directory")
    with pytest.raises(AuditWriteError, match="not a directory"):
        JsonlAudit(parent / "audit.jsonl").append("step.intent")
    assert parent.read_text() == "not a directory"


def test_a_fifo_is_not_an_audit_file(log: Path) -> None:
    os.mkfifo(log)
    with pytest.raises(AuditWriteError, match="not a regular file"):
        JsonlAudit(log).append("x")


def test_missing_directories_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "audit.jsonl"
    JsonlAudit(path).append("x")
    assert verify(path).ok
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_failing_head_update_removes_the_record_again(log: Path) -> None:
    sink = write_records(log, 2)
    before = log.read_bytes()
    blocker = head_path_for(log).with_name(head_path_for(log).name + ".tmp")
    blocker.mkdir()  # the head cannot be rewritten
    with pytest.raises(AuditWriteError, match=str(log)):
        sink.append("step.intent")
    assert log.read_bytes() == before
    blocker.rmdir()
    sink.append("step.intent")
    assert verify(log).ok and verify(log).count == 3


def test_a_write_cut_off_halfway_leaves_no_partial_line(
    log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel may accept half a line before ENOSPC: the half must go away again."""
    sink = write_records(log, 2)
    before = log.read_bytes()
    real_write = os.write
    calls = {"n": 0}

    def half_then_full(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(audit_module.os, "write", half_then_full)
    with pytest.raises(AuditWriteError) as caught:
        sink.append("step.intent", data={"big": "x" * 500})
    monkeypatch.undo()
    assert "No space left" in str(caught.value) and "disk is full" in str(caught.value)
    assert log.read_bytes() == before
    sink.append("after")
    assert verify(log).ok and verify(log).count == 3


def test_a_failing_fsync_fails_closed(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = write_records(log, 1)
    before = log.read_bytes()
    real_fsync = os.fsync
    calls = {"n": 0}

    def failing_once(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    monkeypatch.setattr(audit_module.os, "fsync", failing_once)
    with pytest.raises(AuditWriteError, match="I/O error"):
        sink.append("x")
    monkeypatch.undo()
    assert log.read_bytes() == before
