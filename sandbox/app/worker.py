#!/usr/bin/env python3
"""worker: drains ~/queue/incoming, holding ~/queue/worker.lock while it runs.

The lock holds the worker's pid. A worker that dies without cleaning up (kill
-9, a crash) leaves a stale lock, and a new worker refuses to start over it:
that is the "stuck queue" a runbook has to notice (lock present, pid not
running) and fix (remove the lock, start the worker).

Standard library only, like demoapp.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

HOME = Path(os.environ.get("HOME", "."))
QUEUE = HOME / "queue"
INCOMING = QUEUE / "incoming"
LOCK = QUEUE / "worker.lock"
BATCH = 10
TICK = 0.1


def lock_holder() -> int | None:
    try:
        return int(LOCK.read_text().strip() or "0")
    except (FileNotFoundError, ValueError):
        return None


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (which still answers kill -0)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = next((line.split()[1] for line in status.splitlines() if line.startswith("State:")), "")
    return state not in ("", "Z", "X")


def take_lock() -> bool:
    try:
        fd = os.open(LOCK, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        holder = lock_holder()
        if holder and alive(holder):
            print(f"worker already running (pid {holder})", file=sys.stderr)
        else:
            print(
                f"stale lock {LOCK} (pid {holder} is not running): "
                f"remove it and start the worker again",
                file=sys.stderr,
            )
        return False
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()}\n")
    return True


def drain_once() -> int:
    done = 0
    for path in sorted(INCOMING.iterdir())[:BATCH]:
        try:
            path.unlink()
            done += 1
        except FileNotFoundError:
            pass
    return done


def main() -> int:
    INCOMING.mkdir(parents=True, exist_ok=True)
    if not take_lock():
        return 1
    running = True

    def stop(signum: int, frame: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"worker started (pid {os.getpid()})", flush=True)
    try:
        while running:
            if drain_once():
                print(f"worker processed messages; {len(os.listdir(INCOMING))} left", flush=True)
            time.sleep(TICK)
    finally:
        if lock_holder() == os.getpid():
            LOCK.unlink()
    print("worker stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
