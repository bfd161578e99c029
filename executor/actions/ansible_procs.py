"""Find and stop the local processes of one Ansible step, wherever they went.

Killing ``ansible-playbook``'s process group (what ansible-runner does on
cancel) is not enough: ansible-core's workers call ``os.setsid()``, so they,
the ``ssh`` clients they started and the ``ControlPersist`` masters those
leave behind all live in sessions of their own, and ``ssh-agent`` (which
holds the step's private key) daemonizes too. What they all still share is
their environment: each inherits the ``RUNBOOK_ANSIBLE_TAG=<tag>`` that the
runner set on ``ansible-playbook``. So processes are found by reading
``/proc/<pid>/environ`` (readable for our own processes only, which is all we
want), not by ancestry, which setsid and daemonizing break. One exception:
an OpenSSH ``ControlPersist`` master overwrites its environment with its
process title (``ssh: <ControlPath> [mux]``), so a second mark is accepted:
the job's private directory in the command line, which every worker
(``-e @<dir>/...``), ssh client (``ControlPath=<dir>/cp/...``) and master
carries, and no unrelated process has (the directory name is random).

Signals go through a pidfd opened *before* the environment is checked again,
so a pid that was reused between the scan and the signal is never hit.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


def environ_has(pid: int, entry: bytes, proc: Path = PROC) -> bool:
    """True if process ``pid`` was started with ``entry`` (``NAME=value``) in its environment."""
    try:
        data = (proc / str(pid) / "environ").read_bytes()
    except OSError:  # gone, or not ours
        return False
    return entry in data.split(b"\0")


def cmdline_has(pid: int, fragment: bytes, proc: Path = PROC) -> bool:
    """True if ``fragment`` occurs in the command line of process ``pid``."""
    try:
        data = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False
    return fragment in data


def marked_pids(
    name: str, value: str, *, cmdline: str | None = None, proc: Path = PROC
) -> list[int]:
    """Pids of our processes (not this one) whose environment holds ``name=value``, or
    whose command line contains ``cmdline``."""
    entry = f"{name}={value}".encode()
    fragment = cmdline.encode() if cmdline else None
    me = os.getpid()
    found = []
    with contextlib.suppress(FileNotFoundError):
        for item in os.scandir(proc):
            if not item.name.isdigit() or int(item.name) == me:
                continue
            pid = int(item.name)
            if environ_has(pid, entry, proc) or (fragment and cmdline_has(pid, fragment, proc)):
                found.append(pid)
    return sorted(found)


class _Handle:
    """One process we are stopping: a pidfd where the kernel has them, else the bare pid."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fd: int | None = None
        if hasattr(os, "pidfd_open"):
            self.fd = os.pidfd_open(pid)  # raises ProcessLookupError if already gone

    def send(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.fd is not None:
                signal.pidfd_send_signal(self.fd, signum)
            else:
                os.kill(self.pid, signum)

    def exited(self) -> bool:
        """True once the process has exited (a zombie counts as exited: it runs nothing)."""
        if self.fd is not None:
            readable, _, _ = select.select([self.fd], [], [], 0)
            return bool(readable)
        return not _running(self.pid)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _running(pid: int) -> bool:
    try:
        stat = (PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return False
    fields = stat[stat.rfind(b")") + 2 :].split()
    return bool(fields) and fields[0] not in (b"Z", b"X")


@dataclass(frozen=True)
class StopReport:
    """What stopping the marked processes took: how many, and whether SIGKILL was needed."""

    found: int
    killed: int
    survivors: tuple[int, ...] = ()

    def describe(self) -> str:
        if not self.found:
            return "no local ansible process was left"
        text = f"{self.found} local ansible process(es) stopped"
        if self.killed:
            text += f" ({self.killed} needed SIGKILL)"
        if self.survivors:
            text += f"; still running: pids {', '.join(map(str, self.survivors))}"
        return text


class MarkedProcesses:
    """The local processes carrying ``name=value`` (or ``cmdline`` in their command line):
    stop them all, including late arrivals."""

    def __init__(
        self, name: str, value: str, *, cmdline: str | None = None, proc: Path = PROC
    ) -> None:
        self.name = name
        self.value = value
        self.cmdline = cmdline
        self.proc = proc
        self._entry = f"{name}={value}".encode()
        self._fragment = cmdline.encode() if cmdline else None

    def pids(self) -> list[int]:
        return marked_pids(self.name, self.value, cmdline=self.cmdline, proc=self.proc)

    def _still_marked(self, pid: int) -> bool:
        if environ_has(pid, self._entry, self.proc):
            return True
        return self._fragment is not None and cmdline_has(pid, self._fragment, self.proc)

    def stop(self, grace: float, *, tick: float = 0.05, kill_wait: float = 5.0) -> StopReport:
        """SIGTERM (and SIGCONT) every marked process, SIGKILL what is left after ``grace``.

        Rescans while waiting: a worker may fork one more ssh client before
        its own SIGTERM lands, and that one is stopped too.
        """
        handles: dict[int, _Handle] = {}
        killed: set[int] = set()
        try:
            self._adopt(handles, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while self._alive(handles) and time.monotonic() < deadline:
                time.sleep(tick)
                self._adopt(handles, signal.SIGTERM)
            alive = self._alive(handles)
            if alive:
                for pid in alive:
                    handles[pid].send(signal.SIGKILL)
                killed.update(alive)
                deadline = time.monotonic() + kill_wait
                while self._alive(handles) and time.monotonic() < deadline:
                    time.sleep(0.01)
                    killed.update(self._adopt(handles, signal.SIGKILL))
            survivors = tuple(self._alive(handles))
            return StopReport(found=len(handles), killed=len(killed), survivors=survivors)
        finally:
            for handle in handles.values():
                handle.close()

    def _adopt(self, handles: dict[int, _Handle], signum: int) -> list[int]:
        """Signal marked processes not seen before; returns their pids."""
        new = []
        for pid in self.pids():
            if pid in handles:
                continue
            try:
                handle = _Handle(pid)
            except (ProcessLookupError, PermissionError):
                continue
            # The pidfd pins the process: if the environment still matches now,
            # the signal reaches this process and not a later one with its pid.
            if not self._still_marked(pid):
                handle.close()
                continue
            handles[pid] = handle
            handle.send(signum)
            if signum != signal.SIGKILL:
                handle.send(signal.SIGCONT)
            new.append(pid)
        return new

    @staticmethod
    def _alive(handles: dict[int, _Handle]) -> list[int]:
        return [pid for pid, handle in handles.items() if not handle.exited()]
