"""The drill's own `runbook serve`: a subprocess on the port Alertmanager posts to.

It runs with its own RUNBOOK_HOME (so the report reads one audit log that
holds this drill and nothing else) and its own server config: Alertmanager's
token from the sandbox, plus a fresh token for each identity the plan names
(the drill itself, who starts a direct run, each approver), given to the
server only as sha256 digests. It is started in its own session, so a Ctrl-C
at the terminal reaches the drill, whose cleanup stops it: SIGTERM, then
SIGKILL if it outlives its shutdown grace.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from executor.gameday.api import GamedayError, ServeApi
from executor.gameday.world import Alerting

SHUTDOWN_GRACE = 5.0
KILL_AFTER = SHUTDOWN_GRACE + 10.0
DRIVER = "gameday"
DRIVER_GROUP = "gameday"


@dataclass(frozen=True)
class Caller:
    """An identity the drill acts as, with the token made for it."""

    name: str
    groups: frozenset[str]
    token: str = field(repr=False)


def make_callers(groups_by_name: Mapping[str, frozenset[str]]) -> dict[str, Caller]:
    """A fresh random token for each identity."""
    return {
        name: Caller(name, groups, secrets.token_urlsafe(32))
        for name, groups in groups_by_name.items()
    }


def server_config(alerting: Alerting, callers: Mapping[str, Caller]) -> dict[str, object]:
    """The server config: Alertmanager may post alerts, the drill's group runs and kills."""
    tokens: list[dict[str, object]] = [
        {
            "identity": "alertmanager",
            "groups": ["alertmanager"],
            "token_file": str(alerting.alertmanager_token_file),
        }
    ]
    tokens += [
        {"identity": c.name, "groups": sorted(c.groups), "token_sha256": _digest(c.token)}
        for c in callers.values()
    ]
    return {
        "listen": {"host": "127.0.0.1", "port": alerting.serve_port},
        "workers": 4,
        "shutdown_grace": f"{SHUTDOWN_GRACE:g}s",
        "poll_interval": "500ms",
        "tokens": tokens,
        "permissions": {
            "read": ["*"],
            "alerts": ["alertmanager"],
            "approve": ["*"],  # the approval step's own groups decide, in the engine
            "run": [DRIVER_GROUP],
            "kill": [DRIVER_GROUP],
            "killswitch": [DRIVER_GROUP],
        },
    }


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class OwnServer:
    """Start, wait for and stop one `runbook serve` process."""

    def __init__(
        self,
        home: Path,
        catalog: Path,
        alerting: Alerting,
        callers: Mapping[str, Caller],
        env: Mapping[str, str],
    ) -> None:
        self.home = home
        self.catalog = catalog
        self.alerting = alerting
        self.callers = dict(callers)
        self.env = dict(env)
        self.url = f"http://127.0.0.1:{alerting.serve_port}"
        self.log = home / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, deadline: float) -> None:
        """Start the server and wait until it answers /readyz (monotonic ``deadline``)."""
        port = self.alerting.serve_port
        if port_in_use(port):
            raise GamedayError(
                f"port {port}, where Alertmanager posts alerts, is already in use",
                hint="a `runbook serve` may already run for this sandbox: stop it, or name it "
                "in the plan as server: {url, home, token_env} to reuse it",
            )
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        config = self.home / "serve.yaml"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump(server_config(self.alerting, self.callers), handle, sort_keys=False)
        argv = [
            sys.executable,
            "-m",
            "executor.cli",
            "--home",
            str(self.home),
            "--catalog",
            str(self.catalog),
            "serve",
            "--server-config",
            str(config),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait_ready(deadline)

    def _wait_ready(self, deadline: float) -> None:
        api = ServeApi(self.url, {}, DRIVER)
        try:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise GamedayError(
                        f"`runbook serve` exited with code {self.proc.returncode} at start:\n"
                        f"{self.tail()}",
                        hint=f"its whole log is {self.log}",
                    )
                if api.ready():
                    return
                time.sleep(0.1)
        finally:
            api.close()
        raise GamedayError(
            f"`runbook serve` was not ready before the drill's deadline:\n{self.tail()}",
            hint=f"raise the plan's timeout, or read {self.log}",
        )

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it outlives its grace; its exit code (None if never run)."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(KILL_AFTER)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        return proc.returncode

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"
