"""SqliteStore shared by real processes: lock contention, visibility, crashes, migrations."""

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

from executor.store import SCHEMA_VERSION, SqliteStore

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CTX = multiprocessing.get_context("fork")  # cheap: no re-import per worker


@pytest.fixture
def popen() -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    """Run a Python snippet in its own interpreter; killed at teardown if still running."""
    children: list[subprocess.Popen[str]] = []

    def _popen(code: str) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        children.append(child)
        return child

    yield _popen
    for child in children:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=10)


def _contend(path: str, worker: int, barrier, current, peak, wins) -> None:  # type: ignore[no-untyped-def]
    """Try 50 times to take one of 2 slots, hold it briefly, release it."""
    store = SqliteStore(Path(path))
    barrier.wait(timeout=30)
    for attempt in range(50):
        run_id = f"w{worker}-{attempt}"
        if not store.acquire_lock("web1", run_id, 2):
            continue
        with current.get_lock():
            current.value += 1
            peak.value = max(peak.value, current.value, len(store.holders("web1")))
        with wins.get_lock():
            wins.value += 1
        time.sleep(0.002)
        with current.get_lock():
            current.value -= 1
        store.release_lock("web1", run_id)
    store.close()


def test_lock_limit_never_exceeded_by_eight_processes(
    tmp_path: Path, start: Callable[..., BaseProcess]
) -> None:
    path = tmp_path / "state.db"
    SqliteStore(path).close()
    barrier = CTX.Barrier(8)
    current, peak, wins = CTX.Value("i", 0), CTX.Value("i", 0), CTX.Value("i", 0)
    workers = [start(_contend, str(path), n, barrier, current, peak, wins) for n in range(8)]
    for process in workers:
        process.join(timeout=120)
    assert [p.exitcode for p in workers] == [0] * 8
    assert peak.value == 2  # contention was real, and the limit held
    assert 0 < wins.value < 400  # some attempts were refused
    with SqliteStore(path) as store:
        assert store.holders("web1") == []


def _open_and_write(path: str, worker: int, barrier) -> None:  # type: ignore[no-untyped-def]
    barrier.wait(timeout=30)
    with SqliteStore(Path(path)) as store:
        store.create_run({"id": f"run-{worker}"})


def test_processes_racing_to_create_the_database_migrate_it_once(
    tmp_path: Path, start: Callable[..., BaseProcess]
) -> None:
    path = tmp_path / "fresh" / "state.db"
    barrier = CTX.Barrier(6)
    workers = [start(_open_and_write, str(path), n, barrier) for n in range(6)]
    for process in workers:
        process.join(timeout=60)
    assert [p.exitcode for p in workers] == [0] * 6
    with SqliteStore(path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.journal_mode() == "wal"
        assert len(store.list_runs()) == 6


def test_killswitch_engaged_elsewhere_is_seen_within_a_second(
    tmp_path: Path, popen: Callable[[str], subprocess.Popen[str]]
) -> None:
    path = tmp_path / "state.db"
    engine = SqliteStore(path)  # a running engine: long-lived connection
    assert engine.killswitch("disk-pressure") is None
    cli = popen(
        "import time; from executor.store import SqliteStore\n"
        f"s = SqliteStore({str(path)!r})\n"
        "s.engage_killswitch('*', reason='stop', actor='cli', at=time.time())\n"
        "print(time.time())\n"
    )
    out, err = cli.communicate(timeout=30)
    assert cli.returncode == 0, err
    engaged_at = float(out)
    deadline = time.monotonic() + 1.0
    while (switch := engine.killswitch("disk-pressure")) is None:
        assert time.monotonic() < deadline, "kill-switch not visible within 1 s"
        time.sleep(0.01)
    assert time.time() - engaged_at < 1.0
    assert (switch["scope"], switch["actor"]) == ("*", "cli")
    engine.close()


def test_runs_and_approvals_written_by_one_process_are_read_by_another(
    tmp_path: Path, popen: Callable[[str], subprocess.Popen[str]]
) -> None:
    path = tmp_path / "state.db"
    with SqliteStore(path) as engine:
        engine.create_run({"id": "r1", "status": "waiting", "inputs": {"host": "web1"}})
        cli = popen(
            "import json; from executor.store import SqliteStore\n"
            f"s = SqliteStore({str(path)!r})\n"
            "run = s.get_run('r1')\n"
            "s.add_approval('r1', 'approve', {'approver': 'carol', 'decision': 'approve'})\n"
            "s.request_kill('r1', 'dave', 'changed my mind')\n"
            "print(json.dumps(run['inputs']))\n"
        )
        out, err = cli.communicate(timeout=30)
        assert cli.returncode == 0, err
        assert json.loads(out) == {"host": "web1"}
        assert [a["approver"] for a in engine.get_approvals("r1", "approve")] == ["carol"]
        assert engine.get_run("r1")["kill_requested"] is True


def test_a_writer_killed_mid_transaction_does_not_wedge_the_store(
    tmp_path: Path, popen: Callable[[str], subprocess.Popen[str]]
) -> None:
    path = tmp_path / "state.db"
    with SqliteStore(path, busy_timeout=10) as store:
        store.create_run({"id": "r1"})
        holder = popen(
            "import sqlite3, sys, time\n"
            f"c = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE')\n"
            "c.execute(\"UPDATE runs SET status = 'half-written' WHERE id = 'r1'\")\n"
            "print('holding', flush=True)\n"
            "time.sleep(60)\n"
        )
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        began = time.monotonic()
        assert store.acquire_lock("k", "r1", 1)
        assert time.monotonic() - began < 2
        assert store.get_run("r1")["status"] == "pending"  # the dead transaction rolled back
