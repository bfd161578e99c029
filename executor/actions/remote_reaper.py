"""Stop, over SSH, what a cancelled Ansible step left running on its hosts.

Measured with ansible-core 2.19: after ansible-runner reports ``canceled``,
the remote commands run to their end in every configuration tried (with
pipelining the module does not notice its ssh client dying; without it, only
sometimes). Nothing in Ansible stops them, so this module does.

Every process a step starts on a host carries ``RUNBOOK_RUN=<tag>`` in its
environment (``ansible_callback`` adds it to each play's ``environment``).
On cancel, one short SSH session per host, authenticated with the step's own
certificate and checked against the pinned host keys (``sshconn``), runs a
POSIX ``sh`` script that:

1. finds the processes whose ``/proc/<pid>/environ`` holds exactly that
   entry (``grep -z``), waiting up to half a second for one that is still
   starting when none is found;
2. sends SIGTERM to those that have no children first (the ``sleep 60``,
   not the module waiting for it), so that their parents reap them: killed
   together, the children would be orphans, and zombies until init gets to
   them;
3. then sends SIGTERM and SIGCONT to every tagged process and its process
   group (the group also holds the untagged ``sh -c`` that sshd started, and
   children that cleared their environment), never to the script's own group;
4. waits up to the grace period, then sends SIGKILL to what is left;
5. prints ``reaped found=N killed=N left=N``.

As the login user it can only see and signal that user's processes, which
is the point: a step's certificate cannot be used to kill anyone else's
work. Processes that a task ran as another user (``become``) are not seen.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import paramiko

from executor.actions.sshconn import (
    ClientIdentity,
    ConnectionPool,
    PinnedHostKeys,
    explain_connect_error,
    host_address,
    identity_from_credential,
)
from executor.errors import RunbookError
from executor.model import format_duration
from executor.ports import IssuedCredential

REMOTE_VARIABLE = "RUNBOOK_RUN"
"""The variable that marks a step's processes on its hosts (see ``ansible_callback``)."""

# $1 = the exact environment entry (RUNBOOK_RUN=<tag>), $2 = grace in tenths of a second.
_SCRIPT = r"""m=$1; n=$2; me=$$
pgid_of() {
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  s=${s##*) }
  set -- $s
  echo "$3"
}
tagged() {
  grep -lzxF -e "$m" /proc/[0-9]*/environ 2>/dev/null |
    sed -n 's|^/proc/\([0-9]*\)/environ$|\1|p' | grep -vx -e "$me"
}
own=$(pgid_of $me)
hit() {
  c=0
  for p in $(tagged); do
    c=$((c+1))
    g=$(pgid_of "$p") || continue
    if [ -n "$g" ] && [ "$g" != "$own" ] && [ "$g" -gt 1 ]; then
      kill -s "$1" -- "-$g" 2>/dev/null
      [ "$1" = KILL ] || kill -s CONT -- "-$g" 2>/dev/null
    fi
    kill -s "$1" "$p" 2>/dev/null
    [ "$1" = KILL ] || kill -s CONT "$p" 2>/dev/null
  done
  echo "$c"
}
i=0
while [ -z "$(tagged)" ] && [ "$i" -lt 5 ]; do i=$((i+1)); sleep 0.1; done
found=$(tagged | wc -l)
first=0
for p in $(tagged); do
  [ -n "$(cat "/proc/$p/task/$p/children" 2>/dev/null)" ] && continue
  kill -s TERM "$p" 2>/dev/null
  kill -s CONT "$p" 2>/dev/null
  first=$((first+1))
done
[ "$first" -gt 0 ] && sleep 0.2
hit TERM >/dev/null
t=0
while [ -n "$(tagged)" ] && [ "$t" -lt "$n" ]; do t=$((t+1)); sleep 0.1; done
k=0
if [ -n "$(tagged)" ]; then k=$(hit KILL); sleep 0.1; fi
echo "reaped found=$found killed=$k left=$(tagged | wc -l)"
"""

_REPORT = re.compile(r"reaped found=(\d+) killed=(\d+) left=\s*(\d+)")


def reaper_command(tag: str, grace: float) -> str:
    """The remote command line: ``sh -c SCRIPT runbook-reaper RUNBOOK_RUN=<tag> <tenths>``.

    Every argument is shell-quoted; the tag never becomes code.
    """
    tenths = max(1, round(grace * 10))
    entry = f"{REMOTE_VARIABLE}={tag}"
    return f"sh -c {shlex.quote(_SCRIPT)} runbook-reaper {shlex.quote(entry)} {tenths}"


