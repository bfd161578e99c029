"""Run a command as its own process group, and make sure the whole group ends.

Why a group: a runbook command is often a pipeline or starts helpers of its
own (``kubectl ... | jq``, ``sleep 60 &``). Killing only the shell would leave
its children running after the step (and after the kill-switch) has claimed
they stopped. So every command starts in a new session, and a timeout, a
cancel or the end of the command sends SIGTERM to the *group*, then SIGKILL
after a grace period.

Two details keep this honest:

- The group leader is not reaped until the group has been dealt with
  (``waitid(WNOWAIT)`` only peeks). While its zombie exists the kernel cannot
  hand its pid to another process, so ``killpg`` can never hit an unrelated
  group, even on hosts with a small ``pid_max``.
- Output is read from both pipes in the same loop that watches the clock and
  the cancel token (``selectors``), with a bounded buffer. A chatty process
  never blocks on a full pipe, and a process that escaped the group while
  holding the pipe open cannot make us wait forever: after the group is gone,
  reading stops at a deadline.

Membership of a group is read from ``/proc`` (Linux), ignoring zombies: a
zombie runs nothing, and on hosts whose init does not reap orphans they may
linger long after the tree is dead.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import IO

from executor.errors import UsageError
from executor.ports import CancelToken

MIB = 1024 * 1024
_READ_CHUNK = 256 * 1024

# --------------------------------------------------------------------------- environment

SAFE_ENV_NAMES = (
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TZ",
    "USER",
    "LOGNAME",
    "TMPDIR",
)
"""Inherited by default: what ordinary tools need to find themselves and speak UTF-8."""

_SECRET_NAME = re.compile(
    r"TOKEN|SECRET|PASSW|PASSPHRASE|PRIVATE|CREDENTIAL|API_?KEY|ACCESS_?KEY|AUTH|COOKIE|SESSION"
    r"|^VAULT_|^BAO_",
    re.IGNORECASE,
)
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def looks_secret(name: str) -> bool:
    """True for variable names that usually carry credentials (VAULT_TOKEN, DB_PASSWORD...)."""
    return bool(_SECRET_NAME.search(name))


def check_pass_env(names: Iterable[str]) -> tuple[str, ...]:
    """Refuse, at configuration time, to forward variables that look like secrets.

    The executor's own process holds a Vault token or AppRole secret; a typo
    in configuration must not hand it to every runbook command.
    """
    names = tuple(names)
    bad = sorted(n for n in names if looks_secret(n))
    if bad:
        raise UsageError(
            f"refusing to pass {', '.join(bad)} from the executor's environment to commands: "
            "names like *TOKEN*, *SECRET*, *PASSWORD*, VAULT_* may hold the executor's own "
            "credentials",
            hint="set the value explicitly in the runner's env= if a command truly needs it, "
            "or better, declare a credential in the runbook",
        )
    return names


def scrubbed_env(
    parent: Mapping[str, str],
    *,
    pass_env: Sequence[str] = (),
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A minimal environment for a child: an allowlist, never a denylist.

    Only ``SAFE_ENV_NAMES`` and ``pass_env`` are copied from ``parent`` (and
    never a name that looks secret, whatever the list says); ``extra`` is
    what the operator configured explicitly and is passed as given.
    """
    env = {
        name: parent[name]
        for name in (*SAFE_ENV_NAMES, *pass_env)
        if name in parent and not looks_secret(name)
    }
    env.setdefault("PATH", _DEFAULT_PATH)
    env.setdefault("LANG", "C.UTF-8")
    env.update(extra or {})
    return env


# --------------------------------------------------------------------------- bounded output


