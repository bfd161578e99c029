"""The ``ssh`` action: one command on every host of a target, in parallel, over Fabric.

How a step runs: each host's address, port and login user come from the
inventory; the connection is authenticated by the step's Vault-signed
certificate and checked against pinned host keys (``sshconn``); at most
``forks`` hosts are worked on at once. Connections stay open for the rest of
the run, so the next step on the same hosts pays no handshake.

The command never runs bare. It is wrapped (``remote_command``) so that on
the host it runs like ``bash -o pipefail -c COMMAND`` in a process group of
its own, under a wrapper shell whose command line carries a unique marker
(``runbook:<run>:<step>:<nonce>``). That is what makes the kill-switch
honest: on timeout or cancel a second channel of the same connection finds
the wrapper by its marker and sends SIGTERM to its whole group, then SIGKILL
after the grace (``kill_command``), so no remote process outlives its step.
Background jobs the command leaves behind are sent SIGTERM when it exits, as
the ``local`` action does; a daemon the command starts in a session of its
own (``setsid``, a service manager) is not touched. stdin is closed at once:
a command can never wait for a person. Nothing is written on the host.

The wrapper costs no extra program in the common case: sshd starts each
session's shell as a session and group leader, so when that login shell is
bash the wrapper runs right in it and the command in a subshell (a fork, no
exec). Another login shell execs one bash for the wrapper; a shell that is
not a group leader re-executes the wrapper under ``setsid``.

``sudo: true`` prefixes the command with ``sudo -n``, the way Fabric's
``Connection.sudo`` prefixes it (so sudo applies to the first command of a
pipeline, and sudoers rules written for that command match). ``-n`` means a
password prompt becomes an immediate, explained failure.

Output is bounded per host and stream like the ``local`` action's, and
masked with the run's masker before it goes anywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import select
import shlex
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import fabric
import paramiko

from executor.actions import expect_action
from executor.actions.process import MIB, OutputBuffer
from executor.actions.sshconn import (
    ClientIdentity,
    ConnectionPool,
    HostAddress,
    PinnedHostKeys,
    explain_connect_error,
    host_address,
    identity_from_credential,
)
from executor.errors import ActionError, RunbookError
from executor.model import SshAction, format_duration
from executor.ports import ActionRequest, ActionResult, CancelToken, HostResult

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_RECV = 32 * 1024
_SUDO_PASSWORD = ("a password is required", "a terminal is required", "no tty present")

# $1 = marker, $2 = command, $3 = the command's $0. Runs as the group leader
# (re-executed under setsid if it is not one). ``trap :`` keeps it alive
# through a SIGTERM to the group: the subshell dies, the wrapper goes on to
# send SIGTERM to what the command left behind in the group and exits 143.
_WRAPPER = """\
read -r _ _ _ _ pg _ 2>/dev/null </proc/$$/stat
[ "$pg" = "$$" ] ||
  exec setsid -w /bin/bash --noprofile --norc -c "$BASH_EXECUTION_STRING" "$0" "$@"
