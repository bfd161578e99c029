"""A registry of the processes a world starts, and the means to stop them by pid.

Each managed process (OpenBao, one sshd per host, later Prometheus and
Alertmanager) is recorded in ``run/<name>.pid`` and ``run/<name>.json`` the
moment it starts, with its port, its log file and its kernel start time. The
start time is what makes stopping by pid safe: a pid the kernel has since
given to another program is recognised and left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from executor.sandbox.errors import SandboxError

# Popen objects of the processes this interpreter started: kept so they can be
# reaped (a dead child stays a zombie, and a zombie still answers kill -0).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ProcessRecord:
    """One managed process, as written to ``run/<name>.json``."""

    name: str
    pid: int
    start_ticks: int
    port: int | None
    log: str
    argv: tuple[str, ...]

    def alive(self) -> bool:
        return start_ticks(self.pid) == self.start_ticks


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may hold spaces)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """Kernel start time of a live process; None when it is gone or a zombie."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_running(pid: int) -> bool:
    _reap(pid)
    return start_ticks(pid) is not None


def parent_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def descendants(roots: Iterable[int]) -> set[int]:
    """Every live process below ``roots`` (e.g. the per-connection children of an sshd)."""
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        ppid = parent_of(pid)
        if ppid is not None:
            children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    stack = list(roots)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def pids_of_uids(uids: Iterable[int]) -> set[int]:
    """Live processes whose real uid is one of ``uids`` (a host user's sessions and services)."""
    wanted = set(uids)
    if not wanted:
        return set()
    return {pid for pid in _all_pids() if uid_of(pid) in wanted and start_ticks(pid) is not None}


def uid_of(pid: int) -> int | None:
    """The process's effective uid (the owner of its /proc entry)."""
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except FileNotFoundError:
        return None


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_ports(count: int) -> list[int]:
    """Ports the kernel reports free on 127.0.0.1 (held together, so all distinct)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def log_tail(path: Path | str, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:])


class Registry:
    """The managed processes of one world, kept in its ``run/`` directory."""

    def __init__(self, run_dir: Path, log_dir: Path) -> None:
        self.run_dir = run_dir
        self.log_dir = log_dir

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ProcessRecord:
        """Start ``argv`` in its own session, logging to ``logs/<name>.log``, and record it.

        Secrets go in ``env``, never in ``argv``: the record and ``ps`` show argv.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise SandboxError(f"could not start {name} ({argv[0]}): {exc}") from exc
        finally:
            os.close(fd)
        _CHILDREN[proc.pid] = proc
        ticks = start_ticks(proc.pid) or 0
        record = ProcessRecord(name, proc.pid, ticks, port, str(log), tuple(argv))
        (self.run_dir / f"{name}.pid").write_text(f"{proc.pid}\n")
        (self.run_dir / f"{name}.json").write_text(json.dumps(asdict(record), indent=2) + "\n")
        return record

    def records(self) -> list[ProcessRecord]:
        found = []
        for path in sorted(self.run_dir.glob("*.json")) if self.run_dir.is_dir() else []:
            data = json.loads(path.read_text())
            data["argv"] = tuple(data["argv"])
            found.append(ProcessRecord(**data))
        return found

    def get(self, name: str) -> ProcessRecord | None:
        return next((r for r in self.records() if r.name == name), None)


def wait_listening(record: ProcessRecord, timeout: float = 10.0) -> None:
    """Return once ``record``'s port accepts connections; raise with its log if it died."""
    if record.port is None:
        raise SandboxError(f"{record.name} has no port to wait for: this is a sandbox bug")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(record.port, timeout=0.1):
            return
        if not is_running(record.pid):
            raise SandboxError(
                f"{record.name} exited before listening on 127.0.0.1:{record.port}; "
                f"its log {record.log} ends with:\n{log_tail(record.log)}"
            )
        time.sleep(0.02)
    raise SandboxError(
        f"{record.name} (pid {record.pid}) did not listen on 127.0.0.1:{record.port} "
        f"within {timeout:.0f}s; read {record.log}"
    )


def _reap(pid: int) -> None:
    proc = _CHILDREN.get(pid)
    if proc is not None:
        if proc.poll() is not None:
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _signal(pid: int, ticks: int | None, sig: signal.Signals) -> None:
    """Send ``sig`` unless the pid now belongs to another program."""
    if ticks is not None and start_ticks(pid) != ticks:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def terminate(targets: Mapping[int, int | None], grace: float = 3.0) -> list[int]:
    """SIGTERM every pid, SIGKILL what is left after ``grace`` seconds; return the survivors.

    ``targets`` maps pid to its recorded start time (None: no record to check).
    """

    def alive() -> list[int]:
        living = []
        for pid, ticks in targets.items():
            _reap(pid)
            now = start_ticks(pid)
            if now is not None and (ticks is None or now == ticks):
                living.append(pid)
        return living

    for pid, ticks in targets.items():
        _signal(pid, ticks, signal.SIGTERM)
    for sig_deadline, then in ((grace, signal.SIGKILL), (2.0, None)):
        deadline = time.monotonic() + sig_deadline
        while alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if then is not None:
            for pid in alive():
                _signal(pid, targets[pid], then)
    return alive()