class OutputBuffer:
    """Keeps the beginning and the end of a stream, at most ``limit`` bytes in all.

    The beginning says what the command was doing; the end holds the error
    that made it fail. What falls in between is counted and replaced by a
    marker, so nobody mistakes a cut transcript for the whole one.
    """

    def __init__(self, limit: int = MIB, head: int | None = None) -> None:
        if limit < 2:
            raise ValueError("an output limit needs at least 2 bytes")
        self.limit = limit
        self._head_limit = head if head is not None else limit // 4
        self._tail_limit = limit - self._head_limit
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data:
            self._tail += data
            if len(self._tail) > 2 * self._tail_limit:  # trim rarely: amortised O(1)
                del self._tail[: -self._tail_limit]

    @property
    def dropped(self) -> int:
        """Bytes that were produced but are not kept."""
        return self.total - len(self._head) - min(len(self._tail), self._tail_limit)

    def value(self) -> bytes:
        tail = bytes(self._tail[-self._tail_limit :]) if self._tail_limit else b""
        if not self.dropped:
            return bytes(self._head) + tail
        marker = f"\n[... {self.dropped} bytes of output dropped ...]\n".encode()
        return bytes(self._head) + marker + tail


class _Pipes:
    """Both output pipes of a child, read without ever blocking."""

    def __init__(self, streams: Mapping[str, IO[bytes]], limit: int) -> None:
        self._selector = selectors.DefaultSelector()
        self.buffers = {name: OutputBuffer(limit) for name in streams}
        self._files = list(streams.values())
        for name, stream in streams.items():
            os.set_blocking(stream.fileno(), False)
            self._selector.register(stream.fileno(), selectors.EVENT_READ, name)

    @property
    def open(self) -> bool:
        return bool(self._selector.get_map())

    def pump(self, timeout: float) -> None:
        """Read what is available, waiting at most ``timeout`` seconds for something."""
        if not self.open:
            time.sleep(max(timeout, 0.0))
            return
        for key, _ in self._selector.select(max(timeout, 0.0)):
            try:
                chunk = os.read(key.fd, _READ_CHUNK)
            except BlockingIOError:
                continue
            if chunk:
                self.buffers[key.data].feed(chunk)
            else:
                self._selector.unregister(key.fd)

    def drain(self, seconds: float) -> bool:
        """Read until every pipe is closed or ``seconds`` pass; True if all closed."""
        end = time.monotonic() + seconds
        while self.open:
            left = end - time.monotonic()
            if left <= 0:
                return False
            self.pump(min(left, 0.05))
        return True

    def close(self) -> None:
        self._selector.close()
        for stream in self._files:
            with contextlib.suppress(OSError):
                stream.close()


# --------------------------------------------------------------------------- group membership


