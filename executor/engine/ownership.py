"""Which process executes a run: exactly one at a time, and a dead one is replaced.

Two processes executing the same run would run its steps twice: a responder
typing ``runbook resume`` while the original ``runbook run --yes`` still waits
for an approval is enough. So an execution first takes a one-slot lock named
after the run in the shared store (the store takes lock slots atomically, so
two racing resumes cannot both win). The holder is named
``host:pid:start-time:nonce``: the start time (from ``/proc``) tells a live
process from a new one that reused the pid, so a run whose executor was
killed with SIGKILL can be taken over, and one whose executor is alive cannot.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass

from executor.engine.services import Services
from executor.errors import UsageError

_PREFIX = "executing:"


def lock_key(run_id: str) -> str:
    return f"{_PREFIX}{run_id}"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot; None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    if len(fields) <= 19 or fields[0] in (b"Z", b"X"):
        return None
    return fields[19].decode()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Holder:
    """A process that executes (or executed) a run."""

    host: str
    pid: int
    started: str
    nonce: str

    @classmethod
    def me(cls) -> Holder:
        pid = os.getpid()
        return cls(socket.gethostname(), pid, _start_time(pid) or "?", secrets.token_hex(4))

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        parts = text.split(":")
        if len(parts) != 4 or not parts[1].isdigit():
            return None
        return cls(parts[0], int(parts[1]), parts[2], parts[3])

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.started}:{self.nonce}"

    def describe(self) -> str:
        return f"process {self.pid} on {self.host}"

    def alive(self) -> bool:
        """True unless this host can tell the process is gone (another host: assume alive)."""
        if self.host != socket.gethostname():
            return True
        if os.path.isdir("/proc/self"):
            return _start_time(self.pid) == self.started
        return _pid_alive(self.pid)


class Ownership:
    """The claim of one execution on one run; ``claim`` before acting, ``release`` after."""

    def __init__(self, services: Services, run_id: str) -> None:
        self.services = services
        self.run_id = run_id
        self.me = Holder.me()
        self.held = False

    def claim(self) -> None:
        """Take the run, replacing holders that died; ``UsageError`` if a live one has it."""
        store, key = self.services.store, lock_key(self.run_id)
        for _ in range(3):
            if store.acquire_lock(key, str(self.me), 1):
                self.held = True
                store.update_run(self.run_id, owner=str(self.me))
                return
            for text in store.holders(key):
                holder = Holder.parse(text)
                if holder is not None and holder.alive():
                    raise UsageError(
                        f"run {self.run_id} is being executed by {holder.describe()}: "
                        "two executors would run its steps twice",
                        hint=f"wait for it, or stop it with 'runbook kill {self.run_id}'; "
                        "if that host is gone for good, resume from there or ask an operator",
                    )
                store.release_lock(key, text)  # a dead executor: take over
        raise UsageError(
            f"run {self.run_id} is being claimed by another executor at the same moment",
            hint="retry in a second",
        )

    def release(self) -> None:
        if self.held:
            self.services.store.release_lock(lock_key(self.run_id), str(self.me))
            self.held = False


def live_holder(services: Services, run_id: str) -> Holder | None:
    """The live process executing ``run_id``, if any."""
    for text in services.store.holders(lock_key(run_id)):
        holder = Holder.parse(text)
        if holder is not None and holder.alive():
            return holder
    return None