trap : TERM HUP INT
(__rb=$2; BASH_ARGV0=$3; set --; set -o pipefail; eval "$__rb")
rc=$?
trap '' TERM
kill -TERM 0 2>/dev/null
exit $rc"""

# What the login shell runs: the wrapper itself when the login shell is bash
# (sshd made it a session leader: no program to start), else a bash for it.
_LAUNCHER = (
    'if [ -n "$BASH_VERSION" ]; then eval "$__rb_wrapper"; '
    'else exec /bin/bash --noprofile --norc -c "$__rb_wrapper" runbook "$@"; fi'
)

# $0, $1 = the two halves of the marker (so this shell's own command line does
# not carry it), $2 = grace in tenths of a second. Finds the wrapper (a group
# leader whose command line holds the marker), waiting up to 1 s for it to
# start; sends TERM (+CONT for stopped members) to its group, KILL after the
# grace. Members are counted with ps, ignoring zombies (where init does not
# reap orphans they would make us wait for ever). Prints one of: gone,
# terminated PGID, killed PGID, survived PGID.
_KILLER = """\
m="$0$1"; n=$2
find_group() {
  local f p g
  for f in $(grep -lF -- "$m" /proc/[0-9]*/cmdline 2>/dev/null); do
    p=${f#/proc/}; p=${p%/cmdline}
    [ "$p" = "$$" ] && continue
    read -r _ _ _ _ g _ <"/proc/$p/stat" 2>/dev/null || continue
    [ "$g" = "$p" ] && { echo "$p"; return; }
  done
}
alive() {
  if command -v ps >/dev/null 2>&1; then
    ps -e -o pgid=,stat= | awk -v g="$pg" '$1==g && $2 !~ /^Z/ {n++} END {exit n==0}'
  else kill -0 -- -"$pg" 2>/dev/null; fi
}
pg=
for _ in 1 2 3 4 5 6 7 8 9 10; do pg=$(find_group); [ -n "$pg" ] && break; sleep 0.1; done
[ -n "$pg" ] || { echo gone; exit 0; }
kill -TERM -- -"$pg" 2>/dev/null; kill -CONT -- -"$pg" 2>/dev/null
i=0
while alive; do
  if [ $i -ge "$n" ]; then
    kill -KILL -- -"$pg" 2>/dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10; do alive || break; sleep 0.1; done
    alive && { echo "survived $pg"; exit 1; }
    echo "killed $pg"; exit 0
  fi
  sleep 0.1; i=$((i+1))
done
echo terminated "$pg"
"""


# --------------------------------------------------------------------------- remote scripts


def command_marker(run_id: str, step_id: str, nonce: str | None = None) -> str:
    """The unique word that identifies one command's wrapper in the host's process list.

    The nonce makes each attempt's marker its own: stopping a retry can never
    hit the attempt before it, nor another run's command.
    """
    nonce = nonce or secrets.token_hex(8)
    return f"runbook:{_SAFE.sub('_', run_id)[:48]}:{_SAFE.sub('_', step_id)[:48]}:{nonce}"


def remote_command(command: str, *, marker: str, name: str = "runbook", sudo: bool = False) -> str:
    """The exec string sent to sshd: ``command`` under the wrapper, in its own group.

    Every value is a single shell word built by ``shlex.quote``; the login
    shell (any POSIX shell) only sets positional parameters and a variable
    from literal words, then runs the wrapper.
    """
    words = " ".join(shlex.quote(w) for w in (marker, _with_sudo(command, sudo), name))
    return f"set -- {words}; __rb_wrapper={shlex.quote(_WRAPPER)}; {_LAUNCHER}"


def _with_sudo(command: str, sudo: bool) -> str:
    return f"sudo -n {command}" if sudo else command


def kill_command(marker: str, grace: float) -> str:
    """The exec string that stops the group of the wrapper marked ``marker``."""
    tenths = max(1, round(grace * 10))
    half = len(marker) // 2
    head, tail = shlex.quote(marker[:half]), shlex.quote(marker[half:])
    return f"exec /bin/bash --noprofile --norc -c {shlex.quote(_KILLER)} {head} {tail} {tenths}"


# --------------------------------------------------------------------------- results


class Ending(Enum):
    EXITED = "exited"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    LOST = "lost"


def aggregate(
    results: Sequence[HostResult],
    *,
    data: Mapping[str, Any] | None = None,
    cancelled: bool = False,
    timed_out: bool = False,
) -> ActionResult:
    """The step's result from its hosts' (see ``ActionResult.from_hosts``)."""
    return ActionResult.from_hosts(results, data=data, cancelled=cancelled, timed_out=timed_out)


def command_error(rc: int | None, stderr: str, *, sudo: bool, user: str) -> str:
    """Why a command that ran failed, with its last stderr line (already masked)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    last = lines[-1][:200] if lines else ""
    if sudo and rc == 1 and any(p in stderr for p in _SUDO_PASSWORD):
        return (
            f"sudo refused to run the command without a password (sudo -n): {user} may not run "
            "it as root without one; allow it with a NOPASSWD rule in the host's sudoers, or "
            f"drop sudo: true ({last})"
        )
    text = f"command exited with status {rc}"
    return f"{text}: {last}" if last else text


# --------------------------------------------------------------------------- the runner


class HostVarsSource(Protocol):
    """What the runner needs of the inventory (``executor.actions.inventory.AnsibleInventory``)."""

    def host_vars(self, name: str) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class SshLimits:
    """Knobs of remote supervision. ``tick`` is how often cancel and the clock are checked."""

    max_output: int = MIB
    tick: float = 0.05
    drain: float = 2.0
    """How long to wait for the channel to close once the remote group has been stopped."""


class SshRunner:
    """Runs ``ssh`` steps; one instance serves every run and owns the connection pool.

    ``inventory`` gives each host's ansible_host/ansible_port/ansible_user;
    ``known_hosts`` is the only file of trusted host keys; ``forks`` bounds
    the hosts worked on at once; ``kill_grace`` is the time between SIGTERM
    and SIGKILL for a cut-off remote command; a run's connections are closed
    after ``idle_close`` seconds without a step. Call ``close_run(run_id)``
    when a run ends and ``close()`` at shutdown.
    """

    kind = "ssh"

    def __init__(
        self,
        *,
        inventory: HostVarsSource,
        known_hosts: Path,
        forks: int = 10,
        connect_timeout: float = 10,
        kill_grace: float = 2.0,
        idle_close: float = 900.0,
        limits: SshLimits = SshLimits(),
    ) -> None:
        if forks < 1:
            raise ActionError(f"ssh forks must be at least 1, not {forks}")
        self.inventory = inventory
        self.known_hosts = PinnedHostKeys(Path(known_hosts))
        self.forks = forks
        self.kill_grace = kill_grace
        self.limits = limits
        self.pool = ConnectionPool(self.known_hosts, connect_timeout=connect_timeout)
        self.idle_close = idle_close
        self._lock = threading.Lock()
        self._addresses: dict[str, dict[str, HostAddress]] = {}
        self._active: dict[str, int] = {}  # steps in flight per run
        self._last_used: dict[str, float] = {}

    def __enter__(self) -> SshRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close_run(self, run_id: str) -> int:
        """Close the connections ``run_id`` opened; returns how many."""
        with self._lock:
            self._addresses.pop(run_id, None)
            self._last_used.pop(run_id, None)
        return self.pool.close_run(run_id)

    def close(self) -> None:
        with self._lock:
            self._addresses.clear()
            self._last_used.clear()
        self.pool.close()

    def close_idle(self, now: float | None = None) -> list[str]:
        """Close the connections of runs with no step for ``idle_close`` seconds.

        A safety net for runs whose end was never reported (a crash, a
        forgotten ``close_run``): sshd sessions must not pile up. A run that
        resumes later (after a long approval, say) simply reconnects.
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = [
                run_id
                for run_id, used in self._last_used.items()
                if not self._active.get(run_id) and now - used >= self.idle_close
            ]
        for run_id in idle:
            self.close_run(run_id)
        return idle

    @contextlib.contextmanager
    def _in_flight(self, run_id: str) -> Iterator[None]:
        with self._lock:
            self._active[run_id] = self._active.get(run_id, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._active[run_id] -= 1
                if not self._active[run_id]:
                    del self._active[run_id]
                self._last_used[run_id] = time.monotonic()

    def address(self, run_id: str, name: str) -> HostAddress:
        """Where ``name`` is, read from the inventory once per run.

        A run keeps its connections, so it keeps the addresses they were
        opened to as well; and a warm step on 50 hosts should not spend
        50 inventory lookups (about a millisecond each, one at a time).
        """
        with self._lock:
            known = self._addresses.get(run_id, {}).get(name)
        if known is not None:
            return known
        target = host_address(name, self.inventory.host_vars(name))
        with self._lock:
            self._addresses.setdefault(run_id, {})[name] = target
        return target

    def run(self, request: ActionRequest, cancel: CancelToken) -> ActionResult:
        action = expect_action(request, SshAction, self.kind)
        mask = request.mask
        hosts = list(request.hosts)
        if request.dry_run:
            return ActionResult(
                ok=True,
                data={
                    "dry_run": True,
                    "would_run": mask(
                        f"sudo -n {action.command}" if action.sudo else action.command
                    ),
                    "hosts": hosts,
                },
            )
        refusal = self._refusal(request, hosts)
        if refusal:
            return ActionResult(ok=False, error=mask(refusal))
        try:
            assert request.credential is not None  # checked by _refusal
            identity = identity_from_credential(request.credential)
        except ActionError as exc:
            return ActionResult(ok=False, error=mask(f"step {request.step_id!r}: {exc.message}"))
        invalid = identity.check_valid(time.time())
        if invalid:
            return ActionResult(ok=False, error=mask(f"step {request.step_id!r}: {invalid}"))
        self.close_idle()
        with self._in_flight(request.run_id):
            return _StepRun(self, request, action, identity, cancel).run(hosts)

    def _refusal(self, request: ActionRequest, hosts: list[str]) -> str | None:
        """Why nothing may run at all (checked before any connection)."""
        where = f"step {request.step_id!r}"
        if not hosts:
            return f"{where}: the ssh target resolved to no host: nothing was run"
        if request.credential is None:
            return (
                f"{where}: the ssh action needs a credential and none was issued: nothing was "
                f"run on {', '.join(hosts)}; declare a vault_ssh credential under credentials: "
                "and name it in ssh.credential"
            )
        missing = self.known_hosts.missing()
        if missing:
            return f"{where}: {missing}"
        return None


@dataclass
class _Counters:
    """Connections opened and reused by one step (hosts run in parallel: hence the lock)."""

    opened: int = 0
    reused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, reused: bool) -> None:
        with self.lock:
            if reused:
                self.reused += 1
            else:
                self.opened += 1


@dataclass
class _StepRun:
    """One ``ssh`` step across its hosts: shared deadline, cancel token and identity."""

    runner: SshRunner
    request: ActionRequest
    action: SshAction
    identity: ClientIdentity
    cancel: CancelToken
    deadline: float | None = None
    counters: _Counters = field(default_factory=_Counters)
    timed_out_hosts: list[str] = field(default_factory=list)

    def run(self, hosts: list[str]) -> ActionResult:
        started = time.monotonic()
        if self.request.timeout is not None:
            self.deadline = started + self.request.timeout
        workers = min(self.runner.forks, len(hosts))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ssh") as pool:
            results = list(pool.map(self._host, hosts))
        data = {
            "duration": round(time.monotonic() - started, 3),
            "forks": workers,
            "connections": {"opened": self.counters.opened, "reused": self.counters.reused},
        }
        cut_off = any(r.cut_off for r in results)
        return aggregate(
            results,
            data=data,
            cancelled=self.cancel.cancelled and cut_off,
            # a host cut off without a cancel was cut off by the deadline (maybe before it started)
            timed_out=bool(self.timed_out_hosts) or (cut_off and not self.cancel.cancelled),
        )

    # ------------------------------------------------------------------ one host

    def _host(self, name: str) -> HostResult:
        started = time.time()
        mask = self.request.mask

        def failed(error: str, *, cut_off: bool = False, rc: int | None = None) -> HostResult:
            result = HostResult(
                host=name,
                rc=rc,
                ok=False,
                error=mask(error),
                started=started,
                finished=time.time(),
                cut_off=cut_off,
            )
            self._event("ssh.host.finished", result)
            return result

        early = self._stopped()
        if early:
            return failed(f"not started: {early}", cut_off=True)
        try:
            target = self.runner.address(self.request.run_id, name)
        except RunbookError as exc:
            return failed(exc.message)
        except Exception as exc:  # an inventory lookup error is this host's alone
            return failed(f"cannot read host {name!r} from the inventory: {exc}")
        marker = command_marker(self.request.run_id, self.request.step_id)
        wrapped = remote_command(
            self.action.command,
            marker=marker,
            name=self.request.step_id,
            sudo=self.action.sudo,
        )
        try:
            self._intent(target)
        except RunbookError as exc:  # the audit is fail-closed: no record, no command
            return failed(f"not started: {exc.message}")
        try:
            conn, chan = self._open_channel(target)
        except Exception as exc:  # every connect failure is this host's alone
            return failed(
                explain_connect_error(exc, target, self.identity.cert, self.runner.known_hosts.path)
            )
        late = self._stopped()
        if late:
            chan.close()
            return failed(f"not started: {late}", cut_off=True)
        return self._execute(name, target, conn, chan, wrapped, marker, started)

    def _open_channel(self, target: HostAddress) -> tuple[fabric.Connection, paramiko.Channel]:
        """A session channel on the run's pooled connection (reconnecting once if stale)."""
        pool, run_id = self.runner.pool, self.request.run_id
        for attempt in (1, 2):
            conn, reused = pool.acquire(run_id, target, self.identity)
            try:
                chan = conn.create_session()
            except (paramiko.SSHException, OSError, EOFError):
                pool.discard(run_id, target, self.identity)
                if attempt == 2 or not reused:
                    raise
                continue
            self.counters.count(reused)
            return conn, chan
        raise AssertionError("unreachable")  # pragma: no cover

    def _execute(
        self,
        name: str,
        target: HostAddress,
        conn: fabric.Connection,
        chan: paramiko.Channel,
        wrapped: str,
        marker: str,
        started: float,
    ) -> HostResult:
        mask = self.request.mask
        limits = self.runner.limits
        out, err = OutputBuffer(limits.max_output), OutputBuffer(limits.max_output)
        try:
            chan.exec_command(wrapped)
            chan.shutdown_write()
            ending = _pump(chan, out, err, self.deadline, self.cancel, limits.tick)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            chan.close()
            self.runner.pool.discard(self.request.run_id, target, self.identity)
            return self._result(name, started, None, out, err, f"connection lost: {exc}", False)
        stop_note = ""
        if ending in (Ending.CANCELLED, Ending.TIMED_OUT):
            stop_note = _stop_remote(conn, marker, self.runner.kill_grace)
            _drain(chan, out, err, limits.drain)
            if ending is Ending.TIMED_OUT:
                self.timed_out_hosts.append(name)
        rc = chan.exit_status if chan.exit_status_ready() else None
        chan.close()
        error = None
        if ending is Ending.TIMED_OUT:
            error = f"timed out after {format_duration(self.request.timeout or 0)}: {stop_note}"
        elif ending is Ending.CANCELLED:
            error = f"cancelled: {self.cancel.reason or 'no reason given'}; {stop_note}"
        elif ending is Ending.LOST or rc is None:
            self.runner.pool.discard(self.request.run_id, target, self.identity)
            error = (
                f"the connection to {target} closed before the command's exit status "
                "arrived: its outcome is unknown; check the host"
            )
        elif rc != 0:
            error = command_error(
                rc, mask(_text(err.value())), sudo=self.action.sudo, user=target.user
            )
        cut_off = ending in (Ending.CANCELLED, Ending.TIMED_OUT)
        return self._result(name, started, rc, out, err, error, cut_off)

    def _result(
        self,
        name: str,
        started: float,
        rc: int | None,
        out: OutputBuffer,
        err: OutputBuffer,
        error: str | None,
        cut_off: bool,
    ) -> HostResult:
        mask = self.request.mask
        result = HostResult(
            host=name,
            rc=rc,
            stdout=mask(_text(out.value())),
            stderr=mask(_text(err.value())),
            ok=error is None and rc == 0,
            error=mask(error) if error else None,
            started=started,
            finished=time.time(),
            cut_off=cut_off,
        )
        self._event("ssh.host.finished", result)
        return result

    # ------------------------------------------------------------------ helpers

    def _stopped(self) -> str | None:
        if self.cancel.cancelled:
            return f"cancelled: {self.cancel.reason or 'no reason given'}"
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return f"the step's timeout of {format_duration(self.request.timeout or 0)} passed"
        return None

    def _intent(self, target: HostAddress) -> None:
        emit = self.request.on_event
        if emit is not None:
            emit(
                "ssh.host.started",
                {
                    "host": target.name,
                    "address": str(target),
                    "command": self.request.mask(self.action.command),
                    "sudo": self.action.sudo,
                    "certificate_serial": self.identity.cert.serial,
                },
            )

    def _event(self, event: str, result: HostResult) -> None:
        emit = self.request.on_event
        if emit is None:
            return
        digest = hashlib.sha256((result.stdout + "\0" + result.stderr).encode()).hexdigest()
        duration = (
            round(result.finished - result.started, 3)
            if result.finished is not None and result.started is not None
            else None
        )
        with contextlib.suppress(RunbookError):  # the outcome stands; the step record repeats it
            emit(
                event,
                {
                    "host": result.host,
                    "rc": result.rc,
                    "ok": result.ok,
                    "error": result.error,
                    "cut_off": result.cut_off,
                    "duration": duration,
                    "output_sha256": digest,
                },
            )


# --------------------------------------------------------------------------- channels


def _pump(
    chan: paramiko.Channel,
    out: OutputBuffer,
    err: OutputBuffer,
    deadline: float | None,
    cancel: CancelToken,
    tick: float,
) -> Ending:
    """Read both streams until the command's status arrives, the deadline passes or cancel."""
    while True:
        _read_ready(chan, out, err)
        if chan.exit_status_ready() and chan.eof_received and not _pending(chan):
            return Ending.EXITED
        if chan.closed and not _pending(chan):
            return Ending.EXITED if chan.exit_status_ready() else Ending.LOST
        if cancel.cancelled:
            return Ending.CANCELLED
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return Ending.TIMED_OUT
        wait = tick if deadline is None else max(0.0, min(tick, deadline - now))
        if chan.eof_received:  # the wake-up pipe stays set after EOF: wait on the status
            chan.status_event.wait(wait)
        else:
            select.select([chan], [], [], wait)


def _drain(chan: paramiko.Channel, out: OutputBuffer, err: OutputBuffer, seconds: float) -> None:
    """Collect what remains once the remote group was stopped, for at most ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        _read_ready(chan, out, err)
        if (chan.closed or chan.eof_received) and chan.exit_status_ready() and not _pending(chan):
            return
        chan.status_event.wait(0.02)


def _pending(chan: paramiko.Channel) -> bool:
    return chan.recv_ready() or chan.recv_stderr_ready()


def _read_ready(chan: paramiko.Channel, out: OutputBuffer, err: OutputBuffer) -> None:
    while chan.recv_ready():
        out.feed(chan.recv(_RECV))
    while chan.recv_stderr_ready():
        err.feed(chan.recv_stderr(_RECV))


def _stop_remote(conn: fabric.Connection, marker: str, grace: float) -> str:
    """Stop the command's process group over a second channel; says what happened."""
    budget = grace + 5.0
    try:
        chan = conn.create_session()
        chan.settimeout(budget)
        chan.exec_command(kill_command(marker, grace))
        chan.shutdown_write()
        report = _read_all(chan, budget)
        chan.close()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        return (
            f"could not reach the host to stop the remote command ({exc}): it may still run; "
            f"look for {marker} in the host's process list"
        )
    words = report.split()
    if words[:1] == ["terminated"] and len(words) > 1:
        return f"remote process group {words[1]} terminated"
    if words[:1] == ["killed"] and len(words) > 1:
        return f"remote process group {words[1]} killed (SIGKILL after {format_duration(grace)})"
    if words[:1] == ["survived"] and len(words) > 1:
        return (
            f"remote process group {words[1]} survived SIGKILL (a process stuck in the kernel?): "
            "check the host"
        )
    if words[:1] == ["gone"]:
        return "the remote command had already ended"
    return f"stopping the remote command gave no clear answer ({report.strip()[:200]!r})"


def _read_all(chan: paramiko.Channel, budget: float) -> str:
    end = time.monotonic() + budget
    chunks: list[bytes] = []
    while time.monotonic() < end:
        if chan.recv_ready():
            chunks.append(chan.recv(_RECV))
            continue
        if (
            chan.exit_status_ready()
            and (chan.eof_received or chan.closed)
            and not chan.recv_ready()
        ):
            break
        chan.status_event.wait(0.02)
    return _text(b"".join(chunks))


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")