def live_members(pgid: int) -> list[int]:
    """Pids of the processes of group ``pgid`` that still run (zombies excluded).

    Reads ``/proc``; where there is none, asks the kernel with signal 0, which
    cannot tell zombies apart but errs on the side of "still there".
    """
    if not os.path.isdir("/proc/self"):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:  # exited while we looked
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()  # comm may hold spaces and parens
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _leader_exited(pid: int) -> bool:
    """Has the leader exited? Peeks only: the zombie stays, so its pid stays ours."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # already reaped (should not happen): treat as exited
        return True
    return info is not None


# --------------------------------------------------------------------------- running


class Ending(Enum):
    """Why supervision stopped watching the leader."""

    EXITED = "exited"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class ProcessOutcome:
    """What happened to one command and its process group.

    ``returncode`` follows the shell convention: 128 + N when the leader died
    of signal N. ``killed`` means SIGKILL was needed; ``stragglers`` means
    group members outlived the leader and were terminated with the group.
    """

    pid: int
    returncode: int
    signal: int | None
    ending: Ending
    stdout: bytes
    stderr: bytes
    stdout_dropped: int
    stderr_dropped: int
    killed: bool
    stragglers: bool
    output_abandoned: bool
    duration: float

    @property
    def pgid(self) -> int:
        return self.pid


@dataclass(frozen=True)
class GroupLimits:
    """Knobs of process supervision; the defaults suit interactive runbooks.

    ``grace``: seconds between SIGTERM and SIGKILL. ``linger``: how long the
    pipes may stay open after the leader exits before the rest of the group
    is terminated. ``drain``: how long to keep reading once the group is gone
    (output held by a process that escaped the group is abandoned after it).
    ``tick``: how often the clock and the cancel token are checked.
    """

    grace: float = 2.0
    linger: float = 0.5
    drain: float = 0.5
    tick: float = 0.05
    max_output: int = MIB


def run_in_group(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | None = None,
    timeout: float | None = None,
    cancel: CancelToken | None = None,
    limits: GroupLimits = GroupLimits(),
) -> ProcessOutcome:
    """Run ``argv`` in a new session with stdin from /dev/null; end its whole group.

    Returns when the leader has exited and no member of its group runs any
    more. Raises ``OSError`` when the program cannot be started at all.
    """
    started = time.monotonic()
    deadline = started + timeout if timeout is not None else None
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
        close_fds=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    pipes = _Pipes({"stdout": proc.stdout, "stderr": proc.stderr}, limits.max_output)
    killed = stragglers = finished = False
    try:
        ending = _supervise(proc.pid, pipes, deadline, cancel, limits.tick)
        if ending is Ending.EXITED:
            pipes.drain(limits.linger)
            if live_members(proc.pid):
                stragglers = True
                killed = terminate_group(proc.pid, limits.grace, pipes, limits.tick)
        else:
            killed = terminate_group(proc.pid, limits.grace, pipes, limits.tick)
        abandoned = not pipes.drain(limits.drain)
        finished = True
    finally:
        if not finished:  # interrupted (KeyboardInterrupt, a bug): leave nothing running
            _signal_group(proc.pid, signal.SIGKILL)
        pipes.close()
        proc.wait()  # reaps the leader only now: until here its pgid could not be reused
    return _outcome(proc, pipes, ending, killed, stragglers, abandoned, started)


def _supervise(
    pid: int,
    pipes: _Pipes,
    deadline: float | None,
    cancel: CancelToken | None,
    tick: float,
) -> Ending:
    """Read output until the leader exits, the deadline passes or cancel fires."""
    while True:
        if _leader_exited(pid):
            return Ending.EXITED
        if cancel is not None and cancel.cancelled:
            return Ending.CANCELLED
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return Ending.TIMED_OUT
        wait = tick if pipes.open else min(tick, 0.01)  # no pipe to wake us: poll faster
        if deadline is not None:
            wait = min(wait, deadline - now)
        pipes.pump(wait)


def terminate_group(
    pgid: int, grace: float, pipes: _Pipes | None = None, tick: float = 0.05
) -> bool:
    """SIGTERM the group, SIGKILL it if anything still runs after ``grace``.

    SIGCONT follows SIGTERM so that a stopped process can act on it. Output
    keeps being read meanwhile, so a process that flushes on SIGTERM is not
    blocked by a full pipe. Returns True if SIGKILL was needed.
    """
    _signal_group(pgid, signal.SIGTERM)
    _signal_group(pgid, signal.SIGCONT)
    end = time.monotonic() + grace
    while live_members(pgid):
        left = end - time.monotonic()
        if left <= 0:
            break
        _pause(pipes, min(tick, left))
    else:
        return False
    _signal_group(pgid, signal.SIGKILL)
    end = time.monotonic() + 5.0  # SIGKILL is immediate except for a process stuck in the kernel
    while live_members(pgid) and time.monotonic() < end:
        _pause(pipes, 0.01)
    return True


def _pause(pipes: _Pipes | None, seconds: float) -> None:
    if pipes is not None:
        pipes.pump(seconds)
    else:
        time.sleep(seconds)


def _outcome(
    proc: subprocess.Popen[bytes],
    pipes: _Pipes,
    ending: Ending,
    killed: bool,
    stragglers: bool,
    abandoned: bool,
    started: float,
) -> ProcessOutcome:
    code = proc.returncode
    signum = -code if code < 0 else None
    out, err = pipes.buffers["stdout"], pipes.buffers["stderr"]
    return ProcessOutcome(
        pid=proc.pid,
        returncode=128 + signum if signum is not None else code,
        signal=signum,
        ending=ending,
        stdout=out.value(),
        stderr=err.value(),
        stdout_dropped=out.dropped,
        stderr_dropped=err.dropped,
        killed=killed,
        stragglers=stragglers,
        output_abandoned=abandoned,
        duration=time.monotonic() - started,
    )