@dataclass(frozen=True)
class HostReap:
    """What stopping a step's remote processes did on one host."""

    host: str
    found: int = 0
    killed: int = 0
    left: int = 0
    error: str | None = None

    @property
    def clean(self) -> bool:
        """True when the host is known to run nothing of the step any more."""
        return self.error is None and self.left == 0

    def describe(self) -> str:
        if self.error is not None:
            return f"{self.host}: could not stop remote processes ({self.error})"
        if not self.found:
            return f"{self.host}: nothing was running"
        text = f"{self.host}: {self.found} process(es) stopped"
        if self.killed:
            text += f" ({self.killed} needed SIGKILL)"
        if self.left:
            text += f", {self.left} survived SIGKILL"
        return text

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"found": self.found, "killed": self.killed, "left": self.left}
        if self.error is not None:
            data["error"] = self.error
        return data


def parse_report(host: str, text: str) -> HostReap:
    """The script's last line as a ``HostReap``; anything else is an explained error."""
    match = _REPORT.search(text)
    if match is None:
        shown = text.strip()[-200:] or "no output"
        return HostReap(host, error=f"the stop script gave no report ({shown!r})")
    found, killed, left = (int(g) for g in match.groups())
    return HostReap(host, found=found, killed=killed, left=left)


def summarize(reaps: Mapping[str, HostReap]) -> str:
    """One line for the step's error: what was stopped where, and what may still run."""
    if not reaps:
        return "no host to clean up"
    stopped = sorted(h for h, r in reaps.items() if r.clean and r.found)
    idle = sorted(h for h, r in reaps.items() if r.clean and not r.found)
    unsure = [r for _, r in sorted(reaps.items()) if not r.clean]
    parts = []
    if stopped:
        parts.append(f"remote processes stopped on {', '.join(stopped)}")
    if idle:
        parts.append(f"nothing left running on {', '.join(idle)}")
    parts.extend(r.describe() for r in unsure)
    return "; ".join(parts)


class HostVarsSource(Protocol):
    def host_vars(self, name: str) -> Mapping[str, Any]: ...


class RemoteReaper:
    """Runs the stop script on each host of a step, in parallel, with the step's certificate."""

    def __init__(
        self,
        known_hosts: Path,
        inventory: HostVarsSource,
        *,
        connect_timeout: float = 10.0,
        forks: int = 10,
    ) -> None:
        self.known_hosts = Path(known_hosts)
        self.inventory = inventory
        self.connect_timeout = connect_timeout
        self.forks = max(1, forks)

    def reap(
        self, hosts: Sequence[str], credential: IssuedCredential, tag: str, grace: float
    ) -> dict[str, HostReap]:
        """Stop the processes tagged ``tag`` on every host; never raises for one host's failure."""
        if not hosts:
            return {}
        try:
            identity = identity_from_credential(credential)
        except RunbookError as exc:
            return {h: HostReap(h, error=exc.message) for h in hosts}
        invalid = identity.check_valid(time.time())
        if invalid is not None:
            return {h: HostReap(h, error=invalid) for h in hosts}
        pool = ConnectionPool(
            PinnedHostKeys(self.known_hosts), connect_timeout=self.connect_timeout
        )
        command = reaper_command(tag, grace)
        budget = self.connect_timeout + grace + 10.0
        try:
            with ThreadPoolExecutor(max_workers=min(self.forks, len(hosts))) as workers:
                done = workers.map(
                    lambda h: self._one(pool, identity, h, command, budget), list(hosts)
                )
                return {r.host: r for r in done}
        finally:
            pool.close()

    def _one(
        self,
        pool: ConnectionPool,
        identity: ClientIdentity,
        name: str,
        command: str,
        budget: float,
    ) -> HostReap:
        try:
            target = host_address(name, self.inventory.host_vars(name))
        except RunbookError as exc:
            return HostReap(name, error=exc.message)
        try:
            conn, _ = pool.acquire("reaper", target, identity)
        except Exception as exc:  # paramiko and sockets raise many kinds; all mean "not reached"
            return HostReap(
                name, error=explain_connect_error(exc, target, identity.cert, self.known_hosts)
            )
        try:
            _, stdout, _ = conn.client.exec_command(command, timeout=budget)
            text = stdout.read().decode("utf-8", errors="replace")
        except (paramiko.SSHException, OSError, EOFError) as exc:
            return HostReap(
                name,
                error=f"the stop script did not finish within {format_duration(budget)} on "
                f"{name} ({type(exc).__name__}: {exc})",
            )
        return parse_report(name, text)
