"""Shared pieces for the engine's process-level tests (imported by test_engine_*.py and
test_cli_runs.py): the real ``runbook`` CLI in subprocesses against a state
directory in tmp_path, and /proc scans that prove a process tree is gone.
Holds no tests itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from executor.store import SqliteStore

REPO = Path(__file__).resolve().parents[2]
RUNBOOK = REPO / ".venv" / "bin" / "runbook"

CONFIG = """\
user: alice
identities:
  alice: {groups: [sre]}
  bob: {groups: [sre]}
  carol: {groups: [sre, dba]}
  mallory: {groups: [marketing]}
"""


def header(name: str) -> str:
    return f"apiVersion: runbook/v1\nkind: Runbook\nmetadata: {{name: {name}, version: 1.0.0}}\n"


@dataclass
class Cli:
    """The ``runbook`` command with its own home, config and working directory."""

    root: Path
    children: list[subprocess.Popen[str]] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    """Process groups of step commands a test started: killed at teardown if still there."""

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def audit_log(self) -> Path:
        return self.home / "audit.jsonl"

    def argv(self, *args: str) -> list[str]:
        return [
            str(RUNBOOK),
            "--home",
            str(self.home),
            "--config",
            str(self.root / "config.yaml"),
            *args,
        ]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNBOOK_", "VAULT_"))}
        env["COLUMNS"] = "200"
        return env

    def __call__(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            cwd=self.root,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def json(self, *args: str) -> Any:
        done = self(*args, "--json")
        assert done.stdout, done.stderr
        return json.loads(done.stdout)

    def start(self, *args: str) -> subprocess.Popen[str]:
        """A long-running command (``run --yes`` that waits); stopped at teardown."""
        child = subprocess.Popen(
            self.argv(*args),
            cwd=self.root,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.children.append(child)
        return child

    def write(self, name: str, body: str) -> Path:
        path = self.root / f"{name}.yaml"
        path.write_text(header(name) + textwrap.dedent(body), encoding="utf-8")
        return path

    def last_run(self) -> dict[str, Any]:
        """The newest run, read from the state database (cheaper than a CLI round trip)."""
        with SqliteStore(self.home / "state.db") as store:
            runs = store.list_runs(limit=1)
        assert runs, "no run recorded"
        return runs[0]

    def events(self, run_id: str | None = None) -> list[dict[str, Any]]:
        if not self.audit_log.exists():
            return []
        records = [json.loads(line) for line in self.audit_log.read_text().splitlines() if line]
        return [r for r in records if run_id is None or r["run_id"] == run_id]


@contextmanager
def cli_in(tmp_path: Path) -> Iterator[Cli]:
    """A ``Cli`` in ``tmp_path``; on exit, everything it started is stopped.

    Test modules wrap it in their own ``cli`` fixture.
    """
    (tmp_path / "config.yaml").write_text(CONFIG)
    made = Cli(tmp_path)
    yield made
    for child in made.children:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=10)
    kill_marked(str(tmp_path))  # orphans of an executor killed on purpose
    for group in made.groups:
        if group_alive(group):
            os.killpg(group, signal.SIGKILL)


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s")


def marked(marker: str) -> list[int]:
    """Live pids whose command line holds ``marker`` (zombies excluded), from /proc."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                cmdline = handle.read()
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        state = stat[stat.rfind(b")") + 2 :].split()[:1]
        if marker.encode() in cmdline and state not in ([b"Z"], [b"X"]):
            found.append(int(entry.name))
    return found


def group_alive(pgid: int) -> list[int]:
    """Live members of process group ``pgid`` (zombies excluded), from /proc."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(entry.name))
    return members


def kill_marked(marker: str) -> None:
    """SIGKILL the process groups of marked processes (never the test's own group)."""
    mine = os.getpgid(0)
    for pid in marked(marker):
        try:
            group = os.getpgid(pid)
            if group != mine:
                os.killpg(group, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
