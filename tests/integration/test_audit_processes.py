"""JsonlAudit with real processes and real failing filesystems.

Root ignores permission bits, so "cannot write" is produced the ways that stop
root too: a file size limit (RLIMIT_FSIZE, as a full quota would), a tmpfs
that is really full (ENOSPC), and a tmpfs remounted read-only (EROFS).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess
from pathlib import Path

import pytest

from executor.audit import JsonlAudit, head_path_for, verify
from executor.errors import AuditWriteError

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CTX = multiprocessing.get_context("fork")  # cheap: no re-import per worker


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount small tmpfs filesystems under tmp_path; unmounted at teardown."""
    mounted: list[Path] = []

    def _mount(options: str) -> Path:
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield _mount
    for point in reversed(mounted):
        subprocess.run(["umount", str(point)], capture_output=True, timeout=30, check=False)


def _append_many(path: str, worker: int, count: int, barrier) -> None:  # type: ignore[no-untyped-def]
    sink = JsonlAudit(Path(path))
    barrier.wait(timeout=30)
    for i in range(count):
        sink.append("step.outcome", run_id=f"run-{worker}", actor=f"p{worker}", data={"i": i})


def test_four_processes_keep_one_chain(tmp_path: Path, start: Callable[..., BaseProcess]) -> None:
    path = tmp_path / "audit.jsonl"
    barrier = CTX.Barrier(4)
    workers = [start(_append_many, str(path), n, 200, barrier) for n in range(4)]
    for process in workers:
        process.join(timeout=120)
    assert [p.exitcode for p in workers] == [0] * 4
    report = verify(path)
    assert report.ok, report.reason
    assert report.count == 800
    records = JsonlAudit(path).records()
    assert [r.seq for r in records] == list(range(1, 801))
    for n in range(4):
        assert [r.data["i"] for r in records if r.actor == f"p{n}"] == list(range(200))
    assert len({r.actor for r in records[:40]}) > 1  # the writers really interleaved
    assert json.loads(head_path_for(path).read_text())["seq"] == 800


def _append_forever(path: str) -> None:
    sink = JsonlAudit(Path(path))
    i = 0
    while True:
        sink.append("spin", actor="victim", data={"i": i, "pad": "x" * 300})
        i += 1


def test_a_writer_killed_at_any_moment_leaves_a_log_others_can_extend(
    tmp_path: Path, start: Callable[..., BaseProcess]
) -> None:
    path = tmp_path / "audit.jsonl"
    survivor = JsonlAudit(path)
    for round_ in range(5):
        victim = start(_append_forever, str(path))
        deadline = time.monotonic() + 10
        while not path.exists() or path.stat().st_size < 2000 * (round_ + 1):
            assert time.monotonic() < deadline and victim.is_alive()
            time.sleep(0.005)
        os.kill(victim.pid, signal.SIGKILL)  # type: ignore[arg-type]
        victim.join(timeout=10)
        survivor.append("after.kill", data={"round": round_})
    report = verify(path)
    assert report.ok, report.reason
    assert [r.data["round"] for r in survivor.records() if r.event == "after.kill"] == [
        0,
        1,
        2,
        3,
        4,
    ]


LIMITED_APPEND = """
import json, os, resource, signal, sys
from executor.audit import JsonlAudit
from executor.errors import AuditWriteError
path = sys.argv[1]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
limit = os.path.getsize(path) + 100
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    JsonlAudit(path).append("step.intent", data={"blob": "x" * 1000})
except AuditWriteError as exc:
    print(json.dumps({"error": str(exc)}))
else:
    print(json.dumps({"error": None}))
"""


def test_file_size_limit_fails_closed_without_a_partial_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonlAudit(path)
    for i in range(3):
        sink.append("before", data={"i": i})
    before, head_before = path.read_bytes(), head_path_for(path).read_bytes()
    done = subprocess.run(
        [sys.executable, "-c", LIMITED_APPEND, str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    error = json.loads(done.stdout)["error"]
    assert error is not None and str(path) in error
    assert "File too large" in error and "file size limit" in error
    assert path.read_bytes() == before  # the 100 bytes that fitted were cut off again
    assert head_path_for(path).read_bytes() == head_before
    sink.append("after")
    assert verify(path).ok and verify(path).count == 4


def test_a_full_disk_fails_closed_and_recovers(tmpfs: Callable[[str], Path]) -> None:
    mount = tmpfs("size=256k,mode=0700")
    path = mount / "audit.jsonl"
    sink = JsonlAudit(path)
    for i in range(3):
        sink.append("before", data={"i": i})
    before = path.read_bytes()
    filler = mount / "filler"
    with filler.open("wb", buffering=0) as handle:
        try:
            while handle.write(b"\0" * 4096):
                pass
        except OSError:
            pass  # ENOSPC: the disk is full now
    with pytest.raises(AuditWriteError) as caught:
        sink.append("step.intent", data={"blob": "y" * 6000})
    message = str(caught.value)
    assert "No space left on device" in message and "disk is full" in message
    assert "NOT carried out" in message
    assert path.read_bytes() == before
    filler.unlink()
    sink.append("after.cleanup")
    assert verify(path).ok and verify(path).count == 4


def test_a_read_only_filesystem_fails_closed(tmpfs: Callable[[str], Path]) -> None:
    mount = tmpfs("size=256k")
    path = mount / "audit.jsonl"
    JsonlAudit(path).append("before")
    before = path.read_bytes()
    remount = subprocess.run(
        ["mount", "-o", "remount,ro", str(mount)], capture_output=True, text=True, timeout=30
    )
    assert remount.returncode == 0, remount.stderr
    with pytest.raises(AuditWriteError) as caught:
        JsonlAudit(path).append("step.intent")
    assert "Read-only file system" in str(caught.value) and "read-write" in str(caught.value)
    assert path.read_bytes() == before
    assert verify(path).ok  # verification only reads
